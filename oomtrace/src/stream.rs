//! The one place that wires the stages: kernel records from the tracer (capture) go to the
//! enricher (names, time, incidents) and the pressure monitor (timelines); what comes out are
//! [`Item`]s for `tail` and `agent` to render. The stream owns the one cgroup resolver and lends
//! it to both, so the hierarchy is walked once and kernel paths are learned once. It also reads
//! each kill's OOM domain (who else held the budget) the moment the record arrives.
use std::time::{Duration, Instant};

use tokio::time::{interval, Interval, MissedTickBehavior};

use crate::{
    capture::{
        probes,
        record::{DecodeError, Record},
        tracer::{Tracer, TracerError},
    },
    cgroup::{CgroupResolver, MemoryHierarchy},
    diagnosis::{self, Verdict},
    enrich::{
        domain::{DomainReader, OomDomain},
        event::{Enricher, OomKillEvent},
        names::{Namer, WorkloadNames},
        process::{ProcessCache, ProcessIdentity},
        sigkill::{Cause, SigkillEnricher, SigkillEvent, SigkillScope},
    },
    pressure::{
        hooks::{Action, HooksPolicy},
        monitor::{KillPressure, PressureMonitor, Reading, Sources},
        PressureSettings, SAMPLE_EVERY,
    },
};

/// One enriched event.
#[derive(Debug, Clone)]
pub enum Item {
    Kill(Box<Kill>),
    Pressure(Box<MemoryPressureEvent>),
    Sigkill(Box<SigkillItem>),
}

/// A SIGKILL to a workload that was not the kernel's OOM killer, with wall time and names.
#[derive(Debug, Clone)]
pub struct SigkillItem {
    pub time_unix_ns: i128,
    pub host: String,
    pub node: Option<String>,
    pub event: SigkillEvent,
    pub target_names: Option<WorkloadNames>,
    pub sender_names: Option<WorkloadNames>,
    /// Who the target was (the process cache, as for an OOM victim).
    pub target_process: Option<ProcessIdentity>,
}

/// How long a SIGKILL the kernel sent itself is held back: the OOM killer's own SIGKILL comes
/// just before its victim's `oom_kill` record, which then explains it (and it is dropped).
const HOLD_KERNEL_SIGKILL_NS: u64 = 250_000_000;

/// A kill and, when its limit was a memory cgroup's and pressure is on, that cgroup's last
/// minute; who the victim was and who else held the budget; with the verdict on why it died.
#[derive(Debug, Clone)]
pub struct Kill {
    pub event: OomKillEvent,
    pub pressure: Option<KillPressure>,
    /// Who the victim (its thread group) was: executable, command line, memory settings.
    pub process: Option<ProcessIdentity>,
    /// Who else held the budget (absent without a memory hierarchy).
    pub domain: Option<OomDomain>,
    pub verdict: Verdict,
}

impl Kill {
    /// A kill with the verdict its evidence supports.
    pub fn new(
        event: OomKillEvent,
        pressure: Option<KillPressure>,
        process: Option<ProcessIdentity>,
        domain: Option<OomDomain>,
        page_size: u64,
    ) -> Self {
        let mut evidence = diagnosis::live::evidence(&event, pressure.as_ref(), page_size);
        evidence.process = process.as_ref().map(diagnosis::live::process_facts);
        if let Some(d) = &domain {
            diagnosis::live::add_domain(&mut evidence, d);
        }
        let verdict = diagnosis::diagnose(&evidence);
        Kill {
            event,
            pressure,
            process,
            domain,
            verdict,
        }
    }
}

/// A cgroup at or above the near-limit threshold, with wall time and names.
#[derive(Debug, Clone)]
pub struct MemoryPressureEvent {
    pub time_unix_ns: i128,
    pub host: String,
    pub node: Option<String>,
    pub reading: Reading,
    pub names: Option<WorkloadNames>,
}

/// The pressure sources the probes in use give (`check` prints them). `memcg_stat` means the
/// stat programs are there to attach, not that they are attached now (`--stat-hooks adaptive`):
/// the monitor learns that from [`PressureMonitor::set_stat_hooks`].
pub fn pressure_sources(tracer: &Tracer) -> Sources {
    Sources {
        memcg_stat: tracer.stat_hooks_available(),
        reclaim: tracer.probe_attached(probes::RECLAIM_END.name)
            && tracer.probe_attached(probes::RECLAIM_BEGIN.name),
    }
}

/// Workload names for the cgroups of a domain's tasks and children (not counted as misses:
/// the same cgroups come back kill after kill).
pub(crate) fn name_domain(enricher: &mut Enricher, mut d: OomDomain) -> OomDomain {
    for t in d.tasks.iter_mut().flat_map(|t| t.top.iter_mut()) {
        t.names = t
            .cgroup_path
            .as_deref()
            .and_then(|p| enricher.peek_names(p));
    }
    for c in d.children.iter_mut().flat_map(|c| c.top.iter_mut()) {
        c.names = enricher.peek_names(&c.path);
    }
    d
}

pub struct EventStream {
    pub tracer: Tracer,
    pub enricher: Enricher,
    pub monitor: Option<PressureMonitor>,
    /// The one id → path resolver; `None` without a memory hierarchy (paths and names absent).
    resolver: Option<CgroupResolver>,
    /// Reads each kill's OOM domain; `None` without a memory hierarchy.
    domain: Option<DomainReader>,
    tick: Interval,
    /// `memory_pressure` records by source, since start.
    pub pressure_records: std::collections::BTreeMap<&'static str, u64>,
    /// Victims' identities, taken while they lived.
    pub processes: ProcessCache,
    last_sweep: Instant,
    /// SIGKILL records to events; `None` with `--sigkill none`.
    sigkills: Option<SigkillEnricher>,
    /// Kernel-sent SIGKILLs waiting to see whether an `oom_kill` record explains them.
    held: Vec<SigkillEvent>,
    /// Recent OOM victims (tgid or pid, ktime), to drop the kernel's SIGKILL of each.
    recent_victims: Vec<(u32, u64)>,
    /// SIGKILLs left out as OOM kills, since start.
    pub sigkills_explained: u64,
    /// When to attach the stat programs (`--stat-hooks adaptive` with them loaded).
    hooks: Option<HooksPolicy>,
}

/// How often the process cache drops the dead and reads processes that appeared unseen.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

impl EventStream {
    pub fn new(
        tracer: Tracer,
        namer: Namer,
        node: Option<String>,
        pressure: Option<PressureSettings>,
        mut processes: ProcessCache,
        sigkill: Option<SigkillScope>,
    ) -> Self {
        // After attaching: a process started meanwhile is read here or at its exec record.
        let seeded = processes.seed();
        log::info!("process identities: {seeded} read from /proc at start-up");
        let hierarchy = match MemoryHierarchy::detect() {
            Ok(h) => Some(h),
            Err(e) => {
                log::warn!(
                    "{e}; cgroup paths, workload names and pressure timelines will be absent"
                );
                None
            }
        };
        let enricher = Enricher::new(tracer.constraints.clone(), tracer.layout.page_shift)
            .with_names(namer, node);
        let monitor = match (pressure, &hierarchy) {
            (Some(settings), Some(h)) => {
                let sources = pressure_sources(&tracer);
                log::info!("pressure sources: {}", sources.names().join(", "));
                let mut m =
                    PressureMonitor::new(settings, sources, h.clone(), tracer.layout.page_shift);
                m.set_stat_hooks(tracer.stat_hooks_attached());
                Some(m)
            }
            _ => None,
        };
        // The policy needs the monitor's judgement: without a hierarchy the hooks stay off.
        let hooks = match (&pressure, &monitor) {
            (Some(s), Some(_)) if tracer.stat_hooks_on_demand() => {
                log::info!(
                    "stat hooks: adaptive: attached while a memory cgroup's working set is at or \
                     above {} of its limit or its reclaim fails, detached after {} s without",
                    s.hooks_threshold,
                    s.hooks_quiet.as_secs()
                );
                Some(HooksPolicy::new(s.hooks_quiet))
            }
            _ => None,
        };
        let mut tick = interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let domain = hierarchy
            .as_ref()
            .map(|h| DomainReader::new(h.clone(), 1 << tracer.layout.page_shift));
        let page_shift = tracer.layout.page_shift;
        Self {
            tracer,
            enricher,
            monitor,
            domain,
            resolver: hierarchy.map(CgroupResolver::new),
            tick,
            pressure_records: Default::default(),
            processes,
            last_sweep: Instant::now(),
            sigkills: sigkill.map(|s| SigkillEnricher::new(s, 1 << page_shift)),
            held: Vec::new(),
            recent_victims: Vec::new(),
            sigkills_explained: 0,
            hooks,
        }
    }

    /// Waits for kernel records or the next sampling tick; returns the events either produced
    /// (possibly none after a tick; a batch of exec records alone is waited past). Cancel-safe:
    /// a batch is wholly handled before the next wait.
    pub async fn next(&mut self) -> Result<Vec<Result<Item, DecodeError>>, TracerError> {
        loop {
            let next_sweep = tokio::time::Instant::from_std(self.last_sweep + SWEEP_EVERY);
            let items = tokio::select! {
                batch = self.tracer.next_batch() => {
                    let items = self.enrich(batch?);
                    if items.is_empty() {
                        continue;
                    }
                    items
                }
                _ = self.tick.tick(), if self.monitor.is_some() && self.resolver.is_some() => {
                    let mut items = self.sample();
                    items.extend(self.release_held());
                    items
                }
                () = tokio::time::sleep_until(next_sweep) => {
                    self.processes.sweep();
                    self.last_sweep = Instant::now();
                    let items = self.release_held();
                    if items.is_empty() {
                        continue;
                    }
                    items
                }
            };
            return Ok(items);
        }
    }

    fn sample(&mut self) -> Vec<Result<Item, DecodeError>> {
        let kernel = self.tracer.memcg_stats();
        let (Some(monitor), Some(resolver)) = (self.monitor.as_mut(), self.resolver.as_mut())
        else {
            return Vec::new();
        };
        let readings = monitor.tick(&kernel, resolver);
        self.steer_stat_hooks();
        readings
            .into_iter()
            .map(|r| Ok(self.pressure_item(r)))
            .collect()
    }

    /// `--stat-hooks adaptive`: attaches the stat programs at once when the monitor finds a
    /// cgroup in trouble, detaches them after the quiet period without, and tells the monitor.
    fn steer_stat_hooks(&mut self) {
        let (Some(policy), Some(monitor)) = (self.hooks.as_mut(), self.monitor.as_mut()) else {
            return;
        };
        let trouble = monitor.in_trouble();
        let attached = self.tracer.stat_hooks_attached();
        let now = crate::timefmt::monotonic_now_ns();
        match policy.decide(now, trouble.is_some(), attached) {
            Action::Keep => {}
            Action::Attach => match self.tracer.set_stat_hooks(true) {
                Ok(_) => {
                    policy.attached();
                    log::info!(
                        "stat hooks: attached: memory cgroup {} is in trouble",
                        trouble.unwrap_or("?")
                    );
                    monitor.set_stat_hooks(true);
                }
                Err(e) => {
                    policy.attach_failed(now);
                    log::warn!(
                        "stat hooks: {e}; timelines go without charge deltas (next try in {} s)",
                        crate::pressure::hooks::RETRY_AFTER.as_secs()
                    );
                }
            },
            Action::Detach => {
                if let Err(e) = self.tracer.set_stat_hooks(false) {
                    log::warn!("stat hooks: {e}");
                }
                log::info!(
                    "stat hooks: detached: no memory cgroup in trouble for {} s",
                    policy.quiet().as_secs()
                );
                monitor.set_stat_hooks(false);
            }
        }
    }

    /// A near-limit reading as an event, counted by source.
    fn pressure_item(&mut self, reading: Reading) -> Item {
        let kind = if reading.thrashing.is_some() {
            "thrashing"
        } else {
            reading.source
        };
        *self.pressure_records.entry(kind).or_default() += 1;
        let names = reading
            .path
            .as_deref()
            .and_then(|p| self.enricher.names_of(p));
        Item::Pressure(Box::new(MemoryPressureEvent {
            time_unix_ns: self.enricher.wall_ns(reading.ktime_ns),
            host: self.enricher.host().to_string(),
            node: self.enricher.node().map(str::to_string),
            reading,
            names,
        }))
    }

    fn enrich(
        &mut self,
        batch: Vec<Result<Record, DecodeError>>,
    ) -> Vec<Result<Item, DecodeError>> {
        let paths = self.tracer.take_kernel_paths();
        if let Some(r) = self.resolver.as_mut() {
            r.learn(paths);
        }
        let lost = self.tracer.events_lost();
        let mut items: Vec<Result<Item, DecodeError>> = batch
            .into_iter()
            .filter_map(|rec| match rec {
                Ok(Record::OomKill(r)) => {
                    self.note_victim(&r);
                    // First: the victim is exiting, and what /proc still shows goes with it.
                    let process = victim_process_id(&r)
                        .and_then(|tgid| self.processes.identity_at_kill(tgid));
                    let event = self.enricher.enrich(&r, lost, self.resolver.as_mut());
                    let pressure = match (
                        self.monitor.as_mut(),
                        self.resolver.as_ref(),
                        event.oom.memcg.as_ref(),
                    ) {
                        (Some(m), Some(_), Some(memcg)) => {
                            let tracer = &self.tracer;
                            Some(m.kill_section(
                                memcg.cgroup.id,
                                memcg.cgroup.path.as_deref(),
                                memcg.usage_bytes,
                                memcg.limit_bytes,
                                event.ktime_ns,
                                &|id| tracer.memcg_stats_of(id),
                            ))
                        }
                        _ => None,
                    };
                    let domain = self.domain.as_mut().map(|d| d.read(&event));
                    let domain = domain.map(|d| name_domain(&mut self.enricher, d));
                    let page_size = self.enricher.page_size();
                    Some(Ok(Item::Kill(Box::new(Kill::new(
                        event, pressure, process, domain, page_size,
                    )))))
                }
                Ok(Record::MemoryPressure(r)) => {
                    let (m, resolver) = (self.monitor.as_mut()?, self.resolver.as_mut()?);
                    let reading = m.kernel_reading(&r, resolver)?;
                    // A kernel near-limit record (reclaim) may come before the next sample
                    // shows the trouble: attach now rather than up to 1 s later.
                    self.steer_stat_hooks();
                    Some(Ok(self.pressure_item(reading)))
                }
                Ok(Record::Exec(r)) => {
                    self.processes.on_exec(r.tgid);
                    None
                }
                Ok(Record::Sigkill(r)) => {
                    let ev = self.sigkills.as_mut()?.enrich(&r, self.resolver.as_mut())?;
                    if ev.cause == Cause::KernelOther {
                        self.held.push(ev);
                        None
                    } else {
                        Some(Ok(self.sigkill_item(ev)))
                    }
                }
                Ok(Record::CgroupPath(_)) => None,
                Err(e) => Some(Err(e)),
            })
            .collect();
        items.extend(self.release_held());
        items
    }

    /// Remembers an OOM victim, so the kernel's SIGKILL of it is not reported again.
    fn note_victim(&mut self, r: &oomtrace_common::OomKillRecord) {
        let Some(id) = victim_process_id(r) else {
            return;
        };
        let since = r.ktime_ns.saturating_sub(2 * HOLD_KERNEL_SIGKILL_NS);
        self.recent_victims.retain(|(_, t)| *t >= since);
        self.recent_victims.push((id, r.ktime_ns));
    }

    /// Held kernel SIGKILLs: those an OOM victim explains are dropped; those held long enough
    /// are released as events.
    fn release_held(&mut self) -> Vec<Result<Item, DecodeError>> {
        if self.held.is_empty() {
            return Vec::new();
        }
        let now = crate::timefmt::monotonic_now_ns();
        let victims = &self.recent_victims;
        let before = self.held.len();
        self.held.retain(|ev| {
            let id = ev.target.tgid.or(ev.target.pid);
            !victims
                .iter()
                .any(|(v, t)| Some(*v) == id && t.abs_diff(ev.ktime_ns) <= HOLD_KERNEL_SIGKILL_NS)
        });
        self.sigkills_explained += (before - self.held.len()) as u64;
        let (ready, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|ev| now.saturating_sub(ev.ktime_ns) >= HOLD_KERNEL_SIGKILL_NS);
        self.held = wait;
        ready
            .into_iter()
            .map(|ev| Ok(self.sigkill_item(ev)))
            .collect()
    }

    fn sigkill_item(&mut self, event: SigkillEvent) -> Item {
        let target_names = event
            .target
            .cgroup_path()
            .and_then(|p| self.enricher.names_of(p));
        let sender_names = event
            .sender
            .as_ref()
            .and_then(|s| s.cgroup_path())
            .and_then(|p| self.enricher.peek_names(p));
        let target_process = event
            .target
            .tgid
            .or(event.target.pid)
            .and_then(|t| self.processes.identity_at_kill(t));
        Item::Sigkill(Box::new(SigkillItem {
            time_unix_ns: self.enricher.wall_ns(event.ktime_ns),
            host: self.enricher.host().to_string(),
            node: self.enricher.node().map(str::to_string),
            event,
            target_names,
            sender_names,
            target_process,
        }))
    }
}

/// The victim's process id; the classic tracepoint gives only its thread id, which `/proc`
/// knows too.
fn victim_process_id(r: &oomtrace_common::OomKillRecord) -> Option<u32> {
    use oomtrace_common::field;
    if r.fields & field::VICTIM_TGID != 0 {
        Some(r.victim.tgid)
    } else {
        (r.fields & field::VICTIM_PID != 0).then_some(r.victim.pid)
    }
}
