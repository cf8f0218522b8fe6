//! The eBPF maps this process holds and the memory the kernel charges for each: the `memlock`
//! of each map fd in `/proc/self/fdinfo` (the kernel's own count, `bpf_map_memory_usage`),
//! named through the map's info (`BPF_OBJ_GET_INFO_BY_FD`). `oomtrace check` prints them.
use std::collections::BTreeMap;

/// One map's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapMemory {
    /// The map's name as the kernel keeps it (at most 15 bytes).
    pub name: String,
    pub id: u32,
    /// `enum bpf_map_type`.
    pub map_type: u32,
    pub max_entries: u32,
    /// Bytes the kernel charges for the map.
    pub memlock: u64,
}

/// A map fd's fdinfo: (map id, map type, max entries, memlock); `None` for other fds.
fn parse_fdinfo(text: &str) -> Option<(u32, u32, u32, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .and_then(|v| v.parse::<u64>().ok())
    };
    let small = |name: &str| field(name).and_then(|v| u32::try_from(v).ok());
    Some((
        small("map_id:")?,
        small("map_type:")?,
        small("max_entries:")?,
        field("memlock:")?,
    ))
}

/// The maps this process holds an fd of, by id (one entry per map however many fds), largest
/// first.
pub fn loaded() -> std::io::Result<Vec<MapMemory>> {
    let mut maps = BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/fdinfo")? {
        let Ok(text) = std::fs::read_to_string(entry?.path()) else {
            continue; // closed meanwhile (the read_dir's own fd among them)
        };
        let Some((id, map_type, max_entries, memlock)) = parse_fdinfo(&text) else {
            continue;
        };
        maps.entry(id).or_insert_with(|| MapMemory {
            name: aya::maps::MapInfo::from_id(id)
                .ok()
                .and_then(|i| i.name_as_str().map(str::to_string))
                .unwrap_or_default(),
            id,
            map_type,
            max_entries,
            memlock,
        });
    }
    let mut out: Vec<MapMemory> = maps.into_values().collect();
    out.sort_by(|a, b| b.memlock.cmp(&a.memlock).then_with(|| a.name.cmp(&b.name)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_map_fdinfo_and_skips_others() {
        let map = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1038\nmap_type:\t27\n\
                   key_size:\t0\nvalue_size:\t0\nmax_entries:\t524288\nmap_flags:\t0x0\n\
                   map_extra:\t0x0\nmemlock:\t537368\nmap_id:\t812\nfrozen:\t0\n";
        assert_eq!(parse_fdinfo(map), Some((812, 27, 524288, 537368)));
        assert_eq!(
            parse_fdinfo("pos:\t0\nflags:\t0100000\nmnt_id:\t24\n"),
            None
        );
    }

    /// With the programs loaded, every map of the object is listed with the kernel's figure:
    /// each ring buffer at least its data size and within its bookkeeping of it (the kernel
    /// charges the struct, the meta pages and a page pointer per mapped page), and
    /// `MEMCG_STATS` sized by the budget for this node's CPUs, its memlock within 1% of the
    /// budget's own count.
    #[test]
    fn loaded_maps_carry_the_kernels_memlock() {
        use crate::capture::{map_budget, probes::AttachMode, tracer};
        if !tracer::is_root() {
            eprintln!("skipped: not root (loading eBPF programs needs it)");
            return;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _entered = rt.enter();
        let t = tracer::Tracer::start(&tracer::TracerOptions {
            btf: None,
            attach: AttachMode::Auto,
            require_hooks: false,
            skip_hooks: Vec::new(),
            pressure: None,
            sigkill: false,
            pin: None,
        })
        .expect("programs load");
        let maps = loaded().expect("fdinfo");
        let get = |name: &str| {
            maps.iter()
                .find(|m| m.name == name)
                .unwrap_or_else(|| panic!("{name} not listed: {maps:?}"))
        };
        let page = 4096u64;
        for (name, data) in [
            ("EVENTS", 512 << 10),
            ("PRESSURE_EVENTS", 256 << 10),
            ("PROCESS_EVENTS", 128 << 10),
        ] {
            let m = get(name);
            assert_eq!(u64::from(m.max_entries), data, "{name}");
            let pages = data / page;
            assert!(
                m.memlock >= data + 2 * page && m.memlock <= data + 4 * page + (2 * pages + 2) * 8,
                "{name}: {}",
                m.memlock
            );
        }
        let cpus = tracer::possible_cpus();
        let stats = get("MEMCG_STATS");
        let entries = map_budget::memcg_stats_entries(cpus);
        assert_eq!(stats.max_entries, entries);
        let budgeted = map_budget::memcg_stats_bytes(entries, cpus);
        assert!(
            stats.memlock.abs_diff(budgeted) * 100 <= budgeted
                && stats.memlock <= map_budget::MEMCG_STATS_BUDGET,
            "kernel {} vs budgeted {budgeted}",
            stats.memlock
        );
        for name in [
            "FAILURES",
            "OOM_CONTEXT",
            "PATH_SENT",
            "PRESSURE_LAST",
            "SEQ",
        ] {
            assert!(get(name).memlock > 0, "{name}");
        }
        drop(t);
    }
}
