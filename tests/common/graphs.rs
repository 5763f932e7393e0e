//! Small tract graphs in the shape each of our operators replaces, as
//! tract's decluttering leaves them: for the tests (`tests/ops.rs`, stock
//! against substituted) and the timing example (`examples/ops_timing.rs`),
//! which include this file with `#[path]` (it is not part of the library).

// Each includer uses its own subset.
#![allow(dead_code)]

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
    let o = wire_attention(&mut m, [q, k, v], qk, av, scale, softmax_axis, v_first)?;
    m.select_output_outlets(&[o])?;
    Ok(m)
}

/// LGMSNet's attention as tract declutters it, from its fused Q/K/V
/// projection `[1, 4, tokens, 96]` (the one source): a reshape to
/// `[.., 3, 4 heads, 8]`, two axis moves to `[3, 1, 4, 4, tokens, 8]`
/// and one gather of a constant index per operand.
pub fn split_qkv_attention(tokens: usize) -> TractResult<TypedModel> {
    use tract_onnx::tract_core::ops::array::Gather;
    use tract_onnx::tract_core::ops::change_axes::AxisOp;
    let mut m = TypedModel::default();
    let qkv = m.add_source("qkv", f32::fact([1, 4, tokens, 96]))?;
    let heads = AxisOp::Reshape(
        3,
        tvec![96.to_dim()],
        tvec![3.to_dim(), 4.to_dim(), 8.to_dim()],
    );
    let x = m.wire_node("heads", heads, &[qkv])?;
    let x = m.wire_node("move0", AxisOp::Move(3, 0), &x)?;
    let x = m.wire_node("move1", AxisOp::Move(3, 4), &x)?[0];
    let mut parts = [x; 3];
    for (i, part) in parts.iter_mut().enumerate() {
        let index = m.add_const(format!("index{i}"), tensor0(i as i64))?;
        let gather = Gather {
            axis: 0,
            output_type: None,
        };
        *part = m.wire_node(format!("gather{i}"), gather, &[x, index])?[0];
    }
    let o = wire_attention(
        &mut m,
        parts,
        "abcmk,abcnk->bcmn",
        "bcmk,abckn->bmcn",
        Some(8f32.powf(-0.5)),
        None,
        false,
    )?;
    m.select_output_outlets(&[o])?;
    Ok(m)
}

/// The attention chain of [`attention`] on `[q, k, v]`; its output.
fn wire_attention(
    m: &mut TypedModel,
    [q, k, v]: [OutletId; 3],
    qk: &str,
    av: &str,
    scale: Option<f32>,
    softmax_axis: Option<usize>,
    v_first: bool,
) -> TractResult<OutletId> {
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
    Ok(m.wire_node("av", av_op, &inputs)?[0])
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

/// An f32 3x3 convolution with bias, stride 1, padding 1, `g` groups, as
/// tract declutters an ONNX Conv.
pub fn conv3x3(
    i: usize,
    o: usize,
    g: usize,
    h: usize,
    w: usize,
    seed: u64,
) -> TractResult<TypedModel> {
    use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
    use tract_onnx::tract_core::ops::nn::DataFormat;
    let mut m = TypedModel::default();
    let x = m.add_source("x", f32::fact([1, i, h, w]))?;
    let k = Tensor::from_shape(&[o, i / g, 3, 3], &pseudo_random(o * i / g * 9, seed))?;
    let b = Tensor::from_shape(&[o], &pseudo_random(o, seed + 1))?;
    let kc = m.add_const("weights", k)?;
    let bc = m.add_const("bias", b)?;
    let pool_spec = PoolSpec {
        data_format: DataFormat::NCHW,
        kernel_shape: tvec![3, 3],
        padding: PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]),
        dilations: None,
        strides: None,
        input_channels: i,
        output_channels: o,
    };
    let conv = Conv {
        pool_spec,
        kernel_fmt: KernelFormat::OIHW,
        group: g,
        q_params: None,
    };
    let y = m.wire_node("conv", conv, &[x, kc, bc])?;
    m.select_output_outlets(&y)?;
    Ok(m)
}

/// The multi-kernel blocks' split as tract declutters it: `Slice`s (axis 1)
/// of one `[1, c, h, w]` input, each through a depthwise conv with bias
/// (kernel `ks[i]`, stride 1, "same" padding), concatenated along the
/// channels, plus the input when `residual`. `ranges`: each part's input
/// channels; `dilation`: 1, or 2 for a conv the operator must leave alone.
pub fn dw_split(
    c: usize,
    h: usize,
    w: usize,
    parts: &[(std::ops::Range<usize>, usize)],
    residual: bool,
    dilation: usize,
    seed: u64,
) -> TractResult<TypedModel> {
    use tract_onnx::tract_core::ops::array::{Slice, TypedConcat};
    use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
    use tract_onnx::tract_core::ops::nn::DataFormat;
    let mut m = TypedModel::default();
    let x = m.add_source("x", f32::fact([1, c, h, w]))?;
    let mut outs = tvec![];
    for (i, (range, k)) in parts.iter().enumerate() {
        let (n, k) = (range.len(), *k);
        let s = m.wire_node(
            format!("slice{i}"),
            Slice::new(1, range.start, range.end),
            &[x],
        )?;
        let seed = seed + 10 * i as u64;
        let wc = m.add_const(
            format!("weights{i}"),
            Tensor::from_shape(&[n, 1, k, k], &pseudo_random(n * k * k, seed))?,
        )?;
        let bc = m.add_const(
            format!("bias{i}"),
            Tensor::from_shape(&[n], &pseudo_random(n, seed + 1))?,
        )?;
        let p = k / 2 * dilation;
        let conv = Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec![k, k],
                padding: PaddingSpec::Explicit(tvec![p, p], tvec![p, p]),
                dilations: Some(tvec![dilation, dilation]),
                strides: None,
                input_channels: n,
                output_channels: n,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: n,
            q_params: None,
        };
        outs.push(m.wire_node(format!("dw{i}"), conv, &[s[0], wc, bc])?[0]);
    }
    let mut y = m.wire_node("concat", TypedConcat::new(1), &outs)?;
    if residual {
        y = m.wire_node("residual", TypedBinOp(Box::new(Add), None), &[y[0], x])?;
    }
    m.select_output_outlets(&y)?;
    Ok(m)
}

/// A graph whose output is its input.
pub fn identity(shape: [usize; 4]) -> TractResult<TypedModel> {
    let mut m = TypedModel::default();
    let x = m.add_source("x", f32::fact(shape))?;
    m.select_output_outlets(&[x])?;
    Ok(m)
}

/// `model` with tract's exact GELU (what its declutter makes of an ONNX
/// `Erf` chain) applied to its output.
pub fn then_gelu(mut model: TypedModel) -> TractResult<TypedModel> {
    use tract_onnx::tract_core::ops::nn::gelu_exact::gelu_exact;
    let y = model.output_outlets()?[0];
    let g = model.wire_node("gelu", gelu_exact(), &[y])?;
    model.select_output_outlets(&g)?;
    Ok(model)
}

/// A quantised convolution as tract declutters ONNX `QuantizeLinear ->
/// QLinearConv -> DequantizeLinear` (u8 activations, i8 weights, "same"
/// padding): what `lgms_edge::infer::ops::qconv` replaces. Weights are pseudo-random in
/// `-wmax..=wmax` (63: 7-bit, 127: 8-bit); `per_channel` gives each output
/// channel its own scale; `g` channel groups.
#[allow(clippy::too_many_arguments)]
pub fn qconv(
    i: usize,
    o: usize,
    k: usize,
    h: usize,
    w: usize,
    g: usize,
    wmax: i32,
    per_channel: bool,
    seed: u64,
) -> TractResult<TypedModel> {
    let mut m = TypedModel::default();
    let x = m.add_source("x", f32::fact([1, i, h, w]))?;
    let y = qconv_after(&mut m, x, i, o, k, g, wmax, per_channel, seed)?;
    m.select_output_outlets(&[y])?;
    Ok(m)
}

/// [`qconv`] wired after `x` (`[1, i, h, w]` f32) in `m`; returns its f32
/// output.
#[allow(clippy::too_many_arguments)]
pub fn qconv_after(
    m: &mut TypedModel,
    x: OutletId,
    i: usize,
    o: usize,
    k: usize,
    g: usize,
    wmax: i32,
    per_channel: bool,
    seed: u64,
) -> TractResult<OutletId> {
    use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
    use tract_onnx::tract_core::ops::nn::DataFormat;
    use tract_onnx::tract_core::ops::quant::{quantize_linear_u8, DequantizeLinearF32};
    let (x_scale, x_zp, y_scale, y_zp) = (0.02f32, 117i32, 0.05f32, 131i32);
    let xq = m.wire_node("x.q", quantize_linear_u8(1.0 / x_scale, x_zp as u8), &[x])?[0];
    let weights: Vec<i8> = pseudo_random(o * (i / g) * k * k, seed)
        .iter()
        .map(|v| (v * (wmax as f32 + 0.99)).trunc() as i8)
        .collect();
    let bias: Vec<i32> = pseudo_random(o, seed + 1)
        .iter()
        .map(|v| (v * 3000.0) as i32)
        .collect();
    let w_scale: Vec<f32> = if per_channel {
        (0..o).map(|c| 0.002 + 0.0005 * (c % 5) as f32).collect()
    } else {
        vec![0.003]
    };
    let w_scale = if per_channel {
        tensor1(&w_scale)
    } else {
        tensor0(w_scale[0])
    };
    let consts = [
        ("w", Tensor::from_shape(&[o, i / g, k, k], &weights)?),
        ("bias", tensor1(&bias)),
        ("x0", tensor0(x_zp)),
        ("x_scale", tensor0(x_scale)),
        ("k0", tensor0(0i32)),
        ("k_scale", w_scale),
        ("y0", tensor0(y_zp)),
        ("y_scale", tensor0(y_scale)),
    ];
    let mut inputs = vec![xq];
    for (name, t) in consts {
        inputs.push(m.add_const(name, t)?);
    }
    let p = k / 2;
    let conv = Conv {
        pool_spec: PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec![k, k],
            padding: PaddingSpec::Explicit(tvec![p, p], tvec![p, p]),
            dilations: None,
            strides: None,
            input_channels: i,
            output_channels: o,
        },
        kernel_fmt: KernelFormat::OIHW,
        group: g,
        q_params: Some(u8::datum_type()),
    };
    let y = m.wire_node("conv", conv, &inputs)?[0];
    let dq = DequantizeLinearF32 {
        scale: y_scale,
        zero_point: y_zp,
    };
    Ok(m.wire_node("y.dq", dq, &[y])?[0])
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
