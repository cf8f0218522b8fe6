//! `tail`'s filters: which records to show. Every given filter must match; Kubernetes filters
//! never match a record without Kubernetes names.
use crate::{
    enrich::event::OomKillEvent,
    enrich::names::WorkloadNames,
    stream::{MemoryPressureEvent, SigkillItem},
};

#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only victims in this Kubernetes namespace.
    pub namespace: Option<String>,
    /// Only victims in this pod (name).
    pub pod: Option<String>,
    /// Only victims in this container (name).
    pub container: Option<String>,
    /// Only victims whose cgroup path is this path or below it (e.g. /kubepods.slice).
    pub cgroup: Option<String>,
    /// Only victims with this command name (comm).
    pub comm: Option<String>,
}

impl Filter {
    /// Whether `ev` passes every filter given.
    pub fn matches(&self, ev: &OomKillEvent) -> bool {
        self.matches_parts(
            ev.names.as_ref().and_then(|n| n.victim.as_ref()),
            ev.victim.task.cgroup_path(),
            ev.victim.task.comm.as_deref(),
        )
    }

    /// The same filters for a `sigkill` event: its target.
    pub fn matches_sigkill(&self, s: &SigkillItem) -> bool {
        self.matches_parts(
            s.target_names.as_ref(),
            s.event.target.cgroup_path(),
            s.event.target.comm.as_deref(),
        )
    }

    /// The same filters for a `memory_pressure` event: its cgroup, and the comm of the task
    /// that saw it (when the kernel reported one).
    pub fn matches_pressure(&self, ev: &MemoryPressureEvent) -> bool {
        self.matches_parts(
            ev.names.as_ref(),
            ev.reading.path.as_deref(),
            ev.reading.task.as_ref().map(|(_, c)| c.as_str()),
        )
    }

    fn matches_parts(
        &self,
        names: Option<&WorkloadNames>,
        path: Option<&str>,
        comm: Option<&str>,
    ) -> bool {
        let pod = names.and_then(|v| v.pod.as_ref());
        let eq = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| have == Some(w))
        };
        eq(&self.namespace, pod.map(|p| p.namespace.as_str()))
            && eq(&self.pod, pod.map(|p| p.pod.as_str()))
            && eq(&self.container, pod.and_then(|p| p.container.as_deref()))
            && eq(&self.comm, comm)
            && self
                .cgroup
                .as_deref()
                .is_none_or(|want| path.is_some_and(|p| crate::cgroup::is_under(p, want)))
    }
}

#[cfg(test)]
mod tests {
    use crate::cgroup::is_under as under;

    #[test]
    fn cgroup_prefix_is_by_component() {
        assert!(under("/kubepods.slice/x", "/kubepods.slice"));
        assert!(under("/kubepods.slice", "/kubepods.slice/"));
        assert!(!under("/kubepods.slice-other", "/kubepods.slice"));
        assert!(under("/anything", "/"));
    }
}
