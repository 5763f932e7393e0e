//! [`QConv`], the tract operator: checks its input, runs the [`Plan`]
//! with the run's kernel table, and keeps a scratch buffer per thread.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use anyhow::bail;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{EvalContext, EvalOp, Op, StaticName, TypedOp};
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use super::super::SharedOut;
use super::plan::{Input, Plan};

/// The operator: `[1, cin, h, w]` in, `[1, cout, h, w]` out (f32, or u8
/// where the conv's neighbours in the graph are quantised too). The input
/// may come in parts along the channels: the inputs of a concat that fed
/// only this conv, read in place instead of copied into one tensor first.
#[derive(Debug, Clone)]
pub struct QConv {
    /// Shared by the op's clones.
    pub(crate) plan: Arc<Plan>,
    /// The replaced DequantizeLinear's output shape (`cout * h * w` values).
    pub(crate) out_shape: TVec<usize>,
}

impl PartialEq for QConv {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.plan, &other.plan) && self.out_shape == other.out_shape
    }
}
impl Eq for QConv {}
impl Hash for QConv {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.plan) as usize).hash(state)
    }
}

impl Op for QConv {
    fn name(&self) -> StaticName {
        "LgmsQConv".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        let p = &self.plan;
        let io = |f32: bool, table: bool| match (f32, table) {
            (true, true) => "f32 + table",
            (true, false) => "f32",
            (false, true) => "u8 + table",
            (false, false) => "u8",
        };
        let out = match p.out_clamp {
            Some((lo, hi)) if p.out_table => format!("f32 clamped to levels {lo}..={hi}"),
            _ => io(p.dequantize_output.is_some(), p.out_table).to_string(),
        };
        Ok(vec![format!(
            "int8 {}x{}: {} -> {} channels ({} groups), {}x{}, {} in, {out} out{}",
            p.k,
            p.k,
            p.cin,
            p.cout,
            p.groups,
            p.h,
            p.w,
            io(p.quantize_input.is_some(), p.lut_in.is_some()),
            if p.residual { " + residual" } else { "" },
        )])
    }
    op_as_typed_op!();
}

impl EvalOp for QConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let p = &self.plan;
        let views = inputs
            .iter()
            .map(|i| i.try_as_plain_ram())
            .collect::<TractResult<TVec<_>>>()?;
        // The residual, when there is one, is the last input.
        let (views, residual) = match (p.residual, views.split_last()) {
            (true, Some((r, xs))) => (xs, Some(r.as_slice::<f32>()?)),
            _ => (&views[..], None),
        };
        let n_out = p.cout * p.h * p.w;
        if residual.is_some_and(|r| r.len() != n_out) {
            bail!(
                "LgmsQConv: a residual of {} values for an output of {n_out}",
                residual.map_or(0, <[f32]>::len)
            );
        }
        let x = views
            .iter()
            .map(|v| {
                Ok(if p.quantize_input.is_some() {
                    Input::F32(v.as_slice::<f32>()?)
                } else {
                    Input::U8(v.as_slice::<u8>()?)
                })
            })
            .collect::<TractResult<TVec<_>>>()?;
        let hw = p.h * p.w;
        let total: usize = x.iter().map(Input::len).sum();
        if total != p.cin * hw || x.iter().any(|i| i.len() % hw != 0) {
            bail!(
                "LgmsQConv: inputs of {:?} values, expected {} x {} x {} in whole channels",
                x.iter().map(Input::len).collect::<Vec<_>>(),
                p.cin,
                p.h,
                p.w
            );
        }
        // SAFETY: `run_any` writes every one of the `cout * h * w` values.
        let mut out = unsafe {
            if p.dequantize_output.is_some() {
                Tensor::uninitialized::<f32>(&self.out_shape)?
            } else {
                Tensor::uninitialized::<u8>(&self.out_shape)?
            }
        };
        {
            let mut view = out.try_as_plain_ram_mut()?;
            let dst = if p.dequantize_output.is_some() {
                SharedOut(view.as_slice_mut::<f32>()?.as_mut_ptr())
            } else {
                SharedOut(view.as_slice_mut::<u8>()?.as_mut_ptr() as *mut f32)
            };
            // `out` has the plan's type and `cout * h * w` values
            // (`out_shape`'s volume was checked at match time).
            with_scratch(p.buf_len(), |buf| {
                p.run_any(&x, buf, dst, crate::kernels::best().qconv(), residual)
            });
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

thread_local! {
    /// The quantised-input buffer, kept per inference thread: it grows to
    /// the largest conv's size once, instead of a fresh (page-faulting)
    /// allocation of up to a few MB per conv per frame.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with at least `len` bytes of this thread's scratch (contents
/// unspecified: `Plan::fill` writes every byte it reads).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0);
            }
            f(&mut buf[..len])
        }
        // Re-entered (cannot happen with tract's plan order): a fresh one.
        Err(_) => f(&mut vec![0u8; len]),
    })
}

impl TypedOp for QConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let p = &self.plan;
        let want = if p.quantize_input.is_some() {
            f32::datum_type()
        } else {
            u8::datum_type()
        };
        let (xs, residual) = match (p.residual, inputs.split_last()) {
            (true, Some((r, xs))) => (xs, Some(r)),
            _ => (inputs, None),
        };
        if let Some(i) = xs.iter().find(|i| i.datum_type != want) {
            bail!("LgmsQConv takes {want:?}, got {:?}", i.datum_type);
        }
        if let Some(r) = residual {
            if r.datum_type != f32::datum_type()
                || r.shape.as_concrete() != Some(&self.out_shape[..])
            {
                bail!(
                    "LgmsQConv adds an f32 residual of its output's shape {:?}, got {:?}",
                    self.out_shape,
                    r
                );
            }
        }
        let shape = self.out_shape.iter().copied();
        Ok(tvec!(if p.dequantize_output.is_some() {
            f32::fact(shape)
        } else {
            u8::fact(shape)
        }))
    }
    as_op!();
}
