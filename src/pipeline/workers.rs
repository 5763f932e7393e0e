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
pub(super) fn worker_loop(
    mut seg: Box<dyn Segmenter>,
    shared: &Shared,
    roi: Rect,
    width: u32,
    height: u32,
) {
    // One frame's samples: three stages, a few samples each.
    let mut rec = StageRecorder::new(8);
    let mut frame = Frame::new(width, height);
    let mut mask = Mask::new(roi);
    let mut failures = 0u32;
    loop {
        {
            let mut slot = lock(&shared.frames);
            loop {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                if slot.gen > slot.claimed {
                    break;
                }
                if slot.done {
                    return;
                }
                slot = wait(&shared.frame_cv, slot, Duration::from_millis(100));
            }
            slot.claimed = slot.gen;
            frame.copy_from(&slot.frame);
        }
        let result = seg.segment(&frame, roi, &mut mask, &mut rec);
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
