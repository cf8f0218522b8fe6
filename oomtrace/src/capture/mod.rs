//! Capture: the kernel side as userspace sees it. The probe table ([`probes`]), the kernel
//! layout read from BTF ([`btf_layout`]) and tracefs ([`tracefs`]), the loaded and attached
//! programs with their ring buffers and maps ([`tracer`], sized by [`map_budget`]), the records
//! they send ([`record`]), their pins in bpffs that outlive an agent ([`pin`]), and the stat
//! programs attached only while needed ([`stat_hooks`]).
//! Besides eBPF, the kernel's own OOM reports from its log ([`kernel_log`]).
pub mod btf_layout;
pub mod btf_raw;
pub mod kernel_log;
pub mod map_budget;
pub mod map_memory;
pub mod pin;
pub mod privilege;
pub mod probes;
pub mod record;
pub mod self_memory;
pub mod stat_hooks;
pub mod tracefs;
pub mod tracer;
