//! A Pod (as the watcher hands it over, decoded into [`SlimPod`]) → what OOM records need:
//! names, labels, the owning workload, and the pod's container ids.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::slim::{SlimContainerStatus, SlimPod};

/// What oomtrace keeps of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodMeta {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    /// The workload that owns the pod; see [`resolve_owner`].
    pub owner: Option<Owner>,
    /// Every container of the pod (init, regular, ephemeral, in that order) by name, with the
    /// runtime's id of its current instance once it has one (without the `containerd://`,
    /// `cri-o://`, `docker://` prefix).
    pub containers: Vec<(String, Option<String>)>,
}

/// The workload a pod belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub kind: String,
    pub name: String,
}

/// A pod as read from the API, with what the cache needs beyond [`PodMeta`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedPod {
    pub meta: PodMeta,
    /// `(container id, container name)` of every instance the status names: the current
    /// ones, and the previous instance of restarted containers (`lastState.terminated`), which
    /// is the one a late OOM record names.
    pub ids: Vec<(String, String)>,
}

/// What the cache keeps of a Pod. `None` when it lacks `metadata.uid` (or it is empty),
/// `metadata.name` or `metadata.namespace`.
pub(crate) fn parse_pod(pod: &SlimPod) -> Option<ParsedPod> {
    let metadata = &pod.metadata;
    let uid = metadata.uid.clone().filter(|s| !s.is_empty())?;
    let name = metadata.name.clone()?;
    let namespace = metadata.namespace.clone()?;
    let labels = metadata.labels.clone().unwrap_or_default();
    let refs: Vec<OwnerRef> = metadata
        .owner_references
        .iter()
        .flatten()
        .map(OwnerRef::from)
        .collect();
    let owner = resolve_owner(&refs, &labels);

    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let spec_names: [Vec<&str>; 3] = [
        spec.and_then(|s| s.init_containers.as_ref())
            .map(|cs| cs.iter().map(|c| c.name.as_str()).collect())
            .unwrap_or_default(),
        spec.and_then(|s| s.containers.as_ref())
            .map(|cs| cs.iter().map(|c| c.name.as_str()).collect())
            .unwrap_or_default(),
        spec.and_then(|s| s.ephemeral_containers.as_ref())
            .map(|cs| cs.iter().map(|c| c.name.as_str()).collect())
            .unwrap_or_default(),
    ];
    let statuses: [&[SlimContainerStatus]; 3] = [
        status
            .and_then(|s| s.init_container_statuses.as_deref())
            .unwrap_or_default(),
        status
            .and_then(|s| s.container_statuses.as_deref())
            .unwrap_or_default(),
        status
            .and_then(|s| s.ephemeral_container_statuses.as_deref())
            .unwrap_or_default(),
    ];
    let mut containers: Vec<(String, Option<String>)> = Vec::new();
    let mut ids: Vec<(String, String)> = Vec::new();
    for (names, statuses) in spec_names.iter().zip(statuses) {
        for name in names {
            if !containers.iter().any(|(n, _)| n == name) {
                containers.push((name.to_string(), None));
            }
        }
        for st in statuses {
            let current = st.container_id.as_deref().and_then(strip_runtime_prefix);
            let previous = st
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .and_then(|t| t.container_id.as_deref())
                .and_then(strip_runtime_prefix);
            match containers.iter_mut().find(|(n, _)| *n == st.name) {
                Some(slot) => slot.1.clone_from(&current),
                None => containers.push((st.name.clone(), current.clone())),
            }
            for id in [previous, current].into_iter().flatten() {
                ids.push((id, st.name.clone()));
            }
        }
    }

    Some(ParsedPod {
        meta: PodMeta {
            namespace,
            name,
            uid,
            labels,
            owner,
            containers,
        },
        ids,
    })
}

/// `containerd://0123…` → `0123…` (any `<runtime>://` prefix); `None` for an empty id.
pub fn strip_runtime_prefix(id: &str) -> Option<String> {
    let id = id.split_once("://").map_or(id, |(_, rest)| rest);
    (!id.is_empty()).then(|| id.to_string())
}

/// One `metadata.ownerReferences` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRef {
    pub kind: String,
    pub name: String,
    pub controller: bool,
}

impl From<&OwnerReference> for OwnerRef {
    fn from(r: &OwnerReference) -> Self {
        Self {
            kind: r.kind.clone(),
            name: r.name.clone(),
            controller: r.controller == Some(true),
        }
    }
}

/// The label the Deployment controller puts on a ReplicaSet's pod template (so on its pods).
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// The owning workload: the controller reference (else the first reference), raised to its
/// Deployment when that is certain from the pod alone.
///
/// The Deployment controller names each ReplicaSet `<deployment>-<hash>` and puts
/// `pod-template-hash: <hash>` on its pod template, so a pod owned by ReplicaSet `R` with
/// `pod-template-hash: H` where `R` is `D-H` (`D` not empty) belongs to Deployment `D`. Without
/// the label, or when it is not the name's suffix (a ReplicaSet made by hand, or by another
/// controller such as Argo Rollouts, which uses `rollouts-pod-template-hash`), the pod reports
/// its ReplicaSet. Every other owner is reported as it is: StatefulSet, DaemonSet, Job (a
/// CronJob's Job is not raised: nothing on the pod names the CronJob, and guessing from the
/// Job's name is unsound), Node (static pods' mirrors) and custom kinds.
pub fn resolve_owner(refs: &[OwnerRef], labels: &BTreeMap<String, String>) -> Option<Owner> {
    let direct = refs
        .iter()
        .find(|r| r.controller)
        .or_else(|| refs.first())?;
    if direct.kind == "ReplicaSet" {
        if let Some(hash) = labels.get(POD_TEMPLATE_HASH_LABEL) {
            if let Some(deployment) = direct
                .name
                .strip_suffix(hash.as_str())
                .and_then(|n| n.strip_suffix('-'))
                .filter(|d| !d.is_empty() && !hash.is_empty())
            {
                return Some(Owner {
                    kind: "Deployment".to_string(),
                    name: deployment.to_string(),
                });
            }
        }
    }
    Some(Owner {
        kind: direct.kind.clone(),
        name: direct.name.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn owner_ref(kind: &str, name: &str, controller: bool) -> OwnerRef {
        OwnerRef {
            kind: kind.to_string(),
            name: name.to_string(),
            controller,
        }
    }

    fn owner(kind: &str, name: &str) -> Option<Owner> {
        Some(Owner {
            kind: kind.to_string(),
            name: name.to_string(),
        })
    }

    #[test]
    fn replica_set_with_matching_hash_is_its_deployment() {
        let refs = [owner_ref("ReplicaSet", "web-7d9f8b6c5", true)];
        let l = labels(&[("app", "web"), ("pod-template-hash", "7d9f8b6c5")]);
        assert_eq!(resolve_owner(&refs, &l), owner("Deployment", "web"));
        // Names with dashes keep them.
        let refs = [owner_ref("ReplicaSet", "my-api-v2-5c8f", true)];
        let l = labels(&[("pod-template-hash", "5c8f")]);
        assert_eq!(resolve_owner(&refs, &l), owner("Deployment", "my-api-v2"));
    }

    #[test]
    fn replica_set_without_proof_stays_a_replica_set() {
        let refs = [owner_ref("ReplicaSet", "web-7d9f8b6c5", true)];
        for l in [
            labels(&[]),
            labels(&[("pod-template-hash", "other")]),
            labels(&[("pod-template-hash", "")]),
            labels(&[("rollouts-pod-template-hash", "7d9f8b6c5")]),
        ] {
            assert_eq!(
                resolve_owner(&refs, &l),
                owner("ReplicaSet", "web-7d9f8b6c5"),
                "{l:?}"
            );
        }
        // The hash is the whole name: no Deployment name left.
        let refs = [owner_ref("ReplicaSet", "-abc", true)];
        let l = labels(&[("pod-template-hash", "abc")]);
        assert_eq!(resolve_owner(&refs, &l), owner("ReplicaSet", "-abc"));
        let refs = [owner_ref("ReplicaSet", "xabc", true)];
        assert_eq!(resolve_owner(&refs, &l), owner("ReplicaSet", "xabc"));
    }

    #[test]
    fn other_owners_are_direct_and_the_controller_wins() {
        let l = labels(&[("job-name", "backup-29000000")]);
        let refs = [owner_ref("Job", "backup-29000000", true)];
        assert_eq!(resolve_owner(&refs, &l), owner("Job", "backup-29000000"));
        let refs = [
            owner_ref("ConfigMap", "x", false),
            owner_ref("StatefulSet", "db", true),
        ];
        assert_eq!(resolve_owner(&refs, &l), owner("StatefulSet", "db"));
        let refs = [owner_ref("Node", "node-1", false)];
        assert_eq!(resolve_owner(&refs, &l), owner("Node", "node-1"));
        assert_eq!(resolve_owner(&[], &l), None);
    }

    /// A Pod from its JSON, as the API server sends it.
    fn typed(v: serde_json::Value) -> SlimPod {
        serde_json::from_value(v).expect("a Pod")
    }

    #[test]
    fn parses_a_pod() {
        let pod = typed(json!({
            "metadata": {
                "name": "web-7d9f8b6c5-x2x4z", "namespace": "shop", "uid": "u-1",
                "resourceVersion": "42",
                "labels": {"app": "web", "pod-template-hash": "7d9f8b6c5"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-7d9f8b6c5", "uid": "rs", "controller": true}]
            },
            "spec": {
                "initContainers": [{"name": "init"}],
                "containers": [{"name": "app"}, {"name": "sidecar"}]
            },
            "status": {
                "initContainerStatuses": [{"name": "init", "containerID": "containerd://aaa",
                    "image": "i", "imageID": "", "ready": false, "restartCount": 0}],
                "containerStatuses": [
                    {"name": "app", "containerID": "containerd://bbb",
                     "image": "i", "imageID": "", "ready": true, "restartCount": 1,
                     "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                         "containerID": "containerd://old"}}},
                    {"name": "sidecar", "containerID": "",
                     "image": "i", "imageID": "", "ready": false, "restartCount": 0}
                ]
            }
        }));
        let p = parse_pod(&pod).expect("valid");
        assert_eq!(p.meta.name, "web-7d9f8b6c5-x2x4z");
        assert_eq!(p.meta.namespace, "shop");
        assert_eq!(p.meta.uid, "u-1");
        assert_eq!(
            p.meta.labels,
            labels(&[("app", "web"), ("pod-template-hash", "7d9f8b6c5")])
        );
        assert_eq!(p.meta.owner, owner("Deployment", "web"));
        assert_eq!(
            p.meta.containers,
            vec![
                ("init".to_string(), Some("aaa".to_string())),
                ("app".to_string(), Some("bbb".to_string())),
                ("sidecar".to_string(), None),
            ]
        );
        assert_eq!(
            p.ids,
            vec![
                ("aaa".to_string(), "init".to_string()),
                ("old".to_string(), "app".to_string()),
                ("bbb".to_string(), "app".to_string()),
            ]
        );
    }

    #[test]
    fn rejects_pods_without_identity_and_tolerates_missing_parts() {
        assert!(parse_pod(&typed(json!({}))).is_none());
        assert!(parse_pod(&typed(json!({"metadata": {"name": "a", "namespace": "b"}}))).is_none());
        assert!(parse_pod(&typed(
            json!({"metadata": {"name": "a", "namespace": "b", "uid": ""}})
        ))
        .is_none());
        assert!(parse_pod(&typed(json!({"metadata": {"namespace": "b", "uid": "u"}}))).is_none());
        // A status for a container the spec does not name, with no id yet; no owner reference
        // marked as controller (the first one is taken).
        let p = parse_pod(&typed(json!({
            "metadata": {"name": "a", "namespace": "b", "uid": "u",
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                             "name": "node-1", "uid": "n"}]},
            "status": {"containerStatuses": [{"name": "x", "image": "i", "imageID": "",
                "ready": false, "restartCount": 0}]}
        })))
        .expect("identity present");
        assert!(p.meta.labels.is_empty());
        assert_eq!(p.meta.owner, owner("Node", "node-1"));
        assert_eq!(p.meta.containers, vec![("x".to_string(), None)]);
        assert!(p.ids.is_empty());
    }

    #[test]
    fn strips_runtime_prefixes() {
        assert_eq!(
            strip_runtime_prefix("containerd://abc").as_deref(),
            Some("abc")
        );
        assert_eq!(strip_runtime_prefix("cri-o://abc").as_deref(), Some("abc"));
        assert_eq!(strip_runtime_prefix("docker://abc").as_deref(), Some("abc"));
        assert_eq!(strip_runtime_prefix("abc").as_deref(), Some("abc"));
        assert_eq!(strip_runtime_prefix("containerd://"), None);
        assert_eq!(strip_runtime_prefix(""), None);
    }
}
