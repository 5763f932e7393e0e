//! The two one-item slots between the threads: the newest frame and the
//! newest mask.
//!
//! A slot holds only the newest item: the capture thread overwrites the
//! frame whether or not anyone has taken it, and a worker replaces the mask
//! only with one from a newer frame. So no queue can build up behind a slow
//! model, and every stage always works on the freshest data there is.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::frame::{Frame, Mask};
use crate::pipeline::stats::StageRecorder;
use crate::Error;

/// The newest frame from the source.
pub(super) struct FrameSlot {
    pub(super) frame: Frame,
    /// Number of frames published so far; the newest has id `gen - 1`'s frame.
    pub(super) gen: u64,
    /// Highest generation a worker has taken.
    pub(super) claimed: u64,
    /// Highest generation the compositor has shown (lossless replay waits
    /// for it before publishing the next frame).
    pub(super) shown: u64,
    /// The source ended (or failed for good) and will publish nothing more.
    pub(super) done: bool,
}

/// The newest mask, and the model's state.
pub(super) struct MaskSlot {
    pub(super) mask: Option<Mask>,
    /// Set while the model is failing; cleared by the next success.
    pub(super) error: Option<String>,
    /// Id of the last frame a worker finished, with or without a mask.
    pub(super) finished: Option<u64>,
}

/// What the capture thread, the workers and the compositor share.
pub(super) struct Shared {
    pub(super) frames: Mutex<FrameSlot>,
    pub(super) frame_cv: Condvar,
    pub(super) masks: Mutex<MaskSlot>,
    pub(super) mask_cv: Condvar,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) inferences: AtomicU64,
    pub(super) source_error: Mutex<Option<String>>,
    /// An error that ends the run (a file source's read error, or a damaged
    /// frame in strict mode).
    pub(super) fatal: Mutex<Option<Error>>,
    /// Frames the source delivered whole, and damaged ones it skipped.
    pub(super) frames_good: AtomicU64,
    pub(super) frames_corrupt: AtomicU64,
    /// The workers' stage times, merged after each inference so that a
    /// worker abandoned at stop still leaves its finished ones behind.
    pub(super) worker_stats: Mutex<StageRecorder>,
}

impl Shared {
    /// Empty slots for frames of `width` x `height`; `stop` ends every thread.
    pub(super) fn new(
        width: u32,
        height: u32,
        stop: Arc<AtomicBool>,
        stat_capacity: usize,
    ) -> Self {
        Shared {
            frames: Mutex::new(FrameSlot {
                frame: Frame::new(width, height),
                gen: 0,
                claimed: 0,
                shown: 0,
                done: false,
            }),
            frame_cv: Condvar::new(),
            masks: Mutex::new(MaskSlot {
                mask: None,
                error: None,
                finished: None,
            }),
            mask_cv: Condvar::new(),
            stop,
            inferences: AtomicU64::new(0),
            source_error: Mutex::new(None),
            fatal: Mutex::new(None),
            frames_good: AtomicU64::new(0),
            frames_corrupt: AtomicU64::new(0),
            worker_stats: Mutex::new(StageRecorder::new(stat_capacity)),
        }
    }
}

/// Waits on `cv` for at most `d`, like [`lock`] carrying on through a
/// poisoned lock; the caller re-checks its condition (and the stop flag)
/// whether it was woken or timed out.
pub(super) fn wait<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    d: Duration,
) -> MutexGuard<'a, T> {
    cv.wait_timeout(guard, d)
        .map(|(g, _)| g)
        .unwrap_or_else(|p| p.into_inner().0)
}

/// A poisoned lock only means another stage panicked; its data (a frame or a
/// mask) is still whole, so carry on rather than take the video down too.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
