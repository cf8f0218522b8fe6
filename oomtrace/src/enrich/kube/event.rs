//! The core/v1 Event oomtrace posts on a pod whose container was OOM-killed.
//!
//! core/v1 rather than events.k8s.io/v1: `kubectl describe pod` and `kubectl get events` show
//! both, and the legacy shape (`involvedObject`, `source`, `count`, `first/lastTimestamp`) is
//! what node-problem-detector's `OOMKilling` events use.

use serde_json::{json, Value};

use super::pod::PodMeta;
use crate::timefmt::rfc3339_nanos;

/// Longest message posted (events.k8s.io caps notes at 1 kB; the same limit is kept here).
pub(crate) const MAX_MESSAGE: usize = 1024;

/// The Event object for `pod`, dated `now_unix_ns`.
pub(crate) fn oom_event(pod: &PodMeta, message: &str, node: &str, now_unix_ns: i128) -> Value {
    let now = rfc3339_seconds(now_unix_ns);
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "generateName": format!("{}.oomtrace-", pod.name),
            "namespace": pod.namespace,
        },
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod.name,
            "namespace": pod.namespace,
            "uid": pod.uid,
        },
        "reason": "OOMKilling",
        "type": "Warning",
        "message": super::http::truncate(message, MAX_MESSAGE),
        "source": {"component": "oomtrace", "host": node},
        "reportingComponent": "oomtrace",
        "reportingInstance": node,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    })
}

/// RFC 3339 UTC to the second, as `metav1.Time` is written: `2026-11-22T03:41:07Z`.
pub(crate) fn rfc3339_seconds(unix_ns: i128) -> String {
    let full = rfc3339_nanos(unix_ns);
    match full.split_once('.') {
        Some((seconds, _)) => format!("{seconds}Z"),
        None => full,
    }
}

pub(crate) fn unix_now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_event() {
        let pod = PodMeta {
            namespace: "shop".to_string(),
            name: "cart-7d9f8b6c5-x2x4z".to_string(),
            uid: "u-1".to_string(),
            ..PodMeta::default()
        };
        let e = oom_event(&pod, "killed", "node-1", 1_795_318_867_123_456_789);
        assert_eq!(
            e,
            json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"generateName": "cart-7d9f8b6c5-x2x4z.oomtrace-", "namespace": "shop"},
                "involvedObject": {"apiVersion": "v1", "kind": "Pod",
                    "name": "cart-7d9f8b6c5-x2x4z", "namespace": "shop", "uid": "u-1"},
                "reason": "OOMKilling", "type": "Warning", "message": "killed",
                "source": {"component": "oomtrace", "host": "node-1"},
                "reportingComponent": "oomtrace", "reportingInstance": "node-1",
                "firstTimestamp": "2026-11-22T03:41:07Z", "lastTimestamp": "2026-11-22T03:41:07Z",
                "count": 1
            })
        );
        let long = "é".repeat(MAX_MESSAGE);
        let e = oom_event(&pod, &long, "n", 0);
        let msg = e["message"].as_str().expect("string");
        assert_eq!(msg.len(), MAX_MESSAGE);
        assert!(unix_now_ns() > 1_700_000_000_000_000_000);
    }
}
