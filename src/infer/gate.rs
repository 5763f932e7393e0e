//! The accuracy gate of a reduced-precision model: an int8 model (or an f32
//! model run as f16) is only trusted when its masks were measured against
//! the f32 masks on held-out frames and agreed well enough.
//!
//! The measurement is made offline (`make model-int8 ... CALIB=frames`,
//! `lgms_models/gate.py`, which runs this binary's own int8 path through
//! `lgms-edge masks`) and recorded in the model's metadata under
//! `lgms.gate.<precision>.*`. An int8 file carries its own record; an f16
//! run converts an f32 file at load, so its record sits in that f32 file
//! under `lgms.gate.f16.*`. `lgms-edge run` and `demo` refuse a model
//! without a passing record unless the board file says `allow_ungated =
//! true`: a quantisation recipe that silently changes the masks is worse
//! than a slower model.

use std::collections::BTreeMap;
use std::path::Path;

use crate::infer::model::Precision;
use crate::{Error, Result};

/// The metadata key prefix of `precision`'s record, e.g. `lgms.gate.int8.`.
pub fn prefix(precision: Precision) -> String {
    format!("lgms.gate.{}.", precision.name())
}

/// What the gate measured for one precision, as recorded in the metadata.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GateRecord {
    /// The precision measured.
    pub precision: Precision,
    /// Whether the agreement reached the gate.
    pub passed: bool,
    /// Mean IoU of this precision's masks against the f32 masks, per frame.
    pub agreement: f64,
    /// The lowest IoU of a single held-out frame, if recorded.
    pub min_iou: Option<f64>,
    /// The mean IoU the record had to reach.
    pub gate: f64,
    /// Number of held-out frames.
    pub held_out_frames: usize,
    /// Where the held-out frames came from.
    pub held_out_source: String,
    /// SHA-256 of the held-out frames (the network inputs, in order).
    pub held_out_sha256: String,
    /// Layers kept in f32 (mixed precision), empty when none.
    pub kept_f32: Vec<String>,
    /// How it was measured (tool, runtime, calibration).
    pub measured_with: String,
}

impl GateRecord {
    /// The record of `precision` in `metadata`: `None` when there is none,
    /// an error naming the key when one is there but malformed.
    pub fn from_metadata(
        path: &Path,
        metadata: &BTreeMap<String, String>,
        precision: Precision,
    ) -> Result<Option<GateRecord>> {
        let pre = prefix(precision);
        let get = |k: &str| metadata.get(&format!("{pre}{k}")).map(|s| s.trim());
        let Some(passed) = get("passed") else {
            return Ok(None);
        };
        let bad = |k: &str, reason: String| Error::ModelMetadata {
            path: path.to_path_buf(),
            key: format!("{pre}{k}"),
            reason,
        };
        let num = |k: &str| -> Result<f64> {
            let s = get(k).ok_or_else(|| bad(k, "is missing".into()))?;
            s.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad(k, format!("= {s:?} is not a finite number")))
        };
        let passed = match passed {
            "true" => true,
            "false" => false,
            other => {
                return Err(bad(
                    "passed",
                    format!("= {other:?}, expected true or false"),
                ))
            }
        };
        let held_out_frames =
            get("held_out_frames").ok_or_else(|| bad("held_out_frames", "is missing".into()))?;
        let held_out_frames = held_out_frames.parse::<usize>().map_err(|_| {
            bad(
                "held_out_frames",
                format!("= {held_out_frames:?} is not a count"),
            )
        })?;
        Ok(Some(GateRecord {
            precision,
            passed,
            agreement: num("agreement_mean_iou")?,
            min_iou: get("min_iou").and_then(|s| s.parse().ok()),
            gate: num("gate")?,
            held_out_frames,
            held_out_source: get("held_out_source").unwrap_or("").to_string(),
            held_out_sha256: get("held_out_sha256").unwrap_or("").to_string(),
            kept_f32: get("kept_f32")
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            measured_with: get("measured_with").unwrap_or("").to_string(),
        }))
    }

    /// Passed, on at least one frame, with an agreement at or above its gate.
    pub fn trusted(&self) -> bool {
        self.passed && self.held_out_frames > 0 && self.agreement >= self.gate
    }

    /// One line: agreement, gate, held-out set, layers kept in f32.
    pub fn summary(&self) -> String {
        let kept = if self.kept_f32.is_empty() {
            "none".to_string()
        } else {
            format!("{} ({})", self.kept_f32.len(), self.kept_f32.join(", "))
        };
        format!(
            "{}: mean mask IoU vs f32 {:.4}{} against gate {:.3} on {} held-out frames of {} (sha256 {}), layers kept f32: {kept}",
            if self.trusted() { "PASSED" } else { "FAILED" },
            self.agreement,
            self.min_iou.map(|m| format!(" (min {m:.4})")).unwrap_or_default(),
            self.gate,
            self.held_out_frames,
            if self.held_out_source.is_empty() { "?" } else { &self.held_out_source },
            short(&self.held_out_sha256),
        )
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// What the gate says about running a model.
#[derive(Debug, Clone, PartialEq)]
pub enum GateStatus {
    /// f32: nothing to gate.
    NotNeeded,
    /// A passing record.
    Passed(GateRecord),
    /// No passing record, run anyway because the board file allows it.
    Unverified {
        /// Why it is not verified (no record, or the failing record's summary).
        reason: String,
    },
}

impl GateStatus {
    /// True when the HUD must say the model is unverified.
    pub fn unverified(&self) -> bool {
        matches!(self, GateStatus::Unverified { .. })
    }
}

/// The gate for running the model at `path` (whose metadata is `metadata`)
/// at `precision`: f32 passes; int8 and f16 need a passing record, else an
/// [`Error::ModelUngated`] naming the model and the fix, unless
/// `allow_ungated`.
pub fn check(
    path: &Path,
    metadata: &BTreeMap<String, String>,
    precision: Precision,
    allow_ungated: bool,
) -> Result<GateStatus> {
    if precision == Precision::F32 {
        return Ok(GateStatus::NotNeeded);
    }
    let reason = match GateRecord::from_metadata(path, metadata, precision)? {
        Some(r) if r.trusted() => return Ok(GateStatus::Passed(r)),
        Some(r) => format!("its record says {}", r.summary()),
        None => format!(
            "it carries no accuracy record ({}* metadata)",
            prefix(precision)
        ),
    };
    if allow_ungated {
        log::warn!(
            "{}: running {precision} without a passing accuracy record ({reason}) because allow_ungated = true; the HUD says \"{precision} unverified\"",
            path.display()
        );
        return Ok(GateStatus::Unverified { reason });
    }
    let calib = "CALIB=frames/ (an image folder, a .y4m file or an lgms-edge recording)";
    let fix = match precision {
        Precision::F16 => format!(
            "measure f16 against f32 on your own frames: `make model-f16 MODEL_OUT={} {calib}` (records lgms.gate.f16.* in that f32 file)",
            path.display()
        ),
        _ => format!(
            "measure it on your own frames: `make model-int8 MODEL_OUT=model.f32.onnx MODEL_INT8={} {calib}`",
            path.display()
        ),
    };
    Err(Error::ModelUngated {
        path: path.to_path_buf(),
        precision: precision.name(),
        reason,
        fix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(passed: bool, agreement: &str) -> BTreeMap<String, String> {
        [
            ("passed", if passed { "true" } else { "false" }),
            ("agreement_mean_iou", agreement),
            ("min_iou", "0.95"),
            ("gate", "0.97"),
            ("held_out_frames", "8"),
            ("held_out_source", "frames/"),
            ("held_out_sha256", "0123456789abcdef"),
            ("kept_f32", "/stem/conv/Conv, /Up_conv2/conv/conv.0/Conv"),
            ("measured_with", "lgms-edge masks"),
        ]
        .into_iter()
        .map(|(k, v)| (format!("lgms.gate.int8.{k}"), v.to_string()))
        .collect()
    }

    #[test]
    fn f32_needs_no_record() {
        let s = check(Path::new("m.onnx"), &BTreeMap::new(), Precision::F32, false);
        assert_eq!(s.ok(), Some(GateStatus::NotNeeded));
    }

    #[test]
    fn int8_without_record_is_refused_naming_model_and_fix() {
        let e = check(
            Path::new("x.int8.onnx"),
            &BTreeMap::new(),
            Precision::Int8,
            false,
        )
        .expect_err("refused");
        let text = e.to_string();
        assert!(text.contains("x.int8.onnx"), "{text}");
        assert!(text.contains("make model-int8"), "{text}");
        assert!(text.contains("allow_ungated = true"), "{text}");
    }

    #[test]
    fn a_failing_record_is_refused_and_a_passing_one_runs() {
        let md = record(false, "0.80");
        let e = check(Path::new("m.onnx"), &md, Precision::Int8, false).expect_err("refused");
        assert!(e.to_string().contains("FAILED"), "{e}");
        // A record that claims to pass below its own gate is not trusted.
        let md = record(true, "0.96");
        assert!(check(Path::new("m.onnx"), &md, Precision::Int8, false).is_err());
        let md = record(true, "0.985");
        match check(Path::new("m.onnx"), &md, Precision::Int8, false) {
            Ok(GateStatus::Passed(r)) => {
                assert_eq!(r.held_out_frames, 8);
                assert_eq!(r.kept_f32.len(), 2);
                assert!(r
                    .summary()
                    .starts_with("PASSED: mean mask IoU vs f32 0.9850"));
            }
            other => panic!("{other:?}"),
        }
        // The int8 record does not vouch for f16.
        assert!(check(Path::new("m.onnx"), &md, Precision::F16, false).is_err());
    }

    #[test]
    fn allow_ungated_runs_unverified() {
        let s = check(Path::new("m.onnx"), &BTreeMap::new(), Precision::F16, true);
        assert!(s.is_ok_and(|s| s.unverified()));
    }

    #[test]
    fn malformed_record_names_the_key() {
        let mut md = record(true, "0.99");
        md.insert("lgms.gate.int8.gate".into(), "high".into());
        let e = GateRecord::from_metadata(Path::new("m.onnx"), &md, Precision::Int8)
            .expect_err("malformed");
        assert!(e.to_string().contains("lgms.gate.int8.gate"), "{e}");
    }
}
