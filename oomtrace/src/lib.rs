//! oomtrace: records every Linux OOM kill at the moment it happens, with eBPF.
//!
//! Pipeline: kernel hooks ([`probes`], loaded by [`tracer`]) → ring buffer → [`record`] decoding
//! → [`event`] enrichment (cgroup paths from [`cgroup`], time from [`timefmt`]) → output
//! ([`table`], JSON Lines).
pub mod agent;
pub mod btf_layout;
pub mod cgroup;
pub mod cgroup_memory;
pub mod check;
pub mod demo;
pub mod event;
pub mod filter;
#[cfg(test)]
mod golden_tests;
pub mod hog;
pub mod kernel_report;
pub mod kube;
pub mod kubelet_logs;
pub mod logging;
pub mod names;
pub mod pressure;
pub mod probes;
pub mod record;
pub mod sandbox;
pub mod stream;
pub mod table;
pub mod tail;
pub mod timefmt;
pub mod tracefs;
pub mod tracer;
pub mod workload;
