//! Finds the quantised convs that [`super::QConv`] replaces, in the
//! decluttered graph, and swaps them (see the module doc of [`super`]).

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_core::ops::quant::{DequantizeLinearF32, QuantizeLinearU8};

use super::super::{eval_with, single_successor};
use super::{Kernel, Plan, QConv};

/// Reads a constant input as `T` values.
fn const_vec<T: Datum + Copy>(model: &TypedModel, outlet: OutletId) -> Option<Vec<T>> {
    let k = model.outlet_fact(outlet).ok()?.konst.clone()?;
    if k.datum_type() != T::datum_type() {
        return None;
    }
    let view = k.try_as_plain_ram().ok()?;
    Some(view.as_slice::<T>().ok()?.to_vec())
}

/// The 256-entry table of a u8 -> u8 `LookupTable` node (tract's
/// declutter folds `DequantizeLinear -> element-wise op -> QuantizeLinear`
/// into one).
fn u8_table(model: &TypedModel, id: usize) -> Option<Box<[u8; 256]>> {
    use tract_onnx::tract_core::ops::quant::LookupTable;
    let node = model.node(id);
    let lut = node
        .op_as::<ElementWiseOp>()?
        .0
        .downcast_ref::<LookupTable>()?;
    let out = model.outlet_fact(OutletId::new(id, 0)).ok()?;
    let table = lut.table.table();
    if out.datum_type != u8::datum_type() {
        return None;
    }
    <[u8; 256]>::try_from(table).ok().map(Box::new)
}

/// The quantised conv's geometry: `(k, cin, h, w, weights, cout, groups)`
/// with the `[cout, cin / groups, k, k]` weights, from tract's `Conv` or,
/// for 1x1, its quantised `EinSum`.
#[allow(clippy::type_complexity)]
fn conv_geometry(
    model: &TypedModel,
    id: usize,
) -> Option<(usize, usize, usize, usize, Vec<i8>, usize, usize)> {
    use tract_onnx::tract_core::ops::einsum::EinSum;
    let node = model.node(id);
    if node.inputs.len() != 9 {
        return None;
    }
    let xs: TVec<usize> = model
        .outlet_fact(node.inputs[0])
        .ok()?
        .shape
        .as_concrete()?
        .into();
    let (cin, h, w) = match xs.as_slice() {
        &[1, c, h, w] | &[c, h, w] => (c, h, w),
        _ => return None,
    };
    let wshape: TVec<usize> = model
        .outlet_fact(node.inputs[1])
        .ok()?
        .shape
        .as_concrete()?
        .into();
    let weights = const_vec::<i8>(model, node.inputs[1])?;
    if let Some(conv) = node.op_as::<Conv>() {
        let ps = &conv.pool_spec;
        let g = conv.group;
        if conv.q_params != Some(u8::datum_type())
            || (g > 1 && ((cin / g) % 4 != 0 || cin % g != 0))
            || conv.kernel_fmt != KernelFormat::OIHW
            || ps.data_format != DataFormat::NCHW
            || xs.len() != 4
        {
            return None;
        }
        let k = *ps.kernel_shape.first()?;
        let pad = k / 2;
        let ones = |v: &Option<TVec<usize>>| v.as_ref().is_none_or(|v| v.iter().all(|&s| s == 1));
        let same = |v: &TVec<usize>| v.len() == 2 && v.iter().all(|&p| p == pad);
        let padding_ok = match &ps.padding {
            PaddingSpec::Explicit(b, a) | PaddingSpec::ExplicitOnnxPool(b, a, _) => {
                same(b) && same(a)
            }
            PaddingSpec::Valid => k == 1,
            PaddingSpec::SameUpper | PaddingSpec::SameLower => true,
        };
        let cout = *wshape.first()?;
        if ps.kernel_shape.len() != 2
            || ps.kernel_shape[1] != k
            || k % 2 == 0
            || !ones(&ps.strides)
            || !ones(&ps.dilations)
            || !padding_ok
            || wshape.as_slice() != [cout, cin / g, k, k]
            || cout % g != 0
            || (cout / g) % 4 != 0 && g > 1
        {
            return None;
        }
        return Some((k, cin, h, w, weights, cout, g));
    }
    // A 1x1 conv: tract declutters it to an EinSum of the image with the
    // [O, I] weights (the batch axis kept or dropped on either side).
    let es = node.op_as::<EinSum>()?;
    let expr = es.axes.to_string();
    let (ins, out) = expr.split_once("->")?;
    let ins = ins.strip_prefix('N').unwrap_or(ins);
    if es.q_params != Some(u8::datum_type()) || !matches!(out, "NOHW" | "OHW") {
        return None;
    }
    match (ins, wshape.as_slice()) {
        ("IHW,OI,O,,,O,O,,", &[cout, i]) if i == cin => Some((1, cin, h, w, weights, cout, 1)),
        // One output channel: tract drops the weights' O axis.
        ("IHW,I,,,,O,O,,", &[i]) if i == cin => Some((1, cin, h, w, weights, 1, 1)),
        _ => None,
    }
}

/// Whether node `id` is an element-wise f32 op of `prev`'s output alone
/// (or with a one-value constant), with an output of the same shape: then
/// its value at each element depends on that element only, and evaluating
/// it on the 256 levels of a quantised input gives every value it can
/// produce.
fn is_pointwise_f32(model: &TypedModel, id: usize, prev: usize) -> bool {
    use tract_onnx::tract_core::ops::binary::TypedBinOp;
    let node = model.node(id);
    let prev_out = OutletId::new(prev, 0);
    let (Ok(input), Ok(output)) = (
        model.outlet_fact(prev_out),
        model.outlet_fact(OutletId::new(id, 0)),
    ) else {
        return false;
    };
    if input.datum_type != f32::datum_type()
        || output.datum_type != f32::datum_type()
        || input.shape != output.shape
        || node.outputs.len() != 1
    {
        return false;
    }
    let scalar_const = |o: &OutletId| {
        model
            .outlet_fact(*o)
            .ok()
            .and_then(|f| f.konst.clone())
            .is_some_and(|k| k.len() == 1 && k.datum_type() == f32::datum_type())
    };
    if node.op_is::<ElementWiseOp>() || node.op_is::<super::super::gelu::Gelu>() {
        node.inputs.as_slice() == [prev_out]
    } else if node.op_is::<TypedBinOp>() {
        node.inputs.len() == 2
            && node.inputs.iter().filter(|&&o| o == prev_out).count() == 1
            && node
                .inputs
                .iter()
                .all(|o| *o == prev_out || scalar_const(o))
    } else {
        false
    }
}

/// `table` (the dequantised levels) through the element-wise ops of
/// `chain` (`(node, its input's node)`, in order), evaluated by tract
/// itself: the values its own plan computes for those levels.
fn fold_pointwise(
    model: &TypedModel,
    chain: &[(usize, usize)],
    table: &[f32; 256],
) -> Option<[f32; 256]> {
    let mut values = Tensor::from_shape(&[256], table).ok()?;
    for &(id, prev) in chain {
        let prev_out = OutletId::new(prev, 0);
        let rank = model.outlet_fact(prev_out).ok()?.rank();
        // The levels along the last axis, so that a constant of any rank
        // broadcasts against them.
        let mut shape = vec![1usize; rank.max(1)];
        *shape.last_mut()? = 256;
        let levels = values.into_shape(&shape).ok()?.into_tvalue();
        values = eval_with(model, id, prev_out, levels)?.into_tensor();
        if values.len() != 256 || values.datum_type() != f32::datum_type() {
            return None;
        }
    }
    let view = values.try_as_plain_ram().ok()?;
    view.as_slice::<f32>().ok()?.try_into().ok()
}

/// Whether node `id` multiplies `prev`'s `[1, c, h, w]` f32 output by,
/// or adds to it, a constant of one value per channel (`[1, c, 1, 1]` or
/// `[c, 1, 1]`), with an output of the same shape.
fn is_channel_affine(model: &TypedModel, id: usize, prev: usize, c: usize) -> bool {
    use tract_onnx::tract_core::ops::binary::TypedBinOp;
    let node = model.node(id);
    let prev_out = OutletId::new(prev, 0);
    let Some(bin) = node.op_as::<TypedBinOp>() else {
        return false;
    };
    let (Ok(input), Ok(output)) = (
        model.outlet_fact(prev_out),
        model.outlet_fact(OutletId::new(id, 0)),
    ) else {
        return false;
    };
    let shape = input.shape.as_concrete().unwrap_or(&[]);
    let per_channel = |o: &OutletId| {
        model
            .outlet_fact(*o)
            .ok()
            .and_then(|f| f.konst.clone())
            .is_some_and(|k| {
                let s = k.shape();
                k.datum_type() == f32::datum_type()
                    && k.len() == c
                    && (s == [1, c, 1, 1] || s == [c, 1, 1])
            })
    };
    (bin.0.name() == "Mul" || bin.0.name() == "Add")
        && bin.1.is_none()
        && shape.len() == 4
        && shape[..2] == [1, c]
        && input.datum_type == f32::datum_type()
        && output.datum_type == f32::datum_type()
        && input.shape == output.shape
        && node.inputs.len() == 2
        && node.inputs.iter().filter(|&&o| o == prev_out).count() == 1
        && node.inputs.iter().any(per_channel)
}

/// `table` (the levels' f32 values) through the per-channel ops of
/// `chain` ([`is_channel_affine`]), evaluated by tract itself on `[1, c,
/// 1, 256]` levels: one table per channel.
fn fold_per_channel(
    model: &TypedModel,
    chain: &[(usize, usize)],
    table: &[f32; 256],
    c: usize,
) -> Option<Vec<[f32; 256]>> {
    let levels: Vec<f32> = (0..c).flat_map(|_| table.iter().copied()).collect();
    let mut values = Tensor::from_shape(&[1, c, 1, 256], &levels).ok()?;
    for &(id, prev) in chain {
        let prev_out = OutletId::new(prev, 0);
        values = eval_with(model, id, prev_out, values.into_tvalue())?.into_tensor();
        if values.shape() != [1, c, 1, 256] || values.datum_type() != f32::datum_type() {
            return None;
        }
    }
    let view = values.try_as_plain_ram().ok()?;
    let v = view.as_slice::<f32>().ok()?;
    v.chunks_exact(256).map(|t| t.try_into().ok()).collect()
}

struct Found {
    plan: Plan,
    /// The operator's input (f32 before a fused QuantizeLinear, or u8), or
    /// the inputs of the channel concat that produced it.
    xs: TVec<OutletId>,
    /// The node whose output the op replaces (the conv, a table after it,
    /// or the DequantizeLinear).
    last: usize,
    /// Its shape.
    out_shape: TVec<usize>,
    /// Element-wise ops after slices of the output, folded into the
    /// output table: left out of the graph once the op is in.
    shunted: Vec<usize>,
}

/// The inputs of the concat along the channels that produces `x`, when
/// its only consumer is on the way to conv `conv` (directly, or through the
/// conv's QuantizeLinear or input table): the conv then reads them in
/// place, and the concat's copy of every value leaves the graph.
fn concat_parts(model: &TypedModel, x: OutletId, conv: usize) -> Option<TVec<OutletId>> {
    use tract_onnx::tract_core::ops::array::TypedConcat;
    let node = model.node(x.node);
    let concat = node.op_as::<TypedConcat>()?;
    let rank = model.outlet_fact(x).ok()?.rank();
    // The consumers between the concat and the conv have one input and one
    // consumer each.
    let mut at = single_successor(model, x.node)?;
    while at != conv {
        if model.node(at).inputs.len() != 1 {
            return None;
        }
        at = single_successor(model, at)?;
    }
    let dt = model.outlet_fact(x).ok()?.datum_type;
    let whole: TVec<usize> = model.outlet_fact(x).ok()?.shape.as_concrete()?.into();
    if !(rank == 4 && whole[0] == 1 && concat.axis == 1 || rank == 3 && concat.axis == 0) {
        return None;
    }
    for i in &node.inputs {
        let f = model.outlet_fact(*i).ok()?;
        let s = f.shape.as_concrete()?;
        // Same image, any channel count: each part is whole channels.
        if f.datum_type != dt || s.len() != rank || s[rank - 2..] != whole[rank - 2..] {
            return None;
        }
    }
    Some(node.inputs.iter().copied().collect())
}

fn match_at(model: &TypedModel, id: usize) -> Option<Found> {
    let node = model.node(id);
    let (k, cin, h, w, weights, cout, groups) = conv_geometry(model, id)?;
    // Input: u8, maybe from a table, maybe from a QuantizeLinearU8 of f32.
    let mut x = node.inputs[0];
    let lut_in = u8_table(model, x.node);
    if lut_in.is_some() {
        x = model.node(x.node).inputs[0];
    }
    let mut quantize_input = None;
    let qnode = model.node(x.node);
    if let Some(q) = qnode
        .op_as::<ElementWiseOp>()
        .and_then(|e| e.0.downcast_ref::<QuantizeLinearU8>())
    {
        let src = *qnode.inputs.first()?;
        if model.outlet_fact(src).ok()?.datum_type == f32::datum_type() {
            // tract's quantisation exactly (it multiplies by 1/scale).
            quantize_input = Some((q.scale, q.zero_point as i32));
            x = src;
        }
    }
    if quantize_input.is_none() && model.outlet_fact(x).ok()?.datum_type != u8::datum_type() {
        return None;
    }
    let xs = concat_parts(model, x, id).unwrap_or_else(|| tvec![x]);
    // Output: u8, maybe through a table, maybe into a DequantizeLinearF32.
    let mut last = id;
    let mut lut_out = None;
    if let Some(s) = single_successor(model, last) {
        lut_out = u8_table(model, s);
        if lut_out.is_some() {
            last = s;
        }
    }
    let mut dequantize_output = None;
    if let Some(s) = single_successor(model, last) {
        if let Some(dq) = model.node(s).op_as::<DequantizeLinearF32>() {
            dequantize_output = Some((dq.zero_point, dq.scale));
            last = s;
        }
    }
    // Element-wise f32 ops after the dequantisation (an activation, a max
    // with a scalar): folded into the output table. (node, its input's node)
    let mut pointwise = Vec::new();
    if dequantize_output.is_some() {
        while let Some(s) = single_successor(model, last) {
            if !is_pointwise_f32(model, s, last) {
                break;
            }
            pointwise.push((s, last));
            last = s;
        }
    }
    // Then a per-channel affine (a BatchNorm after the activation): one
    // table per output channel.
    let mut per_channel = Vec::new();
    if dequantize_output.is_some() {
        while let Some(s) = single_successor(model, last) {
            if !is_channel_affine(model, s, last, cout) {
                break;
            }
            per_channel.push((s, last));
            last = s;
        }
    }
    let mut shunted = Vec::new();
    if dequantize_output.is_some() && per_channel.is_empty() {
        if let Some(split) = sliced_pointwise(model, last) {
            pointwise.push(split[0]);
            shunted = split.iter().map(|&(op, _)| op).collect();
        }
    }
    // A residual added to the f32 output (the multi-kernel blocks' `x +
    // conv(x)`): added tile by tile in the conv instead of in one more
    // pass over the tensor, on one thread, in tract.
    let mut residual = None;
    if dequantize_output.is_some() && shunted.is_empty() {
        if let Some((add, other)) = super::super::residual_add(model, last) {
            residual = Some(other);
            last = add;
        }
    }
    let out_fact = model.outlet_fact(OutletId::new(last, 0)).ok()?;
    let out_shape: TVec<usize> = out_fact.shape.as_concrete()?.into();
    let out_dt = if dequantize_output.is_some() {
        f32::datum_type()
    } else {
        u8::datum_type()
    };
    if out_shape.iter().product::<usize>() != cout * h * w || out_fact.datum_type != out_dt {
        return None;
    }
    // The constants: bias, x0, x_scale, k0, k_scale, y0, y_scale.
    let bias = const_vec::<i32>(model, node.inputs[2])?;
    let x0 = const_vec::<i32>(model, node.inputs[3])?;
    let x_scale = const_vec::<f32>(model, node.inputs[4])?;
    let k0 = const_vec::<i32>(model, node.inputs[5])?;
    let k_scale = const_vec::<f32>(model, node.inputs[6])?;
    let y0 = const_vec::<i32>(model, node.inputs[7])?;
    let y_scale = const_vec::<f32>(model, node.inputs[8])?;
    let (&x0, &x_scale, &y0, &y_scale) = match (&x0[..], &x_scale[..], &y0[..], &y_scale[..]) {
        ([a], [b], [c], [d]) => (a, b, c, d),
        _ => return None,
    };
    if k0.iter().any(|&z| z != 0) {
        return None;
    }
    let bias = match bias.len() {
        n if n == cout => Some(bias),
        // No bias (tract's placeholder is a scalar zero).
        0 => None,
        1 if bias[0] == 0 => None,
        _ => return None,
    };
    let plan = Plan::new(
        (cin, cout, k, h, w, groups),
        &weights,
        bias.as_deref(),
        x_scale,
        x0,
        &k_scale,
        y_scale,
        y0,
    )
    .ok()?;
    let mut plan = plan.with_io(
        quantize_input,
        lut_in,
        lut_out.as_deref(),
        dequantize_output,
    );
    let mut xs = xs;
    if let Some(other) = residual {
        plan = plan.with_residual();
        xs.push(other);
    }
    if !pointwise.is_empty() {
        let table = fold_pointwise(model, &pointwise, &plan.out_f32)?;
        plan = plan.with_f32_table(table);
    }
    if !per_channel.is_empty() {
        let tables = fold_per_channel(model, &per_channel, &plan.out_f32, cout)?;
        plan = plan.with_f32_channel_tables(tables);
    }
    Some(Found {
        plan,
        xs,
        last,
        out_shape,
        shunted,
    })
}

/// `(op, slice)` for each consumer of node `last`'s output when every one
/// is a slice into the same element-wise op, and nothing else reads the
/// slices: tract's declutter splits an activation over the slices that
/// follow it (the hybrid blocks' SiLU after the 1x1 conv that feeds both
/// branches), and the op, once folded into the conv's output table,
/// applies to every slice. None otherwise.
fn sliced_pointwise(model: &TypedModel, last: usize) -> Option<Vec<(usize, usize)>> {
    use tract_onnx::tract_core::ops::array::Slice;
    let out = OutletId::new(last, 0);
    if model.outputs.contains(&out) {
        return None;
    }
    let mut found: Vec<(usize, usize)> = Vec::new();
    for slice in &model.outlet_successors(out).to_vec() {
        let slice = slice.node;
        if !model.node(slice).op_is::<Slice>() || model.outputs.contains(&slice.into()) {
            return None;
        }
        let op = single_successor(model, slice)?;
        let ew = model.node(op).op_as::<ElementWiseOp>()?;
        if !is_pointwise_f32(model, op, slice) {
            return None;
        }
        if let Some(&(first, _)) = found.first() {
            if model.node(first).op_as::<ElementWiseOp>()? != ew {
                return None;
            }
        }
        found.push((op, slice));
    }
    (!found.is_empty()).then_some(found)
}

/// The kernel this run's int8 convs use, or `None` where they stay
/// tract's: a CPU without an int8 SIMD table (an x86_64 CPU without AVX2 +
/// FMA), where the scalar kernel is the reference, not a fast path. Every
/// aarch64 core has one (NEON widening, or `sdot` with dotprod).
/// `LGMS_KERNELS=scalar` still runs the convs here, on the scalar kernel.
pub fn selected() -> Option<Kernel> {
    let native = crate::kernels::native().map(|k| k.qconv());
    if native.is_none_or(|k| k.name() == "scalar") {
        return None;
    }
    Some(crate::kernels::best().qconv())
}

/// Replaces every matching quantised conv; returns how many.
pub fn replace_all(model: &mut TypedModel) -> TractResult<usize> {
    use tract_onnx::tract_core::ops::einsum::EinSum;
    let Some(kernel) = selected() else {
        return Ok(0);
    };
    let mut replaced = 0;
    let candidates: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| n.op_is::<Conv>() || n.op_is::<EinSum>())
        .map(|n| n.id)
        .collect();
    for id in candidates {
        let Some(found) = match_at(model, id) else {
            continue;
        };
        if kernel.needs_7bit() && !found.plan.fits_7bit {
            log::warn!(
                "{}: 8-bit weights would saturate the {} int8 kernel; left to tract \
                 (fix: quantise with 7-bit weights, lgms_models/quantize.py's default)",
                model.node(id).name,
                kernel.name
            );
            continue;
        }
        let name = format!("{}.lgms_qconv", model.node(id).name);
        let op = QConv {
            plan: Arc::new(found.plan),
            out_shape: found.out_shape,
        };
        let last = OutletId::new(found.last, 0);
        super::super::swap_in(model, &found.xs, last, name, op)?;
        for id in found.shunted {
            if let Some(patch) = TypedModelPatch::shunt_one_op(model, model.node(id))? {
                patch.apply(model)?;
            }
        }
        replaced += 1;
    }
    Ok(replaced)
}
