//! Linux framebuffer display (`/dev/fbN`), for carts whose panel has no
//! desktop.
//!
//! The geometry, line length and pixel layout come from the device (the
//! panel decides, not the config). The composited frame is scaled to fit
//! with its aspect kept and black bars around it. Where the driver can pan
//! over a virtual area twice the panel's height, frames are drawn into the
//! hidden half and shown by panning, so the panel never shows a half-drawn
//! frame; otherwise they are drawn in place.
//!
//! While the sink is open the console is switched to graphics mode
//! (`KDSETMODE`), so the kernel's text console does not draw its cursor
//! over the video; it is switched back on drop.
//!
//! The ioctls go through the crate's one `sys::xioctl`, typed by request;
//! the rest of the framebuffer path's `unsafe` (the mapping, the console's
//! `KDSETMODE`, which takes its argument by value) is in this file.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;
use memmap2::{MmapMut, MmapOptions};

use crate::frame::Frame;
use crate::sink::display::panel::{read_back, Channel, PanelFormat, RgbTarget, Scaler};
use crate::sink::Sink;
use crate::sys::{xioctl, Ioctl, IOC_WRITE};
use crate::{Error, Result};

// ---- Kernel UAPI (linux/fb.h). ----

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
struct Bitfield {
    offset: u32,
    length: u32,
    msb_right: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
struct VarScreenInfo {
    xres: u32,
    yres: u32,
    xres_virtual: u32,
    yres_virtual: u32,
    xoffset: u32,
    yoffset: u32,
    bits_per_pixel: u32,
    grayscale: u32,
    red: Bitfield,
    green: Bitfield,
    blue: Bitfield,
    transp: Bitfield,
    nonstd: u32,
    activate: u32,
    height: u32,
    width: u32,
    accel_flags: u32,
    timing: [u32; 7],
    sync: u32,
    vmode: u32,
    rotate: u32,
    colorspace: u32,
    reserved: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
struct FixScreenInfo {
    id: [u8; 16],
    smem_start: libc::c_ulong,
    smem_len: u32,
    type_: u32,
    type_aux: u32,
    visual: u32,
    xpanstep: u16,
    ypanstep: u16,
    ywrapstep: u16,
    line_length: u32,
    mmio_start: libc::c_ulong,
    mmio_len: u32,
    accel: u32,
    capabilities: u16,
    reserved: [u16; 2],
}

const _: () = assert!(std::mem::size_of::<VarScreenInfo>() == 160);
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<FixScreenInfo>() == 80);

// The framebuffer's requests predate sizes in ioctl codes. linux/fb.h
// defines each with a struct fb_var_screeninfo or fb_fix_screeninfo,
// whose layouts the structs above have (sizes asserted above, offsets in
// the tests).
// SAFETY: FBIOGET_VSCREENINFO writes one fb_var_screeninfo.
const FBIOGET_VSCREENINFO: Ioctl<VarScreenInfo> = unsafe { Ioctl::unchecked(0x4600) };
// SAFETY: FBIOPUT_VSCREENINFO reads and writes one fb_var_screeninfo.
const FBIOPUT_VSCREENINFO: Ioctl<VarScreenInfo> = unsafe { Ioctl::unchecked(0x4601) };
// SAFETY: FBIOGET_FSCREENINFO writes one fb_fix_screeninfo.
const FBIOGET_FSCREENINFO: Ioctl<FixScreenInfo> = unsafe { Ioctl::unchecked(0x4602) };
// SAFETY: FBIOPAN_DISPLAY reads one fb_var_screeninfo.
const FBIOPAN_DISPLAY: Ioctl<VarScreenInfo> = unsafe { Ioctl::unchecked(0x4606) };
const FBIO_WAITFORVSYNC: Ioctl<u32> = Ioctl::sized(IOC_WRITE, b'F', 0x20);
const _: () = assert!(FBIO_WAITFORVSYNC.code() == 0x4004_4620);
const FB_TYPE_PACKED_PIXELS: u32 = 0;
const FB_VISUAL_TRUECOLOR: u32 = 2;
const FB_VISUAL_DIRECTCOLOR: u32 = 4;
const KDSETMODE: u64 = 0x4B3A;
const KD_TEXT: libc::c_int = 0;
const KD_GRAPHICS: libc::c_int = 1;

fn get_var(file: &File) -> std::io::Result<VarScreenInfo> {
    let mut var = VarScreenInfo::default();
    xioctl(file, FBIOGET_VSCREENINFO, &mut var)?;
    Ok(var)
}

fn get_fix(file: &File) -> std::io::Result<FixScreenInfo> {
    let mut fix = FixScreenInfo::default();
    xioctl(file, FBIOGET_FSCREENINFO, &mut fix)?;
    Ok(fix)
}

fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::Sink {
            sink: path.display().to_string(),
            reason: format!("cannot open the framebuffer ({e}); fix: check the path (ls /dev/fb*) and that the user is in group video"),
        })
}

/// Sets the framebuffer's depth (16 or 32 bpp), keeping its resolution:
/// what `fbset -depth` does, for boards whose boot depth is wrong.
pub fn set_depth(path: &Path, bits_per_pixel: u32) -> Result<()> {
    let file = open_rw(path)?;
    let err = |e: std::io::Error| Error::Sink {
        sink: path.display().to_string(),
        reason: format!("setting {bits_per_pixel} bpp: {e}"),
    };
    let mut var = get_var(&file).map_err(err)?;
    var.bits_per_pixel = bits_per_pixel;
    var.xoffset = 0;
    var.yoffset = 0;
    xioctl(&file, FBIOPUT_VSCREENINFO, &mut var).map_err(err)?;
    let now = get_var(&file).map_err(err)?;
    if now.bits_per_pixel != bits_per_pixel {
        return Err(Error::Sink {
            sink: path.display().to_string(),
            reason: format!("the driver kept {} bpp", now.bits_per_pixel),
        });
    }
    Ok(())
}

/// A framebuffer panel as a [`Sink`].
pub struct FbSink {
    path: PathBuf,
    file: File,
    map: MmapMut,
    var: VarScreenInfo,
    format: PanelFormat,
    width: u32,
    height: u32,
    stride: usize,
    pages: u32,
    shown: u32,
    scaler: Scaler,
    cleared: [bool; 2],
    tty: Option<File>,
    frames: u64,
}

impl FbSink {
    /// Opens the device, reads its geometry and format, enables panning
    /// double-buffering where the driver allows, and maps the memory.
    pub fn open(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        let err = |reason: String| Error::Sink {
            sink: name.clone(),
            reason,
        };
        let file = open_rw(path)?;
        let mut var = get_var(&file)
            .map_err(|e| err(format!("not a framebuffer (FBIOGET_VSCREENINFO: {e})")))?;
        let mut fix = get_fix(&file).map_err(|e| err(format!("FBIOGET_FSCREENINFO: {e}")))?;
        if !is_truecolour(&fix, &var) {
            // A palette mode (e.g. 8 bpp at boot): the sink owns the panel,
            // so switch it to a true-colour depth rather than refuse.
            for bpp in [32, 16] {
                if set_depth(path, bpp).is_ok() {
                    log::warn!(
                        "{name}: was {} bpp (not true colour); switched to {bpp} bpp",
                        var.bits_per_pixel
                    );
                    break;
                }
            }
            var = get_var(&file).map_err(|e| err(format!("FBIOGET_VSCREENINFO: {e}")))?;
            fix = get_fix(&file).map_err(|e| err(format!("FBIOGET_FSCREENINFO: {e}")))?;
        }
        if !is_truecolour(&fix, &var) {
            return Err(err(format!(
                "type {} visual {} is not packed true colour; fix: set 16 or 32 bpp (fbset -depth 32)",
                fix.type_, fix.visual
            )));
        }
        let ch = |b: Bitfield| Channel {
            offset: b.offset,
            length: b.length,
        };
        let format = PanelFormat::new(var.bits_per_pixel, ch(var.red), ch(var.green), ch(var.blue))
            .map_err(|e| err(e.to_string()))?;

        // Double buffering: ask for a virtual area two screens high.
        let mut pages = 1;
        if fix.ypanstep > 0 || fix.ywrapstep > 0 {
            if var.yres_virtual < 2 * var.yres {
                let mut want = var;
                want.yres_virtual = 2 * var.yres;
                want.xoffset = 0;
                want.yoffset = 0;
                if xioctl(&file, FBIOPUT_VSCREENINFO, &mut want).is_ok() {
                    var = get_var(&file).map_err(|e| err(format!("FBIOGET_VSCREENINFO: {e}")))?;
                }
            }
            if var.yres_virtual >= 2 * var.yres {
                pages = 2;
            }
        }
        // The line length can change with the mode; read it again.
        let fix = get_fix(&file).map_err(|e| err(format!("FBIOGET_FSCREENINFO: {e}")))?;
        let stride = fix.line_length as usize;
        let len = stride * (var.yres * pages) as usize;
        if len == 0 || len > fix.smem_len as usize {
            return Err(err(format!(
                "{}x{} with line length {stride} does not fit in {} bytes of video memory",
                var.xres, var.yres, fix.smem_len
            )));
        }
        // SAFETY: a shared read-write mapping of `len` bytes of the
        // framebuffer, which the driver reports as at least `smem_len`; the
        // mapping lives in `self` and is only accessed through slices of it.
        let map = unsafe { MmapOptions::new().len(len).map_mut(&file) }
            .map_err(|e| err(format!("mapping video memory: {e}")))?;
        let tty = graphics_console();
        let id = String::from_utf8_lossy(&fix.id)
            .trim_end_matches('\0')
            .to_string();
        log::info!(
            "{name}: {id:?} {}x{} {} line {stride} B, {}",
            var.xres,
            var.yres,
            format.describe(),
            if pages == 2 {
                "pan double-buffered"
            } else {
                "single buffer"
            }
        );
        let mut sink = FbSink {
            path: path.to_path_buf(),
            file,
            map,
            var,
            format,
            width: var.xres,
            height: var.yres,
            stride,
            pages,
            shown: 0,
            scaler: Scaler::default(),
            cleared: [false; 2],
            tty,
            frames: 0,
        };
        if pages == 2 {
            // Start from a known page (the console may have panned).
            sink.pan(0)?;
        }
        Ok(sink)
    }

    /// Panel width, height, and pixel layout.
    pub fn geometry(&self) -> (u32, u32, PanelFormat) {
        (self.width, self.height, self.format)
    }

    /// True when frames are shown by panning between two pages.
    pub fn double_buffered(&self) -> bool {
        self.pages == 2
    }

    /// Frames shown so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    fn page(&mut self, page: u32) -> Result<RgbTarget<'_>> {
        let bytes = self.stride * self.height as usize;
        let start = bytes * page as usize;
        RgbTarget::with_format(
            &mut self.map[start..start + bytes],
            self.width,
            self.height,
            self.stride,
            self.format,
        )
    }

    /// The colour now on screen at (x, y), read back from the shown page.
    pub fn shown_pixel(&mut self, x: u32, y: u32) -> Result<[u8; 3]> {
        let shown = self.shown;
        read_back(&self.page(shown)?, x, y)
    }

    fn pan(&mut self, page: u32) -> Result<()> {
        let mut var = self.var;
        var.xoffset = 0;
        var.yoffset = page * self.height;
        xioctl(&self.file, FBIOPAN_DISPLAY, &mut var).map_err(|e| Error::Sink {
            sink: self.path.display().to_string(),
            reason: format!("FBIOPAN_DISPLAY: {e}"),
        })?;
        self.shown = page;
        Ok(())
    }
}

fn is_truecolour(fix: &FixScreenInfo, var: &VarScreenInfo) -> bool {
    fix.type_ == FB_TYPE_PACKED_PIXELS
        && matches!(fix.visual, FB_VISUAL_TRUECOLOR | FB_VISUAL_DIRECTCOLOR)
        && matches!(var.bits_per_pixel, 16 | 24 | 32)
}

/// Switches the active console to graphics mode so the text console stops
/// drawing (cursor blink) over the video. Best effort: absent on headless
/// setups or without permission.
fn graphics_console() -> Option<File> {
    let tty = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty0")
        .ok()?;
    // SAFETY: KDSETMODE takes an int by value; the fd is open.
    let r = unsafe { libc::ioctl(tty.as_raw_fd(), KDSETMODE as _, KD_GRAPHICS) };
    if r == -1 {
        log::debug!("KDSETMODE graphics: {}", std::io::Error::last_os_error());
        return None;
    }
    Some(tty)
}

impl Sink for FbSink {
    fn name(&self) -> String {
        format!("framebuffer {}", self.path.display())
    }

    fn write(&mut self, frame: &Frame) -> Result<()> {
        let target = if self.pages == 2 { 1 - self.shown } else { 0 };
        if self.scaler.prepare(frame, self.width, self.height) {
            self.cleared = [false; 2];
        }
        let mut scaler = std::mem::take(&mut self.scaler);
        let clear = !self.cleared[target as usize];
        let drawn = self.page(target).map(|mut view| {
            if clear {
                let all = Rectangle::new(Point::zero(), view.size());
                let _ = view.fill_solid(&all, Rgb888::BLACK);
            }
            scaler.blit(frame, &mut view);
        });
        std::mem::swap(&mut self.scaler, &mut scaler);
        drawn?;
        self.cleared[target as usize] = true;
        if self.pages == 2 {
            self.pan(target)?;
            // Not every driver has vsync; panning alone is still tear-free
            // on those that latch the offset at vblank.
            let mut crtc: u32 = 0;
            let _ = xioctl(&self.file, FBIO_WAITFORVSYNC, &mut crtc);
        }
        self.frames += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.map.flush().map_err(|e| Error::Sink {
            sink: self.name(),
            reason: format!("flushing video memory: {e}"),
        })
    }
}

impl Drop for FbSink {
    fn drop(&mut self) {
        if let Some(tty) = &self.tty {
            // SAFETY: as in graphics_console; restores text mode.
            unsafe { libc::ioctl(tty.as_raw_fd(), KDSETMODE as _, KD_TEXT) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_a_framebuffer_is_a_clear_error() {
        let e = FbSink::open(Path::new("/dev/null"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not a framebuffer"), "{e}");
        let e = FbSink::open(Path::new("/dev/fb-none"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("/dev/fb-none") && e.contains("fix"), "{e}");
    }

    #[test]
    fn uapi_layout() {
        assert_eq!(std::mem::offset_of!(FixScreenInfo, smem_len), 24);
        assert_eq!(std::mem::offset_of!(FixScreenInfo, visual), 36);
        assert_eq!(std::mem::offset_of!(FixScreenInfo, ypanstep), 42);
        assert_eq!(std::mem::offset_of!(FixScreenInfo, line_length), 48);
        assert_eq!(std::mem::offset_of!(VarScreenInfo, bits_per_pixel), 24);
        assert_eq!(std::mem::offset_of!(VarScreenInfo, red), 32);
    }
}
