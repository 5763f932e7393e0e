//! V4L2 capture: a scanner's video through a USB (UVC) grabber or an HDMI
//! capture card.
//!
//! Why our own few ioctls rather than the `v4l` crate: its streams panic in
//! `Drop` on errors other than ENODEV and block in `next()` without a way to
//! tell a dead device from a slow one. A cart's grabber gets unplugged; the
//! runtime must notice within a timeout, release every buffer and try again
//! ([`crate::source::reconnect`]). The ioctl structures are the kernel's stable
//! UAPI (checked against `<linux/videodev2.h>` by size assertions below).
//!
//! Streaming uses a small queue of mmap buffers. Each [`V4l2Source::next_frame`]
//! waits (poll, with a timeout) for a frame, then dequeues every filled
//! buffer and keeps only the newest: stale frames are given back unconverted
//! and counted, so the pipeline always sees what the scanner shows now.
//!
//! The ioctls go through the crate's one `sys::xioctl`, typed by request;
//! the rest of the capture path's `unsafe` (the mapping of the driver's
//! buffers, poll, the clock) is in this file.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use memmap2::{Mmap, MmapOptions};

use crate::config::CaptureConfig;
use crate::frame::Frame;
use crate::sink::record::SharedRecorder;
use crate::source::pixfmt::{fourcc_name, Converter, PixelFormat};
use crate::source::FrameSource;
use crate::sys::{xioctl, zeroed, Ioctl, IoctlArg, IOC_READ, IOC_WRITE};
use crate::{Error, Result};

// ---- Kernel UAPI (linux/videodev2.h), x86_64 and aarch64 layouts. ----

const BUF_TYPE_VIDEO_CAPTURE: u32 = 1;
const MEMORY_MMAP: u32 = 1;
const FIELD_NONE: u32 = 1;
const CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
const CAP_STREAMING: u32 = 0x0400_0000;
const CAP_DEVICE_CAPS: u32 = 0x8000_0000;
const CAP_TIMEPERFRAME: u32 = 0x1000;
const BUF_FLAG_ERROR: u32 = 0x0040;
const BUF_FLAG_TIMESTAMP_MASK: u32 = 0xe000;
const BUF_FLAG_TIMESTAMP_MONOTONIC: u32 = 0x2000;

#[repr(C)]
#[derive(Clone, Copy)]
struct Capability {
    driver: [u8; 16],
    card: [u8; 32],
    bus_info: [u8; 32],
    version: u32,
    capabilities: u32,
    device_caps: u32,
    reserved: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PixFormat {
    width: u32,
    height: u32,
    pixelformat: u32,
    field: u32,
    bytesperline: u32,
    sizeimage: u32,
    colorspace: u32,
    priv_: u32,
    flags: u32,
    ycbcr_enc: u32,
    quantization: u32,
    xfer_func: u32,
}

/// `struct v4l2_format`: the union is 200 bytes and 8-aligned (it holds
/// pointers in other members), hence the padding after `type_`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Format {
    type_: u32,
    _pad: u32,
    pix: PixFormat,
    _rest: [u8; 200 - 48],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct RequestBuffers {
    count: u32,
    type_: u32,
    memory: u32,
    capabilities: u32,
    flags: u8,
    reserved: [u8; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Timecode {
    type_: u32,
    flags: u32,
    frames: u8,
    seconds: u8,
    minutes: u8,
    hours: u8,
    userbits: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Buffer {
    index: u32,
    type_: u32,
    bytesused: u32,
    flags: u32,
    field: u32,
    timestamp: libc::timeval,
    timecode: Timecode,
    sequence: u32,
    memory: u32,
    /// `m.offset` for mmap buffers (a union with a pointer: 8 bytes).
    m_offset: u64,
    length: u32,
    reserved2: u32,
    request_fd: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Fract {
    numerator: u32,
    denominator: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct StreamParm {
    type_: u32,
    capability: u32,
    capturemode: u32,
    timeperframe: Fract,
    extendedmode: u32,
    readbuffers: u32,
    reserved: [u32; 4],
    _rest: [u8; 200 - 40],
}

const _: () = assert!(std::mem::size_of::<Capability>() == 104);
const _: () = assert!(std::mem::size_of::<Format>() == 208);
const _: () = assert!(std::mem::size_of::<RequestBuffers>() == 20);
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Buffer>() == 88);
const _: () = assert!(std::mem::size_of::<StreamParm>() == 204);

const RW: u64 = IOC_READ | IOC_WRITE;
const VIDIOC_QUERYCAP: Ioctl<Capability> = Ioctl::sized(IOC_READ, b'V', 0);
const VIDIOC_S_FMT: Ioctl<Format> = Ioctl::sized(RW, b'V', 5);
const VIDIOC_REQBUFS: Ioctl<RequestBuffers> = Ioctl::sized(RW, b'V', 8);
const VIDIOC_QUERYBUF: Ioctl<Buffer> = Ioctl::sized(RW, b'V', 9);
const VIDIOC_QBUF: Ioctl<Buffer> = Ioctl::sized(RW, b'V', 15);
const VIDIOC_DQBUF: Ioctl<Buffer> = Ioctl::sized(RW, b'V', 17);
const VIDIOC_STREAMON: Ioctl<i32> = Ioctl::sized(IOC_WRITE, b'V', 18);
const VIDIOC_STREAMOFF: Ioctl<i32> = Ioctl::sized(IOC_WRITE, b'V', 19);
const VIDIOC_G_PARM: Ioctl<StreamParm> = Ioctl::sized(RW, b'V', 21);
const VIDIOC_S_PARM: Ioctl<StreamParm> = Ioctl::sized(RW, b'V', 22);
const _: () = assert!(VIDIOC_S_FMT.code() == 0xc0d0_5605 && VIDIOC_DQBUF.code() == 0xc058_5611);

// SAFETY (the five impls): each is a `#[repr(C)]` copy of its UAPI struct
// made of integers and integer arrays, for which all-zero bytes are valid;
// the only pointers the kernel could follow are `v4l2_buffer.m.userptr` /
// `m.planes`, unused with the MMAP, single-planar buffers this module asks
// for (`V4L2_MEMORY_MMAP`, `V4L2_BUF_TYPE_VIDEO_CAPTURE`).
unsafe impl IoctlArg for Capability {}
// SAFETY: see above.
unsafe impl IoctlArg for Format {}
// SAFETY: see above.
unsafe impl IoctlArg for RequestBuffers {}
// SAFETY: see above.
unsafe impl IoctlArg for Buffer {}
// SAFETY: see above.
unsafe impl IoctlArg for StreamParm {}

fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// What a device says about itself.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// Device node.
    pub path: PathBuf,
    /// Driver name (`"vivid"`, `"uvcvideo"`).
    pub driver: String,
    /// Card name (`"USB Video: USB Video"`).
    pub card: String,
    /// True when it can capture single-planar video by streaming.
    pub can_capture: bool,
}

fn query(file: &File, path: &Path) -> std::io::Result<DeviceInfo> {
    let mut cap: Capability = zeroed();
    xioctl(file, VIDIOC_QUERYCAP, &mut cap)?;
    let caps = if cap.capabilities & CAP_DEVICE_CAPS != 0 {
        cap.device_caps
    } else {
        cap.capabilities
    };
    Ok(DeviceInfo {
        path: path.to_path_buf(),
        driver: cstr(&cap.driver),
        card: cstr(&cap.card),
        can_capture: caps & CAP_VIDEO_CAPTURE != 0 && caps & CAP_STREAMING != 0,
    })
}

/// Lists `/dev/video*` capture devices (for `card` lookups and messages).
pub fn list_devices() -> Vec<DeviceInfo> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir("/dev")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("video"))
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| {
            let f = OpenOptions::new().read(true).write(true).open(&p).ok()?;
            query(&f, &p).ok()
        })
        .collect()
}

/// Finds the capture device whose card name contains `card` (case-insensitive).
pub fn find_by_card(card: &str) -> Result<PathBuf> {
    let want = card.to_lowercase();
    let all = list_devices();
    all.iter()
        .find(|d| d.can_capture && d.card.to_lowercase().contains(&want))
        .map(|d| d.path.clone())
        .ok_or_else(|| Error::Source {
            source_name: format!("v4l2:{card}"),
            reason: format!(
                "no capture device with a card name containing {card:?} (found: {}); fix: plug \
                 the grabber in, or use a name from `v4l2-ctl --list-devices`",
                if all.is_empty() {
                    "none".to_string()
                } else {
                    all.iter()
                        .map(|d| format!("{} {:?}", d.path.display(), d.card))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        })
}

/// Counters a HUD or report can show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Frames handed to the pipeline.
    pub delivered: u64,
    /// Frames dequeued but skipped because a newer one was waiting.
    pub stale_dropped: u64,
    /// Frames the driver dropped (gaps in its sequence numbers).
    pub driver_dropped: u64,
    /// Frames the driver flagged as corrupt, skipped.
    pub corrupt: u64,
}

/// A streaming V4L2 capture device.
pub struct V4l2Source {
    path: PathBuf,
    info: DeviceInfo,
    file: File,
    maps: Vec<Mmap>,
    conv: Converter,
    format: PixelFormat,
    stride: usize,
    width: u32,
    height: u32,
    fps: f64,
    timeout: Duration,
    streaming: bool,
    next_id: u64,
    last_sequence: Option<u32>,
    stats: CaptureStats,
    rec: Option<SharedRecorder>,
}

impl V4l2Source {
    /// Opens `path`, negotiates format, size and rate from `cfg`, maps
    /// `cfg.buffers` buffers and starts streaming. A device that cannot
    /// give the asked format is an error naming what it offered instead.
    pub fn open(path: &Path, cfg: &CaptureConfig) -> Result<Self> {
        let name = path.display().to_string();
        let err = |reason: String| Error::Source {
            source_name: name.clone(),
            reason,
        };
        let io = |what: &str, e: std::io::Error| err(format!("{what}: {e}"));
        let want = cfg.format;
        // Non-blocking, so that draining the queue never waits; waiting is
        // done by poll() with the configured timeout.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| {
                io(
                    "cannot open the device (unplugged? permissions: group video?)",
                    e,
                )
            })?;
        let info = query(&file, path).map_err(|e| io("not a V4L2 device (VIDIOC_QUERYCAP)", e))?;
        if !info.can_capture {
            return Err(err(format!(
                "{:?} ({}) cannot stream single-planar video capture; fix: pick the grabber's \
                 capture node (see `v4l2-ctl --list-devices`)",
                info.card, info.driver
            )));
        }

        let mut fmt: Format = zeroed();
        fmt.type_ = BUF_TYPE_VIDEO_CAPTURE;
        fmt.pix.width = cfg.width;
        fmt.pix.height = cfg.height;
        fmt.pix.pixelformat = want.fourcc();
        fmt.pix.field = FIELD_NONE;
        xioctl(&file, VIDIOC_S_FMT, &mut fmt).map_err(|e| io("VIDIOC_S_FMT", e))?;
        let got = fmt.pix;
        if got.pixelformat != want.fourcc() {
            return Err(err(format!(
                "{:?} does not capture {} (it offered {}); fix: set capture.format to one it \
                 supports (`v4l2-ctl --list-formats-ext -d {name}`)",
                info.card,
                want.name(),
                fourcc_name(got.pixelformat)
            )));
        }
        if (got.width, got.height) != (cfg.width, cfg.height) {
            log::warn!(
                "{name}: asked for {}x{}, the device gives {}x{}; using that",
                cfg.width,
                cfg.height,
                got.width,
                got.height
            );
        }
        let stride = match want.min_stride(got.width) {
            Some(min) => (got.bytesperline as usize).max(min),
            None => 0,
        };
        let conv = Converter::new(want, got.width, got.height, stride)?;

        let fps = set_frame_rate(&file, cfg.fps).unwrap_or_else(|e| {
            log::warn!(
                "{name}: cannot set the frame rate ({e}); assuming {}",
                cfg.fps
            );
            cfg.fps
        });

        let mut req = RequestBuffers {
            count: cfg.buffers,
            type_: BUF_TYPE_VIDEO_CAPTURE,
            memory: MEMORY_MMAP,
            ..Default::default()
        };
        xioctl(&file, VIDIOC_REQBUFS, &mut req).map_err(|e| io("VIDIOC_REQBUFS", e))?;
        if req.count < 2 {
            return Err(err(format!(
                "the driver granted {} buffer(s), at least 2 are needed",
                req.count
            )));
        }
        let mut maps = Vec::with_capacity(req.count as usize);
        for index in 0..req.count {
            let mut buf = Buffer {
                index,
                type_: BUF_TYPE_VIDEO_CAPTURE,
                memory: MEMORY_MMAP,
                ..Default::default()
            };
            xioctl(&file, VIDIOC_QUERYBUF, &mut buf).map_err(|e| io("VIDIOC_QUERYBUF", e))?;
            // SAFETY: the offset and length come from the driver for this
            // buffer; the mapping is read-only and shared, and the driver
            // keeps the memory alive until REQBUFS(0)/close, which happen
            // only after `maps` is dropped (see Drop).
            let map = unsafe {
                MmapOptions::new()
                    .offset(buf.m_offset)
                    .len(buf.length as usize)
                    .map(&file)
            }
            .map_err(|e| io("mapping a capture buffer", e))?;
            maps.push(map);
        }
        let mut src = V4l2Source {
            path: path.to_path_buf(),
            info,
            file,
            maps,
            conv,
            format: want,
            stride,
            width: got.width,
            height: got.height,
            fps,
            timeout: Duration::from_millis(cfg.timeout_ms),
            streaming: false,
            next_id: 0,
            last_sequence: None,
            stats: CaptureStats::default(),
            rec: None,
        };
        for index in 0..req.count {
            src.queue(index).map_err(|e| io("VIDIOC_QBUF", e))?;
        }
        let mut t = BUF_TYPE_VIDEO_CAPTURE as i32;
        xioctl(&src.file, VIDIOC_STREAMON, &mut t).map_err(|e| io("VIDIOC_STREAMON", e))?;
        src.streaming = true;
        log::info!(
            "{name}: {:?} ({}) streaming {} {}x{} at {fps:.2} fps, {} buffers",
            src.info.card,
            src.info.driver,
            want.name(),
            src.width,
            src.height,
            src.maps.len()
        );
        Ok(src)
    }

    /// Records every delivered frame's raw bytes (`record = "input"`). The
    /// recorder is shared so that it outlives a reopened device.
    pub fn record_into(&mut self, rec: SharedRecorder) {
        self.rec = Some(rec);
    }

    /// The device's self-description.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// Counters since the device was opened.
    pub fn stats(&self) -> CaptureStats {
        self.stats
    }

    fn queue(&self, index: u32) -> std::io::Result<()> {
        let mut buf = Buffer {
            index,
            type_: BUF_TYPE_VIDEO_CAPTURE,
            memory: MEMORY_MMAP,
            ..Default::default()
        };
        xioctl(&self.file, VIDIOC_QBUF, &mut buf)
    }

    /// Dequeues one filled buffer; `Ok(None)` when none is ready.
    fn dequeue(&self) -> std::io::Result<Option<Buffer>> {
        let mut buf = Buffer {
            type_: BUF_TYPE_VIDEO_CAPTURE,
            memory: MEMORY_MMAP,
            ..Default::default()
        };
        match xioctl(&self.file, VIDIOC_DQBUF, &mut buf) {
            Ok(()) => Ok(Some(buf)),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits up to `timeout` for the device to have a frame.
    fn wait_readable(&self, timeout: Duration) -> std::io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLIN | libc::POLLPRI,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        loop {
            // SAFETY: one valid pollfd, count 1, owned for the call's duration.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r >= 0 {
                if pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
                    && pfd.revents & libc::POLLIN == 0
                {
                    return Err(std::io::Error::from_raw_os_error(libc::ENODEV));
                }
                return Ok(r > 0);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn lost(&self, what: &str, e: std::io::Error) -> Error {
        Error::Source {
            source_name: self.path.display().to_string(),
            reason: format!("{what}: {e} (device unplugged or driver gone?)"),
        }
    }
}

/// Asks for `fps` and returns the rate the driver settled on.
fn set_frame_rate(file: &File, fps: f64) -> std::io::Result<f64> {
    let mut parm: StreamParm = zeroed();
    parm.type_ = BUF_TYPE_VIDEO_CAPTURE;
    xioctl(file, VIDIOC_G_PARM, &mut parm)?;
    if parm.capability & CAP_TIMEPERFRAME != 0 {
        parm.timeperframe = Fract {
            numerator: 1000,
            denominator: (fps * 1000.0).round() as u32,
        };
        xioctl(file, VIDIOC_S_PARM, &mut parm)?;
    }
    let t = parm.timeperframe;
    if t.numerator == 0 || t.denominator == 0 {
        return Ok(fps);
    }
    Ok(f64::from(t.denominator) / f64::from(t.numerator))
}

/// Turns a driver's CLOCK_MONOTONIC timestamp into an `Instant` (which is
/// CLOCK_MONOTONIC on Linux) by measuring its age now.
fn monotonic_to_instant(ts: libc::timeval) -> Option<Instant> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill; CLOCK_MONOTONIC always exists on Linux.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return None;
    }
    let now_us = now.tv_sec as i128 * 1_000_000 + now.tv_nsec as i128 / 1000;
    let ts_us = ts.tv_sec as i128 * 1_000_000 + ts.tv_usec as i128;
    let age = now_us - ts_us;
    if !(0..=10_000_000).contains(&age) {
        return None;
    }
    Instant::now().checked_sub(Duration::from_micros(age as u64))
}

impl FrameSource for V4l2Source {
    fn name(&self) -> String {
        format!("{} ({})", self.path.display(), self.info.card)
    }

    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn frame_rate(&self) -> f64 {
        self.fps
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool> {
        let deadline = Instant::now() + self.timeout;
        let newest = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Source {
                    source_name: self.path.display().to_string(),
                    reason: format!(
                        "no frame for {} ms (signal lost or device stalled)",
                        self.timeout.as_millis()
                    ),
                });
            }
            if !self.wait_readable(left).map_err(|e| self.lost("poll", e))? {
                continue;
            }
            // Drain: keep the newest buffer, give the older ones back.
            let mut newest: Option<Buffer> = None;
            let mut drained = 0;
            while let Some(buf) = self.dequeue().map_err(|e| self.lost("VIDIOC_DQBUF", e))? {
                drained += 1;
                if let Some(prev) = self.last_sequence {
                    let gap = buf.sequence.wrapping_sub(prev).wrapping_sub(1);
                    if gap < 1 << 16 {
                        self.stats.driver_dropped += u64::from(gap);
                    }
                }
                self.last_sequence = Some(buf.sequence);
                if buf.flags & BUF_FLAG_ERROR != 0 || buf.index as usize >= self.maps.len() {
                    self.stats.corrupt += 1;
                    self.queue(buf.index)
                        .map_err(|e| self.lost("VIDIOC_QBUF", e))?;
                    continue;
                }
                if let Some(old) = newest.replace(buf) {
                    self.stats.stale_dropped += 1;
                    self.queue(old.index)
                        .map_err(|e| self.lost("VIDIOC_QBUF", e))?;
                }
            }
            let Some(b) = newest else { continue };
            // After a stall (the consumer was slow and the queue backed up),
            // even the newest queued frame is from the past: the driver
            // fills buffers in order and drops what does not fit. Give it
            // back and take the next one, captured after the stall. Only
            // when several were waiting, so a slow driver is never starved.
            let backed_up = drained > 1;
            let old = b.flags & BUF_FLAG_TIMESTAMP_MASK == BUF_FLAG_TIMESTAMP_MONOTONIC
                && monotonic_to_instant(b.timestamp)
                    .is_some_and(|t| t.elapsed().as_secs_f64() > 2.0 / self.fps);
            if backed_up && old {
                self.stats.stale_dropped += 1;
                self.queue(b.index)
                    .map_err(|e| self.lost("VIDIOC_QBUF", e))?;
                continue;
            }
            break b;
        };
        let data = &self.maps[newest.index as usize];
        let used = (newest.bytesused as usize).min(data.len());
        let used = if used == 0 { data.len() } else { used };
        let converted = self.conv.to_rgb(&data[..used], frame);
        let recorded = match (&converted, self.rec.as_mut()) {
            (Ok(()), Some(rec)) => rec.lock().unwrap_or_else(|p| p.into_inner()).record_raw(
                self.format,
                self.stride,
                &data[..used],
                frame,
            ),
            _ => Ok(true),
        };
        // Give the buffer back before reporting any conversion error, so the
        // queue never runs dry.
        self.queue(newest.index)
            .map_err(|e| self.lost("VIDIOC_QBUF", e))?;
        if let Err(e) = converted {
            // A corrupt MJPEG frame: count it and let the caller go on.
            self.stats.corrupt += 1;
            return Err(e);
        }
        recorded?;
        let hw = newest.flags & BUF_FLAG_TIMESTAMP_MASK == BUF_FLAG_TIMESTAMP_MONOTONIC;
        frame.captured = hw
            .then(|| monotonic_to_instant(newest.timestamp))
            .flatten()
            .unwrap_or_else(Instant::now);
        frame.id = self.next_id;
        self.next_id += 1;
        self.stats.delivered += 1;
        Ok(true)
    }
}

impl Drop for V4l2Source {
    fn drop(&mut self) {
        // Errors are expected here when the device is gone; never panic.
        if self.streaming {
            let mut t = BUF_TYPE_VIDEO_CAPTURE as i32;
            if let Err(e) = xioctl(&self.file, VIDIOC_STREAMOFF, &mut t) {
                log::debug!("{}: STREAMOFF: {e}", self.path.display());
            }
        }
        // Unmap before freeing the buffers: the driver refuses REQBUFS(0)
        // while they are mapped.
        self.maps.clear();
        let mut req = RequestBuffers {
            count: 0,
            type_: BUF_TYPE_VIDEO_CAPTURE,
            memory: MEMORY_MMAP,
            ..Default::default()
        };
        if let Err(e) = xioctl(&self.file, VIDIOC_REQBUFS, &mut req) {
            log::debug!("{}: REQBUFS(0): {e}", self.path.display());
        }
        log::info!(
            "{}: closed after {} frames ({} stale dropped, {} dropped by the driver, {} corrupt)",
            self.path.display(),
            self.stats.delivered,
            self.stats.stale_dropped,
            self.stats.driver_dropped,
            self.stats.corrupt
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_codes_match_the_kernel_headers() {
        // Values printed by a C program including <linux/videodev2.h> (x86_64).
        assert_eq!(VIDIOC_QUERYCAP, 0x8068_5600);
        assert_eq!(VIDIOC_REQBUFS, 0xc014_5608);
        assert_eq!(VIDIOC_QUERYBUF, 0xc058_5609);
        assert_eq!(VIDIOC_QBUF, 0xc058_560f);
        assert_eq!(VIDIOC_STREAMON, 0x4004_5612);
        assert_eq!(VIDIOC_STREAMOFF, 0x4004_5613);
        assert_eq!(VIDIOC_G_PARM, 0xc0cc_5615);
        assert_eq!(VIDIOC_S_PARM, 0xc0cc_5616);
        assert_eq!(std::mem::offset_of!(Buffer, timestamp), 24);
        assert_eq!(std::mem::offset_of!(Buffer, sequence), 56);
        assert_eq!(std::mem::offset_of!(Buffer, m_offset), 64);
        assert_eq!(std::mem::offset_of!(Buffer, length), 72);
    }

    #[test]
    fn missing_device_is_a_clear_error() {
        let e = V4l2Source::open(Path::new("/dev/video-none"), &CaptureConfig::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("/dev/video-none") && e.contains("unplugged"),
            "{e}"
        );
        let e = V4l2Source::open(Path::new("/dev/null"), &CaptureConfig::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not a V4L2 device"), "{e}");
        assert!(find_by_card("no such grabber 1234").is_err());
    }

    #[test]
    fn timestamps_in_the_past_map_to_earlier_instants() {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid timespec to fill.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        let ts = libc::timeval {
            tv_sec: now.tv_sec - 1,
            tv_usec: now.tv_nsec / 1000,
        };
        let t = monotonic_to_instant(ts).unwrap();
        let age = t.elapsed();
        assert!(
            age >= Duration::from_millis(990) && age < Duration::from_millis(1500),
            "{age:?}"
        );
        let future = libc::timeval {
            tv_sec: now.tv_sec + 100,
            tv_usec: 0,
        };
        assert!(monotonic_to_instant(future).is_none());
    }
}
