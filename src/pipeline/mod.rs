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

pub mod stats;
pub mod watchdog;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::OverlayConfig;
use crate::frame::{Frame, Mask, Rect};
use crate::infer::Segmenter;
use crate::overlay::{FrameTarget, HudInfo, Overlay, OverlayState, OverlayStyle};
use crate::pipeline::stats::{Report, Stage, StageRecorder};
use crate::pipeline::watchdog::Watchdog;
use crate::sink::Sink;
use crate::source::backoff::Backoff;
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

struct FrameSlot {
    frame: Frame,
    /// Number of frames published so far; the newest has id `gen - 1`'s frame.
    gen: u64,
    /// Highest generation a worker has taken.
    claimed: u64,
    /// The source ended (or failed for good) and will publish nothing more.
    done: bool,
}

struct MaskSlot {
    mask: Option<Mask>,
    /// Set while the model is failing; cleared by the next success.
    error: Option<String>,
}

struct Shared {
    frames: Mutex<FrameSlot>,
    frame_cv: Condvar,
    masks: Mutex<MaskSlot>,
    stop: Arc<AtomicBool>,
    inferences: AtomicU64,
    source_error: Mutex<Option<String>>,
}

/// A poisoned lock only means another stage panicked; its data (a frame or a
/// mask) is still whole, so carry on rather than take the video down too.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
        return Err(Error::config(
            "<pipeline>",
            "no inference worker; fix: model.workers >= 1",
        ));
    }
    let (width, height) = source.size();
    let roi = opts.roi.unwrap_or(Rect::full(width, height));
    if !roi.fits_in(width, height) {
        return Err(Error::config(
            "<pipeline>",
            format!(
                "roi {roi:?} does not fit the {width}x{height} source; fix the roi in the config"
            ),
        ));
    }
    let fps = source.frame_rate().max(1.0);
    let period = Duration::from_secs_f64(1.0 / fps);
    let label = segmenters[0].label();
    let source_name = source.name();
    let shared = Arc::new(Shared {
        frames: Mutex::new(FrameSlot {
            frame: Frame::new(width, height),
            gen: 0,
            claimed: 0,
            done: false,
        }),
        frame_cv: Condvar::new(),
        masks: Mutex::new(MaskSlot {
            mask: None,
            error: None,
        }),
        stop: opts.stop.clone(),
        inferences: AtomicU64::new(0),
        source_error: Mutex::new(None),
    });
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

fn capture_loop(
    source: &mut dyn FrameSource,
    shared: &Shared,
    limit: u64,
    cap: usize,
    width: u32,
    height: u32,
) -> (StageRecorder, u64) {
    let mut rec = StageRecorder::new(cap);
    let mut local = Frame::new(width, height);
    let mut count = 0u64;
    let mut failures = 0u32;
    while !shared.stop.load(Ordering::SeqCst) && (limit == 0 || count < limit) {
        let t0 = Instant::now();
        match source.next_frame(&mut local) {
            Ok(true) => {
                rec.record(Stage::Capture, t0.elapsed());
                if failures > 0 {
                    log::info!("source {} is delivering frames again", source.name());
                    *lock(&shared.source_error) = None;
                    failures = 0;
                }
                if (local.width, local.height) != (width, height) {
                    // A source must not change size mid-stream; drop the frame
                    // rather than hand every stage a buffer it did not size for.
                    log::warn!(
                        "source frame {} is {}x{}, expected {width}x{height}; dropped",
                        local.id,
                        local.width,
                        local.height
                    );
                    continue;
                }
                let mut slot = lock(&shared.frames);
                std::mem::swap(&mut slot.frame, &mut local);
                slot.gen += 1;
                drop(slot);
                shared.frame_cv.notify_all();
                count += 1;
            }
            Ok(false) => break,
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    log::error!(
                        "source {}: {e} (failure {failures}, retrying)",
                        source.name()
                    );
                }
                *lock(&shared.source_error) = Some(e.to_string());
                sleep_unless_stopped(&shared.stop, Backoff::PIPELINE.delay(failures));
            }
        }
    }
    lock(&shared.frames).done = true;
    shared.frame_cv.notify_all();
    (rec, count)
}

fn sleep_unless_stopped(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= end {
            break;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

fn worker_loop(
    mut seg: Box<dyn Segmenter>,
    shared: &Shared,
    roi: Rect,
    cap: usize,
    width: u32,
    height: u32,
) -> StageRecorder {
    let mut rec = StageRecorder::new(cap);
    let mut frame = Frame::new(width, height);
    let mut mask = Mask::new(roi);
    let mut failures = 0u32;
    loop {
        {
            let mut slot = lock(&shared.frames);
            loop {
                if shared.stop.load(Ordering::SeqCst) {
                    return rec;
                }
                if slot.gen > slot.claimed {
                    break;
                }
                if slot.done {
                    return rec;
                }
                slot = shared
                    .frame_cv
                    .wait_timeout(slot, Duration::from_millis(100))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            slot.claimed = slot.gen;
            frame.copy_from(&slot.frame);
        }
        match seg.segment(&frame, roi, &mut mask, &mut rec) {
            Ok(()) => {
                shared.inferences.fetch_add(1, Ordering::SeqCst);
                let mut slot = lock(&shared.masks);
                slot.error = None;
                match slot.mask.as_mut() {
                    Some(m) if m.frame_id >= mask.frame_id => {}
                    Some(m) => std::mem::swap(m, &mut mask),
                    None => slot.mask = Some(mask.clone()),
                }
                failures = 0;
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    log::error!(
                        "inference failed on frame {}: {e} (failure {failures}, retrying)",
                        frame.id
                    );
                }
                lock(&shared.masks).error = Some(e.to_string());
                sleep_unless_stopped(&shared.stop, Backoff::PIPELINE.delay(failures));
            }
        }
    }
}

struct CompositorResult {
    rec: StageRecorder,
    frames_out: u64,
    dropped: u64,
    with_mask: u64,
    stale: u64,
    no_mask: u64,
    records: Vec<FrameRecord>,
}

/// Names for the HUD, split once from the segmenter's label.
struct HudText<'a> {
    model: &'a str,
    precision: &'a str,
}

#[allow(clippy::too_many_arguments)]
fn compositor_loop(
    shared: &Shared,
    sink: &mut dyn Sink,
    opts: &Options,
    label: &str,
    source_name: &str,
    period: Duration,
    width: u32,
    height: u32,
) -> Result<CompositorResult> {
    let mut out = CompositorResult {
        rec: StageRecorder::new(opts.stat_capacity),
        frames_out: 0,
        dropped: 0,
        with_mask: 0,
        stale: 0,
        no_mask: 0,
        records: Vec::with_capacity(if opts.keep_records {
            opts.frames.min(1 << 20) as usize
        } else {
            0
        }),
    };
    let mut overlay = Overlay::new(OverlayStyle::from_config(&opts.overlay, opts.max_mask_age));
    let text = match label.rsplit_once(' ') {
        Some((model, precision)) => HudText { model, precision },
        None => HudText {
            model: label,
            precision: "",
        },
    };
    let mut frame = Frame::new(width, height);
    let mut mask: Option<Mask> = None;
    let mut last_gen = 0u64;
    let mut fps_meter = FpsMeter::new();
    let mut last_e2e_ms: Option<f32> = None;
    // Without a frame for this long the screen says NO SIGNAL instead of freezing.
    let no_signal_after = (period * 3).max(Duration::from_millis(300));
    let mut last_frame_at = Instant::now();
    let mut lost_at: Option<Instant> = None;
    let mut no_signal_frames = 0u32;

    loop {
        let mut no_signal = false;
        {
            let mut slot = lock(&shared.frames);
            loop {
                if shared.stop.load(Ordering::SeqCst) {
                    return Ok(out);
                }
                if slot.gen > last_gen {
                    break;
                }
                if slot.done {
                    return Ok(out);
                }
                let waited = last_frame_at.elapsed();
                let wait_for = if lost_at.is_some() {
                    period
                } else {
                    no_signal_after
                };
                if waited >= wait_for {
                    no_signal = true;
                    break;
                }
                slot = shared
                    .frame_cv
                    .wait_timeout(slot, (wait_for - waited).min(Duration::from_millis(50)))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            if !no_signal {
                out.dropped += slot.gen - last_gen - 1;
                last_gen = slot.gen;
                frame.copy_from(&slot.frame);
            }
        }
        last_frame_at = Instant::now();
        let t0 = last_frame_at;
        let mut record = FrameRecord {
            frame_id: frame.id,
            mask_frame_id: None,
            mask_age_ms: None,
            state: RecordState::NoMask,
            shown_at: t0,
        };
        if no_signal {
            // Keep the display alive at the source's pace with a clear state,
            // rather than freezing on the last frame.
            no_signal_frames += 1;
            let since = *lost_at.get_or_insert(t0);
            if no_signal_frames == 1 {
                let reason = lock(&shared.source_error).clone();
                log::warn!(
                    "no frame from {source_name} for {no_signal_after:?}: showing NO SIGNAL{}",
                    reason.map(|r| format!(" ({r})")).unwrap_or_default()
                );
            }
            crate::source::reconnect::draw_no_signal(
                &mut frame,
                (width, height),
                source_name,
                no_signal_frames,
                Some(since),
            );
            record.state = RecordState::NoSignal;
        } else {
            if lost_at.take().is_some() {
                log::info!("{source_name}: frames are arriving again");
                no_signal_frames = 0;
            }
            let model_failed;
            {
                let slot = lock(&shared.masks);
                if let Some(m) = slot.mask.as_ref() {
                    match mask.as_mut() {
                        Some(mine) if mine.frame_id == m.frame_id => {}
                        Some(mine) => mine.copy_from(m),
                        None => mask = Some(m.clone()),
                    }
                }
                model_failed = slot.error.is_some();
            }
            let hud = HudInfo {
                fps: fps_meter.fps() as f32,
                latency_ms: last_e2e_ms,
                model: text.model,
                precision: text.precision,
                // The mask's age is measured against the capture of the frame
                // it would be drawn on: that is what "wrong frame" means.
                now: frame.captured,
                model_failed,
            };
            let mut target = FrameTarget::for_frame(&mut frame)?;
            let state = match overlay.draw(&mut target, mask.as_ref(), &hud) {
                Ok(s) => s,
                Err(never) => match never {},
            };
            record.mask_age_ms = match state {
                OverlayState::Live { .. } | OverlayState::Paused { .. } => mask.as_ref().map(|m| {
                    frame
                        .captured
                        .saturating_duration_since(m.captured)
                        .as_secs_f64()
                        * 1e3
                }),
                _ => None,
            };
            record.state = match state {
                OverlayState::Live { .. } => RecordState::Drawn,
                OverlayState::Paused { .. } => RecordState::Stale,
                OverlayState::ModelError => RecordState::ModelError,
                OverlayState::NoMask => RecordState::NoMask,
            };
            if state.draws_mask() {
                record.mask_frame_id = mask.as_ref().map(|m| m.frame_id);
            }
            match record.state {
                RecordState::Drawn => out.with_mask += 1,
                RecordState::Stale => out.stale += 1,
                _ => out.no_mask += 1,
            }
        }
        let t1 = Instant::now();
        sink.write(&frame)?;
        let t2 = Instant::now();
        out.rec.record(Stage::Compose, t1 - t0);
        out.rec.record(Stage::Display, t2 - t1);
        if !no_signal {
            let e2e = t2.saturating_duration_since(frame.captured);
            out.rec.record(Stage::EndToEnd, e2e);
            last_e2e_ms = Some((e2e.as_secs_f64() * 1e3) as f32);
            out.frames_out += 1;
            if let Some(w) = &opts.watchdog {
                let mut w = lock(w);
                if out.frames_out == 1 {
                    w.ready();
                } else {
                    w.frame_shown();
                }
            }
        }
        fps_meter.tick(t2);
        record.shown_at = t2;
        if opts.keep_records {
            out.records.push(record);
        }
    }
}

/// Frames per second over a sliding window of recent frames.
struct FpsMeter {
    times: heapless::Deque<Instant, 32>,
}

impl FpsMeter {
    fn new() -> Self {
        FpsMeter {
            times: heapless::Deque::new(),
        }
    }

    fn tick(&mut self, t: Instant) {
        if self.times.is_full() {
            self.times.pop_front();
        }
        let _ = self.times.push_back(t);
    }

    fn fps(&self) -> f64 {
        match (self.times.front(), self.times.back()) {
            (Some(a), Some(b)) if self.times.len() > 1 && b > a => {
                (self.times.len() - 1) as f64 / (*b - *a).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}
