//! Time: RFC 3339 UTC with nanoseconds, and the kernel's monotonic clock mapped to wall time.

const NS_PER_SEC: i128 = 1_000_000_000;

/// Formats a Unix time in nanoseconds as RFC 3339 UTC with exactly nine fractional digits,
/// e.g. `2026-11-22T03:41:07.123456789Z`. Times before 1970 work too.
pub fn rfc3339_nanos(unix_ns: i128) -> String {
    let secs = unix_ns.div_euclid(NS_PER_SEC);
    let nanos = unix_ns.rem_euclid(NS_PER_SEC);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i128) -> (i128, i128, i128) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], March-based
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i128::from(m <= 2);
    (y, m, d)
}

/// Reads `clock` in nanoseconds. The clocks used here cannot fail on Linux.
fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * NS_PER_SEC + i128::from(ts.tv_nsec)
}

/// `CLOCK_MONOTONIC` now in nanoseconds: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_now_ns() -> u64 {
    u64::try_from(clock_ns(libc::CLOCK_MONOTONIC)).unwrap_or(0)
}

/// Maps kernel monotonic timestamps (`bpf_ktime_get_ns`) to Unix time, using the offset
/// between `CLOCK_REALTIME` and `CLOCK_MONOTONIC` measured once at creation (later wall-clock
/// steps are not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockMap {
    offset_ns: i128,
}

impl ClockMap {
    /// Measures realtime − monotonic: of five `mono, real, mono` readings, keeps the one whose
    /// monotonic bracket is narrowest and pairs `real` with the bracket's midpoint.
    pub fn now() -> Self {
        let mut best: Option<(i128, i128)> = None; // (gap, offset)
        for _ in 0..5 {
            let before = clock_ns(libc::CLOCK_MONOTONIC);
            let real = clock_ns(libc::CLOCK_REALTIME);
            let after = clock_ns(libc::CLOCK_MONOTONIC);
            let gap = after - before;
            if best.is_none_or(|(g, _)| gap < g) {
                best = Some((gap, real - (before + gap / 2)));
            }
        }
        Self {
            offset_ns: best.map_or(0, |(_, offset)| offset),
        }
    }

    /// A map with a fixed realtime − monotonic offset, for tests whose output must not depend
    /// on when they run.
    #[cfg(test)]
    pub(crate) fn with_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// The Unix time in nanoseconds of a `CLOCK_MONOTONIC` timestamp.
    pub fn wall_ns(&self, ktime_ns: u64) -> i128 {
        i128::from(ktime_ns) + self.offset_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nanos(951_782_400_123_456_789),
            "2000-02-29T00:00:00.123456789Z"
        );
        // `date -u -d @1795318867` → Sun Nov 22 03:41:07 UTC 2026
        assert_eq!(
            rfc3339_nanos(1_795_318_867_123_456_789),
            "2026-11-22T03:41:07.123456789Z"
        );
        // Last nanosecond of a leap year, and the day after.
        assert_eq!(
            rfc3339_nanos(1_735_689_599_999_999_999),
            "2024-12-31T23:59:59.999999999Z"
        );
        assert_eq!(
            rfc3339_nanos(1_735_689_600_000_000_000),
            "2025-01-01T00:00:00.000000000Z"
        );
        // Century rule: 2100 is not a leap year, so Feb 28 is followed by Mar 1.
        assert_eq!(
            rfc3339_nanos(4_107_456_000 * NS_PER_SEC),
            "2100-02-28T00:00:00.000000000Z"
        );
        assert_eq!(
            rfc3339_nanos((4_107_456_000 + 86_400) * NS_PER_SEC),
            "2100-03-01T00:00:00.000000000Z"
        );
        assert_eq!(rfc3339_nanos(-1), "1969-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn clock_map_agrees_with_system_time() {
        let wall = ClockMap::now().wall_ns(monotonic_now_ns());
        let sys = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos() as i128;
        assert!((wall - sys).abs() < NS_PER_SEC, "{wall} vs {sys}");
    }
}
