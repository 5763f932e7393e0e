//! 2x2 max pooling with stride 2 of an NCHW f32 tensor (the encoder's
//! downsampling, PyTorch's `nn.MaxPool2d(2)`), one plane per block on the
//! pool.
//!
//! tract runs its max pooling on one thread whatever the executor, and at
//! LGMSNet's sizes its patch-walking loop reads the input at about a third
//! of the speed of this row-pair loop, which the compiler vectorises.
//!
//! [`replace_all`] swaps in [`MaxPool2x2`] for every tract `MaxPool` with a
//! 2x2 window, stride 2, no padding, no dilation and no index output on a
//! concrete `[N, C, H, W]` f32 input; an odd last row or column is dropped,
//! as the pooling's floor rounding does.

use anyhow::bail;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{EvalContext, EvalOp, Op, StaticName, TypedOp};
use tract_onnx::tract_core::ops::cnn::{MaxPool, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use super::{for_each_block, swap_in, SharedOut};

/// `[N, C, H, W]` -> `[N, C, H / 2, W / 2]`, the max of each 2x2 window.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MaxPool2x2 {
    /// Input shape `[N, C, H, W]`.
    pub shape: [usize; 4],
}

impl Op for MaxPool2x2 {
    fn name(&self) -> StaticName {
        "LgmsMaxPool2x2".into()
    }
    op_as_typed_op!();
}

impl EvalOp for MaxPool2x2 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let [n, c, h, w] = self.shape;
        let x = inputs[0].try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        if x.len() != n * c * h * w {
            bail!(
                "LgmsMaxPool2x2: input has {} values, expected {:?}",
                x.len(),
                self.shape
            );
        }
        let (oh, ow) = (h / 2, w / 2);
        // SAFETY: f32 has no invalid bit patterns, and the planes below
        // write every one of the n * c * oh * ow values.
        let mut out = unsafe { Tensor::uninitialized::<f32>(&[n, c, oh, ow])? };
        {
            let mut view = out.try_as_plain_ram_mut()?;
            let dst = view.as_slice_mut::<f32>()?;
            let shared = SharedOut(dst.as_mut_ptr());
            for_each_block(n * c, |p| {
                let src = &x[p * h * w..(p + 1) * h * w];
                // SAFETY: plane p owns output values [p*oh*ow, (p+1)*oh*ow),
                // disjoint between planes, inside the tensor allocated above.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(shared.ptr().add(p * oh * ow), oh * ow)
                };
                pool_plane(src, w, dst, ow);
            });
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for MaxPool2x2 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        if inputs[0].datum_type != f32::datum_type() {
            bail!("LgmsMaxPool2x2 takes f32, got {:?}", inputs[0].datum_type);
        }
        let [n, c, h, w] = self.shape;
        Ok(tvec!(f32::fact([n, c, h / 2, w / 2])))
    }
    as_op!();
}

/// One plane: `src` rows of `w` values into `dst` rows of `ow = w / 2`.
pub fn pool_plane(src: &[f32], w: usize, dst: &mut [f32], ow: usize) {
    for (o, rows) in dst.chunks_exact_mut(ow).zip(src.chunks_exact(2 * w)) {
        let (a, b) = rows.split_at(w);
        pool_rows(&a[..2 * ow], &b[..2 * ow], o);
    }
}

/// `o[j] = max(a[2j], a[2j+1], b[2j], b[2j+1])`, NaN-ignoring as `f32::max`.
fn pool_rows(a: &[f32], b: &[f32], o: &mut [f32]) {
    for ((o, a), b) in o.iter_mut().zip(a.chunks_exact(2)).zip(b.chunks_exact(2)) {
        *o = a[0].max(b[0]).max(a[1].max(b[1]));
    }
}

/// Replaces every matching `MaxPool`; returns how many.
pub fn replace_all(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in 0..model.nodes().len() {
        let Some(pool) = model.node(id).op_as::<MaxPool>() else {
            continue;
        };
        let ps = &pool.pool_spec;
        let twos = |v: &Option<TVec<usize>>| v.as_ref().is_some_and(|v| v[..] == [2, 2]);
        let ones = |v: &Option<TVec<usize>>| v.as_ref().is_none_or(|v| v.iter().all(|&d| d == 1));
        let no_pad = match &ps.padding {
            PaddingSpec::Valid => true,
            PaddingSpec::Explicit(b, a) => b.iter().chain(a).all(|&p| p == 0),
            _ => false,
        };
        if pool.with_index_outputs.is_some()
            || ps.data_format != DataFormat::NCHW
            || ps.kernel_shape[..] != [2, 2]
            || !twos(&ps.strides)
            || !ones(&ps.dilations)
            || !no_pad
        {
            continue;
        }
        let node = model.node(id);
        let (fin, fout) = (
            model.outlet_fact(node.inputs[0])?,
            model.outlet_fact(OutletId::new(id, 0))?,
        );
        let (Some(si), Some(so)) = (fin.shape.as_concrete(), fout.shape.as_concrete()) else {
            continue;
        };
        let halves = si.len() == 4
            && so.len() == 4
            && so[..2] == si[..2]
            && so[2] == si[2] / 2
            && so[3] == si[3] / 2
            && so[2] > 0
            && so[3] > 0;
        if !halves || fin.datum_type != f32::datum_type() {
            continue;
        }
        let op = MaxPool2x2 {
            shape: [si[0], si[1], si[2], si[3]],
        };
        let (x, name) = (node.inputs[0], format!("{}.lgms_maxpool2x2", node.name));
        swap_in(model, &[x], OutletId::new(id, 0), name, op)?;
        replaced += 1;
    }
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_output_is_the_max_of_its_window_and_odd_edges_are_dropped() {
        // 3 x 5 plane: the last row and column belong to no window.
        let src = [
            1.0, 5.0, -2.0, 0.5, 99.0, //
            3.0, 2.0, -1.0, -3.0, 99.0, //
            99.0, 99.0, 99.0, 99.0, 99.0,
        ];
        let mut dst = [0.0; 2];
        pool_plane(&src, 5, &mut dst, 2);
        assert_eq!(dst, [5.0, 0.5]);
    }
}
