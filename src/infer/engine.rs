//! The inference engine: LGMSNet (or any 1x3xHxW -> 1x1xHxW segmentation
//! network) through tract.
//!
//! A [`Model`] is loaded, checked and optimised once and shared between
//! workers; each worker owns an [`Engine`] with its own tract state and
//! buffers sized at start, so a frame costs no allocation on our side.
//!
//! Preprocessing (size, channel order, mean, std, scale) and the threshold
//! come from the model file's metadata (`lgms.*` keys written by
//! `lgms_models/export.py`) or a sidecar `MODEL.onnx.json`, never from code: a
//! model trained with other conventions then runs correctly without a
//! rebuild, and a model without them is refused instead of silently fed
//! the wrong numbers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tract_onnx::prelude::*;

use crate::frame::{Frame, Mask, Rect};
use crate::infer::preprocess::{ChannelOrder, Normalize};
use crate::pipeline::stats::{Stage, StageRecorder};
use crate::{Error, Result};

/// What the runtime knows about a model after loading it.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// File it was loaded from.
    pub path: PathBuf,
    /// `lgms.name`, or the file stem.
    pub name: String,
    /// `lgms.precision`: "f32", "int8" or "f16".
    pub precision: String,
    /// Input height and width.
    pub input_hw: (usize, usize),
    /// Output (logits) height and width.
    pub output_hw: (usize, usize),
    /// Input normalisation.
    pub normalize: Normalize,
    /// Logit threshold: mask = logit > threshold.
    pub threshold: f32,
    /// Every `lgms.*` metadata entry (after the sidecar's overrides).
    pub metadata: BTreeMap<String, String>,
    /// Number of weights (elements of constant float/int tensors of the decluttered graph).
    pub parameters: usize,
    /// Operator name -> count, in the optimised graph that tract runs.
    pub op_histogram: BTreeMap<String, usize>,
    /// Subgraphs replaced by our own operators (none with `LoadOptions::stock`).
    pub substitutions: crate::infer::ops::Substitutions,
}

/// Options for loading a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Threads tract may use per inference (needs the `multithread` feature for > 1).
    pub threads: usize,
    /// Run tract's stock graph, without our fused operators ([`crate::infer::ops`]):
    /// for comparisons (`lgms-edge bench --stock`) and for bisecting.
    pub stock: bool,
    /// Compute in f16: tract converts an f32 model at load (`model.precision
    /// = "f16"`). Fast only where the CPU has fp16 arithmetic (`asimdhp`:
    /// Pi 5, Orin; not Pi 4); elsewhere tract emulates it, slowly.
    pub f16: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            threads: 1,
            stock: false,
            f16: false,
        }
    }
}

/// A loaded, optimised model, shared by all workers.
#[derive(Debug)]
pub struct Model {
    info: ModelInfo,
    plan: Arc<TypedRunnableModel>,
}

const META_PREFIX: &str = "onnx.metadata_props.";

impl Model {
    /// Loads, checks and optimises an ONNX model.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Arc<Model>> {
        if !path.is_file() {
            return Err(Error::ModelNotFound {
                path: path.to_path_buf(),
            });
        }
        let corrupt = |e: TractError| Error::ModelCorrupt {
            path: path.to_path_buf(),
            reason: format!("{e:#}"),
        };
        let mut inference = onnx().model_for_path(path).map_err(corrupt)?;

        // An operator tract does not know is kept as a placeholder node by the
        // ONNX loader; name it now instead of failing later with a type error.
        for node in inference.nodes() {
            let name = node.op.name();
            if let Some(op) = name
                .strip_prefix("Unimplemented(")
                .and_then(|s| s.strip_suffix(')'))
            {
                return Err(Error::UnsupportedOp {
                    path: path.to_path_buf(),
                    op: op.to_string(),
                });
            }
        }

        let metadata = read_metadata(path, &inference)?;
        let meta = Meta {
            path,
            map: &metadata,
        };
        let normalize = meta.normalize()?;
        let threshold = meta.f32("lgms.threshold")?;
        let name = metadata.get("lgms.name").cloned().unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        let precision = metadata
            .get("lgms.precision")
            .cloned()
            .unwrap_or_else(|| "f32".into());

        let shape_err = |reason: String| Error::ModelShape {
            path: path.to_path_buf(),
            reason,
        };
        if inference.inputs.len() != 1 || inference.outputs.len() != 1 {
            return Err(shape_err(format!(
                "it has {} inputs and {} outputs, the runtime needs exactly one of each",
                inference.inputs.len(),
                inference.outputs.len()
            )));
        }
        let input_fact = inference.input_fact(0).map_err(corrupt)?.clone();
        let dims = input_fact
            .shape
            .as_concrete_finite()
            .ok()
            .flatten()
            .map(|d| d.to_vec());
        let dims = dims
            .ok_or_else(|| shape_err(format!("input shape {:?} is not fixed", input_fact.shape)))?;
        if dims.len() != 4 || dims[0] != 1 || dims[1] != 3 || dims[2] < 8 || dims[3] < 8 {
            return Err(shape_err(format!(
                "input shape is {dims:?}, expected [1, 3, H, W]"
            )));
        }
        let input_hw = (dims[2], dims[3]);
        inference
            .set_input_fact(0, f32::fact([1, 3, input_hw.0, input_hw.1]).into())
            .map_err(corrupt)?;

        let typed = inference
            .into_typed()
            .and_then(|m| m.into_decluttered())
            .map_err(corrupt)?;
        let out_fact = typed.output_fact(0).map_err(corrupt)?.clone();
        let out_dims: Vec<usize> = out_fact
            .shape
            .as_concrete()
            .map(|d| d.to_vec())
            .ok_or_else(|| shape_err(format!("output shape {:?} is not fixed", out_fact.shape)))?;
        if out_dims.len() != 4
            || out_dims[0] != 1
            || out_dims[1] != 1
            || out_fact.datum_type != f32::datum_type()
        {
            return Err(shape_err(format!(
                "output is {:?} {:?}, expected f32 logits [1, 1, H, W]",
                out_fact.datum_type, out_dims
            )));
        }
        let parameters = count_parameters(&typed);
        let mut typed = typed;
        let mut precision = precision;
        if opts.f16 {
            if precision != "f32" {
                return Err(Error::ModelMetadata {
                    path: path.to_path_buf(),
                    key: "lgms.precision".into(),
                    reason: format!(
                        "is {precision:?}; f16 is converted from an f32 model at load, \
                         fix: point model.path at the .f32.onnx file"
                    ),
                });
            }
            if !cpu_features().iter().any(|f| f == "fp16" || f == "asimdhp") {
                log::warn!(
                    "{}: f16 requested but this CPU has no fp16 arithmetic (asimdhp): \
                     tract emulates it, many times slower than f32; fix: precision = \"f32\"",
                    path.display()
                );
            }
            typed = to_f16(typed).map_err(corrupt)?;
            precision = "f16".into();
        }
        // Our operators are f32 kernels: an f16 model runs tract's own.
        let substitutions = if opts.stock || opts.f16 {
            crate::infer::ops::Substitutions::default()
        } else {
            crate::infer::ops::substitute(&mut typed).map_err(corrupt)?
        };
        log::debug!("{}: {substitutions:?}", path.display());
        let mut optimized = if opts.stock {
            typed.into_optimized()
        } else {
            optimize_tuned(typed)
        }
        .map_err(corrupt)?;
        // After optimisation, so that no tract pass fuses the wide sums back.
        let widened = crate::infer::ops::wide_sum::harden(&mut optimized).map_err(corrupt)?;
        log::debug!(
            "{}: {widened} wide reductions accumulate in f64",
            path.display()
        );
        let mut op_histogram = BTreeMap::new();
        for node in optimized.nodes() {
            *op_histogram.entry(node.op.name().to_string()).or_insert(0) += 1;
        }
        let run_opts = run_options(opts.threads)?;
        let plan = optimized
            .into_runnable_with_options(&run_opts)
            .map_err(corrupt)?;
        Ok(Arc::new(Model {
            info: ModelInfo {
                path: path.to_path_buf(),
                name,
                precision,
                input_hw,
                output_hw: (out_dims[2], out_dims[3]),
                normalize,
                threshold,
                metadata,
                parameters,
                op_histogram,
                substitutions,
            },
            plan,
        }))
    }

    /// What was read from the file.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }
}

/// tract's f32 -> f16 translation of every node but the input, the
/// upsamplings and the last one (the 16 -> 1 logits conv), which stay f32: the engine keeps feeding
/// f32 and reading f32 logits, and the translator puts the casts in between.
fn to_f16(mut model: TypedModel) -> TractResult<TypedModel> {
    use tract_onnx::tract_core::transform::{build_float_translator, NodeFilter};
    // The filter matches by substring: give the two kept nodes unique names.
    const KEEP_IN: &str = "lgms_f32_input";
    const KEEP_OUT: &str = "lgms_f32_logits";
    let input = model.input_outlets()?[0].node;
    let output = model.output_outlets()?[0].node;
    model.node_mut(input).name = KEEP_IN.into();
    model.node_mut(output).name = KEEP_OUT.into();
    let filter = NodeFilter {
        include: None,
        // tract 0.23's Resize has no f16 kernel ("tensor is F16, accessed as
        // F32"): the upsamplings stay f32, with casts around them.
        exclude: Some(vec![KEEP_IN.into(), KEEP_OUT.into(), "Resize".into()]),
    };
    build_float_translator(f32::datum_type(), f16::datum_type(), filter).transform_into(model)
}

/// tract knobs scoped to our optimisation pass (not process-wide, so that a
/// `--stock` model loaded in the same process keeps tract's defaults).
///
/// On x86_64, `TRACT_DISABLE_DIRECT_SPATIAL`: tract runs LGMSNet's two
/// full-resolution 3x3 decoder convs as a `DirectSpatialConv` that took
/// 80 + 74 ms per inference here, against 30 + 22 ms as im2col + matmul
/// (`lgms-edge bench --profile`, with and without the knob). On aarch64
/// tract's choice is kept: it is unmeasured on a board, and setting
/// `TRACT_DISABLE_DIRECT_SPATIAL=1` in the environment tries the other way.
fn optimize_tuned(model: TypedModel) -> TractResult<TypedModel> {
    let knobs: &[(&str, &str)] = if cfg!(target_arch = "x86_64") {
        &[("TRACT_DISABLE_DIRECT_SPATIAL", "true")]
    } else {
        &[]
    };
    let scope = tract_onnx::tract_core::knobs::KnobScope::new(knobs.iter().copied())?;
    scope.enter(|| model.into_optimized())
}

#[cfg(feature = "multithread")]
fn run_options(threads: usize) -> Result<RunOptions> {
    let mut o = RunOptions::default();
    if threads > 1 {
        o.executor = Some(multithread::Executor::multithread(threads));
    }
    Ok(o)
}

#[cfg(not(feature = "multithread"))]
fn run_options(threads: usize) -> Result<RunOptions> {
    if threads > 1 {
        log::warn!(
            "model.threads = {threads} ignored: this build has no multi-threaded kernels \
             (rebuild with --features multithread); use model.workers for parallelism"
        );
    }
    Ok(RunOptions::default())
}

fn count_parameters(model: &TypedModel) -> usize {
    model
        .nodes()
        .iter()
        .filter_map(|n| n.op_as::<tract_onnx::tract_core::ops::konst::Const>())
        .map(|c| c.val().len())
        .filter(|&n| n > 1)
        .sum()
}

/// Reads `lgms.*` keys from the ONNX metadata, then lets a sidecar JSON
/// (`MODEL.onnx.json`, or `MODEL.json`) override or add keys.
fn read_metadata(path: &Path, model: &InferenceModel) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for (k, v) in &model.properties {
        if let Some(key) = k.strip_prefix(META_PREFIX) {
            if let Ok(s) = v
                .try_as_plain_ram()
                .and_then(|p| p.to_scalar::<String>().cloned())
            {
                map.insert(key.to_string(), s);
            }
        }
    }
    let mut sidecar = path.as_os_str().to_owned();
    sidecar.push(".json");
    for cand in [PathBuf::from(sidecar), path.with_extension("json")] {
        if !cand.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&cand)
            .map_err(|e| Error::io(format!("model sidecar {cand:?}"), e))?;
        let obj: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| Error::ModelMetadata {
                path: path.to_path_buf(),
                key: cand.display().to_string(),
                reason: format!("is not a flat JSON object ({e})"),
            })?;
        for (k, v) in obj {
            let s = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            map.insert(k, s);
        }
        log::info!("model metadata overridden by sidecar {cand:?}");
        break;
    }
    Ok(map)
}

struct Meta<'a> {
    path: &'a Path,
    map: &'a BTreeMap<String, String>,
}

impl Meta<'_> {
    fn err(&self, key: &str, reason: impl Into<String>) -> Error {
        Error::ModelMetadata {
            path: self.path.to_path_buf(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    fn get(&self, key: &str) -> Result<&str> {
        self.map
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| self.err(key, "is missing"))
    }

    fn f32(&self, key: &str) -> Result<f32> {
        let s = self.get(key)?;
        s.trim()
            .parse::<f32>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| self.err(key, format!("= {s:?} is not a finite number")))
    }

    fn triple(&self, key: &str) -> Result<[f32; 3]> {
        let s = self.get(key)?;
        let v: Vec<f32> = s
            .split(',')
            .filter_map(|p| p.trim().parse::<f32>().ok())
            .collect();
        match v.as_slice() {
            [a, b, c] if v.iter().all(|x| x.is_finite()) => Ok([*a, *b, *c]),
            _ => Err(self.err(key, format!("= {s:?} is not three comma-separated numbers"))),
        }
    }

    fn normalize(&self) -> Result<Normalize> {
        let order = self.get("lgms.channel_order")?;
        let channel_order = match order.to_ascii_uppercase().as_str() {
            "RGB" => ChannelOrder::Rgb,
            "BGR" => ChannelOrder::Bgr,
            _ => {
                return Err(self.err(
                    "lgms.channel_order",
                    format!("= {order:?}, expected RGB or BGR"),
                ))
            }
        };
        let std = self.triple("lgms.std")?;
        if std.iter().any(|&s| s <= 0.0) {
            return Err(self.err("lgms.std", "has a value <= 0"));
        }
        let max_pixel_value = self.f32("lgms.max_pixel_value")?;
        if max_pixel_value <= 0.0 {
            return Err(self.err("lgms.max_pixel_value", "must be > 0"));
        }
        Ok(Normalize {
            channel_order,
            mean: self.triple("lgms.mean")?,
            std,
            max_pixel_value,
            extra_scale: self.f32("lgms.extra_scale")?,
        })
    }
}

/// A tract failure while preparing or running `model`.
fn inference_error(model: &str, e: TractError) -> Error {
    Error::Inference {
        model: model.to_string(),
        reason: format!("{e:#}"),
    }
}

/// One worker's inference context: a tract state and buffers sized once.
pub struct Engine {
    model: Arc<Model>,
    state: TypedSimpleState,
    input: Arc<Tensor>,
    /// For f16 models: the input converted from `input` before each run.
    input_f16: Option<Arc<Tensor>>,
    logits: Vec<f32>,
}

impl Engine {
    /// A fresh state for `model`.
    pub fn new(model: Arc<Model>) -> Result<Engine> {
        let (h, w) = model.info.input_hw;
        let (oh, ow) = model.info.output_hw;
        let fail = |e: TractError| inference_error(&model.info.name, e);
        let state = TypedSimpleState::new(&model.plan).map_err(fail)?;
        let input_dt = model.plan.model().input_fact(0).map_err(fail)?.datum_type;
        let input_f16 = if input_dt == f16::datum_type() {
            Some(Arc::new(Tensor::zero::<f16>(&[1, 3, h, w]).map_err(fail)?))
        } else {
            None
        };
        Ok(Engine {
            state,
            input: Arc::new(Tensor::zero::<f32>(&[1, 3, h, w]).map_err(fail)?),
            input_f16,
            logits: vec![0.0; oh * ow],
            model,
        })
    }

    /// The model this engine runs.
    pub fn info(&self) -> &ModelInfo {
        &self.model.info
    }

    /// Lends the input tensor's data (planar NCHW) to `fill`.
    pub fn with_input<R>(&mut self, fill: impl FnOnce(&mut [f32]) -> R) -> Result<R> {
        // tract drops its reference to the input when a run ends
        // (`reset_turn`), so this is unique and no copy is made; if it
        // ever were not, `make_mut` copies instead of corrupting a run.
        let fail = |e: TractError| inference_error(&self.model.info.name, e);
        let t = Arc::make_mut(&mut self.input);
        let mut view = t.try_as_plain_ram_mut().map_err(fail)?;
        let data = view.as_slice_mut::<f32>().map_err(fail)?;
        Ok(fill(data))
    }

    /// Fills the input tensor from `roi` of `frame` with the model's preprocessing.
    pub fn preprocess(&mut self, frame: &Frame, roi: Rect) -> Result<()> {
        if !roi.fits_in(frame.width, frame.height) {
            return Err(Error::invalid(
                format!("frame {} ({}x{})", frame.id, frame.width, frame.height),
                format!("region of interest {roi:?} does not fit; fix the roi in the config"),
            ));
        }
        if frame.rgb.len() != frame.width as usize * frame.height as usize * 3 {
            return Err(Error::invalid(
                format!("frame {}", frame.id),
                "pixel buffer does not match its size (corrupt frame)",
            ));
        }
        let (h, w) = self.model.info.input_hw;
        let norm = self.model.info.normalize;
        self.with_input(|input| {
            crate::kernels::resize_normalize(
                &frame.rgb,
                frame.width as usize,
                frame.height as usize,
                roi,
                w,
                h,
                &norm,
                input,
            )
        })
    }

    /// Runs the network on the current input tensor; the logits are then in [`Engine::logits`].
    pub fn infer(&mut self) -> Result<()> {
        let input = self
            .input_value()
            .map_err(|e| inference_error(&self.model.info.name, e))?;
        let outputs = self
            .state
            .run(tvec!(input))
            .map_err(|e| inference_error(&self.model.info.name, e))?;
        let view = outputs[0]
            .try_as_plain_ram()
            .map_err(|e| inference_error(&self.model.info.name, e))?;
        if view.len() != self.logits.len() {
            return Err(Error::Inference {
                model: self.model.info.name.clone(),
                reason: format!(
                    "output has {} values, expected {}",
                    view.len(),
                    self.logits.len()
                ),
            });
        }
        if outputs[0].datum_type() == f16::datum_type() {
            let out = view
                .as_slice::<f16>()
                .map_err(|e| inference_error(&self.model.info.name, e))?;
            for (l, o) in self.logits.iter_mut().zip(out) {
                *l = o.to_f32();
            }
        } else {
            let out = view
                .as_slice::<f32>()
                .map_err(|e| inference_error(&self.model.info.name, e))?;
            self.logits.copy_from_slice(out);
        }
        Ok(())
    }

    /// The tensor tract runs on: the f32 input, or its f16 copy (converted
    /// in place, no allocation) for an f16 model.
    fn input_value(&mut self) -> TractResult<TValue> {
        let Some(half) = &mut self.input_f16 else {
            return Ok(TValue::from_const(self.input.clone()));
        };
        let src = self.input.try_as_plain_ram()?;
        let src = src.as_slice::<f32>()?;
        let t = Arc::make_mut(half);
        let mut dst = t.try_as_plain_ram_mut()?;
        for (d, s) in dst.as_slice_mut::<f16>()?.iter_mut().zip(src) {
            *d = f16::from_f32(*s);
        }
        Ok(TValue::from_const(half.clone()))
    }

    /// Logits of the last [`Engine::infer`], row-major `output_hw`.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Thresholds the logits into `mask`, upscaled to `mask.roi`'s size.
    pub fn postprocess(&self, mask: &mut Mask) {
        let (lh, lw) = self.model.info.output_hw;
        let (w, h) = (mask.roi.w as usize, mask.roi.h as usize);
        mask.data.resize(w * h, 0);
        crate::kernels::logits_to_mask(
            &self.logits,
            lw,
            lh,
            self.model.info.threshold,
            w,
            h,
            &mut mask.data,
        );
    }

    /// Runs the network on an already preprocessed tensor (parity checks).
    pub fn run_tensor(&mut self, input: &[f32]) -> Result<&[f32]> {
        let expected = self.with_input(|dst| {
            if dst.len() == input.len() {
                dst.copy_from_slice(input);
            }
            dst.len()
        })?;
        if expected != input.len() {
            return Err(Error::invalid(
                "input tensor",
                format!("has {} values, the model takes {expected}", input.len()),
            ));
        }
        self.infer()?;
        Ok(&self.logits)
    }

    /// Runs the network `runs` times on the current input, timing every node
    /// of tract's plan (`lgms-edge bench --profile`).
    ///
    /// Each node goes through tract's own `eval`, so the result is the same
    /// computation [`Engine::infer`] does, plus one clock read per node.
    pub fn profile(&mut self, runs: usize) -> Result<OpProfile> {
        let plan = self.model.plan.clone();
        let model = plan.model();
        let mut per_node = vec![std::time::Duration::ZERO; model.nodes().len()];
        let started = Instant::now();
        for _ in 0..runs.max(1) {
            let input = self
                .input_value()
                .map_err(|e| inference_error(&self.model.info.name, e))?;
            self.state
                .run_plan_with_eval(tvec!(input), |ctx, op_state, node, inputs| {
                    let t = Instant::now();
                    let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                    per_node[node.id] += t.elapsed();
                    out
                })
                .map_err(|e| inference_error(&self.model.info.name, e))?;
        }
        let runs = runs.max(1) as f64;
        let total_ms = started.elapsed().as_secs_f64() * 1e3 / runs;
        let nodes = model
            .nodes()
            .iter()
            .zip(&per_node)
            .filter(|(_, d)| !d.is_zero())
            .map(|(n, d)| NodeTime {
                name: n.name.clone(),
                op: n.op.name().to_string(),
                ms: d.as_secs_f64() * 1e3 / runs,
            })
            .collect();
        Ok(OpProfile { total_ms, nodes })
    }

    /// Preprocess, infer and postprocess one frame, timing each stage.
    pub fn segment(
        &mut self,
        frame: &Frame,
        roi: Rect,
        mask: &mut Mask,
        rec: &mut StageRecorder,
    ) -> Result<()> {
        let t0 = Instant::now();
        self.preprocess(frame, roi)?;
        let t1 = Instant::now();
        self.infer()?;
        let t2 = Instant::now();
        mask.roi = roi;
        mask.frame_id = frame.id;
        mask.captured = frame.captured;
        self.postprocess(mask);
        let t3 = Instant::now();
        rec.record(Stage::Preprocess, t1 - t0);
        rec.record(Stage::Inference, t2 - t1);
        rec.record(Stage::Postprocess, t3 - t2);
        Ok(())
    }
}

/// Time spent in one node of tract's plan, per inference.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeTime {
    /// Node name (from the ONNX graph, plus tract's suffixes).
    pub name: String,
    /// Operator as tract names it (`Conv`, `EinSum`, `LgmsAttention`...).
    pub op: String,
    /// Milliseconds per inference.
    pub ms: f64,
}

/// Where one inference's time goes, per node of tract's plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OpProfile {
    /// Wall time per profiled inference, including the profiler's clock reads.
    pub total_ms: f64,
    /// Every node that took time, in plan order.
    pub nodes: Vec<NodeTime>,
}

impl OpProfile {
    /// Operator name -> (ms per inference, node count), most expensive first.
    pub fn by_op(&self) -> Vec<(String, f64, usize)> {
        let mut m: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
        for n in &self.nodes {
            let e = m.entry(&n.op).or_default();
            e.0 += n.ms;
            e.1 += 1;
        }
        let mut v: Vec<_> = m
            .into_iter()
            .map(|(k, (ms, c))| (k.to_string(), ms, c))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v
    }

    /// A table: per operator, then the `top` most expensive nodes.
    pub fn to_text(&self, top: usize) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "profile: {:.1} ms per inference", self.total_ms);
        let _ = writeln!(
            s,
            "{:<28} {:>9} {:>6} {:>6}",
            "operator", "ms", "share", "nodes"
        );
        for (op, ms, count) in self.by_op() {
            let share = 100.0 * ms / self.total_ms.max(1e-9);
            let _ = writeln!(s, "{op:<28} {ms:>9.2} {share:>5.1}% {count:>6}");
        }
        let mut nodes: Vec<&NodeTime> = self.nodes.iter().collect();
        nodes.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        let _ = writeln!(s, "top {top} nodes:");
        for n in nodes.into_iter().take(top) {
            let _ = writeln!(s, "{:>9.2} ms  {:<22} {}", n.ms, n.op, n.name);
        }
        s
    }
}

/// What `lgms-edge info` prints: the model as the runtime sees it, and the
/// CPU features tract's kernels can use on this machine.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InfoReport {
    /// Model file.
    pub path: String,
    /// Model name.
    pub name: String,
    /// Precision.
    pub precision: String,
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
}

impl InfoReport {
    /// Builds the report for a loaded model.
    pub fn new(info: &ModelInfo) -> Self {
        let n = &info.normalize;
        InfoReport {
            path: info.path.display().to_string(),
            name: info.name.clone(),
            precision: info.precision.clone(),
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
            "lgms ops:     {} attention, {} upsample 2x, {} 1x1 conv, {} int8 conv ({} kernels; bench --stock runs without)",
            o.attention,
            o.upsample,
            o.conv1x1,
            o.qconv,
            if self.pixel_kernels == "scalar" { "scalar" } else { "SIMD" }
        );
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

pub use crate::kernels::cpu_features;
