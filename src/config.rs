//! Configuration: a TOML file (or the demo's defaults) validated into the
//! objects that build the pipeline.
//!
//! As in ripgrep's low/high-level arguments, [`RawConfig`] is exactly what
//! the file says, with serde defaults; [`RawConfig::validate`] checks it
//! once, up front, so a bad value is reported with its key and its fix
//! before any thread starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::frame::{Limits, Rect};
use crate::infer::model::Precision;
use crate::source::phantom::PhantomKind;
use crate::source::pixfmt::PixelFormat;
use crate::source::replay::Pace;
use crate::{Error, Result};

/// The most threads per inference worker (`model.threads`).
pub const MAX_THREADS: usize = 256;

/// What the config file holds. Every key has a default except `model.path`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `"phantom"` (built-in generator), a V4L2 device path, or a file source.
    #[serde(default = "default_source")]
    pub source: String,
    /// `"null"`, `"png:DIR"`, a `.y4m` or `.gif` path, or a display device.
    #[serde(default = "default_display")]
    pub display: String,
    /// Masks older than this (from their frame's capture to the frame shown) are not drawn.
    #[serde(default = "default_max_mask_age_ms")]
    pub max_mask_age_ms: u64,
    /// Stop after this many frames (0: run until the source ends or a signal).
    #[serde(default)]
    pub frames: u64,
    /// Where to write the final statistics as JSON, if anywhere.
    #[serde(default)]
    pub stats_json: Option<PathBuf>,
    /// Latency samples kept per stage for the percentiles (a uniform
    /// reservoir past that): memory grows until this many frames, then
    /// stays flat.
    #[serde(default = "default_stats_samples")]
    pub stats_samples: usize,
    /// Region of interest: the part of the frame the network sees.
    #[serde(default)]
    pub roi: Option<Rect>,
    /// Built-in phantom source settings.
    #[serde(default)]
    pub phantom: PhantomConfig,
    /// Model settings.
    pub model: ModelConfig,
    /// Overlay settings.
    #[serde(default)]
    pub overlay: OverlayConfig,
    /// V4L2 capture and file replay settings.
    #[serde(default)]
    pub capture: CaptureConfig,
    /// Lesion measurements and the pixel spacing.
    #[serde(default)]
    pub measure: MeasureConfig,
    /// The control socket and the cine (freeze, step back).
    #[serde(default)]
    pub control: ControlConfig,
    /// The PACS the spool is sent to; none: nothing is sent.
    #[serde(default)]
    pub pacs: Option<PacsConfig>,
    /// `"none"`, `"input"` (the raw source frames) or `"overlay"` (what is shown).
    #[serde(default, deserialize_with = "named::record")]
    pub record: RecordMode,
    /// Where the recording goes (a `.y4m` file).
    #[serde(default = "default_record_path")]
    pub record_path: PathBuf,
    /// Recording stops (the run goes on) when the file would exceed this size.
    #[serde(default = "default_record_max_mb")]
    pub record_max_mb: u64,
}

fn default_stats_samples() -> usize {
    100_000
}
fn default_record_path() -> PathBuf {
    "out/record.y4m".into()
}
fn default_record_max_mb() -> u64 {
    1024
}

fn default_snapshot_dir() -> PathBuf {
    "out/snapshots".into()
}
fn default_spool_dir() -> PathBuf {
    "out/spool".into()
}
fn default_modality() -> String {
    "US".into()
}

/// The PACS that the spool's files are sent to by C-STORE (`[pacs]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacsConfig {
    /// The PACS's host name or address.
    pub host: String,
    /// Its DICOM port (1..=65535).
    pub port: u32,
    /// The PACS's AE title.
    #[serde(default = "default_called_ae")]
    pub called_ae: String,
    /// Our AE title.
    #[serde(default = "default_calling_ae")]
    pub calling_ae: String,
    /// The first wait after a failed send.
    #[serde(default = "default_retry_min_ms")]
    pub retry_min_ms: u64,
    /// The longest wait between retries (the wait doubles up to it).
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
}

fn default_called_ae() -> String {
    "ANY-SCP".into()
}
fn default_calling_ae() -> String {
    "LGMS-EDGE".into()
}
fn default_retry_min_ms() -> u64 {
    1000
}
fn default_retry_max_ms() -> u64 {
    60_000
}

impl PacsConfig {
    /// The sender's settings, or the message naming the bad key and the fix.
    fn check(&self) -> std::result::Result<crate::pacs::Settings, String> {
        if self.host.trim().is_empty() {
            return Err(
                "pacs.host is empty; fix: the PACS's host name or address, e.g. \"pacs.local\""
                    .into(),
            );
        }
        let port = u16::try_from(self.port)
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| {
                format!(
                    "pacs.port = {}; fix: use 1..=65535 (DICOM's is 104, often 11112)",
                    self.port
                )
            })?;
        for (key, value) in [
            ("called_ae", &self.called_ae),
            ("calling_ae", &self.calling_ae),
        ] {
            crate::pacs::check_ae_title(value).map_err(|why| {
                format!(
                    "pacs.{key} = {value:?} {why}; fix: 1 to 16 printable ASCII characters without a backslash, e.g. \"LGMS-EDGE\""
                )
            })?;
        }
        let (min, max) = (self.retry_min_ms, self.retry_max_ms);
        if min == 0 || max < min {
            return Err(format!(
                "pacs.retry_min_ms = {min}, retry_max_ms = {max}; fix: 0 < retry_min_ms <= retry_max_ms, e.g. 1000 and 60000"
            ));
        }
        Ok(crate::pacs::Settings {
            host: self.host.trim().to_string(),
            port,
            called_ae: self.called_ae.clone(),
            calling_ae: self.calling_ae.clone(),
            backoff: crate::source::backoff::Backoff::new(
                Duration::from_millis(min),
                Duration::from_millis(max),
            ),
            poll: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        })
    }
}

/// The control socket and the cine (`[control]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Unix socket taking one JSON command per line (freeze, unfreeze,
    /// step, set-depth, overlay, status); none: no socket.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// Seconds of shown frames kept for freeze and stepping back; the
    /// memory is this x fps x width x height x 3 bytes, allocated at start.
    #[serde(default)]
    pub cine_seconds: f64,
    /// Where `save-snapshot` writes the picture on screen as PNG.
    #[serde(default = "default_snapshot_dir")]
    pub snapshot_dir: PathBuf,
    /// Where `save-snapshot` and `save-cine` put their DICOM files and
    /// JSON sidecars, named by SOP Instance UID, for a sender to take.
    #[serde(default = "default_spool_dir")]
    pub spool_dir: PathBuf,
    /// The DICOM files' modality: `"US"` (Ultrasound Image, Ultrasound
    /// Multi-frame Image) or `"ES"` (endoscopy: Secondary Capture).
    #[serde(default = "default_modality")]
    pub modality: String,
    /// PatientID until `set-patient` says otherwise (LO: 64 characters).
    #[serde(default)]
    pub patient_id: String,
    /// PatientName, `Family^Given` (PN: 64 characters).
    #[serde(default)]
    pub patient_name: String,
    /// StudyID (SH: 16 characters).
    #[serde(default)]
    pub study_id: String,
    /// AccessionNumber (SH: 16 characters).
    #[serde(default)]
    pub accession_number: String,
    /// Input devices (`/dev/input/event*`, keypads, foot switches) whose
    /// key presses send commands.
    #[serde(default)]
    pub input: Vec<PathBuf>,
    /// Key (name like `KEY_F1` or number) -> action (`freeze`,
    /// `unfreeze`, `freeze-toggle`, `step-back`, `step-forward`,
    /// `overlay-toggle`, `save-snapshot`, `save-cine`).
    #[serde(default)]
    pub keys: std::collections::BTreeMap<String, String>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            socket: None,
            cine_seconds: 0.0,
            snapshot_dir: default_snapshot_dir(),
            spool_dir: default_spool_dir(),
            modality: default_modality(),
            patient_id: String::new(),
            patient_name: String::new(),
            study_id: String::new(),
            accession_number: String::new(),
            input: Vec::new(),
            keys: Default::default(),
        }
    }
}

/// Lesion measurements (`[measure]`): calipers, lengths and areas on screen.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasureConfig {
    /// Measure and draw the lesions.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Pixel spacing `[x, y]` in mm of the frame.
    #[serde(default)]
    pub mm_per_pixel: Option<[f64; 2]>,
    /// Or: the scanner's depth setting in mm, shown over the ROI's height
    /// (square pixels).
    #[serde(default)]
    pub depth_mm: Option<f64>,
    /// Regions smaller than this many pixels are specks, not lesions.
    #[serde(default = "default_min_area_px")]
    pub min_area_px: u32,
    /// Masks each lesion's figures are averaged over (1..=16).
    #[serde(default = "default_smooth_frames")]
    pub smooth_frames: usize,
}

fn default_min_area_px() -> u32 {
    50
}
fn default_smooth_frames() -> usize {
    5
}

impl Default for MeasureConfig {
    fn default() -> Self {
        MeasureConfig {
            enabled: true,
            mm_per_pixel: None,
            depth_mm: None,
            min_area_px: default_min_area_px(),
            smooth_frames: default_smooth_frames(),
        }
    }
}

impl MeasureConfig {
    /// The settings for frames whose ROI (or whole frame) is `roi`; `None`
    /// when measuring is off.
    pub fn settings(&self, roi: Rect) -> Option<crate::measure::Settings> {
        use crate::measure::Calibration;
        self.enabled.then(|| crate::measure::Settings {
            calibration: match (self.mm_per_pixel, self.depth_mm) {
                (Some([x, y]), _) => Calibration::spacing(x, y),
                (None, Some(d)) => Calibration::from_depth(d, roi),
                (None, None) => Calibration::NONE,
            },
            min_area_px: self.min_area_px,
            smooth_frames: self.smooth_frames,
        })
    }
}

/// Settings of V4L2 capture and of file replay (`[capture]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    /// Pixel format to ask the device for, or of a raw dump file:
    /// `"yuyv"`, `"nv12"`, `"grey"` (or `"gray"`), `"rgb24"`, `"bgr24"`,
    /// `"mjpeg"`, in any case.
    #[serde(default = "default_capture_format", deserialize_with = "named::format")]
    pub format: PixelFormat,
    /// Frame width to ask for (and of raw dump files).
    #[serde(default = "default_width")]
    pub width: u32,
    /// Frame height to ask for (and of raw dump files).
    #[serde(default = "default_height")]
    pub height: u32,
    /// Frames per second to ask for (and the replay pace of folders and raw dumps).
    #[serde(default = "default_capture_fps")]
    pub fps: f64,
    /// Driver buffers in the mmap queue (2..=8): few, so frames stay fresh.
    #[serde(default = "default_buffers")]
    pub buffers: u32,
    /// A frame not arriving within this time counts as a lost signal.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// File replay pace: `"realtime"` or `"fast"` (as fast as the pipeline takes them).
    #[serde(default = "default_pace", deserialize_with = "named::pace")]
    pub pace: Pace,
    /// File replay: start again at the end instead of ending the run.
    #[serde(default, rename = "loop")]
    pub looping: bool,
    /// File replay: the first damaged frame ends the run with an error,
    /// instead of being skipped and counted (`frames_corrupt`).
    #[serde(default)]
    pub strict: bool,
    /// Widest frame any file, device or generator may declare; checked
    /// before anything is allocated for it.
    #[serde(default = "default_max_side")]
    pub max_width: u32,
    /// Tallest frame, as `max_width`.
    #[serde(default = "default_max_side")]
    pub max_height: u32,
}

fn default_max_side() -> u32 {
    Limits::DEFAULT.max_width
}

impl CaptureConfig {
    /// The frame size limits these settings ask for.
    pub fn limits(&self) -> Limits {
        Limits {
            max_width: self.max_width,
            max_height: self.max_height,
        }
    }
}

fn default_capture_format() -> PixelFormat {
    PixelFormat::Yuyv
}
fn default_capture_fps() -> f64 {
    30.0
}
fn default_buffers() -> u32 {
    3
}
fn default_timeout_ms() -> u64 {
    1000
}
fn default_pace() -> Pace {
    Pace::Realtime
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            format: default_capture_format(),
            width: default_width(),
            height: default_height(),
            fps: default_capture_fps(),
            buffers: default_buffers(),
            timeout_ms: default_timeout_ms(),
            pace: default_pace(),
            looping: false,
            strict: false,
            max_width: default_max_side(),
            max_height: default_max_side(),
        }
    }
}

/// What `record` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordMode {
    /// No recording.
    #[default]
    None,
    /// The source's frames as they came in (native YUV layout where there is one).
    Input,
    /// The composited frames, as shown.
    Overlay,
}

fn default_source() -> String {
    "phantom".into()
}
fn default_display() -> String {
    "out/demo.y4m".into()
}
fn default_max_mask_age_ms() -> u64 {
    150
}

/// Settings of the built-in phantom source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhantomConfig {
    /// `"ultrasound"` or `"endoscopy"`.
    #[serde(default = "default_kind", deserialize_with = "named::kind")]
    pub kind: PhantomKind,
    /// Frame width.
    #[serde(default = "default_width")]
    pub width: u32,
    /// Frame height.
    #[serde(default = "default_height")]
    pub height: u32,
    /// Frames per second (real-time pacing).
    #[serde(default = "default_fps")]
    pub fps: f64,
    /// Seed of the generator.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// What the phantom camera delivers: `"rgb24"` (default, the rendered
    /// frame as is), or `"yuyv"` / `"nv12"` (BT.601 limited range, as a
    /// capture card sends them), which the source then converts to RGB
    /// through [`crate::source::pixfmt::Converter`], the code a V4L2
    /// capture runs: the way to measure that conversion at a cart's size
    /// without a capture card.
    #[serde(
        default = "default_phantom_format",
        deserialize_with = "named::phantom_format"
    )]
    pub pixel_format: PixelFormat,
}

fn default_kind() -> PhantomKind {
    PhantomKind::Ultrasound
}
fn default_width() -> u32 {
    640
}
fn default_height() -> u32 {
    480
}
fn default_fps() -> f64 {
    15.0
}
fn default_seed() -> u64 {
    1
}
fn default_phantom_format() -> PixelFormat {
    PixelFormat::Rgb24
}

impl Default for PhantomConfig {
    fn default() -> Self {
        PhantomConfig {
            kind: default_kind(),
            width: default_width(),
            height: default_height(),
            fps: default_fps(),
            seed: default_seed(),
            pixel_format: default_phantom_format(),
        }
    }
}

/// Model and inference settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// ONNX file; relative paths are resolved against the config file's folder's parent project root if not found as given.
    pub path: PathBuf,
    /// `"f32"`, `"int8"` or `"f16"`: must match the model's `lgms.precision`
    /// metadata (f16 runs an f32 model converted at load).
    #[serde(default, deserialize_with = "named::precision")]
    pub precision: Precision,
    /// Inference workers (threads), each with its own model state.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Threads per worker inside tract (1 unless built with multi-threaded kernels).
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Run an int8 (or f16) model that has no passing accuracy record
    /// (`crate::infer::gate`); the HUD then says "int8 unverified".
    #[serde(default)]
    pub allow_ungated: bool,
}

impl ModelConfig {
    /// The defaults, running the model at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ModelConfig {
            path: path.into(),
            precision: Precision::default(),
            workers: default_workers(),
            threads: default_threads(),
            allow_ungated: false,
        }
    }
}

fn default_workers() -> usize {
    1
}
fn default_threads() -> usize {
    1
}

/// Overlay look.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlayConfig {
    /// Mask fill colour, RGB.
    #[serde(default = "default_color")]
    pub color: [u8; 3],
    /// Fill opacity, 0..=1.
    #[serde(default = "default_alpha")]
    pub alpha: f32,
    /// Draw the mask's outline.
    #[serde(default = "default_true")]
    pub outline: bool,
    /// Draw the HUD (the "not for diagnosis" label is always drawn).
    #[serde(default = "default_true")]
    pub hud: bool,
}

fn default_color() -> [u8; 3] {
    [0, 220, 120]
}
fn default_alpha() -> f32 {
    0.4
}
fn default_true() -> bool {
    true
}

impl Default for OverlayConfig {
    fn default() -> Self {
        OverlayConfig {
            color: default_color(),
            alpha: default_alpha(),
            outline: true,
            hud: true,
        }
    }
}

/// Where frames come from, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// The built-in phantom generator.
    Phantom,
    /// A V4L2 capture device.
    V4l2(PathBuf),
    /// The V4L2 capture device whose card name contains this text (`"v4l2:NAME"`).
    V4l2Card(String),
    /// A file or folder to replay.
    File(PathBuf),
}

/// Where composited frames go, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum DisplaySpec {
    /// Discard (benchmarks).
    Null,
    /// One PNG per frame in a folder.
    PngDir(PathBuf),
    /// A Y4M video file.
    Y4m(PathBuf),
    /// An animated GIF.
    Gif(PathBuf),
    /// A Linux framebuffer or DRM device.
    Device(PathBuf),
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages); empty when built from flags.
    pub origin: PathBuf,
    /// Frame source.
    pub source: SourceSpec,
    /// Frame output.
    pub display: DisplaySpec,
    /// Mask age limit.
    pub max_mask_age: Duration,
    /// Frame limit (0: none).
    pub frames: u64,
    /// Stats JSON path.
    pub stats_json: Option<PathBuf>,
    /// Latency samples kept per stage.
    pub stats_samples: usize,
    /// Region of interest, if any.
    pub roi: Option<Rect>,
    /// Phantom settings.
    pub phantom: PhantomConfig,
    /// Model settings (path resolved).
    pub model: ModelConfig,
    /// Overlay settings.
    pub overlay: OverlayConfig,
    /// Capture and replay settings (format name checked).
    pub capture: CaptureConfig,
    /// Measurement settings.
    pub measure: MeasureConfig,
    /// Control socket and cine.
    pub control: ControlConfig,
    /// The PACS sender's settings; none: nothing is sent.
    pub pacs: Option<crate::pacs::Settings>,
    /// Recording mode.
    pub record: RecordMode,
    /// Recording file.
    pub record_path: PathBuf,
    /// Recording size cap in bytes.
    pub record_max_bytes: u64,
}

impl RawConfig {
    /// Reads and parses a TOML file; errors name the file and the key.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config_from(
                path,
                format!(
                    "cannot read it ({e}); fix: pass an existing file, e.g. boards/x86-dev.toml"
                ),
                e,
            )
        })?;
        toml::from_str(&text).map_err(|e| Error::config_from(path, "invalid TOML", e))
    }

    /// The defaults of every key, with `model` as `model.path`: what a file
    /// holding only that key gives. The `demo` command sets fields on it.
    pub fn new(model: impl Into<PathBuf>) -> Self {
        RawConfig {
            source: default_source(),
            display: default_display(),
            max_mask_age_ms: default_max_mask_age_ms(),
            frames: 0,
            stats_json: None,
            stats_samples: default_stats_samples(),
            roi: None,
            phantom: PhantomConfig::default(),
            model: ModelConfig::new(model),
            overlay: OverlayConfig::default(),
            capture: CaptureConfig::default(),
            measure: MeasureConfig::default(),
            control: ControlConfig::default(),
            pacs: None,
            record: RecordMode::default(),
            record_path: default_record_path(),
            record_max_mb: default_record_max_mb(),
        }
    }

    /// Checks every value of a configuration file; `origin` is the file,
    /// named in error messages.
    pub fn validate(self, origin: &Path) -> Result<Config> {
        self.check(origin)
            .map_err(|reason| Error::config(origin, reason))
    }

    /// Checks every value of a configuration built from command-line flags
    /// (`demo`): a bad value is an [`Error::Usage`]. The result's `origin`
    /// is empty.
    pub fn validate_flags(self) -> Result<Config> {
        self.check(Path::new("")).map_err(Error::usage)
    }

    /// Every check, in one place; `Err` is the message naming the key and the fix.
    fn check(self, origin: &Path) -> std::result::Result<Config, String> {
        let bad = |reason: String| reason;
        let source = parse_source(&self.source);
        let display = parse_display(&self.display).map_err(bad)?;
        if self.max_mask_age_ms == 0 {
            return Err(bad(
                "max_mask_age_ms = 0 would never draw a mask; fix: use e.g. 150".into(),
            ));
        }
        let p = &self.phantom;
        if p.width < 64 || p.height < 64 || p.width > 4096 || p.height > 4096 {
            return Err(bad(format!(
                "phantom size {}x{} is out of range; fix: use 64..=4096 pixels per side",
                p.width, p.height
            )));
        }
        let raw_formats = [PixelFormat::Rgb24, PixelFormat::Yuyv, PixelFormat::Nv12];
        if !raw_formats.contains(&p.pixel_format) {
            return Err(bad(format!(
                "phantom.pixel_format = {:?}; fix: use \"rgb24\", \"yuyv\" or \"nv12\"",
                p.pixel_format.name()
            )));
        }
        if p.pixel_format != PixelFormat::Rgb24 && !p.width.is_multiple_of(2) {
            return Err(bad(format!(
                "phantom.width = {} with pixel_format = {:?}: chroma is shared by pixel pairs; fix: use an even width",
                p.width,
                p.pixel_format.name()
            )));
        }
        if !(p.fps > 0.0 && p.fps <= 240.0) {
            return Err(bad(format!(
                "phantom.fps = {}; fix: use 0 < fps <= 240",
                p.fps
            )));
        }
        let m = &self.model;
        if m.workers == 0 || m.workers > 64 {
            return Err(bad(format!(
                "model.workers = {}; fix: use 1..=64",
                m.workers
            )));
        }
        if m.threads == 0 || m.threads > MAX_THREADS {
            return Err(bad(format!(
                "model.threads = {}; fix: use 1..={MAX_THREADS}",
                m.threads
            )));
        }
        let o = &self.overlay;
        if !(0.0..=1.0).contains(&o.alpha) {
            return Err(bad(format!("overlay.alpha = {}; fix: use 0..=1", o.alpha)));
        }
        let c = &self.capture;
        if !(16..=65536).contains(&c.max_width) || !(16..=65536).contains(&c.max_height) {
            return Err(bad(format!(
                "capture.max_width/max_height = {}x{} is out of range; fix: use 16..=65536 pixels per side",
                c.max_width, c.max_height
            )));
        }
        if c.width < 16 || c.height < 16 || c.width > c.max_width || c.height > c.max_height {
            return Err(bad(format!(
                "capture size {}x{} is out of range; fix: use 16..={}x{} pixels (capture.max_width/max_height)",
                c.width, c.height, c.max_width, c.max_height
            )));
        }
        if !(c.fps > 0.0 && c.fps <= 240.0) {
            return Err(bad(format!(
                "capture.fps = {}; fix: use 0 < fps <= 240",
                c.fps
            )));
        }
        if !(2..=8).contains(&c.buffers) {
            return Err(bad(format!(
                "capture.buffers = {}; fix: use 2..=8",
                c.buffers
            )));
        }
        if c.timeout_ms < 50 {
            return Err(bad(format!(
                "capture.timeout_ms = {}; fix: use at least 50",
                c.timeout_ms
            )));
        }
        if !(100..=10_000_000).contains(&self.stats_samples) {
            return Err(bad(format!(
                "stats_samples = {}; fix: use 100..=10000000",
                self.stats_samples
            )));
        }
        let ms = &self.measure;
        if ms.mm_per_pixel.is_some() && ms.depth_mm.is_some() {
            return Err(bad(
                "measure.mm_per_pixel and measure.depth_mm both set; fix: give one of them".into(),
            ));
        }
        let spacing_ok = |v: f64| v.is_finite() && v > 0.0 && v < 100.0;
        if let Some([x, y]) = ms.mm_per_pixel {
            if !spacing_ok(x) || !spacing_ok(y) {
                return Err(bad(format!(
                    "measure.mm_per_pixel = [{x}, {y}]; fix: two spacings in mm per pixel, each 0 < s < 100"
                )));
            }
        }
        if let Some(d) = ms.depth_mm {
            if !(d.is_finite() && d > 0.0 && d <= 1000.0) {
                return Err(bad(format!(
                    "measure.depth_mm = {d}; fix: the scanner's depth in mm, 0 < depth <= 1000"
                )));
            }
        }
        crate::control::input::key_map(&self.control.keys).map_err(bad)?;
        if !self.control.input.is_empty() && self.control.keys.is_empty() {
            return Err(bad(
                "control.input is set but control.keys maps no key; fix: e.g. keys = { KEY_F1 = \"freeze-toggle\" }".into(),
            ));
        }
        let c = &self.control;
        if crate::dicom::Modality::from_code(&c.modality).is_none() {
            return Err(bad(format!(
                "control.modality = {:?}; fix: \"US\" (ultrasound) or \"ES\" (endoscopy)",
                c.modality
            )));
        }
        crate::dicom::Patient::new(&c.patient_id, &c.patient_name)
            .and_then(|_| crate::dicom::check_study(&c.study_id, &c.accession_number))
            .map_err(|e| bad(format!("control.{e}")))?;
        let cs = self.control.cine_seconds;
        if !(cs.is_finite() && (0.0..=120.0).contains(&cs)) {
            return Err(bad(format!(
                "control.cine_seconds = {cs}; fix: use 0..=120 (memory: seconds x fps x frame size)"
            )));
        }
        if !(1..=16).contains(&ms.smooth_frames) {
            return Err(bad(format!(
                "measure.smooth_frames = {}; fix: use 1..=16",
                ms.smooth_frames
            )));
        }
        let pacs = self.pacs.as_ref().map(PacsConfig::check).transpose()?;
        let record = self.record;
        if record != RecordMode::None && self.record_max_mb == 0 {
            return Err(bad(
                "record_max_mb = 0 would record nothing; fix: use e.g. 1024".into(),
            ));
        }
        let mut model = self.model.clone();
        model.path = resolve(origin, &model.path);
        Ok(Config {
            origin: origin.to_path_buf(),
            source,
            display,
            max_mask_age: Duration::from_millis(self.max_mask_age_ms),
            frames: self.frames,
            stats_json: self.stats_json,
            stats_samples: self.stats_samples,
            roi: self.roi,
            phantom: self.phantom,
            model,
            overlay: self.overlay,
            capture: self.capture,
            measure: self.measure,
            control: self.control,
            pacs,
            record,
            record_path: self.record_path,
            record_max_bytes: self.record_max_mb.saturating_mul(1 << 20),
        })
    }
}

impl Config {
    /// Loads and validates a config file.
    pub fn load(path: &Path) -> Result<Config> {
        RawConfig::from_file(path)?.validate(path)
    }
}

/// A relative model path is taken as given when it exists from the current
/// folder; otherwise relative to the config file's folder and its parent
/// (board files live in `boards/`, models in `models/`).
fn resolve(origin: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() || p.exists() {
        return p.to_path_buf();
    }
    let base = origin.parent().unwrap_or(Path::new(""));
    for cand in [base.join(p), base.join("..").join(p)] {
        if cand.exists() {
            return cand;
        }
    }
    p.to_path_buf()
}

fn parse_source(s: &str) -> SourceSpec {
    if s == "phantom" {
        SourceSpec::Phantom
    } else if s.starts_with("/dev/") {
        SourceSpec::V4l2(PathBuf::from(s))
    } else if let Some(card) = s.strip_prefix("v4l2:") {
        SourceSpec::V4l2Card(card.to_string())
    } else {
        SourceSpec::File(PathBuf::from(s))
    }
}

fn parse_display(s: &str) -> std::result::Result<DisplaySpec, String> {
    if s == "null" {
        return Ok(DisplaySpec::Null);
    }
    if let Some(dir) = s.strip_prefix("png:") {
        return Ok(DisplaySpec::PngDir(PathBuf::from(dir)));
    }
    if s.starts_with("/dev/") {
        return Ok(DisplaySpec::Device(PathBuf::from(s)));
    }
    let p = PathBuf::from(s);
    match p.extension().and_then(|e| e.to_str()) {
        Some("y4m") => Ok(DisplaySpec::Y4m(p)),
        Some("gif") => Ok(DisplaySpec::Gif(p)),
        _ => Err(format!(
            "display = {s:?} is not understood; fix: use \"null\", \"png:DIR\", a .y4m or .gif path, or /dev/fbN"
        )),
    }
}

/// `deserialize_with` functions for the keys whose value is one of an
/// enum's names: the enum's own `Deserialize` decides, and a bad value is
/// reported with its key, the value and the valid names.
mod named {
    use serde::de::value::{Error as ValueError, StrDeserializer};
    use serde::de::{DeserializeOwned, Error as _, IntoDeserializer};
    use serde::{Deserialize, Deserializer};

    use crate::config::RecordMode;
    use crate::infer::model::Precision;
    use crate::source::phantom::PhantomKind;
    use crate::source::pixfmt::PixelFormat;
    use crate::source::replay::Pace;

    /// `key = "value"; fix: use one of ...`, from the names serde lists.
    fn one_of<'de, D: Deserializer<'de>, T: DeserializeOwned>(
        d: D,
        key: &str,
        fold_case: bool,
    ) -> Result<T, D::Error> {
        let given = String::deserialize(d)?;
        let name = if fold_case {
            given.to_ascii_lowercase()
        } else {
            given.clone()
        };
        let de: StrDeserializer<'_, ValueError> = name.as_str().into_deserializer();
        T::deserialize(de).map_err(|e| {
            // serde says "unknown variant `x`, expected one of `a`, `b`".
            let msg = e.to_string();
            let valid = msg
                .split_once(", expected ")
                .map_or(msg.as_str(), |(_, v)| v);
            D::Error::custom(format!("{key} = {given:?}; fix: use {valid}"))
        })
    }

    pub(super) fn record<'de, D: Deserializer<'de>>(d: D) -> Result<RecordMode, D::Error> {
        one_of(d, "record", false)
    }

    pub(super) fn format<'de, D: Deserializer<'de>>(d: D) -> Result<PixelFormat, D::Error> {
        one_of(d, "capture.format", true)
    }

    pub(super) fn pace<'de, D: Deserializer<'de>>(d: D) -> Result<Pace, D::Error> {
        one_of(d, "capture.pace", false)
    }

    pub(super) fn phantom_format<'de, D: Deserializer<'de>>(d: D) -> Result<PixelFormat, D::Error> {
        one_of(d, "phantom.pixel_format", true)
    }

    pub(super) fn kind<'de, D: Deserializer<'de>>(d: D) -> Result<PhantomKind, D::Error> {
        one_of(d, "phantom.kind", false)
    }

    pub(super) fn precision<'de, D: Deserializer<'de>>(d: D) -> Result<Precision, D::Error> {
        one_of(d, "model.precision", false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| Error::config("t.toml", e.to_string()))?;
        raw.validate(Path::new("t.toml"))
    }

    #[test]
    fn phantom_pixel_format() {
        let c = parse("[model]\npath = \"m\"").unwrap();
        assert_eq!(c.phantom.pixel_format, PixelFormat::Rgb24);
        let c = parse("[model]\npath = \"m\"\n[phantom]\nwidth = 1920\nheight = 1080\npixel_format = \"NV12\"")
            .unwrap();
        assert_eq!(c.phantom.pixel_format, PixelFormat::Nv12);
        assert_eq!((c.phantom.width, c.phantom.height), (1920, 1080));
        for (text, want) in [
            (
                "pixel_format = \"h264\"",
                "phantom.pixel_format = \"h264\"; fix",
            ),
            (
                "pixel_format = \"mjpeg\"",
                "phantom.pixel_format = \"mjpeg\"; fix",
            ),
            ("pixel_format = \"yuyv\"\nwidth = 641", "use an even width"),
        ] {
            let e = parse(&format!("[model]\npath = \"m\"\n[phantom]\n{text}")).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    #[test]
    fn measurement_settings_from_spacing_or_depth() {
        use crate::measure::Calibration;
        let roi = Rect::full(400, 300);
        let c = parse("[model]\npath = \"m\"").unwrap();
        assert_eq!(
            c.measure.settings(roi).unwrap().calibration,
            Calibration::NONE
        );
        let c = parse("[measure]\ndepth_mm = 60.0\n[model]\npath = \"m\"").unwrap();
        assert_eq!(
            c.measure.settings(roi).unwrap().calibration,
            Calibration::spacing(0.2, 0.2)
        );
        let c = parse("[measure]\nmm_per_pixel = [0.1, 0.3]\n[model]\npath = \"m\"").unwrap();
        assert_eq!(
            c.measure.settings(roi).unwrap().calibration,
            Calibration::spacing(0.1, 0.3)
        );
        let c = parse("[measure]\nenabled = false\n[model]\npath = \"m\"").unwrap();
        assert!(c.measure.settings(roi).is_none());
    }

    #[test]
    fn dicom_identifiers_and_modality_are_checked() {
        let c = parse(
            "[model]\npath = \"m\"\n[control]\nmodality = \"ES\"\npatient_id = \"P-1\"\n\
             patient_name = \"Doe^Jane\"\nstudy_id = \"S1\"\naccession_number = \"A1\"",
        )
        .unwrap();
        assert_eq!(c.control.spool_dir, PathBuf::from("out/spool"));
        assert_eq!(c.control.patient_id, "P-1");
        for (bad, says) in [
            ("modality = \"MR\"", "control.modality"),
            ("patient_id = \"a\\\\b\"", "control.patient_id"),
            ("patient_name = \"Zoë\"", "control.patient_name"),
            ("study_id = \"12345678901234567\"", "control.study_id"),
            (
                "accession_number = \"12345678901234567\"",
                "control.accession_number",
            ),
        ] {
            let e = parse(&format!("[model]\npath = \"m\"\n[control]\n{bad}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn the_pacs_section_is_optional_and_checked() {
        assert!(parse("[model]\npath = \"m\"\n").unwrap().pacs.is_none());
        let base = "[model]\npath = \"m\"\n[pacs]\nhost = \"pacs.local\"\nport = 11112\n";
        let p = parse(base).unwrap().pacs.unwrap();
        assert_eq!((p.host.as_str(), p.port), ("pacs.local", 11112));
        assert_eq!(
            (p.called_ae.as_str(), p.calling_ae.as_str()),
            ("ANY-SCP", "LGMS-EDGE")
        );
        assert_eq!(p.backoff.start(), Duration::from_secs(1));
        assert_eq!(p.backoff.max(), Duration::from_secs(60));
        for (bad, key) in [
            ("port = 0", "pacs.port"),
            ("port = 65536", "pacs.port"),
            ("host = \" \"", "pacs.host"),
            ("called_ae = \"A234567890123456X\"", "pacs.called_ae"),
            ("calling_ae = \"A\\\\B\"", "pacs.calling_ae"),
            ("calling_ae = \"\"", "pacs.calling_ae"),
            ("retry_min_ms = 0", "pacs.retry_min_ms"),
            (
                "retry_min_ms = 5000\nretry_max_ms = 100",
                "pacs.retry_min_ms",
            ),
        ] {
            let key_name = bad.split(' ').next().unwrap();
            let text = base
                .lines()
                .filter(|l| !l.starts_with(&format!("{key_name} ")))
                .collect::<Vec<_>>()
                .join("\n");
            let e = parse(&format!("{text}\n{bad}\n")).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("fix:"), "{bad}: {e}");
        }
    }

    #[test]
    fn defaults() {
        let c = parse("[model]\npath = \"m.onnx\"\n").unwrap();
        assert_eq!(c.source, SourceSpec::Phantom);
        assert_eq!(c.max_mask_age, Duration::from_millis(150));
        assert_eq!(c.display, DisplaySpec::Y4m("out/demo.y4m".into()));
    }

    #[test]
    fn rejects_bad_values_with_the_key() {
        for (text, key) in [
            (
                "max_mask_age_ms = 0\n[model]\npath=\"m\"",
                "max_mask_age_ms",
            ),
            ("display = \"x.mp4\"\n[model]\npath=\"m\"", "display"),
            ("[model]\npath=\"m\"\nprecision=\"f64\"", "model.precision"),
            ("[model]\npath=\"m\"\n[overlay]\nalpha=2.0", "overlay.alpha"),
            (
                "[model]\npath=\"m\"\n[phantom]\nkind=\"mri\"",
                "phantom.kind",
            ),
            ("record = \"all\"\n[model]\npath=\"m\"", "record"),
            (
                "[model]\npath=\"m\"\n[capture]\nformat=\"h264\"",
                "capture.format",
            ),
            (
                "[model]\npath=\"m\"\n[capture]\nbuffers=1",
                "capture.buffers",
            ),
            (
                "[model]\npath=\"m\"\n[capture]\npace=\"slow\"",
                "capture.pace",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
        for (text, key) in [
            (
                "[measure]\nmm_per_pixel = [0.1, 0.1]\ndepth_mm = 40.0",
                "measure.depth_mm",
            ),
            (
                "[measure]\nmm_per_pixel = [0.1, -1.0]",
                "measure.mm_per_pixel",
            ),
            ("[measure]\ndepth_mm = 0.0", "measure.depth_mm"),
            ("[measure]\nsmooth_frames = 40", "measure.smooth_frames"),
            ("stats_samples = 5", "stats_samples"),
            ("[capture]\nmax_width = 4", "capture.max_width"),
            ("[capture]\nwidth = 9000", "capture size"),
        ] {
            let e = parse(&format!("{text}\n[model]\npath=\"m\""))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        assert!(parse("[model]\npath=\"m\"\nbogus=1").is_err());
        assert!(parse("source = 3").is_err());
    }

    #[test]
    fn named_values_are_typed() {
        let c = parse(
            "record = \"overlay\"\n[model]\npath=\"m\"\nprecision=\"int8\"\n\
             [phantom]\nkind=\"endoscopy\"\n[capture]\nformat=\"GRAY\"\npace=\"fast\"",
        )
        .unwrap();
        assert_eq!(c.record, RecordMode::Overlay);
        assert_eq!(c.model.precision, Precision::Int8);
        assert_eq!(c.phantom.kind, PhantomKind::Endoscopy);
        assert_eq!(c.capture.format, PixelFormat::Grey);
        assert_eq!(c.capture.pace, Pace::Fast);
        let d = parse("[model]\npath=\"m\"").unwrap();
        assert_eq!(d.record, RecordMode::None);
        assert_eq!(d.model.precision, Precision::F32);
        assert_eq!(d.capture.format, PixelFormat::Yuyv);
        assert_eq!(d.capture.pace, Pace::Realtime);
        assert_eq!(d.phantom.kind, PhantomKind::Ultrasound);
    }

    /// A bad name is reported with its key, the value and the valid names.
    #[test]
    fn bad_names_list_the_valid_ones() {
        for (text, want) in [
            (
                "[model]\npath=\"m\"\nprecision=\"f64\"",
                "model.precision = \"f64\"; fix: use one of `f32`, `int8`, `f16`",
            ),
            (
                "[model]\npath=\"m\"\n[capture]\npace=\"slow\"",
                "capture.pace = \"slow\"; fix: use `realtime` or `fast`",
            ),
            (
                "[model]\npath=\"m\"\n[capture]\nformat=\"h264\"",
                "capture.format = \"h264\"; fix: use one of `yuyv`",
            ),
            (
                "record = \"all\"\n[model]\npath=\"m\"",
                "record = \"all\"; fix: use one of `none`, `input`, `overlay`",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    /// `RawConfig::new` is what a file with only `model.path` gives.
    #[test]
    fn new_matches_the_file_defaults() {
        let from_file = parse("[model]\npath = \"m.onnx\"\n").unwrap();
        let built = RawConfig::new("m.onnx")
            .validate(Path::new("t.toml"))
            .unwrap();
        assert_eq!(format!("{from_file:?}"), format!("{built:?}"));
    }

    #[test]
    fn flags_give_usage_errors() {
        let mut raw = RawConfig::new("m.onnx");
        raw.phantom.fps = f64::NAN;
        let e = raw.validate_flags().unwrap_err();
        assert!(matches!(e, Error::Usage { .. }), "{e:?}");
        assert!(e.to_string().starts_with("phantom.fps = NaN; fix"), "{e}");
    }

    #[test]
    fn sources_and_displays() {
        assert_eq!(
            parse_source("/dev/video0"),
            SourceSpec::V4l2("/dev/video0".into())
        );
        assert_eq!(parse_source("rec.y4m"), SourceSpec::File("rec.y4m".into()));
        assert_eq!(
            parse_source("v4l2:vivid"),
            SourceSpec::V4l2Card("vivid".into())
        );
        assert_eq!(
            parse_display("png:out/f"),
            Ok(DisplaySpec::PngDir("out/f".into()))
        );
        assert_eq!(
            parse_display("/dev/fb0"),
            Ok(DisplaySpec::Device("/dev/fb0".into()))
        );
        assert_eq!(parse_display("null"), Ok(DisplaySpec::Null));
    }
}
