//! Our tract operators (src/infer/ops) against tract's stock graph, and
//! every kernel of every table this CPU supports against the scalar
//! reference kernels.

#[path = "common/graphs.rs"]
mod graphs;

use lgms_edge::infer::engine::Engine;
use lgms_edge::infer::model::{LoadOptions, Model};
use lgms_edge::infer::ops::{self, attention, conv1x1, dwconv, qconv, upsample};
use lgms_edge::kernels::{self, Kernels};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::nn::resize::CoordTransformer;
use tract_onnx::tract_core::ops::nn::Softmax;

fn random(shape: &[usize], seed: u64, amp: f32) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-amp..amp)).collect();
    Tensor::from_shape(shape, &v).unwrap()
}

fn run(model: &TypedModel, inputs: &[Tensor]) -> Vec<f32> {
    let out = model
        .clone()
        .into_runnable()
        .unwrap()
        .run(inputs.iter().cloned().map(|t| t.into_tvalue()).collect())
        .unwrap();
    // Every output's values, one after the other.
    out.iter()
        .flat_map(|o| {
            let v: Vec<f32> = o
                .to_plain_array_view::<f32>()
                .unwrap()
                .iter()
                .copied()
                .collect();
            v
        })
        .collect()
}

/// Each distinct non-scalar kernel of one operator, over every table this
/// CPU supports (the AVX2 int8 kernel on a VNNI machine too).
fn simd_kernels<K>(get: impl Fn(&Kernels) -> K, name: impl Fn(&K) -> &'static str) -> Vec<K> {
    let mut out: Vec<K> = Vec::new();
    for t in kernels::supported() {
        let k = get(t);
        if name(&k) != "scalar" && !out.iter().any(|o| name(o) == name(&k)) {
            out.push(k);
        }
    }
    out
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// `v_first`: V is the first operand of the second product.
fn check_attention(
    qk: &str,
    av: &str,
    shapes: [&[usize]; 3],
    scale: Option<f32>,
    v_first: bool,
    seed: u64,
) {
    let stock = graphs::attention(qk, av, shapes, scale, None, v_first).unwrap();
    let mut ours = stock.clone();
    let subs = ops::substitute(&mut ours).unwrap();
    assert_eq!(subs.attention, 1, "{qk} / {av} was not fused");
    assert!(ours.nodes().iter().any(|n| n.op.name() == "LgmsAttention"));
    assert!(!ours.nodes().iter().any(|n| n.op_is::<Softmax>()));
    let inputs: Vec<Tensor> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| random(s, seed + i as u64, 2.0))
        .collect();
    let (a, b) = (run(&stock, &inputs), run(&ours, &inputs));
    let diff = max_abs_diff(&a, &b);
    assert!(diff < 2e-5, "{qk} / {av}: max |diff| {diff:e}");
}

#[test]
fn lgmsnet_attention_layout_is_fused_and_matches_stock() {
    // The layout tract's declutter gives LGMSNet's attention (offsets b,
    // heads c, 1024 tokens m/n, depth 8), at 64 tokens to keep it quick.
    check_attention(
        "abcmk,abcnk->bcmn",
        "bcmk,abckn->bmcn",
        [&[1, 4, 4, 64, 8], &[1, 4, 4, 64, 8], &[1, 4, 4, 64, 8]],
        Some(8f32.powf(-0.5)),
        false,
        1,
    );
}

#[test]
fn heads_split_from_one_projection_are_read_in_place() {
    let stock = graphs::split_qkv_attention(48).unwrap();
    let mut ours = stock.clone();
    assert_eq!(ops::substitute(&mut ours).unwrap().attention, 1);
    let ours = ours.into_compact().unwrap();
    // The attention reads the projection itself: the moves and gathers
    // are gone.
    let names: Vec<String> = ours
        .nodes()
        .iter()
        .map(|n| n.op.name().to_string())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n != "Gather" && !n.contains("Move") && n != "Reshape"),
        "left: {names:?}"
    );
    let att = ours
        .nodes()
        .iter()
        .find(|n| n.op.name() == "LgmsAttention")
        .unwrap();
    assert!(att
        .inputs
        .iter()
        .all(|i| ours.node(i.node).op.name() == "Source"));
    let x = [random(&[1, 4, 48, 96], 9, 2.0)];
    let diff = max_abs_diff(&run(&stock, &x), &run(&ours, &x));
    assert!(diff < 2e-5, "max |diff| {diff:e}");
}

#[test]
fn other_attention_layouts_are_fused_and_match_stock() {
    // Plain (batch, head, token, depth), no scale, key count with a tail.
    check_attention(
        "bhmd,bhnd->bhmn",
        "bhmn,bhnd->bhmd",
        [&[2, 3, 13, 8], &[2, 3, 37, 8], &[2, 3, 37, 5]],
        None,
        false,
        2,
    );
    // K given transposed, V at slot 0 of the second product, odd depth.
    check_attention(
        "hmd,hdn->hmn",
        "hnd,hmn->mhd",
        [&[3, 9, 3], &[3, 3, 21], &[3, 21, 6]],
        Some(0.37),
        true,
        3,
    );
}

#[test]
fn softmax_not_over_the_keys_is_left_to_tract() {
    let m0 = graphs::attention(
        "bhmd,bhnd->bhmn",
        "bhmn,bhnd->bhmd",
        [&[1, 2, 8, 4], &[1, 2, 8, 4], &[1, 2, 8, 4]],
        Some(0.5),
        Some(2),
        false,
    )
    .unwrap();
    let mut m = m0.clone();
    assert_eq!(ops::substitute(&mut m).unwrap().attention, 0);
}

/// Every SIMD attention kernel against the scalar one, with the keys `ld`
/// and the values `ldv` floats apart (dense, and padded rows whose padding
/// is NaN: a kernel that reads it gives NaN). `amp`: the keys' amplitude
/// (large ones make peaked softmax rows).
fn attend_all(m: usize, n: usize, d: usize, dv: usize, seed: u64, amp: f32) {
    for (ld, ldv) in [
        (n, dv),
        (n + 3, dv + 1),
        (attention::leading_dim(n), dv + 5),
    ] {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut gen = |rows: usize, len: usize, stride: usize, amp: f32| -> Vec<f32> {
            (0..rows * stride)
                .map(|i| {
                    let v = rng.gen_range(-amp..amp);
                    if i % stride < len {
                        v
                    } else {
                        f32::NAN
                    }
                })
                .collect()
        };
        let qs: Vec<f32> = (0..m * d).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let kt = gen(d, n, ld, amp);
        let v = gen(n, dv, ldv, 1.0);
        let block = attention::Block {
            qs: &qs,
            kt: &kt,
            v: &v,
            m,
            n,
            d,
            dv,
            ld,
            ldv,
        };
        let mut row = vec![0.0; n];
        let mut want = vec![0.0; m * dv];
        kernels::scalar()
            .attention()
            .attend(&block, &mut row, &mut want);
        assert!(
            want.iter().all(|v| v.is_finite()),
            "scalar read the padding"
        );
        // Keys of amplitude 20 make scores of up to ~360, where one f32 ulp
        // is 3e-5: the SIMD kernels' FMA chains and the reference's
        // products then sums round them differently, and a peaked softmax
        // carries that into the output (1.03e-5 seen at amplitude 20).
        let tol = if amp > 3.0 { 5e-5 } else { 1e-5 };
        for k in simd_kernels(Kernels::attention, |k| k.name()) {
            let mut got = vec![0.0; m * dv];
            k.attend(&block, &mut row, &mut got);
            let diff = max_abs_diff(&want, &got);
            let name = k.name();
            assert!(
                got.iter().all(|v| v.is_finite()),
                "{name} read the padding (ld={ld}, ldv={ldv})"
            );
            assert!(
                diff < tol,
                "{name} m={m} n={n} ld={ld} d={d} dv={dv} amp={amp}: {diff:e}"
            );
        }
    }
}

#[test]
fn attention_kernels_at_lgmsnet_sizes() {
    attend_all(32, 1024, 8, 8, 7, 3.0);
    attend_all(16, 256, 8, 8, 8, 3.0);
}

#[test]
fn attention_kernels_with_scores_far_below_their_bound() {
    // Keys of very different norms and queries orthogonal to the longest:
    // the SIMD kernels' bound (|q| times the longest key) is then hundreds
    // above every score, every probability underflows against it, and the
    // query must be redone with the true max (a kernel that skips that
    // gives 0/0).
    let (m, n, d, dv) = (5, 40, 4, 8);
    let qs: Vec<f32> = (0..m * d)
        .map(|i| if i % d == 1 { 30.0 } else { 0.0 })
        .collect();
    let mut kt = vec![0.0f32; d * n];
    for j in 0..n {
        kt[j] = if j == 7 { 1000.0 } else { 0.0 }; // depth 0: one long key
        kt[n + j] = (j as f32 * 0.3).sin(); // depth 1: what the queries see
    }
    let v: Vec<f32> = (0..n * dv).map(|i| (i as f32 * 0.11).cos()).collect();
    let block = attention::Block {
        qs: &qs,
        kt: &kt,
        v: &v,
        m,
        n,
        d,
        dv,
        ld: n,
        ldv: dv,
    };
    let mut row = vec![0.0; n];
    let mut want = vec![0.0; m * dv];
    kernels::scalar()
        .attention()
        .attend(&block, &mut row, &mut want);
    for k in simd_kernels(Kernels::attention, |k| k.name()) {
        let mut got = vec![0.0; m * dv];
        k.attend(&block, &mut row, &mut got);
        let diff = max_abs_diff(&want, &got);
        assert!(diff < 1e-5, "{}: {diff:e} ({got:?})", k.name());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn attention_kernels_match_scalar(m in 1usize..6, n in 1usize..70, d in 1usize..12,
                                      dv in 1usize..18, seed in 0u64..1000,
                                      amp in prop_oneof![Just(0.5f32), Just(3.0f32), Just(20.0f32)]) {
        attend_all(m, n, d, dv, seed, amp);
    }
}

#[test]
fn upsample_matches_tract_resize() {
    for (i, shape) in [[1, 3, 5, 7], [1, 2, 1, 1], [2, 4, 17, 33], [1, 1, 8, 16]]
        .into_iter()
        .enumerate()
    {
        for ct in [
            CoordTransformer::HalfPixel,
            CoordTransformer::PytorchHalfPixel,
        ] {
            let stock = graphs::resize2x(shape, ct.clone()).unwrap();
            let mut ours = stock.clone();
            assert_eq!(ops::substitute(&mut ours).unwrap().upsample, 1);
            let x = random(&shape, 10 + i as u64, 5.0);
            let diff = max_abs_diff(&run(&stock, std::slice::from_ref(&x)), &run(&ours, &[x]));
            assert!(diff < 1e-5, "{shape:?} {ct:?}: max |diff| {diff:e}");
        }
    }
}

#[test]
fn align_corners_resize_is_left_to_tract() {
    let mut m = graphs::resize2x([1, 2, 4, 4], CoordTransformer::AlignCorners).unwrap();
    assert_eq!(ops::substitute(&mut m).unwrap().upsample, 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn upsample_kernels_match_scalar(h in 1usize..9, w in 1usize..40, seed in 0u64..1000) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let src: Vec<f32> = (0..h * w).map(|_| rng.gen_range(-4.0f32..4.0)).collect();
        let mut rows = Vec::new();
        let mut want = vec![0.0; 4 * h * w];
        upsample::upsample_plane(kernels::scalar().upsample(), &src, h, w, &mut rows, &mut want);
        for k in simd_kernels(Kernels::upsample, |k| k.name()) {
            let mut got = vec![0.0; 4 * h * w];
            upsample::upsample_plane(k, &src, h, w, &mut rows, &mut got);
            let diff = max_abs_diff(&want, &got);
            prop_assert!(diff < 1e-6, "{} {h}x{w}: {diff:e}", k.name());
        }
    }
}

#[test]
fn wide_conv1x1_with_bias_is_replaced_and_matches_stock() {
    // 64x64 pixels is below MIN_PIXELS; 128x130 is above, with a pixel tail
    // (16640 = 32 tiles + 256) and an output channel count that is not a
    // multiple of 4.
    for (i, o, h, w, fused) in [
        (32, 64, 128, 130, 1),
        (7, 18, 128, 129, 1),
        (16, 16, 64, 64, 0),
    ] {
        let stock = graphs::conv1x1(i, o, h, w, 5).unwrap();
        let mut ours = stock.clone();
        assert_eq!(
            ops::substitute(&mut ours).unwrap().conv1x1,
            fused,
            "{i}->{o} {h}x{w}"
        );
        if fused == 1 {
            // The bias Add was folded in as well.
            assert_eq!(
                ours.nodes().iter().filter(|n| n.op.name() == "Add").count(),
                0
            );
        }
        let x = random(&[1, i, h, w], 9, 1.0);
        let diff = max_abs_diff(&run(&stock, std::slice::from_ref(&x)), &run(&ours, &[x]));
        assert!(diff < 1e-4, "{i}->{o} {h}x{w}: max |diff| {diff:e}");
    }
}

/// A GELU after the conv (and its bias) runs in the conv's epilogue: no
/// GELU node is left, and the values stay tract's.
#[test]
fn wide_conv1x1_folds_the_gelu_after_it() {
    for (i, o, h, w) in [(32, 64, 128, 130), (64, 16, 128, 128)] {
        let stock = graphs::then_gelu(graphs::conv1x1(i, o, h, w, 5).unwrap()).unwrap();
        let mut ours = stock.clone();
        let subs = ops::substitute(&mut ours).unwrap();
        assert_eq!((subs.conv1x1, subs.gelu), (1, 0), "{i}->{o}");
        let left: Vec<_> = ours.nodes().iter().map(|n| n.op.name()).collect();
        assert!(
            !left.iter().any(|n| n.contains("Gelu")),
            "{i}->{o}: {left:?}"
        );
        let x = random(&[1, i, h, w], 9, 1.0);
        let diff = max_abs_diff(&run(&stock, std::slice::from_ref(&x)), &run(&ours, &[x]));
        assert!(diff < 1e-4, "{i}->{o} {h}x{w}: max |diff| {diff:e}");
    }
}

/// 3x3 convs (with groups, with a pixel tail, with the GELU after them)
/// run as our direct conv and match tract's; the smallest images stay
/// tract's.
#[test]
fn conv3x3_is_replaced_and_matches_stock() {
    for (i, o, g, h, w, gelu, fused) in [
        (32, 16, 1, 128, 130, false, 1),
        (32, 32, 2, 128, 128, true, 1),
        (6, 9, 3, 130, 129, true, 1),
        (16, 16, 1, 16, 16, false, 0),
    ] {
        let conv = graphs::conv3x3(i, o, g, h, w, 5).unwrap();
        let stock = if gelu {
            graphs::then_gelu(conv).unwrap()
        } else {
            conv
        };
        let mut ours = stock.clone();
        let subs = ops::substitute(&mut ours).unwrap();
        assert_eq!(
            (subs.conv3x3, subs.gelu),
            (fused, 0),
            "{i}->{o} g{g} {h}x{w}"
        );
        let x = random(&[1, i, h, w], 9, 1.0);
        let diff = max_abs_diff(&run(&stock, std::slice::from_ref(&x)), &run(&ours, &[x]));
        assert!(diff < 1e-4, "{i}->{o} g{g} {h}x{w}: max |diff| {diff:e}");
    }
}

/// The multi-kernel blocks' split of depthwise convs (3x3 to 9x9, with
/// and without the residual, parts out of order, a width with a tail)
/// runs as one operator and matches tract's graph; a dilated conv in it
/// leaves the whole split to tract.
#[test]
fn depthwise_split_is_replaced_and_matches_stock() {
    let lms = [(0..4, 3), (4..8, 5), (8..12, 7), (12..16, 9)];
    let shuffled = [(6..8, 1), (0..6, 3), (8..9, 5)];
    for (c, h, w, parts, residual, dilation, fused) in [
        (16, 64, 64, &lms[..], true, 1, 1),
        (16, 40, 70, &lms[..], false, 1, 1),
        (9, 33, 37, &shuffled[..], false, 1, 1),
        (16, 32, 32, &lms[..], true, 2, 0),
    ] {
        let stock = graphs::dw_split(c, h, w, parts, residual, dilation, 3).unwrap();
        let mut ours = stock.clone();
        let subs = ops::substitute(&mut ours).unwrap();
        let what = format!("{c}x{h}x{w} {parts:?} residual {residual} dilation {dilation}");
        assert_eq!(subs.dwconv, fused, "{what}");
        let x = random(&[1, c, h, w], 9, 1.0);
        let diff = max_abs_diff(&run(&stock, std::slice::from_ref(&x)), &run(&ours, &[x]));
        assert!(diff < 1e-5, "{what}: max |diff| {diff:e}");
    }
}

/// The operator against the definition computed directly in f64 (zero
/// padding, bias, residual), on the scalar and every SIMD kernel.
#[test]
fn depthwise_split_matches_the_definition() {
    let (c, h, w) = (6, 19, 45);
    let specs = [(0usize, 2usize, 3usize), (2, 3, 9), (5, 1, 1)];
    let params: Vec<(Vec<f32>, Vec<f32>)> = specs
        .iter()
        .enumerate()
        .map(|(i, &(_, n, k))| {
            let seed = 40 + 2 * i as u64;
            (
                graphs::pseudo_random(n * k * k, seed),
                graphs::pseudo_random(n, seed + 1),
            )
        })
        .collect();
    let parts: Vec<dwconv::Part> = specs
        .iter()
        .zip(&params)
        .map(|(&(src, n, k), (wt, b))| dwconv::Part {
            src,
            c: n,
            k,
            weights: std::sync::Arc::new(Tensor::from_shape(&[n * k * k], wt).unwrap()),
            bias: std::sync::Arc::new(Tensor::from_shape(&[n], b).unwrap()),
        })
        .collect();
    let op = dwconv::DwConcat {
        cin: c,
        h,
        w,
        parts: parts.clone(),
        residual: true,
    };
    let x: Vec<f32> = graphs::pseudo_random(c * h * w, 7)
        .iter()
        .map(|v| v * 2.0)
        .collect();
    let mut want = vec![0f64; c * h * w];
    let mut o = 0;
    for (p, (wt, b)) in parts.iter().zip(&params) {
        for ch in 0..p.c {
            let plane = &x[(p.src + ch) * h * w..][..h * w];
            for y in 0..h {
                for xx in 0..w {
                    let mut acc = b[ch] as f64 + x[(o * h + y) * w + xx] as f64;
                    for ky in 0..p.k {
                        for kx in 0..p.k {
                            let iy = (y + ky) as isize - (p.k / 2) as isize;
                            let ix = (xx + kx) as isize - (p.k / 2) as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                acc += wt[(ch * p.k + ky) * p.k + kx] as f64
                                    * plane[iy as usize * w + ix as usize] as f64;
                            }
                        }
                    }
                    want[(o * h + y) * w + xx] = acc;
                }
            }
            o += 1;
        }
    }
    let mut reference = vec![0f32; c * h * w];
    op.run(&x, &mut reference, kernels::scalar().dwconv())
        .unwrap();
    let worst = want
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - *b as f64).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-5, "scalar vs f64 definition: {worst:e}");
    for k in simd_kernels(Kernels::dwconv, |k| k.name()) {
        let mut got = vec![0f32; c * h * w];
        op.run(&x, &mut got, k).unwrap();
        assert_eq!(got, reference, "{}", k.name());
    }
    // A wrong-sized input is an error, not a panic.
    assert!(op
        .run(&x[1..], &mut reference, kernels::scalar().dwconv())
        .is_err());
    // So are parts past the input channels, weights of the wrong size and
    // a residual without one output channel per input channel.
    let scalar = kernels::scalar().dwconv();
    let mut past = op.clone();
    past.parts[1].src = 4;
    assert!(past.run(&x, &mut reference, scalar).is_err());
    let mut short = op.clone();
    short.parts[0].k = 5;
    assert!(short.run(&x, &mut reference, scalar).is_err());
    let mut fewer = op.clone();
    fewer.parts.pop();
    assert!(fewer
        .run(&x, &mut reference[..(c - 1) * h * w], scalar)
        .is_err());
}

/// A GELU that follows no 1x1 conv becomes our vectorised one, within
/// tract's own erf error of tract's values.
#[test]
fn exact_gelu_is_replaced_and_matches_stock() {
    let stock = graphs::then_gelu(graphs::identity([1, 5, 33, 17]).unwrap()).unwrap();
    let mut ours = stock.clone();
    assert_eq!(ops::substitute(&mut ours).unwrap().gelu, 1);
    let x = random(&[1, 5, 33, 17], 3, 6.0);
    let diff = max_abs_diff(&run(&stock, std::slice::from_ref(&x)), &run(&ours, &[x]));
    assert!(diff < 2e-6, "max |diff| {diff:e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn conv1x1_kernels_match_scalar(i in 1usize..20, o in 1usize..11, p in 1usize..700,
                                    gelu in any::<bool>(), seed in 0u64..1000) {
        let act = if gelu { conv1x1::Act::Gelu } else { conv1x1::Act::Linear };
        let w = graphs::pseudo_random(o * i, seed);
        let b = graphs::pseudo_random(o, seed + 1);
        let x = graphs::pseudo_random(i * p, seed + 2);
        let mut want = vec![0.0; o * p];
        kernels::scalar().conv1x1().conv(&w, &b, &x, i, p, 0, o, act, &mut want);
        for k in simd_kernels(Kernels::conv1x1, |k| k.name()) {
            let name = k.name();
            let mut got = vec![0.0; o * p];
            k.conv(&w, &b, &x, i, p, 0, o, act, &mut got);
            let diff = max_abs_diff(&want, &got);
            prop_assert!(diff < 1e-5, "{} i={} o={} p={}: {:e}", name, i, o, p, diff);
            // Pixel ranges, as the threads of the pool take them (split at
            // a whole 16-pixel strip), write only their own pixels, and
            // together the whole output, bit for bit.
            let cut = p / 3 / 16 * 16;
            let mut halves = vec![f32::NAN; o * p];
            for px in [0..cut, cut..p] {
                // SAFETY: `halves` holds the o rows of p values; one range at
                // a time.
                unsafe { k.conv_pixels(&w, &b, &x, i, p, 0, o, act, px, halves.as_mut_ptr()) };
            }
            prop_assert_eq!(&halves, &got, "{} pixel ranges", name);
            // A block of channels in the middle writes only its own rows.
            if o > 2 {
                let mut part = vec![0.0; (o - 2) * p];
                k.conv(&w, &b, &x, i, p, 1, o - 2, act, &mut part);
                let diff = max_abs_diff(&want[p..(o - 1) * p], &part);
                prop_assert!(diff < 1e-5, "{} channels 1..{}: {:e}", name, o - 1, diff);
            }
        }
    }

    #[test]
    fn conv3x3_kernels_match_scalar(cin in 1usize..10, n in 1usize..14, h in 1usize..5,
                                    width in 1usize..40, gelu in any::<bool>(),
                                    seed in 0u64..1000) {
        let act = if gelu { conv1x1::Act::Gelu } else { conv1x1::Act::Linear };
        let w = graphs::pseudo_random(n * cin * 9, seed);
        let b = graphs::pseudo_random(n, seed + 1);
        let xpad = graphs::pseudo_random(cin * (h + 2) * (width + 2), seed + 2);
        let mut want = vec![0.0; n * h * width];
        kernels::scalar().conv3x3().conv(&w, &b, &xpad, cin, h, width, n, act, &mut want);
        for k in simd_kernels(Kernels::conv3x3, |k| k.name()) {
            let mut got = vec![0.0; n * h * width];
            k.conv(&w, &b, &xpad, cin, h, width, n, act, &mut got);
            let diff = max_abs_diff(&want, &got);
            prop_assert!(diff < 1e-5, "{} cin={} n={} {}x{}: {:e}", k.name(), cin, n, h, width, diff);
        }
    }

    /// The SIMD GELUs give the scalar reference's bits, on every length
    /// (vector body and tail) and over the whole range, infinities included.
    #[test]
    fn gelu_kernels_match_scalar_bit_for_bit(n in 0usize..100, seed in 0u64..1000) {
        let mut x: Vec<f32> = graphs::pseudo_random(n, seed).iter().map(|v| v * 9.0).collect();
        if n > 3 {
            x[0] = f32::INFINITY;
            x[1] = f32::NEG_INFINITY;
            x[2] = 0.0;
        }
        let mut want = x.clone();
        kernels::scalar().gelu().run(&mut want);
        for k in simd_kernels(Kernels::gelu, |k| k.name()) {
            let mut got = x.clone();
            k.run(&mut got);
            let same = want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits());
            prop_assert!(same, "{}: {:?} vs {:?}", k.name(), want, got);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn linear_kernels_match_scalar(rows in 1usize..30, k in 1usize..40, n in 1usize..50,
                                   seed in 0u64..1000) {
        let w = graphs::pseudo_random(k * n, seed);
        let b = graphs::pseudo_random(n, seed + 1);
        let x = graphs::pseudo_random(rows * k, seed + 2);
        let mut want = vec![0.0; rows * n];
        kernels::scalar().linear().linear(&x, &w, &b, k, n, &mut want);
        for kern in simd_kernels(Kernels::linear, |k| k.name()) {
            let mut got = vec![f32::NAN; rows * n];
            kern.linear(&x, &w, &b, k, n, &mut got);
            let diff = max_abs_diff(&want, &got);
            prop_assert!(diff < 1e-5, "{} rows={} k={} n={}: {:e}", kern.name(), rows, k, n, diff);
        }
    }
}

/// The transformer blocks' linear layers (`P K, K n -> P n`, with a bias
/// along `n` or none, unit axes in front of the output allowed) become
/// `LgmsLinear` with the stock values; a product over another layout stays
/// tract's.
#[test]
fn linear_layers_are_replaced_and_match_stock() {
    use tract_onnx::tract_core::ops::einsum::EinSum;
    use tract_onnx::tract_core::ops::math;
    // (expression, x shape, weight shape, bias, SiLU after, residual
    // added after, replaced)
    type Case = (
        &'static str,
        &'static [usize],
        &'static [usize],
        bool,
        bool,
        bool,
        usize,
    );
    let cases: [Case; 8] = [
        (
            "bmk,kn->bmn",
            &[2, 37, 48],
            &[48, 128],
            true,
            false,
            false,
            1,
        ),
        (
            "bmck,ckn->bmn",
            &[2, 19, 4, 8],
            &[4, 8, 48],
            true,
            false,
            false,
            1,
        ),
        (
            "bmk,kn->abmn",
            &[3, 21, 24],
            &[24, 40],
            false,
            false,
            false,
            1,
        ),
        (
            "bkm,kn->bmn",
            &[2, 24, 9],
            &[24, 16],
            false,
            false,
            false,
            0,
        ),
        // The feed-forward layer: bias, then SiLU folded in.
        (
            "bmk,kn->bmn",
            &[4, 70, 96],
            &[96, 256],
            true,
            true,
            false,
            1,
        ),
        ("bmk,kn->bmn", &[2, 9, 16], &[16, 8], false, true, false, 1),
        // The residual after `to_out` and the feed-forward layer.
        (
            "bmck,ckn->bmn",
            &[2, 67, 4, 8],
            &[4, 8, 48],
            true,
            false,
            true,
            1,
        ),
        ("bmk,kn->bmn", &[3, 9, 16], &[16, 24], false, false, true, 1),
    ];
    for (i, (expr, xs, ws, bias, silu, residual, expect)) in cases.into_iter().enumerate() {
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact(xs)).unwrap();
        let n = *ws.last().unwrap();
        let wv = graphs::pseudo_random(ws.iter().product(), i as u64);
        let w = m
            .add_const("w", Tensor::from_shape(ws, &wv).unwrap())
            .unwrap();
        let op = EinSum::new(expr.parse().unwrap(), f32::datum_type());
        let mut y = m.wire_node("mm", op, &[x, w]).unwrap()[0];
        if bias {
            let rank = m.outlet_fact(y).unwrap().rank();
            let mut shape = vec![1; rank];
            shape[rank - 1] = n;
            let bv = graphs::pseudo_random(n, 50 + i as u64);
            let b = m
                .add_const("b", Tensor::from_shape(&shape, &bv).unwrap())
                .unwrap();
            y = m.wire_node("bias", math::add(), &[y, b]).unwrap()[0];
        }
        if silu {
            let op = tract_onnx::tract_core::ops::nn::silu::silu();
            y = m.wire_node("silu", op, &[y]).unwrap()[0];
        }
        let out_shape: TVec<usize> = m
            .outlet_fact(y)
            .unwrap()
            .shape
            .as_concrete()
            .unwrap()
            .into();
        if residual {
            let r = m.add_source("r", f32::fact(&out_shape)).unwrap();
            y = m.wire_node("residual", math::add(), &[r, y]).unwrap()[0];
        }
        m.select_output_outlets(&[y]).unwrap();
        let mut ours = m.clone();
        assert_eq!(ops::substitute(&mut ours).unwrap().linear, expect, "{expr}");
        if expect == 1 {
            let names: Vec<String> = ours
                .nodes()
                .iter()
                .map(|n| n.op.name().to_string())
                .collect();
            assert!(
                !names
                    .iter()
                    .any(|n| n == "EinSum" || n == "Add" || n == "Silu"),
                "{expr}: {names:?}"
            );
        }
        let mut inputs = vec![random(xs, 60 + i as u64, 2.0)];
        if residual {
            inputs.push(random(&out_shape, 80 + i as u64, 2.0));
        }
        let (want, got) = (run(&m, &inputs), run(&ours, &inputs));
        let diff = max_abs_diff(&want, &got);
        assert!(diff < 1e-4, "{expr}: max |diff| {diff:e}");
    }
}

/// Our int8 conv against tract's own quantised conv on the same graph.
/// Requantisation may round a tie the other way (tract scales in fixed
/// point, we in f32), so a value may differ by one output step; almost all
/// must be identical.
#[allow(clippy::too_many_arguments)]
fn check_qconv(
    i: usize,
    o: usize,
    k: usize,
    h: usize,
    w: usize,
    g: usize,
    wmax: i32,
    per_channel: bool,
) {
    let stock = graphs::qconv(i, o, k, h, w, g, wmax, per_channel, 3).unwrap();
    let mut ours = stock.clone();
    let replaced = ops::substitute(&mut ours).unwrap().qconv;
    // Replaced where this CPU has an int8 SIMD kernel that can take the weights.
    let fits = has_int8_simd() && (wmax <= 64 || !kernels::best().qconv().needs_7bit());
    assert_eq!(
        replaced,
        usize::from(fits),
        "{i}->{o} {k}x{k} {h}x{w} wmax {wmax}"
    );
    if fits {
        assert!(ours.nodes().iter().any(|n| n.op.name() == "LgmsQConv"));
        assert!(!ours.nodes().iter().any(|n| n.op.name() == "Conv"));
    }
    // Inputs spanning more than the u8 range (clamping) and exact ties.
    let mut x = random(&[1, i, h, w], 11, 3.0);
    x.try_as_plain_ram_mut()
        .unwrap()
        .as_slice_mut::<f32>()
        .unwrap()[0] = 0.01;
    let (want, got) = (run(&stock, std::slice::from_ref(&x)), run(&ours, &[x]));
    let step = 0.05 * 1.0001; // y_scale of graphs::qconv
    let off = want.iter().zip(&got).filter(|(a, b)| a != b).count();
    let diff = max_abs_diff(&want, &got);
    assert!(
        diff <= step,
        "{i}->{o} {k}x{k} {h}x{w}: max |diff| {diff} > one step"
    );
    assert!(
        off * 1000 <= want.len(),
        "{i}->{o} {k}x{k}: {off} of {} values differ",
        want.len()
    );
    // Not a trivially clamped output: values spread over the u8 range.
    let distinct: std::collections::BTreeSet<i32> =
        got.iter().map(|v| (v / 0.05).round() as i32).collect();
    assert!(
        distinct.len() > 50,
        "{i}->{o}: only {} output levels",
        distinct.len()
    );
}

/// tract's 2x2 stride-2 max pooling, replaced, gives tract's values
/// exactly, odd sizes (floor) included; other poolings stay tract's.
#[test]
fn max_pooling_2x2_is_replaced_and_matches_stock() {
    use tract_onnx::tract_core::ops::cnn::{MaxPool, PaddingSpec, PoolSpec};
    use tract_onnx::tract_core::ops::nn::DataFormat;
    let pool = |c: usize, k: usize, s: usize| MaxPool {
        pool_spec: PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec![k, k],
            padding: PaddingSpec::Valid,
            dilations: None,
            strides: Some(tvec![s, s]),
            input_channels: c,
            output_channels: c,
        },
        with_index_outputs: None,
    };
    for (c, h, w, k, s, expect) in [
        (16, 64, 64, 2, 2, 1),
        (3, 9, 13, 2, 2, 1),
        (4, 10, 10, 3, 2, 0),
        (4, 10, 10, 2, 1, 0),
    ] {
        let mut stock = TypedModel::default();
        let x = stock.add_source("x", f32::fact([1, c, h, w])).unwrap();
        let y = stock.wire_node("pool", pool(c, k, s), &[x]).unwrap();
        stock.select_output_outlets(&y).unwrap();
        let mut ours = stock.clone();
        let subs = ops::substitute(&mut ours).unwrap();
        assert_eq!(subs.maxpool, expect, "{c}x{h}x{w} k{k} s{s}");
        let x = random(&[1, c, h, w], 21, 5.0);
        let (want, got) = (run(&stock, std::slice::from_ref(&x)), run(&ours, &[x]));
        assert_eq!(want, got, "{c}x{h}x{w} k{k} s{s}");
    }
}

/// LayerNorm as tract declutters it (`x - sum(x) / n` into `RmsNorm` over
/// the last axis, then a per-channel scale and shift) is one `LgmsNorm`
/// with the stock values; without the affine too. A mean over another axis
/// is left to tract.
#[test]
fn layer_norm_chain_is_replaced_and_matches_stock() {
    use tract_onnx::tract_core::ops::math;
    use tract_onnx::tract_core::ops::nn::{Reduce, Reducer, RmsNorm};
    for (affine, axis, expect) in [(true, 2, 1), (false, 2, 1), (true, 1, 0)] {
        let (t, n) = (37, 48);
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact([2, t, n])).unwrap();
        let sum = m
            .wire_node("sum", Reduce::new(tvec![axis], Reducer::Sum), &[x])
            .unwrap()[0];
        let len = if axis == 2 { n } else { t };
        let inv = m
            .add_const("inv", tensor3(&[[[1.0 / len as f32]]]))
            .unwrap();
        let mean = m.wire_node("mean", math::mul(), &[sum, inv]).unwrap()[0];
        let d = m.wire_node("d", math::sub(), &[x, mean]).unwrap()[0];
        let rms = RmsNorm {
            axis: 2,
            eps: Arc::new(tensor0(1e-5f32)),
        };
        let mut y = m.wire_node("rms", rms, &[d]).unwrap()[0];
        if affine {
            let g: Vec<f32> = (0..n).map(|i| 0.5 + i as f32 * 0.03).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.7).sin()).collect();
            let g = m
                .add_const("g", tensor1(&g).into_shape(&[1, 1, n]).unwrap())
                .unwrap();
            let b = m
                .add_const("b", tensor1(&b).into_shape(&[1, 1, n]).unwrap())
                .unwrap();
            y = m.wire_node("scaled", math::mul(), &[y, g]).unwrap()[0];
            y = m.wire_node("shifted", math::add(), &[y, b]).unwrap()[0];
        }
        m.select_output_outlets(&[y]).unwrap();
        let mut ours = m.clone();
        let subs = ops::substitute(&mut ours).unwrap();
        assert_eq!(subs.norm, expect, "affine {affine}, axis {axis}");
        let left: Vec<String> = ours
            .nodes()
            .iter()
            .map(|n| n.op.name().to_string())
            .collect();
        if expect == 1 {
            assert!(
                !left.iter().any(|n| n == "RmsNorm" || n == "Mul"),
                "{left:?}"
            );
        }
        let x = random(&[2, t, n], 41, 4.0);
        let (want, got) = (run(&m, std::slice::from_ref(&x)), run(&ours, &[x]));
        let diff = max_abs_diff(&want, &got);
        assert!(diff < 2e-5, "affine {affine}: max |diff| {diff:e}");
    }
}

/// GroupNorm as the multi-kernel block exports it (reshape to groups, the
/// means, `Rsqrt`, reshape back, affine per channel) is one `LgmsNorm` with
/// the stock values, whichever ops take the means: here `Reduce<Sum>` and a
/// scale, in the model products by constant vectors.
/// GroupNorm over `[1, 16, 9, 13]` in 4 groups as tract declutters it.
fn group_norm_graph() -> TypedModel {
    use tract_onnx::tract_core::ops::change_axes::AxisOp;
    use tract_onnx::tract_core::ops::math;
    use tract_onnx::tract_core::ops::nn::{Reduce, Reducer};
    let (c, g, h, w) = (16usize, 4usize, 9usize, 13usize);
    let mut m = TypedModel::default();
    let x = m.add_source("x", f32::fact([1, c, h, w])).unwrap();
    let to_groups = AxisOp::Reshape(
        1,
        tvec![c.into(), h.into()],
        tvec![g.into(), (c / g * h).into()],
    );
    let r = m.wire_node("r", to_groups, &[x]).unwrap()[0];
    let mean_of = |m: &mut TypedModel, name: &str, v: OutletId| {
        let s = m
            .wire_node(
                format!("{name}.sum"),
                Reduce::new(tvec![2, 3], Reducer::Sum),
                &[v],
            )
            .unwrap()[0];
        let k = m
            .add_const(
                format!("{name}.inv"),
                tensor4(&[[[[1.0 / (c / g * h * w) as f32]]]]),
            )
            .unwrap();
        m.wire_node(format!("{name}.mean"), math::mul(), &[s, k])
            .unwrap()[0]
    };
    let mean = mean_of(&mut m, "mean", r);
    let s = m.wire_node("s", math::sub(), &[r, mean]).unwrap()[0];
    let sq = m.wire_node("sq", math::square(), &[s]).unwrap()[0];
    let var = mean_of(&mut m, "var", sq);
    let eps = m.add_const("eps", tensor4(&[[[[1e-5f32]]]])).unwrap();
    let ve = m.wire_node("ve", math::add(), &[var, eps]).unwrap()[0];
    let rs = m.wire_node("rs", math::rsqrt(), &[ve]).unwrap()[0];
    let n = m.wire_node("n", math::mul(), &[s, rs]).unwrap()[0];
    let back = AxisOp::Reshape(
        1,
        tvec![g.into(), (c / g * h).into()],
        tvec![c.into(), h.into()],
    );
    let y = m.wire_node("back", back, &[n]).unwrap()[0];
    let gamma: Vec<f32> = (0..c).map(|i| 0.8 + i as f32 * 0.05).collect();
    let beta: Vec<f32> = (0..c).map(|i| i as f32 * 0.1 - 0.5).collect();
    let gamma = m
        .add_const("g", tensor1(&gamma).into_shape(&[1, c, 1, 1]).unwrap())
        .unwrap();
    let beta = m
        .add_const("b", tensor1(&beta).into_shape(&[1, c, 1, 1]).unwrap())
        .unwrap();
    let y = m.wire_node("scaled", math::mul(), &[y, gamma]).unwrap()[0];
    let y = m.wire_node("shifted", math::add(), &[y, beta]).unwrap()[0];
    m.select_output_outlets(&[y]).unwrap();
    m
}

/// The exact GELU after a GroupNorm (the multi-kernel blocks' `norm_act`)
/// runs inside the norm op: gone from the graph, the same values.
#[test]
fn a_gelu_after_a_group_norm_runs_inside_it() {
    let m = graphs::then_gelu(group_norm_graph()).unwrap();
    let mut ours = m.clone();
    let subs = ops::substitute(&mut ours).unwrap();
    assert_eq!(subs.norm, 1);
    let ours = ours.into_compact().unwrap();
    let names: Vec<String> = ours
        .nodes()
        .iter()
        .map(|n| n.op.name().to_string())
        .collect();
    assert!(!names.iter().any(|n| n.contains("Gelu")), "left: {names:?}");
    let x = random(&[1, 16, 9, 13], 44, 3.0);
    let (want, got) = (run(&m, std::slice::from_ref(&x)), run(&ours, &[x]));
    let diff = max_abs_diff(&want, &got);
    assert!(diff < 1e-4, "max |diff| {diff:e}");
}

#[test]
fn group_norm_chain_is_replaced_and_matches_stock() {
    let m = group_norm_graph();
    let (c, g, h, w) = (16usize, 4usize, 9usize, 13usize);
    let mut ours = m.clone();
    assert_eq!(ops::substitute(&mut ours).unwrap().norm, 1);
    assert!(!ours.nodes().iter().any(|n| n.op.name() == "Rsqrt"));
    // Groups with different means and spreads.
    let mut x = random(&[1, c, h, w], 43, 3.0);
    for (i, v) in x
        .try_as_plain_ram_mut()
        .unwrap()
        .as_slice_mut::<f32>()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        let grp = i / (c / g * h * w);
        *v = *v * (1.0 + grp as f32) + 10.0 * grp as f32;
    }
    let (want, got) = (run(&m, std::slice::from_ref(&x)), run(&ours, &[x]));
    let diff = max_abs_diff(&want, &got);
    assert!(diff < 2e-5, "max |diff| {diff:e}");
}

/// A concat along the channels that only feeds a quantised conv leaves
/// the graph: the conv reads its inputs in place, with the values of the
/// stock graph. A concat that something else reads too stays.
#[test]
fn a_channel_concat_before_a_quantised_conv_is_absorbed() {
    use tract_onnx::tract_core::ops::array::TypedConcat;
    use tract_onnx::tract_core::ops::math;
    if !has_int8_simd() {
        return;
    }
    let (o, k, h, w) = (8, 3, 11, 23);
    let parts = [4usize, 8, 4];
    for shared in [false, true] {
        let mut stock = TypedModel::default();
        let xs: Vec<OutletId> = parts
            .iter()
            .enumerate()
            .map(|(n, &c)| {
                stock
                    .add_source(format!("x{n}"), f32::fact([1, c, h, w]))
                    .unwrap()
            })
            .collect();
        let cat = stock
            .wire_node("cat", TypedConcat { axis: 1 }, &xs)
            .unwrap()[0];
        let i = parts.iter().sum();
        let mut outs = vec![graphs::qconv_after(&mut stock, cat, i, o, k, 1, 63, true, 9).unwrap()];
        if shared {
            let two = stock.add_const("two", tensor4(&[[[[2f32]]]])).unwrap();
            outs.push(stock.wire_node("also", math::mul(), &[cat, two]).unwrap()[0]);
        }
        stock.select_output_outlets(&outs).unwrap();
        let mut ours = stock.clone();
        assert_eq!(ops::substitute(&mut ours).unwrap().qconv, 1);
        let conv = ours
            .nodes()
            .iter()
            .find(|n| n.op.name() == "LgmsQConv")
            .unwrap();
        let concats = ours
            .nodes()
            .iter()
            .filter(|n| n.op_is::<TypedConcat>())
            .count();
        assert_eq!(concats, usize::from(shared), "shared={shared}");
        assert_eq!(conv.inputs.len(), if shared { 1 } else { parts.len() });
        let inputs: Vec<Tensor> = parts
            .iter()
            .enumerate()
            .map(|(n, &c)| random(&[1, c, h, w], 30 + n as u64, 3.0))
            .collect();
        let (want, got) = (run(&stock, &inputs), run(&ours, &inputs));
        let off = want.iter().zip(&got).filter(|(a, b)| a != b).count();
        assert!(max_abs_diff(&want, &got) <= 0.05 * 1.0001);
        assert!(
            off * 1000 <= want.len(),
            "{off} of {} values differ",
            want.len()
        );
    }
}

/// Element-wise f32 ops after a quantised conv (an activation, a max with a
/// scalar) fold into the conv's output table: gone from the graph, same
/// values as tract's own ops.
#[test]
fn activations_after_a_quantised_conv_fold_into_it() {
    use tract_onnx::tract_core::ops::{math, nn};
    let (i, o, k, h, w) = (8, 12, 3, 9, 21);
    let mut stock = graphs::qconv(i, o, k, h, w, 1, 63, true, 5).unwrap();
    let y = stock.output_outlets().unwrap()[0];
    let y = stock.wire_node("silu", nn::silu::silu(), &[y]).unwrap()[0];
    let floor = stock.add_const("floor", tensor4(&[[[[-0.1f32]]]])).unwrap();
    let y = stock.wire_node("max", math::max(), &[y, floor]).unwrap();
    stock.select_output_outlets(&y).unwrap();
    let mut ours = stock.clone();
    let replaced = ops::substitute(&mut ours).unwrap().qconv;
    if !has_int8_simd() {
        assert_eq!(replaced, 0);
        return;
    }
    assert_eq!(replaced, 1);
    let names: Vec<String> = ours
        .nodes()
        .iter()
        .map(|n| n.op.name().to_string())
        .collect();
    assert!(
        !names.iter().any(|n| n == "Silu" || n == "Max"),
        "activations left in the graph: {names:?}"
    );
    let x = random(&[1, i, h, w], 12, 3.0);
    let (want, got) = (run(&stock, std::slice::from_ref(&x)), run(&ours, &[x]));
    // Equal wherever the requantised level is (the rare rounding tie
    // differs by one level: 0.05 before the SiLU, whose slope is below 1.1).
    let off = want.iter().zip(&got).filter(|(a, b)| a != b).count();
    assert!(
        max_abs_diff(&want, &got) <= 0.055,
        "{}",
        max_abs_diff(&want, &got)
    );
    assert!(
        off * 1000 <= want.len(),
        "{off} of {} values differ",
        want.len()
    );
    assert!(
        got.iter().all(|&v| v >= -0.1),
        "the max with -0.1 was not applied"
    );
    assert!(got.iter().any(|&v| v == -0.1) && got.iter().any(|&v| v > 1.0));
}

/// Substitutes `stock`, checks that one quantised conv replaced it with
/// the ops named in `gone` (none of them left in the graph), and that its
/// output equals tract's but where a rounding tie moved a value by up to
/// `step` (in one value in a thousand at most) or float rounding differs.
fn check_folded_qconv(stock: &TypedModel, x: &Tensor, gone: &[&str], step: f32) {
    let mut ours = stock.clone();
    let replaced = ops::substitute(&mut ours).unwrap().qconv;
    if !has_int8_simd() {
        assert_eq!(replaced, 0);
        return;
    }
    assert_eq!(replaced, 1);
    let ours = ours.into_compact().unwrap();
    let names: Vec<String> = ours
        .nodes()
        .iter()
        .map(|n| n.op.name().to_string())
        .collect();
    assert!(
        !names.iter().any(|n| gone.iter().any(|g| n.contains(g))),
        "left: {names:?}"
    );
    let x = std::slice::from_ref(x);
    let (want, got) = (run(stock, x), run(&ours, x));
    let off = want
        .iter()
        .zip(&got)
        .filter(|(a, b)| (*a - *b).abs() > 1e-5)
        .count();
    let diff = max_abs_diff(&want, &got);
    assert!(diff <= step, "max |diff| {diff}");
    assert!(
        off * 1000 <= want.len(),
        "{off} of {} values differ",
        want.len()
    );
}

/// An activation that tract's declutter split over the slices after a
/// quantised conv (the hybrid blocks' SiLU after the 1x1 conv that feeds
/// both branches) folds into the conv: the slices read activated values.
#[test]
fn an_activation_split_over_slices_folds_into_the_quantised_conv() {
    use tract_onnx::tract_core::ops::array::Slice;
    use tract_onnx::tract_core::ops::nn;
    let (i, o, k, h, w) = (8, 12, 1, 9, 21);
    let mut stock = graphs::qconv(i, o, k, h, w, 1, 63, true, 7).unwrap();
    let y = stock.output_outlets().unwrap()[0];
    let mut outs = vec![];
    for (n, (a, b)) in [(0, 8), (8, 12)].into_iter().enumerate() {
        let part = stock
            .wire_node(format!("slice{n}"), Slice::new(1, a, b), &[y])
            .unwrap();
        outs.push(
            stock
                .wire_node(format!("silu{n}"), nn::silu::silu(), &part)
                .unwrap()[0],
        );
    }
    stock.select_output_outlets(&outs).unwrap();
    // One level is 0.05 before the SiLU, whose slope is below 1.1.
    check_folded_qconv(&stock, &random(&[1, i, h, w], 13, 3.0), &["Silu"], 0.055);
}

/// A GELU and a BatchNorm (one scale and shift per channel) after a
/// quantised conv (the fusion blocks' last conv) fold into it as one
/// table per output channel: gone from the graph, tract's values.
#[test]
fn a_gelu_and_a_batch_norm_after_a_quantised_conv_fold_into_it() {
    use tract_onnx::tract_core::ops::math;
    let (i, o, k, h, w) = (8, 12, 1, 9, 21);
    let stock = graphs::qconv(i, o, k, h, w, 1, 63, true, 17).unwrap();
    let mut stock = graphs::then_gelu(stock).unwrap();
    let y = stock.output_outlets().unwrap()[0];
    let per_channel = |m: &mut TypedModel, name: &str, f: &dyn Fn(usize) -> f32| {
        let v: Vec<f32> = (0..o).map(f).collect();
        m.add_const(name, tensor1(&v).into_shape(&[1, o, 1, 1]).unwrap())
            .unwrap()
    };
    let s = per_channel(&mut stock, "scale", &|c| 0.6 + 0.1 * c as f32);
    let b = per_channel(&mut stock, "shift", &|c| 0.3 * c as f32 - 1.0);
    let y = stock.wire_node("bn.mul", math::mul(), &[y, s]).unwrap()[0];
    let y = stock.wire_node("bn.add", math::add(), &[y, b]).unwrap();
    stock.select_output_outlets(&y).unwrap();
    // One level is 0.05 before the GELU (slope below 1.13), times a scale
    // of at most 1.7; elsewhere float rounding differs (our GELU kernel
    // against tract's, tract's fused multiply-add against two ops here).
    let x = random(&[1, i, h, w], 15, 3.0);
    check_folded_qconv(&stock, &x, &["Gelu", "Mul", "Add"], 0.1);
}

/// A residual added to a quantised conv's f32 output (`x + silu(conv(x))`)
/// is added inside the conv: the `Add` leaves the graph.
#[test]
fn a_residual_add_after_a_quantised_conv_folds_into_it() {
    use tract_onnx::tract_core::ops::{math, nn};
    let (c, k, h, w) = (8, 3, 9, 37);
    let mut stock = graphs::qconv(c, c, k, h, w, 1, 63, true, 11).unwrap();
    let x = stock.input_outlets().unwrap()[0];
    let y = stock.output_outlets().unwrap()[0];
    let y = stock.wire_node("silu", nn::silu::silu(), &[y]).unwrap()[0];
    let y = stock.wire_node("add", math::add(), &[x, y]).unwrap();
    stock.select_output_outlets(&y).unwrap();
    // One level is 0.05 before the SiLU, whose slope is below 1.1.
    check_folded_qconv(
        &stock,
        &random(&[1, c, h, w], 14, 3.0),
        &["Add", "Silu"],
        0.055,
    );
}

#[test]
fn quantised_convs_are_replaced_and_match_tract_int8() {
    // 3x3 and 1x1; channel counts that are not multiples of 4; widths that
    // are not multiples of the 16-pixel block; per-tensor and per-channel.
    check_qconv(3, 5, 3, 7, 19, 1, 63, false);
    check_qconv(16, 16, 1, 20, 33, 1, 63, true);
    check_qconv(32, 24, 3, 32, 32, 1, 63, true);
    check_qconv(6, 9, 5, 9, 17, 1, 64, true);
    // Grouped, as the decoder's first convs (groups 2).
    check_qconv(32, 16, 3, 24, 40, 2, 63, true);
    check_qconv(24, 24, 3, 10, 18, 3, 63, false);
}

#[test]
fn eight_bit_weights_are_left_to_tract_where_the_kernel_would_saturate() {
    // On AVX2 (vpmaddubsw) the conv stays tract's; elsewhere ours runs it.
    check_qconv(8, 8, 3, 12, 20, 1, 127, true);
}

/// Whether this CPU has an int8 SIMD kernel (where it has none, the int8
/// convs stay tract's).
fn has_int8_simd() -> bool {
    kernels::native().is_some_and(|t| t.qconv().name() != "scalar")
}

fn qconv_plan(
    i: usize,
    o: usize,
    k: usize,
    h: usize,
    w: usize,
    g: usize,
    seed: u64,
) -> qconv::Plan {
    let weights: Vec<i8> = graphs::pseudo_random(o * (i / g) * k * k, seed)
        .iter()
        .map(|v| (v * 64.0).trunc() as i8)
        .collect();
    let bias: Vec<i32> = (0..o as i32).map(|v| v * 37 - 100).collect();
    let scales: Vec<f32> = (0..o).map(|c| 0.003 + 0.001 * (c % 3) as f32).collect();
    qconv::Plan::new(
        (i, o, k, h, w, g),
        &weights,
        Some(&bias),
        0.03,
        121,
        &scales,
        0.04,
        128,
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// The SIMD kernel (and its activation encoding) gives exactly the
    /// scalar kernel's output, on one thread and on tract's pool.
    #[test]
    fn qconv_kernels_match_scalar(i in 1usize..13, o in 1usize..10, k in prop::sample::select(vec![1usize, 3, 5]),
                                  h in 1usize..9, w in 1usize..40, g in 1usize..4, seed in 0u64..1000) {
        // Grouped convs need 4-channel multiples per group.
        let (i, o) = if g > 1 { (4 * g * i.div_ceil(4), 4 * g * o.div_ceil(4)) } else { (i, o) };
        let plan = qconv_plan(i, o, k, h, w, g, seed);
        let x = graphs::pseudo_random(i * h * w, seed + 7).iter().map(|v| v * 5.0).collect::<Vec<_>>();
        let mut buf = vec![0u8; plan.buf_len()];
        let mut want = vec![0.0; o * h * w];
        plan.run(&x, &mut buf, &mut want, kernels::scalar().qconv());
        // The scratch buffer is reused between convs: every byte the
        // kernels read must be written first, whatever was there.
        let mut dirty = vec![0xA5u8; plan.buf_len()];
        let mut again = vec![f32::NAN; o * h * w];
        plan.run(&x, &mut dirty, &mut again, kernels::scalar().qconv());
        prop_assert_eq!(&want, &again, "stale scratch bytes read");
        for k in simd_kernels(Kernels::qconv, |k| k.name()) {
            let mut got = vec![f32::NAN; o * h * w];
            plan.run(&x, &mut buf, &mut got, k);
            prop_assert_eq!(&want, &got, "{} {}->{} {}x{} seed {}", k.name(), i, o, h, w, seed);
        }
    }
}

/// The scalar kernel against a direct convolution of the dequantised values
/// (the definition, no packing, no zero-point algebra).
#[test]
fn qconv_scalar_matches_the_definition() {
    let (i, o, k, h, w) = (5, 6, 3, 6, 21);
    let plan = qconv_plan(i, o, k, h, w, 1, 42);
    let x: Vec<f32> = graphs::pseudo_random(i * h * w, 9)
        .iter()
        .map(|v| v * 4.0)
        .collect();
    let mut buf = vec![0u8; plan.buf_len()];
    let mut got = vec![0.0; o * h * w];
    plan.run(&x, &mut buf, &mut got, kernels::scalar().qconv());
    let weights: Vec<i8> = graphs::pseudo_random(o * i * k * k, 42)
        .iter()
        .map(|v| (v * 64.0).trunc() as i8)
        .collect();
    let xq = |c: usize, y: isize, xx: isize| -> i32 {
        if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
            return 0; // padding is the zero point: contributes nothing
        }
        let v = x[(c * h + y as usize) * w + xx as usize];
        ((v / 0.03).round_ties_even() as i32 + 121).clamp(0, 255) - 121
    };
    let mut levels = std::collections::BTreeSet::new();
    for oc in 0..o {
        for y in 0..h {
            for xx in 0..w {
                let mut acc = oc as i32 * 37 - 100;
                for c in 0..i {
                    for t in 0..k * k {
                        let (dy, dx) = ((t / k) as isize - 1, (t % k) as isize - 1);
                        acc += weights[(oc * i + c) * k * k + t] as i32
                            * xq(c, y as isize + dy, xx as isize + dx);
                    }
                }
                let scale = 0.03 * (0.003 + 0.001 * (oc % 3) as f32) / 0.04;
                let q = ((acc as f32 * scale).round_ties_even() as i32 + 128).clamp(0, 255);
                let want = (q - 128) as f32 * 0.04;
                assert_eq!(got[(oc * h + y) * w + xx], want, "o{oc} y{y} x{xx}");
                levels.insert(q);
            }
        }
    }
    assert!(levels.len() > 20, "only {} output levels", levels.len());
}

/// The bundled parity vector's network input.
fn parity_input() -> Vec<f32> {
    std::fs::read("models/parity/image0.input.f32")
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Logits of tract's stock graph and of ours (one thread), and what we
/// substituted.
fn stock_and_ours(path: &str, input: &[f32]) -> (Vec<f32>, Vec<f32>, ops::Substitutions) {
    let stock = LoadOptions {
        stock: true,
        ..LoadOptions::default()
    };
    let (want, none) = logits(path, &stock, input);
    assert_eq!(none, ops::Substitutions::default());
    let (got, subs) = logits(path, &LoadOptions::default(), input);
    (want, got, subs)
}

fn logits(path: &str, opts: &LoadOptions, input: &[f32]) -> (Vec<f32>, ops::Substitutions) {
    let model = Model::load(std::path::Path::new(path), opts).unwrap();
    let subs = model.info().substitutions;
    let mut engine = Engine::new(model).unwrap();
    (engine.run_tensor(input).unwrap().to_vec(), subs)
}

/// The bundled network: every attention, upsampling, 1x1 conv, pooling and
/// normalisation (8 LayerNorms, 3 GroupNorms) and linear layer is
/// substituted, and
/// the logits stay within the parity tolerance of tract's stock graph, on
/// one thread and on two (blocks then run on tract's pool).
#[test]
fn bundled_model_with_our_ops_matches_stock_graph() {
    let path = "models/lgmsnet-phantom-us.f32.onnx";
    let input = parity_input();
    let (want, got, subs) = stock_and_ours(path, &input);
    assert_eq!(
        subs,
        ops::Substitutions {
            attention: 4,
            upsample: 4,
            conv1x1: 8,
            conv3x3: 17,
            dwconv: 3,
            gelu: 5,
            qconv: 0,
            maxpool: 4,
            norm: 11,
            linear: 16,
            permute: 4,
        }
    );
    let diff = max_abs_diff(&want, &got);
    assert!(diff < 1e-4, "ops vs stock: max |diff| {diff:e}");
    if std::env::var_os("LGMS_EMULATED").is_some() {
        // Under qemu-user (make test-aarch64) a full inference takes ~40 s:
        // one frame per path; the threaded path is the same kernels.
        return;
    }
    let two = LoadOptions {
        threads: 2,
        ..LoadOptions::default()
    };
    let (threaded, _) = logits(path, &two, &input);
    let diff2 = max_abs_diff(&want, &threaded);
    assert!(diff2 < 1e-4, "2 threads vs stock: max |diff| {diff2:e}");
}

/// The bundled int8 network: every dense quantised conv runs as our int8
/// operator, with tract's int8 results: the mask of tract's stock graph,
/// and the logits of the same graph with only the int8 convs left to tract.
/// The logits are not compared bit for bit: our f32 operators (the norms)
/// round some values differently from tract's in the last bit, a few of
/// them then land on the other side of a quantisation step, and through 40
/// requantised layers that moves the logits by about 1 % of their size on
/// average (with every op but the convs tract's, they are identical). A
/// wrong conv moves them by far more. Under qemu too (one frame each, about
/// 60-80 s together), so that each emulated core's int8 kernel runs the
/// whole network.
#[test]
fn bundled_int8_model_with_our_int8_conv_matches_tract_int8() {
    let path = "models/lgmsnet-phantom-us.int8.onnx";
    let input = parity_input();
    let (ours, subs) = {
        let (want, got, subs) = stock_and_ours(path, &input);
        let mask = |l: &[f32]| l.iter().map(|&v| u8::from(v > 0.0)).collect::<Vec<_>>();
        let (iou, _) = lgms_edge::tools::eval::iou_dice(&mask(&got), &mask(&want));
        eprintln!("int8, ours vs tract's stock graph: mask IoU {iou}");
        assert!(iou >= 0.99, "mask IoU {iou} against tract's stock graph");
        (got, subs)
    };
    // Every aarch64 core has an int8 SIMD kernel (NEON widening without
    // dotprod, `sdot` with it); an x86_64 CPU needs AVX2.
    let expected = if cfg!(target_arch = "aarch64") || has_int8_simd() {
        40
    } else {
        0
    };
    assert_eq!(subs.qconv, expected, "{subs:?}");
    assert_eq!(subs.attention, 4, "{subs:?}");
    let tract_convs = LoadOptions {
        skip_ops: vec!["qconv".into()],
        ..LoadOptions::default()
    };
    let (want, others) = logits(path, &tract_convs, &input);
    assert_eq!(others.qconv, 0);
    let mean = want
        .iter()
        .zip(&ours)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / want.len() as f32;
    let kernel = qconv::selected().map_or("none", |k| k.name());
    let scale = want.iter().map(|v| v.abs()).sum::<f32>() / want.len() as f32;
    eprintln!(
        "int8 convs, ours ({kernel}) vs tract's: mean |logit diff| {mean}, mean |logit| {scale}"
    );
    assert!(
        mean <= 0.02 * scale,
        "mean |logit diff| {mean} against tract's int8 convs (logits {scale} on average)"
    );
    let mask = |l: &[f32]| l.iter().map(|&v| u8::from(v > 0.0)).collect::<Vec<_>>();
    let (iou, _) = lgms_edge::tools::eval::iou_dice(&mask(&ours), &mask(&want));
    assert!(iou >= 0.99, "mask IoU {iou} against tract's int8 convs");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// The SIMD depthwise rows give the scalar reference's bits, for every
    /// kernel size, on vector spans and tails, with infinities and NaN.
    #[test]
    fn dwconv_kernels_match_scalar_bit_for_bit(k in prop::sample::select(vec![1usize, 3, 5, 7, 9]),
                                               n in 1usize..140, rows in 1usize..6, extra in 0usize..5,
                                               seed in 0u64..1000) {
        let stride = n + k - 1 + extra;
        let mut src = graphs::pseudo_random((rows + k - 1) * stride, seed);
        if n > 40 {
            src[3] = f32::INFINITY;
            src[(k - 1) * stride + 7] = f32::NAN;
        }
        let w = graphs::pseudo_random(k * k, seed + 1);
        let mut want = vec![0f32; rows * n];
        kernels::scalar().dwconv().rows(&src, stride, k, &w, 0.25, &mut want, n);
        // Each row is the definition (the scalar kernel's rows are).
        let r = rows - 1;
        let x = n - 1;
        let mut sum = 0.25f32;
        for ky in 0..k {
            for kx in 0..k {
                sum = w[ky * k + kx].mul_add(src[(r + ky) * stride + x + kx], sum);
            }
        }
        prop_assert!(sum.to_bits() == want[r * n + x].to_bits() || sum.is_nan());
        for kern in simd_kernels(Kernels::dwconv, |k| k.name()) {
            let mut got = vec![0f32; rows * n];
            kern.rows(&src, stride, k, &w, 0.25, &mut got, n);
            let same = want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
            prop_assert!(same, "{} k={} n={} rows={}", kern.name(), k, n, rows);
        }
    }
}
