//! Frame pacing: the only pacing in the crate.
//!
//! A camera delivers at its own clock; a file replay or the phantom must
//! pretend to. [`Pacer`] keeps such a source on a fixed period: each
//! [`Pacer::wait`] sleeps until the next deadline, and deadlines advance by
//! the period from the previous *deadline* (not from when the sleep ended),
//! so render time and sleep overshoot do not make the rate drift.
//!
//! When a call comes after its deadline (the consumer stalled), the frame is
//! delivered at once and the schedule restarts from that moment: a camera
//! does not send the frames it missed in a burst. The number of deadlines
//! that passed unmet is returned, for a source whose frames are a function
//! of time (the phantom skips them, as a camera's frame counter would).

use std::time::{Duration, Instant};

/// Keeps a source on a frame period (or lets it run unpaced).
#[derive(Debug, Clone)]
pub struct Pacer {
    /// `None`: unpaced, [`Pacer::wait`] returns at once.
    period: Option<Duration>,
    /// Deadline of the next frame; `None` before the first.
    next: Option<Instant>,
}

impl Pacer {
    /// A pacer for `fps` frames per second (clamped to at least 0.001).
    pub fn new(fps: f64) -> Self {
        Pacer {
            period: Some(Duration::from_secs_f64(1.0 / fps.max(0.001))),
            next: None,
        }
    }

    /// A pacer that never waits (benchmarks, `pace = "fast"`).
    pub fn unpaced() -> Self {
        Pacer {
            period: None,
            next: None,
        }
    }

    /// True when [`Pacer::wait`] sleeps.
    pub fn is_paced(&self) -> bool {
        self.period.is_some()
    }

    /// Sleeps until the next frame is due. Returns how many deadlines passed
    /// unmet before this call (0 when on time; always 0 when unpaced).
    pub fn wait(&mut self) -> u64 {
        let now = Instant::now();
        let (due, missed) = self.schedule(now);
        if due > now {
            std::thread::sleep(due - now);
        }
        missed
    }

    /// The scheduling of [`Pacer::wait`] for a call at `now`, without the
    /// sleep: when the frame is due, and how many deadlines were missed.
    /// Advances the schedule.
    fn schedule(&mut self, now: Instant) -> (Instant, u64) {
        let Some(period) = self.period else {
            return (now, 0);
        };
        let (due, missed) = match self.next {
            Some(t) if t >= now => (t, 0),
            Some(t) => {
                // Stalled: deliver now and restart the schedule from here.
                let late = now - t;
                (now, (late.as_secs_f64() / period.as_secs_f64()) as u64)
            }
            None => (now, 0),
        };
        self.next = Some(due + period);
        (due, missed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn deadlines_advance_by_the_period_without_drift() {
        let mut p = Pacer::new(50.0);
        let t0 = Instant::now();
        assert_eq!(p.schedule(t0), (t0, 0));
        // Called early: due on the grid.
        assert_eq!(p.schedule(t0 + 5 * MS), (t0 + 20 * MS, 0));
        // Called just before the deadline (a sleep that woke early or a
        // caller that took long): still on the grid, no drift.
        assert_eq!(p.schedule(t0 + 39 * MS), (t0 + 40 * MS, 0));
        assert_eq!(p.schedule(t0 + 40 * MS), (t0 + 60 * MS, 0));
    }

    #[test]
    fn a_stall_restarts_the_schedule_and_counts_missed_deadlines() {
        let mut p = Pacer::new(100.0);
        let t0 = Instant::now();
        p.schedule(t0);
        // Next due at 10 ms; called at 45 ms: 3 whole periods missed.
        let (due, missed) = p.schedule(t0 + 45 * MS);
        assert_eq!((due, missed), (t0 + 45 * MS, 3));
        // No burst: the next frame is a full period after the late one.
        assert_eq!(p.schedule(t0 + 46 * MS), (t0 + 55 * MS, 0));
        // Slightly late (less than a period): delivered now, nothing missed.
        assert_eq!(p.schedule(t0 + 67 * MS), (t0 + 67 * MS, 0));
        assert_eq!(p.schedule(t0 + 68 * MS), (t0 + 77 * MS, 0));
    }

    #[test]
    fn unpaced_never_waits() {
        let mut p = Pacer::unpaced();
        assert!(!p.is_paced());
        let t0 = Instant::now();
        assert_eq!(p.schedule(t0), (t0, 0));
        assert_eq!(p.schedule(t0), (t0, 0));
        let t = Instant::now();
        for _ in 0..1000 {
            assert_eq!(p.wait(), 0);
        }
        assert!(t.elapsed() < Duration::from_millis(500));
    }

    #[test]
    fn wait_sleeps_to_the_rate() {
        // Five frames at 100 fps: four periods; generous bounds (noisy host).
        let mut p = Pacer::new(100.0);
        let t0 = Instant::now();
        for _ in 0..5 {
            p.wait();
        }
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(38), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
}
