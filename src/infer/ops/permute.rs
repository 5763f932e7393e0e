//! A chain of axis moves and reshapes as one strided copy.
//!
//! The hybrid blocks cut a `[C, H, W]` feature map into 2x2 patches and
//! back (`Reshape -> Transpose -> Reshape`), and split the fused Q/K/V
//! projection by heads (which [`super::attention`] reads in place, with
//! no copy): tract runs each ONNX `Transpose` as up to three
//! `MoveAxis` nodes, each a full copy on one thread (2.5-2.7 ms of an int8
//! inference at 1 and 2 threads, 0.9 of them the patch folds and unfolds
//! at 64x64). Here the chain's axis moves and the
//! reshapes between them are composed at load into one view of the
//! source, `out[i] = x[sum over axes of i_k * stride_k]`, copied once, in
//! blocks on the pool: the two innermost loops run along the output's
//! last axis and the axis the source holds most densely, so both the
//! reads and the writes of a block stay within a few cache lines.
//!
//! [`replace_all`] takes each maximal chain of tract `AxisOp`s (add or
//! remove a unit axis, move an axis, reshape) with at least one move, up
//! to the last node whose view is still a plain strided view of the
//! chain's input (a reshape that merges axes the moves made
//! non-adjacent ends it; tract's own reshape of the copy follows), where
//! the output's last axis does not read densely already (there tract's
//! row copies are faster).

use anyhow::bail;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{DimLike, EvalContext, EvalOp, Op, StaticName, TypedOp};
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use super::{for_each_block, parallelism, replace_each, single_successor, SharedOut};

/// Values copied per block on the pool (and below which one thread copies
/// everything): a block's cost well above the pool's start-up.
const BLOCK: usize = 1 << 15;

/// A strided view: `shape[k]` values along axis `k`, `strides[k]` apart
/// in the source.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct View {
    /// The view's shape.
    pub shape: TVec<usize>,
    /// Source elements between neighbours along each axis.
    pub strides: TVec<usize>,
}

impl View {
    /// The dense view of a tensor of `shape`.
    pub fn dense(shape: &[usize]) -> View {
        let mut strides: TVec<usize> = tvec![1; shape.len()];
        for k in (0..shape.len().saturating_sub(1)).rev() {
            strides[k] = strides[k + 1] * shape[k + 1];
        }
        View {
            shape: shape.into(),
            strides,
        }
    }

    /// The view after `op`, or None where it is no strided view of the
    /// same source (a reshape across axes that are not adjacent in it).
    pub fn apply(&self, op: &AxisOp) -> Option<View> {
        let mut v = self.clone();
        match op {
            AxisOp::Add(a) => {
                if *a > v.shape.len() {
                    return None;
                }
                v.shape.insert(*a, 1);
                v.strides.insert(*a, 0);
            }
            AxisOp::Rm(a) => {
                if v.shape.get(*a) != Some(&1) {
                    return None;
                }
                v.shape.remove(*a);
                v.strides.remove(*a);
            }
            AxisOp::Move(from, to) => {
                if *from >= v.shape.len() || *to >= v.shape.len() {
                    return None;
                }
                let (d, s) = (v.shape.remove(*from), v.strides.remove(*from));
                v.shape.insert(*to, d);
                v.strides.insert(*to, s);
            }
            AxisOp::Reshape(at, from, to) => {
                let from: Option<TVec<usize>> = from.iter().map(|d| d.as_usize()).collect();
                let to: Option<TVec<usize>> = to.iter().map(|d| d.as_usize()).collect();
                let (from, to) = (from?, to?);
                let end = at + from.len();
                if end > v.shape.len()
                    || v.shape[*at..end] != from[..]
                    || from.iter().product::<usize>() != to.iter().product::<usize>()
                {
                    return None;
                }
                // The reshaped axes must be one run of the source (unit
                // axes aside): each stride the next one's times its size.
                let axes: Vec<usize> = (*at..end).filter(|&k| v.shape[k] != 1).collect();
                if axes
                    .windows(2)
                    .any(|p| v.strides[p[0]] != v.strides[p[1]] * v.shape[p[1]])
                {
                    return None;
                }
                let inner = axes.last().map_or(1, |&k| v.strides[k]);
                let mut strides: TVec<usize> = tvec![0; to.len()];
                let mut s = inner;
                for k in (0..to.len()).rev() {
                    strides[k] = s;
                    s *= to[k];
                }
                let shape: TVec<usize> = v.shape[..*at]
                    .iter()
                    .chain(&to)
                    .chain(&v.shape[end..])
                    .copied()
                    .collect();
                let strides: TVec<usize> = v.strides[..*at]
                    .iter()
                    .chain(&strides)
                    .chain(&v.strides[end..])
                    .copied()
                    .collect();
                v.shape = shape;
                v.strides = strides;
            }
        }
        Some(v)
    }

    /// Values in the view.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the view has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The largest source index the view reads, plus one.
    pub fn source_len(&self) -> usize {
        if self.is_empty() {
            return 0;
        }
        1 + self
            .shape
            .iter()
            .zip(&self.strides)
            .map(|(d, s)| (d - 1) * s)
            .sum::<usize>()
    }
}

/// The copy of a [`View`] of the input into a dense output.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Permute {
    /// What the output is, in the input.
    view: View,
    /// Values in the input.
    in_len: usize,
    /// The loop nest, chosen once from the view.
    loops: Loops,
}

impl Permute {
    /// The copy of `view` out of an input of `in_len` values; None for a
    /// view of no axes or one that reads past the input.
    pub fn new(view: View, in_len: usize) -> Option<Permute> {
        if view.shape.is_empty() || view.source_len() > in_len {
            return None;
        }
        let loops = Loops::new(&view);
        Some(Permute {
            view,
            in_len,
            loops,
        })
    }

    /// Copies the view of `x` into `out` (dense, `view.len()` values).
    pub fn run(&self, x: &[f32], out: &mut [f32]) -> anyhow::Result<()> {
        let v = &self.view;
        if x.len() != self.in_len || out.len() != v.len() {
            bail!(
                "LgmsPermute: {} values in and {} out, expected {} and {}",
                x.len(),
                out.len(),
                self.in_len,
                v.len()
            );
        }
        let n_outer = self
            .loops
            .outer
            .iter()
            .map(|&(n, _, _)| n)
            .product::<usize>();
        if v.is_empty() {
            return Ok(());
        }
        let chunk = if parallelism() > 1 {
            (BLOCK / (v.len() / n_outer)).max(1)
        } else {
            n_outer
        };
        let shared = SharedOut(out.as_mut_ptr());
        for_each_block(n_outer.div_ceil(chunk), |b| {
            let start = b * chunk;
            // SAFETY: outer indices start.. own their output values (the
            // output is dense in `shape`), disjoint between blocks, inside
            // `out`; the reads stay below `source_len() <= x.len()`
            // (checked in `new` and above).
            unsafe {
                self.loops
                    .copy(x, shared.ptr(), start..(start + chunk).min(n_outer))
            };
        });
        Ok(())
    }
}

/// Values of the source-dense axis per pass: the output lines a pass
/// writes (one per value, often 16 KB apart) fit one set of the L1 cache.
const TILE: usize = 8;

/// The copy's loop nest: `(size, source stride, output stride)` per outer
/// axis (output order), the output's last axis `(size, source stride)`,
/// and the axis the source holds most densely, innermost, or None when the
/// last axis already reads densely.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Loops {
    outer: TVec<(usize, usize, usize)>,
    last: (usize, usize),
    inner: Option<(usize, usize, usize)>,
}

impl Loops {
    /// The loop order for `v` (at least one axis): the source-dense axis
    /// is the one of 8 values or more with the smallest stride, where
    /// there is one.
    fn new(v: &View) -> Loops {
        let last = v.shape.len() - 1;
        let out_strides = View::dense(&v.shape).strides;
        let candidates = |min: usize| {
            (0..v.shape.len())
                .filter(move |&k| k != last && v.shape[k] >= min)
                .min_by_key(|&k| v.strides[k])
        };
        let dense = candidates(TILE).or_else(|| candidates(2));
        let inner = dense.filter(|&k| v.strides[last] > 4 && v.strides[k] < v.strides[last]);
        let axis = |k: usize| (v.shape[k], v.strides[k], out_strides[k]);
        Loops {
            outer: (0..last).filter(|&k| Some(k) != inner).map(axis).collect(),
            last: (v.shape[last], v.strides[last]),
            inner: inner.map(axis),
        }
    }

    /// Copies the values of outer indices `range`.
    ///
    /// # Safety
    /// The output values of those indices lie inside `out` and no other
    /// thread writes them; every read lies inside `x`.
    unsafe fn copy(&self, x: &[f32], out: *mut f32, range: std::ops::Range<usize>) {
        let (xp, (nl, sl)) = (x.as_ptr(), self.last);
        let (nj, sj, oj) = self.inner.unwrap_or((1, 0, 0));
        // Tiles of the dense axis, each over every outer index of the range.
        for j0 in (0..nj).step_by(TILE) {
            let j1 = (j0 + TILE).min(nj);
            // The first index's digits and offsets; then an odometer.
            let mut digits: TVec<usize> = tvec![0; self.outer.len()];
            let (mut src, mut dst, mut rest) = (0, 0, range.start);
            for (d, &(n, s, o)) in digits.iter_mut().zip(&self.outer).rev() {
                *d = rest % n;
                rest /= n;
                src += *d * s;
                dst += *d * o;
            }
            for _ in range.clone() {
                // SAFETY: the caller's bounds.
                unsafe {
                    for i in 0..nl {
                        for j in j0..j1 {
                            *out.add(dst + i + j * oj) = *xp.add(src + i * sl + j * sj);
                        }
                    }
                }
                for (d, &(n, s, o)) in digits.iter_mut().zip(&self.outer).rev() {
                    *d += 1;
                    src += s;
                    dst += o;
                    if *d < n {
                        break;
                    }
                    *d = 0;
                    src -= n * s;
                    dst -= n * o;
                }
            }
        }
    }
}

impl Op for Permute {
    fn name(&self) -> StaticName {
        "LgmsPermute".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{:?} with source strides {:?}",
            self.view.shape, self.view.strides
        )])
    }
    op_as_typed_op!();
}

impl EvalOp for Permute {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs[0].try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        // SAFETY: f32 has no invalid bit patterns, and `run` writes every
        // value before the tensor is read.
        let mut out = unsafe { Tensor::uninitialized::<f32>(&self.view.shape)? };
        {
            let mut view = out.try_as_plain_ram_mut()?;
            self.run(x, view.as_slice_mut::<f32>()?)?;
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for Permute {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        if inputs[0].datum_type != f32::datum_type() {
            bail!("LgmsPermute takes f32, got {:?}", inputs[0].datum_type);
        }
        Ok(tvec!(f32::fact(self.view.shape.iter().copied())))
    }
    as_op!();
}

/// Node `id`'s op, when it is an axis op.
fn axis_op(model: &TypedModel, id: usize) -> Option<&AxisOp> {
    model.node(id).op_as::<AxisOp>()
}

/// The permute for the chain that starts at node `id`, its input, and the
/// chain's last node it replaces.
fn match_at(model: &TypedModel, id: usize) -> Option<(Permute, OutletId, usize)> {
    axis_op(model, id)?;
    let source = *model.node(id).inputs.first()?;
    // Only from the start of a chain.
    if axis_op(model, source.node).is_some() && single_successor(model, source.node) == Some(id) {
        return None;
    }
    let fact = model.outlet_fact(source).ok()?;
    if fact.datum_type != f32::datum_type() {
        return None;
    }
    let shape = fact.shape.as_concrete()?;
    let mut view = View::dense(shape);
    let (mut cur, mut moved, mut found) = (id, false, None);
    // Along the chain while the view can follow it (a reshape across
    // non-adjacent axes ends it).
    while let Some(next_view) = axis_op(model, cur).and_then(|op| view.apply(op)) {
        view = next_view;
        moved |= matches!(axis_op(model, cur), Some(AxisOp::Move(..)));
        if moved {
            found = Some((view.clone(), cur));
        }
        match single_successor(model, cur) {
            Some(next) if axis_op(model, next).is_some() => cur = next,
            _ => break,
        }
    }
    let (view, last) = found?;
    let op = Permute::new(view, shape.iter().product())?;
    // Where the output's last axis reads densely (rows of 8 values or
    // more) tract copies whole rows faster than this loop does (0.39
    // against 1.3 ms for the heads split of a Q/K/V projection of 1024
    // tokens).
    op.loops.inner?;
    let out = model.outlet_fact(OutletId::new(last, 0)).ok()?;
    if out.shape.as_concrete()? != &op.view.shape[..] {
        return None;
    }
    Some((op, source, last))
}

/// Replaces every chain of axis ops with a move in it; returns how many.
pub fn replace_all(model: &mut TypedModel) -> TractResult<usize> {
    replace_each(model, "lgms_permute", match_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value at each output index, by walking the ops on an explicit
    /// index tensor with ndarray.
    fn by_ndarray(shape: &[usize], ops: &[AxisOp]) -> (Vec<usize>, Vec<usize>) {
        let n: usize = shape.iter().product();
        let mut t = Tensor::from_shape(shape, &(0..n as i64).collect::<Vec<_>>()).unwrap();
        for op in ops {
            op.change_tensor(&mut t, false).unwrap();
        }
        let shape = t.shape().to_vec();
        let vals = t
            .to_plain_array_view::<i64>()
            .unwrap()
            .iter()
            .map(|&v| v as usize)
            .collect();
        (shape, vals)
    }

    fn check(shape: &[usize], ops: &[AxisOp]) {
        let (want_shape, want) = by_ndarray(shape, ops);
        let mut view = View::dense(shape);
        for op in ops {
            view = view.apply(op).expect("a strided view");
        }
        assert_eq!(&view.shape[..], &want_shape[..], "{ops:?}");
        let n: usize = shape.iter().product();
        let x: Vec<f32> = (0..n).map(|v| v as f32).collect();
        let p = Permute::new(view, n).expect("a view inside the input");
        let mut out = vec![-1.0; want.len()];
        p.run(&x, &mut out).unwrap();
        let got: Vec<usize> = out.iter().map(|&v| v as usize).collect();
        assert_eq!(got, want, "{ops:?}");
    }

    fn reshape(at: usize, from: &[usize], to: &[usize]) -> AxisOp {
        AxisOp::Reshape(
            at,
            from.iter().map(|&d| d.to_dim()).collect(),
            to.iter().map(|&d| d.to_dim()).collect(),
        )
    }

    #[test]
    fn patch_unfold_fold_and_head_split_copy_what_tract_computes() {
        // [C, H, W] into 2x2 patches: (ph, pw, h', w', c).
        let unfold = [
            reshape(1, &[8], &[4, 2]),
            reshape(3, &[6], &[3, 2]),
            AxisOp::Move(2, 0),
            AxisOp::Move(4, 1),
            AxisOp::Move(2, 4),
        ];
        check(&[5, 8, 6], &unfold);
        // And back: (ph, pw, h', w', c) to (c, h', ph, w', pw).
        let fold = [
            reshape(0, &[4], &[2, 2]),
            reshape(2, &[12], &[4, 3]),
            AxisOp::Move(4, 0),
            AxisOp::Move(3, 1),
            AxisOp::Move(3, 4),
        ];
        check(&[4, 12, 5], &fold);
        // Q, K, V by heads: (1, p, n, 3 * heads * d) to (3, 1, p, heads, n, d).
        let heads = [
            reshape(3, &[24], &[3, 4, 2]),
            AxisOp::Move(3, 0),
            AxisOp::Move(3, 4),
        ];
        check(&[1, 4, 7, 24], &heads);
        // Unit axes added and removed on the way.
        check(
            &[3, 1, 10],
            &[
                AxisOp::Rm(1),
                AxisOp::Add(0),
                AxisOp::Move(2, 1),
                AxisOp::Rm(0),
            ],
        );
    }

    #[test]
    fn a_reshape_across_moved_axes_is_no_strided_view() {
        let moved = View::dense(&[2, 3, 4]).apply(&AxisOp::Move(2, 0)).unwrap();
        // (4, 2, 3) with strides (1, 12, 4): 4 and 2 are not one run.
        assert!(moved.apply(&reshape(0, &[4, 2], &[8])).is_none());
        // 2 and 3 are: (4, 6) with strides (1, 4).
        let merged = moved.apply(&reshape(1, &[2, 3], &[6])).unwrap();
        assert_eq!(
            (&merged.shape[..], &merged.strides[..]),
            (&[4, 6][..], &[1, 4][..])
        );
    }

    #[test]
    fn wrong_sizes_are_an_error() {
        let moved = View::dense(&[2, 3]).apply(&AxisOp::Move(1, 0)).unwrap();
        // A view that reads past its input, and one of no axes, are refused.
        assert!(Permute::new(moved.clone(), 5).is_none());
        assert!(Permute::new(View::dense(&[]), 1).is_none());
        let p = Permute::new(moved, 6).unwrap();
        let mut out = vec![0.0; 6];
        assert!(p.run(&[0.0; 5], &mut out).is_err());
        assert!(p.run(&[0.0; 6], &mut out[..5]).is_err());
    }
}
