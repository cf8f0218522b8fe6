//! Durable capture (agent only): the attached programs' links and every map of the object pinned
//! in bpffs, so the hooks keep recording into the ring buffers while no agent runs, and the next
//! agent adopts them instead of loading again: no kill lost or doubled across a restart.
//!
//! Layout of a pin directory (bpffs allows only pins and directories, so the metadata is in the
//! names):
//!
//! ```text
//! DIR/                       flock'd by the agent that uses it
//! DIR/<fingerprint>/         one loaded object: 16 hex digits over the object, the kernel layout
//!                            and every setting that changes what was loaded and attached
//!   map@<NAME>               every map of the object (rings, failure counters, stat maps),
//!                            but the globals' `.rodata`/`.bss` (bpffs refuses dots in names)
//!   link@<probe>@<hook>@<program>   one bpf_link per attached program (`/` in hooks → `:`)
//!   prog@<probe>@<hook>@<program>   a program attached on demand (`--stat-hooks adaptive`):
//!                                   the program itself, for the next agent to attach; its
//!                                   links are never pinned
//! DIR/partial/               a state being pinned; renamed to <fingerprint> when complete
//! ```
//!
//! Links are found as this process's `bpf_link` fds of the programs the tracer attached (aya keeps
//! them inside each program; this reads them from `/proc/self/fd` so the tracer's attach code is
//! unchanged). A hook attached through a perf event without a bpf_link (tracepoints and kprobes
//! before 5.15) cannot be pinned: the agent then runs unpinned, with a warning.
use std::{
    collections::HashMap,
    ffi::CString,
    fs::File,
    os::{
        fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

use aya::{
    maps::{Map, MapData, RingBuf},
    Ebpf,
};
use log::{info, warn};

use crate::capture::{
    probes::{Hook, PROBES},
    record::{self, DecodeError, Record},
    tracer::{ProbeOutcome, TracerOptions},
};

/// Where the agent pins by default.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/oomtrace";
/// Where bpffs is mounted when it is not (the kernel's conventional mount point).
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const PARTIAL: &str = "partial";

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("oomtrace must run as root to manage pinned eBPF state: try `sudo oomtrace ...`")]
    NotRoot,
    #[error("{dir} is not on a bpf filesystem: mount one with `mount -t bpf bpf {dir}`")]
    NotBpffs { dir: String },
    #[error("cannot mount bpffs at {BPFFS_ROOT} ({source}): mount it with `mount -t bpf bpf {BPFFS_ROOT}`")]
    Mount { source: std::io::Error },
    #[error(
        "another oomtrace agent holds the pin directory {dir}: stop it, or give this one \
         another --pin-dir (or --no-pin)"
    )]
    Locked { dir: String },
    #[error("an oomtrace agent is running with the pin directory {dir}: stop it first")]
    InUse { dir: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open pinned map {path}: {source}")]
    Map {
        path: String,
        source: aya::maps::MapError,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PinError + 'a {
    move |source| PinError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// FNV-1a over everything that decides what is loaded and attached: a stable hash (std's
/// hasher may change between Rust releases, and the pins outlive the binary).
#[derive(Debug, Clone, Copy)]
pub struct Fingerprint(u64);

impl Fingerprint {
    pub fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    pub fn with(mut self, bytes: &[u8]) -> Self {
        // The length first: ("ab", "c") and ("a", "bc") differ.
        for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        self
    }

    fn name(self) -> String {
        format!("{:016x}", self.0)
    }
}

impl Default for Fingerprint {
    fn default() -> Self {
        Self::new()
    }
}

/// The bytes of a plain-old-data value (the globals handed to the programs).
pub fn pod_bytes<T: aya::Pod>(v: &T) -> &[u8] {
    // SAFETY: `Pod` types are plain data with no padding the kernel would not also see; the
    // slice covers exactly the value and lives as long as the borrow.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

/// A pin directory this process holds (exclusive flock on the directory, released on drop).
#[derive(Debug)]
pub struct PinDir {
    dir: PathBuf,
    _lock: File,
}

/// What [`PinDir::adopt`] found.
pub enum Adoption {
    /// Pins of the same object and settings: maps to open, and the outcomes they were attached
    /// with.
    Same {
        state: PathBuf,
        outcomes: Vec<ProbeOutcome>,
    },
    /// Nothing usable; records drained from older pinned rings (already detached and removed),
    /// to deliver before anything else.
    Fresh {
        drained: Vec<Result<Record, DecodeError>>,
    },
}

impl PinDir {
    /// Mounts bpffs at [`BPFFS_ROOT`] when `dir` is under it and nothing is mounted there,
    /// creates `dir` and takes its lock.
    pub fn lock(dir: &Path) -> Result<Self, PinError> {
        if !crate::capture::tracer::is_root() {
            return Err(PinError::NotRoot);
        }
        if !is_bpffs(dir) {
            if dir.starts_with(BPFFS_ROOT) && !is_bpffs(Path::new(BPFFS_ROOT)) {
                mount_bpffs()?;
            }
            let parent = dir.parent().unwrap_or(dir);
            if !is_bpffs(parent) && !is_bpffs(dir) {
                return Err(PinError::NotBpffs {
                    dir: dir.display().to_string(),
                });
            }
        }
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("cannot create the pin directory", dir)(e)),
        }
        let lock = File::open(dir).map_err(io("cannot open the pin directory", dir))?;
        // SAFETY: flock on an fd this function owns.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => PinError::Locked {
                    dir: dir.display().to_string(),
                },
                _ => io("cannot lock the pin directory", dir)(e),
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// [`Self::lock`], but without bpffs (none mounted, and no right to mount one: a pod
    /// without CAP_SYS_ADMIN on a host without it) the agent runs unpinned, with a warning.
    pub fn lock_or_warn(dir: &Path) -> Result<Option<Self>, PinError> {
        match Self::lock(dir) {
            Ok(p) => Ok(Some(p)),
            Err(e @ (PinError::NotBpffs { .. } | PinError::Mount { .. })) => {
                warn!("{e}: running unpinned (kills during a restart are not captured)");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Adopts pins of the same fingerprint; otherwise detaches every other pinned state, drains
    /// its rings and removes it.
    pub fn adopt(&self, fp: Fingerprint) -> Result<Adoption, PinError> {
        let want = fp.name();
        let mut drained = Vec::new();
        let mut same = None;
        for entry in std::fs::read_dir(&self.dir).map_err(io("cannot list", &self.dir))? {
            let entry = entry.map_err(io("cannot list", &self.dir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == want {
                same = Some(path);
                continue;
            }
            if name != PARTIAL {
                info!(
                    "pinned state {} is from another oomtrace object or settings: draining \
                     its rings, then removing it and loading afresh",
                    path.display()
                );
            }
            drained.extend(retire(&path)?);
        }
        let Some(state) = same else {
            return Ok(Adoption::Fresh { drained });
        };
        let outcomes = outcomes_of(&state)?;
        if outcomes.iter().all(|o| o.chosen.is_none()) {
            warn!(
                "pinned state {} has no links: loading afresh",
                state.display()
            );
            drained.extend(retire(&state)?);
            return Ok(Adoption::Fresh { drained });
        }
        info!(
            "adopting the programs pinned at {}: records queued while no agent ran come first",
            state.display()
        );
        Ok(Adoption::Same { state, outcomes })
    }

    /// Pins every map and the link of every attached program under `DIR/<fingerprint>`. When a
    /// link cannot be pinned, nothing stays pinned and the tracer runs as without pins.
    pub fn pin(
        &self,
        ebpf: &Ebpf,
        outcomes: &[ProbeOutcome],
        fp: Fingerprint,
    ) -> Result<bool, PinError> {
        let partial = self.dir.join(PARTIAL);
        let _ = remove_state(&partial);
        std::fs::create_dir(&partial).map_err(io("cannot create", &partial))?;
        match pin_into(&partial, ebpf, outcomes) {
            Ok(()) => {}
            Err(why) => {
                warn!("{why}: running unpinned (kills during a restart are not captured)");
                remove_state(&partial)?;
                return Ok(false);
            }
        }
        let state = self.dir.join(fp.name());
        std::fs::rename(&partial, &state).map_err(io("cannot rename", &partial))?;
        info!(
            "pinned the programs and maps at {}: they stay attached after this agent exits \
             (`oomtrace uninstall` removes them)",
            state.display()
        );
        Ok(true)
    }
}

/// The pinning side of one tracer start: [`Start::begin`] before loading, [`Start::finish`]
/// once attached.
pub struct Start {
    pins: Option<PinDir>,
    fingerprint: Fingerprint,
    /// The adopted state and the outcomes its links encode: load nothing when set.
    pub adopted: Option<(PathBuf, Vec<ProbeOutcome>)>,
    queued: Vec<Result<Record, DecodeError>>,
}

/// What a started tracer keeps: the held pin directory, the adopted state to open maps from,
/// the probe outcomes, and records drained from an older state.
pub type Finished = (
    Option<PinDir>,
    Option<PathBuf>,
    Vec<ProbeOutcome>,
    Vec<Result<Record, DecodeError>>,
);

impl Start {
    /// Locks `opts.pin` (if any) and adopts or retires what is pinned there. `inputs` are the
    /// object and the globals it is loaded with; the settings that change what is attached are
    /// added here.
    pub fn begin(opts: &TracerOptions, inputs: &[&[u8]]) -> Result<Self, PinError> {
        let settings = format!(
            "{:?} {:?} {} {:?}",
            opts.attach,
            opts.skip_hooks,
            opts.sigkill,
            opts.pressure.as_ref().map(|p| p.stat_hooks)
        );
        let fingerprint = inputs
            .iter()
            .fold(
                Fingerprint::new().with(env!("CARGO_PKG_VERSION").as_bytes()),
                |f, b| f.with(b),
            )
            .with(settings.as_bytes());
        let pins = match opts.pin.as_deref() {
            Some(dir) => PinDir::lock_or_warn(dir)?,
            None => None,
        };
        let (adopted, queued) = match pins.as_ref().map(|p| p.adopt(fingerprint)).transpose()? {
            Some(Adoption::Same { state, outcomes }) => (Some((state, outcomes)), Vec::new()),
            Some(Adoption::Fresh { drained }) => (None, drained),
            None => (None, Vec::new()),
        };
        Ok(Self {
            pins,
            fingerprint,
            adopted,
            queued,
        })
    }

    /// Pins what was loaded (`ebpf`, with `outcomes`), or takes the adopted state's outcomes.
    pub fn finish(
        self,
        ebpf: Option<&Ebpf>,
        outcomes: Vec<ProbeOutcome>,
    ) -> Result<Finished, PinError> {
        if let (Some(p), Some(e)) = (&self.pins, ebpf) {
            p.pin(e, &outcomes, self.fingerprint)?;
        }
        Ok(match self.adopted {
            Some((state, adopted)) => (self.pins, Some(state), adopted, self.queued),
            None => (self.pins, None, outcomes, self.queued),
        })
    }
}

/// Where pinned maps of an adopted state are opened from, or the loaded object they are taken
/// from.
pub enum MapSource<'a> {
    Loaded(&'a mut Ebpf),
    Pinned(&'a Path),
}

impl MapSource<'_> {
    /// The map `name` (as [`Ebpf::take_map`]); `Ok(None)` when the object has none.
    pub fn take(&mut self, name: &str) -> Result<Option<Map>, PinError> {
        match self {
            MapSource::Loaded(ebpf) => Ok(ebpf.take_map(name)),
            MapSource::Pinned(dir) => {
                let path = dir.join(format!("map@{name}"));
                if !path.exists() {
                    return Ok(None);
                }
                let err = |source| PinError::Map {
                    path: path.display().to_string(),
                    source,
                };
                let data = MapData::from_pin(&path).map_err(err)?;
                Map::from_map_data(data).map(Some).map_err(err)
            }
        }
    }
}

fn pin_into(dir: &Path, ebpf: &Ebpf, outcomes: &[ProbeOutcome]) -> Result<(), String> {
    // bpffs reserves names with dots; those are the globals' maps, which only programs use.
    for (name, map) in ebpf.maps().filter(|(name, _)| !name.contains('.')) {
        let path = dir.join(format!("map@{name}"));
        map.pin(&path).map_err(|e| {
            let cause = std::error::Error::source(&e).map(|c| format!(": {c}"));
            format!(
                "cannot pin map {name} at {}: {e}{}",
                path.display(),
                cause.unwrap_or_default()
            )
        })?;
    }
    let links = link_fds().map_err(|e| format!("cannot list this process's bpf links: {e}"))?;
    for o in outcomes {
        let Some(hook) = o.chosen else { continue };
        if o.on_demand {
            // Loaded, not attached: the program itself, so the next agent can attach it.
            let program = hook.program;
            let fd = ebpf
                .program(program)
                .and_then(|p| p.fd().ok())
                .ok_or_else(|| format!("program {program} is not loaded"))?;
            let path = dir.join(program_pin_name(o.probe.name, &hook, program));
            obj_pin(fd.as_fd().as_raw_fd(), &path)
                .map_err(|e| format!("cannot pin program {program}: {e}"))?;
            continue;
        }
        for program in std::iter::once(hook.program).chain(hook.exit_program) {
            let id = ebpf
                .program(program)
                .and_then(|p| p.info().ok())
                .map(|i| i.id())
                .ok_or_else(|| format!("program {program} is not loaded"))?;
            let fd = links.get(&id).ok_or_else(|| {
                format!(
                    "hook {hook} cannot be pinned on this kernel (attached through a perf \
                     event, not a bpf_link)"
                )
            })?;
            let path = dir.join(link_name(o.probe.name, &hook, program));
            obj_pin(*fd, &path).map_err(|e| format!("cannot pin {hook}: {e}"))?;
        }
    }
    Ok(())
}

fn link_name(probe: &str, hook: &Hook, program: &str) -> String {
    format!("link@{probe}@{}@{program}", hook.name().replace('/', ":"))
}

fn program_pin_name(probe: &str, hook: &Hook, program: &str) -> String {
    format!("prog@{probe}@{}@{program}", hook.name().replace('/', ":"))
}

/// Opens the pinned program of an on-demand hook of an adopted state (see [`pin_into`]).
pub fn open_program(state: &Path, probe: &str, hook: &Hook) -> Result<OwnedFd, PinError> {
    let path = state.join(program_pin_name(probe, hook, hook.program));
    obj_get(&path).map_err(io("cannot open the pinned program", &path))
}

/// The probe outcomes encoded in an adopted state's link (and on-demand program) names.
fn outcomes_of(state: &Path) -> Result<Vec<ProbeOutcome>, PinError> {
    // probe → (hook, on demand)
    let mut chosen: HashMap<String, (String, bool)> = HashMap::new();
    for entry in std::fs::read_dir(state).map_err(io("cannot list", state))? {
        let name = entry
            .map_err(io("cannot list", state))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        let mut parts = name.splitn(4, '@');
        let (kind, probe, hook) = (parts.next(), parts.next(), parts.next());
        if let (Some(kind @ ("link" | "prog")), Some(probe), Some(hook)) = (kind, probe, hook) {
            chosen.insert(probe.to_string(), (hook.replace(':', "/"), kind == "prog"));
        }
    }
    Ok(PROBES
        .iter()
        .map(|p| {
            let found = chosen.get(p.name).and_then(|(h, on_demand)| {
                let hook = p.hooks.iter().find(|k| k.name() == *h).copied()?;
                Some((hook, *on_demand))
            });
            let hook = found.map(|(h, _)| h);
            ProbeOutcome {
                probe: *p,
                chosen: hook,
                on_demand: found.is_some_and(|(_, d)| d),
                skipped: p
                    .hooks
                    .iter()
                    .filter(|h| Some(**h) != hook)
                    .map(|h| (*h, "not used by the adopted pinned programs".to_string()))
                    .collect(),
            }
        })
        .collect())
}

/// Detaches a pinned state (its link pins first, so nothing writes any more), drains its
/// rings, and removes it.
fn retire(state: &Path) -> Result<Vec<Result<Record, DecodeError>>, PinError> {
    let entries = names_in(state)?;
    for name in entries.iter().filter(|n| n.starts_with("link@")) {
        let p = state.join(name);
        std::fs::remove_file(&p).map_err(io("cannot remove", &p))?;
    }
    let mut out = Vec::new();
    for name in entries.iter().filter(|n| n.starts_with("map@")) {
        if name == "map@AYA_LOGS" {
            continue;
        }
        let p = state.join(name);
        let Ok(Map::RingBuf(data)) = MapData::from_pin(&p).and_then(Map::from_map_data) else {
            continue;
        };
        let Ok(mut ring) = RingBuf::try_from(Map::RingBuf(data)) else {
            continue;
        };
        let before = out.len();
        while let Some(item) = ring.next() {
            out.push(record::decode_any(&item));
        }
        if out.len() > before {
            info!(
                "drained {} records from {}",
                out.len() - before,
                p.display()
            );
        }
    }
    remove_state(state)?;
    Ok(out)
}

fn names_in(dir: &Path) -> Result<Vec<String>, PinError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io("cannot list", dir))? {
        names.push(
            entry
                .map_err(io("cannot list", dir))?
                .file_name()
                .to_string_lossy()
                .into_owned(),
        );
    }
    names.sort();
    Ok(names)
}

/// Removes a state directory, links before maps (detaching before the rings go).
fn remove_state(dir: &Path) -> Result<(), PinError> {
    let mut names = match names_in(dir) {
        Ok(n) => n,
        Err(PinError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(())
        }
        Err(e) => return Err(e),
    };
    names.sort_by_key(|n| !n.starts_with("link@"));
    for name in names {
        let p = dir.join(name);
        if p.is_dir() {
            remove_state(&p)?;
        } else {
            std::fs::remove_file(&p).map_err(io("cannot remove", &p))?;
        }
    }
    std::fs::remove_dir(dir).map_err(io("cannot remove", dir))
}

/// `oomtrace uninstall`: detaches and removes everything pinned at `dir`. Returns how many
/// pinned states were removed (0 when nothing was pinned).
pub fn uninstall(dir: &Path) -> Result<usize, PinError> {
    if !crate::capture::tracer::is_root() {
        return Err(PinError::NotRoot);
    }
    if !dir.exists() {
        if dir.starts_with(BPFFS_ROOT) && !is_bpffs(Path::new(BPFFS_ROOT)) {
            info!("no bpf filesystem is mounted at {BPFFS_ROOT}: nothing is pinned");
        }
        return Ok(0);
    }
    if !is_bpffs(dir) {
        return Err(PinError::NotBpffs {
            dir: dir.display().to_string(),
        });
    }
    let held = PinDir::lock(dir).map_err(|e| match e {
        PinError::Locked { dir } => PinError::InUse { dir },
        e => e,
    })?;
    let states = names_in(dir)?;
    for name in &states {
        remove_state(&dir.join(name))?;
    }
    drop(held);
    std::fs::remove_dir(dir).map_err(io("cannot remove", dir))?;
    Ok(states.len())
}

/// For `check`: whether the agent could pin, and what is pinned at `dir`.
pub fn describe(dir: &Path) -> String {
    let root = Path::new(BPFFS_ROOT);
    let fs = if is_bpffs(root) {
        format!("bpffs mounted at {BPFFS_ROOT}")
    } else {
        format!("bpffs not mounted at {BPFFS_ROOT} (the agent mounts it)")
    };
    let state = match names_in(dir) {
        Err(_) => "nothing pinned".to_string(),
        Ok(names) if names.is_empty() => "nothing pinned".to_string(),
        Ok(names) => names
            .iter()
            .map(|n| {
                let names = names_in(&dir.join(n)).unwrap_or_default();
                let count = |prefix: &str| names.iter().filter(|x| x.starts_with(prefix)).count();
                match count("prog@") {
                    0 => format!("{n} ({} links)", count("link@")),
                    progs => format!(
                        "{n} ({} links, {progs} programs attached on demand)",
                        count("link@")
                    ),
                }
            })
            .collect::<Vec<_>>()
            .join(", "),
    };
    format!("{fs}; {}: {state}", dir.display())
}

/// Whether a hook's link can be pinned on this kernel: BTF hooks always make a bpf_link;
/// tracepoints and kprobes only where perf links exist (5.15+).
pub fn hook_pinnable(hook: &Hook) -> bool {
    use crate::capture::probes::HookKind;
    match hook.kind {
        HookKind::TpBtf { .. } | HookKind::Fentry { .. } => true,
        HookKind::Kprobe { .. } | HookKind::Tracepoint { .. } => kernel_at_least(5, 15),
    }
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let have = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    have >= (major, minor)
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct; the path is a valid C string.
    unsafe {
        let mut s: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut s) == 0 && s.f_type as i64 == BPF_FS_MAGIC
    }
}

fn mount_bpffs() -> Result<(), PinError> {
    let _ = std::fs::create_dir_all(BPFFS_ROOT);
    let (src, target, fstype) = (c"bpf", c"/sys/fs/bpf", c"bpf");
    // SAFETY: constant, valid C strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(PinError::Mount {
            source: std::io::Error::last_os_error(),
        });
    }
    info!("mounted bpffs at {BPFFS_ROOT}");
    Ok(())
}

/// This process's `bpf_link` fds by the id of the program each links.
fn link_fds() -> std::io::Result<HashMap<u32, i32>> {
    let mut out = HashMap::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if target.as_os_str() != "anon_inode:bpf_link" {
            continue;
        }
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
        if let Some(id) = info
            .lines()
            .find_map(|l| l.strip_prefix("prog_id:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
        {
            out.insert(id, fd);
        }
    }
    Ok(out)
}

/// The `bpf_attr` of `BPF_OBJ_PIN` and `BPF_OBJ_GET`.
#[repr(C)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    // Zeroed explicitly: the kernel refuses non-zero bytes past the fields it knows.
    pad: u32,
}

/// `bpf(cmd, ObjAttr)` on `path`, with `fd` as `bpf_fd`.
fn obj_call(cmd: libc::c_long, fd: u32, path: &Path) -> std::io::Result<libc::c_long> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let attr = ObjAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: fd,
        file_flags: 0,
        path_fd: 0,
        pad: 0,
    };
    // SAFETY: attr is a valid bpf_attr prefix for BPF_OBJ_PIN and BPF_OBJ_GET, and its path
    // outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            &attr as *const ObjAttr,
            size_of::<ObjAttr>() as u32,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}

/// `BPF_OBJ_PIN` of any bpf fd (aya pins links only through its own link types).
fn obj_pin(fd: i32, path: &Path) -> std::io::Result<()> {
    const BPF_OBJ_PIN: libc::c_long = 6;
    obj_call(BPF_OBJ_PIN, fd as u32, path).map(|_| ())
}

/// `BPF_OBJ_GET`: a new fd (close-on-exec) of the object pinned at `path`.
fn obj_get(path: &Path) -> std::io::Result<OwnedFd> {
    const BPF_OBJ_GET: libc::c_long = 7;
    let rc = obj_call(BPF_OBJ_GET, 0, path)?;
    let fd = i32::try_from(rc).map_err(|_| std::io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned this fd, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_depend_on_every_input_and_its_split() {
        let a = Fingerprint::new().with(b"ab").with(b"c").name();
        let b = Fingerprint::new().with(b"a").with(b"bc").name();
        let c = Fingerprint::new().with(b"ab").with(b"c").name();
        assert_ne!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn link_names_round_trip_to_outcomes() {
        let dir = std::env::temp_dir().join(format!("oomtrace-pin-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let probe = PROBES[0];
        let hook = probe.hooks[probe.hooks.len() - 1];
        std::fs::write(dir.join(link_name(probe.name, &hook, hook.program)), b"").expect("write");
        // An on-demand stat program: pinned as a program, not a link.
        let stat = crate::capture::probes::MEMCG_LRUVEC_STAT;
        let stat_hook = stat.hooks[0];
        let prog = program_pin_name(stat.name, &stat_hook, stat_hook.program);
        assert_eq!(
            prog,
            "prog@memcg_lruvec_stat@tp_btf:mod_memcg_lruvec_state@oomtrace_tp_btf_mod_memcg_lruvec_state"
        );
        std::fs::write(dir.join(prog), b"").expect("write");
        let outcomes = outcomes_of(&dir).expect("outcomes");
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert_eq!(outcomes.len(), PROBES.len());
        assert_eq!(outcomes[0].chosen.map(|h| h.name()), Some(hook.name()));
        assert!(!outcomes[0].on_demand);
        let (with_stat, rest): (Vec<_>, Vec<_>) = outcomes[1..]
            .iter()
            .partition(|o| o.probe.name == stat.name);
        assert_eq!(with_stat[0].chosen, Some(stat_hook));
        assert!(with_stat[0].on_demand);
        assert!(rest.iter().all(|o| o.chosen.is_none() && !o.on_demand));
    }
}
