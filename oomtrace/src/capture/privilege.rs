//! Why the kernel refused `bpf()`: a missing capability, or a seccomp filter (a container
//! runtime's default profile) that blocks the call whatever the capabilities.
//!
//! Both give EPERM; `/proc/self/status` tells them apart: `CapEff` holds the effective
//! capabilities, `Seccomp: 2` means a filter is installed.

/// Capability numbers (linux/capability.h).
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_NICE: u32 = 23;
const CAP_SYS_RESOURCE: u32 = 24;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The capabilities oomtrace uses, with what each is for (`oomtrace check` lists them).
pub const USED: [(&str, u32, &str); 7] = [
    ("BPF", CAP_BPF, "programs and maps"),
    ("PERFMON", CAP_PERFMON, "tracing programs"),
    ("SYS_ADMIN", CAP_SYS_ADMIN, "both, on kernels < 5.8"),
    ("SYS_RESOURCE", CAP_SYS_RESOURCE, "its own oom_score_adj"),
    ("SYS_PTRACE", CAP_SYS_PTRACE, "victims' exe and environ"),
    (
        "DAC_READ_SEARCH",
        CAP_DAC_READ_SEARCH,
        "other users' environ",
    ),
    ("SYS_NICE", CAP_SYS_NICE, "--nice"),
];

/// What `/proc/self/status` says of this process's privileges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privileges {
    /// The effective capability set (`CapEff`, a bit per capability).
    pub effective: u64,
    /// A seccomp filter is installed (`Seccomp: 2`).
    pub seccomp_filter: bool,
}

impl Privileges {
    /// This process's, or None when `/proc/self/status` cannot be read or lacks the fields.
    pub fn of_self() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/self/status").ok()?)
    }

    /// Parses `/proc/PID/status`.
    pub fn parse(status: &str) -> Option<Self> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        Some(Privileges {
            effective: u64::from_str_radix(field("CapEff")?, 16).ok()?,
            seccomp_filter: field("Seccomp")? == "2",
        })
    }

    /// Whether capability number `cap` is effective.
    pub fn has(&self, cap: u32) -> bool {
        self.effective & (1 << cap) != 0
    }

    /// The capabilities bpf() tracing needs: CAP_BPF with CAP_PERFMON, or CAP_SYS_ADMIN.
    pub fn may_trace(&self) -> bool {
        self.has(CAP_SYS_ADMIN) || (self.has(CAP_BPF) && self.has(CAP_PERFMON))
    }
}

/// How a refused `bpf()` is explained to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The capabilities are there and a seccomp filter is installed: the filter refused it.
    Seccomp,
    /// CAP_BPF/CAP_PERFMON (or CAP_SYS_ADMIN) are missing.
    Capabilities,
}

/// Why `err` happened, when it is an EPERM from the kernel that [`Privileges`] explain.
pub fn refusal(
    err: &(dyn std::error::Error + 'static),
    privileges: Option<Privileges>,
) -> Option<Refusal> {
    let privileges = privileges?;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut eperm = false;
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            eperm |= io.raw_os_error() == Some(libc::EPERM);
        }
        cause = e.source();
    }
    if !eperm {
        return None;
    }
    if !privileges.may_trace() {
        return Some(Refusal::Capabilities);
    }
    privileges.seccomp_filter.then_some(Refusal::Seccomp)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\toomtrace\nCapEff:\t000000c000880000\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n";

    fn eperm() -> std::io::Error {
        std::io::Error::from_raw_os_error(libc::EPERM)
    }

    #[test]
    fn status_of_a_container_agent_parses() {
        // The agent under podman with BPF, PERFMON, SYS_PTRACE, SYS_NICE and a filter.
        let p = Privileges::parse(STATUS).expect("parses");
        assert_eq!(p.effective, 0xc0_0088_0000);
        assert!(p.seccomp_filter);
        assert!(p.may_trace());
    }

    #[test]
    fn eperm_with_the_capabilities_and_a_filter_is_seccomp() {
        let p = Privileges::parse(STATUS);
        assert_eq!(refusal(&eperm(), p), Some(Refusal::Seccomp));
    }

    #[test]
    fn eperm_without_cap_bpf_is_capabilities_even_under_a_filter() {
        let p = Privileges::parse(&STATUS.replace("000000c000880000", "0000004000880000"));
        assert_eq!(refusal(&eperm(), p), Some(Refusal::Capabilities));
    }

    #[test]
    fn eperm_with_cap_sys_admin_and_no_filter_is_not_explained() {
        let p = Privileges::parse("CapEff:\t0000000000200000\nSeccomp:\t0\n");
        assert_eq!(refusal(&eperm(), p), None);
    }

    #[test]
    fn other_errors_are_not_explained() {
        let p = Privileges::parse(STATUS);
        let err = std::io::Error::from_raw_os_error(libc::EINVAL);
        assert_eq!(refusal(&err, p), None);
    }

    #[test]
    fn used_capabilities_of_the_container_agent() {
        let p = Privileges::parse(STATUS).expect("parses");
        let held: Vec<&str> = USED
            .iter()
            .filter(|(_, bit, _)| p.has(*bit))
            .map(|(name, _, _)| *name)
            .collect();
        assert_eq!(held, ["BPF", "PERFMON", "SYS_PTRACE", "SYS_NICE"]);
    }

    #[test]
    fn a_status_without_the_fields_gives_nothing() {
        assert_eq!(Privileges::parse("Name:\tx\n"), None);
    }
}
