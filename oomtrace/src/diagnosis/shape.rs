//! Leak or spike: how the OOM cgroup's usage reached its limit, from the timeline.
//!
//! - A **spike**: usage sat below half the limit (above zero: an empty cgroup is no process
//!   sitting small), then one step of the timeline (about a second) added at least 40% of the
//!   limit and the kill followed.
//! - A **leak**: from the last time usage was below half the limit (or from the start of the
//!   timeline), it rose for at least 4 s, in at least 75% of the steps, with no step above a
//!   quarter of the limit.
use super::evidence::TimelineFacts;

/// A spike's or a leak's numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    Spike {
        /// Usage before the jump.
        from_bytes: u64,
        /// The jump and how long the step that held it was.
        jump_bytes: u64,
        jump_ms: i64,
        /// How long usage sat below half the limit before the jump (within the timeline).
        small_ms: i64,
    },
    Leak {
        /// Usage where the steady rise starts, and when (ms before the kill).
        from_bytes: u64,
        rise_ms: i64,
        /// Rate over the rise.
        growth_bytes_per_s: f64,
        /// Steps in the rise, and how many went up.
        steps: usize,
        rising_steps: usize,
    },
}

const SPIKE_JUMP: f64 = 0.40;
const LEAK_MIN_MS: i64 = 4_000;
const LEAK_RISING: f64 = 0.75;
const LEAK_MAX_STEP: f64 = 0.25;

/// The shape of the timeline, if it is clearly one of the two.
pub fn classify(t: &TimelineFacts, limit: u64) -> Option<Shape> {
    let s = &t.samples;
    if s.len() < 3 || limit == 0 {
        return None;
    }
    let half = limit / 2;
    // The last sample below half the limit.
    let last_small = s.iter().rposition(|(_, u)| *u < half);
    if let Some(i) = last_small {
        if let Some(&(next_ms, next_u)) = s.get(i + 1) {
            let (ms, u) = s[i];
            let jump = next_u.saturating_sub(u);
            // Usage 0 is an empty cgroup (nothing started yet), not a process sitting small.
            if u > 0 && jump as f64 >= SPIKE_JUMP * limit as f64 {
                let first = s[0].0;
                let small_from = s[..=i]
                    .iter()
                    .rposition(|(_, x)| *x >= half)
                    .map_or(first, |j| s[j + 1].0);
                return Some(Shape::Spike {
                    from_bytes: u,
                    jump_bytes: jump,
                    jump_ms: next_ms - ms,
                    small_ms: ms - small_from,
                });
            }
        }
    }
    let start = last_small.unwrap_or(0);
    let rise = &s[start..];
    let (from_ms, from_u) = rise[0];
    let (end_ms, end_u) = rise[rise.len() - 1];
    let rise_ms = end_ms - from_ms;
    if rise_ms < LEAK_MIN_MS || end_u <= from_u {
        return None;
    }
    let deltas: Vec<i128> = rise
        .windows(2)
        .map(|w| i128::from(w[1].1) - i128::from(w[0].1))
        .collect();
    let rising = deltas.iter().filter(|d| **d > 0).count();
    let biggest = deltas.iter().copied().max().unwrap_or(0);
    if (rising as f64) < LEAK_RISING * deltas.len() as f64
        || biggest as f64 > LEAK_MAX_STEP * limit as f64
    {
        return None;
    }
    Some(Shape::Leak {
        from_bytes: from_u,
        rise_ms,
        growth_bytes_per_s: (end_u - from_u) as f64 * 1000.0 / rise_ms as f64,
        steps: deltas.len(),
        rising_steps: rising,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn t(points: &[(i64, u64)]) -> TimelineFacts {
        TimelineFacts {
            samples: points.iter().map(|(ms, mb)| (*ms, mb * MIB)).collect(),
            growth_bytes_per_s: None,
        }
    }

    #[test]
    fn a_spike_sits_small_then_jumps() {
        let tl = t(&[
            (-4600, 2),
            (-3600, 2),
            (-2600, 2),
            (-1600, 2),
            (-600, 3),
            (0, 48),
        ]);
        assert_eq!(
            classify(&tl, 48 * MIB),
            Some(Shape::Spike {
                from_bytes: 3 * MIB,
                jump_bytes: 45 * MIB,
                jump_ms: 600,
                small_ms: 4000,
            })
        );
    }

    #[test]
    fn a_leak_rises_a_little_every_second() {
        let pts: Vec<(i64, u64)> = (0..10)
            .map(|i| (i * 1000 - 9000, 4 + i as u64 * 5))
            .collect();
        let Some(Shape::Leak {
            from_bytes,
            rise_ms,
            growth_bytes_per_s,
            steps,
            rising_steps,
        }) = classify(&t(&pts), 48 * MIB)
        else {
            panic!("a leak");
        };
        // The last sample below 24 MiB is 19 MiB at -6000.
        assert_eq!(
            (from_bytes, rise_ms, steps, rising_steps),
            (19 * MIB, 6000, 6, 6)
        );
        assert_eq!(growth_bytes_per_s, 5.0 * MIB as f64);
    }

    #[test]
    fn flat_or_short_timelines_are_neither() {
        assert_eq!(
            classify(&t(&[(-2000, 40), (-1000, 40), (0, 48)]), 48 * MIB),
            None
        );
        assert_eq!(classify(&t(&[(-1000, 40), (0, 48)]), 48 * MIB), None);
        // A process started in an empty cgroup and filled it at once: no spike after idling.
        assert_eq!(
            classify(&t(&[(-3000, 0), (-2000, 0), (-1000, 0), (0, 48)]), 48 * MIB),
            None
        );
        // Up and down: not steady.
        let pts = [
            (-6000, 30),
            (-5000, 40),
            (-4000, 30),
            (-3000, 40),
            (-2000, 30),
            (-1000, 40),
            (0, 48),
        ];
        assert_eq!(classify(&t(&pts), 48 * MIB), None);
    }
}
