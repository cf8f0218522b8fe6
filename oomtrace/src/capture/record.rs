//! Decoding ring-buffer bytes into records, with the checks a malformed record needs.
use oomtrace_common::{
    CgroupPathRecord, ExecRecord, MemoryPressureRecord, OomKillRecord, RecordKind, SigkillRecord,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {got} bytes is shorter than its kind ({want} bytes)")]
    Short { got: usize, want: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
}

/// Any record of the ring buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    OomKill(OomKillRecord),
    CgroupPath(Box<CgroupPathRecord>),
    MemoryPressure(MemoryPressureRecord),
    Exec(ExecRecord),
    Sigkill(SigkillRecord),
}

/// Decodes one ring-buffer item of any kind. Extra trailing bytes (a newer eBPF object) are
/// ignored.
pub fn decode_any(bytes: &[u8]) -> Result<Record, DecodeError> {
    let kind: u32 = read_record(bytes)?;
    match kind_of(kind)? {
        RecordKind::OomKill => Ok(Record::OomKill(read_record(bytes)?)),
        RecordKind::CgroupPath => Ok(Record::CgroupPath(Box::new(read_record(bytes)?))),
        RecordKind::MemoryPressure => Ok(Record::MemoryPressure(read_record(bytes)?)),
        RecordKind::Exec => Ok(Record::Exec(read_record(bytes)?)),
        RecordKind::Sigkill => Ok(Record::Sigkill(read_record(bytes)?)),
    }
}

fn kind_of(raw: u32) -> Result<RecordKind, DecodeError> {
    RecordKind::try_from(raw).map_err(|e| DecodeError::UnknownKind(e.0))
}

/// Every cgroup on a kernel-read path with its path relative to the hierarchy root, leaf
/// first: `[(leaf id, "/a/b/leaf"), (b's id, "/a/b"), (a's id, "/a")]`. Empty when the walk
/// did not reach the root (the path would be partial).
pub fn cgroup_paths(r: &CgroupPathRecord) -> Vec<(u64, String)> {
    let depth = (r.depth as usize).min(r.names.len());
    if r.complete == 0 {
        return Vec::new();
    }
    let names: Vec<String> = r.names[..depth].iter().map(|n| c_str(n)).collect();
    (0..depth)
        .map(|i| {
            // Component i and its ancestors, root first.
            let path: String = names[i..].iter().rev().map(|n| format!("/{n}")).collect();
            (r.ids[i], path)
        })
        .collect()
}

/// Reads a `T` from the start of `bytes`, checking the length first. `aya::Pod` limits `T` to
/// plain old data (the `#[repr(C)]` records of `oomtrace_common`: any bit pattern valid).
fn read_record<T: aya::Pod>(bytes: &[u8]) -> Result<T, DecodeError> {
    let want = std::mem::size_of::<T>();
    if bytes.len() < want {
        return Err(DecodeError::Short {
            got: bytes.len(),
            want,
        });
    }
    // SAFETY: the length is checked above, `T: Pod` makes any bit pattern valid, and
    // read_unaligned has no alignment requirement.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// A fixed-size kernel string (`comm`) up to its first NUL, lossily as UTF-8.
pub fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of a record, as the eBPF side writes them.
    fn encode(rec: &OomKillRecord) -> Vec<u8> {
        let size = std::mem::size_of::<OomKillRecord>();
        let mut out = vec![0u8; size];
        // SAFETY: `out` has exactly `size` bytes; the record is plain old data.
        unsafe { std::ptr::write_unaligned(out.as_mut_ptr().cast::<OomKillRecord>(), *rec) };
        out
    }

    #[test]
    fn kernel_paths_become_prefixes_of_each_level() {
        let mut r = oomtrace_common::CgroupPathRecord::default();
        for (i, (id, name)) in [
            (30u64, "cri-containerd-ab.scope"),
            (20, "kubepods-pod1.slice"),
            (10, "kubepods.slice"),
        ]
        .iter()
        .enumerate()
        {
            r.ids[i] = *id;
            r.names[i][..name.len()].copy_from_slice(name.as_bytes());
        }
        r.depth = 3;
        r.complete = 1;
        let size = std::mem::size_of::<oomtrace_common::CgroupPathRecord>();
        let mut bytes = vec![0u8; size];
        // SAFETY: `bytes` has exactly `size` bytes; the record is plain old data.
        unsafe {
            std::ptr::write_unaligned(
                bytes
                    .as_mut_ptr()
                    .cast::<oomtrace_common::CgroupPathRecord>(),
                r,
            )
        };
        let Ok(Record::CgroupPath(back)) = decode_any(&bytes) else {
            panic!("a path record");
        };
        assert_eq!(
            cgroup_paths(&back),
            [
                (
                    30,
                    "/kubepods.slice/kubepods-pod1.slice/cri-containerd-ab.scope".to_string()
                ),
                (20, "/kubepods.slice/kubepods-pod1.slice".to_string()),
                (10, "/kubepods.slice".to_string()),
            ]
        );
        r.complete = 0;
        assert!(cgroup_paths(&r).is_empty(), "a partial path is not used");
        assert!(decode_any(&bytes[..100]).is_err());
    }

    #[test]
    fn round_trips_a_record() {
        let mut rec = OomKillRecord {
            kind: RecordKind::OomKill as u32,
            ktime_ns: 123_456_789,
            anon_rss_bytes: 64 << 20,
            ..Default::default()
        };
        rec.victim.pid = 4242;
        rec.victim.comm[..3].copy_from_slice(b"hog");
        let bytes = encode(&rec);
        let Ok(Record::OomKill(back)) = decode_any(&bytes) else {
            panic!("a kill record");
        };
        assert_eq!(back, rec);
        assert_eq!(c_str(&back.victim.comm), "hog");
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        let rec = OomKillRecord {
            kind: RecordKind::OomKill as u32,
            ..Default::default()
        };
        let bytes = encode(&rec);
        assert_eq!(
            decode_any(&bytes[..100]),
            Err(DecodeError::Short {
                got: 100,
                want: 200
            })
        );
        let mut other = rec;
        other.kind = 99;
        assert_eq!(
            decode_any(&encode(&other)),
            Err(DecodeError::UnknownKind(99))
        );
        other.kind = 0;
        assert_eq!(
            decode_any(&encode(&other)),
            Err(DecodeError::UnknownKind(0))
        );
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0xff; 8]);
        assert_eq!(decode_any(&longer), Ok(Record::OomKill(rec)));
    }

    #[test]
    fn decodes_exec_records() {
        let rec = ExecRecord {
            kind: RecordKind::Exec as u32,
            tgid: 31337,
            ktime_ns: 99,
        };
        let mut bytes = vec![0u8; std::mem::size_of::<ExecRecord>()];
        // SAFETY: `bytes` has exactly the record's size; the record is plain old data.
        unsafe { std::ptr::write_unaligned(bytes.as_mut_ptr().cast::<ExecRecord>(), rec) };
        assert_eq!(decode_any(&bytes), Ok(Record::Exec(rec)));
        assert_eq!(
            decode_any(&bytes[..12]),
            Err(DecodeError::Short { got: 12, want: 16 })
        );
    }

    #[test]
    fn comm_without_nul_uses_all_bytes() {
        assert_eq!(c_str(b"0123456789abcdef"), "0123456789abcdef");
        assert_eq!(c_str(b"a\0bc"), "a");
    }
}
