//! Our tract operators (src/ops) against tract's stock graph and against
//! their scalar reference kernels.

use lgms_edge::engine::{Engine, LoadOptions, Model};
use lgms_edge::ops::{self, attention, conv1x1, graphs, upsample};
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
    out[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
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

/// Random query/key/value blocks: every SIMD kernel against the scalar one.
fn attend_all(m: usize, n: usize, d: usize, dv: usize, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut gen =
        |len: usize, amp: f32| -> Vec<f32> { (0..len).map(|_| rng.gen_range(-amp..amp)).collect() };
    let qs = gen(m * d, 3.0);
    let kt = gen(d * n, 3.0);
    let vt = gen(dv * n, 1.0);
    let mut row = vec![0.0; n];
    let mut want = vec![0.0; m * dv];
    attention::attend_scalar(&qs, &kt, &vt, m, n, d, dv, &mut row, &mut want);
    if let Some((name, k)) = attention::simd_kernel() {
        let mut got = vec![0.0; m * dv];
        k(&qs, &kt, &vt, m, n, d, dv, &mut row, &mut got);
        let diff = max_abs_diff(&want, &got);
        assert!(diff < 1e-5, "{name} m={m} n={n} d={d} dv={dv}: {diff:e}");
    }
}

#[test]
fn attention_kernels_at_lgmsnet_sizes() {
    attend_all(32, 1024, 8, 8, 7);
    attend_all(16, 256, 8, 8, 8);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn attention_kernels_match_scalar(m in 1usize..6, n in 1usize..70, d in 1usize..12,
                                      dv in 1usize..10, seed in 0u64..1000) {
        attend_all(m, n, d, dv, seed);
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
        upsample::upsample_plane(upsample::SCALAR, &src, h, w, &mut rows, &mut want);
        if let Some(k) = upsample::simd_kernels() {
            let mut got = vec![0.0; 4 * h * w];
            upsample::upsample_plane(k, &src, h, w, &mut rows, &mut got);
            let diff = max_abs_diff(&want, &got);
            prop_assert!(diff < 1e-6, "{} {h}x{w}: {diff:e}", k.name);
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn conv1x1_kernels_match_scalar(i in 1usize..20, o in 1usize..11, p in 1usize..700,
                                    seed in 0u64..1000) {
        let w = graphs::pseudo_random(o * i, seed);
        let b = graphs::pseudo_random(o, seed + 1);
        let x = graphs::pseudo_random(i * p, seed + 2);
        let mut want = vec![0.0; o * p];
        conv1x1::conv_scalar(&w, &b, &x, i, p, 0, o, &mut want);
        if let Some((name, k)) = conv1x1::simd_kernel() {
            let mut got = vec![0.0; o * p];
            k(&w, &b, &x, i, p, 0, o, &mut got);
            let diff = max_abs_diff(&want, &got);
            prop_assert!(diff < 1e-5, "{} i={} o={} p={}: {:e}", name, i, o, p, diff);
            // A block of channels in the middle writes only its own rows.
            if o > 2 {
                let mut part = vec![0.0; (o - 2) * p];
                k(&w, &b, &x, i, p, 1, o - 2, &mut part);
                let diff = max_abs_diff(&want[p..(o - 1) * p], &part);
                prop_assert!(diff < 1e-5, "{} channels 1..{}: {:e}", name, o - 1, diff);
            }
        }
    }
}

fn logits(path: &str, opts: &LoadOptions, input: &[f32]) -> (Vec<f32>, ops::Substitutions) {
    let model = Model::load(std::path::Path::new(path), opts).unwrap();
    let subs = model.info().substitutions;
    let mut engine = Engine::new(model).unwrap();
    (engine.run_tensor(input).unwrap().to_vec(), subs)
}

/// The bundled network: every attention and upsampling is substituted, and
/// the logits stay within the parity tolerance of tract's stock graph, on
/// one thread and on two (blocks then run on tract's pool).
#[test]
fn bundled_model_with_our_ops_matches_stock_graph() {
    let path = "models/lgmsnet-phantom-us.f32.onnx";
    let input: Vec<f32> = std::fs::read("models/parity/image0.input.f32")
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let stock = LoadOptions {
        stock: true,
        ..LoadOptions::default()
    };
    let (want, none) = logits(path, &stock, &input);
    assert_eq!(none, ops::Substitutions::default());
    let (got, subs) = logits(path, &LoadOptions::default(), &input);
    assert_eq!(
        subs,
        ops::Substitutions {
            attention: 4,
            upsample: 4,
            conv1x1: 8
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
