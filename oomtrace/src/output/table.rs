//! The readable one-line-per-victim table of `oomtrace tail`. Every string from outside (comm,
//! cgroup path, names, the verdict's headline) passes through [`escape`], so one record is one
//! row and no control byte reaches the terminal.
use crate::{
    enrich::event::{Action, OomKillEvent},
    enrich::names::WorkloadNames,
    output::terminal::{escape, escape_or_dash},
    stream::{Kill, MemoryPressureEvent, SigkillItem},
};

pub const HEADER: &str = "TIME                      ACTION   PID     COMM             CGROUP                         CONSTRAINT        ANON      FILE     SHMEM     LIMIT  TRIGGER";

/// Bytes as MiB with one decimal, `-` when unknown.
pub fn mib(v: Option<u64>) -> String {
    match v {
        Some(b) => format!("{:.1}M", b as f64 / (1024.0 * 1024.0)),
        None => "-".into(),
    }
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

pub const WIDE_HEADER: &str = "TIME                      ACTION   PID     COMM             NAMESPACE/POD/CONTAINER or CGROUP              SCOPE      CONSTRAINT        ANON      FILE     SHMEM     USAGE/LIMIT        TRIGGER              INCIDENT";

/// ANSI colour for the action: red for a kill, yellow for an exiting victim.
fn paint(text: &str, action: Option<Action>, color: bool) -> String {
    match (color, action) {
        (true, Some(Action::Killed)) => format!("\x1b[31m{text}\x1b[0m"),
        (true, Some(Action::AlreadyExiting)) => format!("\x1b[33m{text}\x1b[0m"),
        _ => text.to_string(),
    }
}

fn action_text(e: &OomKillEvent) -> &'static str {
    match e.action {
        Some(Action::Killed) => "killed",
        Some(Action::AlreadyExiting) => "exiting",
        None => "-",
    }
}

fn time_ms(e: &OomKillEvent) -> String {
    time_text(e.time_unix_ns)
}

fn time_text(unix_ns: i128) -> String {
    let time = crate::timefmt::rfc3339_nanos(unix_ns);
    // Milliseconds are enough on screen: 2026-11-22T03:41:07.123Z
    format!("{}Z", &time[..time.len().saturating_sub(7)])
}

/// The constraint, marked when oomtrace inferred it.
fn constraint_text(e: &OomKillEvent) -> String {
    match (e.oom.constraint, e.oom.constraint_source) {
        (Some(c), "inferred") => format!("{c} (inferred)"),
        (Some(c), _) => c.to_string(),
        (None, _) => "-".into(),
    }
}

fn trigger_text(e: &OomKillEvent) -> String {
    match (e.trigger.pid, &e.trigger.comm) {
        (Some(pid), Some(comm)) if Some(pid) != e.victim.task.pid => {
            format!("{pid} ({})", escape(comm))
        }
        (Some(_), Some(_)) => "self".into(),
        _ => "-".into(),
    }
}

/// The victim's workload: see [`workload_label`].
fn workload_text(e: &OomKillEvent) -> String {
    let names = e.names.as_ref().and_then(|n| n.victim.as_ref());
    workload_label(names, e.victim.task.cgroup_path())
}

/// `namespace/pod/container` when the kubelet's names are known, else the cgroup path;
/// escaped.
fn workload_label(names: Option<&WorkloadNames>, path: Option<&str>) -> String {
    match names.and_then(|n| n.pod.as_ref()) {
        Some(p) => format!(
            "{}/{}/{}",
            escape(&p.namespace),
            escape(&p.pod),
            escape_or_dash(p.container.as_deref())
        ),
        None => escape_or_dash(path).into_owned(),
    }
}

/// One wide row: the table plus workload names, scope, usage and the incident.
pub fn wide_row(e: &OomKillEvent, color: bool) -> String {
    let v = &e.victim;
    let usage = e.oom.memcg.as_ref().map_or_else(
        || "-".to_string(),
        |m| format!("{}/{}", mib(Some(m.usage_bytes)), mib(Some(m.limit_bytes))),
    );
    let constraint = constraint_text(e);
    format!(
        "{:<25} {} {:<7} {:<16} {:<46} {:<10} {constraint:<16} {:>6} {:>9} {:>9} {usage:>17}  {:<20} {}",
        time_ms(e),
        paint(&format!("{:<8}", action_text(e)), e.action, color),
        or_dash(v.task.pid),
        escape_or_dash(v.task.comm.as_deref()),
        workload_text(e),
        e.scope.map_or("-", |s| s.as_str()),
        mib(v.anon_rss_bytes),
        mib(v.file_rss_bytes),
        mib(v.shmem_rss_bytes),
        trigger_text(e),
        e.incident,
    )
}

/// One table row for a victim.
pub fn row(e: &OomKillEvent, color: bool) -> String {
    let v = &e.victim;
    let time = time_ms(e);
    let cgroup = escape_or_dash(v.task.cgroup_path());
    let constraint = constraint_text(e);
    let limit = mib(e.oom.memcg.as_ref().map(|m| m.limit_bytes));
    let trigger = trigger_text(e);
    let action = paint(&format!("{:<8}", action_text(e)), e.action, color);
    format!(
        "{time:<25} {action} {:<7} {:<16} {cgroup:<30} {constraint:<16} {:>6} {:>9} {:>9} {limit:>9}  {trigger}",
        or_dash(v.task.pid),
        escape_or_dash(v.task.comm.as_deref()),
        mib(v.anon_rss_bytes),
        mib(v.file_rss_bytes),
        mib(v.shmem_rss_bytes),
    )
}

/// A kill's row followed by its verdict's headline on an indented line, when there is one.
pub fn with_verdict(row: String, kill: &Kill) -> String {
    match kill.verdict.headline() {
        Some(why) => format!("{row}\n  why: {}", escape(&why)),
        None => row,
    }
}

/// One row for a `memory_pressure` event, in the table's first columns: time, `pressure`,
/// the task that saw it, the workload or cgroup, then usage of limit, growth and source.
pub fn pressure_row(e: &MemoryPressureEvent, color: bool) -> String {
    let r = &e.reading;
    let (pid, comm) = r
        .task
        .as_ref()
        .map_or(("-".to_string(), "-".into()), |(p, c)| {
            (p.to_string(), escape(c))
        });
    let workload = workload_label(e.names.as_ref(), r.path.as_deref());
    let growth = r.growth_bytes_per_s.map_or_else(
        || "-".to_string(),
        |g| {
            format!(
                "{}{:.1}M/s",
                if g < 0.0 { "-" } else { "+" },
                g.abs() / 1048576.0
            )
        },
    );
    let (word, paint) = if r.thrashing.is_some() {
        ("thrashing", "\x1b[31m")
    } else {
        ("pressure", "\x1b[33m")
    };
    let action = if color {
        format!("{paint}{word}\x1b[0m")
    } else {
        word.to_string()
    };
    // What is judged: the working set (usage without inactive page cache) where known.
    let level = match (r.working_set_bytes, r.working_set_ratio()) {
        (Some(ws), Some(ratio)) => format!(
            "working set {}/{} ({:.1}%) usage {}",
            mib(Some(ws)),
            mib(Some(r.limit_bytes)),
            ratio * 100.0,
            mib(Some(r.usage_bytes))
        ),
        _ => format!(
            "usage {}/{} ({:.1}%)",
            mib(Some(r.usage_bytes)),
            mib(Some(r.limit_bytes)),
            r.ratio() * 100.0
        ),
    };
    let tail = match &r.thrashing {
        Some(t) => format!(
            "stuck {:.0}s refaults {:.1}M/s{}",
            t.stuck_ns as f64 / 1e9,
            t.refault_bytes_per_s / 1048576.0,
            t.reclaim_stall_ms_per_s
                .map(|ms| format!(" reclaim stall {ms:.0}ms/s"))
                .unwrap_or_default()
        ),
        None => format!("growth {growth} source {}", r.source),
    };
    format!(
        "{:<25} {action} {pid:<7} {comm:<16} {workload:<30} {level} {tail}",
        time_text(e.time_unix_ns),
    )
}

/// One row for a `sigkill` event: time, `sigkill`, the target, its workload or cgroup, then
/// the cause and who sent it (`kernel` when the kernel did).
pub fn sigkill_row(s: &SigkillItem, color: bool) -> String {
    let ev = &s.event;
    let t = &ev.target;
    let pid = t.tgid.or(t.pid).map_or("-".to_string(), |p| p.to_string());
    let comm = escape_or_dash(t.comm.as_deref());
    let workload = workload_label(s.target_names.as_ref(), t.cgroup_path());
    let sender = ev.sender.as_ref().map_or("kernel".to_string(), |snd| {
        format!(
            "{} ({})",
            snd.tgid
                .or(snd.pid)
                .map_or("?".to_string(), |p| p.to_string()),
            snd.comm.as_deref().map_or("?".into(), escape)
        )
    });
    let action = if color {
        "\x1b[35msigkill\x1b[0m "
    } else {
        "sigkill "
    };
    format!(
        "{:<25} {action} {pid:<7} {comm:<16} {workload:<30} cause {} from {sender}{}",
        time_text(s.time_unix_ns),
        ev.cause.as_str(),
        if ev.cause.memory() { " (memory)" } else { "" },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_mib() {
        assert_eq!(mib(Some(64 << 20)), "64.0M");
        assert_eq!(mib(Some(1536 << 10)), "1.5M");
        assert_eq!(mib(None), "-");
    }

    #[test]
    fn pressure_rows_show_the_working_set_and_thrashing() {
        use crate::pressure::{monitor::Reading, thrashing::ThrashEvidence};
        let reading = Reading {
            ktime_ns: 1,
            cgroup_id: 7,
            path: Some("/system.slice/web.service".into()),
            usage_bytes: 96 << 20,
            working_set_bytes: Some(93 << 20),
            limit_bytes: 96 << 20,
            threshold: 0.9,
            source: "cgroup_files",
            task: None,
            growth_bytes_per_s: None,
            reclaim: None,
            seq: None,
            thrashing: None,
        };
        let ev = |reading| MemoryPressureEvent {
            time_unix_ns: 1_700_000_000_000_000_000,
            host: "h".into(),
            node: None,
            reading,
            names: None,
        };
        let near = pressure_row(&ev(reading.clone()), false);
        assert!(
            near.contains(" pressure ")
                && near.contains("working set 93.0M/96.0M (96.9%) usage 96.0M")
                && near.ends_with("growth - source cgroup_files"),
            "{near}"
        );
        let stuck = pressure_row(
            &ev(Reading {
                thrashing: Some(ThrashEvidence {
                    since_ns: 0,
                    stuck_ns: 12_400_000_000,
                    refaults_per_s: 40_000.0,
                    refault_bytes_per_s: 163_840_000.0,
                    major_faults_per_s: None,
                    reclaims_per_s: None,
                    reclaim_stall_ms_per_s: Some(812.0),
                    psi: None,
                }),
                ..reading
            }),
            false,
        );
        assert!(
            stuck.contains(" thrashing ")
                && stuck.ends_with("stuck 12s refaults 156.2M/s reclaim stall 812ms/s"),
            "{stuck}"
        );
    }
}
