//! The events.k8s.io/v1 Event oomtrace creates on a pod whose container was OOM-killed.
//!
//! `kubectl describe pod` and `kubectl get events` show it like core/v1 Events. Made here
//! rather than with kube-runtime's `Recorder`: the Recorder turns a second event with the same
//! reason on the same pod within 6 minutes into a PATCH of the first (an `EventSeries`), which
//! needs RBAC `patch` on events (the manifests grant `create` only) and keeps the first
//! event's note, so a second kill's pid and sizes would be lost. The agent already posts at
//! most one Event per pod per 30 s.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;

use super::error::truncate;
use super::pod::PodMeta;

/// Longest note (events.k8s.io caps it at 1 kB).
pub(crate) const MAX_NOTE: usize = 1024;
/// Longest `reportingInstance` the API accepts.
const MAX_INSTANCE: usize = 128;
/// `reportingController` (a qualified name, as the API requires).
pub(crate) const CONTROLLER: &str = "oomtrace";

/// The Event for `pod`, reported by `node`'s agent, at `now`.
pub(crate) fn oom_event(pod: &PodMeta, message: &str, node: &str, now: Timestamp) -> Event {
    let instance = match truncate(node, MAX_INSTANCE) {
        "" => CONTROLLER,
        node => node,
    };
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.oomtrace-", pod.name)),
            namespace: Some(pod.namespace.clone()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        action: Some("OOMKill".to_string()),
        reason: Some("OOMKilling".to_string()),
        type_: Some("Warning".to_string()),
        note: Some(truncate(message, MAX_NOTE).to_string()),
        regarding: Some(ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Pod".to_string()),
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            uid: Some(pod.uid.clone()),
            ..ObjectReference::default()
        }),
        reporting_controller: Some(CONTROLLER.to_string()),
        reporting_instance: Some(instance.to_string()),
        ..Event::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builds_the_event() {
        let pod = PodMeta {
            namespace: "shop".to_string(),
            name: "cart-7d9f8b6c5-x2x4z".to_string(),
            uid: "u-1".to_string(),
            ..PodMeta::default()
        };
        let now = Timestamp::from_nanosecond(1_795_318_867_123_456_789).expect("in range");
        let e = oom_event(&pod, "killed", "node-1", now);
        assert_eq!(
            serde_json::to_value(&e).expect("JSON"),
            json!({
                "apiVersion": "events.k8s.io/v1", "kind": "Event",
                "metadata": {"generateName": "cart-7d9f8b6c5-x2x4z.oomtrace-", "namespace": "shop"},
                "eventTime": "2026-11-22T03:41:07.123456Z",
                "action": "OOMKill", "reason": "OOMKilling", "type": "Warning", "note": "killed",
                "regarding": {"apiVersion": "v1", "kind": "Pod",
                    "name": "cart-7d9f8b6c5-x2x4z", "namespace": "shop", "uid": "u-1"},
                "reportingController": "oomtrace", "reportingInstance": "node-1"
            })
        );
        let long = "é".repeat(MAX_NOTE);
        let e = oom_event(&pod, &long, "", now);
        assert_eq!(e.note.as_deref().map(str::len), Some(MAX_NOTE));
        assert_eq!(e.reporting_instance.as_deref(), Some("oomtrace"));
        let e = oom_event(&pod, "x", &"n".repeat(300), now);
        assert_eq!(e.reporting_instance.map(|i| i.len()), Some(MAX_INSTANCE));
    }
}
