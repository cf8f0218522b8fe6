//! Who a cgroup belongs to, in the terms users search by: the systemd unit, the container
//! runtime and id, and the Kubernetes pod, namespace and container. The cgroup path says the
//! first three ([`workload::parse`]); the kubelet's log tree under the host's log dir says the
//! Kubernetes names without any API access ([`KubeletLogs`]).
use std::path::PathBuf;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
