//! How many pollers (consumers in the mapping's group) a mapping runs.
//! Within `[min, max]` (ProvisionedPollerConfig, or 1 and the partition
//! count): a poller is added once lag has stayed high for a few seconds,
//! one is removed after a minute of no lag, or when the function throttles.
//! Each change waits for the group's rebalance to settle before the next.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Lag must stay high this long before a poller is added.
pub const UP_AFTER: Duration = Duration::from_secs(5);
/// Lag must stay low this long before a poller is removed.
pub const DOWN_AFTER: Duration = Duration::from_secs(60);
/// No change sooner than this after the last (a rebalance takes seconds).
pub const SETTLE: Duration = Duration::from_secs(5);
/// Lag at or below this counts as caught up.
const CAUGHT_UP: i64 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub min: usize,
    pub max: usize,
}

impl Limits {
    /// `partitions` 0 means not known yet: stay at the minimum.
    pub fn new(min: Option<i64>, max: Option<i64>, partitions: usize) -> Limits {
        let min = min.unwrap_or(1).max(1) as usize;
        let cap = if partitions == 0 { min } else { partitions };
        let max = max.map(|m| m.max(1) as usize).unwrap_or(cap).min(cap.max(min));
        Limits { min, max: max.max(min) }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Hold,
    Up(String),
    Down(String),
}

pub struct Scaler {
    samples: VecDeque<(Instant, i64)>,
    last_change: Instant,
    throttles: u64,
    throttled_at: Option<Instant>,
    /// Lag above this (records) is "high": a batch's worth at least.
    high: i64,
}

impl Scaler {
    pub fn new(now: Instant, batch_size: usize) -> Scaler {
        Scaler {
            samples: VecDeque::new(),
            last_change: now,
            throttles: 0,
            throttled_at: None,
            high: (batch_size as i64).max(100),
        }
    }

    /// Takes the latest total lag (None: not read yet) and throttle count.
    pub fn observe(&mut self, now: Instant, lag: Option<i64>, throttles: u64) {
        if let Some(l) = lag {
            self.samples.push_back((now, l));
        }
        while self.samples.front().is_some_and(|(t, _)| now.duration_since(*t) > DOWN_AFTER + UP_AFTER) {
            self.samples.pop_front();
        }
        if throttles > self.throttles {
            self.throttled_at = Some(now);
        }
        self.throttles = throttles;
    }

    /// Samples covering at least the last `span` (None: history too short).
    fn over(&self, now: Instant, span: Duration) -> Option<Vec<i64>> {
        let first = self.samples.front()?;
        if now.duration_since(first.0) < span {
            return None;
        }
        Some(self.samples.iter().filter(|(t, _)| now.duration_since(*t) <= span).map(|(_, l)| *l).collect())
    }

    pub fn decide(&mut self, now: Instant, pollers: usize, limits: Limits) -> Decision {
        if pollers < limits.min {
            return self.changed(now, Decision::Up(format!("below the minimum of {}", limits.min)));
        }
        if pollers > limits.max {
            return self.changed(now, Decision::Down(format!("above the maximum of {}", limits.max)));
        }
        if now.duration_since(self.last_change) < SETTLE {
            return Decision::Hold;
        }
        if let Some(t) = self.throttled_at {
            if now.duration_since(t) < Duration::from_secs(10) && pollers > limits.min && t > self.last_change {
                return self.changed(now, Decision::Down("the function is throttling".into()));
            }
        }
        if pollers < limits.max {
            if let Some(recent) = self.over(now, UP_AFTER) {
                let (first, last) = (recent.first().copied().unwrap_or(0), recent.last().copied().unwrap_or(0));
                // High all along, and not about to clear on its own (at the
                // rate it drains, within half a minute).
                let drain_per_s = (first - last) as f64 / UP_AFTER.as_secs_f64();
                let clears_soon = drain_per_s > 0.0 && (last as f64 / drain_per_s) < 30.0;
                if !recent.is_empty() && recent.iter().all(|l| *l > self.high) && !clears_soon {
                    return self.changed(
                        now,
                        Decision::Up(format!(
                            "lag stayed above {} records for {} s (now {last})",
                            self.high,
                            UP_AFTER.as_secs()
                        )),
                    );
                }
            }
        }
        if pollers > limits.min && now.duration_since(self.last_change) >= DOWN_AFTER {
            if let Some(recent) = self.over(now, DOWN_AFTER) {
                if recent.iter().all(|l| *l <= CAUGHT_UP) {
                    return self.changed(now, Decision::Down(format!("caught up for {} s", DOWN_AFTER.as_secs())));
                }
            }
        }
        Decision::Hold
    }

    fn changed(&mut self, now: Instant, d: Decision) -> Decision {
        self.last_change = now;
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        s: &mut Scaler,
        start: Instant,
        secs: std::ops::Range<u64>,
        lag: impl Fn(u64) -> i64,
        pollers: &mut usize,
        limits: Limits,
    ) -> Vec<(u64, Decision)> {
        let mut out = Vec::new();
        for t in secs {
            let now = start + Duration::from_secs(t);
            s.observe(now, Some(lag(t)), 0);
            match s.decide(now, *pollers, limits) {
                Decision::Hold => {}
                Decision::Up(why) => {
                    *pollers += 1;
                    out.push((t, Decision::Up(why)));
                }
                Decision::Down(why) => {
                    *pollers -= 1;
                    out.push((t, Decision::Down(why)));
                }
            }
        }
        out
    }

    #[test]
    fn a_sustained_lag_adds_pollers_within_ten_seconds_up_to_the_partitions() {
        let start = Instant::now();
        let mut s = Scaler::new(start, 100);
        let mut pollers = 1;
        let limits = Limits::new(None, None, 3);
        let changes = run(&mut s, start, 0..40, |t| 1000 + 50 * t as i64, &mut pollers, limits);
        assert!(matches!(changes[0], (t, Decision::Up(_)) if t <= 10), "{changes:?}");
        assert_eq!(pollers, 3, "never above the partition count");
    }

    #[test]
    fn a_spike_or_draining_lag_adds_nothing_and_calm_removes_slowly() {
        let start = Instant::now();
        let mut s = Scaler::new(start, 100);
        let mut pollers = 2;
        let limits = Limits::new(None, None, 6);
        // A 2-second spike, then lag draining fast.
        let changes = run(
            &mut s,
            start,
            0..20,
            |t| if t < 2 { 5000 } else { (1000 - 200 * t as i64).max(0) },
            &mut pollers,
            limits,
        );
        assert!(changes.iter().all(|c| !matches!(c.1, Decision::Up(_))), "{changes:?}");
        let changes = run(&mut s, start, 20..200, |_| 0, &mut pollers, limits);
        assert_eq!(changes.len(), 1, "one removal after a calm minute, then the minimum: {changes:?}");
        assert_eq!(pollers, 1);
    }

    #[test]
    fn throttling_scales_down_and_limits_hold() {
        let start = Instant::now();
        let mut s = Scaler::new(start, 100);
        let limits = Limits::new(Some(2), Some(4), 6);
        assert_eq!(limits, Limits { min: 2, max: 4 });
        assert!(matches!(s.decide(start, 1, limits), Decision::Up(_)), "below the minimum");
        let now = start + Duration::from_secs(20);
        s.observe(now, Some(5000), 3);
        assert!(matches!(s.decide(now, 3, limits), Decision::Down(_)));
        assert_eq!(Limits::new(Some(1), Some(10), 3).max, 3, "MaximumPollers is capped at the partitions");
    }
}
