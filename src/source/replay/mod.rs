//! Replay sources for bench work and regressions: an image folder, a Y4M
//! file, a raw YUYV/NV12/GREY/RGB24/BGR24 dump.
//!
//! Each plays at the recorded pace (`pace = "realtime"`: a file pretends to
//! be a camera, so the pipeline sees the same timing as on the cart) or as
//! fast as the pipeline takes frames (`"fast"`, for throughput and
//! regression runs), once or looping. [`open`] picks the kind from the path:
//! a folder, `.y4m`, or a raw extension (`.yuyv`, `.nv12`, `.grey`,
//! `.rgb24`, `.bgr24`; `.yuv`/`.raw` take `capture.format`).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::CaptureConfig;
use crate::frame::Frame;
use crate::sink::record::Y4mRecorder;
use crate::source::pixfmt::{decode_jpeg, Converter, PixelFormat, YuvMatrix};
use crate::source::FrameSource;
use crate::{Error, Result};

/// How fast a file plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pace {
    /// At the file's frame rate, as a camera would deliver.
    Realtime,
    /// As fast as frames are asked for.
    Fast,
}

/// Replay options shared by every kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayOptions {
    /// Pacing.
    pub pace: Pace,
    /// Start over at the end.
    pub looping: bool,
    /// Frame rate for kinds that do not carry one (folders, raw dumps).
    pub fps: f64,
}

impl ReplayOptions {
    /// The options a validated `[capture]` table asks for.
    pub fn from_config(c: &CaptureConfig) -> Self {
        ReplayOptions {
            pace: c.pace,
            looping: c.looping,
            fps: c.fps,
        }
    }
}

/// Keeps a file source on its frame rate without bursting after a stall.
#[derive(Debug)]
struct Pacer {
    pace: Pace,
    period: Duration,
    next: Option<Instant>,
}

impl Pacer {
    fn new(pace: Pace, fps: f64) -> Self {
        Pacer {
            pace,
            period: Duration::from_secs_f64(1.0 / fps.max(0.001)),
            next: None,
        }
    }

    /// Sleeps until the next frame is due.
    fn wait(&mut self) {
        if self.pace == Pace::Fast {
            return;
        }
        let now = Instant::now();
        let due = match self.next {
            Some(t) if t > now => {
                std::thread::sleep(t - now);
                t
            }
            // Late (or first): deliver now and restart the schedule from
            // here, as a camera would not send the missed frames at once.
            _ => now,
        };
        self.next = Some(due + self.period);
    }
}

/// Opens the replay source for `path`, choosing the kind by folder or
/// extension. `rec` receives the input frames (`record = "input"`).
pub fn open(
    path: &Path,
    capture: &CaptureConfig,
    rec: Option<Y4mRecorder>,
) -> Result<Box<dyn FrameSource>> {
    let opts = ReplayOptions::from_config(capture);
    if path.is_dir() {
        let mut s = ImageFolder::open(path, opts)?;
        s.rec = rec;
        return Ok(Box::new(s));
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let raw = match ext.as_str() {
        "y4m" => {
            let mut s = Y4mReplay::open(path, opts)?;
            s.rec = rec;
            return Ok(Box::new(s));
        }
        "yuyv" | "yuy2" => Some(PixelFormat::Yuyv),
        "nv12" => Some(PixelFormat::Nv12),
        "grey" | "gray" | "y8" => Some(PixelFormat::Grey),
        "rgb" | "rgb24" => Some(PixelFormat::Rgb24),
        "bgr" | "bgr24" => Some(PixelFormat::Bgr24),
        "yuv" | "raw" => Some(capture.format),
        _ => None,
    };
    match raw {
        Some(PixelFormat::Mjpeg) | None => Err(Error::Source {
            source_name: path.display().to_string(),
            reason: format!(
                "cannot tell what kind of file {ext:?} is; fix: use an image folder, a .y4m file, \
                 or a raw dump named .yuyv/.nv12/.grey/.rgb24/.bgr24 (or .yuv/.raw with capture.format)"
            ),
        }),
        Some(format) => {
            let mut s = RawReplay::open(path, format, capture.width, capture.height, opts)?;
            s.rec = rec;
            Ok(Box::new(s))
        }
    }
}

fn source_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Source {
        source_name: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Replays raw frames laid end to end (a `v4l2-ctl --stream-to` dump).
pub struct RawReplay {
    path: PathBuf,
    file: BufReader<File>,
    conv: Converter,
    format: PixelFormat,
    width: u32,
    height: u32,
    stride: usize,
    frames_in_file: u64,
    buf: Vec<u8>,
    opts: ReplayOptions,
    pacer: Pacer,
    pos: u64,
    next_id: u64,
    rec: Option<Y4mRecorder>,
}

impl RawReplay {
    /// Opens a dump of `format` frames of `width` x `height`, no line padding.
    pub fn open(
        path: &Path,
        format: PixelFormat,
        width: u32,
        height: u32,
        opts: ReplayOptions,
    ) -> Result<Self> {
        let stride = format.min_stride(width).ok_or_else(|| {
            source_err(
                path,
                "raw MJPEG dumps have no fixed frame size; fix: use an image folder",
            )
        })?;
        let frame_len = format.frame_len(stride, height).unwrap_or(0);
        let file =
            File::open(path).map_err(|e| Error::io(format!("opening raw video {path:?}"), e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("reading raw video {path:?}"), e))?
            .len();
        let frames_in_file = len / frame_len as u64;
        if frames_in_file == 0 {
            return Err(source_err(
                path,
                format!(
                    "{len} bytes is less than one {} frame of {width}x{height} ({frame_len} bytes); \
                     fix: set capture.width/height/format to the dump's",
                    format.name()
                ),
            ));
        }
        if len % frame_len as u64 != 0 {
            log::warn!(
                "{path:?}: {} trailing bytes are not a whole {width}x{height} {} frame (size or \
                 format wrong, or a cut-off recording); they are skipped",
                len % frame_len as u64,
                format.name()
            );
        }
        Ok(RawReplay {
            path: path.to_path_buf(),
            file: BufReader::new(file),
            conv: Converter::new(format, width, height, stride)?,
            format,
            width,
            height,
            stride,
            frames_in_file,
            buf: vec![0; frame_len],
            opts,
            pacer: Pacer::new(opts.pace, opts.fps),
            pos: 0,
            next_id: 0,
            rec: None,
        })
    }

    /// Whole frames in the file.
    pub fn frames_in_file(&self) -> u64 {
        self.frames_in_file
    }
}

impl FrameSource for RawReplay {
    fn name(&self) -> String {
        format!("raw {} replay {:?}", self.format.name(), self.path)
    }

    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn frame_rate(&self) -> f64 {
        self.opts.fps
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool> {
        if self.pos == self.frames_in_file {
            if !self.opts.looping {
                return Ok(false);
            }
            self.file
                .seek(SeekFrom::Start(0))
                .map_err(|e| Error::io(format!("rewinding {:?}", self.path), e))?;
            self.pos = 0;
        }
        self.file
            .read_exact(&mut self.buf)
            .map_err(|e| Error::io(format!("reading raw video {:?}", self.path), e))?;
        self.pos += 1;
        self.conv.to_rgb(&self.buf, frame)?;
        self.pacer.wait();
        frame.id = self.next_id;
        frame.captured = Instant::now();
        self.next_id += 1;
        if let Some(rec) = self.rec.as_mut() {
            rec.record_raw(self.format, self.stride, &self.buf, frame)?;
        }
        Ok(true)
    }
}

/// Y4M chroma subsampling of a file being replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chroma {
    C420,
    C422,
    C444,
    Mono,
}

/// Replays a YUV4MPEG2 file (ours, or ffmpeg's `-pix_fmt yuv420p/422p/444p/gray`).
pub struct Y4mReplay {
    path: PathBuf,
    file: BufReader<File>,
    data_start: u64,
    width: u32,
    height: u32,
    fps: f64,
    chroma: Chroma,
    matrix: YuvMatrix,
    buf: Vec<u8>,
    line: Vec<u8>,
    opts: ReplayOptions,
    pacer: Pacer,
    next_id: u64,
    frames_read: u64,
    rec: Option<Y4mRecorder>,
}

impl Y4mReplay {
    /// Opens and parses the header; errors name the bad header field.
    pub fn open(path: &Path, opts: ReplayOptions) -> Result<Self> {
        let file =
            File::open(path).map_err(|e| Error::io(format!("opening Y4M video {path:?}"), e))?;
        let mut file = BufReader::new(file);
        let mut header = Vec::new();
        file.by_ref()
            .take(4096)
            .read_until(b'\n', &mut header)
            .map_err(|e| Error::io(format!("reading Y4M header of {path:?}"), e))?;
        let text = std::str::from_utf8(&header).unwrap_or("");
        let mut fields = text.trim_end().split(' ');
        if fields.next() != Some("YUV4MPEG2") || !header.ends_with(b"\n") {
            return Err(source_err(
                path,
                "not a Y4M file (no YUV4MPEG2 header line)",
            ));
        }
        let (mut w, mut h, mut fps) = (0u32, 0u32, 25.0f64);
        let mut chroma = Chroma::C420;
        let mut full = false;
        for f in fields {
            let (tag, val) = f.split_at(f.len().min(1));
            match tag {
                "W" => w = val.parse().unwrap_or(0),
                "H" => h = val.parse().unwrap_or(0),
                "F" => {
                    let mut it = val.split(':').map(|v| v.parse::<f64>().unwrap_or(0.0));
                    let (n, d) = (it.next().unwrap_or(0.0), it.next().unwrap_or(1.0));
                    if n > 0.0 && d > 0.0 {
                        fps = n / d;
                    }
                }
                "C" => {
                    chroma = match val {
                        "420" | "420jpeg" | "420paldv" | "420mpeg2" => Chroma::C420,
                        "422" => Chroma::C422,
                        "444" => Chroma::C444,
                        "mono" => Chroma::Mono,
                        other => {
                            return Err(source_err(
                                path,
                                format!(
                                    "Y4M colour space C{other} is not supported; fix: convert with \
                                     ffmpeg -pix_fmt yuv420p (or 422p/444p/gray), 8 bits"
                                ),
                            ))
                        }
                    }
                }
                "X" if val == "COLORRANGE=FULL" => full = true,
                _ => {}
            }
        }
        if w == 0 || h == 0 || w > 16384 || h > 16384 {
            return Err(source_err(
                path,
                format!("Y4M header has a bad size W{w} H{h}"),
            ));
        }
        let data_start = header.len() as u64;
        let (wz, hz) = (w as usize, h as usize);
        let (cw, ch) = (wz.div_ceil(2), hz.div_ceil(2));
        let len = match chroma {
            Chroma::C420 => wz * hz + 2 * cw * ch,
            Chroma::C422 => wz * hz + 2 * cw * hz,
            Chroma::C444 => wz * hz * 3,
            Chroma::Mono => wz * hz,
        };
        // Unflagged files are limited range (what ffmpeg writes and assumes);
        // mono is luma as-is.
        let matrix = if full || chroma == Chroma::Mono {
            YuvMatrix::BT601_FULL
        } else {
            YuvMatrix::BT601_LIMITED
        };
        Ok(Y4mReplay {
            path: path.to_path_buf(),
            file,
            data_start,
            width: w,
            height: h,
            fps,
            chroma,
            matrix,
            buf: vec![0; len],
            line: Vec::with_capacity(64),
            opts,
            pacer: Pacer::new(opts.pace, fps),
            next_id: 0,
            frames_read: 0,
            rec: None,
        })
    }

    /// Reads the next FRAME line and planes; `Ok(false)` at a clean end.
    fn read_frame(&mut self) -> Result<bool> {
        self.line.clear();
        let n = self
            .file
            .by_ref()
            .take(1024)
            .read_until(b'\n', &mut self.line)
            .map_err(|e| Error::io(format!("reading Y4M video {:?}", self.path), e))?;
        if n == 0 {
            return Ok(false);
        }
        if !self.line.starts_with(b"FRAME") || !self.line.ends_with(b"\n") {
            return Err(source_err(
                &self.path,
                format!(
                    "frame {} does not start with FRAME (corrupt file)",
                    self.frames_read
                ),
            ));
        }
        match self.file.read_exact(&mut self.buf) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                log::warn!(
                    "{:?}: frame {} is cut off (a recording that was interrupted); treated as the end",
                    self.path,
                    self.frames_read
                );
                Ok(false)
            }
            Err(e) => Err(Error::io(format!("reading Y4M video {:?}", self.path), e)),
        }
    }

    fn convert(&self, frame: &mut Frame) {
        let (w, h) = (self.width as usize, self.height as usize);
        frame.width = self.width;
        frame.height = self.height;
        frame.rgb.resize(w * h * 3, 0);
        let cw = w.div_ceil(2);
        let (yp, rest) = self.buf.split_at(w * h);
        let (cstride, crows, plane) = match self.chroma {
            Chroma::C420 => (cw, h.div_ceil(2), cw * h.div_ceil(2)),
            Chroma::C422 => (cw, h, cw * h),
            Chroma::C444 => (w, h, w * h),
            Chroma::Mono => (0, 0, 0),
        };
        let (up, vp) = rest.split_at(plane);
        for (r, out) in frame.rgb.chunks_exact_mut(w * 3).enumerate() {
            let cr = if crows == h { r } else { r / 2 };
            for (x, o) in out.chunks_exact_mut(3).enumerate() {
                let luma = yp[r * w + x];
                let px = match self.chroma {
                    Chroma::Mono => self.matrix.rgb(luma, 128, 128),
                    Chroma::C444 => self.matrix.rgb(luma, up[r * w + x], vp[r * w + x]),
                    _ => {
                        let i = cr * cstride + x / 2;
                        self.matrix.rgb(luma, up[i], vp[i])
                    }
                };
                o.copy_from_slice(&px);
            }
        }
    }
}

impl FrameSource for Y4mReplay {
    fn name(&self) -> String {
        format!("y4m replay {:?}", self.path)
    }

    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn frame_rate(&self) -> f64 {
        self.fps
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool> {
        if !self.read_frame()? {
            if !self.opts.looping || self.frames_read == 0 {
                return Ok(false);
            }
            self.file
                .seek(SeekFrom::Start(self.data_start))
                .map_err(|e| Error::io(format!("rewinding {:?}", self.path), e))?;
            self.frames_read = 0;
            if !self.read_frame()? {
                return Ok(false);
            }
        }
        self.frames_read += 1;
        self.convert(frame);
        self.pacer.wait();
        frame.id = self.next_id;
        frame.captured = Instant::now();
        self.next_id += 1;
        if let Some(rec) = self.rec.as_mut() {
            rec.record_rgb(frame)?;
        }
        Ok(true)
    }
}

/// Replays the PNG and JPEG images of a folder in name order.
pub struct ImageFolder {
    dir: PathBuf,
    files: Vec<PathBuf>,
    width: u32,
    height: u32,
    opts: ReplayOptions,
    pacer: Pacer,
    pos: usize,
    next_id: u64,
    scratch: Vec<u8>,
    rec: Option<Y4mRecorder>,
}

impl ImageFolder {
    /// Lists the folder; the first image sets the size every other must have.
    pub fn open(dir: &Path, opts: ReplayOptions) -> Result<Self> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::io(format!("listing image folder {dir:?}"), e))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension()
                        .and_then(|e| e.to_str())
                        .map(str::to_ascii_lowercase)
                        .as_deref(),
                    Some("png" | "jpg" | "jpeg")
                )
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(source_err(
                dir,
                "no .png/.jpg/.jpeg images in the folder; fix: point source at a folder of frames",
            ));
        }
        let mut s = ImageFolder {
            dir: dir.to_path_buf(),
            files,
            width: 0,
            height: 0,
            opts,
            pacer: Pacer::new(opts.pace, opts.fps),
            pos: 0,
            next_id: 0,
            scratch: Vec::new(),
            rec: None,
        };
        let mut first = Frame::new(0, 0);
        let p = s.files[0].clone();
        s.load(&p, &mut first)?;
        s.width = first.width;
        s.height = first.height;
        Ok(s)
    }

    /// Decodes one image into `frame` (its size taken from the image).
    fn load(&mut self, path: &Path, frame: &mut Frame) -> Result<()> {
        let bad = |reason: String| Error::invalid(format!("image {path:?}"), reason);
        let is_png = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("png"));
        if !is_png {
            self.scratch.clear();
            File::open(path)
                .and_then(|mut f| f.read_to_end(&mut self.scratch))
                .map_err(|e| Error::io(format!("reading image {path:?}"), e))?;
            let (w, h) =
                jpeg_size(&self.scratch).ok_or_else(|| bad("not a readable JPEG".into()))?;
            frame.width = w;
            frame.height = h;
            return decode_jpeg(&self.scratch, frame);
        }
        use image::ImageDecoder;
        let file = File::open(path).map_err(|e| Error::io(format!("reading image {path:?}"), e))?;
        let dec = image::codecs::png::PngDecoder::new(BufReader::new(file))
            .map_err(|e| bad(e.to_string()))?;
        let (w, h) = dec.dimensions();
        let ct = dec.color_type();
        self.scratch.resize(dec.total_bytes() as usize, 0);
        dec.read_image(&mut self.scratch)
            .map_err(|e| bad(e.to_string()))?;
        frame.width = w;
        frame.height = h;
        frame.rgb.resize(w as usize * h as usize * 3, 0);
        let px = frame.rgb.chunks_exact_mut(3);
        match ct {
            image::ColorType::Rgb8 => frame.rgb.copy_from_slice(&self.scratch),
            image::ColorType::Rgba8 => {
                for (o, i) in px.zip(self.scratch.chunks_exact(4)) {
                    o.copy_from_slice(&i[..3]);
                }
            }
            image::ColorType::L8 => {
                for (o, &l) in px.zip(self.scratch.iter()) {
                    o.fill(l);
                }
            }
            image::ColorType::La8 => {
                for (o, i) in px.zip(self.scratch.chunks_exact(2)) {
                    o.fill(i[0]);
                }
            }
            other => {
                return Err(bad(format!(
                    "colour type {other:?} is not supported; fix: save 8-bit RGB, RGBA or grey PNGs"
                )))
            }
        }
        Ok(())
    }
}

/// Width and height from a JPEG's SOF marker, without decoding.
fn jpeg_size(data: &[u8]) -> Option<(u32, u32)> {
    let mut dec = zune_jpeg::JpegDecoder::new(data);
    dec.decode_headers().ok()?;
    dec.dimensions().map(|(w, h)| (w as u32, h as u32))
}

impl FrameSource for ImageFolder {
    fn name(&self) -> String {
        format!("image folder {:?}", self.dir)
    }

    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn frame_rate(&self) -> f64 {
        self.opts.fps
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool> {
        if self.pos == self.files.len() {
            if !self.opts.looping {
                return Ok(false);
            }
            self.pos = 0;
        }
        let path = std::mem::take(&mut self.files[self.pos]);
        let loaded = self.load(&path, frame);
        self.files[self.pos] = path;
        loaded?;
        if (frame.width, frame.height) != (self.width, self.height) {
            return Err(source_err(
                &self.files[self.pos],
                format!(
                    "image is {}x{}, the folder's first is {}x{}; fix: give every frame one size",
                    frame.width, frame.height, self.width, self.height
                ),
            ));
        }
        self.pos += 1;
        self.pacer.wait();
        frame.id = self.next_id;
        frame.captured = Instant::now();
        self.next_id += 1;
        if let Some(rec) = self.rec.as_mut() {
            rec.record_rgb(frame)?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn fast(looping: bool) -> ReplayOptions {
        ReplayOptions {
            pace: Pace::Fast,
            looping,
            fps: 30.0,
        }
    }

    fn drain(s: &mut dyn FrameSource, max: usize) -> Vec<Frame> {
        let mut out = Vec::new();
        let mut f = Frame::new(1, 1);
        while out.len() < max && s.next_frame(&mut f).unwrap() {
            out.push(f.clone());
        }
        out
    }

    /// A frame whose pixels encode their position and the frame number.
    fn pattern(w: u32, h: u32, n: u8) -> Frame {
        let mut f = Frame::new(w, h);
        for y in 0..h {
            for x in 0..w {
                let i = ((y * w + x) * 3) as usize;
                f.rgb[i..i + 3].copy_from_slice(&[(x * 20) as u8, (y * 20) as u8, n * 40]);
            }
        }
        f
    }

    #[test]
    fn y4m_recording_replays_within_rounding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.y4m");
        let mut rec = Y4mRecorder::create(&path, 12.5, 1 << 20).unwrap();
        for n in 0..3 {
            rec.record_rgb(&pattern(6, 4, n)).unwrap();
        }
        let mut s = Y4mReplay::open(&path, fast(false)).unwrap();
        assert_eq!(s.size(), (6, 4));
        assert_eq!(s.frame_rate(), 12.5);
        let frames = drain(&mut s, 10);
        assert_eq!(frames.len(), 3);
        for (n, f) in frames.iter().enumerate() {
            assert_eq!(f.id, n as u64);
            let want = pattern(6, 4, n as u8);
            for (a, b) in f.rgb.iter().zip(&want.rgb) {
                assert!(a.abs_diff(*b) <= 2, "frame {n}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn y4m_loops_and_survives_a_cut_off_frame() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.y4m");
        let mut rec = Y4mRecorder::create(&path, 30.0, 1 << 20).unwrap();
        for n in 0..2 {
            rec.record_rgb(&pattern(4, 4, n)).unwrap();
        }
        drop(rec);
        // Half a third frame, as a crash would leave.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"FRAME\n\x01\x02\x03").unwrap();
        let mut s = Y4mReplay::open(&path, fast(true)).unwrap();
        let frames = drain(&mut s, 5);
        assert_eq!(frames.len(), 5);
        let ids: Vec<u64> = frames.iter().map(|f| f.id).collect();
        assert_eq!(ids, [0, 1, 2, 3, 4]);
        // Frames 0 and 2 are the file's first frame again (blue = n * 40).
        assert!(frames[2].pixel(0, 0)[2] < 3 && frames[3].pixel(0, 0)[2] > 37);
    }

    #[test]
    fn y4m_420_from_ffmpeg_layout() {
        // 2x2 4:2:0 limited: Y 235 everywhere, neutral chroma -> white.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.y4m");
        std::fs::write(
            &path,
            b"YUV4MPEG2 W2 H2 F25:1 Ip A0:0 C420jpeg XYSCSS=420JPEG\nFRAME\n\xeb\xeb\xeb\xeb\x80\x80",
        )
        .unwrap();
        let mut s = Y4mReplay::open(&path, fast(false)).unwrap();
        let frames = drain(&mut s, 3);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].pixel(1, 1), [255, 255, 255]);
        std::fs::write(&path, b"YUV4MPEG2 W2 H2 C420p10\n").unwrap();
        let e = Y4mReplay::open(&path, fast(false))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("C420p10") && e.contains("fix"), "{e}");
        std::fs::write(&path, b"RIFF....").unwrap();
        assert!(Y4mReplay::open(&path, fast(false)).is_err());
    }

    #[test]
    fn raw_nv12_dump_plays_loops_and_records_natively() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.nv12");
        // Two 2x2 frames: red, then white; and 3 stray bytes.
        let mut data = vec![81, 81, 81, 81, 90, 240, 235, 235, 235, 235, 128, 128];
        data.extend([1, 2, 3]);
        std::fs::write(&path, &data).unwrap();
        let cap = CaptureConfig {
            width: 2,
            height: 2,
            pace: Pace::Fast,
            looping: true,
            ..CaptureConfig::default()
        };
        let rec_path = dir.path().join("in.y4m");
        let rec = Y4mRecorder::create(&rec_path, 30.0, 1 << 20).unwrap();
        let mut s = open(&path, &cap, Some(rec)).unwrap();
        let frames = drain(s.as_mut(), 3);
        assert!(frames[0].pixel(0, 0)[0] > 250 && frames[0].pixel(0, 0)[1] < 5);
        assert_eq!(frames[1].pixel(1, 1), [255, 255, 255]);
        assert_eq!(frames[2].rgb, frames[0].rgb);
        drop(s);
        // The recording holds the NV12 bytes as planar 4:2:0, unchanged.
        let bytes = std::fs::read(&rec_path).unwrap();
        let body = b"FRAME\n\x51\x51\x51\x51\x5a\xf0";
        assert_eq!(bytes.windows(body.len()).filter(|w| w == body).count(), 2);
        // A wrong size is caught before any frame.
        let cap = CaptureConfig {
            width: 64,
            height: 64,
            ..cap
        };
        let e = open(&path, &cap, None).err().unwrap().to_string();
        assert!(e.contains("capture.width"), "{e}");
    }

    #[test]
    fn raw_yuyv_plays_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.yuyv");
        std::fs::write(&path, [235, 128, 16, 128].repeat(3)).unwrap();
        let cap = CaptureConfig {
            width: 2,
            height: 1,
            pace: Pace::Fast,
            ..CaptureConfig::default()
        };
        let mut s = open(&path, &cap, None).unwrap();
        let frames = drain(s.as_mut(), 10);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[2].pixel(0, 0), [255, 255, 255]);
        assert_eq!(frames[2].pixel(1, 0), [0, 0, 0]);
        assert!(open(&dir.path().join("x.mp4"), &cap, None).is_err());
    }

    #[test]
    fn image_folder_in_name_order_with_size_check() {
        let dir = tempfile::tempdir().unwrap();
        for n in [2u8, 0, 1] {
            let f = pattern(5, 3, n);
            image::save_buffer(
                dir.path().join(format!("f{n}.png")),
                &f.rgb,
                5,
                3,
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
        }
        std::fs::write(
            dir.path().join("f3.jpg"),
            crate::source::pixfmt::tests::test_jpeg(5, 3),
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not an image").unwrap();
        let mut s = ImageFolder::open(dir.path(), fast(false)).unwrap();
        assert_eq!(s.size(), (5, 3));
        let frames = drain(&mut s, 10);
        assert_eq!(frames.len(), 4);
        for (n, f) in frames.iter().take(3).enumerate() {
            assert_eq!(f.rgb, pattern(5, 3, n as u8).rgb);
        }
        assert!(frames[3].pixel(0, 1)[0] > 200);
        // A frame of another size is an error naming the file.
        image::save_buffer(
            dir.path().join("f4.png"),
            &[0; 12],
            2,
            2,
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
        let mut s = ImageFolder::open(dir.path(), fast(false)).unwrap();
        let mut f = Frame::new(1, 1);
        for _ in 0..4 {
            assert!(s.next_frame(&mut f).unwrap());
        }
        let e = s.next_frame(&mut f).unwrap_err().to_string();
        assert!(e.contains("f4.png") && e.contains("2x2"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        assert!(ImageFolder::open(empty.path(), fast(false)).is_err());
    }

    #[test]
    fn realtime_pace_holds_the_rate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.grey");
        std::fs::write(&path, [7u8; 4 * 6]).unwrap();
        let opts = ReplayOptions {
            pace: Pace::Realtime,
            looping: false,
            fps: 50.0,
        };
        let mut s = RawReplay::open(&path, PixelFormat::Grey, 2, 2, opts).unwrap();
        assert_eq!(s.frames_in_file(), 6);
        let t0 = Instant::now();
        let frames = drain(&mut s, 10);
        let took = t0.elapsed();
        assert_eq!(frames.len(), 6);
        // Six frames at 50 fps: five periods (the first is immediate).
        assert!(took >= Duration::from_millis(95), "{took:?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
        let gap = frames[5].captured - frames[4].captured;
        assert!(gap >= Duration::from_millis(18), "{gap:?}");
    }
}
