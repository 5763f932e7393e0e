//! YUV4MPEG2 (`.y4m`): the only Y4M reader and writer in the crate.
//!
//! Y4M is the lossless video format of this runtime: recordings
//! ([`crate::sink::record`]), the video sink ([`crate::sink::Y4mSink`]), file
//! replay ([`crate::source::replay`]) and the Y4M -> GIF conversion
//! ([`crate::sink::y4m_to_gif`]) all go through this module, which parses
//! and writes the stream header ([`Header`]: `W H F C A I X` tags) and the
//! `FRAME` lines in one place.
//!
//! Colour: Y'CbCr -> RGB is the SIMD kernels' conversion
//! ([`crate::kernels`]), the same as the live capture path; RGB -> Y'CbCr
//! (for 4:4:4 writing) is [`rgb_to_ycbcr_full`]. Supported are 8-bit 4:2:0,
//! 4:2:2, 4:4:4 and mono, limited range unless `XCOLORRANGE=FULL` (what
//! ffmpeg writes and assumes); mono is read as full range (luma as-is).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::frame::{Frame, Limits};
use crate::kernels::{self, YuvCoeffs, YuvMatrix, YuvRange};
use crate::{Error, Result};

/// Longest stream header line accepted.
const MAX_HEADER: u64 = 4096;
/// Longest `FRAME` line accepted (the tag plus optional parameters).
const MAX_FRAME_LINE: u64 = 1024;
/// What starts every frame.
const MARKER: &[u8] = b"FRAME";

/// Chroma subsampling of a stream (the `C` tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chroma {
    /// 4:2:0 (`C420`, `C420jpeg`, `C420paldv`; written as `C420mpeg2`, the
    /// chroma siting of NV12).
    C420,
    /// 4:2:2 (`C422`).
    C422,
    /// 4:4:4 (`C444`).
    C444,
    /// Luma only (`Cmono`).
    Mono,
}

impl Chroma {
    /// The `C` tag value written.
    fn tag(self) -> &'static str {
        match self {
            Chroma::C420 => "420mpeg2",
            Chroma::C422 => "422",
            Chroma::C444 => "444",
            Chroma::Mono => "mono",
        }
    }

    /// Bytes of the U (and of the V) plane of a `w` x `h` frame.
    fn chroma_plane(self, w: usize, h: usize) -> usize {
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        match self {
            Chroma::C420 => cw * ch,
            Chroma::C422 => cw * h,
            Chroma::C444 => w * h,
            Chroma::Mono => 0,
        }
    }
}

/// A stream header: everything this runtime reads or writes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Frame width (`W`).
    pub width: u32,
    /// Frame height (`H`).
    pub height: u32,
    /// Frame rate as a ratio (`F`, e.g. 30000:1001).
    pub rate: (u64, u64),
    /// Chroma subsampling (`C`; 4:2:0 when absent).
    pub chroma: Chroma,
    /// Code value range (`XCOLORRANGE=FULL|LIMITED`; limited when absent,
    /// full for mono).
    pub range: YuvRange,
}

impl Header {
    /// A header for frames of `width` x `height` at `fps`.
    pub fn new(width: u32, height: u32, fps: f64, chroma: Chroma, range: YuvRange) -> Self {
        Header {
            width,
            height,
            rate: rate_ratio(fps),
            chroma,
            range,
        }
    }

    /// Frames per second (25 when the `F` tag was absent).
    pub fn fps(&self) -> f64 {
        self.rate.0 as f64 / self.rate.1 as f64
    }

    /// Bytes of one frame's planes (Y, then U and V when present).
    pub fn frame_bytes(&self) -> usize {
        let (w, h) = (self.width as usize, self.height as usize);
        w * h + 2 * self.chroma.chroma_plane(w, h)
    }

    /// Parses a header line (with or without its `\n`). Errors name `file`
    /// and say how to fix it. Unknown tags (`I`, `A`, other `X`) are
    /// accepted and ignored, as players do.
    pub fn parse(line: &[u8], file: &Path) -> Result<Header> {
        let bad = |reason: String| Error::invalid(format!("Y4M file {file:?}"), reason);
        let text = std::str::from_utf8(line)
            .map_err(|_| bad("the header is not text; fix: use a YUV4MPEG2 file".into()))?;
        let mut fields = text.trim_end_matches('\n').split(' ');
        if fields.next() != Some("YUV4MPEG2") {
            return Err(bad(
                "not a Y4M file (no YUV4MPEG2 header line); fix: convert it with ffmpeg -i IN -pix_fmt yuv420p OUT.y4m".into(),
            ));
        }
        let (mut w, mut h) = (None, None);
        let mut rate = (25, 1);
        let mut chroma = Chroma::C420;
        let mut range = None;
        for f in fields.filter(|f| !f.is_empty()) {
            // A field starting with a non-ASCII character is no tag we know.
            let Some((tag, val)) = f.split_at_checked(1) else {
                continue;
            };
            let number = |what: &str| {
                val.parse::<u32>().map_err(|_| {
                    bad(format!(
                        "bad {what} {f:?} in the header; fix: write it as a whole number of pixels"
                    ))
                })
            };
            match tag {
                "W" => w = Some(number("width")?),
                "H" => h = Some(number("height")?),
                "F" => {
                    let ratio = val
                        .split_once(':')
                        .and_then(|(n, d)| Some((n.parse::<u64>().ok()?, d.parse::<u64>().ok()?)))
                        .filter(|&(n, d)| n > 0 && d > 0);
                    rate = ratio.ok_or_else(|| {
                        bad(format!(
                            "bad frame rate {f:?} in the header; fix: write it as F<num>:<den>, e.g. F30:1"
                        ))
                    })?;
                }
                "C" => {
                    chroma = match val {
                        "420" | "420jpeg" | "420paldv" | "420mpeg2" => Chroma::C420,
                        "422" => Chroma::C422,
                        "444" => Chroma::C444,
                        "mono" => Chroma::Mono,
                        other => {
                            return Err(bad(format!(
                                "colour space C{other} is not supported; fix: convert with \
                                 ffmpeg -pix_fmt yuv420p (or 422p/444p/gray), 8 bits"
                            )))
                        }
                    }
                }
                "X" => match val {
                    "COLORRANGE=FULL" => range = Some(YuvRange::Full),
                    "COLORRANGE=LIMITED" => range = Some(YuvRange::Limited),
                    _ => {}
                },
                _ => {}
            }
        }
        let (w, h) = match (w, h) {
            (Some(w), Some(h)) if w > 0 && h > 0 => (w, h),
            _ => {
                return Err(bad(format!(
                    "the header has a bad size W{} H{}; fix: write both, 1 pixel or more",
                    w.map_or("?".into(), |w| w.to_string()),
                    h.map_or("?".into(), |h| h.to_string()),
                )))
            }
        };
        // Mono is luma as-is unless the file says otherwise.
        let range = range.unwrap_or(if chroma == Chroma::Mono {
            YuvRange::Full
        } else {
            YuvRange::Limited
        });
        Ok(Header {
            width: w,
            height: h,
            rate,
            chroma,
            range,
        })
    }

    /// The header line, `\n` included.
    pub fn line(&self) -> String {
        let range = match self.range {
            YuvRange::Full => "FULL",
            YuvRange::Limited => "LIMITED",
        };
        format!(
            "YUV4MPEG2 W{} H{} F{}:{} Ip A1:1 C{} XCOLORRANGE={range}\n",
            self.width,
            self.height,
            self.rate.0,
            self.rate.1,
            self.chroma.tag()
        )
    }
}

/// Frame rate as a Y4M `F` ratio (29.97 -> 2997:100).
pub fn rate_ratio(fps: f64) -> (u64, u64) {
    let den = 1000u64;
    let num = (fps.max(0.001) * den as f64).round() as u64;
    let g = gcd(num, den);
    (num / g, den / g)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a.max(1)
    } else {
        gcd(b, a % b)
    }
}

/// What [`Reader::read_frame`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A whole frame is in [`Reader::planes`].
    Frame,
    /// The clean end of the stream.
    End,
    /// A frame cut off by the end of the file (an interrupted recording).
    Truncated,
}

/// What comes after a frame that no marker follows.
enum Follows {
    /// A whole frame with a marker line of the usual length, then a marker
    /// or the end: the marker in between is damaged in place.
    DamagedMarker,
    /// Less than a frame is left: a damaged tail, for the next read.
    ShortTail,
    /// Neither: bytes were lost or added inside the frame just read.
    Misaligned,
}

/// Reads a Y4M file frame by frame, into buffers it owns.
pub struct Reader {
    path: PathBuf,
    file: BufReader<File>,
    header: Header,
    data_start: u64,
    planes: Vec<u8>,
    line: Vec<u8>,
    /// Interleaved chroma for the kernels (NV12 CbCr or YUYV rows).
    scratch: Vec<u8>,
    frames_read: u64,
    frames_corrupt: u64,
    /// The frame after the last one read has a damaged marker but the
    /// usual length (this many bytes): the next read skips it whole.
    next_damaged: Option<u64>,
}

impl Reader {
    /// Opens `path` and parses its header, within the default [`Limits`].
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_limited(path, &Limits::DEFAULT)
    }

    /// Opens `path` and parses its header; a frame size over `limits` is
    /// an error before any frame buffer is allocated.
    pub fn open_limited(path: &Path, limits: &Limits) -> Result<Self> {
        let file =
            File::open(path).map_err(|e| Error::io(format!("opening Y4M video {path:?}"), e))?;
        let mut file = BufReader::new(file);
        let mut line = Vec::new();
        file.by_ref()
            .take(MAX_HEADER)
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::io(format!("reading Y4M header of {path:?}"), e))?;
        if !line.ends_with(b"\n") {
            // Checked first so that a non-Y4M file gets the "not a Y4M file" message.
            Header::parse(&line, path)?;
            return Err(Error::invalid(
                format!("Y4M file {path:?}"),
                "the header line does not end; fix: use a complete YUV4MPEG2 file",
            ));
        }
        let header = Header::parse(&line, path)?;
        limits.check(
            &format!("Y4M file {path:?}"),
            header.width.into(),
            header.height.into(),
        )?;
        Ok(Reader {
            path: path.to_path_buf(),
            file,
            header,
            data_start: line.len() as u64,
            planes: vec![0; header.frame_bytes()],
            line: Vec::with_capacity(64),
            scratch: Vec::new(),
            frames_read: 0,
            frames_corrupt: 0,
            next_damaged: None,
        })
    }

    /// The stream header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Whole frames read since the start (or the last [`Reader::rewind`]).
    pub fn frames_read(&self) -> u64 {
        self.frames_read
    }

    /// Damaged frames skipped since the start (or the last [`Reader::rewind`]).
    pub fn frames_corrupt(&self) -> u64 {
        self.frames_corrupt
    }

    /// The planes of the last frame read (Y, U, V).
    pub fn planes(&self) -> &[u8] {
        &self.planes
    }

    /// Reads the next `FRAME` line and planes.
    ///
    /// A damaged frame (no `FRAME` marker, a marker line that does not end,
    /// or a frame not followed by the next marker, i.e. bytes lost or added)
    /// is an [`Error::CorruptFrame`] naming its number and byte offset; the
    /// reader then stands at the next marker it finds (or the end), so the
    /// following call goes on with the next whole frame.
    pub fn read_frame(&mut self) -> Result<Next> {
        let index = self.frames_read + self.frames_corrupt;
        let start = self.position()?;
        if let Some(whole) = self.next_damaged.take() {
            // Damaged in place (checked when the frame before it was read):
            // the frame has the usual length, so it is skipped whole.
            self.file
                .seek(SeekFrom::Start(start + whole))
                .map_err(|e| self.io_err(e))?;
            return Err(self.corrupt(index, start, "its FRAME marker is damaged"));
        }
        self.line.clear();
        let n = self
            .file
            .by_ref()
            .take(MAX_FRAME_LINE)
            .read_until(b'\n', &mut self.line)
            .map_err(|e| self.io_err(e))?;
        if n == 0 {
            return Ok(Next::End);
        }
        let ended = self.line.ends_with(b"\n");
        if !self.line.starts_with(MARKER) {
            if !ended && MARKER.starts_with(&self.line) {
                return Ok(Next::Truncated);
            }
            return Err(self.skip_damaged(index, start, "it does not start with FRAME"));
        }
        if !ended {
            if n as u64 == MAX_FRAME_LINE {
                return Err(self.skip_damaged(index, start, "its FRAME line does not end"));
            }
            return Ok(Next::Truncated);
        }
        match self.file.read_exact(&mut self.planes) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Next::Truncated),
            Err(e) => return Err(self.io_err(e)),
        }
        if self.at_marker_or_end()? {
            self.frames_read += 1;
            return Ok(Next::Frame);
        }
        // Not followed by a marker: either the next frame's marker is
        // damaged in place (this frame is whole), or bytes were lost or
        // added inside this frame (it is not).
        match self.what_follows()? {
            Follows::DamagedMarker => {
                self.next_damaged = Some(self.line.len() as u64 + self.planes.len() as u64);
                self.frames_read += 1;
                return Ok(Next::Frame);
            }
            Follows::ShortTail => {
                self.frames_read += 1;
                return Ok(Next::Frame);
            }
            Follows::Misaligned => {}
        }
        Err(self.skip_damaged(
            index,
            start,
            "it is not followed by the next FRAME marker (bytes lost or added)",
        ))
    }

    fn position(&mut self) -> Result<u64> {
        self.file.stream_position().map_err(|e| self.io_err(e))
    }

    fn io_err(&self, e: std::io::Error) -> Error {
        Error::io(format!("reading Y4M video {:?}", self.path), e)
    }

    fn corrupt(&mut self, index: u64, offset: u64, reason: &str) -> Error {
        self.frames_corrupt += 1;
        Error::corrupt_frame(
            format!("Y4M file {:?}", self.path),
            format!("frame {index} (byte {offset})"),
            reason,
        )
    }

    /// The frame at `start` is damaged: moves to the first marker after
    /// its own and returns the error for it.
    fn skip_damaged(&mut self, index: u64, start: u64, reason: &str) -> Error {
        let found = self
            .file
            .seek(SeekFrom::Start(start + 1))
            .and_then(|_| self.seek_to_marker());
        if let Err(e) = found {
            return self.io_err(e);
        }
        self.corrupt(index, start, reason)
    }

    /// Moves to the next `FRAME` marker, or to the end when there is none.
    fn seek_to_marker(&mut self) -> std::io::Result<()> {
        let mut pos = self.file.stream_position()?;
        let mut matched = 0;
        loop {
            let buf = self.file.fill_buf()?;
            if buf.is_empty() {
                return Ok(());
            }
            for (i, &b) in buf.iter().enumerate() {
                // No proper prefix of "FRAME" is also a suffix of it, so a
                // mismatch restarts the match at this byte.
                matched = if b == MARKER[matched] {
                    matched + 1
                } else {
                    usize::from(b == MARKER[0])
                };
                if matched == MARKER.len() {
                    let at = pos + i as u64 + 1 - MARKER.len() as u64;
                    self.file.seek(SeekFrom::Start(at))?;
                    return Ok(());
                }
            }
            let len = buf.len();
            self.file.consume(len);
            pos += len as u64;
        }
    }

    /// True when the next bytes begin a marker (as far as they go) or the
    /// file ends here.
    fn at_marker_or_end(&mut self) -> Result<bool> {
        let path = &self.path;
        let buf = self
            .file
            .fill_buf()
            .map_err(|e| Error::io(format!("reading Y4M video {path:?}"), e))?;
        let k = buf.len().min(MARKER.len());
        Ok(buf[..k] == MARKER[..k])
    }

    /// What follows a frame that is not followed by a marker. The position
    /// is left where it was.
    fn what_follows(&mut self) -> Result<Follows> {
        let here = self.position()?;
        let whole = self.line.len() as u64 + self.planes.len() as u64;
        let probe = self
            .file
            .seek(SeekFrom::Start(here + whole))
            .map_err(|e| self.io_err(e))
            .and_then(|_| {
                let end = self.file.get_ref().metadata().map(|m| m.len()).unwrap_or(0);
                if here + whole > end {
                    return Ok(Follows::ShortTail);
                }
                Ok(if self.at_marker_or_end()? {
                    Follows::DamagedMarker
                } else {
                    Follows::Misaligned
                })
            });
        self.file
            .seek(SeekFrom::Start(here))
            .map_err(|e| self.io_err(e))?;
        probe
    }

    /// Goes back to the first frame.
    pub fn rewind(&mut self) -> Result<()> {
        self.file
            .seek(SeekFrom::Start(self.data_start))
            .map_err(|e| Error::io(format!("rewinding {:?}", self.path), e))?;
        self.frames_read = 0;
        self.frames_corrupt = 0;
        self.next_damaged = None;
        Ok(())
    }

    /// Converts the last frame read to RGB into `frame` (resized, buffer
    /// reused), with the kernels' BT.601 conversion in the header's range.
    pub fn to_rgb(&mut self, frame: &mut Frame) -> Result<()> {
        let Header {
            width,
            height,
            chroma,
            range,
            ..
        } = self.header;
        let (w, h) = (width as usize, height as usize);
        frame.width = width;
        frame.height = height;
        frame.rgb.resize(w * h * 3, 0);
        let plane = chroma.chroma_plane(w, h);
        let (y, rest) = self.planes.split_at(w * h);
        let (u, v) = rest.split_at(plane);
        let cw = w.div_ceil(2);
        let m = YuvMatrix::Bt601;
        match chroma {
            Chroma::Mono => kernels::grey_to_rgb(y, w, h, w, range, &mut frame.rgb),
            Chroma::C420 => {
                // NV12 is 4:2:0 with the chroma interleaved.
                self.scratch.resize(2 * plane, 0);
                for (o, (&cb, &cr)) in self.scratch.chunks_exact_mut(2).zip(u.iter().zip(v)) {
                    o.copy_from_slice(&[cb, cr]);
                }
                kernels::nv12_to_rgb(y, w, &self.scratch, 2 * cw, w, h, m, range, &mut frame.rgb)
            }
            Chroma::C422 => {
                // YUYV is 4:2:2 packed; an odd width repeats the last luma.
                self.scratch.resize(4 * cw * h, 0);
                for (r, o) in self.scratch.chunks_exact_mut(4 * cw).enumerate() {
                    let yr = &y[r * w..(r + 1) * w];
                    for (c, px) in o.chunks_exact_mut(4).enumerate() {
                        let i = r * cw + c;
                        let y1 = yr.get(2 * c + 1).copied().unwrap_or(yr[2 * c]);
                        px.copy_from_slice(&[yr[2 * c], u[i], y1, v[i]]);
                    }
                }
                kernels::yuyv_to_rgb(&self.scratch, w, h, 4 * cw, m, range, &mut frame.rgb)
            }
            Chroma::C444 => {
                let k = YuvCoeffs::new(m, range);
                for (i, o) in frame.rgb.chunks_exact_mut(3).enumerate() {
                    o.copy_from_slice(&kernels::scalar::yuv_pixel(y[i], u[i], v[i], &k));
                }
                Ok(())
            }
        }
    }
}

/// Full-range BT.601 RGB -> Y'CbCr: the one conversion in this direction,
/// for 4:4:4 writing (`XCOLORRANGE=FULL`). Reading back goes through the
/// kernels' inverse ([`Reader::to_rgb`]).
pub fn rgb_to_ycbcr_full(r: u8, g: u8, b: u8) -> [u8; 3] {
    // The coefficients in 16-bit fixed point (JPEG's), rounded half up:
    // integer arithmetic the compiler vectorises over a frame, where
    // `f32::round` is a libm call per component on baseline x86_64.
    let (r, g, b) = (r as i32, g as i32, b as i32);
    const HALF: i32 = 1 << 15;
    const MID: i32 = 128 << 16;
    let y = (19_595 * r + 38_470 * g + 7_471 * b + HALF) >> 16;
    let cb = (-11_059 * r - 21_709 * g + 32_768 * b + MID + HALF) >> 16;
    let cr = (32_768 * r - 27_439 * g - 5_329 * b + MID + HALF) >> 16;
    [
        y.clamp(0, 255) as u8,
        cb.clamp(0, 255) as u8,
        cr.clamp(0, 255) as u8,
    ]
}

/// Fills `planes` (Y, Cb, Cr; `3 * width * height` bytes) from an RGB frame.
pub fn rgb_to_planes_444(frame: &Frame, planes: &mut [u8]) {
    let n = frame.width as usize * frame.height as usize;
    let (y, rest) = planes.split_at_mut(n);
    let (cb, cr) = rest.split_at_mut(n);
    for (i, px) in frame.rgb.chunks_exact(3).enumerate() {
        let [py, pcb, pcr] = rgb_to_ycbcr_full(px[0], px[1], px[2]);
        y[i] = py;
        cb[i] = pcb;
        cr[i] = pcr;
    }
}

/// Writes a Y4M file: the header with the first frame, then `FRAME` lines
/// and planes, each frame flushed as it is written (a crash loses at most
/// the frame in flight), stopping at a size cap.
pub struct Writer {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    header: Option<Header>,
    max_bytes: u64,
    written: u64,
    frames: u64,
    stopped: bool,
}

impl Writer {
    /// A writer for `path`. The file (and its folder) is created, or
    /// truncated, at the first frame: a run that ends before its first
    /// frame leaves an existing file alone and writes no empty one. Frames
    /// that would take the file past `max_bytes` are not written (use
    /// `u64::MAX` for no cap).
    pub fn create(path: impl Into<PathBuf>, max_bytes: u64) -> Result<Self> {
        Ok(Writer {
            path: path.into(),
            out: None,
            header: None,
            max_bytes,
            written: 0,
            frames: 0,
            stopped: false,
        })
    }

    fn open(&mut self) -> Result<&mut BufWriter<File>> {
        if self.out.is_none() {
            let path = &self.path;
            if let Some(p) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(p)
                    .map_err(|e| Error::io(format!("creating output folder {p:?}"), e))?;
            }
            let file =
                File::create(path).map_err(|e| Error::io(format!("creating video {path:?}"), e))?;
            self.out = Some(BufWriter::new(file));
        }
        Ok(self.out.as_mut().expect("opened above"))
    }

    /// Stops the file: later frames are not written.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Bytes written so far (header included).
    pub fn bytes(&self) -> u64 {
        self.written
    }

    /// True once the size cap stopped the file.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Writes one frame of `header`'s layout (the first frame's header is
    /// the file's; a later frame of another layout is an error). `planes`
    /// must hold [`Header::frame_bytes`]. Returns `Ok(false)` when the cap
    /// stops the file (the first time with a warning).
    pub fn write_frame(&mut self, header: &Header, planes: &[u8]) -> Result<bool> {
        if self.stopped {
            return Ok(false);
        }
        let line = match &self.header {
            None => Some(header.line()),
            Some(h) if (h.width, h.height, h.chroma) == (header.width, header.height, header.chroma) => None,
            Some(h) => {
                return Err(Error::Sink {
                    sink: format!("video {:?}", self.path),
                    reason: format!(
                        "frame changed from {}x{} (C{}) to {}x{} (C{}); a Y4M file has one size and format",
                        h.width,
                        h.height,
                        h.chroma.tag(),
                        header.width,
                        header.height,
                        header.chroma.tag()
                    ),
                })
            }
        };
        if planes.len() != header.frame_bytes() {
            return Err(Error::invalid(
                format!("video {:?}", self.path),
                format!(
                    "frame planes hold {} bytes, a {}x{} C{} frame needs {}",
                    planes.len(),
                    header.width,
                    header.height,
                    header.chroma.tag(),
                    header.frame_bytes()
                ),
            ));
        }
        let cost = line.as_ref().map_or(0, String::len) + 6 + planes.len();
        if self.written + cost as u64 > self.max_bytes {
            self.stopped = true;
            log::warn!(
                "video {:?} stopped at {} frames, {} bytes: the next frame would pass the size cap",
                self.path,
                self.frames,
                self.written
            );
            return Ok(false);
        }
        let out = self.open()?;
        let wrote = (|| {
            if let Some(l) = &line {
                out.write_all(l.as_bytes())?;
            }
            out.write_all(b"FRAME\n")?;
            out.write_all(planes)?;
            out.flush()
        })();
        wrote.map_err(|e| Error::io(format!("writing video {:?}", self.path), e))?;
        if let Some(l) = line {
            self.written += l.len() as u64;
            self.header = Some(*header);
        }
        self.written += 6 + planes.len() as u64;
        self.frames += 1;
        Ok(true)
    }

    /// Flushes the file.
    pub fn flush(&mut self) -> Result<()> {
        match self.out.as_mut() {
            Some(out) => out
                .flush()
                .map_err(|e| Error::io(format!("flushing video {:?}", self.path), e)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Header> {
        Header::parse(line.as_bytes(), Path::new("clip.y4m"))
    }

    #[test]
    fn rate_ratios() {
        assert_eq!(rate_ratio(30.0), (30, 1));
        assert_eq!(rate_ratio(29.97), (2997, 100));
        assert_eq!(rate_ratio(12.5), (25, 2));
    }

    #[test]
    fn parses_ffmpeg_and_our_headers() {
        let h = parse("YUV4MPEG2 W640 H360 F30000:1001 Ip A1:1 C420jpeg XYSCSS=420JPEG\n").unwrap();
        assert_eq!((h.width, h.height, h.rate), (640, 360, (30000, 1001)));
        assert_eq!((h.chroma, h.range), (Chroma::C420, YuvRange::Limited));
        assert!((h.fps() - 29.97).abs() < 0.01);
        assert_eq!(h.frame_bytes(), 640 * 360 * 3 / 2);
        let h = parse("YUV4MPEG2 W3 H2 C444 XCOLORRANGE=FULL").unwrap();
        assert_eq!(
            (h.chroma, h.range, h.rate),
            (Chroma::C444, YuvRange::Full, (25, 1))
        );
        let h = parse("YUV4MPEG2 W5 H3 C422").unwrap();
        assert_eq!(h.frame_bytes(), 15 + 2 * 3 * 3);
        let h = parse("YUV4MPEG2 W4 H4 Cmono").unwrap();
        assert_eq!((h.range, h.frame_bytes()), (YuvRange::Full, 16));
        // Our own header reads back as written.
        for (c, r) in [
            (Chroma::C420, YuvRange::Limited),
            (Chroma::C422, YuvRange::Limited),
            (Chroma::C444, YuvRange::Full),
            (Chroma::Mono, YuvRange::Full),
        ] {
            let h = Header::new(6, 4, 29.97, c, r);
            assert_eq!(parse(&h.line()).unwrap(), h);
        }
        assert_eq!(
            Header::new(4, 2, 15.0, Chroma::C444, YuvRange::Full).line(),
            "YUV4MPEG2 W4 H2 F15:1 Ip A1:1 C444 XCOLORRANGE=FULL\n"
        );
    }

    #[test]
    fn bad_headers_name_the_file_and_the_fix() {
        for (line, says) in [
            ("RIFF....", "not a Y4M file"),
            ("YUV4MPEG2 W2 H2 C420p10", "C420p10"),
            ("YUV4MPEG2 W2", "bad size"),
            ("YUV4MPEG2 W0 H2", "bad size"),
            ("YUV4MPEG2 Wx H2", "bad width"),
            ("YUV4MPEG2 W2 H2 F30", "bad frame rate"),
            ("YUV4MPEG2 W2 H2 F0:1", "bad frame rate"),
        ] {
            let e = parse(line).unwrap_err().to_string();
            assert!(
                e.contains("clip.y4m") && e.contains(says) && e.contains("fix:"),
                "{line}: {e}"
            );
        }
        // A field that starts with a multi-byte character is skipped, not a panic.
        let h = parse("YUV4MPEG2 W2 H2 \u{e9}t\u{e9}").unwrap();
        assert_eq!((h.width, h.height), (2, 2));
        let e = Header::parse(b"YUV4MPEG2 \xff", Path::new("x.y4m")).unwrap_err();
        assert!(e.to_string().contains("x.y4m"), "{e}");
    }

    fn write_file(dir: &Path, header: &Header, frames: &[&[u8]]) -> PathBuf {
        let path = dir.join("v.y4m");
        let mut w = Writer::create(&path, u64::MAX).unwrap();
        for f in frames {
            assert!(w.write_frame(header, f).unwrap());
        }
        path
    }

    #[test]
    fn every_chroma_reads_through_the_kernels() {
        let dir = tempfile::tempdir().unwrap();
        // 3x2 limited-range red (Y 81, Cb 90, Cr 240) in each layout.
        for chroma in [Chroma::C420, Chroma::C422, Chroma::C444] {
            let h = Header::new(3, 2, 10.0, chroma, YuvRange::Limited);
            let plane = chroma.chroma_plane(3, 2);
            let mut planes = vec![81u8; 6];
            planes.extend(std::iter::repeat_n(90, plane));
            planes.extend(std::iter::repeat_n(240, plane));
            let path = write_file(dir.path(), &h, &[&planes]);
            let mut r = Reader::open(&path).unwrap();
            assert_eq!(*r.header(), h);
            assert_eq!(r.read_frame().unwrap(), Next::Frame);
            let mut f = Frame::new(1, 1);
            r.to_rgb(&mut f).unwrap();
            assert_eq!((f.width, f.height), (3, 2));
            for px in f.rgb.chunks_exact(3) {
                assert!(px[0] > 250 && px[1] < 5 && px[2] < 5, "{chroma:?} {px:?}");
            }
            assert_eq!(r.read_frame().unwrap(), Next::End);
        }
        let h = Header::new(2, 1, 10.0, Chroma::Mono, YuvRange::Full);
        let path = write_file(dir.path(), &h, &[&[7, 200]]);
        let mut r = Reader::open(&path).unwrap();
        r.read_frame().unwrap();
        let mut f = Frame::new(1, 1);
        r.to_rgb(&mut f).unwrap();
        assert_eq!(f.rgb, [7, 7, 7, 200, 200, 200]);
    }

    #[test]
    fn frames_cut_off_or_corrupt_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let h = Header::new(2, 2, 10.0, Chroma::Mono, YuvRange::Full);
        let path = write_file(dir.path(), &h, &[&[1, 2, 3, 4]]);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend(b"FRAME\n\x01\x02");
        std::fs::write(&path, &bytes).unwrap();
        let mut r = Reader::open(&path).unwrap();
        assert_eq!(r.read_frame().unwrap(), Next::Frame);
        assert_eq!(r.planes(), [1, 2, 3, 4]);
        assert_eq!(r.read_frame().unwrap(), Next::Truncated);
        r.rewind().unwrap();
        assert_eq!((r.read_frame().unwrap(), r.frames_read()), (Next::Frame, 1));
        bytes.truncate(bytes.len() - 8);
        bytes.extend(b"FRAMX\n");
        std::fs::write(&path, &bytes).unwrap();
        let mut r = Reader::open(&path).unwrap();
        r.read_frame().unwrap();
        let e = r.read_frame().unwrap_err().to_string();
        assert!(e.contains("v.y4m") && e.contains("FRAME"), "{e}");
    }

    /// Ten 4x2 mono frames, frame n filled with n; returns the path and bytes.
    fn ten_frames(dir: &Path) -> (PathBuf, Vec<u8>) {
        let h = Header::new(4, 2, 10.0, Chroma::Mono, YuvRange::Full);
        let planes: Vec<Vec<u8>> = (0..10u8).map(|n| vec![n; 8]).collect();
        let refs: Vec<&[u8]> = planes.iter().map(|p| p.as_slice()).collect();
        let path = write_file(dir, &h, &refs);
        let bytes = std::fs::read(&path).unwrap();
        (path, bytes)
    }

    /// Reads to the end: (values of the whole frames, damaged-frame errors).
    fn read_all(path: &Path) -> (Vec<u8>, Vec<String>) {
        let mut r = Reader::open(path).unwrap();
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        for _ in 0..100 {
            match r.read_frame() {
                Ok(Next::Frame) => good.push(r.planes()[0]),
                Ok(_) => return (good, bad),
                Err(e) => {
                    assert!(matches!(e, Error::CorruptFrame { .. }), "{e}");
                    bad.push(e.to_string());
                }
            }
        }
        panic!("no end after 100 reads: {good:?} {bad:?}");
    }

    #[test]
    fn a_damaged_marker_skips_only_its_frame() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut bytes) = ten_frames(dir.path());
        let header = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        // Frame 4's marker, damaged in place.
        let at = header + 4 * (6 + 8);
        bytes[at..at + 5].copy_from_slice(b"FR\0ME");
        std::fs::write(&path, &bytes).unwrap();
        let (good, bad) = read_all(&path);
        assert_eq!(good, [0, 1, 2, 3, 5, 6, 7, 8, 9]);
        assert_eq!(bad.len(), 1);
        assert!(
            bad[0].contains("frame 4") && bad[0].contains("v.y4m"),
            "{bad:?}"
        );
    }

    #[test]
    fn lost_or_added_bytes_resynchronise_at_the_next_marker() {
        let dir = tempfile::tempdir().unwrap();
        let (path, bytes) = ten_frames(dir.path());
        let header = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        // Three bytes added inside frame 2, three lost inside frame 6.
        let mut changed = bytes.clone();
        let f6 = header + 6 * 14 + 8;
        changed.drain(f6..f6 + 3);
        let f2 = header + 2 * 14 + 8;
        changed.splice(f2..f2, [7u8, 7, 7]);
        std::fs::write(&path, &changed).unwrap();
        let (good, bad) = read_all(&path);
        assert_eq!(good, [0, 1, 3, 4, 5, 7, 8, 9], "{bad:?}");
        assert_eq!(bad.len(), 2, "{bad:?}");
    }

    #[test]
    fn sizes_over_the_limit_are_refused_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.y4m");
        std::fs::write(&path, b"YUV4MPEG2 W100000 H100000 C444\nFRAME\n").unwrap();
        let e = Reader::open(&path).err().unwrap().to_string();
        assert!(e.contains("huge.y4m") && e.contains("8192x8192"), "{e}");
        let small = Limits {
            max_width: 64,
            max_height: 64,
        };
        std::fs::write(&path, b"YUV4MPEG2 W65 H2 C444\n").unwrap();
        assert!(Reader::open_limited(&path, &small).is_err());
        assert!(Reader::open(&path).is_ok());
    }

    #[test]
    fn a_writer_that_never_wrote_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/never.y4m");
        let mut w = Writer::create(&path, u64::MAX).unwrap();
        w.flush().unwrap();
        drop(w);
        assert!(!path.exists() && !dir.path().join("sub").exists());
    }

    #[test]
    fn writer_keeps_one_layout_and_stops_at_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/c.y4m");
        let h = Header::new(2, 2, 10.0, Chroma::Mono, YuvRange::Full);
        let cap = (h.line().len() + 2 * (6 + 4)) as u64;
        let mut w = Writer::create(&path, cap).unwrap();
        assert!(w.write_frame(&h, &[0; 4]).unwrap());
        assert!(w.write_frame(&h, &[0; 4]).unwrap());
        assert!(!w.write_frame(&h, &[0; 4]).unwrap());
        assert!(w.stopped() && w.frames() == 2 && w.bytes() == cap);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), cap);
        let mut w = Writer::create(&path, u64::MAX).unwrap();
        w.write_frame(&h, &[0; 4]).unwrap();
        let other = Header::new(4, 2, 10.0, Chroma::Mono, YuvRange::Full);
        assert!(w.write_frame(&other, &[0; 8]).is_err());
        assert!(w.write_frame(&h, &[0; 3]).is_err());
    }

    #[test]
    fn ycbcr_full_round_trips_through_the_kernels() {
        let k = YuvCoeffs::new(YuvMatrix::Bt601, YuvRange::Full);
        for rgb in [[0u8, 0, 0], [255, 255, 255], [200, 30, 90], [10, 240, 128]] {
            let [y, cb, cr] = rgb_to_ycbcr_full(rgb[0], rgb[1], rgb[2]);
            let back = kernels::scalar::yuv_pixel(y, cb, cr, &k);
            for c in 0..3 {
                assert!(back[c].abs_diff(rgb[c]) <= 2, "{rgb:?} -> {back:?}");
            }
        }
        // Within one level of the exact formula for every grey and a
        // spread of colours.
        for v in (0..=255u8).step_by(5) {
            for (r, g, b) in [(v, v, v), (v, 255 - v, v / 2), (255 - v, v / 3, v)] {
                let (fr, fg, fb) = (r as f64, g as f64, b as f64);
                let exact = [
                    0.299 * fr + 0.587 * fg + 0.114 * fb,
                    128.0 - 0.168_736 * fr - 0.331_264 * fg + 0.5 * fb,
                    128.0 + 0.5 * fr - 0.418_688 * fg - 0.081_312 * fb,
                ];
                let got = rgb_to_ycbcr_full(r, g, b);
                for c in 0..3 {
                    let want = exact[c].round().clamp(0.0, 255.0);
                    assert!((got[c] as f64 - want).abs() <= 1.0, "{r},{g},{b}: {got:?}");
                }
            }
        }
        assert_eq!(rgb_to_ycbcr_full(0, 0, 0), [0, 128, 128]);
        assert_eq!(rgb_to_ycbcr_full(255, 255, 255), [255, 128, 128]);
        assert_eq!(rgb_to_ycbcr_full(255, 0, 0)[2], 255);
    }
}
