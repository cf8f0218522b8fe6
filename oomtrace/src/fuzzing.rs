//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): one per parser of outside
//! input, each taking raw bytes, driving the parser the way oomtrace does, and asserting what
//! must hold for any input. A panic here is a finding.
use std::{io::Write as _, path::Path};

use crate::{
    capture::{btf_layout, kernel_log, record, tracefs},
    cgroup,
    cmd::explain::{explain_records, ExplainOutput},
    enrich::{event::Enricher, kubelet_logs, workload},
    output::{explain, schema, table, terminal},
};

/// Text made for a terminal holds no control or format character but the newlines between its
/// lines.
fn assert_terminal_safe(text: &str) {
    if let Some(c) = text
        .chars()
        .find(|&c| c != '\n' && terminal::needs_escape(c))
    {
        panic!("unescaped {c:?} in terminal text: {text:?}");
    }
}

/// One ring-buffer item (`capture::record::decode_any`), and a path record's cgroup paths.
pub fn ring_record(data: &[u8]) {
    match record::decode_any(data) {
        Ok(record::Record::CgroupPath(p)) => {
            for (_, path) in record::cgroup_paths(&p) {
                assert!(path.starts_with('/'), "{path:?}");
            }
        }
        Ok(record::Record::OomKill(r)) => {
            // Bytes after the record stand for the victim's cgroup path.
            let rest = data.get(std::mem::size_of_val(&r)..).unwrap_or_default();
            kill_row(&r, &String::from_utf8_lossy(rest));
        }
        Ok(_) => {}
        Err(record::DecodeError::Short { got, want }) => assert!(got < want),
        Err(record::DecodeError::UnknownKind(_)) => {}
    }
}

/// A kill record as `tail` prints it: one terminal-safe row in both tables, and JSON that
/// gives the comm and cgroup path back exactly.
fn kill_row(r: &oomtrace_common::OomKillRecord, path: &str) {
    let mut enricher = Enricher::new(std::collections::HashMap::new(), 12);
    let mut event = enricher.enrich(r, 0, None);
    event.victim.task.cgroup = Some(cgroup::CgroupRef {
        id: 1,
        path: Some(path.to_string()),
    });
    for row in [table::row(&event, false), table::wide_row(&event, false)] {
        assert!(!row.contains('\n'), "{row:?}");
        assert_terminal_safe(&row);
    }
    let v = schema::kill_value(&event, None);
    assert_eq!(
        v["victim"]["comm"].as_str(),
        event.victim.task.comm.as_deref()
    );
    assert_eq!(v["victim"]["cgroup"]["path"].as_str(), Some(path));
    let line = v.to_string();
    assert!(!line.contains('\n'));
    // The strings read back exactly (floats are not compared: serde_json's own parser may
    // differ from ryu's shortest form in the last digit).
    let back: serde_json::Value = serde_json::from_str(&line).expect("JSON reads back");
    assert_eq!(back["victim"]["comm"], v["victim"]["comm"]);
    assert_eq!(back["victim"]["cgroup"]["path"].as_str(), Some(path));
}

/// A tracefs `format` file, and the offsets oomtrace takes from it.
pub fn tracefs_format(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(fields) = tracefs::parse_format("fuzz/format", &text) {
        let mut layout = oomtrace_common::KernelLayout::absent();
        tracefs::fill_mark_victim(&mut layout, &fields);
        tracefs::fill_signal_generate(&mut layout, &fields);
    }
}

/// A `--btf` file: every look-up oomtrace makes at start-up.
pub fn btf(data: &[u8]) {
    let Ok(btf) = btf_layout::KernelBtf::from_bytes(data) else {
        return;
    };
    let _ = btf.kernel_layout(12);
    let _ = btf.tracepoint_param("mark_victim", 1);
    let _ = btf.has_tracepoint("mod_memcg_lruvec_state");
    let _ = btf.has_function("oom_kill_process");
    let _ = btf_layout::stat_items(&btf);
    let _ = btf_layout::constraint_names(&btf);
    let _ = btf
        .raw()
        .loader_subset(&crate::capture::tracer::loader_type_ids(&btf));
}

/// A cgroup path (as the kernel or `/proc/PID/cgroup` gives it) → workload names; the same
/// text as a mountinfo table.
pub fn cgroup_path(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = workload::parse(&text);
    let (a, b) = text.split_at(text.find('\n').unwrap_or(text.len()));
    assert!(cgroup::is_under(a, a));
    let _ = cgroup::is_under(a, b);
    let _ = cgroup::MemoryHierarchy::from_mountinfo(&text, |_| true);
}

/// A name in the kubelet's log directories: a pod directory, a container log, a symlink
/// target.
pub fn kubelet_log_name(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some((ns, pod, uid)) = kubelet_logs::parse_pod_dir(&text) {
        assert_eq!(text, format!("{ns}_{pod}_{uid}"));
    }
    if let Some((pod, ns, container, id)) = kubelet_logs::parse_container_log(&text) {
        assert_eq!(text, format!("{pod}_{ns}_{container}-{id}.log"));
    }
    let _ = kubelet_logs::parse_log_target(Path::new(text.as_ref()));
}

/// JSON Lines fed to `explain`, as text reports and as JSON.
pub fn explain_jsonl(data: &[u8]) {
    let mut out = Vec::new();
    if explain_records(data, ExplainOutput::Text, &mut out).is_ok() {
        assert_terminal_safe(&String::from_utf8_lossy(&out));
    }
    out.clear();
    let _ = explain_records(data, ExplainOutput::Json, &mut out);
}

/// A kernel log fed to `explain --kernel-log` (any text format), and the same bytes as one
/// `/dev/kmsg` record.
pub fn kernel_log(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for r in kernel_log::parse_log(&text) {
        let v = explain::kernel_log_kill(&r);
        assert_terminal_safe(&explain::report(&v));
        let mut sink = Vec::new();
        let _ = writeln!(sink, "{v}");
    }
    if let Some(rec) = kernel_log::parse_kmsg_record(data) {
        for r in kernel_log::collect_reports(&[rec]) {
            assert_terminal_safe(&explain::report(&explain::kernel_log_kill(&r)));
        }
    }
}

/// Bytes sent to the agent's HTTP port: hyper's HTTP/1.1 server, set up as the agent sets it
/// up, answering through `output::http`'s handler over an in-memory connection.
pub fn http_request(data: &[u8]) {
    crate::output::http::fuzz_exchange(data);
}
