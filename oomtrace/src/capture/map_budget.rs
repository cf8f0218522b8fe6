//! Sizing the per-CPU maps to this machine at load: `MEMCG_STATS` holds one value per
//! possible CPU for each entry, all preallocated, so its memory grows with the CPU count (at
//! the object's 8192 entries: 38 MiB at 64 CPUs, 114 MiB at 192). Its entries are lowered to
//! keep it within [`MEMCG_STATS_BUDGET`].
use oomtrace_common::MemcgStats;

/// The most memory `MEMCG_STATS` may take.
pub const MEMCG_STATS_BUDGET: u64 = 8 << 20;

/// Entries the eBPF object declares for `MEMCG_STATS` (`TRACKED_MEMCGS`): the most it gets.
pub const MEMCG_STATS_MAX_ENTRIES: u32 = 8192;

/// Bytes an entry costs besides its per-CPU values, as the kernel counts a preallocated LRU
/// hash map (`htab_map_mem_usage`): the element (`struct htab_elem`, 48 bytes, the 8-byte
/// key and the 8-byte per-CPU pointer) and its share of the buckets (16 bytes each, rounded
/// up to a power of two: counted here as one per entry, the table's rounding aside).
const ENTRY_OVERHEAD: u64 = 48 + 8 + 8 + 16;

/// Bytes of one entry's values: one per possible CPU, each rounded up to 8 bytes.
fn values_bytes(cpus: u64) -> u64 {
    (std::mem::size_of::<MemcgStats>() as u64).next_multiple_of(8) * cpus
}

/// Entries for `MEMCG_STATS` on a machine with `cpus` possible CPUs: as many as fit in the
/// budget, at most the object's own.
pub fn memcg_stats_entries(cpus: u32) -> u32 {
    let per_entry = ENTRY_OVERHEAD + values_bytes(u64::from(cpus.max(1)));
    let fit = MEMCG_STATS_BUDGET / per_entry;
    u32::try_from(fit)
        .unwrap_or(u32::MAX)
        .clamp(1, MEMCG_STATS_MAX_ENTRIES)
}

/// The memory (bytes) `entries` entries take on `cpus` CPUs, by the same count.
pub fn memcg_stats_bytes(entries: u32, cpus: u32) -> u64 {
    u64::from(entries) * (ENTRY_OVERHEAD + values_bytes(u64::from(cpus.max(1))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_shrink_with_cpus_to_stay_in_budget() {
        // A small node keeps every entry the object asks for.
        assert_eq!(memcg_stats_entries(2), 8192);
        assert_eq!(memcg_stats_bytes(8192, 2), 8192 * (80 + 144));
        // 64 and 192 CPUs: 80 + 72 * CPUs bytes an entry, 8 MiB at most.
        assert_eq!(memcg_stats_entries(64), (8 << 20) / (80 + 72 * 64));
        assert_eq!(memcg_stats_entries(64), 1789);
        assert_eq!(memcg_stats_entries(192), 603);
        for cpus in [1, 2, 8, 64, 192, 1024, 8192] {
            let n = memcg_stats_entries(cpus);
            assert!(memcg_stats_bytes(n, cpus) <= MEMCG_STATS_BUDGET, "{cpus}");
            assert!(n >= 1);
        }
        // The object's size at 64 CPUs, for comparison: what the budget avoids.
        assert!(memcg_stats_bytes(8192, 64) > 36 << 20);
    }
}
