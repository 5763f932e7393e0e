//! Retry delays: the only retry/backoff policy in the crate.
//!
//! A failing device or stage is retried after a delay that starts short
//! (a replugged grabber is back quickly) and doubles up to a ceiling (a
//! missing one does not spin the CPU). The caller counts its consecutive
//! failures and resets the count to zero on success; [`Backoff::delay`]
//! turns the count into the wait. Users: the reconnecting source
//! ([`crate::source::reconnect`]) and the pipeline's capture and inference
//! workers.

use std::time::Duration;

/// A doubling retry delay between a first and a longest wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    start: Duration,
    max: Duration,
}

impl Backoff {
    /// The pipeline's retry of a failing source or inference: 100 ms,
    /// doubling, at most 1.6 s.
    pub const PIPELINE: Backoff =
        Backoff::new(Duration::from_millis(100), Duration::from_millis(1600));

    /// Waits `start` after the first failure, doubling with each further
    /// one, never more than `max`.
    pub const fn new(start: Duration, max: Duration) -> Self {
        Backoff { start, max }
    }

    /// The first wait.
    pub fn start(&self) -> Duration {
        self.start
    }

    /// The longest wait.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The wait after `failures` consecutive failures: zero for none,
    /// `start` for one, then doubling up to `max`.
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        // 2^31 times any start is past any sensible max: saturate there.
        let factor = 1u32 << (failures - 1).min(31);
        self.start.saturating_mul(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_start_to_max() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let ms = |n| b.delay(n).as_millis();
        assert_eq!(
            [ms(0), ms(1), ms(2), ms(3), ms(4), ms(5), ms(6)],
            [0, 100, 200, 400, 800, 1600, 2000]
        );
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn pipeline_policy_doubles_from_100ms_to_1_6s() {
        for failures in 1..40u32 {
            assert_eq!(
                Backoff::PIPELINE.delay(failures),
                Duration::from_millis(50u64 << failures.min(5)),
                "{failures}"
            );
        }
    }
}
