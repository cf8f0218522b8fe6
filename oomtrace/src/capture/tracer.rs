//! Loading the embedded eBPF object with this kernel's layout, attaching hooks by the probe
//! table, and reading records from its ring buffers.
use std::{
    collections::HashMap,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::{
    maps::{MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{BtfTracePoint, FEntry, FExit, KProbe, ProgramError, TracePoint},
    Btf, Ebpf, EbpfLoader, Endianness,
};
use log::{info, warn};
use oomtrace_common::{Failure, KernelLayout, MemcgStats, PressureConfig};
use tokio::io::unix::AsyncFd;

use crate::{
    capture::btf_layout::{KernelBtf, LayoutError},
    capture::map_budget,
    capture::pin::{self, MapSource, PinDir, PinError},
    capture::probes::{
        AttachMode, Hook, HookKind, Probe, EXEC, MEMCG_LRUVEC_STAT, PROBES, SIGKILL, STAT_PROBES,
    },
    capture::record::{self, DecodeError, Record},
    capture::self_memory::{self, log_stage},
    capture::stat_hooks::{StatHooks, StatHooksError},
    capture::tracefs,
    logging,
    pressure::{PressureSettings, StatHooksMode},
};

/// The eBPF object, built by `cargo xtask build-ebpf` and embedded at compile time.
static EBPF_OBJECT: &[u8] = include_bytes!(env!("OOMTRACE_EBPF_OBJECT_PATH"));

pub const DEFAULT_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Present when the kernel supports perf-based kprobes.
const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe/type";

#[derive(Debug, thiserror::Error)]
pub enum TracerError {
    #[error("oomtrace must run as root (it loads eBPF programs): try `sudo oomtrace ...`")]
    NotRoot,
    #[error("no kernel BTF at {DEFAULT_BTF} (kernel built without CONFIG_DEBUG_INFO_BTF): pass --btf FILE with this kernel's BTF, e.g. from BTFHub")]
    NoBtf,
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("cannot load BTF {path} for the eBPF loader: {source}")]
    LoaderBtf { path: String, source: aya::BtfError },
    #[error("cannot load the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error(
        "the kernel refused bpf() ({0}) although this process has CAP_BPF and CAP_PERFMON: a \
         seccomp filter blocks it (`Seccomp: 2` in /proc/self/status), as the default profiles \
         of podman 4 and containerd < 1.6.9 do; run the container with \
         deploy/seccomp/oomtrace.json (podman/docker: --security-opt seccomp=FILE; Kubernetes: \
         a Localhost seccompProfile) or with a runtime whose default allows bpf() with CAP_BPF"
    )]
    SeccompRefused(aya::EbpfError),
    #[error(
        "the kernel refused bpf() ({0}): oomtrace needs CAP_BPF and CAP_PERFMON (kernel >= \
         5.8), or CAP_SYS_ADMIN; in a container, add them (DaemonSet: capabilities.add)"
    )]
    CapabilitiesMissing(aya::EbpfError),
    #[error("the eBPF object lacks {0}")]
    Missing(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error(
        "no hook for probe `{probe}` could attach ({tried}); run `oomtrace check` for details"
    )]
    NoHook { probe: &'static str, tried: String },
    #[error("--attach {mode:?}: probe `{probe}` needs {mode:?} hooks, and none attached: {tried}")]
    Forced {
        mode: AttachMode,
        probe: &'static str,
        tried: String,
    },
    #[error("ring buffer: {0}")]
    Io(#[from] std::io::Error),
    #[error("unknown hook {name:?} in --skip-hook; hooks are: {known}")]
    UnknownHook { name: String, known: String },
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error(transparent)]
    StatHooks(#[from] StatHooksError),
}

/// A load error, named by its cause when the kernel refused bpf() for want of privilege.
fn explain_load_error(err: aya::EbpfError) -> TracerError {
    use super::privilege::{refusal, Privileges, Refusal};
    match refusal(&err, Privileges::of_self()) {
        Some(Refusal::Seccomp) => TracerError::SeccompRefused(err),
        Some(Refusal::Capabilities) => TracerError::CapabilitiesMissing(err),
        None => TracerError::Load(err),
    }
}

/// Settings for starting the tracer.
#[derive(Debug, Clone)]
pub struct TracerOptions {
    /// BTF of the running kernel; `None` uses [`DEFAULT_BTF`].
    pub btf: Option<PathBuf>,
    pub attach: AttachMode,
    /// Fail when a required probe (or a probe forced with `--attach`) gets no hook. `check`
    /// turns this off to report every outcome.
    pub require_hooks: bool,
    /// Hooks not to use, by name (`tp_btf/mark_victim`): the next one of the probe is tried.
    pub skip_hooks: Vec<String>,
    /// In-kernel pressure aggregation and near-limit detection; `None` attaches no pressure
    /// probe (`--no-pressure`).
    pub pressure: Option<PressureSettings>,
    /// Attach the SIGKILL probe (`--sigkill none` does not).
    pub sigkill: bool,
    /// Pin links and maps here and adopt what an earlier agent pinned (`agent` only; see
    /// [`pin`]); `None` detaches everything on exit.
    pub pin: Option<PathBuf>,
}

/// What happened to one probe.
#[derive(Debug, Clone)]
pub struct ProbeOutcome {
    pub probe: Probe,
    /// The hook in use: attached, or loaded to attach on demand (`on_demand`).
    pub chosen: Option<Hook>,
    /// The chosen hook is loaded but attached only at run time, when needed
    /// (`--stat-hooks adaptive`: [`Tracer::set_stat_hooks`]).
    pub on_demand: bool,
    /// Hooks passed over, with why.
    pub skipped: Vec<(Hook, String)>,
}

/// A loaded and attached tracer.
pub struct Tracer {
    /// `None` when the programs were adopted from pins.
    _ebpf: Option<Ebpf>,
    /// The pin directory's lock, held while this tracer lives.
    _pins: Option<PinDir>,
    /// Records drained from an older pinned state's rings, delivered first.
    queued: Vec<Result<Record, DecodeError>>,
    /// Kill records and their cgroup paths (`EVENTS`): a ring of their own.
    events: AsyncFd<RingBuf<MapData>>,
    /// Near-limit records and their cgroup paths (`PRESSURE_EVENTS`).
    pressure_events: AsyncFd<RingBuf<MapData>>,
    /// Exec and SIGKILL records, on their own ring (see `PROCESS_EVENTS` in the eBPF crate).
    execs: AsyncFd<RingBuf<MapData>>,
    failures: PerCpuArray<MapData, u64>,
    /// The programs' aya-log records (at `-v` only), forwarded to `log` as they come, before
    /// each batch of records and on drop.
    ebpf_log: Option<AsyncFd<EbpfLog>>,
    memcg_stats: Option<PerCpuHashMap<MapData, u64, MemcgStats>>,
    pub outcomes: Vec<ProbeOutcome>,
    /// `enum oom_constraint` values to names, from BTF (the parsed BTF itself is dropped after
    /// start-up: it is most of the memory a tracer would otherwise hold).
    pub constraints: HashMap<u32, &'static str>,
    pub layout: KernelLayout,
    kernel_paths: Vec<(u64, String)>,
    /// Cgroup path records received since start (one per cgroup and incident, not per kill).
    path_records: u64,
    /// `--stat-hooks` (`never` also with `--no-pressure`).
    stat_mode: StatHooksMode,
    /// The stat programs to attach on demand (`adaptive`, when they loaded).
    stat_hooks: Option<StatHooks>,
    /// When the tracer started: how long `always` hooks have been attached.
    started: std::time::Instant,
}

/// Whether this process has an effective uid of 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn page_shift() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        (size as u64).trailing_zeros()
    } else {
        12
    }
}

/// Resolves the kernel layout from BTF and the tracefs formats.
pub fn resolve_layout(btf_path: &Path) -> Result<(KernelBtf, KernelLayout), TracerError> {
    if !btf_path.exists() && btf_path == Path::new(DEFAULT_BTF) {
        return Err(TracerError::NoBtf);
    }
    let btf = KernelBtf::from_file(btf_path)?;
    let mut layout = btf.kernel_layout(page_shift())?;
    match tracefs::root().and_then(|root| tracefs::read_format(&root, "oom", "mark_victim")) {
        Ok(fields) => tracefs::fill_mark_victim(&mut layout, &fields),
        Err(e) => warn!("classic tracepoint oom/mark_victim unusable: {e}"),
    }
    match tracefs::root().and_then(|root| tracefs::read_format(&root, "signal", "signal_generate"))
    {
        Ok(fields) => tracefs::fill_signal_generate(&mut layout, &fields),
        Err(e) => warn!("classic tracepoint signal/signal_generate unusable: {e}"),
    }
    Ok((btf, layout))
}

impl Tracer {
    pub fn start(opts: &TracerOptions) -> Result<Self, TracerError> {
        if !is_root() {
            return Err(TracerError::NotRoot);
        }
        let known: Vec<String> = PROBES
            .iter()
            .flat_map(|p| p.hooks.iter().map(|h| h.name()))
            .collect();
        if let Some(bad) = opts.skip_hooks.iter().find(|h| !known.contains(h)) {
            return Err(TracerError::UnknownHook {
                name: bad.clone(),
                known: known.join(", "),
            });
        }
        let btf_path = opts
            .btf
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BTF));
        log_stage("tracer start");
        // aya's `EbpfLoader::new` parses the whole of /sys/kernel/btf/vmlinux into aya's types
        // (about 20 MB at its peak on 6.18), and no other constructor exists: done first, while
        // nothing else is held, and dropped at once (the loader gets a small BTF below).
        let mut loader = EbpfLoader::new();
        loader.btf(None);
        trim_heap();
        log_stage("EbpfLoader::new (its own BTF parse dropped)");
        let (kbtf, layout) = resolve_layout(&btf_path)?;
        log_stage("own BTF parse and layout");
        let pressure = pressure_config(opts.pressure.as_ref(), &kbtf);
        let constraints = crate::capture::btf_layout::constraint_names(&kbtf);
        // Everything the probe table needs from this parse, so it can go before aya parses the
        // same file: the two parses never hold memory at once (start-up peak RSS).
        let prechecks: HashMap<&'static str, String> = PROBES
            .iter()
            .flat_map(|p| p.hooks.iter())
            .filter_map(|h| Some((h.program, precheck(h, &kbtf, &layout)?)))
            .collect();
        let loader_blob = kbtf.raw().loader_subset(&loader_type_ids(&kbtf));
        log_stage("prechecks");
        drop(kbtf);
        trim_heap();
        log_stage("own BTF freed");
        let aya_btf = Btf::parse(&loader_blob, Endianness::default()).map_err(|source| {
            TracerError::LoaderBtf {
                path: btf_path.display().to_string(),
                source,
            }
        })?;
        drop(loader_blob);
        log_stage("loader BTF parse");
        let ebpf_log_level = logging::ebpf_level();
        let ebpf_log_byte = ebpf_log_level.map_or(0u8, u8::from);
        loader
            .btf(Some(&aya_btf))
            .override_global("LAYOUT", &layout, true)
            .override_global("PRESSURE", &pressure, true)
            // 0 turns every eBPF log call off: the verifier sees the constant and prunes them.
            .override_global(aya_log::LEVEL, &ebpf_log_byte, true);
        if ebpf_log_level.is_none() {
            // Nobody reads the log ring then: one page instead of aya-log's 128 KiB.
            loader.map_max_entries(EBPF_LOG_MAP, 1 << page_shift());
        }
        let cpus = possible_cpus();
        let stats_entries = map_budget::memcg_stats_entries(cpus);
        info!(
            "MEMCG_STATS: {stats_entries} cgroups tracked at once ({:.1} MiB for {cpus} possible CPUs, budget {} MiB)",
            map_budget::memcg_stats_bytes(stats_entries, cpus) as f64 / f64::from(1 << 20),
            map_budget::MEMCG_STATS_BUDGET >> 20
        );
        loader.map_max_entries(MEMCG_STATS_MAP, stats_entries);
        // Durable capture: adopt the pins of the same object and settings, or load afresh.
        let pinned = pin::Start::begin(
            opts,
            &[
                EBPF_OBJECT,
                pin::pod_bytes(&layout),
                pin::pod_bytes(&pressure),
                &[ebpf_log_byte],
                &stats_entries.to_ne_bytes(),
            ],
        )?;
        let mut ebpf = match pinned.adopted {
            Some(_) => None,
            None => Some(loader.load(EBPF_OBJECT).map_err(explain_load_error)?),
        };
        log_stage("object load");

        let stat_mode = opts
            .pressure
            .as_ref()
            .map_or(StatHooksMode::Never, |s| s.stat_hooks);
        let mut outcomes = Vec::new();
        for probe in PROBES {
            let Some(loaded) = ebpf.as_mut() else { break };
            let off = match &opts.pressure {
                _ if probe.name == SIGKILL.name && !opts.sigkill => Some("--sigkill none"),
                None if probe.pressure => Some("--no-pressure"),
                Some(s) if !s.stat_hooks.loads() && STAT_PROBES.contains(&probe.name) => {
                    Some("--stat-hooks never")
                }
                _ => None,
            };
            if let Some(flag) = off {
                info!("probe {}: not attached ({flag})", probe.name);
                outcomes.push(ProbeOutcome {
                    probe: *probe,
                    chosen: None,
                    on_demand: false,
                    skipped: probe
                        .hooks
                        .iter()
                        .map(|h| (*h, format!("off ({flag})")))
                        .collect(),
                });
                continue;
            }
            // Adaptive: the stat programs are loaded (and verified) now, attached when needed.
            let on_demand =
                stat_mode == StatHooksMode::Adaptive && STAT_PROBES.contains(&probe.name);
            let outcome = attach_probe(loaded, &aya_btf, &prechecks, *probe, opts, on_demand);
            let tried = || {
                outcome
                    .skipped
                    .iter()
                    .map(|(h, why)| format!("{h}: {why}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            match outcome.chosen {
                Some(h) if on_demand => info!(
                    "probe {}: using {h}, attached while a memory cgroup is in trouble (--stat-hooks adaptive)",
                    probe.name
                ),
                Some(h) => info!("probe {}: using {h}", probe.name),
                None if !opts.require_hooks => {}
                None if probe.required => {
                    return Err(TracerError::NoHook {
                        probe: probe.name,
                        tried: tried(),
                    })
                }
                None if probe.pressure => {
                    info!("probe {}: no hook attached: {}", probe.name, probe.without)
                }
                // `--attach` chooses the OOM hooks; exec and sigkill fall back, or go, quietly.
                None if matches!(opts.attach, AttachMode::Fentry | AttachMode::Kprobe)
                    && probe.name != EXEC.name
                    && probe.name != SIGKILL.name =>
                {
                    return Err(TracerError::Forced {
                        mode: opts.attach,
                        probe: probe.name,
                        tried: tried(),
                    })
                }
                None => info!("probe {}: no hook attached: {}", probe.name, probe.without),
            }
            outcomes.push(outcome);
        }

        log_stage("attach");
        let (pins, state, outcomes, queued) = pinned.finish(ebpf.as_ref(), outcomes)?;
        let stat_hooks = on_demand_programs(ebpf.as_ref(), state.as_deref(), &outcomes)?;
        let ebpf_log = match ebpf.as_mut() {
            Some(e) => ebpf_log_level.and_then(|_| ebpf_logger(e)),
            None if ebpf_log_level.is_some() => {
                warn!("eBPF logs are not read from adopted programs (-v): `oomtrace uninstall` first to see them");
                None
            }
            None => None,
        };
        let mut maps = match (ebpf.as_mut(), state.as_deref()) {
            (Some(e), _) => MapSource::Loaded(e),
            (None, Some(s)) => MapSource::Pinned(s),
            (None, None) => {
                return Err(TracerError::Missing("programs (neither loaded nor pinned)"))
            }
        };
        let events = maps
            .take("EVENTS")?
            .ok_or(TracerError::Missing("map EVENTS"))?;
        let events = RingBuf::try_from(events).map_err(|source| TracerError::Map {
            name: "EVENTS",
            source,
        })?;
        let pressure_events = maps
            .take("PRESSURE_EVENTS")?
            .ok_or(TracerError::Missing("map PRESSURE_EVENTS"))?;
        let pressure_events =
            RingBuf::try_from(pressure_events).map_err(|source| TracerError::Map {
                name: "PRESSURE_EVENTS",
                source,
            })?;
        let execs = maps
            .take("PROCESS_EVENTS")?
            .ok_or(TracerError::Missing("map PROCESS_EVENTS"))?;
        let execs = RingBuf::try_from(execs).map_err(|source| TracerError::Map {
            name: "PROCESS_EVENTS",
            source,
        })?;
        let failures = maps
            .take("FAILURES")?
            .ok_or(TracerError::Missing("map FAILURES"))?;
        let failures = PerCpuArray::try_from(failures).map_err(|source| TracerError::Map {
            name: "FAILURES",
            source,
        })?;
        if let MapSource::Pinned(_) = maps {
            forget_sent_paths(&mut maps)?;
        }
        let memcg_stats = match maps.take(MEMCG_STATS_MAP)? {
            Some(m) => Some(
                PerCpuHashMap::try_from(m).map_err(|source| TracerError::Map {
                    name: MEMCG_STATS_MAP,
                    source,
                })?,
            ),
            None => None,
        };
        // Start-up is over: hand back its heap (the loader and its BTF first) and the
        // executable's pages it alone used.
        drop(loader);
        drop(aya_btf);
        trim_heap();
        let released = self_memory::release_startup_pages();
        log::debug!("start-up pages released: {} KiB", released >> 10);
        log_stage("attached");
        // The first seconds of capture run code once too (the first /proc scan, the first
        // HTTP requests): its pages go with a second release.
        self_memory::release_startup_pages_after(STARTUP_SETTLE);
        Ok(Self {
            memcg_stats,
            _ebpf: ebpf,
            _pins: pins,
            queued,
            // SAFETY: the ring buffer owns its fd and lives inside the AsyncFd, so the fd stays
            // open for as long as it is registered.
            events: unsafe { AsyncFd::register(events) }.map_err(|e| TracerError::Io(e.into()))?,
            // SAFETY: as for `events`.
            pressure_events: unsafe { AsyncFd::register(pressure_events) }
                .map_err(|e| TracerError::Io(e.into()))?,
            // SAFETY: as for `events`.
            execs: unsafe { AsyncFd::register(execs) }.map_err(|e| TracerError::Io(e.into()))?,
            failures,
            ebpf_log,
            outcomes,
            constraints,
            layout,
            kernel_paths: Vec::new(),
            path_records: 0,
            stat_mode,
            stat_hooks,
            started: std::time::Instant::now(),
        })
    }

    /// Waits until at least one record is ready and returns every ready one (decoded or not).
    ///
    /// Kill, pressure, exec and SIGKILL records are returned: those of the process ring first
    /// (a process's exec comes before its kill), then kills, then near-limit records; cgroup
    /// path records are kept for [`Self::take_kernel_paths`].
    pub async fn next_batch(&mut self) -> Result<Vec<Result<Record, DecodeError>>, TracerError> {
        if !self.queued.is_empty() {
            let mut out = Vec::new();
            for r in std::mem::take(&mut self.queued) {
                match r {
                    Ok(Record::CgroupPath(p)) => self.kernel_paths.extend(record::cgroup_paths(&p)),
                    other => out.push(other),
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
        loop {
            tokio::select! {
                guard = self.events.readable_mut() => guard?.clear_ready(),
                guard = self.pressure_events.readable_mut() => guard?.clear_ready(),
                guard = self.execs.readable_mut() => guard?.clear_ready(),
                () = forward_ebpf_logs(&mut self.ebpf_log) => continue,
            }
            // A program logs before it submits the record the log is about: forwarding the
            // logs first keeps them ahead of what the batch makes of it (and of an exit).
            if let Some(log) = self.ebpf_log.as_mut() {
                log.get_mut().flush();
            }
            // Readiness is cleared before draining: a record submitted meanwhile wakes the next
            // wait (ring buffers notify only once the reader has caught up).
            let mut out = Vec::new();
            let execs = self.execs.get_mut();
            while let Some(item) = execs.next() {
                out.push(record::decode_any(&item));
            }
            for ring in [self.events.get_mut(), self.pressure_events.get_mut()] {
                while let Some(item) = ring.next() {
                    match record::decode_any(&item) {
                        Ok(Record::CgroupPath(p)) => {
                            self.path_records += 1;
                            self.kernel_paths.extend(record::cgroup_paths(&p));
                        }
                        other => out.push(other),
                    }
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }

    /// Cgroup ids and paths the kernel side read at kills since the last call: give them to
    /// [`crate::enrich::event::Enricher::learn_paths`] before enriching the batch that followed.
    pub fn take_kernel_paths(&mut self) -> Vec<(u64, String)> {
        std::mem::take(&mut self.kernel_paths)
    }

    /// Cgroup path records received since start: one per cgroup and incident, however many
    /// of its tasks were killed.
    pub fn path_records(&self) -> u64 {
        self.path_records
    }

    /// Records the kernel side could not queue for want of ring room, since load: kills, their
    /// cgroup paths, near-limit and SIGKILL records (exec records, hints for the process
    /// cache, are left out: see [`Self::lost_by_kind`]).
    pub fn events_lost(&self) -> u64 {
        self.lost_by_kind()
            .into_iter()
            .filter(|(kind, _)| *kind != "exec")
            .map(|(_, n)| n)
            .sum()
    }

    /// Kill records lost for want of ring room, since load.
    pub fn kills_lost(&self) -> u64 {
        self.failure_count(Failure::KillRingbufReserve)
    }

    /// Records lost for want of ring room by kind (`kill`, `path`, `pressure`, `sigkill`,
    /// `exec`), since load.
    pub fn lost_by_kind(&self) -> Vec<(&'static str, u64)> {
        Failure::LOST
            .iter()
            .filter_map(|f| Some((f.lost_kind()?, self.failure_count(*f))))
            .collect()
    }

    /// How often the kernel side failed since the programs were loaded, by reason (every
    /// reason, in [`Failure::ALL`] order), summed over CPUs.
    pub fn kernel_failures(&self) -> Vec<(Failure, u64)> {
        Failure::ALL
            .iter()
            .map(|f| (*f, self.failure_count(*f)))
            .collect()
    }

    fn failure_count(&self, reason: Failure) -> u64 {
        self.failures
            .get(&(reason as u32), 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }

    /// The kernel's pressure counters of cgroup `id`, summed over CPUs: one map lookup (the
    /// kill path). `None` when no pressure probe runs or the kernel has none for it.
    pub fn memcg_stats_of(&self, id: u64) -> Option<MemcgStats> {
        let values = self.memcg_stats.as_ref()?.get(&id, 0).ok()?;
        Some(sum_cpus(values.iter()))
    }

    /// The kernel's per-cgroup pressure counters, summed over CPUs: (cgroup id, counters).
    /// Empty when no pressure probe runs. Walks the whole map: the 1 s sample, not per kill.
    pub fn memcg_stats(&self) -> Vec<(u64, MemcgStats)> {
        let Some(map) = self.memcg_stats.as_ref() else {
            return Vec::new();
        };
        map.iter()
            .filter_map(Result::ok)
            .map(|(id, per_cpu)| (id, sum_cpus(per_cpu.iter())))
            .collect()
    }

    /// Whether the probe `name` has a hook in use: attached, or loaded to be attached on
    /// demand (the stat probes under `--stat-hooks adaptive`: see [`Self::stat_hooks_attached`]).
    pub fn probe_attached(&self, name: &str) -> bool {
        self.outcomes
            .iter()
            .any(|o| o.probe.name == name && o.chosen.is_some())
    }

    /// Names of the hooks in use.
    pub fn hooks_in_use(&self) -> Vec<String> {
        self.outcomes
            .iter()
            .filter_map(|o| o.chosen.map(|h| h.name()))
            .collect()
    }

    /// `--stat-hooks` as this tracer runs it (`never` with `--no-pressure`).
    pub fn stat_hooks_mode(&self) -> StatHooksMode {
        self.stat_mode
    }

    /// Whether the stat programs are attached at run time ([`Self::set_stat_hooks`]):
    /// `--stat-hooks adaptive` with the programs loaded.
    pub fn stat_hooks_on_demand(&self) -> bool {
        self.stat_hooks.is_some()
    }

    /// Attaches (`true`) or detaches the per-page stat programs; returns whether that changed
    /// anything. Only under `--stat-hooks adaptive` (otherwise nothing changes).
    pub fn set_stat_hooks(&mut self, on: bool) -> Result<bool, TracerError> {
        match self.stat_hooks.as_mut() {
            Some(h) => Ok(h.set(on)?),
            None => Ok(false),
        }
    }

    /// Whether the per-page stat programs are there: attached, or loaded to attach on demand.
    pub fn stat_hooks_available(&self) -> bool {
        self.stat_hooks.is_some() || self.stat_hooks_attached()
    }

    /// Whether the per-page stat programs are attached now.
    pub fn stat_hooks_attached(&self) -> bool {
        match &self.stat_hooks {
            Some(h) => h.attached(),
            None => {
                self.stat_mode == StatHooksMode::Always
                    && self.probe_attached(MEMCG_LRUVEC_STAT.name)
            }
        }
    }

    /// How long the per-page stat programs have been attached since this tracer started.
    pub fn stat_hooks_attached_for(&self) -> std::time::Duration {
        match &self.stat_hooks {
            Some(h) => h.attached_for(),
            None if self.stat_hooks_attached() => self.started.elapsed(),
            None => std::time::Duration::ZERO,
        }
    }
}

/// The programs of the on-demand outcomes, from the loaded object or the adopted pins.
fn on_demand_programs(
    ebpf: Option<&Ebpf>,
    state: Option<&Path>,
    outcomes: &[ProbeOutcome],
) -> Result<Option<StatHooks>, TracerError> {
    let mut programs = Vec::new();
    for o in outcomes.iter().filter(|o| o.on_demand) {
        let Some(hook) = o.chosen else { continue };
        let fd = match (ebpf, state) {
            (Some(e), _) => e
                .program(hook.program)
                .and_then(|p| p.fd().ok())
                .and_then(|fd| fd.as_fd().try_clone_to_owned().ok())
                .ok_or(TracerError::Missing("a loaded stat program's fd"))?,
            (None, Some(s)) => match pin::open_program(s, o.probe.name, &hook) {
                Ok(fd) => fd,
                // Kill capture does not need them: run without rather than not at all.
                Err(e) => {
                    warn!("{e}: the stat hooks stay detached (`oomtrace uninstall` and a restart load them afresh)");
                    return Ok(None);
                }
            },
            (None, None) => {
                return Err(TracerError::Missing("programs (neither loaded nor pinned)"))
            }
        };
        programs.push((hook.program, fd));
    }
    Ok((!programs.is_empty()).then(|| StatHooks::new(programs)))
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Some(log) = self.ebpf_log.as_mut() {
            log.get_mut().flush();
        }
    }
}

/// Adopted programs remember which cgroups' paths they sent (`PATH_SENT`) to an agent that is
/// gone: forgotten, the next kill of each cgroup sends its path again to this one.
fn forget_sent_paths(maps: &mut MapSource<'_>) -> Result<(), TracerError> {
    let Some(map) = maps.take("PATH_SENT")? else {
        return Ok(());
    };
    // Values are `PathSent { incident, ktime_ns }`: two u64s.
    let mut sent: aya::maps::HashMap<MapData, u64, [u64; 2]> = match aya::maps::HashMap::try_from(
        map,
    ) {
        Ok(m) => m,
        Err(e) => {
            warn!("PATH_SENT of the adopted programs not cleared ({e}): a cgroup killed again within the same incident may go unnamed");
            return Ok(());
        }
    };
    let ids: Vec<u64> = sent.keys().filter_map(Result::ok).collect();
    for id in ids {
        let _ = sent.remove(&id);
    }
    Ok(())
}

type EbpfLog = aya_log::EbpfLogger<&'static dyn log::Log>;

/// aya-log-ebpf's ring of log records.
const EBPF_LOG_MAP: &str = "AYA_LOGS";

/// The per-CPU per-cgroup counters, sized at load ([`map_budget`]).
const MEMCG_STATS_MAP: &str = "MEMCG_STATS";

/// How long after attaching the executable's pages that served only start-up are given back
/// a second time (see [`self_memory::release_startup_pages_after`]).
const STARTUP_SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

/// Possible CPUs (what per-CPU maps are sized by); 1 if unreadable.
pub fn possible_cpus() -> u32 {
    match aya::util::nr_cpus() {
        Ok(n) => u32::try_from(n).unwrap_or(u32::MAX),
        Err((path, e)) => {
            warn!("cannot read {path}: {e}; sizing per-CPU maps for 1 CPU");
            1
        }
    }
}

/// The reader of the programs' log records (`-v`). A failure only costs those logs.
fn ebpf_logger(ebpf: &mut Ebpf) -> Option<AsyncFd<EbpfLog>> {
    let logger = aya_log::EbpfLogger::init(ebpf)
        .inspect_err(|e| warn!("eBPF logs unavailable: {e}"))
        .ok()?;
    // SAFETY: the logger owns the ring's fd and lives inside the AsyncFd, so the fd stays open
    // for as long as it is registered.
    unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
        .inspect_err(|e| warn!("eBPF logs unavailable: {e}"))
        .ok()
}

/// Waits until the programs have logged, and forwards what they logged. Never completes when
/// the logs are off, or once their ring fails.
async fn forward_ebpf_logs(log: &mut Option<AsyncFd<EbpfLog>>) {
    let Some(fd) = log.as_mut() else {
        return std::future::pending().await;
    };
    match fd.readable_mut().await {
        Ok(mut guard) => {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
        Err(e) => {
            warn!("eBPF logs stopped: {e}");
            *log = None;
        }
    }
}

/// Hands freed heap pages back to the kernel: a parsed BTF is tens of MB of small allocations.
fn trim_heap() {
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
}

/// Sums one cgroup's per-CPU counters.
fn sum_cpus<'a>(per_cpu: impl Iterator<Item = &'a MemcgStats>) -> MemcgStats {
    let mut out = MemcgStats::default();
    for s in per_cpu {
        for (o, c) in out.charged.iter_mut().zip(s.charged) {
            *o += c;
        }
        out.updates += s.updates;
        out.reclaims += s.reclaims;
        out.reclaim_ns += s.reclaim_ns;
    }
    out
}

/// The `PRESSURE` global: threshold, rate limit and this kernel's stat item numbers.
fn pressure_config(settings: Option<&PressureSettings>, kbtf: &KernelBtf) -> PressureConfig {
    let mut cfg = PressureConfig::disabled();
    if let Some(s) = settings {
        cfg.threshold_per_10k = s.threshold_per_10k();
        cfg.interval_ns = s.interval_ns();
        // The item numbers matter only to the stat programs (and take a walk of every BTF
        // type to find).
        if s.stat_hooks.loads() && kbtf.has_tracepoint("mod_memcg_lruvec_state") {
            let items = crate::capture::btf_layout::stat_items(kbtf);
            for (item, slot) in items.iter().zip(oomtrace_common::STAT_ITEM_SLOTS) {
                match cfg.slot_of.get_mut(*item as usize) {
                    Some(s) => *s = slot as u8 + 1,
                    None if *item == oomtrace_common::ABSENT => {}
                    None => log::warn!(
                        "memcg stat item {item} is beyond what oomtrace watches; its charges stay out of timelines"
                    ),
                }
            }
        }
    }
    cfg
}

/// The type ids the loader looks up by name: the `btf_trace_<tracepoint>` typedef of each
/// tp_btf hook and the function of each fentry/fexit hook (see [`RawBtf::loader_subset`]).
///
/// [`RawBtf::loader_subset`]: crate::capture::btf_raw::RawBtf::loader_subset
pub fn loader_type_ids(kbtf: &KernelBtf) -> Vec<u32> {
    PROBES
        .iter()
        .flat_map(|p| p.hooks.iter())
        .filter_map(|h| match h.kind {
            HookKind::TpBtf { tracepoint, .. } => kbtf.tracepoint_id(tracepoint),
            HookKind::Fentry { function } => kbtf.function_id(function),
            _ => None,
        })
        .collect()
}

/// Why a hook cannot be used on this kernel before trying to load it, if known.
fn precheck(hook: &Hook, kbtf: &KernelBtf, layout: &KernelLayout) -> Option<String> {
    match hook.kind {
        HookKind::TpBtf { tracepoint, .. } if !kbtf.has_tracepoint(tracepoint) => {
            Some(format!("kernel BTF has no btf_trace_{tracepoint}"))
        }
        HookKind::TpBtf {
            tracepoint,
            arg0: Some(want),
        } => match kbtf.tracepoint_param(tracepoint, 1) {
            Some(t) if t == want => None,
            Some(t) if want == "task_struct" => Some(format!(
                "its first argument is `{t}`, not the victim's task_struct (kernel before 6.9)"
            )),
            other => Some(format!(
                "its first argument is `{}`, not `struct {want} *`",
                other.unwrap_or_default()
            )),
        },
        HookKind::Fentry { function } if !kbtf.has_function(function) => Some(format!(
            "kernel BTF has no function {function} (inlined or renamed)"
        )),
        HookKind::Kprobe { .. } if !Path::new(KPROBE_PMU).exists() => Some(format!(
            "kernel built without kprobes ({KPROBE_PMU} missing)"
        )),
        HookKind::Tracepoint {
            category: "oom", ..
        } if layout.tp_pid == oomtrace_common::ABSENT => {
            Some("tracefs format of oom/mark_victim unavailable".into())
        }
        _ => None,
    }
}

fn attach_probe(
    ebpf: &mut Ebpf,
    btf: &Btf,
    prechecks: &HashMap<&'static str, String>,
    probe: Probe,
    opts: &TracerOptions,
    on_demand: bool,
) -> ProbeOutcome {
    let mode = opts.attach;
    let mut outcome = ProbeOutcome {
        probe,
        chosen: None,
        on_demand,
        skipped: Vec::new(),
    };
    for hook in probe.hooks {
        if !probe.pressure && !mode.allows(hook.kind) {
            outcome.skipped.push((
                *hook,
                format!("not allowed by --attach {mode:?}").to_lowercase(),
            ));
            continue;
        }
        if opts.skip_hooks.iter().any(|h| *h == hook.name()) {
            info!("probe {}: skipping {hook}: --skip-hook", probe.name);
            outcome
                .skipped
                .push((*hook, "skipped by --skip-hook".into()));
            continue;
        }
        if let Some(why) = prechecks.get(hook.program).cloned() {
            info!("probe {}: skipping {hook}: {why}", probe.name);
            outcome.skipped.push((*hook, why));
            continue;
        }
        match attach_hook(ebpf, btf, hook, on_demand) {
            Ok(()) => {
                outcome.chosen = Some(*hook);
                break;
            }
            Err(why) => {
                info!("probe {}: skipping {hook}: {why}", probe.name);
                outcome.skipped.push((*hook, why));
            }
        }
    }
    outcome
}

/// A one-line reason from a program error (the verifier log's last lines at most).
fn reason(e: ProgramError) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            log::debug!("verifier log:\n{log}");
            let tail: Vec<&str> = log.lines().rev().take(2).collect();
            let hint = match io_error.raw_os_error() {
                Some(libc::EPERM) => " (this kernel does not allow it)",
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(524) => {
                    " (not supported by this kernel)"
                }
                _ => "",
            };
            if tail.is_empty() {
                format!("load failed: {io_error}{hint}")
            } else {
                format!(
                    "load failed: {io_error}{hint}; verifier: {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                )
            }
        }
        other => {
            let mut s = other.to_string();
            let mut src = std::error::Error::source(&other);
            while let Some(e) = src {
                s.push_str(": ");
                s.push_str(&e.to_string());
                src = e.source();
            }
            s
        }
    }
}

/// Loads and attaches the hook's programs; with `load_only`, loads a BTF tracepoint's program
/// without attaching it (the only kind attached on demand).
fn attach_hook(ebpf: &mut Ebpf, btf: &Btf, hook: &Hook, load_only: bool) -> Result<(), String> {
    let missing = |p: &str| format!("eBPF object has no program {p}");
    macro_rules! prog {
        ($name:expr, $ty:ty) => {{
            let p: &mut $ty = ebpf
                .program_mut($name)
                .ok_or_else(|| missing($name))?
                .try_into()
                .map_err(|e: ProgramError| reason(e))?;
            p
        }};
    }
    match hook.kind {
        HookKind::TpBtf { tracepoint, .. } => {
            let p = prog!(hook.program, BtfTracePoint);
            p.load(tracepoint, btf).map_err(reason)?;
            if !load_only {
                p.attach().map_err(reason)?;
            }
        }
        _ if load_only => return Err("only tp_btf hooks are attached on demand".into()),
        HookKind::Fentry { function } => {
            // Load and attach the exit side first so an entry never runs without it.
            if let Some(exit) = hook.exit_program {
                let p = prog!(exit, FExit);
                p.load(function, btf).map_err(reason)?;
                p.attach().map_err(reason)?;
            }
            let p = prog!(hook.program, FEntry);
            p.load(function, btf).map_err(reason)?;
            p.attach().map_err(reason)?;
        }
        HookKind::Kprobe { function } => {
            if let Some(exit) = hook.exit_program {
                let p = prog!(exit, KProbe);
                p.load().map_err(reason)?;
                p.attach(function, 0).map_err(reason)?;
            }
            let p = prog!(hook.program, KProbe);
            p.load().map_err(reason)?;
            p.attach(function, 0).map_err(reason)?;
        }
        HookKind::Tracepoint { category, name } => {
            let p = prog!(hook.program, TracePoint);
            p.load().map_err(reason)?;
            p.attach(category, name).map_err(reason)?;
        }
    }
    // What each program costs the verifier (at -v): logs kept in at -v cost far more.
    for name in std::iter::once(hook.program).chain(hook.exit_program) {
        if let Some(n) = ebpf
            .program(name)
            .and_then(|p| p.info().ok())
            .and_then(|i| i.verified_instruction_count())
        {
            log::debug!("{hook}: {name}: {n} instructions verified");
        }
    }
    Ok(())
}

#[cfg(test)]
mod loader_btf_tests {
    use aya::{Btf, Endianness};

    use super::*;

    /// The loader's small BTF resolves every name the loader looks up to the same type id as
    /// aya's parse of the whole kernel BTF (the id the kernel is handed at load).
    #[test]
    fn loader_subset_resolves_every_hook_to_the_kernel_type_id() {
        if !Path::new(DEFAULT_BTF).exists() {
            eprintln!("skipped: {DEFAULT_BTF} not present (kernel without BTF)");
            return;
        }
        let kbtf = KernelBtf::from_file(Path::new(DEFAULT_BTF)).expect("host BTF");
        let blob = kbtf.raw().loader_subset(&loader_type_ids(&kbtf));
        let subset = Btf::parse(&blob, Endianness::default()).expect("subset parses");
        let full = Btf::parse_file(DEFAULT_BTF, Endianness::default()).expect("full parse");
        let mut checked = 0;
        for hook in PROBES.iter().flat_map(|p| p.hooks.iter()) {
            let (name, kind) = match hook.kind {
                HookKind::TpBtf { tracepoint, .. } => (
                    format!("btf_trace_{tracepoint}"),
                    aya_obj::btf::BtfKind::Typedef,
                ),
                HookKind::Fentry { function } => {
                    (function.to_string(), aya_obj::btf::BtfKind::Func)
                }
                _ => continue,
            };
            let want = full.id_by_type_name_kind(name.as_str(), kind).ok();
            assert_eq!(
                subset.id_by_type_name_kind(name.as_str(), kind).ok(),
                want,
                "{name}"
            );
            checked += usize::from(want.is_some());
        }
        // mark_victim and sched_process_exec exist on every kernel oomtrace supports.
        assert!(checked >= 2, "{checked}");
        assert!(blob.len() < 2 << 20, "{} bytes", blob.len());
    }
}
