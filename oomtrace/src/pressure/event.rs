//! The `memory_pressure` event (schema v1): a cgroup at or above the near-limit threshold.
use serde_json::{json, Map, Value};

use super::{monitor::Reading, timeline::ns_to_ms};
use crate::{
    enrich::event::{header, workload_json},
    enrich::names::WorkloadNames,
};

#[derive(Debug, Clone)]
pub struct MemoryPressureEvent {
    pub time_unix_ns: i128,
    pub host: String,
    pub node: Option<String>,
    pub reading: Reading,
    pub names: Option<WorkloadNames>,
}

impl MemoryPressureEvent {
    pub fn to_json(&self) -> Value {
        let r = &self.reading;
        let mut out = header("memory_pressure", self.time_unix_ns, r.ktime_ns, &self.host);
        workload_json(&mut out, self.names.as_ref(), self.node.as_deref());
        let mut cgroup = Map::new();
        cgroup.insert("id".into(), r.cgroup_id.into());
        if let Some(p) = &r.path {
            cgroup.insert("path".into(), p.clone().into());
        }
        out.insert("cgroup".into(), Value::Object(cgroup));
        out.insert("usage_bytes".into(), r.usage_bytes.into());
        out.insert("limit_bytes".into(), r.limit_bytes.into());
        out.insert("ratio".into(), json!(round4(r.ratio())));
        out.insert("threshold".into(), json!(round4(r.threshold)));
        out.insert("source".into(), r.source.into());
        if let Some(g) = r.growth_bytes_per_s {
            out.insert("growth_bytes_per_s".into(), json!(g.round() as i64));
        }
        if let Some((n, ns)) = r.reclaim {
            out.insert(
                "reclaim".into(),
                json!({ "count": n, "stall_ms": ns_to_ms(ns) }),
            );
        }
        if let Some((pid, comm)) = &r.task {
            out.insert("task".into(), json!({ "pid": pid, "comm": comm }));
        }
        Value::Object(out)
    }
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let ev = MemoryPressureEvent {
            time_unix_ns: 1_700_000_000_123_456_789,
            host: "node-a".into(),
            node: None,
            reading: Reading {
                ktime_ns: 42,
                cgroup_id: 7,
                path: Some("/system.slice/app.service".into()),
                usage_bytes: 60 << 20,
                limit_bytes: 64 << 20,
                threshold: 0.9,
                source: "kernel_stat",
                task: Some((1234, "app".into())),
                growth_bytes_per_s: Some(1048576.4),
                reclaim: Some((3, 1_500_000)),
            },
            names: None,
        };
        let j = ev.to_json();
        assert_eq!(j["event"], "memory_pressure");
        assert_eq!(j["time"], "2023-11-14T22:13:20.123456789Z");
        assert_eq!(j["cgroup"]["path"], "/system.slice/app.service");
        assert_eq!(j["ratio"], 0.9375);
        assert_eq!(j["limit_bytes"], 64u64 << 20);
        assert_eq!(j["growth_bytes_per_s"], 1048576);
        assert_eq!(j["reclaim"]["stall_ms"], 1.5);
        assert_eq!(j["task"]["comm"], "app");
    }
}
