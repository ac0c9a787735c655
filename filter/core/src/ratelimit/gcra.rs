//! GCRA (generic cell rate algorithm): a limit of `limit` requests per
//! `window`, with bursts up to `burst`. State is one timestamp, the
//! theoretical arrival time (TAT). Unlike fixed windows there is no edge
//! where two windows' quotas can be spent back to back.
//!
//! Time only moves forward for the algorithm: if the clock goes backwards,
//! `max(tat, now)` keeps the stored TAT, so no quota is handed out for free.

/// A limit in GCRA terms (microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Emission interval: window / limit.
    pub interval_us: u64,
    /// Burst tolerance: interval × (burst − 1).
    pub tolerance_us: u64,
    /// The configured limit (for headers).
    pub limit: u32,
    /// The configured burst.
    pub burst: u32,
    /// Window in seconds (for headers).
    pub window_secs: u32,
}

/// Result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request is admitted.
    pub allowed: bool,
    /// Requests still admissible right now.
    pub remaining: u32,
    /// Seconds until the quota is fully restored.
    pub reset_secs: u64,
    /// Seconds until a request would be admitted (0 when allowed).
    pub retry_after_secs: u64,
    /// The TAT to store (unchanged when refused).
    pub new_tat_us: u64,
}

fn ceil_secs(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

impl Gcra {
    /// A limit of `limit` per `window_secs` with bursts of `burst`.
    pub fn new(limit: u32, window_secs: u32, burst: u32) -> Self {
        let limit_nz = u64::from(limit.max(1));
        let interval_us = (u64::from(window_secs) * 1_000_000 / limit_nz).max(1);
        let burst = burst.clamp(1, limit.max(1));
        Self { interval_us, tolerance_us: interval_us * u64::from(burst - 1), limit, burst, window_secs }
    }

    /// Checks one request at `now_us` against the stored `tat_us` (0 when
    /// the key is new).
    pub fn check(&self, tat_us: u64, now_us: u64) -> Verdict {
        let tat = tat_us.max(now_us);
        let allow_at = tat.saturating_sub(self.tolerance_us);
        if now_us < allow_at {
            return Verdict {
                allowed: false,
                remaining: 0,
                reset_secs: ceil_secs(tat - now_us),
                retry_after_secs: ceil_secs(allow_at - now_us).max(1),
                new_tat_us: tat_us,
            };
        }
        let new_tat = tat + self.interval_us;
        let horizon = now_us + self.tolerance_us + self.interval_us;
        let remaining = horizon.saturating_sub(new_tat) / self.interval_us;
        Verdict {
            allowed: true,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset_secs: ceil_secs(new_tat - now_us),
            retry_after_secs: 0,
            new_tat_us: new_tat,
        }
    }

    /// Like [`Gcra::check`], but takes up to `n` cells at once when the
    /// request is admitted: as many as fit in the burst right now, at least
    /// one. Returns the verdict (for the first cell) and the cells taken;
    /// the TAT to store accounts for all of them.
    pub fn check_n(&self, tat_us: u64, now_us: u64, n: u32) -> (Verdict, u32) {
        let first = self.check(tat_us, now_us);
        if !first.allowed || n <= 1 {
            return (first, u32::from(first.allowed));
        }
        let tat = tat_us.max(now_us);
        let horizon = now_us + self.tolerance_us + self.interval_us;
        let room = horizon.saturating_sub(tat) / self.interval_us;
        let taken = room.clamp(1, u64::from(n));
        let new_tat = tat + taken * self.interval_us;
        let remaining = horizon.saturating_sub(new_tat) / self.interval_us;
        let verdict = Verdict {
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset_secs: ceil_secs(new_tat - now_us),
            new_tat_us: new_tat,
            ..first
        };
        (verdict, u32::try_from(taken).unwrap_or(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;
    const T0: u64 = 1_800_000_000 * S;

    fn run(g: &Gcra, tat: &mut u64, now: u64) -> bool {
        let v = g.check(*tat, now);
        *tat = v.new_tat_us;
        v.allowed
    }

    #[test]
    fn a_burst_admits_exactly_the_limit() {
        let g = Gcra::new(100, 60, 100);
        let mut tat = 0;
        let admitted = (0..1000).filter(|_| run(&g, &mut tat, T0)).count();
        assert_eq!(admitted, 100);
    }

    #[test]
    fn taking_several_cells_never_exceeds_the_burst() {
        let g = Gcra::new(100, 60, 100);
        let mut tat = 0;
        let mut cells = 0;
        while cells < 200 {
            let (v, n) = g.check_n(tat, T0, 64);
            if !v.allowed {
                break;
            }
            tat = v.new_tat_us;
            cells += n;
        }
        assert_eq!(cells, 100, "64 + 36: the last take is cut to what fits");
        let (v, n) = g.check_n(tat, T0, 64);
        assert_eq!((v.allowed, n, v.new_tat_us), (false, 0, tat));
        // One cell back after one interval; n = 1 is `check`.
        let (v, n) = g.check_n(tat, T0 + 600_000, 64);
        assert_eq!((v.allowed, n), (true, 1));
        assert_eq!(g.check_n(0, T0, 1), (g.check(0, T0), 1));
    }

    #[test]
    fn steady_rate_at_the_limit_is_never_refused() {
        let g = Gcra::new(10, 1, 10);
        let mut tat = 0;
        for i in 0..1000 {
            assert!(run(&g, &mut tat, T0 + i * 100_000), "request {i}");
        }
    }

    #[test]
    fn no_double_burst_at_window_edges() {
        let g = Gcra::new(10, 10, 10);
        let mut tat = 0;
        // Spend the quota at the end of one "window"…
        assert_eq!((0..10).filter(|_| run(&g, &mut tat, T0 + 9 * S)).count(), 10);
        // …a fixed window would hand out 10 more at the boundary; GCRA
        // refills one per second.
        assert_eq!((0..10).filter(|_| run(&g, &mut tat, T0 + 10 * S)).count(), 1);
        assert_eq!((0..10).filter(|_| run(&g, &mut tat, T0 + 15 * S)).count(), 5);
    }

    #[test]
    fn refill_and_headers() {
        let g = Gcra::new(5, 10, 5);
        let first = g.check(0, T0);
        assert_eq!((first.allowed, first.remaining, first.reset_secs), (true, 4, 2));
        let mut tat = first.new_tat_us;
        for _ in 0..4 {
            tat = g.check(tat, T0).new_tat_us;
        }
        let refused = g.check(tat, T0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_secs, 2);
        assert_eq!(refused.reset_secs, 10);
        assert!(g.check(tat, T0 + 2 * S).allowed);
        assert_eq!(g.check(tat, T0 + 10 * S).remaining, 4);
    }

    #[test]
    fn clock_going_backwards_gives_nothing_for_free() {
        let g = Gcra::new(3, 60, 3);
        let mut tat = 0;
        assert_eq!((0..3).filter(|_| run(&g, &mut tat, T0)).count(), 3);
        assert!(!run(&g, &mut tat, T0 - 3600 * S));
        assert!(!run(&g, &mut tat, 0));
        assert!(run(&g, &mut tat, T0 + 20 * S));
    }

    #[test]
    fn smaller_burst_spreads_requests() {
        let g = Gcra::new(60, 60, 2);
        let mut tat = 0;
        assert_eq!((0..10).filter(|_| run(&g, &mut tat, T0)).count(), 2);
        assert!(run(&g, &mut tat, T0 + S));
    }
}
