//! Builds a running pipeline from a validated [`Config`]: the one place
//! where the concrete source, engine workers and sink are chosen
//! (explicitly, no registration magic).

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::frame::{Frame, Mask, Rect};
use crate::infer::engine::Engine;
use crate::infer::gate::{self, GateStatus};
use crate::infer::model::{LoadOptions, Model, Precision};
use crate::infer::Segmenter;
use crate::pipeline::stats::StageRecorder;
use crate::pipeline::watchdog::Watchdog;
use crate::pipeline::{self, Options, RunResult};
use crate::{Error, Result};

/// `SCHED_FIFO` priority of capture and display under systemd (the unit's
/// `LimitRTPRIO=40` allows up to 40).
pub const REALTIME_PRIORITY: i32 = 20;

/// The model the demo runs: the trained phantom model when present, else
/// the seeded random-weight export.
pub const BUNDLED_MODELS: [&str; 2] = [
    "models/lgmsnet-phantom-us.f32.onnx",
    "models/lgmsnet-random.f32.onnx",
];

/// One segmenter per inference worker.
pub type Workers = Vec<Box<dyn Segmenter>>;

/// How the config's model is loaded (threads, f16 conversion).
pub fn load_options(cfg: &Config) -> LoadOptions {
    LoadOptions {
        threads: cfg.model.threads,
        f16: cfg.model.precision == Precision::F16,
        ..LoadOptions::default()
    }
}

/// Loads the model once and gives each worker its own engine.
pub fn build_segmenters(cfg: &Config) -> Result<(Arc<Model>, Workers)> {
    let model = Model::load(&cfg.model.path, &load_options(cfg))?;
    let (want, have) = (cfg.model.precision, model.info().precision);
    if have != want {
        return Err(Error::config(
            &cfg.origin,
            format!(
                "model.precision = \"{want}\" but {:?} is a {have} model; fix: set precision = \"{have}\" or point model.path at the {want} model",
                cfg.model.path,
            ),
        ));
    }
    let info = model.info();
    let status = gate::check(
        &cfg.model.path,
        &info.metadata,
        info.precision,
        cfg.model.allow_ungated,
    )?;
    if let GateStatus::Passed(r) = &status {
        log::info!(
            "{}: {} {}",
            cfg.model.path.display(),
            r.precision,
            r.summary()
        );
    }
    let mut segs: Vec<Box<dyn Segmenter>> = Vec::new();
    for _ in 0..cfg.model.workers {
        let engine = Engine::new(model.clone())?;
        segs.push(if status.unverified() {
            Box::new(Unverified(engine))
        } else {
            Box::new(engine)
        });
    }
    Ok((model, segs))
}

/// An engine running a model without a passing accuracy record: its label,
/// and so the HUD and the report, says "<precision> unverified".
pub struct Unverified(pub Engine);

impl Segmenter for Unverified {
    fn label(&self) -> String {
        format!("{} {}", self.0.label(), crate::overlay::hud::UNVERIFIED)
    }

    fn segment(
        &mut self,
        frame: &Frame,
        roi: Rect,
        mask: &mut Mask,
        rec: &mut StageRecorder,
    ) -> Result<()> {
        self.0.segment(frame, roi, mask, rec)
    }
}

/// Runs the whole pipeline described by `cfg` until it ends or `stop` is set.
pub fn run(cfg: &Config, stop: Arc<AtomicBool>) -> Result<RunResult> {
    let (_model, segs) = build_segmenters(cfg)?;
    let source = crate::source::open(cfg)?;
    // The ROI is checked against the source's size before the sink is
    // opened, so a bad config never truncates an existing display file.
    let (width, height) = source.size();
    if let Some(roi) = cfg.roi.filter(|r| !r.fits_in(width, height)) {
        return Err(Error::config(
            &cfg.origin,
            format!(
                "roi {roi:?} does not fit the {width}x{height} frames of {}; fix: a roi inside the frame, or none for the whole frame",
                source.name()
            ),
        ));
    }
    let mut sink = crate::sink::open(cfg, source.frame_rate())?;
    log::info!(
        "running {} -> {} with {} worker(s), masks drawn up to {} ms old",
        source.name(),
        sink.name(),
        segs.len(),
        cfg.max_mask_age.as_millis()
    );
    // Under systemd (the cart's kiosk unit) capture and display ask for
    // real-time priority; the unit's LimitRTPRIO decides whether they get it.
    let watchdog = Some(Watchdog::from_env()).filter(Watchdog::active);
    let realtime_priority = watchdog.as_ref().map(|_| REALTIME_PRIORITY);
    let opts = Options {
        max_mask_age: cfg.max_mask_age,
        frames: cfg.frames,
        roi: cfg.roi,
        overlay: cfg.overlay.clone(),
        stop,
        keep_records: false,
        watchdog: watchdog.map(|w| Arc::new(Mutex::new(w))),
        realtime_priority,
        ..Options::default()
    };
    let result = pipeline::run(source, segs, sink.as_mut(), &opts)?;
    if let Some(path) = &cfg.stats_json {
        write_json(path, &result.report)?;
    }
    Ok(result)
}

/// Writes any serialisable value as pretty JSON, creating the folder.
pub fn write_json<T: serde::Serialize>(path: &std::path::Path, value: &T) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {dir:?}"), e))?;
    }
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::invalid_from(format!("JSON for {path:?}"), "cannot be written", e))?;
    std::fs::write(path, text).map_err(|e| Error::io(format!("writing {path:?}"), e))
}
