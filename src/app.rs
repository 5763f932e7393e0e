//! Builds a running pipeline from a validated [`Config`]: the one place
//! where the concrete source, engine workers and sink are chosen
//! (explicitly, no registration magic).

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::{Config, DisplaySpec, RecordMode, SourceSpec};
use crate::frame::{Frame, Mask, Rect};
use crate::infer::engine::Engine;
use crate::infer::gate::{self, GateStatus};
use crate::infer::model::{LoadOptions, Model, Precision};
use crate::infer::Segmenter;
use crate::pipeline::stats::StageRecorder;
use crate::pipeline::watchdog::Watchdog;
use crate::pipeline::{self, Options, RunResult};
use crate::source::replay::Pace;
use crate::{Error, Result};

/// `SCHED_FIFO` priority of capture and display under systemd (the unit's
/// `LimitRTPRIO=40` allows up to 40).
pub const REALTIME_PRIORITY: i32 = 20;

/// The models the demo can run, best first: the trained phantom model in
/// int8 (with its passing accuracy record), the same in f32, and the
/// seeded random-weight export. [`demo_model`] picks one.
pub const BUNDLED_MODELS: [&str; 3] = [
    "models/lgmsnet-phantom-us.int8.onnx",
    "models/lgmsnet-phantom-us.f32.onnx",
    "models/lgmsnet-random.f32.onnx",
];

/// The first bundled model present that this CPU runs well: the int8 one
/// only where lgms-edge's int8 conv has a dot-product kernel (AVX2, VNNI,
/// `sdot`). Without one, tract's int8 path is several times slower than
/// f32, and the widening NEON kernel of cores without `sdot` (the Pi 4's
/// A72) is not measured against f32 yet.
pub fn demo_model() -> Option<&'static str> {
    let int8_fast = int8_is_fast();
    BUNDLED_MODELS
        .iter()
        .copied()
        .filter(|p| int8_fast || !p.contains(".int8."))
        .find(|p| std::path::Path::new(p).is_file())
}

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

/// What the DICOM files say of the patient, the study and the model (its
/// file hashed here, once, so the header names exactly what ran).
fn dicom_settings(cfg: &Config, model: &Model) -> Result<crate::dicom::Settings> {
    use sha2::Digest;
    let c = &cfg.control;
    let bad = |e: crate::dicom::DicomError| Error::config(&cfg.origin, format!("control.{e}"));
    let path = &cfg.model.path;
    let mut file =
        std::fs::File::open(path).map_err(|e| Error::io(format!("hashing model {path:?}"), e))?;
    let mut hash = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hash)
        .map_err(|e| Error::io(format!("hashing model {path:?}"), e))?;
    let info = model.info();
    let md = &info.metadata;
    let version = md.get("lgms.version").cloned().unwrap_or_else(|| {
        md.get("lgms.export_date")
            .map_or("unversioned".into(), |d| format!("exported {d}"))
    });
    crate::dicom::check_study(&c.study_id, &c.accession_number).map_err(bad)?;
    Ok(crate::dicom::Settings {
        modality: crate::dicom::Modality::from_code(&c.modality).unwrap_or_default(),
        patient: crate::dicom::Patient::new(&c.patient_id, &c.patient_name).map_err(bad)?,
        study_id: c.study_id.clone(),
        accession: c.accession_number.clone(),
        model: crate::dicom::ModelTag {
            name: info.name.clone(),
            version,
            sha256: format!("{:x}", hash.finalize()),
            precision: info.precision.to_string(),
        },
    })
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
///
/// Everything that can be checked is checked before any output is touched:
/// the output paths (distinct, writable), then the model, then the ROI
/// against the source's size. Output files are created by the pipeline's
/// first frame; a stop during the model load ends the run before it starts.
pub fn run(cfg: &Config, stop: Arc<AtomicBool>) -> Result<RunResult> {
    check_outputs(cfg)?;
    let load_started = Instant::now();
    let (model, segs) = build_segmenters(cfg)?;
    let load_s = load_started.elapsed().as_secs_f64();
    let source = crate::source::open(cfg)?;
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
    let file_source = matches!(cfg.source, SourceSpec::File(_));
    let lossless = file_source && cfg.capture.pace == Pace::Fast;
    log::info!(
        "running {} -> {} with {} worker(s), {}; model loaded in {load_s:.2} s",
        source.name(),
        sink.name(),
        segs.len(),
        if lossless {
            "every frame with its own mask".to_string()
        } else {
            format!("masks drawn up to {} ms old", cfg.max_mask_age.as_millis())
        }
    );
    // Under systemd (the cart's kiosk unit) capture and display ask for
    // real-time priority; the unit's LimitRTPRIO decides whether they get it.
    let watchdog = Some(Watchdog::from_env()).filter(Watchdog::active);
    let realtime_priority = watchdog.as_ref().map(|_| REALTIME_PRIORITY);
    // Commands from the socket and the keys reach the compositor through
    // one channel; the socket lives as long as the run, its file with it.
    let c = &cfg.control;
    let (control, requests) = if c.socket.is_some() || !c.input.is_empty() {
        let (tx, rx) = std::sync::mpsc::channel();
        let server = c
            .socket
            .as_deref()
            .map(|p| crate::control::Server::start(p, tx.clone()))
            .transpose()?;
        let keys =
            crate::control::input::key_map(&c.keys).map_err(|e| Error::config(&cfg.origin, e))?;
        crate::control::input::start(&c.input, keys, tx);
        (server, Some(Arc::new(Mutex::new(rx))))
    } else {
        (None, None)
    };
    let cine_frames = (cfg.control.cine_seconds * source.frame_rate()).ceil() as usize;
    if cine_frames > 0 {
        log::info!(
            "cine: {cine_frames} frames ({:.0} MB) for freeze and step-back",
            (cine_frames * width as usize * height as usize * 3) as f64 / 1e6
        );
    }
    let opts = Options {
        control: requests,
        cine_frames,
        snapshot_dir: cfg.control.snapshot_dir.clone(),
        spool_dir: cfg.control.spool_dir.clone(),
        dicom: dicom_settings(cfg, &model)?,
        max_mask_age: cfg.max_mask_age,
        frames: cfg.frames,
        roi: cfg.roi,
        overlay: cfg.overlay.clone(),
        stop,
        keep_records: false,
        watchdog: watchdog.map(|w| Arc::new(Mutex::new(w))),
        realtime_priority,
        lossless,
        strict: cfg.capture.strict,
        live: !file_source,
        stat_capacity: cfg.stats_samples,
        measure: cfg
            .measure
            .settings(cfg.roi.unwrap_or(Rect::full(width, height))),
    };
    // The sender only reads the spool folder: it never waits on the video,
    // and stops (within one network timeout) when the run ends.
    let sender = cfg
        .pacs
        .clone()
        .map(|p| crate::pacs::Sender::start(cfg.control.spool_dir.clone(), p))
        .transpose()
        .map_err(|e| Error::io("starting the PACS sender", e))?;
    let mut result = pipeline::run(source, segs, sink.as_mut(), &opts)?;
    result.report.pacs = sender.map(crate::pacs::Sender::finish);
    drop(control);
    result.report.load_s = load_s;
    if let Some(path) = &cfg.stats_json {
        // The run is over and its report is still printed: a file that can
        // no longer be written (checked writable at the start) is logged.
        if let Err(e) = write_json(path, &result.report) {
            log::error!("{e}; the statistics are in the printed report only");
        }
    }
    Ok(result)
}

/// Checks the output paths before anything is loaded or written: the
/// display file or folder, the recording and the statistics are distinct
/// and can be written (an existing file is opened without truncation, a
/// new one's nearest existing folder must be writable).
pub fn check_outputs(cfg: &Config) -> Result<()> {
    let mut outputs: Vec<(&str, &Path)> = Vec::new();
    match &cfg.display {
        DisplaySpec::Y4m(p) | DisplaySpec::Gif(p) | DisplaySpec::PngDir(p) => {
            outputs.push(("display", p))
        }
        DisplaySpec::Null | DisplaySpec::Device(_) => {}
    }
    if cfg.record != RecordMode::None {
        outputs.push(("record_path", &cfg.record_path));
    }
    if let Some(p) = &cfg.stats_json {
        outputs.push(("stats_json", p));
    }
    if let SourceSpec::File(src) = &cfg.source {
        for (key, p) in &outputs {
            if same_path(src, p) {
                return Err(Error::config(
                    &cfg.origin,
                    format!("{key} {p:?} is the source file; fix: write the output elsewhere"),
                ));
            }
        }
    }
    for (i, (key, p)) in outputs.iter().enumerate() {
        if let Some((other, _)) = outputs[..i].iter().find(|(_, q)| same_path(p, q)) {
            return Err(Error::config(
                &cfg.origin,
                format!(
                    "{other} and {key} are the same path {p:?}; fix: give each output its own file"
                ),
            ));
        }
        let folder = matches!(cfg.display, DisplaySpec::PngDir(_)) && *key == "display";
        writable(p, folder).map_err(|why| {
            Error::config(&cfg.origin, format!("{key} {p:?} cannot be written: {why}"))
        })?;
    }
    Ok(())
}

/// Whether two paths name the same file, existing or not.
fn same_path(a: &Path, b: &Path) -> bool {
    let abs = |p: &Path| {
        std::fs::canonicalize(p)
            .or_else(|_| std::path::absolute(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    abs(a) == abs(b)
}

/// `Ok` when `path` (a file, or a folder when `folder`) can be written
/// without creating or changing anything now; `Err` says why not and the fix.
fn writable(path: &Path, folder: bool) -> std::result::Result<(), String> {
    if path.exists() {
        if folder {
            if !path.is_dir() {
                return Err("it is not a folder; fix: point it at a folder".into());
            }
            return access_w(path);
        }
        if path.is_dir() {
            return Err("it is a folder; fix: name a file".into());
        }
        return std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map(drop)
            .map_err(|e| format!("{e}; fix: check its permissions"));
    }
    let mut dir = path.parent();
    while let Some(d) = dir {
        let d = if d.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d
        };
        if d.exists() {
            if !d.is_dir() {
                return Err(format!(
                    "{d:?} is not a folder; fix: a path inside a folder"
                ));
            }
            return access_w(d);
        }
        dir = d.parent();
    }
    Ok(())
}

fn access_w(dir: &Path) -> std::result::Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| "the path holds a NUL byte".to_string())?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0 {
        Ok(())
    } else {
        Err(format!(
            "{dir:?} is not writable ({}); fix: check its permissions or choose another folder",
            std::io::Error::last_os_error()
        ))
    }
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

/// Whether this CPU's int8 conv kernel is a dot-product one.
fn int8_is_fast() -> bool {
    crate::infer::ops::qconv::selected().is_some_and(|k| k.dot_product())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo runs the gated int8 model wherever lgms-edge has a
    /// dot-product int8 conv, and the f32 one elsewhere (tests run from the
    /// crate root).
    #[test]
    fn the_demo_runs_the_bundled_int8_model_where_it_is_fast() {
        let fast = int8_is_fast();
        let want = if fast {
            "models/lgmsnet-phantom-us.int8.onnx"
        } else {
            "models/lgmsnet-phantom-us.f32.onnx"
        };
        assert_eq!(demo_model(), Some(want));
        if fast {
            let path = std::path::Path::new(want);
            let meta = crate::infer::model::read_metadata(path).expect("bundled model metadata");
            let record = crate::infer::gate::GateRecord::from_metadata(
                path,
                meta.entries(),
                crate::infer::model::Precision::Int8,
            )
            .expect("a well-formed accuracy record");
            assert!(
                record.is_some_and(|r| r.trusted()),
                "the bundled int8 model has no passing accuracy record"
            );
        }
    }
}
