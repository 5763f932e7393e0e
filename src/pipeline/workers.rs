//! The threads that fill the slots: the capture thread (the source's frames
//! into the frame slot) and the inference workers (the newest unclaimed
//! frame into a mask, published if newer than the one in the mask slot).
//!
//! Neither ever stops the video: a failing source or model is logged, noted
//! in the shared state for the compositor to show, and retried with backoff.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::slots::{lock, wait, Shared};
use crate::frame::{Frame, Mask, Rect};
use crate::infer::Segmenter;
use crate::pipeline::stats::{Stage, StageRecorder};
use crate::source::backoff::Backoff;
use crate::source::FrameSource;
use crate::Error;

/// How the capture thread treats its source.
#[derive(Debug, Clone, Copy)]
pub(super) struct CaptureMode {
    /// Stop after this many frames published (0: no limit).
    pub(super) limit: u64,
    /// Wait for each frame to be shown before publishing the next
    /// (lossless file replay) instead of overwriting it.
    pub(super) lossless: bool,
    /// A damaged frame ends the run instead of being skipped.
    pub(super) strict: bool,
    /// A live device: read errors are a lost signal, retried with backoff.
    /// For a file they end the run.
    pub(super) live: bool,
}

/// The capture thread: publishes each frame of `source` (of `width` x
/// `height`) until it ends, `mode.limit` frames were published or the run
/// stops. Returns its capture times; counts go to `shared`.
pub(super) fn capture_loop(
    source: &mut dyn FrameSource,
    shared: &Shared,
    mode: CaptureMode,
    cap: usize,
    width: u32,
    height: u32,
) -> StageRecorder {
    let mut rec = StageRecorder::new(cap);
    let mut local = Frame::new(width, height);
    let mut count = 0u64;
    let mut failures = 0u32;
    while !shared.stop.load(Ordering::SeqCst) && (mode.limit == 0 || count < mode.limit) {
        let t0 = Instant::now();
        match source.next_frame(&mut local) {
            Ok(true) => {
                rec.record(Stage::Capture, t0.elapsed());
                if failures > 0 {
                    log::info!("source {} is delivering frames again", source.name());
                    *lock(&shared.source_error) = None;
                    failures = 0;
                }
                if (local.width, local.height) != (width, height) {
                    // A source must not change size mid-stream; skip the frame
                    // rather than hand every stage a buffer it did not size for.
                    log::warn!(
                        "source frame {} is {}x{}, expected {width}x{height}; skipped",
                        local.id,
                        local.width,
                        local.height
                    );
                    shared.frames_corrupt.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                let mut slot = lock(&shared.frames);
                if mode.lossless {
                    // Back-pressure: the previous frame is shown (with its
                    // own mask) before this one replaces it.
                    while slot.shown < slot.gen && !shared.stop.load(Ordering::SeqCst) {
                        slot = wait(&shared.frame_cv, slot, Duration::from_millis(50));
                    }
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                }
                std::mem::swap(&mut slot.frame, &mut local);
                slot.gen += 1;
                drop(slot);
                shared.frame_cv.notify_all();
                shared.frames_good.fetch_add(1, Ordering::SeqCst);
                count += 1;
            }
            Ok(false) => break,
            Err(e @ Error::CorruptFrame { .. }) => {
                shared.frames_corrupt.fetch_add(1, Ordering::SeqCst);
                if mode.strict {
                    log::error!("{e} (strict: the run ends)");
                    *lock(&shared.fatal) = Some(e);
                    break;
                }
                log::warn!("{e}");
            }
            Err(e) if !mode.live => {
                log::error!("source {}: {e} (the run ends)", source.name());
                *lock(&shared.fatal) = Some(e);
                break;
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    log::error!(
                        "source {}: {e} (failure {failures}, retrying)",
                        source.name()
                    );
                }
                *lock(&shared.source_error) = Some(e.to_string());
                let backoff = Backoff::PIPELINE.delay(failures);
                sleep_unless_stopped(&shared.stop, backoff);
            }
        }
    }
    lock(&shared.frames).done = true;
    shared.frame_cv.notify_all();
    rec
}

fn sleep_unless_stopped(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= end {
            break;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

/// An inference worker: segments the newest unclaimed frame's `roi` with
/// `seg` until the source is done or the run stops. Its stage times go to
/// `shared.worker_stats` after each frame.
///
/// With `fresh`, a frame whose mask would be ready too late to be drawn on
/// any frame (see [`Freshness`]) is left for the next one.
pub(super) fn worker_loop(
    mut seg: Box<dyn Segmenter>,
    shared: &Shared,
    roi: Rect,
    (width, height): (u32, u32),
    fresh: Option<Freshness>,
) {
    // One frame's samples: three stages, a few samples each.
    let mut rec = StageRecorder::new(8);
    let mut frame = Frame::new(width, height);
    let mut mask = Mask::new(roi);
    let mut failures = 0u32;
    let mut took = RecentTimes::default();
    // The newest frame left because its mask would come too late, and
    // whether the last decision was to leave one.
    let (mut passed, mut passed_last) = (0u64, false);
    loop {
        {
            let mut slot = lock(&shared.frames);
            loop {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                if slot.gen > slot.claimed && slot.gen > passed {
                    let lag = slot.frame.captured.elapsed();
                    match (fresh, took.median()) {
                        (Some(f), Some(t)) if !f.start(lag, t, passed_last) => {
                            log::debug!(
                                "frame {} left: {} ms old, its mask would take {} ms",
                                slot.frame.id,
                                lag.as_millis(),
                                t.as_millis()
                            );
                            passed = slot.gen;
                            passed_last = true;
                        }
                        _ => {
                            passed_last = false;
                            break;
                        }
                    }
                }
                if slot.done {
                    return;
                }
                slot = wait(&shared.frame_cv, slot, Duration::from_millis(100));
            }
            slot.claimed = slot.gen;
            frame.copy_from(&slot.frame);
        }
        let started = Instant::now();
        let result = seg.segment(&frame, roi, &mut mask, &mut rec);
        if result.is_ok() {
            took.push(started.elapsed());
        }
        lock(&shared.worker_stats).merge(&rec);
        rec.clear();
        match result {
            Ok(()) => {
                shared.inferences.fetch_add(1, Ordering::SeqCst);
                let mut slot = lock(&shared.masks);
                slot.error = None;
                match slot.mask.as_mut() {
                    Some(m) if m.frame_id >= mask.frame_id => {}
                    Some(m) => std::mem::swap(m, &mut mask),
                    None => slot.mask = Some(mask.clone()),
                }
                slot.finished = slot.finished.max(Some(frame.id));
                drop(slot);
                shared.mask_cv.notify_all();
                failures = 0;
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    log::error!(
                        "inference failed on frame {}: {e} (failure {failures}, retrying)",
                        frame.id
                    );
                }
                {
                    let mut slot = lock(&shared.masks);
                    slot.error = Some(e.to_string());
                    slot.finished = slot.finished.max(Some(frame.id));
                }
                shared.mask_cv.notify_all();
                sleep_unless_stopped(&shared.stop, Backoff::PIPELINE.delay(failures));
            }
        }
    }
}

/// When a worker starts a frame: only if its mask can still be drawn.
///
/// A mask of a frame captured at `c` is drawn on the frames captured at
/// `c + k * period` that it is ready for, while `k * period <= max_age`.
/// A worker that finishes while the newest frame is already `lag` old and
/// would take `infer` again makes a mask no frame shows when `lag + infer`
/// passes the last of those: it does better to wait for the next frame,
/// whose mask is in time. Where even a frame started the moment it
/// arrives would be late (the model is too slow for the setting), every
/// frame is started: there is nothing better to wait for. Nor is a frame
/// left right after another was: a frame published later than its
/// capture time says, or an estimate a little too high, then costs one
/// frame instead of stopping the masks for good.
#[derive(Debug, Clone, Copy)]
pub(super) struct Freshness {
    pub(super) period: Duration,
    pub(super) max_age: Duration,
}

impl Freshness {
    /// How long after its capture the last frame a mask may be drawn on
    /// comes.
    fn last_shown(&self) -> Duration {
        if self.period.is_zero() {
            return self.max_age;
        }
        let k = (self.max_age.as_secs_f64() / self.period.as_secs_f64()).floor();
        self.period.mul_f64(k)
    }

    /// Whether to start a frame `lag` old now, with inferences taking
    /// `infer`, when the previous frame was left (`passed_last`) or not.
    pub(super) fn start(&self, lag: Duration, infer: Duration, passed_last: bool) -> bool {
        passed_last || self.worth_starting(lag, infer)
    }

    fn worth_starting(&self, lag: Duration, infer: Duration) -> bool {
        let last = self.last_shown();
        lag + infer <= last || infer > last
    }
}

/// The median of a worker's last few inference times: the estimate that
/// [`Freshness`] works with, robust to a single slow frame.
#[derive(Debug, Default)]
struct RecentTimes {
    times: [Duration; 9],
    len: usize,
    next: usize,
}

impl RecentTimes {
    fn push(&mut self, t: Duration) {
        self.times[self.next] = t;
        self.next = (self.next + 1) % self.times.len();
        self.len = (self.len + 1).min(self.times.len());
    }

    /// None until three inferences are known.
    fn median(&self) -> Option<Duration> {
        if self.len < 3 {
            return None;
        }
        let mut t = self.times;
        let t = &mut t[..self.len];
        t.sort_unstable();
        Some(t[self.len / 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One worker taking `infer` ms per frame on 3000 frames, one every
    /// `period` ms, each published `delay` ms after its capture time: the
    /// share of frames that show a mask at most `max_age` ms old, and the
    /// inferences made. The worker starts the newest frame as soon as it
    /// is free or, with `fresh`, when [`Freshness::start`] says so.
    fn simulate(period: f64, infer: f64, max_age: f64, delay: f64, fresh: bool) -> (f64, usize) {
        let frames = 3000usize;
        let policy = Freshness {
            period: Duration::from_secs_f64(period / 1e3),
            max_age: Duration::from_secs_f64(max_age / 1e3),
        };
        let ms = |v: f64| Duration::from_secs_f64(v / 1e3);
        // (ready time, capture time) of every mask, in order.
        let mut masks: Vec<(f64, f64)> = Vec::new();
        let (mut free, mut last, mut passed_last) = (delay, None::<usize>, false);
        while free < frames as f64 * period {
            let newest = ((free - delay) / period + 1e-9).floor() as usize;
            if last.is_some_and(|l| l >= newest) {
                free = (newest + 1) as f64 * period + delay;
                continue;
            }
            let lag = (free - newest as f64 * period).max(0.0);
            last = Some(newest);
            if fresh && !policy.start(ms(lag), ms(infer), passed_last) {
                passed_last = true;
                free = (newest + 1) as f64 * period + delay;
                continue;
            }
            passed_last = false;
            masks.push((free + infer, newest as f64 * period));
            free += infer;
        }
        let shown = (0..frames)
            .filter(|&k| {
                let t = k as f64 * period + delay;
                masks
                    .iter()
                    .filter(|(ready, _)| *ready <= t)
                    .map(|(_, c)| *c)
                    .fold(None::<f64>, |a, c| Some(a.map_or(c, |a: f64| a.max(c))))
                    .is_some_and(|c| k as f64 * period - c <= max_age)
            })
            .count();
        (shown as f64 / frames as f64, masks.len())
    }

    fn coverage(period: f64, infer: f64, max_age: f64, fresh: bool) -> f64 {
        simulate(period, infer, max_age, 0.0, fresh).0
    }

    /// At 15 fps with a 150 ms limit and an inference longer than a frame
    /// interval, starting every new frame at once drifts into frames whose
    /// masks come too late (84 ms: 60 % of the frames get a mask, 120 ms:
    /// 22 %); leaving those frames for the next one shows 75 % and 50 %.
    /// Fast models and generous limits are not changed.
    #[test]
    fn leaving_hopeless_frames_shows_more_masks() {
        let p = 1000.0 / 15.0;
        for (infer, naive_at_most, fresh_at_least) in
            [(84.0, 0.61, 0.74), (90.0, 0.52, 0.66), (120.0, 0.23, 0.49)]
        {
            let naive = coverage(p, infer, 150.0, false);
            let fresh = coverage(p, infer, 150.0, true);
            assert!(naive <= naive_at_most, "{infer} ms: {naive}");
            assert!(
                fresh >= fresh_at_least,
                "{infer} ms: {fresh} (naive {naive})"
            );
        }
        for (infer, max_age) in [(60.0, 150.0), (75.0, 150.0), (84.0, 1500.0), (400.0, 150.0)] {
            assert_eq!(
                coverage(p, infer, max_age, true),
                coverage(p, infer, max_age, false),
                "{infer} ms, {max_age} ms"
            );
        }
    }

    /// Frames published 10 ms after their capture time and an inference
    /// that fits only a frame started at once: no frame is ever worth
    /// starting, and the worker still starts every other one (it never
    /// leaves two in a row), so its estimate keeps up and nothing stalls.
    #[test]
    fn late_frames_never_stop_the_worker() {
        let p = 1000.0 / 15.0;
        let (_, naive) = simulate(p, 128.0, 150.0, 10.0, false);
        let (_, fresh) = simulate(p, 128.0, 150.0, 10.0, true);
        assert!(
            naive > 1000 && fresh >= naive / 2,
            "{fresh} of {naive} inferences"
        );
    }

    #[test]
    fn worth_starting_follows_the_last_frame_a_mask_is_shown_on() {
        let ms = Duration::from_millis;
        let f = Freshness {
            period: Duration::from_secs_f64(1.0 / 15.0),
            max_age: ms(150),
        };
        // Two periods (133 ms) after its capture is the last chance.
        assert!(f.worth_starting(ms(40), ms(90)));
        assert!(!f.worth_starting(ms(50), ms(90)));
        // Too slow for any frame: started anyway.
        assert!(f.worth_starting(ms(60), ms(140)));
        // Right after a frame was left: started anyway.
        assert!(f.start(ms(50), ms(90), true));
        assert!(!f.start(ms(50), ms(90), false));
        assert_eq!(RecentTimes::default().median(), None);
        let mut r = RecentTimes::default();
        for t in [80, 500, 82, 81] {
            r.push(ms(t));
        }
        assert_eq!(r.median(), Some(ms(82)));
    }
}
