//! Small tract graphs in the shape each of our operators replaces, as
//! tract's decluttering leaves them: for the tests (`tests/ops.rs`, stock
//! against substituted) and the timing example (`examples/ops_timing.rs`).

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::math::{Add, Mul};
use tract_onnx::tract_core::ops::nn::resize::{CoordTransformer, Interpolator, Nearest, Resize};
use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};

/// `EinSum(q, k) [* scale] -> Softmax(axis) -> EinSum(., v)`; sources q, k, v.
///
/// `softmax_axis`: `None` for the last axis; `v_first`: V is the first
/// operand of the second product.
pub fn attention(
    qk: &str,
    av: &str,
    shapes: [&[usize]; 3],
    scale: Option<f32>,
    softmax_axis: Option<usize>,
    v_first: bool,
) -> TractResult<TypedModel> {
    let mut m = TypedModel::default();
    let q = m.add_source("q", f32::fact(shapes[0]))?;
    let k = m.add_source("k", f32::fact(shapes[1]))?;
    let v = m.add_source("v", f32::fact(shapes[2]))?;
    let mut s = m.wire_node("qk", EinSum::new(qk.parse()?, f32::datum_type()), &[q, k])?[0];
    let rank = m.outlet_fact(s)?.rank();
    if let Some(c) = scale {
        let c = m.add_const("scale", tensor0(c).broadcast_into_rank(rank)?)?;
        s = m.wire_node("mul", TypedBinOp(Box::new(Mul), None), &[s, c])?[0];
    }
    let sm = Softmax {
        axes: tvec![softmax_axis.unwrap_or(rank - 1)],
        quant_output_dt: None,
        kind: SoftmaxKind::Softmax,
    };
    let p = m.wire_node("softmax", sm, &[s])?[0];
    let av_op = EinSum::new(av.parse()?, f32::datum_type());
    let inputs = if v_first { [v, p] } else { [p, v] };
    let o = m.wire_node("av", av_op, &inputs)?;
    m.select_output_outlets(&o)?;
    Ok(m)
}

/// LGMSNet's 1024-token attention block as tract declutters it.
pub fn lgmsnet_attention(tokens: usize) -> TractResult<TypedModel> {
    let s: &[usize] = &[1, 4, 4, tokens, 8];
    attention(
        "abcmk,abcnk->bcmn",
        "bcmk,abckn->bmcn",
        [s, s, s],
        Some(8f32.powf(-0.5)),
        None,
        false,
    )
}

/// ONNX `Resize` by 2 on H and W (linear, `ct` coordinates).
pub fn resize2x(shape: [usize; 4], ct: CoordTransformer) -> TractResult<TypedModel> {
    let mut m = TypedModel::default();
    let x = m.add_source("x", f32::fact(shape))?;
    let scales = m.add_const("scales", tensor1(&[1f32, 1.0, 2.0, 2.0]))?;
    let op = Resize {
        coord_transformer: ct,
        interpolator: Interpolator::Linear,
        nearest: Nearest::Floor,
        optional_scales_input: Some(1),
        optional_sizes_input: None,
    };
    let y = m.wire_node("resize", op, &[x, scales])?;
    m.select_output_outlets(&y)?;
    Ok(m)
}

/// A 1x1 convolution with bias as tract declutters an ONNX Conv:
/// `EinSum("NIHW,OI->OHW")` then `Add` of an `[O, 1, 1]` constant.
pub fn conv1x1(i: usize, o: usize, h: usize, w: usize, seed: u64) -> TractResult<TypedModel> {
    let mut m = TypedModel::default();
    let x = m.add_source("x", f32::fact([1, i, h, w]))?;
    let wt = Tensor::from_shape(&[o, i], &pseudo_random(o * i, seed))?;
    let b = Tensor::from_shape(&[o, 1, 1], &pseudo_random(o, seed + 1))?;
    let wc = m.add_const("weights", wt)?;
    let bc = m.add_const("bias_values", b)?;
    let y = m.wire_node(
        "conv",
        EinSum::new("NIHW,OI->OHW".parse()?, f32::datum_type()),
        &[x, wc],
    )?[0];
    let y = m.wire_node("bias", TypedBinOp(Box::new(Add), None), &[y, bc])?;
    m.select_output_outlets(&y)?;
    Ok(m)
}

/// Deterministic values in [-1, 1) (a tiny LCG: no RNG dependency here).
pub fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
