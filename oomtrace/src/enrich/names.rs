//! Who a cgroup belongs to, in the terms users search by: the systemd unit, the container
//! runtime and id, and the Kubernetes pod, namespace and container. The cgroup path says the
//! first three ([`workload::parse`]); the kubelet's log tree under the host's log dir says the
//! Kubernetes names without any API access ([`KubeletLogs`]).
use std::path::PathBuf;

use serde_json::{json, Map, Value};

use crate::{
    enrich::kube::{PodCache, PodMeta},
    enrich::kubelet_logs::{KubeletLogs, PodNames},
    enrich::workload::{self, Level, Workload},
};

/// What is known about the workload of one cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadNames {
    pub workload: Workload,
    pub pod: Option<PodNames>,
    /// The pod as the API server knows it (labels, owner), when watching it in-cluster.
    pub api: Option<PodMeta>,
}

/// Where the kubelet's log tree is (shared by `tail` and `agent`).
#[derive(Debug, Clone, clap::Args)]
pub struct HostLogArgs {
    /// The host's log directory with the kubelet's `pods/` and `containers/` trees: pod,
    /// namespace and container names come from there, with no API access.
    #[arg(
        long,
        env = "OOMTRACE_HOST_LOG_DIR",
        default_value = "/var/log",
        value_name = "DIR"
    )]
    pub host_log_dir: PathBuf,
}

impl HostLogArgs {
    /// A namer reading the log tree when `DIR/pods` exists (a Kubernetes node), else none.
    pub fn namer(&self) -> Namer {
        let dir = self.host_log_dir.join("pods").is_dir().then(|| {
            log::info!(
                "naming pods from the kubelet's log tree in {}",
                self.host_log_dir.display()
            );
            self.host_log_dir.clone()
        });
        Namer::new(dir)
    }
}

/// Names cgroup paths; counts what it could not name.
pub struct Namer {
    logs: Option<KubeletLogs>,
    api: Option<PodCache>,
    /// Kubernetes workloads whose names were not found in the kubelet's log tree.
    pub kubelet_misses: u64,
    /// Kubernetes workloads the API cache did not know (only when watching).
    pub api_misses: u64,
    /// Paths that looked like no known workload at all.
    pub path_misses: u64,
}

impl Namer {
    /// `host_log_dir` is the host's `/var/log` (None: no Kubernetes names).
    pub fn new(host_log_dir: Option<PathBuf>) -> Self {
        Self {
            logs: host_log_dir.map(KubeletLogs::new),
            api: None,
            kubelet_misses: 0,
            api_misses: 0,
            path_misses: 0,
        }
    }

    /// Adds the API server's view of this node's pods (labels, owner; names for pods whose
    /// log directories are gone or not mounted).
    pub fn with_api(mut self, cache: PodCache) -> Self {
        self.api = Some(cache);
        self
    }

    /// Names for the cgroup at `path` (relative to the memory hierarchy root), counting what
    /// could not be named: for the cgroups of events.
    pub fn name(&mut self, path: &str) -> WorkloadNames {
        let names = self.peek(path);
        let is_k8s = names.workload.pod_uid.is_some();
        if is_k8s && names.pod.is_none() {
            self.kubelet_misses += 1;
        }
        if self.api.is_some() && is_k8s && names.api.is_none() {
            self.api_misses += 1;
        }
        let w = &names.workload;
        if w.level == Level::Other && w.systemd_unit.is_none() && w.runtime.is_none() {
            self.path_misses += 1;
        }
        names
    }

    /// Names for the cgroup at `path`, counting no miss: for lookups repeated every second
    /// (the agent's per-container gauges), which would otherwise count one cgroup's miss again
    /// and again.
    pub fn peek(&mut self, path: &str) -> WorkloadNames {
        let workload = workload::parse(path);
        let pod = match (&mut self.logs, &workload.pod_uid, &workload.container_id) {
            (Some(logs), Some(uid), id) => logs.lookup(uid, id.as_deref()),
            (Some(logs), None, Some(id)) => logs.lookup_container(id),
            _ => None,
        };
        let api = self.api.as_ref().and_then(|cache| {
            let by_id = workload
                .container_id
                .as_deref()
                .and_then(|id| cache.container_by_id(id));
            match (by_id, &workload.pod_uid) {
                (Some((meta, _)), _) => Some(meta),
                (None, Some(uid)) => cache.by_uid(uid),
                (None, None) => None,
            }
        });
        // Names the log tree lacked come from the API.
        let pod = pod.or_else(|| {
            let meta = api.as_ref()?;
            let container = workload.container_id.as_deref().and_then(|id| {
                meta.containers
                    .iter()
                    .find(|(_, cid)| cid.as_deref() == Some(id))
                    .map(|(name, _)| name.clone())
            });
            Some(PodNames {
                namespace: meta.namespace.clone(),
                pod: meta.name.clone(),
                pod_uid: meta.uid.clone(),
                container,
            })
        });
        WorkloadNames { workload, pod, api }
    }
}

/// Inserts the OpenTelemetry-style nested keys for `names` into `out`: `k8s.namespace.name`,
/// `k8s.pod.name`, `k8s.pod.uid`, `k8s.container.name`, `container.id`, `container.runtime`,
/// `systemd.unit` — each only where known.
pub fn insert_json(out: &mut Map<String, Value>, names: &WorkloadNames) {
    let w = &names.workload;
    let mut k8s = Map::new();
    let pod_uid = names
        .pod
        .as_ref()
        .map(|p| p.pod_uid.clone())
        .or_else(|| w.pod_uid.clone());
    if let Some(p) = &names.pod {
        k8s.insert("namespace".into(), json!({ "name": p.namespace }));
    }
    let mut pod = Map::new();
    if let Some(p) = &names.pod {
        pod.insert("name".into(), p.pod.clone().into());
    }
    if let Some(uid) = pod_uid {
        pod.insert("uid".into(), uid.into());
    }
    if let Some(q) = w.qos_class {
        pod.insert("qos_class".into(), q.as_str().into());
    }
    if !pod.is_empty() {
        k8s.insert("pod".into(), Value::Object(pod));
    }
    if let Some(c) = names.pod.as_ref().and_then(|p| p.container.clone()) {
        k8s.insert("container".into(), json!({ "name": c }));
    }
    if let Some(meta) = &names.api {
        if !meta.labels.is_empty() {
            if let Some(Value::Object(pod)) = k8s.get_mut("pod") {
                pod.insert("labels".into(), json!(meta.labels));
            }
        }
        if let Some(o) = &meta.owner {
            // OpenTelemetry's k8s.deployment.name, k8s.statefulset.name, … for the usual kinds.
            let otel = match o.kind.as_str() {
                "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" | "CronJob" => {
                    Some(o.kind.to_lowercase())
                }
                _ => None,
            };
            if let Some(kind) = otel {
                k8s.insert(kind, json!({ "name": o.name }));
            }
            k8s.insert("owner".into(), json!({ "kind": o.kind, "name": o.name }));
        }
    }
    if !k8s.is_empty() {
        out.insert("k8s".into(), Value::Object(k8s));
    }
    let mut container = Map::new();
    if let Some(id) = &w.container_id {
        container.insert("id".into(), id.clone().into());
    }
    if let Some(r) = w.runtime {
        container.insert("runtime".into(), r.as_str().into());
    }
    if !container.is_empty() {
        out.insert("container".into(), Value::Object(container));
    }
    if let Some(u) = &w.systemd_unit {
        out.insert("systemd".into(), json!({ "unit": u }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::kube::Owner;

    #[test]
    fn peek_counts_no_miss_and_name_counts_each() {
        let mut n = Namer::new(None);
        let odd = "/some/unknown/group";
        n.peek(odd);
        n.peek(odd);
        assert_eq!(n.path_misses, 0);
        n.name(odd);
        n.name(odd);
        assert_eq!(n.path_misses, 2);
        assert_eq!(n.kubelet_misses, 0);
    }

    #[test]
    fn api_labels_and_owner_join_the_kubelet_names() {
        let path = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod5f0a8c1e_3b2d_4c6e_9f7a_1b2c3d4e5f60.slice/cri-containerd-3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899.scope";
        let names = WorkloadNames {
            workload: workload::parse(path),
            pod: Some(PodNames {
                namespace: "shop".into(),
                pod: "web-7d9f8b6c5-x2k4q".into(),
                pod_uid: "5f0a8c1e-3b2d-4c6e-9f7a-1b2c3d4e5f60".into(),
                container: Some("app".into()),
            }),
            api: Some(PodMeta {
                namespace: "shop".into(),
                name: "web-7d9f8b6c5-x2k4q".into(),
                uid: "5f0a8c1e-3b2d-4c6e-9f7a-1b2c3d4e5f60".into(),
                labels: [("app".to_string(), "web".to_string())].into(),
                owner: Some(Owner {
                    kind: "Deployment".into(),
                    name: "web".into(),
                }),
                containers: Vec::new(),
            }),
        };
        let mut out = Map::new();
        insert_json(&mut out, &names);
        let v = Value::Object(out);
        assert_eq!(v["k8s"]["pod"]["labels"]["app"], "web");
        assert_eq!(v["k8s"]["deployment"]["name"], "web");
        assert_eq!(
            v["k8s"]["owner"],
            json!({"kind": "Deployment", "name": "web"})
        );
        assert_eq!(v["k8s"]["container"]["name"], "app");
        assert_eq!(v["container"]["runtime"], "containerd");
        assert_eq!(v["k8s"]["pod"]["qos_class"], "burstable");
    }
}
