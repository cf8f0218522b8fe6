//! Enrich: a kernel record becomes an event a person can read. Wall time, cgroup paths (through
//! the stream's resolver), incident ids ([`event`]), and workload names: the runtime and
//! Kubernetes shape of a cgroup path ([`workload`]), pod names from the kubelet's log tree
//! ([`kubelet_logs`]) or the API server ([`kube`]), put together by [`names`]. Who the victim
//! was, read from `/proc` while it lived ([`process`]). Who else held the budget at a kill: the
//! OOM domain's tasks and the OOM memcg's children ([`domain`]).
pub mod domain;
pub mod event;
pub mod kube;
pub mod kubelet_logs;
pub mod names;
pub mod process;
pub mod sigkill;
pub mod workload;
