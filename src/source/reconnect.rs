//! Surviving unplug and replug: a source that, while its device is gone,
//! shows a NO SIGNAL screen and reopens the device with backoff.
//!
//! Keeping this in a source wrapper leaves the pipeline simple: it always
//! gets frames at the configured rate, and the HUD reads [`SignalStatus`]
//! to say what is happening. Backoff starts at 100 ms and doubles up to
//! 2 s, so a replugged grabber is back within about two seconds while a
//! missing one does not spin the CPU.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use embedded_graphics::mono_font::{ascii::FONT_10X20, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::text::{Alignment, Text};

use crate::frame::Frame;
use crate::source::FrameSource;
use crate::Result;

/// First retry delay after a loss.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

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
    /// NO SIGNAL frames produced so far.
    pub no_signal_frames: u64,
}

/// Opens the wrapped source again; called on every retry.
pub type Opener = Box<dyn FnMut() -> Result<Box<dyn FrameSource>> + Send>;

/// A source that turns device loss into NO SIGNAL frames and reopens.
pub struct Reconnecting {
    label: String,
    open: Opener,
    current: Option<Box<dyn FrameSource>>,
    size: (u32, u32),
    fps: f64,
    backoff: Duration,
    next_try: Instant,
    next_frame_due: Instant,
    next_id: u64,
    status: Arc<Mutex<SignalStatus>>,
    draw_no_signal: bool,
}

impl Reconnecting {
    /// Tries `open` once now. On failure it starts in NO SIGNAL (a cart may
    /// boot before the scanner) at `size`/`fps`; on success the source's
    /// own size and rate are used, and NO SIGNAL frames keep that size.
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
                log::warn!("{label}: {e}; showing NO SIGNAL and retrying");
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
            backoff: BACKOFF_START,
            next_try: now + BACKOFF_START,
            next_frame_due: now,
            next_id: 0,
            status: Arc::new(Mutex::new(status)),
            draw_no_signal: true,
        }
    }

    /// While the device is gone, return a [`crate::Error::Source`] from
    /// `next_frame` (after a reopen attempt when one is due) instead of NO
    /// SIGNAL frames: for a pipeline that draws its own NO SIGNAL screen
    /// when frames stop, and must not run the network on a placeholder.
    pub fn reporting_loss(mut self) -> Self {
        self.draw_no_signal = false;
        self
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
        log::warn!(
            "{}: signal lost: {reason}; showing NO SIGNAL and retrying",
            self.label
        );
        self.current = None;
        let now = Instant::now();
        self.backoff = BACKOFF_START;
        self.next_try = now + BACKOFF_START;
        self.next_frame_due = now;
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
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                self.next_try = now + self.backoff;
                log::debug!(
                    "{}: reopen failed: {e}; next in {:?}",
                    self.label,
                    self.backoff
                );
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
        if !self.draw_no_signal {
            let s = self
                .status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            return Err(crate::Error::Source {
                source_name: self.label.clone(),
                reason: format!(
                    "no signal ({}); reopen attempt {}, next in {:?}",
                    s.reason, s.attempts, self.backoff
                ),
            });
        }
        // NO SIGNAL at the configured pace, so the display keeps updating
        // (and shows the retry count) without spinning.
        let now = Instant::now();
        if self.next_frame_due > now {
            std::thread::sleep(self.next_frame_due - now);
        }
        self.next_frame_due =
            self.next_frame_due.max(now) + Duration::from_secs_f64(1.0 / self.fps);
        let (attempts, lost_at) = {
            let s = self.status.lock().unwrap_or_else(|p| p.into_inner());
            (s.attempts, s.lost_at)
        };
        draw_no_signal(frame, self.size, &self.label, attempts, lost_at);
        frame.id = self.next_id;
        frame.captured = Instant::now();
        self.next_id += 1;
        self.update(|s| s.no_signal_frames += 1);
        Ok(true)
    }
}

/// Background of the NO SIGNAL screen (dark grey, so that a black panel
/// and a NO SIGNAL screen are told apart).
pub const NO_SIGNAL_BG: [u8; 3] = [32, 32, 32];
/// Colour of the NO SIGNAL text.
pub const NO_SIGNAL_FG: [u8; 3] = [255, 255, 255];

/// Paints the NO SIGNAL screen into `frame` (resized to `size`, buffer reused).
pub fn draw_no_signal(
    frame: &mut Frame,
    size: (u32, u32),
    label: &str,
    attempts: u32,
    lost_at: Option<Instant>,
) {
    let (w, h) = size;
    frame.width = w;
    frame.height = h;
    frame.rgb.resize(w as usize * h as usize * 3, 0);
    for px in frame.rgb.chunks_exact_mut(3) {
        px.copy_from_slice(&NO_SIGNAL_BG);
    }
    // The title is the font's glyphs scaled up to about half the width.
    let scale = (w / 2 / (9 * 10)).clamp(1, 8);
    let white = MonoTextStyle::new(&FONT_10X20, Rgb888::new(255, 255, 255));
    let mut big = Canvas { frame, scale };
    let centre = Point::new((w / 2 / scale) as i32, (h / 2 / scale) as i32);
    // Drawing into an in-memory frame cannot fail (Infallible).
    let _ = Text::with_alignment("NO SIGNAL", centre, white, Alignment::Center).draw(&mut big);
    let secs = lost_at.map_or(0, |t| t.elapsed().as_secs());
    let detail = format!("{label} - retry {attempts}, {secs} s");
    let mut small = Canvas { frame, scale: 1 };
    let y = (h / 2 + 20 * scale) as i32 + 10;
    let _ = Text::with_alignment(
        &detail,
        Point::new((w / 2) as i32, y),
        MonoTextStyle::new(&FONT_10X20, Rgb888::new(200, 200, 200)),
        Alignment::Center,
    )
    .draw(&mut small);
}

/// Draws into a frame with each drawn pixel a `scale` x `scale` block.
struct Canvas<'a> {
    frame: &'a mut Frame,
    scale: u32,
}

impl OriginDimensions for Canvas<'_> {
    fn size(&self) -> Size {
        Size::new(
            self.frame.width / self.scale,
            self.frame.height / self.scale,
        )
    }
}

impl DrawTarget for Canvas<'_> {
    type Color = Rgb888;
    type Error = std::convert::Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> std::result::Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        let (w, h, k) = (self.frame.width, self.frame.height, self.scale);
        for Pixel(p, c) in pixels {
            if p.x < 0 || p.y < 0 {
                continue;
            }
            let (x0, y0) = (p.x as u32 * k, p.y as u32 * k);
            for y in y0..(y0 + k).min(h) {
                for x in x0..(x0 + k).min(w) {
                    let i = (y as usize * w as usize + x as usize) * 3;
                    self.frame.rgb[i..i + 3].copy_from_slice(&[c.r(), c.g(), c.b()]);
                }
            }
        }
        Ok(())
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

    fn is_no_signal(f: &Frame) -> bool {
        f.pixel(0, 0) == NO_SIGNAL_BG && f.rgb.chunks_exact(3).any(|p| p == NO_SIGNAL_FG)
    }

    #[test]
    fn loss_shows_no_signal_then_resumes_with_continuous_ids() {
        let alive = Arc::new(AtomicBool::new(true));
        let opens = Arc::new(AtomicU32::new(0));
        let mut r = Reconnecting::new("cam", opener(alive.clone(), opens.clone()), (1, 1), 25.0);
        let status = r.status();
        let mut f = Frame::new(1, 1);
        assert!(r.next_frame(&mut f).unwrap());
        assert_eq!((f.id, f.pixel(0, 0)), (0, [200, 200, 200]));
        assert_eq!(r.size(), (200, 100));
        alive.store(false, Ordering::SeqCst);
        assert!(r.next_frame(&mut f).unwrap());
        assert!(is_no_signal(&f));
        assert_eq!((f.id, f.width, f.height), (1, 200, 100));
        assert!(!status.lock().unwrap().live);
        // While gone, retries back off: over ~0.5 s only a few attempts.
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(500) {
            r.next_frame(&mut f).unwrap();
            assert!(is_no_signal(&f));
        }
        let tries = opens.load(Ordering::SeqCst);
        assert!((2..=6).contains(&tries), "{tries} opens in 0.5 s");
        assert!(status.lock().unwrap().no_signal_frames >= 10);
        alive.store(true, Ordering::SeqCst);
        let t0 = Instant::now();
        loop {
            r.next_frame(&mut f).unwrap();
            if !is_no_signal(&f) {
                break;
            }
            assert!(t0.elapsed() < BACKOFF_MAX + Duration::from_millis(500));
        }
        assert_eq!(f.pixel(0, 0), [200, 200, 200]);
        let s = status.lock().unwrap().clone();
        assert!(s.live && s.reconnects == 1, "{s:?}");
        assert!(f.id > 10);
    }

    #[test]
    fn reporting_loss_gives_errors_then_frames_again() {
        let alive = Arc::new(AtomicBool::new(true));
        let opens = Arc::new(AtomicU32::new(0));
        let mut r = Reconnecting::new("cam", opener(alive.clone(), opens.clone()), (1, 1), 25.0)
            .reporting_loss();
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
            assert!(t0.elapsed() < BACKOFF_MAX + Duration::from_millis(500));
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(f.pixel(0, 0), [200, 200, 200]);
        assert_eq!(r.status().lock().unwrap().reconnects, 1);
    }

    #[test]
    fn starts_in_no_signal_when_the_device_is_missing() {
        let alive = Arc::new(AtomicBool::new(false));
        let opens = Arc::new(AtomicU32::new(0));
        let mut r = Reconnecting::new("cam", opener(alive.clone(), opens), (320, 240), 50.0);
        let mut f = Frame::new(1, 1);
        r.next_frame(&mut f).unwrap();
        assert!(is_no_signal(&f));
        assert_eq!((f.width, f.height), (320, 240));
        // Paced at the configured rate (50 fps: 20 ms apart).
        let t0 = Instant::now();
        for _ in 0..5 {
            r.next_frame(&mut f).unwrap();
        }
        assert!(
            t0.elapsed() >= Duration::from_millis(90),
            "{:?}",
            t0.elapsed()
        );
    }
}
