//! `oomtrace explain`'s report: one kill as a short text a person reads — what died, which
//! budget, who held it, the verdict lines with their numbers, and the sizing.
//!
//! It renders an `oom_kill` record as JSON (schema v1), so records saved by `tail -o json` or
//! the agent, and kills read back from the kernel's own log (built in the same shape by
//! [`kernel_log_kill`]), print the same way. Keys a record lacks are left out of the report, never shown as zero.
//! Every string of the record (comm, paths, names, command lines) is escaped for the terminal
//! (see [`terminal`](crate::output::terminal)) before it is laid out.
use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::{
    capture::kernel_log::OomReport,
    diagnosis::{
        self,
        kernel_log::{LOG_PAGE_SIZE, NOT_IN_KERNEL_LOG},
    },
    output::{schema, terminal::escape},
};

/// A kill read from the kernel's own report, as an `oom_kill`-shaped record with the verdict
/// its evidence supports, and `capture.not_in_source` naming what the log cannot give.
pub fn kernel_log_kill(r: &OomReport) -> Value {
    let e = diagnosis::kernel_log::evidence(r);
    let verdict = diagnosis::diagnose(&e);
    let (findings, sizing) = schema::verdict_values(&verdict);
    let k = &r.killed;
    let constraint = r.summary.as_ref().map(|s| match s.constraint.as_str() {
        "CONSTRAINT_NONE" => "none",
        "CONSTRAINT_CPUSET" => "cpuset",
        "CONSTRAINT_MEMORY_POLICY" => "memory_policy",
        "CONSTRAINT_MEMCG" => "memcg",
        _ => "unknown",
    });
    let tasks: Vec<Value> = e
        .tasks
        .iter()
        .flatten()
        .map(|t| {
            json!({
                "pid": t.pid, "comm": t.comm, "rss_bytes": t.rss_bytes,
                "swap_bytes": t.swap_bytes, "pgtables_bytes": t.pgtables_bytes,
                "oom_score_adj": t.oom_score_adj, "points": t.points, "victim": t.victim,
            })
        })
        .collect();
    let mut top = tasks.clone();
    top.sort_by_key(|t| std::cmp::Reverse(t["points"].as_i64().unwrap_or(i64::MIN)));
    top.truncate(10);
    json!({
        "event": "oom_kill",
        "schema": schema::SCHEMA_VERSION,
        "time": r.time,
        "action": "killed",
        "victim": {
            "pid": k.pid, "comm": k.comm, "uid": k.uid, "oom_score_adj": k.oom_score_adj,
            "total_vm_bytes": k.total_vm_kb.saturating_mul(1024), "anon_rss_bytes": k.anon_rss_kb.saturating_mul(1024),
            "file_rss_bytes": k.file_rss_kb.saturating_mul(1024), "shmem_rss_bytes": k.shmem_rss_kb.saturating_mul(1024),
            "pgtables_bytes": k.pgtables_kb.saturating_mul(1024),
            "cgroup": { "path": e.victim.cgroup },
        },
        "trigger": { "comm": r.invoked.as_ref().map(|i| i.comm.clone()) },
        "oom": {
            "constraint": constraint,
            "constraint_source": "kernel_log",
            "gfp_mask": r.invoked.as_ref().map(|i| i.gfp_mask),
            "order": r.invoked.as_ref().map(|i| i.order),
            "memcg": e.oom_memcg.as_ref().map(|p| json!({
                "path": p, "usage_bytes": e.usage_bytes, "limit_bytes": e.limit_bytes,
            })),
            "tasks": (!tasks.is_empty()).then(|| json!({
                "source": "kernel_log", "count": tasks.len(), "top": top,
            })),
            "group_kill": r.group_kill.is_some(),
        },
        "capture": {
            "source": "kernel_log",
            "page_size_assumed": LOG_PAGE_SIZE,
            "not_in_source": NOT_IN_KERNEL_LOG,
        },
        "diagnosis": findings,
        "sizing": sizing,
    })
}

fn mib(v: &Value) -> Option<String> {
    v.as_u64().map(|b| {
        if b < 1 << 20 {
            format!("{} KiB", b >> 10)
        } else {
            format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
        }
    })
}

fn text(v: &Value) -> Option<&str> {
    v.as_str()
}

/// `ns/pod/container`, a systemd unit, or the cgroup path.
fn workload(v: &Value) -> Option<String> {
    let k8s = &v["k8s"];
    if let (Some(ns), Some(pod)) = (text(&k8s["namespace"]["name"]), text(&k8s["pod"]["name"])) {
        let container = text(&k8s["container"]["name"]).unwrap_or("?");
        return Some(format!("{ns}/{pod}/{container}"));
    }
    text(&v["systemd"]["unit"])
        .map(str::to_string)
        .or_else(|| text(&v["container"]["id"]).map(|id| format!("container {}", short_id(id))))
}

/// The first 12 characters of a container id (characters, not bytes: the id comes from
/// outside).
fn short_id(id: &str) -> &str {
    id.char_indices().nth(12).map_or(id, |(i, _)| &id[..i])
}

/// `v` with every string, keys included, escaped for the terminal.
fn escaped(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(escape(s).into_owned()),
        Value::Array(a) => Value::Array(a.iter().map(escaped).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (escape(k).into_owned(), escaped(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn line(out: &mut String, label: &str, body: &str) {
    let _ = writeln!(out, "  {label:<12}{body}");
}

fn more(out: &mut String, body: &str) {
    let _ = writeln!(out, "  {:<12}{body}", "");
}

/// The report for one `oom_kill` record.
pub fn report(v: &Value) -> String {
    let v = &escaped(v);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "OOM kill at {}{}{}",
        text(&v["time"]).unwrap_or("(time unknown)"),
        text(&v["host"]["name"])
            .map(|h| format!("  host {h}"))
            .unwrap_or_default(),
        text(&v["incident"])
            .map(|i| format!("  incident {i}"))
            .unwrap_or_default()
    );
    what_died(&mut out, v);
    budget(&mut out, v);
    held(&mut out, v);
    verdict(&mut out, v);
    sizing(&mut out, &v["sizing"]);
    if let Some(missing) = v["capture"]["not_in_source"].as_array() {
        let names: Vec<&str> = missing.iter().filter_map(Value::as_str).collect();
        if !names.is_empty() {
            line(
                &mut out,
                "not known",
                &format!("the kernel log cannot give: {}", names.join(", ")),
            );
        }
    }
    out
}

/// A `memory_pressure` record of a thrashing cgroup as a report: what is stuck, since when, the
/// evidence, and why no OOM kill comes.
pub fn thrashing_report(v: &Value) -> String {
    let v = &escaped(v);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "THRASHING at {}{}",
        text(&v["time"]).unwrap_or("(time unknown)"),
        text(&v["host"]["name"])
            .map(|h| format!("  host {h}"))
            .unwrap_or_default()
    );
    match (workload(v), text(&v["cgroup"]["path"])) {
        (Some(w), Some(c)) => line(&mut out, "workload", &format!("{w} (cgroup {c})")),
        (Some(w), None) => line(&mut out, "workload", &w),
        (None, Some(c)) => line(&mut out, "cgroup", c),
        (None, None) => {}
    }
    let t = &v["thrashing"];
    let stuck = t["stuck_ms"]
        .as_f64()
        .map_or("?".to_string(), |ms| format!("{:.0} s", ms / 1000.0));
    let level = match (
        mib(&v["working_set_bytes"]),
        mib(&v["usage_bytes"]),
        mib(&v["limit_bytes"]),
    ) {
        (Some(ws), Some(u), Some(l)) => format!("working set {ws} of {l} (usage {u})"),
        (None, Some(u), Some(l)) => format!("usage {u} of {l}"),
        _ => "at its limit".to_string(),
    };
    line(&mut out, "stuck", &format!("for {stuck}, {level}"));
    let mut evidence = Vec::new();
    if let Some(b) = t["refault_bytes_per_s"].as_f64() {
        evidence.push(format!(
            "{:.1} MiB/s of evicted pages faulted straight back in ({} pages/s)",
            b / 1048576.0,
            t["refaults_per_s"]
        ));
    }
    if let Some(ms) = t["reclaim_stall_ms_per_s"].as_f64() {
        evidence.push(format!(
            "tasks stalled in reclaim {ms:.0} ms of every second"
        ));
    }
    if let Some(m) = t["major_faults_per_s"].as_f64() {
        evidence.push(format!("{m:.0} major faults/s"));
    }
    if let Some(full) = t["psi"]["full"]["avg10"].as_f64() {
        evidence.push(format!("PSI full avg10 {full:.2}%"));
    }
    for (i, e) in evidence.iter().enumerate() {
        if i == 0 {
            line(&mut out, "evidence", e);
        } else {
            more(&mut out, e);
        }
    }
    line(
        &mut out,
        "why no kill",
        "reclaim keeps freeing pages (its own code and cache) that are faulted back at once, so \
         it always makes progress and the kernel never declares OOM",
    );
    line(
        &mut out,
        "what to do",
        "raise the memory limit above the working set, or cap the runtime's heap below the \
         limit (e.g. --max-old-space-size, -Xmx, GOMEMLIMIT) so it collects garbage instead",
    );
    out
}

/// A `sigkill` record as a report: who died, who sent it, the cause, and "was it memory?".
pub fn sigkill_report(v: &Value) -> String {
    let v = &escaped(v);
    let mut out = String::new();
    let t = &v["target"];
    let _ = writeln!(
        out,
        "SIGKILL at {}{}",
        text(&v["time"]).unwrap_or("(time unknown)"),
        text(&v["host"]["name"])
            .map(|h| format!("  host {h}"))
            .unwrap_or_default()
    );
    let pid_of = |x: &Value| {
        x["tgid"]
            .as_u64()
            .or_else(|| x["pid"].as_u64())
            .map_or("?".to_string(), |p| p.to_string())
    };
    line(
        &mut out,
        "what died",
        &format!("pid {} ({})", pid_of(t), text(&t["comm"]).unwrap_or("?")),
    );
    if let Some(cmd) = text(&t["process"]["command_line"]) {
        more(&mut out, cmd);
    }
    match (workload(v), text(&t["cgroup"]["path"])) {
        (Some(w), Some(c)) => line(&mut out, "workload", &format!("{w} (cgroup {c})")),
        (Some(w), None) => line(&mut out, "workload", &w),
        (None, Some(c)) => line(&mut out, "cgroup", c),
        (None, None) => {}
    }
    let s = &v["sender"];
    let sender = if s.is_object() {
        format!(
            "pid {} ({}){}",
            pid_of(s),
            text(&s["comm"]).unwrap_or("?"),
            text(&s["cgroup"]["path"])
                .map(|c| format!(" in {c}"))
                .unwrap_or_default()
        )
    } else {
        "the kernel itself (si_code 128), not the OOM killer".to_string()
    };
    line(&mut out, "sent by", &sender);
    line(
        &mut out,
        "cause",
        &format!(
            "{}{}",
            text(&v["cause"]).unwrap_or("?"),
            text(&v["cause_detail"])
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        ),
    );
    let answer = match (v["memory"].as_bool(), text(&v["cause"])) {
        (Some(true), _) => {
            let p = &v["pressure"];
            let at = match (mib(&p["usage_bytes"]), mib(&p["limit_bytes"])) {
                (Some(u), Some(l)) => format!(" (its cgroup at {u} of {l})"),
                (Some(u), None) => format!(" (its cgroup at {u}, no limit)"),
                _ => String::new(),
            };
            format!("yes: a userspace OOM killer acted on memory pressure{at}")
        }
        (Some(false), Some("runtime_stop")) => "no: the container runtime stopped it (a deletion, \
            eviction, failed probe or rollout), not the kernel's OOM killer"
            .to_string(),
        (Some(false), Some("systemd_stop")) => {
            "no: systemd stopped its unit, not the kernel's OOM killer".to_string()
        }
        (Some(false), Some("kernel_other")) => {
            "no: the kernel sent it for another reason (no OOM kill of it was recorded)".to_string()
        }
        (Some(false), _) => "no: another process sent it".to_string(),
        (None, _) => "unknown".to_string(),
    };
    line(&mut out, "memory?", &answer);
    out
}

fn what_died(out: &mut String, v: &Value) {
    let victim = &v["victim"];
    let pid = victim["tgid"].as_u64().or_else(|| victim["pid"].as_u64());
    let action = match text(&v["action"]) {
        Some("already_exiting") => " (already exiting: no SIGKILL)",
        _ => "",
    };
    line(
        out,
        "what died",
        &format!(
            "pid {} ({}){action}",
            pid.map_or("?".into(), |p| p.to_string()),
            text(&victim["comm"]).unwrap_or("?")
        ),
    );
    let process = &victim["process"];
    if let Some(cmd) = text(&process["command_line"]) {
        let cut = if process["command_line_truncated"] == Value::Bool(true) {
            " …"
        } else {
            ""
        };
        more(out, &format!("{cmd}{cut}"));
    }
    if let Some(env) = process["env"].as_object().filter(|e| !e.is_empty()) {
        let vars: Vec<String> = env
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        more(out, &format!("env {}", vars.join(" ")));
    }
    let sizes: Vec<String> = [
        ("anon", "anon_rss_bytes"),
        ("file", "file_rss_bytes"),
        ("shmem", "shmem_rss_bytes"),
    ]
    .iter()
    .filter_map(|(n, k)| mib(&victim[*k]).map(|m| format!("{n} {m}")))
    .chain(
        victim["oom_score_adj"]
            .as_i64()
            .map(|a| format!("oom_score_adj {a}")),
    )
    .chain(
        process["container_init"]
            .as_bool()
            .map(|i| format!("container init: {}", if i { "yes" } else { "no" })),
    )
    .collect();
    if !sizes.is_empty() {
        more(out, &sizes.join(", "));
    }
    let cgroup = text(&victim["cgroup"]["path"]);
    match (workload(v), cgroup) {
        (Some(w), Some(c)) => line(out, "workload", &format!("{w} (cgroup {c})")),
        (Some(w), None) => line(out, "workload", &w),
        (None, Some(c)) => line(out, "cgroup", c),
        (None, None) => {}
    }
}

fn budget(out: &mut String, v: &Value) {
    let oom = &v["oom"];
    let constraint = text(&oom["constraint"]).unwrap_or("unknown");
    let source = text(&oom["constraint_source"])
        .map(|s| format!(", {s}"))
        .unwrap_or_default();
    let memcg = &oom["memcg"];
    let body = match (
        text(&memcg["path"]),
        mib(&memcg["usage_bytes"]),
        mib(&memcg["limit_bytes"]),
    ) {
        (path, Some(usage), Some(limit)) => format!(
            "{} limit of {}: usage {usage} of {limit} (constraint {constraint}{source})",
            text(&oom["scope"]).unwrap_or("cgroup"),
            path.unwrap_or("?"),
        ),
        (Some(path), _, _) => format!(
            "limit of {path} (its usage and limit are not in the record; constraint \
             {constraint}{source})"
        ),
        _ if constraint != "memcg" => {
            format!("the node's memory: no cgroup limit was hit (constraint {constraint}{source})")
        }
        _ => format!("constraint {constraint}{source}"),
    };
    line(out, "budget", &body);
}

fn held(out: &mut String, v: &Value) {
    let tasks = &v["oom"]["tasks"];
    if let Some(top) = tasks["top"].as_array().filter(|t| !t.is_empty()) {
        let age = tasks["age_ms"]
            .as_f64()
            .map(|a| format!(", read {a:.0} ms after the kill"))
            .unwrap_or_default();
        line(
            out,
            "who held it",
            &format!(
                "{} in the OOM domain (from {}{age}); the largest by the kernel's badness:",
                match tasks["count"].as_u64() {
                    Some(1) => "1 task".to_string(),
                    Some(n) => format!("{n} tasks"),
                    None => "tasks".to_string(),
                },
                text(&tasks["source"]).unwrap_or("?"),
            ),
        );
        more(
            out,
            &format!(
                "  {:>8}  {:<16} {:>11} {:>6} {:>9}  CGROUP",
                "PID", "COMM", "RSS", "ADJ", "POINTS"
            ),
        );
        for t in top {
            let rss: u64 = t["rss_bytes"].as_u64().unwrap_or_else(|| {
                ["anon_rss_bytes", "file_rss_bytes", "shmem_rss_bytes"]
                    .iter()
                    .filter_map(|k| t[*k].as_u64())
                    .sum()
            });
            more(
                out,
                &format!(
                    "{} {:>8}  {:<16} {:>11} {:>6} {:>9}  {}",
                    if t["victim"] == Value::Bool(true) {
                        "*"
                    } else {
                        " "
                    },
                    t["pid"].as_u64().map_or("?".into(), |p| p.to_string()),
                    text(&t["comm"]).unwrap_or("?"),
                    mib(&Value::from(rss)).unwrap_or_default(),
                    t["oom_score_adj"]
                        .as_i64()
                        .map_or("?".into(), |a| a.to_string()),
                    t["points"].as_i64().map_or("-".into(), |p| p.to_string()),
                    text(&t["cgroup"]["path"]).unwrap_or(""),
                ),
            );
        }
    }
    let children = &v["oom"]["memcg"]["children"];
    if let Some(top) = children["top"].as_array().filter(|c| !c.is_empty()) {
        let parts: Vec<String> = top
            .iter()
            .map(|c| {
                format!(
                    "{} {} ({:.0}%)",
                    text(&c["path"]).unwrap_or("?"),
                    mib(&c["usage_bytes"]).unwrap_or_default(),
                    c["share"].as_f64().unwrap_or(0.0) * 100.0
                )
            })
            .collect();
        line(out, "children", &parts.join(", "));
    }
}

fn verdict(out: &mut String, v: &Value) {
    let Some(findings) = v["diagnosis"].as_array() else {
        line(out, "verdict", "(the record has no diagnosis)");
        return;
    };
    if findings.is_empty() {
        line(
            out,
            "verdict",
            "no rule matched: see the budget and the sizing",
        );
    }
    for (i, f) in findings.iter().enumerate() {
        let label = if i == 0 { "verdict" } else { "" };
        line(
            out,
            label,
            &format!(
                "[{}] {}: {}",
                text(&f["severity"]).unwrap_or("?"),
                text(&f["code"]).unwrap_or("?"),
                text(&f["summary"]).unwrap_or("")
            ),
        );
        if let Some(ev) = f["evidence"].as_object() {
            let nums: Vec<String> = ev
                .iter()
                .filter(|(_, v)| !v.is_null() && !v.is_array())
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect();
            more(out, &format!("  {}", nums.join(" ")));
        }
    }
}

fn sizing(out: &mut String, s: &Value) {
    if !s.is_object() {
        return;
    }
    let parts: Vec<String> = [
        ("needed", "needed_bytes"),
        ("failed charge", "failed_charge_bytes"),
        ("60 s peak", "peak_60s_bytes"),
    ]
    .iter()
    .filter_map(|(n, k)| mib(&s[*k]).map(|m| format!("{n} {m}")))
    .chain(
        s["growth_bytes_per_s"]
            .as_f64()
            .map(|g| format!("growth {:.1} MiB/s", g / (1u64 << 20) as f64)),
    )
    .collect();
    if !parts.is_empty() {
        line(out, "sizing", &parts.join(", "));
    }
    let reason = text(&s["reason"]).unwrap_or("");
    let label = if parts.is_empty() { "sizing" } else { "" };
    match mib(&s["suggested_limit_bytes"]) {
        Some(limit) => line(out, label, &format!("suggested limit {limit}: {reason}")),
        None => line(out, label, &format!("no suggested limit: {reason}")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reports_what_died_the_budget_the_verdict_and_the_sizing() {
        let v = json!({
            "event": "oom_kill", "time": "2026-11-26T09:00:00.000000000Z",
            "host": {"name": "n1"}, "incident": "abc", "action": "killed",
            "victim": {"pid": 7, "tgid": 7, "comm": "node", "anon_rss_bytes": 104857600,
                "cgroup": {"path": "/a"},
                "process": {"command_line": "node --max-old-space-size=512 app.js",
                    "env": {"NODE_OPTIONS": "--trace-gc"}, "container_init": true}},
            "oom": {"constraint": "memcg", "constraint_source": "kernel", "scope": "other",
                "memcg": {"path": "/a", "usage_bytes": 134217728, "limit_bytes": 134217728}},
            "diagnosis": [{"code": "runtime_heap_cap_above_limit", "severity": "critical",
                "summary": "cap above", "evidence": {"heap_cap_bytes": 536870912}}],
            "sizing": {"needed_bytes": 134217728, "suggested_limit_bytes": null, "reason": "r"}
        });
        let r = report(&v);
        let want = "\
OOM kill at 2026-11-26T09:00:00.000000000Z  host n1  incident abc
  what died   pid 7 (node)
              node --max-old-space-size=512 app.js
              env NODE_OPTIONS=--trace-gc
              anon 100.0 MiB, container init: yes
  cgroup      /a
  budget      other limit of /a: usage 128.0 MiB of 128.0 MiB (constraint memcg, kernel)
  verdict     [critical] runtime_heap_cap_above_limit: cap above
                heap_cap_bytes=536870912
  sizing      needed 128.0 MiB
              no suggested limit: r
";
        assert_eq!(r, want);
    }

    /// Strings from a record never put a control byte or a line of their own on the terminal.
    #[test]
    fn hostile_strings_are_escaped_and_stay_on_their_line() {
        let v = json!({
            "event": "oom_kill", "time": "t\u{1b}]0;pwned\u{7}",
            "victim": {"pid": 7, "comm": "a\u{1b}[2Jb\nc",
                "cgroup": {"path": "/x\ny\u{202e}"},
                "process": {"command_line": "sh -c \"\r\u{9b}31m\"",
                    "env": {"K\u{1b}": "v\n"}}},
            "container": {"id": "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}"},
        });
        let r = report(&v);
        assert!(
            !r.contains('\x1b') && !r.contains('\r') && !r.contains('\u{9b}'),
            "{r}"
        );
        assert!(r.contains("pid 7 (a\\e[2Jb\\nc)"), "{r}");
        assert!(r.contains("(cgroup /x\\ny\\u{202e})"), "{r}");
        assert!(r.contains("sh -c \"\\r\\u{9b}31m\""), "{r}");
        assert!(r.contains("env K\\e=v\\n"), "{r}");
        // A non-ASCII container id is cut at 12 characters, not at a byte inside one.
        assert!(r.contains("container \u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9} "), "{r}");
        let lines: Vec<&str> = r.lines().collect();
        // Header, what died, command line, env, workload, budget, verdict: one line each.
        assert_eq!(lines.len(), 7, "{r}");
        let s = sigkill_report(
            &json!({"event": "sigkill", "target": {"pid": 1, "comm": "\u{1b}x\n"},
            "sender": {"pid": 2, "comm": "k\u{85}"}, "cause": "other"}),
        );
        assert!(
            s.contains("pid 1 (\\ex\\n)") && s.contains("pid 2 (k\\u{85})"),
            "{s}"
        );
        assert!(!s.contains('\x1b') && !s.contains('\u{85}'), "{s}");
    }
}
