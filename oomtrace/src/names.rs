//! Who a cgroup belongs to, in the terms users search by: the systemd unit, the container
//! runtime and id, and the Kubernetes pod, namespace and container. The cgroup path says the
//! first three ([`workload::parse`]); the kubelet's log tree under the host's log dir says the
//! Kubernetes names without any API access ([`KubeletLogs`]).
use std::path::PathBuf;

use serde_json::{json, Map, Value};

use crate::{
    kubelet_logs::{KubeletLogs, PodNames},
    workload::{self, Level, Workload},
};

/// What is known about the workload of one cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadNames {
    pub workload: Workload,
    pub pod: Option<PodNames>,
}

/// Names cgroup paths; counts what it could not name.
pub struct Namer {
    logs: Option<KubeletLogs>,
    /// Kubernetes workloads whose names were not found in the kubelet's log tree.
    pub kubelet_misses: u64,
    /// Paths that looked like no known workload at all.
    pub path_misses: u64,
}

impl Namer {
    /// `host_log_dir` is the host's `/var/log` (None: no Kubernetes names).
    pub fn new(host_log_dir: Option<PathBuf>) -> Self {
        Self {
            logs: host_log_dir.map(KubeletLogs::new),
            kubelet_misses: 0,
            path_misses: 0,
        }
    }

    /// Names for the cgroup at `path` (relative to the memory hierarchy root).
    pub fn name(&mut self, path: &str) -> WorkloadNames {
        let workload = workload::parse(path);
        let is_k8s = workload.pod_uid.is_some();
        let pod = match (&mut self.logs, &workload.pod_uid, &workload.container_id) {
            (Some(logs), Some(uid), id) => logs.lookup(uid, id.as_deref()),
            (Some(logs), None, Some(id)) => logs.lookup_container(id),
            _ => None,
        };
        if is_k8s && pod.is_none() {
            self.kubelet_misses += 1;
        }
        if workload.level == Level::Other
            && workload.systemd_unit.is_none()
            && workload.runtime.is_none()
        {
            self.path_misses += 1;
        }
        WorkloadNames { workload, pod }
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
