//! What the cgroup needed at the kill, and a suggested limit (or why there is none).
use super::{evidence::Evidence, rules::mib, runtime, Finding};

const MIB: u64 = 1 << 20;
/// Headroom added to what was needed: the workload was stopped at the limit, so what it would
/// have used is at least that.
const HEADROOM: f64 = 1.25;

#[derive(Debug, Clone, PartialEq)]
pub struct Sizing {
    /// Usage at the kill plus the charge that failed.
    pub needed_bytes: Option<u64>,
    /// The failed charge (`PAGE_SIZE << order`), when the kernel gave the order.
    pub failed_charge_bytes: Option<u64>,
    /// The highest usage over the last minute, the kill included.
    pub peak_60s_bytes: Option<u64>,
    pub growth_bytes_per_s: Option<f64>,
    /// `None` with the reason in `reason`.
    pub suggested_limit_bytes: Option<u64>,
    /// How the suggestion was made, or why there is none.
    pub reason: String,
}

/// `b` rounded up to whole MiB; saturates at `u64::MAX` (a record's numbers come from outside).
fn round_up_mib(b: f64) -> u64 {
    ((b / MIB as f64).ceil() as u64).saturating_mul(MIB)
}

/// The sizing of a kill, given its findings (a leak has no right limit; a heap cap sets one).
pub fn size(e: &Evidence, findings: &[Finding]) -> Sizing {
    let failed = e.failed_charge_bytes();
    let needed = e.usage_bytes.map(|u| u.saturating_add(failed.unwrap_or(0)));
    // Only with a timeline: without one, the last minute is unknown.
    let peak = e
        .timeline
        .as_ref()
        .and_then(|t| t.samples.iter().map(|(_, u)| *u).chain(e.usage_bytes).max());
    let growth = e.timeline.as_ref().and_then(|t| t.growth_bytes_per_s);
    let has = |code: &str| findings.iter().find(|f| f.code == code);
    let (suggested, reason) = if e.global {
        (
            None,
            "no cgroup limit was hit: the node ran out; limit the largest consumers or add memory"
                .to_string(),
        )
    } else if let Some(f) = has("leak") {
        let rate = f.evidence["growth_bytes_per_s"].as_f64().unwrap_or(0.0);
        let delay = if rate > 0.0 {
            format!(
                " (each GiB more buys about {:.0} s)",
                (1u64 << 30) as f64 / rate
            )
        } else {
            String::new()
        };
        (
            None,
            format!("usage grew steadily: a leak has no right limit, raising it only delays the kill{delay}"),
        )
    } else if let Some(cap) = heap_cap(e) {
        (
            Some(round_up_mib(cap as f64 / 0.75)),
            format!(
                "the heap cap ({}) with 25% headroom for memory outside the heap; or lower the \
                 cap to 75% of the current limit",
                mib(cap)
            ),
        )
    } else if let Some(n) = needed {
        let basis = if has("spike").is_some() {
            "a spike's full height is unknown (it was stopped at the limit): this is a floor"
        } else {
            "the workload was stopped at the limit, so it may need more"
        };
        let what = if failed.is_some() {
            "usage at the kill plus the failed charge"
        } else {
            "usage at the kill"
        };
        (
            Some(round_up_mib(n as f64 * HEADROOM)),
            format!("{what}, with 25% headroom; {basis}"),
        )
    } else {
        (None, "usage at the kill is unknown".to_string())
    };
    Sizing {
        needed_bytes: needed,
        failed_charge_bytes: failed,
        peak_60s_bytes: peak,
        growth_bytes_per_s: growth,
        suggested_limit_bytes: suggested,
        reason,
    }
}

/// A runtime heap cap above 75% of the limit: the limit should fit it with headroom.
fn heap_cap(e: &Evidence) -> Option<u64> {
    let limit = e.limit_bytes?;
    let heap = runtime::detect(e.process.as_ref()?, e.victim.comm.as_deref())?;
    let cap = heap.cap?.bytes(limit);
    (cap as f64 > 0.75 * limit as f64).then_some(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `ring_record` fuzz target: a kill record whose memcg usage is 9.9e15 pages
    /// (saturated to `u64::MAX` bytes) overflowed the suggested limit's rounding.
    #[test]
    fn huge_usage_saturates_instead_of_overflowing() {
        let e = Evidence {
            usage_bytes: Some(u64::MAX),
            limit_bytes: Some(u64::MAX),
            order: Some(0),
            page_size: 4096,
            ..Evidence::default()
        };
        let s = size(&e, &[]);
        assert_eq!(s.needed_bytes, Some(u64::MAX));
        assert_eq!(s.suggested_limit_bytes, Some(u64::MAX));
        assert_eq!(round_up_mib(1.5 * MIB as f64), 2 * MIB);
    }
}
