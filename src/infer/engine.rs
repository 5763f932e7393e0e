//! One inference worker: a tract state over a shared [`Model`], with the
//! input tensor and the logits sized once, so a frame costs no allocation
//! on our side.
//!
//! A frame goes through [`Engine::segment`]: the model's preprocessing
//! ([`crate::infer::preprocess`]), tract's run, then the threshold into a
//! mask.

use std::sync::Arc;
use std::time::Instant;

use tract_onnx::prelude::*;

use crate::frame::{Frame, Mask, Rect};
use crate::infer::model::{Model, ModelInfo};
use crate::infer::preprocess;
use crate::infer::profile::{NodeTime, OpProfile};
use crate::pipeline::stats::{Stage, StageRecorder};
use crate::{Error, Result};

/// A tract failure while preparing or running `model`.
fn inference_error(model: &str, e: TractError) -> Error {
    Error::inference(model, e)
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
        let (h, w) = model.info().input_hw;
        let (oh, ow) = model.info().output_hw;
        let fail = |e: TractError| inference_error(&model.info().name, e);
        let state = TypedSimpleState::new(model.plan()).map_err(fail)?;
        let input_dt = model.plan().model().input_fact(0).map_err(fail)?.datum_type;
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
        self.model.info()
    }

    /// Lends the input tensor's data (planar NCHW) to `fill`.
    pub fn with_input<R>(&mut self, fill: impl FnOnce(&mut [f32]) -> R) -> Result<R> {
        // tract drops its reference to the input when a run ends
        // (`reset_turn`), so this is unique and no copy is made; if it
        // ever were not, `make_mut` copies instead of corrupting a run.
        let fail = |e: TractError| inference_error(&self.model.info().name, e);
        let t = Arc::make_mut(&mut self.input);
        let mut view = t.try_as_plain_ram_mut().map_err(fail)?;
        let data = view.as_slice_mut::<f32>().map_err(fail)?;
        Ok(fill(data))
    }

    /// Fills the input tensor from `roi` of `frame` with the model's preprocessing.
    pub fn preprocess(&mut self, frame: &Frame, roi: Rect) -> Result<()> {
        let (input_hw, norm) = (self.model.info().input_hw, self.model.info().normalize);
        self.with_input(|input| preprocess::frame_to_input(frame, roi, input_hw, &norm, input))?
    }

    /// Runs the network on the current input tensor; the logits are then in [`Engine::logits`].
    pub fn infer(&mut self) -> Result<()> {
        let input = self
            .input_value()
            .map_err(|e| inference_error(&self.model.info().name, e))?;
        let (model, state) = (&self.model, &mut self.state);
        let outputs = model
            .on_pool(|| state.run(tvec!(input)))
            .map_err(|e| inference_error(&self.model.info().name, e))?;
        let view = outputs[0]
            .try_as_plain_ram()
            .map_err(|e| inference_error(&self.model.info().name, e))?;
        if view.len() != self.logits.len() {
            return Err(Error::inference(
                self.model.info().name.clone(),
                format!(
                    "output has {} values, expected {}",
                    view.len(),
                    self.logits.len()
                ),
            ));
        }
        if outputs[0].datum_type() == f16::datum_type() {
            let out = view
                .as_slice::<f16>()
                .map_err(|e| inference_error(&self.model.info().name, e))?;
            for (l, o) in self.logits.iter_mut().zip(out) {
                *l = o.to_f32();
            }
        } else {
            let out = view
                .as_slice::<f32>()
                .map_err(|e| inference_error(&self.model.info().name, e))?;
            self.logits.copy_from_slice(out);
        }
        // A NaN or infinite logit would threshold to an arbitrary mask:
        // it is a failing model, shown as such, not a mask.
        if let Some(bad) = self.logits.iter().position(|l| !l.is_finite()) {
            return Err(Error::inference(
                self.model.info().name.clone(),
                format!(
                    "output value {bad} is {} (NaN or infinite logits); fix: check the model's weights and its precision on this board",
                    self.logits[bad]
                ),
            ));
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
        let info = self.model.info();
        preprocess::mask_from_logits(&self.logits, info.output_hw, info.threshold, mask);
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
        let plan = self.model.plan().clone();
        let model = plan.model();
        let mut per_node = vec![std::time::Duration::ZERO; model.nodes().len()];
        let started = Instant::now();
        for _ in 0..runs.max(1) {
            let input = self
                .input_value()
                .map_err(|e| inference_error(&self.model.info().name, e))?;
            let (model, state, per_node) = (&self.model, &mut self.state, &mut per_node);
            model
                .on_pool(|| {
                    state.run_plan_with_eval(tvec!(input), |ctx, op_state, node, inputs| {
                        let t = Instant::now();
                        let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                        per_node[node.id] += t.elapsed();
                        out
                    })
                })
                .map_err(|e| inference_error(&self.model.info().name, e))?;
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
