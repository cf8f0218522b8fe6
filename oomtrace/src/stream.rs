//! The one place that wires the stages: kernel records from the tracer (capture) go to the
//! enricher (names, time, incidents) and the pressure monitor (timelines); what comes out are
//! [`Item`]s for `tail` and `agent` to render. The stream owns the one cgroup resolver and lends
//! it to both, so the hierarchy is walked once and kernel paths are learned once. It also reads
//! each kill's OOM domain (who else held the budget) the moment the record arrives.
use tokio::time::{interval, Interval, MissedTickBehavior};

use crate::{
    capture::{
        probes,
        record::{DecodeError, Record},
        tracer::{Tracer, TracerError},
    },
    cgroup::{CgroupResolver, MemoryHierarchy},
    enrich::{
        domain::{DomainReader, OomDomain},
        event::{Enricher, OomKillEvent},
        names::{Namer, WorkloadNames},
    },
    pressure::{
        monitor::{KillPressure, PressureMonitor, Reading, Sources},
        PressureSettings, SAMPLE_EVERY,
    },
};

/// One enriched event.
#[derive(Debug, Clone)]
pub enum Item {
    Kill(Box<Kill>),
    Pressure(Box<MemoryPressureEvent>),
}

/// A kill and, when its limit was a memory cgroup's and pressure is on, that cgroup's last
/// minute; and who else held the budget (absent without a memory hierarchy).
#[derive(Debug, Clone)]
pub struct Kill {
    pub event: OomKillEvent,
    pub pressure: Option<KillPressure>,
    pub domain: Option<OomDomain>,
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

/// The pressure sources the attached probes give (`check` prints them).
pub fn pressure_sources(tracer: &Tracer) -> Sources {
    Sources {
        memcg_stat: tracer.probe_attached(probes::MEMCG_LRUVEC_STAT.name),
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
}

impl EventStream {
    pub fn new(
        tracer: Tracer,
        namer: Namer,
        node: Option<String>,
        pressure: Option<PressureSettings>,
    ) -> Self {
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
                Some(PressureMonitor::new(
                    settings,
                    sources,
                    h.clone(),
                    tracer.layout.page_shift,
                ))
            }
            _ => None,
        };
        let mut tick = interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let domain = hierarchy
            .as_ref()
            .map(|h| DomainReader::new(h.clone(), 1 << tracer.layout.page_shift));
        Self {
            tracer,
            enricher,
            monitor,
            domain,
            resolver: hierarchy.map(CgroupResolver::new),
            tick,
            pressure_records: Default::default(),
        }
    }

    /// Waits for kernel records or the next sampling tick; returns the events either produced
    /// (possibly none). Cancel-safe.
    pub async fn next(&mut self) -> Result<Vec<Result<Item, DecodeError>>, TracerError> {
        tokio::select! {
            batch = self.tracer.next_batch() => Ok(self.enrich(batch?)),
            _ = self.tick.tick(), if self.monitor.is_some() && self.resolver.is_some() => {
                Ok(self.sample())
            }
        }
    }

    fn sample(&mut self) -> Vec<Result<Item, DecodeError>> {
        let kernel = self.tracer.memcg_stats();
        let (Some(monitor), Some(resolver)) = (self.monitor.as_mut(), self.resolver.as_mut())
        else {
            return Vec::new();
        };
        let readings = monitor.tick(&kernel, resolver);
        readings
            .into_iter()
            .map(|r| Ok(self.pressure_item(r)))
            .collect()
    }

    /// A near-limit reading as an event, counted by source.
    fn pressure_item(&mut self, reading: Reading) -> Item {
        *self.pressure_records.entry(reading.source).or_default() += 1;
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
        batch
            .into_iter()
            .filter_map(|rec| match rec {
                Ok(Record::OomKill(r)) => {
                    let event = self.enricher.enrich(&r, lost, self.resolver.as_mut());
                    let pressure = match (
                        self.monitor.as_mut(),
                        self.resolver.as_ref(),
                        event.oom.memcg.as_ref(),
                    ) {
                        (Some(m), Some(resolver), Some(memcg)) => {
                            let kernel = self.tracer.memcg_stats();
                            Some(m.kill_section(
                                memcg.cgroup.id,
                                memcg.cgroup.path.as_deref(),
                                memcg.usage_bytes,
                                memcg.limit_bytes,
                                event.ktime_ns,
                                &kernel,
                                resolver,
                            ))
                        }
                        _ => None,
                    };
                    let domain = self.domain.as_mut().map(|d| d.read(&event));
                    let domain = domain.map(|d| name_domain(&mut self.enricher, d));
                    Some(Ok(Item::Kill(Box::new(Kill {
                        event,
                        pressure,
                        domain,
                    }))))
                }
                Ok(Record::MemoryPressure(r)) => {
                    let (m, resolver) = (self.monitor.as_mut()?, self.resolver.as_mut()?);
                    let reading = m.kernel_reading(&r, resolver);
                    Some(Ok(self.pressure_item(reading)))
                }
                Ok(Record::CgroupPath(_)) => None,
                Err(e) => Some(Err(e)),
            })
            .collect()
    }
}
