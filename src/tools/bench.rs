//! `lgms-edge bench`: what an engineer runs on the cart.
//!
//! Unlike [`crate::pipeline`], which overlaps the stages on threads, the
//! bench runs every stage of one frame in sequence on one thread, so each
//! stage's latency is measured alone, without the others competing for the
//! cores. It warms up first (tract's first runs pay for allocation and
//! cache misses), then times `frames` frames. The phantom source runs
//! unpaced, so capture costs only the rendering; a real camera is paced by
//! its own frame rate. A phantom camera that sends YUYV or NV12
//! (`[phantom] pixel_format`) renders and encodes each frame before the
//! clock starts, so capture then costs what a V4L2 capture of that format
//! costs the CPU: the conversion to RGB, through the same code.

use std::time::Instant;

use crate::app;
use crate::config::{Config, SourceSpec};
use crate::frame::{Frame, Mask, Rect};
use crate::infer::engine::Engine;
use crate::infer::model::{LoadOptions, Model};
use crate::infer::profile::OpProfile;
use crate::overlay::{HudInfo, Overlay, OverlayStyle, RgbTarget};
use crate::pipeline::stats::{Report, Stage, StageRecorder};
use crate::sink::{NullSink, Sink};
use crate::source::phantom::PhantomSource;
use crate::source::FrameSource;
use crate::{Error, Result};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Frames timed.
    pub frames: u64,
    /// Frames run before timing starts.
    pub warmup: u64,
    /// Send frames to the configured display (else a null sink).
    pub use_display: bool,
    /// tract's stock graph, without our fused operators.
    pub stock: bool,
    /// Then profile this many inferences per tract operator, on the last
    /// frame's input with the same (warm) engine.
    pub profile_runs: Option<usize>,
}

/// What [`run`] measured.
#[derive(Debug, Clone)]
pub struct BenchResult {
    /// Per-stage latency and fps.
    pub report: Report,
    /// Time per tract operator, when [`BenchOptions::profile_runs`] asked for it.
    pub profile: Option<OpProfile>,
}

/// Runs the bench described by `cfg` (its source, model, ROI, overlay).
pub fn run(cfg: &Config, opts: &BenchOptions) -> Result<BenchResult> {
    if !(1..=crate::config::MAX_THREADS).contains(&cfg.model.threads) {
        return Err(Error::usage(format!(
            "--threads {} is out of range; fix: use 1..={} (model.threads' range)",
            cfg.model.threads,
            crate::config::MAX_THREADS
        )));
    }
    if opts.frames == 0 {
        return Err(Error::usage(
            "--frames 0 measures nothing; fix: use e.g. --frames 50",
        ));
    }
    let load_started = Instant::now();
    let model = Model::load(
        &cfg.model.path,
        &LoadOptions {
            stock: opts.stock,
            ..app::load_options(cfg)
        },
    )?;
    let label = format!("{} {}", model.info().name, model.info().precision);
    let mut engine = Engine::new(model.clone())?;
    let load_s = load_started.elapsed().as_secs_f64();
    let mut bench_source = unpaced_source(cfg)?;
    let source = bench_source.get();
    let source_name = source.name();
    let mut sink: Box<dyn Sink> = if opts.use_display {
        crate::sink::open(cfg, source.frame_rate())?
    } else {
        Box::new(NullSink::default())
    };
    let (w, h) = source.size();
    let roi = cfg.roi.unwrap_or(Rect::full(w, h));
    let mut frame = Frame::new(w, h);
    let mut mask = Mask::new(roi);
    let mut overlay = Overlay::new(OverlayStyle::from_config(&cfg.overlay, cfg.max_mask_age));
    let (model_name, precision) = (model.info().name.clone(), model.info().precision.name());
    let mut rec = StageRecorder::new(opts.frames as usize);
    let mut done = 0u64;
    let mut corrupt = 0u64;
    let mut started = Instant::now();
    let total = opts.warmup + opts.frames;
    for i in 0..total {
        if i == opts.warmup {
            rec = StageRecorder::new(opts.frames as usize);
            started = Instant::now();
        }
        if let BenchSource::Phantom(p) = &mut bench_source {
            p.render_ahead()?;
        }
        let source = bench_source.get();
        let t0 = Instant::now();
        match source.next_frame(&mut frame) {
            Ok(true) => {}
            Ok(false) => {
                log::warn!("source ended after {i} frames");
                break;
            }
            Err(e @ Error::CorruptFrame { .. }) => {
                log::warn!("{e}");
                corrupt += 1;
                continue;
            }
            Err(e) => return Err(e),
        }
        let t1 = Instant::now();
        engine.segment(&frame, roi, &mut mask, &mut rec)?;
        let t2 = Instant::now();
        let hud = HudInfo {
            fps: 0.0,
            latency_ms: None,
            model: &model_name,
            precision,
            now: frame.captured,
            model_failed: false,
        };
        let mut target = RgbTarget::for_frame(&mut frame)?;
        if let Err(never) = overlay.draw(&mut target, Some(&mask), &hud) {
            match never {}
        }
        let t3 = Instant::now();
        sink.write(&frame)?;
        let t4 = Instant::now();
        rec.record(Stage::Capture, t1 - t0);
        rec.record(Stage::Compose, t3 - t2);
        rec.record(Stage::Display, t4 - t3);
        rec.record(Stage::EndToEnd, t4 - t0);
        if i >= opts.warmup {
            done += 1;
        }
    }
    sink.finish()?;
    let duration_s = started.elapsed().as_secs_f64();
    let fps = done as f64 / duration_s.max(1e-9);
    let profile = opts.profile_runs.map(|r| engine.profile(r)).transpose()?;
    let report = Report {
        model: label,
        source: source_name,
        load_s,
        duration_s,
        frames_in: done + corrupt,
        frames_out: done,
        frames_dropped: 0,
        frames_corrupt: corrupt,
        fps,
        inferences: done,
        inference_fps: fps,
        frames_with_mask: done,
        frames_mask_stale: 0,
        frames_no_mask: 0,
        mask_coverage: 1.0,
        stages: Report::stage_reports(&rec),
        pacs: None,
    };
    Ok(BenchResult { report, profile })
}

/// The bench's source: the phantom is kept apart, to render ahead.
enum BenchSource {
    Phantom(Box<PhantomSource>),
    Other(Box<dyn FrameSource>),
}

impl BenchSource {
    fn get(&mut self) -> &mut dyn FrameSource {
        match self {
            BenchSource::Phantom(p) => p.as_mut(),
            BenchSource::Other(s) => s.as_mut(),
        }
    }
}

/// The config's source; the phantom unpaced, so that capture costs only
/// rendering (or, for a YUYV / NV12 phantom, only the conversion).
fn unpaced_source(cfg: &Config) -> Result<BenchSource> {
    Ok(match cfg.source {
        SourceSpec::Phantom => BenchSource::Phantom(Box::new(
            PhantomSource::from_config(&cfg.phantom)?.paced(false),
        )),
        _ => BenchSource::Other(crate::source::open(cfg)?),
    })
}
