//! Fused attention: `softmax(scale * Q K^T) V`, one query row at a time.
//!
//! LGMSNet's hybrid blocks attend over 256 or 1024 tokens with 4 heads of
//! depth 8, for each of the 4 pixel offsets of a 2x2 patch: 16 independent
//! (offset, head) blocks. tract's stock graph runs this as a matrix product
//! into a 4x4x1024x1024 score tensor (64 MiB), a softmax over it, and a
//! second product with an inner dimension of 1024 packed for its matmul
//! kernel: about a third of the network's time. With a depth of 8 a score
//! is 8 multiply-adds, so this operator never stores a score matrix: the
//! SIMD kernels take 4 queries at a time through the keys once (scores,
//! `2^x`, the weighted sum of V), subtracting an upper bound of the scores
//! instead of their max ([`max_key_norm`]). Per key and query that is 16
//! multiply-adds of arithmetic plus 5 for the exponential. K is transposed
//! and V laid out in rows once per block, so the score loop runs along the
//! keys and the value loop along the depth, in SIMD lanes.
//!
//! [`fuse_all`] finds `EinSum(Q,K) [-> Mul(const scalar)] -> Softmax(last
//! axis) -> EinSum(., V)` in the decluttered graph, whatever the einsum
//! axis letters and operand layouts are, and records each operand's element
//! strides so that no transpose or reshape node is needed around it. An
//! operand made by axis moves, reshapes and constant-index gathers (the
//! heads split of the fused Q/K/V projection: a reshape, two moves and
//! three gathers, each a copy on one thread in tract) is read in place
//! from the tensor they start from, with an offset ([`Layout::offset`]).

use std::cell::RefCell;

use anyhow::bail;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{EvalContext, EvalOp, Op, StaticName, TypedOp};
use tract_onnx::tract_core::ops::array::Gather;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use super::permute::View;
use super::{for_each_block, scalar_const, single_successor, SharedOut};
#[cfg(target_arch = "x86_64")]
use crate::kernels::cpu::Avx2Fma;
#[cfg(target_arch = "aarch64")]
use crate::kernels::cpu::Neon;

/// Where one operand's logical axes are in its tensor, as element strides.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Layout {
    /// Index of the operand's first value in the tensor (Q, K and V can
    /// be three parts of one fused projection).
    pub(crate) offset: isize,
    /// Stride of each batch axis (0 where the operand is broadcast).
    pub(crate) batch: TVec<isize>,
    /// Stride between rows: queries for Q and the output, keys for K and V.
    pub(crate) rows: isize,
    /// Stride along the head depth.
    pub(crate) depth: isize,
}

/// `out[b, i, e] = sum_j softmax_j(scale * q[b, i] . k[b, j]) * v[b, j, e]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attention {
    /// Sizes of the batch axes (offsets x heads for LGMSNet).
    pub(crate) batch: TVec<usize>,
    /// Queries per block.
    pub(crate) m: usize,
    /// Keys (and values) per block.
    pub(crate) n: usize,
    /// Depth of Q and K.
    pub(crate) d: usize,
    /// Depth of V and of the output.
    pub(crate) dv: usize,
    /// `f32::to_bits` of the score scale (bits, so that the op is `Eq + Hash`).
    pub(crate) scale_bits: u32,
    /// Operand layouts.
    pub(crate) q: Layout,
    /// Operand layouts.
    pub(crate) k: Layout,
    /// Operand layouts.
    pub(crate) v: Layout,
    /// Output layout, in a dense tensor of `out_shape`.
    pub(crate) out: Layout,
    /// Shape of the output (the shape the second EinSum produced).
    pub(crate) out_shape: TVec<usize>,
}

impl Op for Attention {
    fn name(&self) -> StaticName {
        "LgmsAttention".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "batch {:?}, {} queries x {} keys, depth {}/{}, scale {}",
            self.batch,
            self.m,
            self.n,
            self.d,
            self.dv,
            f32::from_bits(self.scale_bits)
        )])
    }
    op_as_typed_op!();
}

thread_local! {
    /// Per-thread scratch (Q block, K^T, V^T, score row, output rows),
    /// grown on the first frame and reused afterwards.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl EvalOp for Attention {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let q = inputs[0].try_as_plain_ram()?;
        let k = inputs[1].try_as_plain_ram()?;
        let v = inputs[2].try_as_plain_ram()?;
        let (q, k, v) = (
            q.as_slice::<f32>()?,
            k.as_slice::<f32>()?,
            v.as_slice::<f32>()?,
        );
        let blocks: usize = self.batch.iter().product();
        let mut out = if blocks * self.m * self.dv == self.out_shape.iter().product::<usize>() {
            // SAFETY: f32 has no invalid bit patterns, and the blocks write
            // m x dv values each, at distinct indices: all of them.
            unsafe { Tensor::uninitialized::<f32>(&self.out_shape)? }
        } else {
            Tensor::zero::<f32>(&self.out_shape)?
        };
        {
            let mut view = out.try_as_plain_ram_mut()?;
            let dst = view.as_slice_mut::<f32>()?;
            let shared = SharedOut(dst.as_mut_ptr());
            let kernel = crate::kernels::best().attention();
            for_each_block(blocks, |b| self.run_block(kernel, b, q, k, v, shared));
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl Layout {
    /// Values of a tensor that the layout reads for `batch` blocks of
    /// `rows x depth` values: one past the largest index.
    fn extent(&self, batch: &[usize], rows: usize, depth: usize) -> usize {
        let dims = batch.iter().zip(&self.batch).map(|(&n, &s)| (n, s));
        let last = dims
            .chain([(rows, self.rows), (depth, self.depth)])
            .map(|(n, s)| n.saturating_sub(1) as isize * s.max(0))
            .sum::<isize>();
        (self.offset + last + 1).max(0) as usize
    }
}

impl Attention {
    fn offsets(&self, mut b: usize) -> (isize, isize, isize, isize) {
        let (mut oq, mut ok, mut ov, mut oo) =
            (self.q.offset, self.k.offset, self.v.offset, self.out.offset);
        for ax in (0..self.batch.len()).rev() {
            let c = (b % self.batch[ax]) as isize;
            b /= self.batch[ax];
            oq += c * self.q.batch[ax];
            ok += c * self.k.batch[ax];
            ov += c * self.v.batch[ax];
            oo += c * self.out.batch[ax];
        }
        (oq, ok, ov, oo)
    }

    /// One (offset, head) block: gather, attend, scatter.
    fn run_block(&self, kernel: Kernel, b: usize, q: &[f32], k: &[f32], v: &[f32], out: SharedOut) {
        let (m, n, d, dv) = (self.m, self.n, self.d, self.dv);
        let ld = leading_dim(n);
        // Scores in base 2 (see `Block::qs`).
        let scale2 = f32::from_bits(self.scale_bits) * std::f32::consts::LOG2_E;
        let (oq, ok, ov, oo) = self.offsets(b);
        SCRATCH.with_borrow_mut(|scratch| {
            let need = m * d + d * ld + n * dv + n + m * dv;
            if scratch.len() < need {
                scratch.resize(need, 0.0);
            }
            let (qs, rest) = scratch.split_at_mut(m * d);
            let (kt, rest) = rest.split_at_mut(d * ld);
            let (vr, rest) = rest.split_at_mut(n * dv);
            let (row, rest) = rest.split_at_mut(n);
            let o = &mut rest[..m * dv];
            // Offsets come from the tensor shapes checked at match time
            // (`output_facts`), so every index below is in bounds.
            let at = |base: isize, r: usize, rs: isize, c: usize, cs: isize| {
                (base + r as isize * rs + c as isize * cs) as usize
            };
            for i in 0..m {
                for t in 0..d {
                    qs[i * d + t] = q[at(oq, i, self.q.rows, t, self.q.depth)] * scale2;
                }
            }
            for t in 0..d {
                for j in 0..n {
                    kt[t * ld + j] = k[at(ok, j, self.k.rows, t, self.k.depth)];
                }
            }
            for j in 0..n {
                for e in 0..dv {
                    vr[j * dv + e] = v[at(ov, j, self.v.rows, e, self.v.depth)];
                }
            }
            let block = Block {
                qs,
                kt,
                v: vr,
                m,
                n,
                d,
                dv,
                ld,
                ldv: dv,
            };
            kernel.attend(&block, row, o);
            for i in 0..m {
                for e in 0..dv {
                    // SAFETY: blocks differ in at least one batch coordinate, so
                    // their output index sets are disjoint; each index is within
                    // the output tensor (shape checked at match time).
                    unsafe {
                        *out.ptr().add(at(oo, i, self.out.rows, e, self.out.depth)) = o[i * dv + e];
                    }
                }
            }
        });
    }
}

/// Floats between two rows of the transposed keys and values: `n` rounded
/// up to whole vectors, plus 16 where that is a multiple of 4 KiB. With
/// 1024 keys the rows would otherwise lie exactly 4 KiB apart and the 8
/// streams of an inner loop would share one L1 set.
pub fn leading_dim(n: usize) -> usize {
    let ld = n.next_multiple_of(8);
    if (ld * 4).is_multiple_of(4096) {
        ld + 16
    } else {
        ld
    }
}

impl TypedOp for Attention {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let reads = [
            self.q.extent(&self.batch, self.m, self.d),
            self.k.extent(&self.batch, self.n, self.d),
            self.v.extent(&self.batch, self.n, self.dv),
        ];
        for (ix, (i, need)) in inputs.iter().zip(reads).enumerate() {
            if i.datum_type != f32::datum_type() {
                bail!(
                    "LgmsAttention input {ix} is {:?}, expected f32",
                    i.datum_type
                );
            }
            let has = i.shape.as_concrete().map(|s| s.iter().product::<usize>());
            if has.is_some_and(|has| has < need) {
                bail!("LgmsAttention input {ix} holds {has:?} values, its layout reads {need}");
            }
        }
        Ok(tvec!(f32::fact(self.out_shape.iter().copied())))
    }
    as_op!();
}

/// Attends every query of one block (see [`Kernel::attend`]).
type AttendFn = fn(block: &Block, row: &mut [f32], out: &mut [f32]);

/// One (offset, head) block of attention, gathered into the layouts the
/// kernels' inner loops run along.
#[derive(Debug, Clone, Copy)]
pub struct Block<'a> {
    /// `m x d` queries, already multiplied by the scale and by `log2(e)`:
    /// the kernels take `2^(score - c)` for the softmax, which costs fewer
    /// multiply-adds than `e^x` and is the same function of the input.
    pub qs: &'a [f32],
    /// `d` rows of `n` keys (transposed), `ld` floats apart.
    pub kt: &'a [f32],
    /// `n` rows of `dv` values, `ldv` floats apart.
    pub v: &'a [f32],
    /// Queries.
    pub m: usize,
    /// Keys and values.
    pub n: usize,
    /// Depth of Q and K.
    pub d: usize,
    /// Depth of V and of the output.
    pub dv: usize,
    /// Floats between two rows of `kt` (`>= n`).
    pub ld: usize,
    /// Floats between two rows of `v` (`>= dv`).
    pub ldv: usize,
}

impl Block<'_> {
    /// Panics unless every slice holds what the sizes say (the kernels'
    /// unchecked reads rely on it) and `row`/`out` are large enough.
    fn check(&self, row: &[f32], out: &[f32]) {
        let Block {
            m,
            n,
            d,
            dv,
            ld,
            ldv,
            ..
        } = *self;
        assert!(
            ld >= n && ldv >= dv,
            "rows of {n} keys {ld} floats apart, of {dv} values {ldv} apart"
        );
        assert!(
            self.qs.len() >= m * d,
            "{} queries for {m} x {d}",
            self.qs.len()
        );
        assert!(
            d == 0 || self.kt.len() >= (d - 1) * ld + n,
            "keys shorter than {d} rows of {n}"
        );
        assert!(
            n == 0 || self.v.len() >= (n - 1) * ldv + dv,
            "values shorter than {n} rows of {dv}"
        );
        assert!(
            row.len() >= n && out.len() >= m * dv,
            "scratch or output too short"
        );
    }
}

/// One implementation of the attention kernel: the scalar reference, or a
/// SIMD one that only a proof of its CPU features builds. The tables of
/// [`crate::kernels`] hold one each.
#[derive(Debug, Clone, Copy)]
pub struct Kernel {
    name: &'static str,
    attend: AttendFn,
}

impl Kernel {
    /// The reference kernel.
    pub const SCALAR: Kernel = Kernel {
        name: "scalar",
        attend: attend_scalar,
    };

    /// The AVX2 + FMA kernel.
    #[cfg(target_arch = "x86_64")]
    pub fn avx2(_: Avx2Fma) -> Kernel {
        Kernel {
            name: "avx2",
            attend: x86::attend,
        }
    }

    /// The NEON kernel.
    #[cfg(target_arch = "aarch64")]
    pub fn neon(_: Neon) -> Kernel {
        Kernel {
            name: "neon",
            attend: neon::attend,
        }
    }

    /// `"scalar"`, `"avx2"` or `"neon"`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Attends every query of one block into `out` (`m x dv`), with `row`
    /// (`n` floats) as scratch. Panics if a slice is shorter than the
    /// block's sizes say.
    pub fn attend(&self, block: &Block, row: &mut [f32], out: &mut [f32]) {
        block.check(row, out);
        (self.attend)(block, row, out)
    }
}

/// The reference kernel: scores, their max, exp, sum and the weighted sum
/// of the values, one query at a time. The SIMD kernels' fallback for a
/// query whose probabilities underflow.
fn attend_scalar(b: &Block, row: &mut [f32], out: &mut [f32]) {
    for i in 0..b.m {
        attend_one_scalar(b, i, row, &mut out[i * b.dv..(i + 1) * b.dv]);
    }
}

/// Query `i` of the block, as [`attend_scalar`] computes it.
fn attend_one_scalar(b: &Block, i: usize, row: &mut [f32], out: &mut [f32]) {
    let (n, d, ld) = (b.n, b.d, b.ld);
    let row = &mut row[..n];
    let q = &b.qs[i * d..(i + 1) * d];
    row.fill(0.0);
    for (t, &qt) in q.iter().enumerate() {
        for (r, &kv) in row.iter_mut().zip(&b.kt[t * ld..t * ld + n]) {
            *r += qt * kv;
        }
    }
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for r in row.iter_mut() {
        *r = (*r - max).exp2();
        sum += *r;
    }
    let inv = 1.0 / sum;
    for (e, o) in out.iter_mut().enumerate().take(b.dv) {
        let acc: f32 = row
            .iter()
            .enumerate()
            .map(|(j, p)| p * b.v[j * b.ldv + e])
            .sum();
        *o = acc * inv;
    }
}

/// The largest key norm of the block: with it, `|q| * max_j |k_j|` bounds
/// every score of query `q` from above (Cauchy-Schwarz). The SIMD kernels
/// subtract that bound instead of the scores' max, so that scores,
/// probabilities and the weighted sum are one pass over the keys (the
/// softmax is the same for any subtracted constant; exp never overflows).
fn max_key_norm(b: &Block) -> f32 {
    let mut best = 0f32;
    for j in 0..b.n {
        let s: f32 = (0..b.d).map(|t| b.kt[t * b.ld + j].powi(2)).sum();
        best = best.max(s);
    }
    best.sqrt()
}

/// The subtracted bound for query `i` (its scaled norm times the largest
/// key norm).
fn score_bound(b: &Block, i: usize, kmax: f32) -> f32 {
    let q = &b.qs[i * b.d..(i + 1) * b.d];
    q.iter().map(|x| x * x).sum::<f32>().sqrt() * kmax
}

/// A probability sum below this means the bound was so far above the true
/// max that the probabilities lost precision: the query is redone with the
/// max ([`attend_one_scalar`]). `exp(-69)`: far from f32's normal range
/// (1e-38), so the probabilities that matter kept every bit.
const UNDERFLOW: f32 = 1e-30;

/// `2^r ~ 1 + r (c0 + r (c1 + r (c2 + r (c3 + r c4))))` on `|r| <= 1/2`,
/// fitted for relative error (1.6e-7 at most in f32 with FMA). `c0` is
/// the fit's, a little below ln 2.
#[allow(clippy::approx_constant)]
const EXP2_POLY: [f32; 5] = [
    0.693_147,
    0.240_222_42,
    0.055_507_336,
    0.009_671_513,
    0.001_326_472_7,
];

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{attend_one_scalar, max_key_norm, score_bound, Block, UNDERFLOW};

    /// `2^x` for 8 lanes: `2^round(x)` (added to the exponent bits) times
    /// a degree-5 polynomial for `2^r`, `|r| <= 1/2` ([`super::EXP2_POLY`]).
    /// `x` is clamped below at -125, where the result is ~2e-38 instead of
    /// smaller (the softmax sum is far larger, or the query is redone).
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn exp2_8(x: __m256) -> __m256 {
        let x = _mm256_max_ps(x, _mm256_set1_ps(-125.0));
        let fx = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
        let r = _mm256_sub_ps(x, fx);
        let c = super::EXP2_POLY;
        let mut p = _mm256_set1_ps(c[4]);
        for k in (0..4).rev() {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c[k]));
        }
        let p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
        let e = _mm256_slli_epi32::<23>(_mm256_cvtps_epi32(fx));
        _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e))
    }

    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }

    /// A lane mask of the first `k` lanes (`k <= 8`).
    #[target_feature(enable = "avx2,fma")]
    fn first_lanes(k: usize) -> __m256i {
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(k as i32), idx)
    }

    /// AVX2 + FMA version of [`super::attend_scalar`], one pass over the
    /// keys per 4 queries (see [`max_key_norm`]).
    pub(super) fn attend(b: &Block, row: &mut [f32], out: &mut [f32]) {
        // SAFETY: only `Kernel::avx2` reaches this function, with the proof
        // of AVX2 and FMA; `Kernel::attend` checked the slice lengths.
        unsafe { attend_avx2(b, row, out) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn attend_avx2(b: &Block, row: &mut [f32], out: &mut [f32]) {
        let kmax = max_key_norm(b);
        // SAFETY: the caller's guarantees, passed on.
        unsafe { by_fours!(b.m, |i| queries(b, i, kmax, row, out)) }
    }

    /// Keys per step of [`queries`]: the probabilities of a step for 4
    /// queries (512 B) stay in L1 between the two phases.
    const STEP: usize = 32;

    /// `acc[qi] += sum over keys u < nk of probs[qi][u] * v[u]` (8 depths
    /// from `v`, key u at `v + u * ldv`, masked to the depths of `vmask`),
    /// even keys into the first sum and odd keys into the second. A
    /// function of its own so that the 8 sums stay in registers: inlined
    /// into [`queries`], whose other live values fill the 16 registers,
    /// they go to the stack, a store and a load in every FMA's chain.
    ///
    /// # Safety
    /// AVX2 and FMA; `v` valid for `nk` rows of 8 depths (or of `vmask`'s).
    #[inline(never)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn weigh_values<const Q: usize>(
        probs: &[[f32; STEP]; Q],
        nk: usize,
        v: *const f32,
        ldv: usize,
        vmask: Option<__m256i>,
        acc: &mut [[__m256; 2]; Q],
    ) {
        // SAFETY: the caller's guarantee on `v`; `u < nk <= STEP`.
        unsafe {
            let value = |u: usize| match vmask {
                None => _mm256_loadu_ps(v.add(u * ldv)),
                Some(m) => _mm256_maskload_ps(v.add(u * ldv), m),
            };
            let mut a = *acc;
            let mut u = 0;
            while u + 2 <= nk {
                let (v0, v1) = (value(u), value(u + 1));
                for qi in 0..Q {
                    let p0 = _mm256_broadcast_ss(&probs[qi][u]);
                    let p1 = _mm256_broadcast_ss(&probs[qi][u + 1]);
                    a[qi][0] = _mm256_fmadd_ps(p0, v0, a[qi][0]);
                    a[qi][1] = _mm256_fmadd_ps(p1, v1, a[qi][1]);
                }
                u += 2;
            }
            if u < nk {
                let v0 = value(u);
                for qi in 0..Q {
                    let p0 = _mm256_broadcast_ss(&probs[qi][u]);
                    a[qi][0] = _mm256_fmadd_ps(p0, v0, a[qi][0]);
                }
            }
            *acc = a;
        }
    }

    /// Queries `i0..i0 + Q`, 8 value depths at a time, [`STEP`] keys per
    /// step in two phases, each with independent chains of FMAs for the
    /// out-of-order core to overlap (one phase per key would wait on the
    /// latency of exp and of every FMA):
    /// - scores minus the bound (FMAs from the bound down) and their exp,
    ///   two vectors of 8 keys at a time for all Q queries;
    /// - each key's value row times its probability (broadcast), into two
    ///   sums per query.
    ///
    /// K and V are read once per step for all Q queries.
    ///
    /// # Safety
    /// AVX2 and FMA; `b` checked ([`Block::check`]) against `row` and `out`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn queries<const Q: usize>(
        b: &Block,
        i0: usize,
        kmax: f32,
        row: &mut [f32],
        out: &mut [f32],
    ) {
        let (n, d, dv, ld, ldv) = (b.n, b.d, b.dv, b.ld, b.ldv);
        let mut bound = [0f32; Q];
        for (qi, bd) in bound.iter_mut().enumerate() {
            *bd = score_bound(b, i0 + qi, kmax);
        }
        let mut redo = [false; Q];
        // SAFETY: every K read is in row t < d at keys g..g + 8 with
        // g + 8 <= n, or masked to the keys below n; every V read is row
        // j + u < n, depths e0..e0 + 8 <= dv or masked to depths below dv;
        // Q reads are rows i0 + qi < m (the caller's loop bounds).
        unsafe {
            let qp = b.qs.as_ptr().add(i0 * d);
            // Scores minus the bound of the 8 keys from `g` (masked to the
            // keys below n), for every query.
            let scores = |g: usize| -> [__m256; Q] {
                let kmask = (n - g < 8).then(|| first_lanes(n - g));
                let mut s: [__m256; Q] = std::array::from_fn(|qi| _mm256_set1_ps(-bound[qi]));
                for t in 0..d {
                    let kp = b.kt.as_ptr().add(t * ld + g);
                    let kv = match kmask {
                        None => _mm256_loadu_ps(kp),
                        Some(m) => _mm256_maskload_ps(kp, m),
                    };
                    for (qi, s) in s.iter_mut().enumerate() {
                        *s = _mm256_fmadd_ps(_mm256_broadcast_ss(&*qp.add(qi * d + t)), kv, *s);
                    }
                }
                s
            };
            // The same for the 16 keys from `g` (all below n): each query
            // value broadcast once for both vectors of keys.
            let scores16 = |g: usize| -> ([__m256; Q], [__m256; Q]) {
                let mut s0: [__m256; Q] = std::array::from_fn(|qi| _mm256_set1_ps(-bound[qi]));
                let mut s1 = s0;
                for t in 0..d {
                    let kp = b.kt.as_ptr().add(t * ld + g);
                    let (k0, k1) = (_mm256_loadu_ps(kp), _mm256_loadu_ps(kp.add(8)));
                    for qi in 0..Q {
                        let q = _mm256_broadcast_ss(&*qp.add(qi * d + t));
                        s0[qi] = _mm256_fmadd_ps(q, k0, s0[qi]);
                        s1[qi] = _mm256_fmadd_ps(q, k1, s1[qi]);
                    }
                }
                (s0, s1)
            };
            let mut e0 = 0;
            while e0 < dv {
                let vmask = (dv - e0 < 8).then(|| first_lanes(dv - e0));
                let mut acc = [[_mm256_setzero_ps(); 2]; Q];
                let mut vsum = [_mm256_setzero_ps(); Q];
                let mut probs = [[0f32; STEP]; Q];
                let mut j = 0;
                while j < n {
                    let nk = (n - j).min(STEP);
                    let mut g = 0;
                    while g < nk {
                        let (s0, s1) = if g + 16 <= nk {
                            let (s0, s1) = scores16(j + g);
                            (s0, Some(s1))
                        } else {
                            (scores(j + g), (g + 8 < nk).then(|| scores(j + g + 8)))
                        };
                        for (h, s) in [Some(s0), s1].into_iter().flatten().enumerate() {
                            let at = g + 8 * h;
                            let live = (nk - at < 8).then(|| first_lanes(nk - at));
                            for qi in 0..Q {
                                let mut p = exp2_8(s[qi]);
                                if let Some(m) = live {
                                    p = _mm256_and_ps(p, _mm256_castsi256_ps(m));
                                }
                                vsum[qi] = _mm256_add_ps(vsum[qi], p);
                                _mm256_storeu_ps(probs[qi].as_mut_ptr().add(at), p);
                            }
                        }
                        g += 16;
                    }
                    let vp = b.v.as_ptr().add(j * ldv + e0);
                    weigh_values(&probs, nk, vp, ldv, vmask, &mut acc);
                    j += STEP;
                }
                for qi in 0..Q {
                    let sum = hsum(vsum[qi]);
                    if sum < UNDERFLOW || sum.is_nan() {
                        redo[qi] = true;
                        continue;
                    }
                    let r = _mm256_mul_ps(
                        _mm256_add_ps(acc[qi][0], acc[qi][1]),
                        _mm256_set1_ps(1.0 / sum),
                    );
                    let op = out.as_mut_ptr().add((i0 + qi) * dv + e0);
                    match vmask {
                        None => _mm256_storeu_ps(op, r),
                        Some(m) => _mm256_maskstore_ps(op, m, r),
                    }
                }
                e0 += 8;
            }
        }
        for (qi, _) in redo.iter().enumerate().filter(|(_, r)| **r) {
            let i = i0 + qi;
            attend_one_scalar(b, i, row, &mut out[i * dv..(i + 1) * dv]);
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    use super::{attend_one_scalar, max_key_norm, score_bound, Block, UNDERFLOW};

    /// `2^x` for 4 lanes, as the AVX2 kernel's `exp2_8`.
    #[target_feature(enable = "neon")]
    pub(super) fn exp2_4(x: float32x4_t) -> float32x4_t {
        let x = vmaxq_f32(x, vdupq_n_f32(-125.0));
        let fx = vrndnq_f32(x);
        let r = vsubq_f32(x, fx);
        let c = super::EXP2_POLY;
        let mut p = vdupq_n_f32(c[4]);
        for k in (0..4).rev() {
            p = vfmaq_f32(vdupq_n_f32(c[k]), p, r);
        }
        let p = vfmaq_f32(vdupq_n_f32(1.0), p, r);
        let e = vshlq_n_s32::<23>(vcvtq_s32_f32(fx));
        vreinterpretq_f32_s32(vaddq_s32(vreinterpretq_s32_f32(p), e))
    }

    /// NEON version of [`super::attend_scalar`], one pass over the keys per
    /// 4 queries, as the AVX2 kernel does it (see [`max_key_norm`]).
    pub(super) fn attend(b: &Block, row: &mut [f32], out: &mut [f32]) {
        // SAFETY: only `Kernel::neon` reaches this function, with the proof
        // of NEON; `Kernel::attend` checked the slice lengths.
        unsafe { attend_neon(b, row, out) }
    }

    #[target_feature(enable = "neon")]
    unsafe fn attend_neon(b: &Block, row: &mut [f32], out: &mut [f32]) {
        let kmax = max_key_norm(b);
        // SAFETY: the caller's guarantees, passed on.
        unsafe { by_fours!(b.m, |i| queries(b, i, kmax, row, out)) }
    }

    /// Queries `i0..i0 + Q`, 8 value depths (two vectors) at a time, 4 keys
    /// per step; partial key or depth groups go through zeroed copies.
    ///
    /// # Safety
    /// NEON; `b` checked ([`Block::check`]) against `row` and `out`.
    #[target_feature(enable = "neon")]
    unsafe fn queries<const Q: usize>(
        b: &Block,
        i0: usize,
        kmax: f32,
        row: &mut [f32],
        out: &mut [f32],
    ) {
        let (n, d, dv, ld, ldv) = (b.n, b.d, b.dv, b.ld, b.ldv);
        let mut bound = [0f32; Q];
        for (qi, bd) in bound.iter_mut().enumerate() {
            *bd = score_bound(b, i0 + qi, kmax);
        }
        let mut redo = [false; Q];
        // SAFETY: full vector reads are K row t < d at keys j..j + 4 <= n and
        // V row j + u < n at depths e0..e0 + 8 <= dv; partial groups are
        // copied element by element inside those bounds; Q rows are
        // i0 + qi < m.
        unsafe {
            let mut e0 = 0;
            while e0 < dv {
                let w = (dv - e0).min(8);
                let mut acc = [[vdupq_n_f32(0.0); 2]; Q];
                let mut vsum = [vdupq_n_f32(0.0); Q];
                let mut probs = [[0f32; 4]; Q];
                let mut j = 0;
                while j < n {
                    let left = (n - j).min(4);
                    let mut s: [float32x4_t; Q] = std::array::from_fn(|qi| vdupq_n_f32(-bound[qi]));
                    for t in 0..d {
                        let kv = if left == 4 {
                            vld1q_f32(b.kt.as_ptr().add(t * ld + j))
                        } else {
                            let mut tmp = [0f32; 4];
                            tmp[..left].copy_from_slice(&b.kt[t * ld + j..t * ld + j + left]);
                            vld1q_f32(tmp.as_ptr())
                        };
                        for (qi, s) in s.iter_mut().enumerate() {
                            *s = vfmaq_n_f32(*s, kv, b.qs[(i0 + qi) * d + t]);
                        }
                    }
                    for qi in 0..Q {
                        let mut p = exp2_4(s[qi]);
                        if left < 4 {
                            let lanes = vcltq_u32(
                                vld1q_u32([0u32, 1, 2, 3].as_ptr()),
                                vdupq_n_u32(left as u32),
                            );
                            p = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(p), lanes));
                        }
                        vsum[qi] = vaddq_f32(vsum[qi], p);
                        vst1q_f32(probs[qi].as_mut_ptr(), p);
                    }
                    for u in 0..left {
                        let at = (j + u) * ldv + e0;
                        let (v0, v1) = if w == 8 {
                            let vp = b.v.as_ptr().add(at);
                            (vld1q_f32(vp), vld1q_f32(vp.add(4)))
                        } else {
                            let mut tmp = [0f32; 8];
                            tmp[..w].copy_from_slice(&b.v[at..at + w]);
                            (vld1q_f32(tmp.as_ptr()), vld1q_f32(tmp.as_ptr().add(4)))
                        };
                        for qi in 0..Q {
                            let p = probs[qi][u];
                            acc[qi][0] = vfmaq_n_f32(acc[qi][0], v0, p);
                            acc[qi][1] = vfmaq_n_f32(acc[qi][1], v1, p);
                        }
                    }
                    j += 4;
                }
                for qi in 0..Q {
                    let sum = vaddvq_f32(vsum[qi]);
                    if sum < UNDERFLOW || sum.is_nan() {
                        redo[qi] = true;
                        continue;
                    }
                    let inv = 1.0 / sum;
                    let mut r = [0f32; 8];
                    vst1q_f32(r.as_mut_ptr(), vmulq_n_f32(acc[qi][0], inv));
                    vst1q_f32(r.as_mut_ptr().add(4), vmulq_n_f32(acc[qi][1], inv));
                    let o = (i0 + qi) * dv + e0;
                    out[o..o + w].copy_from_slice(&r[..w]);
                }
                e0 += 8;
            }
        }
        for (qi, _) in redo.iter().enumerate().filter(|(_, r)| **r) {
            let i = i0 + qi;
            attend_one_scalar(b, i, row, &mut out[i * dv..(i + 1) * dv]);
        }
    }
}

// ---------------------------------------------------------------------------
// Pattern matching
// ---------------------------------------------------------------------------

fn concrete_shape(model: &TypedModel, outlet: OutletId) -> Option<TVec<usize>> {
    let f = model.outlet_fact(outlet).ok()?;
    if f.datum_type != f32::datum_type() {
        return None;
    }
    f.shape.as_concrete().map(|s| s.into())
}

fn dense_strides(shape: &[usize]) -> TVec<isize> {
    let mut s: TVec<isize> = tvec![0; shape.len()];
    let mut acc = 1isize;
    for i in (0..shape.len()).rev() {
        s[i] = acc;
        acc *= shape[i] as isize;
    }
    s
}

/// An EinSum's axes as (letter, position in input 0, in input 1, in output).
type AxisPos = (char, Option<usize>, Option<usize>, Option<usize>);

fn einsum_axes(op: &EinSum) -> Option<Vec<AxisPos>> {
    if op.q_params.is_some() || op.operating_dt != f32::datum_type() {
        return None;
    }
    let mut v = Vec::new();
    for a in op.axes.iter_all_axes() {
        if a.inputs.len() != 2 || a.inputs.iter().any(|i| i.len() > 1) || a.outputs[0].len() > 1 {
            return None;
        }
        v.push((
            a.repr,
            a.inputs[0].first().copied(),
            a.inputs[1].first().copied(),
            a.outputs[0].first().copied(),
        ));
    }
    Some(v)
}

/// Size of a (possibly absent) axis position in a shape: absent = 1.
fn dim(shape: &[usize], pos: Option<usize>) -> usize {
    pos.map_or(1, |p| shape[p])
}

fn stride(strides: &[isize], shape: &[usize], pos: Option<usize>) -> isize {
    match pos {
        Some(p) if shape[p] > 1 => strides[p],
        _ => 0,
    }
}

struct Found {
    op: Attention,
    q: OutletId,
    k: OutletId,
    v: OutletId,
    last: usize,
}

/// Matches the attention chain ending at Softmax node `sm`.
fn match_at(model: &TypedModel, sm: usize) -> Option<Found> {
    let softmax = model.node(sm).op_as::<Softmax>()?;
    let s_shape = concrete_shape(model, model.node(sm).inputs[0])?;
    let r = s_shape.len();
    if softmax.kind != SoftmaxKind::Softmax
        || softmax.quant_output_dt.is_some()
        || r < 2
        || softmax.axes.as_slice() != [r - 1]
    {
        return None;
    }
    // Backwards: optional scalar Mul, then the QK EinSum.
    let mut prev = model.node(sm).inputs[0].node;
    let mut scale = 1.0f32;
    // The node the QK product must feed, and feed alone.
    let mut after_qk = sm;
    if let Some(bin) = model.node(prev).op_as::<TypedBinOp>() {
        if bin.0.name() != "Mul" || single_successor(model, prev) != Some(sm) {
            return None;
        }
        let ins = &model.node(prev).inputs;
        let (c, other) = match (scalar_const(model, ins[0]), scalar_const(model, ins[1])) {
            (_, Some(c)) => (c, ins[0]),
            (Some(c), None) => (c, ins[1]),
            _ => return None,
        };
        if concrete_shape(model, other)? != s_shape {
            return None;
        }
        scale = c;
        after_qk = prev;
        prev = other.node;
    }
    let qk_node = model.node(prev);
    let qk = qk_node.op_as::<EinSum>()?;
    if qk_node.inputs.len() != 2 || single_successor(model, prev)? != after_qk {
        return None;
    }
    let qk_axes = einsum_axes(qk)?;
    // Forward: the AV EinSum.
    let av_id = single_successor(model, sm)?;
    let av_node = model.node(av_id);
    let av = av_node.op_as::<EinSum>()?;
    if av_node.inputs.len() != 2 {
        return None;
    }
    let av_axes = einsum_axes(av)?;
    let a_slot = av_node
        .inputs
        .iter()
        .position(|o| *o == OutletId::new(sm, 0))?;
    let v_slot = 1 - a_slot;

    let (s0, s1) = (
        concrete_shape(model, qk_node.inputs[0])?,
        concrete_shape(model, qk_node.inputs[1])?,
    );
    let out_pos = |axes: &[AxisPos], p: usize| axes.iter().find(|a| a.3 == Some(p)).copied();
    // QK output: batch axes 0..r-2, then m (queries), then n (keys).
    let m_ax = out_pos(&qk_axes, r - 2)?;
    let n_ax = out_pos(&qk_axes, r - 1)?;
    // Q is the operand holding m; K the one holding n.
    let q_is_0 = m_ax.1.is_some() && m_ax.2.is_none() && n_ax.2.is_some() && n_ax.1.is_none();
    let q_is_1 = m_ax.2.is_some() && m_ax.1.is_none() && n_ax.1.is_some() && n_ax.2.is_none();
    if q_is_0 == q_is_1 {
        return None;
    }
    let pick = |a: &AxisPos, first: bool| if first { a.1 } else { a.2 };
    let (q_shape, k_shape) = if q_is_0 { (&s0, &s1) } else { (&s1, &s0) };
    // Contracted axes: exactly one of size > 1 (the depth), the rest size 1.
    let mut depth: Option<AxisPos> = None;
    for a in qk_axes.iter().filter(|a| a.3.is_none()) {
        let (qd, kd) = (
            dim(q_shape, pick(a, q_is_0)),
            dim(k_shape, pick(a, !q_is_0)),
        );
        if qd == 1 && kd == 1 {
            continue;
        }
        if qd != kd || depth.is_some() {
            return None;
        }
        depth = Some(*a);
    }
    let depth = depth?;
    let (m, n, d) = (
        s_shape[r - 2],
        s_shape[r - 1],
        dim(q_shape, pick(&depth, q_is_0)),
    );
    let (q_in, k_in) = if q_is_0 {
        (qk_node.inputs[0], qk_node.inputs[1])
    } else {
        (qk_node.inputs[1], qk_node.inputs[0])
    };
    let (q_src, k_src) = (source(model, q_in, q_shape), source(model, k_in, k_shape));
    let (qs, ks) = (&q_src.strides, &k_src.strides);
    let mut batch: TVec<usize> = tvec![];
    let (mut qb, mut kb) = (tvec![], tvec![]);
    for p in 0..r - 2 {
        let a = out_pos(&qk_axes, p)?;
        let size = s_shape[p];
        let (qp, kp) = (pick(&a, q_is_0), pick(&a, !q_is_0));
        // Each operand has the batch axis at full size, or not at all (size 1).
        for (shape, pos) in [(q_shape, qp), (k_shape, kp)] {
            let dd = dim(shape, pos);
            if dd != size && dd != 1 {
                return None;
            }
        }
        batch.push(size);
        qb.push(stride(qs, q_shape, qp));
        kb.push(stride(ks, k_shape, kp));
    }
    // Any other axis of Q or K (in no output, not the depth) must be size 1:
    // covered by the contracted-axes loop above.
    let q_layout = Layout {
        offset: q_src.offset,
        batch: qb,
        rows: stride(qs, q_shape, pick(&m_ax, q_is_0)),
        depth: stride(qs, q_shape, pick(&depth, q_is_0)),
    };
    let k_layout = Layout {
        offset: k_src.offset,
        batch: kb,
        rows: stride(ks, k_shape, pick(&n_ax, !q_is_0)),
        depth: stride(ks, k_shape, pick(&depth, !q_is_0)),
    };

    // AV: the attention operand's axes are the QK output's positions.
    let v_shape = concrete_shape(model, av_node.inputs[v_slot])?;
    let o_shape = concrete_shape(model, OutletId::new(av_id, 0))?;
    let a_pos = |a: &AxisPos| if a_slot == 0 { a.1 } else { a.2 };
    let v_pos = |a: &AxisPos| if v_slot == 0 { a.1 } else { a.2 };
    let by_a = |p: usize| av_axes.iter().find(|a| a_pos(a) == Some(p)).copied();
    let v_src = source(model, av_node.inputs[v_slot], &v_shape);
    let (vs, os) = (&v_src.strides, dense_strides(&o_shape));
    let keys = by_a(r - 1)?;
    let rows = by_a(r - 2)?;
    if keys.3.is_some() || dim(&v_shape, v_pos(&keys)) != n || rows.3.is_none() {
        return None;
    }
    if v_pos(&rows).is_some_and(|p| v_shape[p] != 1) {
        return None;
    }
    let mut vb = tvec![];
    let mut ob = tvec![];
    for (p, &size) in batch.iter().enumerate() {
        let a = by_a(p)?;
        if a.3.is_none() && size != 1 {
            return None;
        }
        let dd = dim(&v_shape, v_pos(&a));
        if dd != size && dd != 1 {
            return None;
        }
        vb.push(stride(vs, &v_shape, v_pos(&a)));
        ob.push(stride(&os, &o_shape, a.3));
    }
    // The value depth: V's axes that A lacks; one of size > 1 at most,
    // in the output; others size 1.
    let mut vdepth: Option<AxisPos> = None;
    for a in av_axes.iter().filter(|a| a_pos(a).is_none()) {
        let size = dim(&v_shape, v_pos(a));
        if size == 1 {
            continue;
        }
        if a.3.is_none() || vdepth.is_some() {
            return None;
        }
        vdepth = Some(*a);
    }
    let (dv, v_depth_stride, o_depth_stride) = match vdepth {
        Some(a) => (
            dim(&v_shape, v_pos(&a)),
            stride(vs, &v_shape, v_pos(&a)),
            stride(&os, &o_shape, a.3),
        ),
        None => (1, 0, 0),
    };
    // The output holds exactly batch x m x dv values.
    let total: usize = batch.iter().product::<usize>() * m * dv;
    if o_shape.iter().product::<usize>() != total {
        return None;
    }
    let op = Attention {
        batch,
        m,
        n,
        d,
        dv,
        scale_bits: scale.to_bits(),
        q: q_layout,
        k: k_layout,
        v: Layout {
            offset: v_src.offset,
            batch: vb,
            rows: stride(vs, &v_shape, v_pos(&keys)),
            depth: v_depth_stride,
        },
        out: Layout {
            offset: 0,
            batch: ob,
            rows: stride(&os, &o_shape, rows.3),
            depth: o_depth_stride,
        },
        out_shape: o_shape,
    };
    Some(Found {
        op,
        q: q_src.outlet,
        k: k_src.outlet,
        v: v_src.outlet,
        last: av_id,
    })
}

/// Where an operand's values lie: the tensor the operator reads them
/// from, the stride there of each of the operand's axes, and the index of
/// its first value.
struct Source {
    outlet: OutletId,
    strides: TVec<isize>,
    offset: isize,
}

/// The operand at `outlet` (of `shape`) read through the axis ops and
/// constant-index gathers that made it: the heads' split of the fused
/// Q/K/V projection (a reshape, two axis moves and three gathers, each
/// a copy on one thread in tract) becomes three strided views of the
/// projection. Where no such chain leads to it, the operand itself.
fn source(model: &TypedModel, outlet: OutletId, shape: &[usize]) -> Source {
    traced(model, outlet, shape).unwrap_or_else(|| Source {
        outlet,
        strides: dense_strides(shape),
        offset: 0,
    })
}

/// One step of a chain [`traced`] follows.
enum Step<'a> {
    Axis(&'a AxisOp),
    /// A gather of one constant index along an axis (which it removes).
    Pick(usize, i64),
}

fn traced(model: &TypedModel, outlet: OutletId, shape: &[usize]) -> Option<Source> {
    let mut steps = Vec::new();
    let mut at = outlet;
    loop {
        let node = model.node(at.node);
        if let Some(op) = node.op_as::<AxisOp>() {
            steps.push(Step::Axis(op));
        } else if let Some(g) = node.op_as::<Gather>() {
            let index = super::konst(model, *node.inputs.get(1)?)?;
            if index.rank() != 0 {
                break;
            }
            steps.push(Step::Pick(g.axis, index.cast_to_scalar::<i64>().ok()?));
        } else {
            break;
        }
        at = node.inputs[0];
    }
    if steps.is_empty() {
        return None;
    }
    let mut view = View::dense(&concrete_shape(model, at)?);
    let mut offset = 0usize;
    for step in steps.iter().rev() {
        match step {
            Step::Axis(op) => view = view.apply(op)?,
            Step::Pick(axis, index) => {
                let size = *view.shape.get(*axis)? as i64;
                let i = if *index < 0 { index + size } else { *index };
                if !(0..size).contains(&i) {
                    return None;
                }
                offset += i as usize * view.strides[*axis];
                view.shape.remove(*axis);
                view.strides.remove(*axis);
            }
        }
    }
    (view.shape[..] == *shape).then(|| Source {
        outlet: at,
        strides: view.strides.iter().map(|&s| s as isize).collect(),
        offset: offset as isize,
    })
}

/// Fuses every attention chain of `model`; returns how many.
pub fn fuse_all(model: &mut TypedModel) -> TractResult<usize> {
    let mut fused = 0;
    let candidates: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| n.op_is::<Softmax>())
        .map(|n| n.id)
        .collect();
    for sm in candidates {
        let Some(found) = match_at(model, sm) else {
            log::debug!("softmax {} is not a fusable attention", model.node(sm).name);
            continue;
        };
        let name = format!("{}.lgms_attention", model.node(found.last).name);
        let (inputs, last) = ([found.q, found.k, found.v], OutletId::new(found.last, 0));
        super::swap_in(model, &inputs, last, name, found.op)?;
        fused += 1;
    }
    Ok(fused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_reading_past_its_input_is_refused() {
        // [2 blocks, 4 rows, depth 8], dense: the last value is index 63.
        let layout = |offset| Layout {
            offset,
            batch: tvec![32],
            rows: 8,
            depth: 1,
        };
        let op = |q_offset| Attention {
            batch: tvec![2],
            m: 4,
            n: 4,
            d: 8,
            dv: 8,
            scale_bits: 1f32.to_bits(),
            q: layout(q_offset),
            k: layout(0),
            v: layout(0),
            out: layout(0),
            out_shape: tvec![2, 4, 8],
        };
        let fact = f32::fact([2, 4, 8]);
        assert!(op(0).output_facts(&[&fact, &fact, &fact]).is_ok());
        let err = op(1).output_facts(&[&fact, &fact, &fact]).unwrap_err();
        assert!(err.to_string().contains("input 0 holds"), "{err}");
    }

    #[test]
    fn exp2_kernels_match_std_exp2() {
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::cpu::Avx2Fma::detect().is_some() {
            use std::arch::x86_64::*;
            let mut worst = 0f32;
            for i in 0..20000 {
                let x = -124.0 + i as f32 * 0.0067;
                let mut out = [0f32; 8];
                // SAFETY: features checked above.
                unsafe { _mm256_storeu_ps(out.as_mut_ptr(), x86::exp2_8(_mm256_set1_ps(x))) };
                let want = x.exp2();
                if want >= (-124f32).exp2() {
                    worst = worst.max(((out[0] - want) / want).abs());
                }
            }
            assert!(worst < 4e-7, "AVX2 exp2 off by {worst:e} relative");
        }
        #[cfg(target_arch = "aarch64")]
        {
            use std::arch::aarch64::*;
            let mut worst = 0f32;
            for i in 0..20000 {
                let x = -124.0 + i as f32 * 0.0067;
                let mut out = [0f32; 4];
                // SAFETY: NEON is baseline on aarch64.
                unsafe { vst1q_f32(out.as_mut_ptr(), neon::exp2_4(vdupq_n_f32(x))) };
                let want = x.exp2();
                if want >= (-124f32).exp2() {
                    worst = worst.max(((out[0] - want) / want).abs());
                }
            }
            assert!(worst < 4e-7, "NEON exp2 off by {worst:e} relative");
        }
    }
}
