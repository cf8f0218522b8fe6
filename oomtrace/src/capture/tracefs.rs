//! tracefs: finding (or mounting) it, and the field offsets of a classic tracepoint from its
//! `format` file.
use std::{
    collections::HashMap,
    ffi::CString,
    path::{Path, PathBuf},
};

use oomtrace_common::{KernelLayout, ABSENT};

pub const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("tracefs is not mounted and mounting it at {TRACEFS} failed: {0} (run `mount -t tracefs tracefs {TRACEFS}` as root)")]
    Mount(std::io::Error),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: malformed format file: {line:?}")]
    Malformed { path: String, line: String },
}

/// The tracefs root, mounting it at [`TRACEFS`] when it is not mounted anywhere.
pub fn root() -> Result<PathBuf, TracefsError> {
    for dir in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(PathBuf::from(dir));
        }
    }
    mount()?;
    Ok(PathBuf::from(TRACEFS))
}

fn mount() -> Result<(), TracefsError> {
    let source = CString::new("tracefs").map_err(|e| TracefsError::Mount(e.into()))?;
    let target = CString::new(TRACEFS).map_err(|e| TracefsError::Mount(e.into()))?;
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            source.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(TracefsError::Mount(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// One field of a tracepoint `format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatField {
    /// The declaration, e.g. `__data_loc char[] comm` or `unsigned long total_vm`.
    pub decl: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

/// Parses a tracefs `format` file into its fields by name.
pub fn parse_format(path: &str, text: &str) -> Result<HashMap<String, FormatField>, TracefsError> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let malformed = || TracefsError::Malformed {
            path: path.to_string(),
            line: line.to_string(),
        };
        let mut parts = rest.split(';').map(str::trim);
        let decl = parts.next().ok_or_else(malformed)?;
        let mut num = |key: &str| -> Result<u32, TracefsError> {
            parts
                .next()
                .and_then(|p| p.strip_prefix(key))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(malformed)
        };
        let offset = num("offset:")?;
        let size = num("size:")?;
        let signed = num("signed:")? != 0;
        // The name is the last identifier of the declaration, before any `[N]`.
        let name = decl
            .split_whitespace()
            .last()
            .map(|n| n.split('[').next().unwrap_or(n))
            .filter(|n| !n.is_empty())
            .ok_or_else(malformed)?;
        fields.insert(
            name.to_string(),
            FormatField {
                decl: decl.to_string(),
                offset,
                size,
                signed,
            },
        );
    }
    Ok(fields)
}

/// Reads `events/<category>/<name>/format` under `root`.
pub fn read_format(
    root: &Path,
    category: &str,
    name: &str,
) -> Result<HashMap<String, FormatField>, TracefsError> {
    let path = root.join("events").join(category).join(name).join("format");
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Read {
        path: shown.clone(),
        source,
    })?;
    parse_format(&shown, &text)
}

/// Fills the `tp_*` offsets of `oom:mark_victim` (pid always; the rest on kernels >= 6.9).
pub fn fill_mark_victim(layout: &mut KernelLayout, fields: &HashMap<String, FormatField>) {
    let off = |name: &str, size: u32| {
        fields
            .get(name)
            .filter(|f| f.size == size)
            .map_or(ABSENT, |f| f.offset)
    };
    layout.tp_pid = off("pid", 4);
    layout.tp_comm_loc = fields
        .get("comm")
        .filter(|f| f.decl.starts_with("__data_loc") && f.size == 4)
        .map_or(ABSENT, |f| f.offset);
    layout.tp_total_vm = off("total_vm", 8);
    layout.tp_anon_rss = off("anon_rss", 8);
    layout.tp_file_rss = off("file_rss", 8);
    layout.tp_shmem_rss = off("shmem_rss", 8);
    layout.tp_uid = off("uid", 4);
    layout.tp_pgtables = off("pgtables", 8);
    layout.tp_oom_score_adj = off("oom_score_adj", 2);
}

/// Fills the `sig_tp_*` offsets of `signal:signal_generate` (all kernels since 3.8 print these).
pub fn fill_signal_generate(layout: &mut KernelLayout, fields: &HashMap<String, FormatField>) {
    let off = |name: &str, size: u32| {
        fields
            .get(name)
            .filter(|f| f.size == size)
            .map_or(ABSENT, |f| f.offset)
    };
    layout.sig_tp_sig = off("sig", 4);
    layout.sig_tp_code = off("code", 4);
    layout.sig_tp_comm = fields
        .get("comm")
        .filter(|f| !f.decl.starts_with("__data_loc") && f.size == 16)
        .map_or(ABSENT, |f| f.offset);
    layout.sig_tp_pid = off("pid", 4);
    layout.sig_tp_group = off("group", 4);
    layout.sig_tp_result = off("result", 4);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_6_18_signal_generate() {
        let text = include_str!("../../tests/fixtures/signal_generate.format.6.18");
        let f = parse_format("signal_generate", text).expect("parses");
        let mut l = KernelLayout::absent();
        fill_signal_generate(&mut l, &f);
        assert_eq!(
            (
                l.sig_tp_sig,
                l.sig_tp_code,
                l.sig_tp_comm,
                l.sig_tp_pid,
                l.sig_tp_group,
                l.sig_tp_result
            ),
            (8, 16, 20, 36, 40, 44)
        );
    }

    /// `oom/mark_victim/format` as kernel 6.18 prints it.
    const MARK_VICTIM_6_18: &str = include_str!("../../tests/fixtures/mark_victim.format.6.18");
    /// As kernel 6.1 prints it: the pid only.
    const MARK_VICTIM_6_1: &str = "name: mark_victim
ID: 520
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;

print fmt: \"pid=%d\", REC->pid
";

    #[test]
    fn parses_6_18_mark_victim() {
        let f = parse_format("fixture", MARK_VICTIM_6_18).expect("parses");
        let mut l = KernelLayout::absent();
        fill_mark_victim(&mut l, &f);
        assert_eq!(
            (l.tp_pid, l.tp_comm_loc, l.tp_total_vm, l.tp_anon_rss),
            (8, 12, 16, 24)
        );
        assert_eq!(
            (l.tp_file_rss, l.tp_shmem_rss, l.tp_uid, l.tp_pgtables),
            (32, 40, 48, 56)
        );
        assert_eq!(l.tp_oom_score_adj, 64);
        assert!(f["oom_score_adj"].signed);
        assert_eq!(f["comm"].decl, "__data_loc char[] comm");
    }

    #[test]
    fn parses_6_1_mark_victim_with_pid_only() {
        let f = parse_format("fixture", MARK_VICTIM_6_1).expect("parses");
        let mut l = KernelLayout::absent();
        fill_mark_victim(&mut l, &f);
        assert_eq!(l.tp_pid, 8);
        for v in [l.tp_comm_loc, l.tp_total_vm, l.tp_uid, l.tp_oom_score_adj] {
            assert_eq!(v, ABSENT);
        }
    }

    #[test]
    fn malformed_line_is_an_error_naming_the_file() {
        let err = parse_format(
            "x/format",
            "\tfield:int pid;\toffset:eight;\tsize:4;\tsigned:1;",
        )
        .expect_err("malformed");
        assert!(err.to_string().contains("x/format"));
    }
}
