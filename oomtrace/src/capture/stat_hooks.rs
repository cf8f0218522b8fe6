//! The per-page memcg stat programs attached at run time (`--stat-hooks adaptive`): loaded at
//! start but not attached; [`StatHooks::set`] attaches them (one `BPF_RAW_TRACEPOINT_OPEN` link
//! per program, held by this process) and detaches them (the links closed).
//!
//! The programs come from the loaded object or, for an agent that adopted pinned state, from
//! their pins (`prog@…`, see [`crate::capture::pin`]): either way only a program fd is needed,
//! so attaching works the same after a restart. The links are never pinned: they go with the
//! agent, and kill capture does not depend on them.
use std::{
    ffi::c_long,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

#[derive(Debug, thiserror::Error)]
pub enum StatHooksError {
    #[error("cannot attach {program} (BPF_RAW_TRACEPOINT_OPEN): {source}")]
    Attach {
        program: &'static str,
        source: std::io::Error,
    },
}

/// One stat program: its fd, and its link while attached.
#[derive(Debug)]
struct Program {
    name: &'static str,
    prog: OwnedFd,
    link: Option<OwnedFd>,
}

/// The stat programs that are attached on demand, and how long they have been attached.
#[derive(Debug)]
pub struct StatHooks {
    programs: Vec<Program>,
    /// When the current attachment began.
    since: Option<Instant>,
    /// Time attached before the current attachment.
    before: Duration,
    /// Attachments made since start.
    attaches: u64,
}

impl StatHooks {
    /// The programs, by name, with their fds; none attached yet.
    pub fn new(programs: Vec<(&'static str, OwnedFd)>) -> Self {
        Self {
            programs: programs
                .into_iter()
                .map(|(name, prog)| Program {
                    name,
                    prog,
                    link: None,
                })
                .collect(),
            since: None,
            before: Duration::ZERO,
            attaches: 0,
        }
    }

    /// Names of the programs.
    pub fn programs(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.programs.iter().map(|p| p.name)
    }

    /// Attaches (`true`) or detaches every program; returns whether anything changed. An
    /// attach that fails part way detaches what it attached: the programs are attached all
    /// together or not at all.
    pub fn set(&mut self, on: bool) -> Result<bool, StatHooksError> {
        if on == self.attached() {
            return Ok(false);
        }
        if !on {
            for p in &mut self.programs {
                // Closing the last fd of a raw tracepoint link detaches it.
                p.link = None;
            }
            if let Some(since) = self.since.take() {
                self.before += since.elapsed();
            }
            return Ok(true);
        }
        for i in 0..self.programs.len() {
            match raw_tracepoint_open(&self.programs[i].prog) {
                Ok(link) => self.programs[i].link = Some(link),
                Err(source) => {
                    let program = self.programs[i].name;
                    for p in &mut self.programs {
                        p.link = None;
                    }
                    return Err(StatHooksError::Attach { program, source });
                }
            }
        }
        self.since = Some(Instant::now());
        self.attaches += 1;
        Ok(true)
    }

    /// Whether the programs are attached now.
    pub fn attached(&self) -> bool {
        self.since.is_some()
    }

    /// Time spent attached since start.
    pub fn attached_for(&self) -> Duration {
        self.before + self.since.map_or(Duration::ZERO, |s| s.elapsed())
    }

    /// Attachments made since start.
    pub fn attaches(&self) -> u64 {
        self.attaches
    }
}

/// `BPF_RAW_TRACEPOINT_OPEN` with no name: attaches a BTF tracing program (`tp_btf`, fentry)
/// at the target it was loaded for, and returns the link's fd (close-on-exec, as every bpf fd).
fn raw_tracepoint_open(prog: &OwnedFd) -> std::io::Result<OwnedFd> {
    #[repr(C)]
    struct RawTracepointAttr {
        name: u64,
        prog_fd: u32,
        // Zeroed explicitly: the kernel refuses non-zero bytes past the fields it knows.
        pad: u32,
    }
    const BPF_RAW_TRACEPOINT_OPEN: c_long = 17;
    let attr = RawTracepointAttr {
        name: 0,
        prog_fd: prog.as_raw_fd() as u32,
        pad: 0,
    };
    // SAFETY: attr is a valid bpf_attr prefix for BPF_RAW_TRACEPOINT_OPEN and outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_RAW_TRACEPOINT_OPEN,
            &attr as *const RawTracepointAttr,
            size_of::<RawTracepointAttr>() as u32,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(rc).map_err(|_| std::io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned this fd, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Processes holding a raw tracepoint link on `tracepoint` now, with how many each: which
/// process has stat hooks attached (`check`). Read from `/proc/*/fdinfo` (a link pinned in
/// bpffs with no process holding it is not seen).
pub fn link_holders(tracepoint: &str) -> Vec<(u32, String, usize)> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let n = raw_tracepoint_links(pid, tracepoint);
        if n > 0 {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            out.push((pid, comm.trim().to_string(), n));
        }
    }
    out
}

/// How many raw tracepoint links on `tracepoint` process `pid` holds (0 when unreadable).
pub fn raw_tracepoint_links(pid: u32, tracepoint: &str) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:bpf_link")
        })
        .filter_map(|fd| {
            std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_str()?)).ok()
        })
        .filter(|info| is_raw_tracepoint_link(info, tracepoint))
        .count()
}

/// Whether a bpf link's fdinfo text is a raw tracepoint link on `tracepoint`.
fn is_raw_tracepoint_link(fdinfo: &str, tracepoint: &str) -> bool {
    let field = |key: &str| {
        fdinfo
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map(str::trim)
    };
    field("link_type") == Some("raw_tracepoint") && field("tp_name") == Some(tracepoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An fd that is no bpf program: attaching it fails, which must leave nothing attached.
    fn not_a_program() -> OwnedFd {
        let f = std::fs::File::open("/dev/null").expect("/dev/null");
        OwnedFd::from(f)
    }

    #[test]
    fn a_failed_attach_leaves_nothing_attached() {
        let mut hooks = StatHooks::new(vec![("a", not_a_program()), ("b", not_a_program())]);
        assert!(hooks.set(true).is_err());
        assert!(!hooks.attached());
        assert!(hooks.programs.iter().all(|p| p.link.is_none()));
        assert_eq!(hooks.attaches(), 0);
        assert_eq!(hooks.attached_for(), Duration::ZERO);
        // Detaching what is not attached changes nothing.
        assert!(!hooks.set(false).expect("no-op"));
        assert_eq!(hooks.programs().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn raw_tracepoint_links_are_told_by_type_and_name() {
        let info = "pos:\t0\nflags:\t02000000\nmnt_id:\t15\nino:\t1057\nlink_type:\traw_tracepoint\nlink_id:\t42\nprog_tag:\t0123456789abcdef\nprog_id:\t77\ntp_name:\tmod_memcg_lruvec_state\n";
        assert!(is_raw_tracepoint_link(info, "mod_memcg_lruvec_state"));
        assert!(!is_raw_tracepoint_link(info, "mod_memcg_state"));
        let tracing = info.replace("raw_tracepoint", "tracing");
        assert!(!is_raw_tracepoint_link(&tracing, "mod_memcg_lruvec_state"));
    }
}
