//! The threads that turn frames into overlaid frames without ever letting
//! inference hold the video back.
//!
//! ```text
//!  capture ──newest frame──┬──> worker 1..n (preprocess, infer, postprocess)
//!                          │              └──newest mask──┐
//!                          └──> compositor <──────────────┘──> sink
//! ```
//!
//! - The capture thread owns the source and swaps each new frame into a
//!   one-frame slot: only the newest frame is kept, older ones are simply
//!   overwritten.
//! - Workers take the newest frame nobody has claimed yet, segment it and
//!   publish the mask only if it is newer than the one already published.
//! - The compositor runs at the source's pace: every frame the source
//!   produces is shown (unless the compositor itself falls behind, which is
//!   counted as a drop). It pairs the frame with the newest mask and draws
//!   it only when `frame.captured - mask.captured <= max_mask_age`, so a
//!   late mask is never painted on a frame it does not belong to.
//! - A failing model or a silent source never stops the video: the
//!   compositor keeps producing frames with the state written on them, and
//!   the failing stage retries with backoff.
//!
//! | module | job |
//! | --- | --- |
//! | `slots` | the newest-frame and newest-mask slots the threads share |
//! | `workers` | the capture thread and the inference workers |
//! | `compositor` | the display thread, with the mask-age gate and NO SIGNAL |
//! | [`stats`] | per-stage latency |
//! | [`watchdog`] | systemd readiness and watchdog, real-time priority |
//!
//! This module starts the threads ([`run`]) and holds what a run is given
//! and gives back.

mod compositor;
mod slots;
pub mod stats;
pub mod watchdog;
mod workers;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::OverlayConfig;
use crate::frame::Rect;
use crate::infer::Segmenter;
use crate::pipeline::compositor::compositor_loop;
use crate::pipeline::slots::{lock, Shared};
use crate::pipeline::stats::{Report, StageRecorder};
use crate::pipeline::watchdog::Watchdog;
use crate::pipeline::workers::{capture_loop, worker_loop, CaptureMode, Freshness};
use crate::sink::Sink;
use crate::source::FrameSource;
use crate::{Error, Result};

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Masks older than this are not drawn.
    pub max_mask_age: Duration,
    /// Stop after this many source frames (0: until the source ends or `stop`).
    pub frames: u64,
    /// Region of the frame the network sees (whole frame if `None`).
    pub roi: Option<Rect>,
    /// Overlay look.
    pub overlay: OverlayConfig,
    /// Set from a signal handler (or a test) to end the run cleanly.
    pub stop: Arc<AtomicBool>,
    /// Keep a [`FrameRecord`] per output frame (tests, audits).
    pub keep_records: bool,
    /// Samples kept per stage for the percentiles.
    pub stat_capacity: usize,
    /// systemd notifications: `READY=1` at the first frame shown, then
    /// `WATCHDOG=1` pings only while camera frames are shown (not while the
    /// screen says NO SIGNAL), `STOPPING=1` at the end. `None`: no systemd.
    pub watchdog: Option<Arc<Mutex<Watchdog>>>,
    /// `SCHED_FIFO` priority for the capture thread and the compositor (the
    /// calling thread) where permitted; inference threads stay normal.
    pub realtime_priority: Option<i32>,
    /// Every frame is shown, each with its own mask: the source waits for
    /// the frame before it to be shown (file replay at `pace = "fast"`).
    /// Otherwise only the newest frame counts, as with a camera.
    pub lossless: bool,
    /// A damaged frame of a file ends the run with an error instead of
    /// being skipped and counted.
    pub strict: bool,
    /// The source is a live device: its errors are a lost signal (NO
    /// SIGNAL, retried). A file's read errors end the run.
    pub live: bool,
    /// Lesion measurements drawn with the mask, or none.
    pub measure: Option<crate::measure::Settings>,
    /// Commands from the control socket, applied between frames.
    pub control: Option<Arc<Mutex<crate::control::Requests>>>,
    /// Shown frames kept for freeze and cine (allocated at start; at least
    /// one when there is a control channel).
    pub cine_frames: usize,
    /// Where `save-snapshot` writes its PNGs.
    pub snapshot_dir: std::path::PathBuf,
    /// Where `save-snapshot` and `save-cine` put their DICOM files.
    pub spool_dir: std::path::PathBuf,
    /// What the DICOM files say of the patient, study and model.
    pub dicom: crate::dicom::Settings,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_mask_age: Duration::from_millis(150),
            frames: 0,
            roi: None,
            overlay: OverlayConfig::default(),
            stop: Arc::new(AtomicBool::new(false)),
            keep_records: false,
            stat_capacity: 100_000,
            watchdog: None,
            realtime_priority: None,
            lossless: false,
            strict: false,
            live: true,
            measure: None,
            control: None,
            cine_frames: 0,
            snapshot_dir: "out/snapshots".into(),
            spool_dir: "out/spool".into(),
            dicom: crate::dicom::Settings::default(),
        }
    }
}

/// What happened to one output frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameRecord {
    /// Source frame id.
    pub frame_id: u64,
    /// Frame whose mask was drawn on it, if any.
    pub mask_frame_id: Option<u64>,
    /// Age of the newest mask at that time (drawn or not), milliseconds.
    pub mask_age_ms: Option<f64>,
    /// Overlay state shown.
    pub state: RecordState,
    /// When the frame was handed to the sink.
    pub shown_at: Instant,
}

/// Overlay state of an output frame, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordState {
    /// A fresh mask was drawn.
    Drawn,
    /// The newest mask was too old: overlay paused.
    Stale,
    /// No mask yet.
    NoMask,
    /// The model is failing.
    ModelError,
    /// No frame from the source: a NO SIGNAL frame was shown.
    NoSignal,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Statistics.
    pub report: Report,
    /// Per-frame records, if asked for.
    pub records: Vec<FrameRecord>,
}

/// Runs the pipeline until the source ends, `opts.frames` frames were
/// shown, or `opts.stop` is set.
pub fn run(
    mut source: Box<dyn FrameSource>,
    segmenters: Vec<Box<dyn Segmenter>>,
    sink: &mut dyn Sink,
    opts: &Options,
) -> Result<RunResult> {
    if segmenters.is_empty() {
        return Err(Error::invalid(
            "pipeline",
            "no inference worker; fix: give it at least one segmenter (model.workers >= 1)",
        ));
    }
    let (width, height) = source.size();
    let roi = opts.roi.unwrap_or(Rect::full(width, height));
    if !roi.fits_in(width, height) {
        return Err(Error::invalid(
            "pipeline",
            format!(
                "roi {roi:?} does not fit the {width}x{height} source; fix the roi in the config"
            ),
        ));
    }
    let fps = source.frame_rate().max(1.0);
    let period = Duration::from_secs_f64(1.0 / fps);
    let label = segmenters[0].label();
    let source_name = source.name();
    let shared = Arc::new(Shared::new(
        width,
        height,
        opts.stop.clone(),
        opts.stat_capacity,
    ));
    let started = Instant::now();
    // Every thread reports here when it ends, so that the end of the run
    // waits for them with a deadline instead of joining a worker that is
    // in the middle of a long inference.
    let (done_tx, done_rx) = mpsc::channel::<Ended>();

    let mode = CaptureMode {
        limit: opts.frames,
        lossless: opts.lossless,
        strict: opts.strict,
        live: opts.live,
    };
    {
        let shared = shared.clone();
        let cap = opts.stat_capacity;
        let rt = opts.realtime_priority;
        let tx = done_tx.clone();
        std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || {
                if let Some(p) = rt {
                    crate::pipeline::watchdog::try_realtime(p);
                }
                let rec = capture_loop(&mut *source, &shared, mode, cap, width, height);
                let _ = tx.send(Ended::Capture(Box::new(rec)));
            })
            .map_err(|e| Error::io("starting the capture thread", e))?;
    }
    let n_workers = segmenters.len();
    // A lossless replay shows every frame with its own mask: no frame is
    // left for a fresher one.
    let fresh = (!opts.lossless).then_some(Freshness {
        period,
        max_age: opts.max_mask_age,
    });
    for (i, seg) in segmenters.into_iter().enumerate() {
        let shared = shared.clone();
        let tx = done_tx.clone();
        std::thread::Builder::new()
            .name(format!("infer-{i}"))
            .spawn(move || {
                worker_loop(seg, &shared, roi, (width, height), fresh);
                let _ = tx.send(Ended::Worker);
            })
            .map_err(|e| Error::io("starting an inference thread", e))?;
    }
    drop(done_tx);

    if let Some(p) = opts.realtime_priority {
        crate::pipeline::watchdog::try_realtime(p);
    }
    let comp = compositor_loop(
        &shared,
        sink,
        opts,
        &label,
        &source_name,
        period,
        width,
        height,
    );

    // Whatever ended the compositor, everyone else stops now. A thread that
    // has not ended by the deadline (an inference in flight, a device read)
    // is left behind: its result is abandoned, the run's is not.
    if let Some(w) = &opts.watchdog {
        lock(w).stopping();
    }
    shared.stop.store(true, Ordering::SeqCst);
    shared.frame_cv.notify_all();
    shared.mask_cv.notify_all();
    let mut rec = StageRecorder::new(opts.stat_capacity);
    let deadline = Instant::now() + STOP_GRACE;
    let mut pending = 1 + n_workers;
    while pending > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        match done_rx.recv_timeout(left) {
            Ok(Ended::Capture(r)) => rec.merge(&r),
            Ok(Ended::Worker) => {}
            // A thread that panicked drops its sender without a message.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                log::error!("a pipeline thread ended without reporting (it panicked)");
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                log::warn!(
                    "{pending} pipeline thread(s) still busy {STOP_GRACE:?} after the stop (an inference in flight); their results are abandoned"
                );
                break;
            }
        }
        pending -= 1;
    }
    rec.merge(&lock(&shared.worker_stats));
    let comp = comp?;
    rec.merge(&comp.rec);
    let finish = sink.finish();
    let duration_s = started.elapsed().as_secs_f64();
    let inferences = shared.inferences.load(Ordering::SeqCst);
    let good = shared.frames_good.load(Ordering::SeqCst);
    let corrupt = shared.frames_corrupt.load(Ordering::SeqCst);
    let streaming_s = match (comp.first_shown, comp.last_shown) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let fps = if comp.frames_out > 1 && streaming_s > 0.0 {
        (comp.frames_out - 1) as f64 / streaming_s
    } else {
        0.0
    };
    let report = Report {
        model: label,
        source: source_name,
        load_s: 0.0,
        duration_s,
        frames_in: good + corrupt,
        frames_out: comp.frames_out,
        // Published but never shown: skipped while the compositor was
        // behind, or still in the slot when the run stopped.
        frames_dropped: good.saturating_sub(comp.frames_out),
        frames_corrupt: corrupt,
        fps,
        inferences,
        inference_fps: inferences as f64 / duration_s.max(1e-9),
        frames_with_mask: comp.with_mask,
        frames_mask_stale: comp.stale,
        frames_no_mask: comp.no_mask,
        mask_coverage: comp.with_mask as f64 / comp.frames_out.max(1) as f64,
        stages: Report::stage_reports(&rec),
        pacs: None,
    };
    if let Some(e) = lock(&shared.fatal).take() {
        finish?;
        return Err(e);
    }
    finish?;
    Ok(RunResult {
        report,
        records: comp.records,
    })
}

/// How long the end of a run waits for its threads after the stop.
pub const STOP_GRACE: Duration = Duration::from_millis(300);

/// What a pipeline thread sends when it ends.
enum Ended {
    Capture(Box<StageRecorder>),
    Worker,
}
