//! The two one-item slots between the threads: the newest frame and the
//! newest mask.
//!
//! A slot holds only the newest item: the capture thread overwrites the
//! frame whether or not anyone has taken it, and a worker replaces the mask
//! only with one from a newer frame. So no queue can build up behind a slow
//! model, and every stage always works on the freshest data there is.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::frame::{Frame, Mask};

/// The newest frame from the source.
pub(super) struct FrameSlot {
    pub(super) frame: Frame,
    /// Number of frames published so far; the newest has id `gen - 1`'s frame.
    pub(super) gen: u64,
    /// Highest generation a worker has taken.
    pub(super) claimed: u64,
    /// The source ended (or failed for good) and will publish nothing more.
    pub(super) done: bool,
}

/// The newest mask, and the model's state.
pub(super) struct MaskSlot {
    pub(super) mask: Option<Mask>,
    /// Set while the model is failing; cleared by the next success.
    pub(super) error: Option<String>,
}

/// What the capture thread, the workers and the compositor share.
pub(super) struct Shared {
    pub(super) frames: Mutex<FrameSlot>,
    pub(super) frame_cv: Condvar,
    pub(super) masks: Mutex<MaskSlot>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) inferences: AtomicU64,
    pub(super) source_error: Mutex<Option<String>>,
}

impl Shared {
    /// Empty slots for frames of `width` x `height`; `stop` ends every thread.
    pub(super) fn new(width: u32, height: u32, stop: Arc<AtomicBool>) -> Self {
        Shared {
            frames: Mutex::new(FrameSlot {
                frame: Frame::new(width, height),
                gen: 0,
                claimed: 0,
                done: false,
            }),
            frame_cv: Condvar::new(),
            masks: Mutex::new(MaskSlot {
                mask: None,
                error: None,
            }),
            stop,
            inferences: AtomicU64::new(0),
            source_error: Mutex::new(None),
        }
    }
}

/// A poisoned lock only means another stage panicked; its data (a frame or a
/// mask) is still whole, so carry on rather than take the video down too.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
