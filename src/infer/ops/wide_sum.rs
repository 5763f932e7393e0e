//! Wide f32 reductions accumulated in f64, swapped into tract's plan.
//!
//! tract's decluttering fuses consecutive reductions (`declutter_reduce_reduce`)
//! and turns `Square -> Sum -> * 1/n` into `MeanOfSquares`. The exported
//! GroupNorm averages rows first, then the row means, precisely so that no
//! partial sum is long; after the fusion tract sums a whole group (up to
//! 262,144 values) in one f32 pass again. With the stem's amplification this
//! moves LGMSNet's logits by ~8e-3 (parity needs 1e-4, see models/NOTES.md).
//!
//! [`harden`] replaces each f32 `Sum`/`MeanOfSquares` over at least
//! [`MIN_WIDTH`] values with [`WideSum`], which accumulates in f64. It runs
//! after `into_optimized`, so no later pass can fuse it away. Narrow sums keep
//! tract's kernels: their f32 error is far below the tolerance.

use tract_onnx::prelude::tract_ndarray::{ArrayD, Axis, CowArray, Ix2, IxDyn};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{EvalContext, EvalOp, Op, StaticName, TypedOp};
use tract_onnx::tract_core::ops::nn::{Reduce, Reducer};
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

/// Reductions over fewer values than this are left to tract (f32 error of a
/// 4096-term sum is ~1e-6 relative at worst in practice).
pub const MIN_WIDTH: usize = 4096;

/// `Sum` (or `MeanOfSquares`) over `axes`, accumulated in f64, f32 in and out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WideSum {
    axes: TVec<usize>,
    mean_of_squares: bool,
}

impl Op for WideSum {
    fn name(&self) -> StaticName {
        "WideSumF64".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "axes: {:?} mean_of_squares: {}",
            self.axes, self.mean_of_squares
        )])
    }
    op_as_typed_op!();
}

impl EvalOp for WideSum {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = inputs[0].to_plain_array_view::<f32>()?;
        // Move the reduced axes to the end so each output value is one
        // contiguous-or-strided lane of `count` values.
        let rank = input.ndim();
        let kept: Vec<usize> = (0..rank).filter(|a| !self.axes.contains(a)).collect();
        let order: Vec<usize> = kept.iter().chain(self.axes.iter()).copied().collect();
        let permuted = input.clone().permuted_axes(IxDyn(&order));
        let kept_shape: Vec<usize> = kept.iter().map(|&a| input.shape()[a]).collect();
        let outer: usize = kept_shape.iter().product();
        let count: usize = self.axes.iter().map(|&a| input.shape()[a]).product();
        let mut out_shape: Vec<usize> = input.shape().to_vec();
        for &a in &self.axes {
            out_shape[a] = 1;
        }
        let mut values = Vec::with_capacity(outer);
        // A view when the reduced axes are trailing (the GroupNorm case); a copy
        // only for other layouts.
        let lanes: CowArray<f32, Ix2> = match permuted.clone().into_shape_with_order((outer, count))
        {
            Ok(view) => view.into(),
            Err(_) => permuted
                .as_standard_layout()
                .into_owned()
                .into_shape_with_order((outer, count))
                .map_err(|e| TractError::msg(format!("WideSumF64 reshape: {e}")))?
                .into(),
        };
        for lane in lanes.axis_iter(Axis(0)) {
            let acc: f64 = if self.mean_of_squares {
                lane.iter()
                    .map(|&x| f64::from(x) * f64::from(x))
                    .sum::<f64>()
                    / count as f64
            } else {
                lane.iter().map(|&x| f64::from(x)).sum()
            };
            values.push(acc as f32);
        }
        let out = ArrayD::from_shape_vec(IxDyn(&out_shape), values)?;
        Ok(tvec!(out.into_tensor().into_tvalue()))
    }
}

impl TypedOp for WideSum {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape: TVec<TDim> = inputs[0].shape.to_tvec();
        for &a in &self.axes {
            shape[a] = 1.to_dim();
        }
        Ok(tvec!(f32::fact(shape)))
    }
    as_op!();
}

/// Swaps every wide f32 `Sum`/`MeanOfSquares` of `model` for [`WideSum`];
/// returns how many. Call on the optimised model, right before making it runnable.
pub fn harden(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in 0..model.nodes().len() {
        let Some(reduce) = model.node(id).op_as::<Reduce>() else {
            continue;
        };
        let mean_of_squares = match reduce.reducer {
            Reducer::Sum => false,
            Reducer::MeanOfSquares => true,
            _ => continue,
        };
        let fact = model.outlet_fact(model.node(id).inputs[0])?;
        if fact.datum_type != f32::datum_type() {
            continue;
        }
        let Some(shape) = fact.shape.as_concrete() else {
            continue;
        };
        let width: usize = reduce.axes.iter().map(|&a| shape[a]).product();
        if width < MIN_WIDTH {
            continue;
        }
        let op = WideSum {
            axes: reduce.axes.clone(),
            mean_of_squares,
        };
        model.node_mut(id).op = Box::new(op);
        replaced += 1;
    }
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::nn::Reduce;

    /// A GroupNorm-sized sum (1 x 2 x 512 x 512) of values with a large common
    /// offset: naive f32 accumulation drifts, f64 does not.
    fn model(reducer: Reducer) -> TractResult<(TypedModel, Tensor, Vec<f64>)> {
        let (h, w) = (512, 512);
        let mut values = Vec::with_capacity(2 * h * w);
        let mut exact = vec![0f64; 2];
        for (g, acc) in exact.iter_mut().enumerate() {
            for i in 0..h * w {
                let x = 1.0 + 0.37 * g as f32 + ((i * 7919) % 1000) as f32 * 1e-4;
                *acc += match reducer {
                    Reducer::MeanOfSquares => f64::from(x) * f64::from(x) / (h * w) as f64,
                    _ => f64::from(x),
                };
                values.push(x);
            }
        }
        let input = Tensor::from_shape(&[1, 2, h, w], &values)?;
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact([1, 2, h, w]))?;
        let s = m.wire_node("sum", Reduce::new(tvec!(2, 3), reducer), &[x])?;
        m.select_output_outlets(&s)?;
        Ok((m, input, exact))
    }

    fn max_rel_err(m: TypedModel, input: &Tensor, exact: &[f64]) -> TractResult<f64> {
        let out = m.into_runnable()?.run(tvec!(input.clone().into()))?;
        let got = out[0].to_plain_array_view::<f32>()?;
        Ok(got
            .iter()
            .zip(exact)
            .map(|(g, e)| ((f64::from(*g) - e) / e).abs())
            .fold(0.0, f64::max))
    }

    #[test]
    fn wide_sums_are_replaced_and_accurate() -> TractResult<()> {
        for reducer in [Reducer::Sum, Reducer::MeanOfSquares] {
            let (plain, input, exact) = model(reducer)?;
            let mut hard = plain.clone();
            assert_eq!(harden(&mut hard)?, 1, "{reducer:?}");
            assert_eq!(hard.node(1).op.name(), "WideSumF64");
            let before = max_rel_err(plain, &input, &exact)?;
            let after = max_rel_err(hard, &input, &exact)?;
            // f64 accumulation: only the final rounding to f32 (2^-24 ~ 6e-8).
            assert!(after < 1e-7, "{reducer:?}: f64 sum off by {after:e}");
            assert!(
                before > 10.0 * after,
                "{reducer:?}: tract's own sum is already exact ({before:e})"
            );
        }
        Ok(())
    }

    #[test]
    fn narrow_and_non_f32_sums_are_left_alone() -> TractResult<()> {
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact([1, 4, 64, 32]))?;
        let s = m.wire_node("narrow", Reduce::new(tvec!(2, 3), Reducer::Sum), &[x])?;
        let y = m.add_source("y", i32::fact([1, 4, 256, 256]))?;
        let t = m.wire_node("ints", Reduce::new(tvec!(2, 3), Reducer::Sum), &[y])?;
        let u = m.wire_node("max", Reduce::new(tvec!(2, 3), Reducer::Max), &[x])?;
        m.select_output_outlets(&[s[0], t[0], u[0]])?;
        assert_eq!(harden(&mut m)?, 0);
        Ok(())
    }
}
