//! The readable one-line-per-victim table of `oomtrace tail`.
use crate::event::OomKillEvent;

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

/// One table row for a victim.
pub fn row(e: &OomKillEvent) -> String {
    let v = &e.victim;
    let time = crate::timefmt::rfc3339_nanos(e.time_unix_ns);
    // Milliseconds are enough on screen: 2026-11-22T03:41:07.123Z
    let time = format!("{}Z", &time[..time.len().saturating_sub(7)]);
    let cgroup = v
        .task
        .cgroup
        .as_ref()
        .and_then(|c| c.path.clone())
        .unwrap_or_else(|| "-".into());
    let constraint = match (e.oom.constraint, e.oom.constraint_source) {
        (Some(c), "inferred") => format!("{c} (inferred)"),
        (Some(c), _) => c.to_string(),
        (None, _) => "-".into(),
    };
    let limit = mib(e.oom.memcg.as_ref().map(|m| m.limit_bytes));
    let trigger = match (e.trigger.pid, &e.trigger.comm) {
        (Some(pid), Some(comm)) if Some(pid) != v.task.pid => format!("{pid} ({comm})"),
        (Some(_), Some(_)) => "self".into(),
        _ => "-".into(),
    };
    let action = match e.action {
        Some(crate::event::Action::Killed) => "killed",
        Some(crate::event::Action::AlreadyExiting) => "exiting",
        None => "-",
    };
    format!(
        "{time:<25} {action:<8} {:<7} {:<16} {cgroup:<30} {constraint:<16} {:>6} {:>9} {:>9} {limit:>9}  {trigger}",
        or_dash(v.task.pid),
        v.task.comm.as_deref().unwrap_or("-"),
        mib(v.anon_rss_bytes),
        mib(v.file_rss_bytes),
        mib(v.shmem_rss_bytes),
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
}
