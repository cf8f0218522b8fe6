//! Reading one process's identity from procfs (`/proc` or a host's procfs mounted elsewhere):
//! `stat` (parent, start time), `cmdline`, `exe`, `environ` (allowlisted variables only) and
//! `status` (`NSpid`). Reading another user's `exe` and `environ` needs CAP_SYS_PTRACE; without
//! it those parts are absent and the rest is still read.
use std::{
    collections::BTreeMap,
    fs::File,
    io::{self, Read},
    path::{Path, PathBuf},
};

/// The environment variables kept: runtime memory settings. Nothing else of a process's
/// environment is kept, or held longer than the read of `environ`.
pub(crate) const ENV_ALLOWLIST: [&str; 8] = [
    "NODE_OPTIONS",
    "GOMEMLIMIT",
    "GOGC",
    "JAVA_TOOL_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "_JAVA_OPTIONS",
    "MALLOC_ARENA_MAX",
    "UV_THREADPOOL_SIZE",
];

/// Bytes of `cmdline` parsed: far more than the 1024 kept after redaction, so that every kept
/// argument and the flag before it are whole.
const CMDLINE_PARSED: usize = 16 << 10;
/// Bytes kept of one allowlisted environment value.
const ENV_VALUE_MAX: usize = 4 << 10;
/// Longer names cannot be on the allowlist.
const ENV_NAME_MAX: usize = 32;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProcError {
    /// The process is gone (or never was): not worth a log line.
    #[error("no such process")]
    Gone,
    /// A kernel thread, or a process past the release of its memory (a zombie, or an OOM
    /// victim already exiting): no command line to read.
    #[error("empty command line")]
    NoCommandLine,
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("cannot parse {path}")]
    Malformed { path: String },
}

impl ProcError {
    fn read(path: &Path, source: io::Error) -> Self {
        // ESRCH: the process exited between opening and reading.
        if source.kind() == io::ErrorKind::NotFound || source.raw_os_error() == Some(libc::ESRCH) {
            ProcError::Gone
        } else {
            ProcError::Read {
                path: path.display().to_string(),
                source,
            }
        }
    }
}

/// Fields of `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) ppid: u32,
    /// Field 22, clock ticks after boot: with the pid, a key no pid reuse repeats.
    pub(crate) start_time: u64,
}

/// Parses `/proc/PID/stat`: `pid (comm) state ppid … starttime …`. The command may hold spaces
/// and parentheses, so fields are counted after its last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state).
    Some(Stat {
        ppid: fields.get(4 - 3)?.parse().ok()?,
        start_time: fields.get(22 - 3)?.parse().ok()?,
    })
}

/// Whether the process is PID 1 of its PID namespace: the last `NSpid` number (the pid in
/// the innermost namespace) is 1. `None` when the kernel does not print `NSpid` (before 4.1).
pub(crate) fn parse_container_init(status: &str) -> Option<bool> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    let innermost: u32 = line.split_whitespace().last()?.parse().ok()?;
    Some(innermost == 1)
}

/// `cmdline` as arguments (NUL-separated, the last one NUL-terminated), lossily as UTF-8.
pub(crate) fn parse_cmdline(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The allowlisted variables of an `environ` stream (`NAME=value` entries, NUL-separated), the
/// first of each name as `getenv` finds it. Other entries are skipped byte by byte as they pass
/// through one fixed buffer, which is zeroed before it is dropped.
pub(crate) fn read_allowlisted_env(mut r: impl Read) -> io::Result<BTreeMap<String, String>> {
    enum State {
        Name,
        Value(&'static str),
        Skip,
    }
    let mut buf = [0u8; 4096];
    let mut name: Vec<u8> = Vec::with_capacity(ENV_NAME_MAX);
    let mut value: Vec<u8> = Vec::new();
    let mut state = State::Name;
    let mut out = BTreeMap::new();
    let keep = |out: &mut BTreeMap<String, String>, n: &'static str, v: &mut Vec<u8>| {
        out.entry(n.to_string())
            .or_insert_with(|| String::from_utf8_lossy(v).into_owned());
        v.clear();
    };
    let result = loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        };
        for &b in &buf[..n] {
            state = match state {
                State::Name if b == b'=' => {
                    let hit = ENV_ALLOWLIST.iter().find(|a| a.as_bytes() == name);
                    scrub_name(&mut name);
                    match hit {
                        Some(a) => State::Value(a),
                        None => State::Skip,
                    }
                }
                State::Name if b == 0 => {
                    scrub_name(&mut name);
                    State::Name
                }
                State::Name if name.len() >= ENV_NAME_MAX => {
                    scrub_name(&mut name);
                    State::Skip
                }
                State::Name => {
                    name.push(b);
                    State::Name
                }
                State::Value(a) if b == 0 => {
                    keep(&mut out, a, &mut value);
                    State::Name
                }
                State::Value(a) => {
                    if value.len() < ENV_VALUE_MAX {
                        value.push(b);
                    }
                    State::Value(a)
                }
                State::Skip if b == 0 => State::Name,
                State::Skip => State::Skip,
            };
        }
    };
    if let State::Value(a) = state {
        keep(&mut out, a, &mut value);
    }
    scrub(&mut buf);
    scrub_name(&mut name);
    result.map(|()| out)
}

/// Zeroes bytes that held another process's environment, in a way the compiler keeps.
fn scrub(bytes: &mut [u8]) {
    for b in bytes.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference to one byte.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// [`scrub`]s a name buffer and empties it.
fn scrub_name(name: &mut Vec<u8>) {
    scrub(name);
    name.clear();
}

/// One process's directory in a procfs.
pub(crate) struct ProcDir(PathBuf);

impl ProcDir {
    pub(crate) fn new(proc_root: &Path, pid: u32) -> Self {
        Self(proc_root.join(pid.to_string()))
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    pub(crate) fn stat(&self) -> Result<Stat, ProcError> {
        let path = self.path("stat");
        let text = std::fs::read_to_string(&path).map_err(|e| ProcError::read(&path, e))?;
        parse_stat(&text).ok_or_else(|| ProcError::Malformed {
            path: path.display().to_string(),
        })
    }

    /// The first [`CMDLINE_PARSED`] bytes of `cmdline`, and its whole length.
    pub(crate) fn cmdline(&self) -> Result<(Vec<u8>, u64), ProcError> {
        let path = self.path("cmdline");
        let read = || -> io::Result<(Vec<u8>, u64)> {
            let mut f = File::open(&path)?;
            let mut kept = Vec::new();
            let mut chunk = [0u8; 4096];
            let mut total = 0u64;
            loop {
                let n = match f.read(&mut chunk) {
                    Ok(0) => return Ok((kept, total)),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                total += n as u64;
                let room = CMDLINE_PARSED.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
        };
        read().map_err(|e| ProcError::read(&path, e))
    }

    /// Where `exe` points, `None` when it cannot be read (another user's process without
    /// CAP_SYS_PTRACE, or a process past the release of its memory).
    pub(crate) fn executable(&self) -> Option<String> {
        let path = self.path("exe");
        std::fs::read_link(&path)
            .inspect_err(|e| log::debug!("{}: {e}", path.display()))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    /// The allowlisted environment variables, `None` when `environ` cannot be read.
    pub(crate) fn allowlisted_env(&self) -> Option<BTreeMap<String, String>> {
        let path = self.path("environ");
        File::open(&path)
            .and_then(read_allowlisted_env)
            .inspect_err(|e| log::debug!("{}: {e}", path.display()))
            .ok()
    }

    pub(crate) fn container_init(&self) -> Option<bool> {
        let path = self.path("status");
        let text = std::fs::read_to_string(&path)
            .inspect_err(|e| log::debug!("{}: {e}", path.display()))
            .ok()?;
        parse_container_init(&text)
    }
}

/// The processes (thread-group ids) a procfs lists.
pub(crate) fn list_pids(proc_root: &Path) -> io::Result<Vec<u32>> {
    Ok(std::fs::read_dir(proc_root)?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_command_with_parentheses_and_spaces() {
        // A real line of this machine's /proc/self/stat shape, comm "a) (b c".
        let line = "4242 (a) (b c) S 17 4242 17 34816 4242 4194304 120 0 0 0 0 0 0 0 20 0 1 0 \
                    987654 8421376 512 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                ppid: 17,
                start_time: 987654
            })
        );
        assert_eq!(parse_stat("4242 (x) S 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn nspid_names_the_innermost_namespace() {
        let host = "Name:\tsh\nTgid:\t900\nNSpid:\t900\nNSsid:\t1\n";
        let in_container_init = "Name:\tnode\nNSpid:\t31337\t1\n";
        let in_container = "Name:\tnode\nNSpid:\t31338\t7\n";
        assert_eq!(parse_container_init(host), Some(false));
        assert_eq!(parse_container_init(in_container_init), Some(true));
        assert_eq!(parse_container_init(in_container), Some(false));
        assert_eq!(parse_container_init("Name:\tinit\nNSsid:\t1\n"), None);
        // The host's init is PID 1 of the initial namespace.
        assert_eq!(parse_container_init("NSpid:\t1\n"), Some(true));
    }

    #[test]
    fn cmdline_splits_at_nul_and_keeps_empty_arguments() {
        assert_eq!(
            parse_cmdline(b"node\0--x\0\0app.js\0"),
            ["node", "--x", "", "app.js"]
        );
        assert_eq!(parse_cmdline(b"no-trailing-nul"), ["no-trailing-nul"]);
        assert!(parse_cmdline(b"").is_empty());
        assert_eq!(parse_cmdline(b"\xffx\0"), ["\u{fffd}x"]);
    }

    #[test]
    fn only_allowlisted_variables_are_kept_first_one_wins() {
        let environ =
            b"PATH=/usr/bin\0SECRET_X=do-not-keep\0NODE_OPTIONS=--max-old-space-size=4096\0\
NOEQUALS\0GOMEMLIMIT=1GiB\0NODE_OPTIONS=second\0NODE_OPTIONSX=near-miss\0GOGC=50";
        // One byte at a time: entries split across reads.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let Some((first, rest)) = self.0.split_first() else {
                    return Ok(0);
                };
                buf[0] = *first;
                self.0 = rest;
                Ok(1)
            }
        }
        for env in [
            read_allowlisted_env(&environ[..]).expect("read"),
            read_allowlisted_env(Trickle(environ)).expect("read"),
        ] {
            assert_eq!(
                env,
                BTreeMap::from([
                    ("GOGC".to_string(), "50".to_string()),
                    ("GOMEMLIMIT".to_string(), "1GiB".to_string()),
                    (
                        "NODE_OPTIONS".to_string(),
                        "--max-old-space-size=4096".to_string()
                    ),
                ])
            );
        }
        let long = format!("{}=1\0GOGC=off\0", "N".repeat(100));
        assert_eq!(
            read_allowlisted_env(long.as_bytes()).expect("read")["GOGC"],
            "off"
        );
    }
}
