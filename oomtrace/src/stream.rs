//! What `tail` and `agent` consume: kill events (each with its OOM cgroup's last minute) and
//! `memory_pressure` events, from the tracer, the enricher and the pressure monitor together.
use std::time::Duration;

use tokio::time::{interval, Interval, MissedTickBehavior};

use crate::{
    capture::record::{DecodeError, Record},
    capture::tracer::{Tracer, TracerError},
    enrich::event::{Enricher, OomKillEvent},
    enrich::names::Namer,
    pressure::{
        event::MemoryPressureEvent,
        monitor::{PressureMonitor, Reading},
        PressureSettings,
    },
};

/// One enriched event.
#[derive(Debug, Clone)]
pub enum Item {
    Kill(Box<OomKillEvent>),
    Pressure(Box<MemoryPressureEvent>),
}

/// How often timelines take a sample.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

pub struct EventStream {
    pub tracer: Tracer,
    pub enricher: Enricher,
    pub monitor: Option<PressureMonitor>,
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
        let enricher = Enricher::for_tracer(&tracer, namer, node);
        let monitor = PressureMonitor::for_tracer(&tracer, pressure);
        let mut tick = interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            tracer,
            enricher,
            monitor,
            tick,
            pressure_records: Default::default(),
        }
    }

    /// Waits for kernel records or the next sampling tick; returns the events either produced
    /// (possibly none). Cancel-safe.
    pub async fn next(&mut self) -> Result<Vec<Result<Item, DecodeError>>, TracerError> {
        tokio::select! {
            batch = self.tracer.next_batch() => Ok(self.enrich(batch?)),
            _ = self.tick.tick(), if self.monitor.is_some() => Ok(self.sample()),
        }
    }

    fn sample(&mut self) -> Vec<Result<Item, DecodeError>> {
        let kernel = self.tracer.memcg_stats();
        let Some(monitor) = self.monitor.as_mut() else {
            return Vec::new();
        };
        let readings = monitor.tick(&kernel);
        readings
            .into_iter()
            .map(|r| Ok(self.pressure_item(r)))
            .collect()
    }

    /// A near-limit reading as an event, counted by source.
    fn pressure_item(&mut self, reading: Reading) -> Item {
        *self.pressure_records.entry(reading.source).or_default() += 1;
        Item::Pressure(Box::new(self.enricher.pressure_event(reading)))
    }

    fn enrich(
        &mut self,
        batch: Vec<Result<Record, DecodeError>>,
    ) -> Vec<Result<Item, DecodeError>> {
        let paths = self.tracer.take_kernel_paths();
        if let Some(m) = self.monitor.as_mut() {
            m.learn_paths(&paths);
        }
        self.enricher.learn_paths(paths);
        let lost = self.tracer.events_lost();
        batch
            .into_iter()
            .filter_map(|rec| match rec {
                Ok(Record::OomKill(r)) => {
                    let mut ev = self.enricher.enrich(&r, lost);
                    if let (Some(m), Some(memcg)) = (self.monitor.as_mut(), ev.oom.memcg.as_ref()) {
                        let kernel = self.tracer.memcg_stats();
                        ev.pressure = Some(m.kill_section(memcg, ev.ktime_ns, &kernel));
                    }
                    Some(Ok(Item::Kill(Box::new(ev))))
                }
                Ok(Record::MemoryPressure(r)) => {
                    let reading = self.monitor.as_mut()?.kernel_reading(&r);
                    Some(Ok(self.pressure_item(reading)))
                }
                Ok(Record::CgroupPath(_)) => None,
                Err(e) => Some(Err(e)),
            })
            .collect()
    }
}
