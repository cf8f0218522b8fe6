//! Time: RFC 3339 UTC with nanoseconds, and the kernel's monotonic clock mapped to wall time.

/// `2026-11-22T03:41:07.123456789Z` for a Unix time in nanoseconds.
pub fn rfc3339_nanos(unix_ns: i128) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000);
    let nanos = unix_ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i128) -> (i128, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// The kernel's monotonic clock now (what `bpf_ktime_get_ns` returns).
pub fn monotonic_now_ns() -> u64 {
    u64::try_from(clock_ns(libc::CLOCK_MONOTONIC)).unwrap_or(0)
}

/// Maps monotonic kernel timestamps to Unix time.
#[derive(Debug, Clone, Copy)]
pub struct ClockMap {
    offset_ns: i128,
}

impl ClockMap {
    /// Measures realtime − monotonic, keeping the tightest of a few bracketed readings.
    pub fn now() -> Self {
        let mut best: Option<(i128, i128)> = None;
        for _ in 0..5 {
            let a = clock_ns(libc::CLOCK_MONOTONIC);
            let real = clock_ns(libc::CLOCK_REALTIME);
            let b = clock_ns(libc::CLOCK_MONOTONIC);
            let gap = b - a;
            let offset = real - (a + gap / 2);
            if best.is_none_or(|(g, _)| gap < g) {
                best = Some((gap, offset));
            }
        }
        Self {
            offset_ns: best.map_or(0, |(_, o)| o),
        }
    }

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
        // date -u -d @1795318867
        assert_eq!(
            rfc3339_nanos(1_795_318_867_000_000_001),
            "2026-11-22T03:41:07.000000001Z"
        );
        assert_eq!(
            rfc3339_nanos(1_735_689_599_999_999_999),
            "2024-12-31T23:59:59.999999999Z"
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
        assert!((wall - sys).abs() < 1_000_000_000, "{wall} vs {sys}");
    }
}
