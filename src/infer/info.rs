//! `lgms-edge info`: a loaded model as the runtime sees it, and the CPU
//! features and kernels that will run it.

use std::collections::BTreeMap;

use crate::infer::gate::GateRecord;
use crate::infer::model::{ModelInfo, Precision};
use crate::kernels::cpu_features;

/// What `lgms-edge info` prints: the model as the runtime sees it, and the
/// CPU features tract's kernels can use on this machine.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InfoReport {
    /// Model file.
    pub path: String,
    /// Model name.
    pub name: String,
    /// Precision.
    pub precision: Precision,
    /// Input tensor shape.
    pub input: [usize; 4],
    /// Output tensor shape.
    pub output: [usize; 4],
    /// Number of weights.
    pub parameters: usize,
    /// Preprocessing, as read from the metadata.
    pub preprocessing: String,
    /// Logit threshold.
    pub threshold: f32,
    /// All `lgms.*` metadata.
    pub metadata: BTreeMap<String, String>,
    /// Operator histogram of the optimised graph.
    pub operators: BTreeMap<String, usize>,
    /// CPU architecture.
    pub arch: String,
    /// SIMD features detected at run time.
    pub cpu_features: Vec<String>,
    /// Pixel-kernel table in use (`scalar`, `avx2`, `neon`).
    pub pixel_kernels: &'static str,
    /// Subgraphs running on lgms-edge's own tract operators.
    pub lgms_ops: crate::infer::ops::Substitutions,
    /// The int8 conv kernel this CPU runs (`neon-widening`,
    /// `neon-dotprod`, `avx2`, ...), or `None` where int8 convs stay
    /// tract's.
    pub int8_kernel: Option<&'static str>,
    /// The accuracy records the file carries (int8 in an int8 file, f16 in
    /// an f32 file), or the reason one is unreadable.
    pub gates: Vec<GateLine>,
}

/// One precision's accuracy record as `info` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GateLine {
    /// The precision the record is for.
    pub precision: Precision,
    /// The record, if the file has one.
    pub record: Option<GateRecord>,
    /// Why the record could not be read, if so.
    pub error: Option<String>,
    /// Whether `lgms-edge run` runs this precision without `allow_ungated`.
    pub runs_gated: bool,
}

fn gate_lines(info: &ModelInfo) -> Vec<GateLine> {
    let wanted: &[Precision] = match info.precision {
        Precision::F32 => &[Precision::F16],
        p => &[p],
    };
    wanted
        .iter()
        .filter_map(|&p| {
            let read = GateRecord::from_metadata(&info.path, &info.metadata, p);
            // An f32 file without an f16 record says nothing about f16.
            if info.precision == Precision::F32 && matches!(read, Ok(None)) {
                return None;
            }
            let (record, error) = match read {
                Ok(r) => (r, None),
                Err(e) => (None, Some(e.to_string())),
            };
            let runs_gated = record.as_ref().is_some_and(GateRecord::trusted);
            Some(GateLine {
                precision: p,
                record,
                error,
                runs_gated,
            })
        })
        .collect()
}

impl InfoReport {
    /// Builds the report for a loaded model.
    pub fn new(info: &ModelInfo) -> Self {
        let n = &info.normalize;
        InfoReport {
            path: info.path.display().to_string(),
            name: info.name.clone(),
            precision: info.precision,
            input: [1, 3, info.input_hw.0, info.input_hw.1],
            output: [1, 1, info.output_hw.0, info.output_hw.1],
            parameters: info.parameters,
            preprocessing: format!(
                "bilinear resize to {}x{}, channels {:?}, x = ((p - {}*mean)/({}*std)) * {}, mean {:?}, std {:?}",
                info.input_hw.1,
                info.input_hw.0,
                n.channel_order,
                n.max_pixel_value,
                n.max_pixel_value,
                n.extra_scale,
                n.mean,
                n.std
            ),
            threshold: info.threshold,
            metadata: info.metadata.clone(),
            operators: info.op_histogram.clone(),
            arch: std::env::consts::ARCH.to_string(),
            cpu_features: cpu_features(),
            pixel_kernels: crate::kernels::best().name,
            lgms_ops: info.substitutions,
            int8_kernel: crate::infer::ops::qconv::selected().map(|k| k.name()),
            gates: gate_lines(info),
        }
    }

    /// Human-readable text.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "model:        {} ({})", self.name, self.path);
        let _ = writeln!(s, "precision:    {}", self.precision);
        let _ = writeln!(s, "input:        input f32 {:?}", self.input);
        let _ = writeln!(
            s,
            "output:       logits f32 {:?}, mask = logit > {}",
            self.output, self.threshold
        );
        let _ = writeln!(s, "parameters:   {}", self.parameters);
        let _ = writeln!(s, "preprocess:   {}", self.preprocessing);
        let _ = writeln!(
            s,
            "cpu:          {} [{}]",
            self.arch,
            self.cpu_features.join(", ")
        );
        let _ = writeln!(
            s,
            "kernels:      {} (pixel stages; LGMS_KERNELS=scalar forces the reference)",
            self.pixel_kernels
        );
        let o = &self.lgms_ops;
        let _ = writeln!(
            s,
            "lgms ops:     {} attention, {} upsample 2x, {} 1x1 conv, {} 3x3 conv, {} depthwise split, {} gelu, {} int8 conv, {} max pool, {} norm, {} linear, {} permute ({} kernels; bench --stock runs without)",
            o.attention,
            o.upsample,
            o.conv1x1,
            o.conv3x3,
            o.dwconv,
            o.gelu,
            o.qconv,
            o.maxpool,
            o.norm,
            o.linear,
            o.permute,
            if self.pixel_kernels == "scalar" { "scalar" } else { "SIMD" }
        );
        let _ = writeln!(
            s,
            "int8 kernel:  {}",
            self.int8_kernel
                .unwrap_or("none (no int8 SIMD on this CPU: int8 convs stay tract's)")
        );
        for g in &self.gates {
            let what = match (&g.record, &g.error) {
                (Some(r), _) => r.summary(),
                (None, Some(e)) => format!("unreadable: {e}"),
                (None, None) => "no accuracy record".to_string(),
            };
            let _ = writeln!(s, "gate {}:    {what}", g.precision);
            if let Some(r) = &g.record {
                if !r.measured_with.is_empty() {
                    let _ = writeln!(s, "              measured with {}", r.measured_with);
                }
            }
            if !g.runs_gated {
                let _ = writeln!(
                    s,
                    "              lgms-edge run refuses it as {} unless allow_ungated = true",
                    g.precision
                );
            }
        }
        let _ = writeln!(s, "metadata:");
        for (k, v) in &self.metadata {
            let _ = writeln!(s, "  {k} = {v}");
        }
        let _ = writeln!(
            s,
            "operators (optimised graph, {} nodes):",
            self.operators.values().sum::<usize>()
        );
        let mut ops: Vec<_> = self.operators.iter().collect();
        ops.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (op, n) in ops {
            let _ = writeln!(s, "  {n:>5}  {op}");
        }
        s
    }
}
