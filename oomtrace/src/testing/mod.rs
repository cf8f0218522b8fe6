//! Test oracles and sandboxes, for the integration tests (feature `testing`): the kernel's own
//! OOM report as it is logged (a `/dev/kmsg` follower, [`kernel_report`]) and the throwaway memory cgroups the
//! tests and the demo run hogs in ([`sandbox`]).
pub mod kernel_report;
pub use crate::demo::sandbox;
