//! DRM/KMS display (`/dev/dri/cardN`): for kiosk carts without fbdev.
//!
//! Two XRGB8888 dumb buffers are scanned out in turn: a frame is drawn
//! into the hidden one, then a page flip shows it at the next vblank, and
//! the sink waits for the flip's event before drawing into the other. The
//! connector is the one the config names (`display =
//! "/dev/dri/card0:HDMI-A-1"`) or the first connected one; its preferred
//! mode is used. On drop the CRTC gets back what it showed before (the
//! console), and the buffers are freed.
//!
//! The `drm` crate does the ioctls; the only `unsafe` here is mapping the
//! dumb buffers, whose offsets the kernel gives.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ::drm::buffer::{Buffer as _, DrmFourcc};
use ::drm::control::{
    connector, crtc, dumbbuffer::DumbBuffer, framebuffer, Device as ControlDevice, Event, Mode,
    ModeTypeFlags, PageFlipFlags,
};
use ::drm::Device;
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;
use memmap2::{MmapMut, MmapOptions};

use crate::frame::Frame;
use crate::sink::display::panel::{read_back, PanelFormat, RgbTarget, Scaler};
use crate::sink::Sink;
use crate::{Error, Result};

/// The DRM device file, with the traits the `drm` crate needs.
struct Card(File);

impl AsFd for Card {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
impl Device for Card {}
impl ControlDevice for Card {}

/// One scan-out buffer: the kernel object, its framebuffer and our mapping.
struct ScanBuffer {
    db: DumbBuffer,
    fb: framebuffer::Handle,
    map: MmapMut,
    cleared: bool,
}

/// The name the kernel and `modetest` use for a connector (`HDMI-A-1`).
fn connector_name(info: &connector::Info) -> String {
    format!("{}-{}", info.interface().as_str(), info.interface_id())
}

/// A KMS output as a [`Sink`].
pub struct DrmSink {
    path: PathBuf,
    card: Card,
    crtc: crtc::Handle,
    connector: String,
    saved: Option<crtc::Info>,
    conn_handle: connector::Handle,
    mode: Mode,
    bufs: Vec<ScanBuffer>,
    shown: usize,
    flip_pending: bool,
    scaler: Scaler,
    frames: u64,
}

impl DrmSink {
    /// Opens `spec` (`/dev/dri/card0` or `/dev/dri/card0:CONNECTOR`), picks
    /// the connector, CRTC and preferred mode, allocates two buffers and
    /// shows the first (black).
    pub fn open(spec: &Path) -> Result<Self> {
        let text = spec.to_string_lossy();
        let (path, want) = match text.rsplit_once(':') {
            Some((p, c)) if !c.contains('/') => (PathBuf::from(p), Some(c.to_string())),
            _ => (spec.to_path_buf(), None),
        };
        let name = path.display().to_string();
        let err = |reason: String| Error::Sink {
            sink: name.clone(),
            reason,
        };
        let io = |what: &str, e: std::io::Error| err(format!("{what}: {e}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| {
                io(
                    "cannot open the DRM device (check ls /dev/dri, group video)",
                    e,
                )
            })?;
        let card = Card(file);
        if let Err(e) = card.acquire_master_lock() {
            // Already master as first opener, or another client (a desktop)
            // holds it: then the mode set below fails with a clear error.
            log::debug!("{name}: DRM master: {e}");
        }
        let res = card
            .resource_handles()
            .map_err(|e| io("not a KMS device (no mode-setting resources)", e))?;
        let mut found = Vec::new();
        let mut chosen = None;
        for &h in res.connectors() {
            let info = card
                .get_connector(h, true)
                .map_err(|e| io("reading a connector", e))?;
            let cname = connector_name(&info);
            let connected = info.state() == connector::State::Connected;
            found.push(format!(
                "{cname}{}",
                if connected { "" } else { " (disconnected)" }
            ));
            let matches = match &want {
                Some(w) => cname.eq_ignore_ascii_case(w),
                None => connected,
            };
            if matches && chosen.is_none() && !info.modes().is_empty() {
                chosen = Some(info);
            }
        }
        let conn = chosen.ok_or_else(|| {
            err(format!(
                "no {} connector with modes (found: {}); fix: plug the panel in, or name a \
                 connector as display = \"{name}:NAME\"",
                want.as_deref().unwrap_or("connected"),
                found.join(", ")
            ))
        })?;
        let mode = conn
            .modes()
            .iter()
            .find(|m| m.mode_type().contains(ModeTypeFlags::PREFERRED))
            .or_else(|| conn.modes().first())
            .copied()
            .ok_or_else(|| err("the connector has no modes".into()))?;
        // The CRTC: the one the connector's encoder drives now, else the
        // first the encoder can drive.
        let mut crtc_handle = None;
        for &eh in conn.current_encoder().iter().chain(conn.encoders()) {
            let enc = card
                .get_encoder(eh)
                .map_err(|e| io("reading an encoder", e))?;
            crtc_handle = enc
                .crtc()
                .or_else(|| res.filter_crtcs(enc.possible_crtcs()).first().copied());
            if crtc_handle.is_some() {
                break;
            }
        }
        let crtc = crtc_handle.ok_or_else(|| err("no CRTC can drive the connector".into()))?;
        let saved = card.get_crtc(crtc).ok();
        let (w, h) = mode.size();
        let mut sink = DrmSink {
            path,
            connector: connector_name(&conn),
            conn_handle: conn.handle(),
            card,
            crtc,
            saved,
            mode,
            bufs: Vec::with_capacity(2),
            shown: 0,
            flip_pending: false,
            scaler: Scaler::default(),
            frames: 0,
        };
        for _ in 0..2 {
            let b = sink.new_buffer(u32::from(w), u32::from(h))?;
            sink.bufs.push(b);
        }
        sink.clear(0)?;
        let fb = sink.bufs[0].fb;
        sink.card
            .set_crtc(crtc, Some(fb), (0, 0), &[sink.conn_handle], Some(mode))
            .map_err(|e| {
                io(
                    "setting the mode (another program, e.g. a desktop, may own the display)",
                    e,
                )
            })?;
        log::info!(
            "{}: connector {} {}x{}@{} XRGB8888, page-flipped",
            sink.path.display(),
            sink.connector,
            w,
            h,
            mode.vrefresh()
        );
        Ok(sink)
    }

    fn new_buffer(&self, w: u32, h: u32) -> Result<ScanBuffer> {
        let err = |what: &str, e: std::io::Error| Error::Sink {
            sink: self.path.display().to_string(),
            reason: format!("{what}: {e}"),
        };
        let db = self
            .card
            .create_dumb_buffer((w, h), DrmFourcc::Xrgb8888, 32)
            .map_err(|e| err("creating a dumb buffer", e))?;
        let fb = self
            .card
            .add_framebuffer(&db, 24, 32)
            .map_err(|e| err("adding a framebuffer", e))?;
        let info = ::drm_ffi::mode::dumbbuffer::map(self.card.as_fd(), db.handle().into(), 0, 0)
            .map_err(|e| err("preparing the buffer's mapping", e))?;
        let len = db.pitch() as usize * h as usize;
        // SAFETY: offset and size are the kernel's for this dumb buffer;
        // the mapping is dropped before the buffer is destroyed (Drop).
        let map = unsafe {
            MmapOptions::new()
                .offset(info.offset)
                .len(len)
                .map_mut(&self.card.0)
        }
        .map_err(|e| err("mapping a dumb buffer", e))?;
        Ok(ScanBuffer {
            db,
            fb,
            map,
            cleared: false,
        })
    }

    fn view(&mut self, i: usize) -> Result<RgbTarget<'_>> {
        let (w, h) = self.mode.size();
        let b = &mut self.bufs[i];
        let pitch = b.db.pitch() as usize;
        RgbTarget::with_format(
            &mut b.map[..],
            u32::from(w),
            u32::from(h),
            pitch,
            PanelFormat::XRGB8888,
        )
    }

    fn clear(&mut self, i: usize) -> Result<()> {
        let mut v = self.view(i)?;
        let all = Rectangle::new(Point::zero(), v.size());
        let _ = v.fill_solid(&all, Rgb888::BLACK);
        self.bufs[i].cleared = true;
        Ok(())
    }

    /// Waits for the pending flip's event (bounded, so a driver that never
    /// sends one cannot hang the compositor).
    fn wait_flip(&mut self) -> Result<()> {
        if !self.flip_pending {
            return Ok(());
        }
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&self.card.0),
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout = Duration::from_millis(500);
        // SAFETY: one valid pollfd for the call's duration.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
        if r > 0 {
            let events = self.card.receive_events().map_err(|e| Error::Sink {
                sink: self.name(),
                reason: format!("reading DRM events: {e}"),
            })?;
            for ev in events {
                if let Event::PageFlip(_) = ev {
                    self.flip_pending = false;
                }
            }
        }
        if self.flip_pending {
            log::warn!("{}: no page-flip event within {timeout:?}", self.name());
            self.flip_pending = false;
        }
        Ok(())
    }

    /// Mode size and the connector's name.
    pub fn geometry(&self) -> (u32, u32, String) {
        let (w, h) = self.mode.size();
        (u32::from(w), u32::from(h), self.connector.clone())
    }

    /// The colour now scanned out at (x, y), read back from the shown buffer.
    pub fn shown_pixel(&mut self, x: u32, y: u32) -> Result<[u8; 3]> {
        let shown = self.shown;
        read_back(&self.view(shown)?, x, y)
    }

    /// Frames shown so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }
}

impl Sink for DrmSink {
    fn name(&self) -> String {
        format!("drm {} {}", self.path.display(), self.connector)
    }

    fn write(&mut self, frame: &Frame) -> Result<()> {
        self.wait_flip()?;
        let target = 1 - self.shown;
        let (w, h) = self.mode.size();
        if self.scaler.prepare(frame, u32::from(w), u32::from(h)) {
            for b in &mut self.bufs {
                b.cleared = false;
            }
        }
        if !self.bufs[target].cleared {
            self.clear(target)?;
        }
        let scaler = std::mem::take(&mut self.scaler);
        let drawn = self.view(target).map(|mut v| scaler.blit(frame, &mut v));
        self.scaler = scaler;
        drawn?;
        let fb = self.bufs[target].fb;
        match self
            .card
            .page_flip(self.crtc, fb, PageFlipFlags::EVENT, None)
        {
            Ok(()) => self.flip_pending = true,
            // Drivers without flips: set the CRTC (may tear, still works).
            Err(e) => {
                log::debug!("{}: page flip: {e}; using set_crtc", self.name());
                self.card
                    .set_crtc(
                        self.crtc,
                        Some(fb),
                        (0, 0),
                        &[self.conn_handle],
                        Some(self.mode),
                    )
                    .map_err(|e| Error::Sink {
                        sink: self.name(),
                        reason: format!("showing a frame: {e}"),
                    })?;
            }
        }
        self.shown = target;
        self.frames += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.wait_flip()
    }
}

impl Drop for DrmSink {
    fn drop(&mut self) {
        let _ = self.wait_flip();
        if let Some(s) = &self.saved {
            let conns = [self.conn_handle];
            let restore = self.card.set_crtc(
                self.crtc,
                s.framebuffer(),
                s.position(),
                if s.mode().is_some() { &conns } else { &[] },
                s.mode(),
            );
            if let Err(e) = restore {
                log::debug!("{}: restoring the CRTC: {e}", self.path.display());
            }
        }
        for b in self.bufs.drain(..) {
            drop(b.map);
            let _ = self.card.destroy_framebuffer(b.fb);
            let _ = self.card.destroy_dumb_buffer(b.db);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_devices_are_clear_errors() {
        let e = DrmSink::open(Path::new("/dev/dri/none"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("/dev/dri/none") && e.contains("cannot open"),
            "{e}"
        );
        let e = DrmSink::open(Path::new("/dev/null:HDMI-A-1"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("/dev/null") && e.contains("not a KMS device"),
            "{e}"
        );
    }
}
