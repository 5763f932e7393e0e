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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::OverlayConfig;
use crate::frame::Rect;
use crate::infer::Segmenter;
use crate::pipeline::compositor::compositor_loop;
use crate::pipeline::slots::{lock, Shared};
use crate::pipeline::stats::{Report, StageRecorder};
use crate::pipeline::watchdog::Watchdog;
use crate::pipeline::workers::{capture_loop, worker_loop};
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
    let shared = Arc::new(Shared::new(width, height, opts.stop.clone()));
    let started = Instant::now();

    let capture = {
        let shared = shared.clone();
        let limit = opts.frames;
        let cap = opts.stat_capacity;
        let rt = opts.realtime_priority;
        std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || {
                if let Some(p) = rt {
                    crate::pipeline::watchdog::try_realtime(p);
                }
                capture_loop(&mut *source, &shared, limit, cap, width, height)
            })
            .map_err(|e| Error::io("starting the capture thread", e))?
    };
    let mut workers = Vec::new();
    for (i, seg) in segmenters.into_iter().enumerate() {
        let shared = shared.clone();
        let cap = opts.stat_capacity;
        let h = std::thread::Builder::new()
            .name(format!("infer-{i}"))
            .spawn(move || worker_loop(seg, &shared, roi, cap, width, height))
            .map_err(|e| Error::io("starting an inference thread", e))?;
        workers.push(h);
    }

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

    // Whatever ended the compositor, everyone else stops now.
    if let Some(w) = &opts.watchdog {
        lock(w).stopping();
    }
    shared.stop.store(true, Ordering::SeqCst);
    shared.frame_cv.notify_all();
    let mut rec = StageRecorder::new(opts.stat_capacity);
    let frames_in = match capture.join() {
        Ok((r, n)) => {
            rec.merge(&r);
            n
        }
        Err(_) => {
            log::error!("capture thread panicked");
            0
        }
    };
    for w in workers {
        match w.join() {
            Ok(r) => rec.merge(&r),
            Err(_) => log::error!("an inference thread panicked"),
        }
    }
    let comp = comp?;
    rec.merge(&comp.rec);
    let finish = sink.finish();
    let duration_s = started.elapsed().as_secs_f64();
    let inferences = shared.inferences.load(Ordering::SeqCst);
    let report = Report {
        model: label,
        source: source_name,
        duration_s,
        frames_in,
        frames_out: comp.frames_out,
        frames_dropped: comp.dropped,
        fps: comp.frames_out as f64 / duration_s.max(1e-9),
        inferences,
        inference_fps: inferences as f64 / duration_s.max(1e-9),
        frames_with_mask: comp.with_mask,
        frames_mask_stale: comp.stale,
        frames_no_mask: comp.no_mask,
        stages: Report::stage_reports(&rec),
    };
    finish?;
    Ok(RunResult {
        report,
        records: comp.records,
    })
}
