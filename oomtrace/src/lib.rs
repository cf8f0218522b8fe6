//! oomtrace: records every Linux OOM kill at the moment it happens, with eBPF.
//!
//! The crate is laid out by pipeline stage; imports point only downward:
//!
//! ```text
//! cmd/       tail, agent, check: clap arguments and `run` (the only user of clap)
//! reconcile.rs  the agent's proof of zero loss: kills delivered vs the kernel's counters
//!  └ output/   table, filters, metrics, HTTP endpoint, rotating file
//!     └ stream.rs  wires capture → enrich + pressure; owns the one cgroup resolver
//!        ├ enrich/    wall time, cgroup paths, incidents, workload and Kubernetes names,
//!        │            the victim's process identity, the OOM domain (who else held the budget)
//!        ├ pressure/  per-cgroup timelines, near-limit readings, the kill's last minute
//!        └ diagnosis/ why it died: verdict rules over a kill's evidence, and a sizing
//!           └ cgroup/   the memory hierarchy, id → path resolution, memory files
//!              └ capture/  probe table, BTF/tracefs layout, tracer (eBPF, ring), records,
//!                          the kernel's own OOM reports read from its log
//!                 └ oomtrace-common: the records and settings shared with the eBPF side
//! demo/      `tail --demo` and the hog it runs in a throwaway memory cgroup
//! testing/   a /dev/kmsg follower and sandboxes for the integration tests (feature `testing`)
//! fuzzing.rs entry points for the fuzz targets in `fuzz/` (feature `fuzzing`)
//! ```
pub mod capture;
pub mod cgroup;
pub mod cmd;
pub mod demo;
pub mod diagnosis;
pub mod enrich;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod logging;
pub mod output;
pub mod pressure;
pub mod reconcile;
pub mod stream;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod timefmt;
