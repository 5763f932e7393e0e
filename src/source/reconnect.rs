//! Surviving unplug and replug: a source that, while its device is gone,
//! reports the loss and reopens the device with backoff.
//!
//! While the device is gone, `next_frame` returns a
//! [`crate::Error::Source`] (after a reopen attempt when one is due); the
//! pipeline's compositor draws the NO SIGNAL screen when frames stop (the
//! one NO SIGNAL path), and the network never runs on a placeholder.
//! Reopen attempts follow [`RECONNECT`] (100 ms, doubling up to 2 s), so a
//! replugged grabber is back within about two seconds while a missing one
//! does not spin the CPU. [`SignalStatus`] says what is happening.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::frame::Frame;
use crate::source::backoff::Backoff;
use crate::source::FrameSource;
use crate::Result;

/// Reopen delays after a loss: 100 ms, doubling, at most 2 s.
pub const RECONNECT: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));

/// Where the signal stands, for the HUD and the logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignalStatus {
    /// True while frames come from the device.
    pub live: bool,
    /// When the signal was lost (None while live).
    pub lost_at: Option<Instant>,
    /// Why it was lost or why the last reopen failed.
    pub reason: String,
    /// Reopen attempts since the loss.
    pub attempts: u32,
    /// Times the device came back.
    pub reconnects: u64,
}

/// Opens the wrapped source again; called on every retry.
pub type Opener = Box<dyn FnMut() -> Result<Box<dyn FrameSource>> + Send>;

/// A source that reports device loss and reopens.
pub struct Reconnecting {
    label: String,
    open: Opener,
    current: Option<Box<dyn FrameSource>>,
    size: (u32, u32),
    fps: f64,
    /// Failed reopen attempts since the loss.
    failures: u32,
    next_try: Instant,
    next_id: u64,
    status: Arc<Mutex<SignalStatus>>,
}

impl Reconnecting {
    /// Tries `open` once now. On failure it starts without signal (a cart
    /// may boot before the scanner) and reports `size`/`fps`; on success
    /// the source's own size and rate are used.
    pub fn new(label: impl Into<String>, mut open: Opener, size: (u32, u32), fps: f64) -> Self {
        let label = label.into();
        let now = Instant::now();
        let mut status = SignalStatus::default();
        let (current, size, fps) = match open() {
            Ok(s) => {
                status.live = true;
                let (sz, f) = (s.size(), s.frame_rate());
                (Some(s), sz, f)
            }
            Err(e) => {
                log::warn!("{label}: {e}; no signal, retrying");
                status.lost_at = Some(now);
                status.reason = e.to_string();
                (None, size, fps)
            }
        };
        Reconnecting {
            label,
            open,
            current,
            size,
            fps: fps.clamp(1.0, 240.0),
            failures: 0,
            next_try: now + RECONNECT.delay(1),
            next_id: 0,
            status: Arc::new(Mutex::new(status)),
        }
    }

    /// A handle on the signal state (for the HUD, on another thread).
    pub fn status(&self) -> Arc<Mutex<SignalStatus>> {
        Arc::clone(&self.status)
    }

    fn update(&self, f: impl FnOnce(&mut SignalStatus)) {
        // A poisoned lock only means another thread panicked while holding
        // it; the status is plain data and still usable.
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
    }

    fn lose(&mut self, reason: String) {
        log::warn!("{}: signal lost: {reason}; retrying", self.label);
        self.current = None;
        let now = Instant::now();
        self.failures = 0;
        self.next_try = now + RECONNECT.delay(1);
        self.update(|s| {
            s.live = false;
            s.lost_at = Some(now);
            s.reason = reason;
            s.attempts = 0;
        });
    }

    /// One reopen attempt if one is due.
    fn try_reopen(&mut self) {
        let now = Instant::now();
        if now < self.next_try {
            return;
        }
        match (self.open)() {
            Ok(s) => {
                log::info!("{}: signal back ({})", self.label, s.name());
                if s.size() != self.size {
                    log::warn!(
                        "{}: the device came back at {}x{} instead of {}x{}",
                        self.label,
                        s.size().0,
                        s.size().1,
                        self.size.0,
                        self.size.1
                    );
                }
                self.current = Some(s);
                self.update(|st| {
                    st.live = true;
                    st.lost_at = None;
                    st.reconnects += 1;
                });
            }
            Err(e) => {
                self.failures += 1;
                let wait = RECONNECT.delay(self.failures + 1);
                self.next_try = now + wait;
                log::debug!("{}: reopen failed: {e}; next in {wait:?}", self.label);
                self.update(|st| {
                    st.attempts += 1;
                    st.reason = e.to_string();
                });
            }
        }
    }
}

impl FrameSource for Reconnecting {
    fn name(&self) -> String {
        match &self.current {
            Some(s) => s.name(),
            None => format!("{} (no signal)", self.label),
        }
    }

    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn frame_rate(&self) -> f64 {
        self.fps
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool> {
        if self.current.is_none() {
            self.try_reopen();
        }
        if let Some(src) = self.current.as_mut() {
            match src.next_frame(frame) {
                Ok(more) => {
                    frame.id = self.next_id;
                    self.next_id += 1;
                    return Ok(more);
                }
                Err(e) => self.lose(e.to_string()),
            }
        }
        let s = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Err(crate::Error::Source {
            source_name: self.label.clone(),
            reason: format!(
                "no signal ({}); reopen attempt {}, next in {:?}",
                s.reason,
                s.attempts,
                self.next_try.saturating_duration_since(Instant::now())
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    /// A source that fails when `alive` is false, like an unplugged device.
    struct Flaky {
        alive: Arc<AtomicBool>,
        n: u64,
    }

    impl FrameSource for Flaky {
        fn name(&self) -> String {
            "flaky".into()
        }
        fn size(&self) -> (u32, u32) {
            (200, 100)
        }
        fn frame_rate(&self) -> f64 {
            100.0
        }
        fn next_frame(&mut self, frame: &mut Frame) -> Result<bool> {
            if !self.alive.load(Ordering::SeqCst) {
                return Err(Error::Source {
                    source_name: "flaky".into(),
                    reason: "gone".into(),
                });
            }
            *frame = Frame::new(200, 100);
            frame.rgb.fill(200);
            frame.id = self.n;
            self.n += 1;
            Ok(true)
        }
    }

    fn opener(alive: Arc<AtomicBool>, opens: Arc<AtomicU32>) -> Opener {
        Box::new(move || {
            opens.fetch_add(1, Ordering::SeqCst);
            if alive.load(Ordering::SeqCst) {
                Ok(Box::new(Flaky {
                    alive: alive.clone(),
                    n: 0,
                }) as Box<dyn FrameSource>)
            } else {
                Err(Error::Source {
                    source_name: "flaky".into(),
                    reason: "no device".into(),
                })
            }
        })
    }

    #[test]
    fn loss_is_reported_then_frames_resume_with_continuous_ids() {
        let alive = Arc::new(AtomicBool::new(true));
        let opens = Arc::new(AtomicU32::new(0));
        let mut r = Reconnecting::new("cam", opener(alive.clone(), opens.clone()), (1, 1), 25.0);
        let status = r.status();
        let mut f = Frame::new(1, 1);
        assert!(r.next_frame(&mut f).unwrap());
        assert_eq!((f.id, f.pixel(0, 0)), (0, [200, 200, 200]));
        assert_eq!(r.size(), (200, 100));
        alive.store(false, Ordering::SeqCst);
        assert!(r.next_frame(&mut f).is_err());
        assert!(!status.lock().unwrap().live);
        assert!(r.name().contains("no signal"));
        // While gone, retries back off: over ~0.5 s only a few attempts.
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(500) {
            assert!(r.next_frame(&mut f).is_err());
            std::thread::sleep(Duration::from_millis(5));
        }
        let tries = opens.load(Ordering::SeqCst);
        assert!((2..=6).contains(&tries), "{tries} opens in 0.5 s");
        assert!(status.lock().unwrap().attempts >= 1);
        alive.store(true, Ordering::SeqCst);
        let t0 = Instant::now();
        while r.next_frame(&mut f).is_err() {
            assert!(t0.elapsed() < RECONNECT.max() + Duration::from_millis(500));
            std::thread::sleep(Duration::from_millis(5));
        }
        // Ids go on from the last frame delivered, across the new device.
        assert_eq!((f.id, f.pixel(0, 0)), (1, [200, 200, 200]));
        let s = status.lock().unwrap().clone();
        assert!(s.live && s.reconnects == 1, "{s:?}");
    }

    #[test]
    fn loss_errors_come_back_at_once_then_frames_again() {
        let alive = Arc::new(AtomicBool::new(true));
        let opens = Arc::new(AtomicU32::new(0));
        let mut r = Reconnecting::new("cam", opener(alive.clone(), opens.clone()), (1, 1), 25.0);
        let mut f = Frame::new(1, 1);
        assert!(r.next_frame(&mut f).unwrap());
        alive.store(false, Ordering::SeqCst);
        let e = r.next_frame(&mut f).unwrap_err().to_string();
        assert!(e.contains("no signal") && e.contains("gone"), "{e}");
        // Errors come back at once (the caller paces its retries).
        let t0 = Instant::now();
        for _ in 0..50 {
            assert!(r.next_frame(&mut f).is_err());
        }
        assert!(t0.elapsed() < Duration::from_millis(100));
        alive.store(true, Ordering::SeqCst);
        let t0 = Instant::now();
        while r.next_frame(&mut f).is_err() {
            assert!(t0.elapsed() < RECONNECT.max() + Duration::from_millis(500));
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(f.pixel(0, 0), [200, 200, 200]);
        assert_eq!(r.status().lock().unwrap().reconnects, 1);
    }

    #[test]
    fn starts_without_signal_at_the_configured_size_when_the_device_is_missing() {
        let alive = Arc::new(AtomicBool::new(false));
        let opens = Arc::new(AtomicU32::new(0));
        let mut r = Reconnecting::new("cam", opener(alive.clone(), opens), (320, 240), 50.0);
        assert_eq!((r.size(), r.frame_rate()), ((320, 240), 50.0));
        let mut f = Frame::new(1, 1);
        let e = r.next_frame(&mut f).unwrap_err().to_string();
        assert!(e.contains("cam") && e.contains("no device"), "{e}");
        assert!(!r.status().lock().unwrap().live);
    }
}
