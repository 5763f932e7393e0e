//! Linear layer over token-major rows: `out[r, j] = b[j] + sum_i x[r, i]
//! w[i, j]`, with the inputs `i` of a row and the outputs `j` contiguous.
//!
//! The transformer blocks' linears (`to_qkv`, `to_out`, the MLP) multiply
//! 256-4096 tokens of 32-128 channels by a constant matrix. tract runs them
//! as its general matrix product: it packs the tokens into panels on every
//! call and reached about 11 GFLOP/s on them here (`lgms-edge bench
//! --profile`). In this layout no packing is needed: each step broadcasts
//! one input of 4 rows and multiplies it by 16 consecutive outputs of the
//! weight row (AVX2; NEON the same in 4 registers of 4), so that the 4 x 16
//! sums stay in registers while the weights stream from L1. Row blocks run
//! on tract's pool.
//!
//! [`replace_all`] matches, in the decluttered graph, an f32 `EinSum` of an
//! activation with a constant whose axes are `P K, K n -> P n` (any leading
//! axes `P`, contracted axes `K` last in the activation and first in the
//! constant, in the same order; new unit axes allowed in front of the
//! output), plus the bias `Add` that follows when its constant varies only
//! along `n`.

use std::sync::Arc;

use anyhow::bail;
use tract_linalg::routines::Func;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{EvalContext, EvalOp, Op, StaticName, TypedOp};
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::nn::Silu;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use super::{filled_f32, for_each_block, single_successor, with_const};
#[cfg(target_arch = "x86_64")]
use crate::kernels::cpu::Avx2Fma;
#[cfg(target_arch = "aarch64")]
use crate::kernels::cpu::Neon;

/// Rows per block of work on the pool.
const ROWS_PER_BLOCK: usize = 64;

/// `[rows, k] x [k, n] + b -> [rows, n]` by a constant matrix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Linear {
    /// Weights, `k x n` row-major.
    pub(crate) weights: Arc<Tensor>,
    /// Bias per output (zeros when the graph had none).
    pub(crate) bias: Arc<Tensor>,
    /// Inputs per row.
    pub(crate) k: usize,
    /// Outputs per row.
    pub(crate) n: usize,
    /// Output shape.
    pub(crate) out_shape: TVec<usize>,
    /// Whether the SiLU that follows in the graph (the feed-forward
    /// layer's) runs on each block's rows, through tract's own SiLU kernel
    /// (the same values as tract's separate, single-threaded op).
    pub(crate) silu: bool,
    /// Whether the op's second input, of the output's shape, is added to
    /// the output (the transformer blocks' residual `Add` after
    /// `to_out` and the feed-forward layer), block by block while the
    /// rows are in cache.
    pub(crate) residual: bool,
}

impl Op for Linear {
    fn name(&self) -> StaticName {
        "LgmsLinear".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        let silu = if self.silu { ", SiLU" } else { "" };
        Ok(vec![format!("{} -> {} per row{silu}", self.k, self.n)])
    }
    op_as_typed_op!();
}

impl EvalOp for Linear {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs[0].try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let res = match (self.residual, inputs.get(1)) {
            (true, Some(r)) => Some(r.try_as_plain_ram()?),
            (true, None) => bail!("LgmsLinear: the residual input is missing"),
            _ => None,
        };
        let res = res.as_ref().map(|r| r.as_slice::<f32>()).transpose()?;
        let (w, b) = (
            self.weights.try_as_plain_ram()?,
            self.bias.try_as_plain_ram()?,
        );
        let (w, b) = (w.as_slice::<f32>()?, b.as_slice::<f32>()?);
        let rows = x.len() / self.k;
        if x.len() != rows * self.k || rows * self.n != self.out_shape.iter().product::<usize>() {
            bail!(
                "LgmsLinear: {} inputs for rows of {} into {:?}",
                x.len(),
                self.k,
                self.out_shape
            );
        }
        if res.is_some_and(|r| r.len() != rows * self.n) {
            bail!(
                "LgmsLinear: a residual of {} values for {rows} rows of {}",
                res.map_or(0, <[f32]>::len),
                self.n
            );
        }
        let kernel = crate::kernels::best().linear();
        let (k, n) = (self.k, self.n);
        let silu = if self.silu {
            Some(Func::Silu.ew_f32()?)
        } else {
            None
        };
        // The first failure of tract's SiLU kernel, if any: returned as the
        // op's error once every block is done.
        let failed = std::sync::Mutex::new(None);
        // The row blocks cover every output row.
        let out = filled_f32(&self.out_shape, |dst| {
            for_each_block(rows.div_ceil(ROWS_PER_BLOCK), |blk| {
                let r0 = blk * ROWS_PER_BLOCK;
                let nr = ROWS_PER_BLOCK.min(rows - r0);
                // SAFETY: rows r0..r0 + nr of the output, written by this
                // block only; the output outlives the loop.
                let y = unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(r0 * n), nr * n) };
                kernel.linear(&x[r0 * k..(r0 + nr) * k], w, b, k, n, y);
                if let Some(res) = res {
                    super::add_residual(y, &res[r0 * n..(r0 + nr) * n]);
                }
                if let Some(Err(e)) = silu.as_ref().map(|f| f.run(y)) {
                    let mut first = failed.lock().unwrap_or_else(|p| p.into_inner());
                    first.get_or_insert(
                        e.context(format!("LgmsLinear: SiLU of rows {r0}..{}", r0 + nr)),
                    );
                }
            })
        })?;
        if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        Ok(tvec!(out))
    }
}

impl TypedOp for Linear {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        if let Some(i) = inputs.iter().find(|i| i.datum_type != f32::datum_type()) {
            bail!("LgmsLinear takes f32, got {:?}", i.datum_type);
        }
        if self.residual
            && inputs
                .get(1)
                .is_none_or(|r| r.shape.as_concrete() != Some(&self.out_shape[..]))
        {
            bail!(
                "LgmsLinear adds a residual of its output's shape {:?}, got {:?}",
                self.out_shape,
                inputs.get(1)
            );
        }
        Ok(tvec!(f32::fact(self.out_shape.iter().copied())))
    }
    as_op!();
}

/// Rows of `x` (`k` each) times `w` (`k x n`) plus `b` into `y` (`n` per
/// row).
type LinearFn = fn(x: &[f32], w: &[f32], b: &[f32], k: usize, n: usize, y: &mut [f32]);

/// One implementation of the linear kernel: the scalar reference, or a
/// SIMD one that only a proof of its CPU features builds.
#[derive(Debug, Clone, Copy)]
pub struct Kernel {
    name: &'static str,
    linear: LinearFn,
}

impl Kernel {
    /// The reference kernel.
    pub const SCALAR: Kernel = Kernel {
        name: "scalar",
        linear: linear_scalar,
    };

    /// The AVX2 + FMA kernel.
    #[cfg(target_arch = "x86_64")]
    pub fn avx2(_: Avx2Fma) -> Kernel {
        Kernel {
            name: "avx2",
            linear: x86::linear,
        }
    }

    /// The NEON kernel.
    #[cfg(target_arch = "aarch64")]
    pub fn neon(_: Neon) -> Kernel {
        Kernel {
            name: "neon",
            linear: neon::linear,
        }
    }

    /// `"scalar"`, `"avx2"` or `"neon"`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// `y[r, j] = b[j] + sum_i x[r, i] w[i, j]` for every row of `x`
    /// (`k` values each; `y` has `n` per row). Panics if the slices do
    /// not hold whole rows, or `w`/`b` are shorter than `k x n`/`n`.
    pub fn linear(&self, x: &[f32], w: &[f32], b: &[f32], k: usize, n: usize, y: &mut [f32]) {
        assert!(k > 0 && n > 0 && x.len().is_multiple_of(k) && y.len() == x.len() / k * n);
        assert!(w.len() >= k * n && b.len() >= n);
        (self.linear)(x, w, b, k, n, y)
    }
}

/// The reference kernel (and the SIMD kernels' tails): outputs `j0..n` of
/// every row.
fn linear_cols(x: &[f32], w: &[f32], b: &[f32], k: usize, n: usize, j0: usize, y: &mut [f32]) {
    for (xr, yr) in x.chunks_exact(k).zip(y.chunks_exact_mut(n)) {
        for (j, o) in yr.iter_mut().enumerate().skip(j0) {
            let mut acc = b[j];
            for (i, &v) in xr.iter().enumerate() {
                acc += v * w[i * n + j];
            }
            *o = acc;
        }
    }
}

fn linear_scalar(x: &[f32], w: &[f32], b: &[f32], k: usize, n: usize, y: &mut [f32]) {
    linear_cols(x, w, b, k, n, 0, y)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::linear_cols;

    /// Outputs per register block (two vectors of 8).
    const NB: usize = 16;

    pub(super) fn linear(x: &[f32], w: &[f32], b: &[f32], k: usize, n: usize, y: &mut [f32]) {
        // SAFETY: only `Kernel::avx2` reaches this function, with the proof
        // of AVX2 and FMA; `Kernel::linear` checked the sizes.
        unsafe { linear_avx2(x, w, b, k, n, y) }
        linear_cols(x, w, b, k, n, n / NB * NB, y);
    }

    /// Outputs `0..n / 16 * 16` of every row; 6 rows at a time (12
    /// accumulators, the two weight vectors and the broadcast input fill
    /// 15 of the 16 registers; the network's 16 linear layers take 6.1
    /// instead of 6.5 ms with blocks of 4 rows), then 4, then the
    /// remaining rows one at a time.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn linear_avx2(x: &[f32], w: &[f32], b: &[f32], k: usize, n: usize, y: &mut [f32]) {
        let rows = x.len() / k;
        let mut r = 0;
        // SAFETY: the caller's guarantees, passed on; rows r..r + R exist.
        unsafe {
            while r + 6 <= rows {
                rows_block::<6>(x, w, b, k, n, r, y);
                r += 6;
            }
            let rest = rows - r;
            by_fours!(rest, |i| rows_block(x, w, b, k, n, r + i, y));
        }
    }

    /// Rows `r0..r0 + R`, 16 outputs at a time.
    ///
    /// # Safety
    /// AVX2 and FMA; rows `r0..r0 + R` exist in `x` and `y`, `w` holds
    /// `k x n` and `b` `n` values.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows_block<const R: usize>(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        k: usize,
        n: usize,
        r0: usize,
        y: &mut [f32],
    ) {
        // SAFETY: every read is x[(r0 + r) * k + i] with r < R, i < k, or
        // w[i * n + j0..+16] and b[j0..+16] with j0 + 16 <= n; every write
        // y[(r0 + r) * n + j0..+16].
        unsafe {
            let xp = x.as_ptr().add(r0 * k);
            let mut j0 = 0;
            while j0 + NB <= n {
                let b0 = _mm256_loadu_ps(b.as_ptr().add(j0));
                let b1 = _mm256_loadu_ps(b.as_ptr().add(j0 + 8));
                let mut acc = [[b0, b1]; R];
                let mut wp = w.as_ptr().add(j0);
                for i in 0..k {
                    let w0 = _mm256_loadu_ps(wp);
                    let w1 = _mm256_loadu_ps(wp.add(8));
                    for (r, a) in acc.iter_mut().enumerate() {
                        let xv = _mm256_broadcast_ss(&*xp.add(r * k + i));
                        a[0] = _mm256_fmadd_ps(xv, w0, a[0]);
                        a[1] = _mm256_fmadd_ps(xv, w1, a[1]);
                    }
                    wp = wp.add(n);
                }
                for (r, a) in acc.iter().enumerate() {
                    let yp = y.as_mut_ptr().add((r0 + r) * n + j0);
                    _mm256_storeu_ps(yp, a[0]);
                    _mm256_storeu_ps(yp.add(8), a[1]);
                }
                j0 += NB;
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    use super::linear_cols;

    /// Outputs per register block (four vectors of 4).
    const NB: usize = 16;

    pub(super) fn linear(x: &[f32], w: &[f32], b: &[f32], k: usize, n: usize, y: &mut [f32]) {
        // SAFETY: only `Kernel::neon` reaches this function, with the proof
        // of NEON; `Kernel::linear` checked the sizes.
        unsafe { linear_neon(x, w, b, k, n, y) }
        linear_cols(x, w, b, k, n, n / NB * NB, y);
    }

    #[target_feature(enable = "neon")]
    unsafe fn linear_neon(x: &[f32], w: &[f32], b: &[f32], k: usize, n: usize, y: &mut [f32]) {
        let rows = x.len() / k;
        // SAFETY: the caller's guarantees, passed on.
        unsafe { by_fours!(rows, |r| rows_block(x, w, b, k, n, r, y)) }
    }

    /// Rows `r0..r0 + R`, 16 outputs at a time.
    ///
    /// # Safety
    /// NEON; as for the AVX2 kernel's `rows_block`.
    #[target_feature(enable = "neon")]
    unsafe fn rows_block<const R: usize>(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        k: usize,
        n: usize,
        r0: usize,
        y: &mut [f32],
    ) {
        // SAFETY: as for the AVX2 kernel: reads within rows r0..r0 + R of
        // x, w[i * n + j0..+16], b[j0..+16] with j0 + 16 <= n.
        unsafe {
            let xp = x.as_ptr().add(r0 * k);
            let mut j0 = 0;
            while j0 + NB <= n {
                let bp = b.as_ptr().add(j0);
                let bias = [
                    vld1q_f32(bp),
                    vld1q_f32(bp.add(4)),
                    vld1q_f32(bp.add(8)),
                    vld1q_f32(bp.add(12)),
                ];
                let mut acc = [bias; R];
                let mut wp = w.as_ptr().add(j0);
                for i in 0..k {
                    let wv = [
                        vld1q_f32(wp),
                        vld1q_f32(wp.add(4)),
                        vld1q_f32(wp.add(8)),
                        vld1q_f32(wp.add(12)),
                    ];
                    for (r, a) in acc.iter_mut().enumerate() {
                        let xv = *xp.add(r * k + i);
                        for (a, &wv) in a.iter_mut().zip(&wv) {
                            *a = vfmaq_n_f32(*a, wv, xv);
                        }
                    }
                    wp = wp.add(n);
                }
                for (r, a) in acc.iter().enumerate() {
                    let yp = y.as_mut_ptr().add((r0 + r) * n + j0);
                    for (q, &a) in a.iter().enumerate() {
                        vst1q_f32(yp.add(4 * q), a);
                    }
                }
                j0 += NB;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Pattern matching
// ---------------------------------------------------------------------------

struct Found {
    op: Linear,
    x: OutletId,
    /// The residual added after the layer, if any.
    residual: Option<OutletId>,
    last: usize,
}

fn match_at(model: &TypedModel, id: usize) -> Option<Found> {
    let node = model.node(id);
    let es = node.op_as::<EinSum>()?;
    if es.q_params.is_some() || node.inputs.len() != 2 {
        return None;
    }
    let (x, wo) = (node.inputs[0], node.inputs[1]);
    let weights = model.outlet_fact(wo).ok()?.konst.clone()?;
    let xf = model.outlet_fact(x).ok()?;
    if xf.konst.is_some()
        || xf.datum_type != f32::datum_type()
        || weights.datum_type() != f32::datum_type()
    {
        return None;
    }
    let expr = es.axes.to_string();
    let (ins, out) = expr.split_once("->")?;
    let (s0, s1) = ins.split_once(',')?;
    // s1 = K n, s0 = P K, out = (unit axes) P n.
    let n_axis = s1.chars().last()?;
    let kk = &s1[..s1.len() - 1];
    let p = s0.strip_suffix(kk)?;
    if kk.is_empty() || p.contains(n_axis) || kk.contains(n_axis) {
        return None;
    }
    let want_out = format!("{p}{n_axis}");
    let lead = out.strip_suffix(want_out.as_str())?;
    let xs: TVec<usize> = xf.shape.as_concrete()?.into();
    let ws = weights.shape();
    let k: usize = ws[..ws.len() - 1].iter().product();
    let n = *ws.last()?;
    let kx: usize = xs[p.len()..].iter().product();
    let out_fact = model.outlet_fact(OutletId::new(id, 0)).ok()?;
    let out_shape: TVec<usize> = out_fact.shape.as_concrete()?.into();
    if s0.len() != xs.len()
        || s1.len() != ws.len()
        || kx != k
        || xs[p.len()..] != ws[..ws.len() - 1]
        || out_shape.len() != out.len()
        || out_shape[..lead.len()].iter().any(|&d| d != 1)
        || out_shape[lead.len()..lead.len() + p.len()] != xs[..p.len()]
        || out_shape.last() != Some(&n)
    {
        return None;
    }
    let weights = weights.clone().into_tensor().into_shape(&[k, n]).ok()?;
    // The bias: an Add of a constant that varies along the outputs only.
    let mut last = id;
    let mut bias = tensor1(&vec![0f32; n]);
    if let Some(next) = single_successor(model, id) {
        let along_n = |b: &Tensor| {
            b.len() == n
                && b.shape().last() == Some(&n)
                && b.datum_type() == f32::datum_type()
                && b.rank() <= out_shape.len()
        };
        let same_shape = |o: usize| {
            model
                .outlet_fact(OutletId::new(o, 0))
                .is_ok_and(|f| f.shape == out_fact.shape)
        };
        if let Some(b) = with_const(model, next, "Add", OutletId::new(id, 0)) {
            if along_n(&b) && same_shape(next) {
                bias = b.into_tensor().into_shape(&[n]).ok()?;
                last = next;
            }
        }
    }
    // A SiLU after it (one f32 consumer, the same shape).
    let mut silu = false;
    if let Some(next) = single_successor(model, last) {
        let node = model.node(next);
        if node
            .op_as::<ElementWiseOp>()
            .is_some_and(|e| e.0.is::<Silu>() && e.1.is_none())
            && node.inputs.len() == 1
            && model
                .outlet_fact(OutletId::new(next, 0))
                .is_ok_and(|f| f.datum_type == f32::datum_type() && f.shape == out_fact.shape)
        {
            silu = true;
            last = next;
        }
    }
    // A residual added after it (not after a SiLU).
    let mut residual = None;
    if !silu {
        if let Some((add, other)) = super::residual_add(model, last) {
            residual = Some(other);
            last = add;
        }
    }
    Some(Found {
        op: Linear {
            weights: Arc::new(weights),
            bias: Arc::new(bias),
            k,
            n,
            out_shape,
            silu,
            residual: residual.is_some(),
        },
        x,
        residual,
        last,
    })
}

/// Replaces every matching linear layer; returns how many.
pub fn replace_all(model: &mut TypedModel) -> TractResult<usize> {
    let candidates: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| n.op_is::<EinSum>())
        .map(|n| n.id)
        .collect();
    let mut replaced = 0;
    for id in candidates {
        let Some(found) = match_at(model, id) else {
            continue;
        };
        let name = format!("{}.lgms_linear", model.node(id).name);
        let inputs: TVec<OutletId> = std::iter::once(found.x).chain(found.residual).collect();
        super::swap_in(model, &inputs, OutletId::new(found.last, 0), name, found.op)?;
        replaced += 1;
    }
    Ok(replaced)
}
