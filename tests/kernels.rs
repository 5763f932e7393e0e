//! Every kernel table this CPU supports against the scalar reference on
//! random sizes: odd
//! widths, SIMD tails, 1-pixel images, padded strides, ROIs touching the
//! frame's edges. Integer outputs must be bit-exact; the float tensor may
//! differ by at most `TOL` relative (1e-5 of max(1, |value|)), which leaves
//! room for a future FMA path while catching any wrong tap or weight.
//!
//! Run on x86_64 (AVX2) by `cargo test`, and on aarch64 (NEON) under
//! qemu-user by `make test-aarch64`.

use lgms_edge::frame::Rect;
use lgms_edge::infer::preprocess::{ChannelOrder, Normalize};
use lgms_edge::kernels::{self, Kernels, YuvCoeffs, YuvMatrix, YuvRange};
use proptest::prelude::*;

const TOL: f32 = 1e-5;

/// Every native table this CPU supports (on a VNNI machine the AVX2 table
/// too, not only the preferred one).
fn natives() -> &'static [Kernels] {
    let all = kernels::supported();
    // The boards (aarch64: NEON) and the CI machine (x86_64: AVX2 + FMA)
    // always have a native table; a run without one would test nothing.
    assert!(
        all.len() > 1,
        "this CPU has no SIMD kernel table (x86_64 without AVX2 + FMA?)"
    );
    &all[1..]
}

fn matrices() -> impl Strategy<Value = YuvCoeffs> {
    (
        prop_oneof![Just(YuvMatrix::Bt601), Just(YuvMatrix::Bt709)],
        prop_oneof![Just(YuvRange::Limited), Just(YuvRange::Full)],
    )
        .prop_map(|(m, r)| YuvCoeffs::new(m, r))
}

/// Width, height, extra stride bytes, and enough random bytes for any plane.
fn image() -> impl Strategy<Value = (usize, usize, usize, Vec<u8>)> {
    (1usize..70, 1usize..7, 0usize..9).prop_flat_map(|(w, h, pad)| {
        let n = (w.div_ceil(2) * 4 + pad) * h;
        (
            Just(w),
            Just(h),
            Just(pad),
            proptest::collection::vec(any::<u8>(), n),
        )
    })
}

fn normalize() -> impl Strategy<Value = Normalize> {
    (
        any::<bool>(),
        [0f32..1.0, 0f32..1.0, 0f32..1.0],
        [0.05f32..1.0, 0.05f32..1.0, 0.05f32..1.0],
        prop_oneof![Just(1.0f32), Just(255.0)],
        prop_oneof![Just(1.0f32), Just(1.0 / 255.0)],
    )
        .prop_map(|(bgr, mean, std, max_pixel_value, extra_scale)| Normalize {
            channel_order: if bgr {
                ChannelOrder::Bgr
            } else {
                ChannelOrder::Rgb
            },
            mean,
            std,
            max_pixel_value,
            extra_scale,
        })
}

/// A frame, a ROI inside it and an output size.
fn resize_case() -> impl Strategy<Value = (usize, usize, Rect, usize, usize, Vec<u8>)> {
    (1usize..90, 1usize..40).prop_flat_map(|(w, h)| {
        (
            Just(w),
            Just(h),
            (0..w as u32, 0..h as u32).prop_flat_map(move |(x, y)| {
                (Just(x), Just(y), 1..=(w as u32 - x), 1..=(h as u32 - y))
                    .prop_map(|(x, y, rw, rh)| Rect { x, y, w: rw, h: rh })
            }),
            1usize..80,
            1usize..24,
            proptest::collection::vec(any::<u8>(), w * h * 3),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn yuyv_matches_scalar((w, h, pad, src) in image(), k in matrices()) {
        let stride = w.div_ceil(2) * 4 + pad;
        let mut a = vec![0u8; w * h * 3];
        kernels::scalar().yuyv_to_rgb(&src, stride, w, h, &k, &mut a);
        for t in natives() {
            let mut b = vec![1u8; w * h * 3];
            t.yuyv_to_rgb(&src, stride, w, h, &k, &mut b);
            prop_assert_eq!(&a, &b, "{}", t.name);
        }
    }

    #[test]
    fn nv12_matches_scalar((w, h, pad, src) in image(), k in matrices()) {
        let y_stride = w + pad;
        let uv_stride = w.div_ceil(2) * 2 + pad;
        let (yp, uv) = src.split_at(y_stride * h);
        prop_assume!(uv.len() >= uv_stride * h.div_ceil(2));
        let mut a = vec![0u8; w * h * 3];
        kernels::scalar().nv12_to_rgb(yp, y_stride, uv, uv_stride, w, h, &k, &mut a);
        for t in natives() {
            let mut b = vec![1u8; w * h * 3];
            t.nv12_to_rgb(yp, y_stride, uv, uv_stride, w, h, &k, &mut b);
            prop_assert_eq!(&a, &b, "{}", t.name);
        }
    }

    #[test]
    fn grey_matches_scalar((w, h, pad, src) in image(), k in matrices()) {
        let stride = w + pad;
        let mut a = vec![0u8; w * h * 3];
        kernels::scalar().grey_to_rgb(&src, stride, w, h, &k, &mut a);
        for t in natives() {
            let mut b = vec![1u8; w * h * 3];
            t.grey_to_rgb(&src, stride, w, h, &k, &mut b);
            prop_assert_eq!(&a, &b, "{}", t.name);
        }
    }

    #[test]
    fn blend_matches_scalar(span in proptest::collection::vec(any::<u8>(), 0..400), color: [u8; 3], alpha: u8) {
        let n = span.len() / 3 * 3;
        let mut a = span[..n].to_vec();
        kernels::scalar().blend_span(&mut a, color, alpha);
        for t in natives() {
            let mut b = span[..n].to_vec();
            t.blend_span(&mut b, color, alpha);
            prop_assert_eq!(&a, &b, "{}", t.name);
        }
    }

    #[test]
    fn resize_normalize_matches_scalar((w, h, roi, ow, oh, rgb) in resize_case(), n in normalize()) {
        let mut a = vec![0f32; 3 * ow * oh];
        kernels::scalar().resize_normalize(&rgb, w, h, roi, ow, oh, &n, &mut a);
        for t in natives() {
            let mut b = vec![f32::NAN; 3 * ow * oh];
            t.resize_normalize(&rgb, w, h, roi, ow, oh, &n, &mut b);
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                prop_assert!((x - y).abs() <= TOL * x.abs().max(1.0), "{} index {}: scalar {} simd {}", t.name, i, x, y);
            }
        }
    }

    #[test]
    fn logits_to_mask_matches_scalar(
        (lw, lh, logits) in (1usize..40, 1usize..12).prop_flat_map(|(w, h)| (Just(w), Just(h), proptest::collection::vec(-3f32..3.0, w * h))),
        ow in 1usize..90, oh in 1usize..16, thr in -1f32..1.0,
    ) {
        let mut a = vec![7u8; ow * oh];
        kernels::scalar().logits_to_mask(&logits, lw, lh, thr, ow, oh, &mut a);
        for t in natives() {
            let mut b = vec![9u8; ow * oh];
            t.logits_to_mask(&logits, lw, lh, thr, ow, oh, &mut b);
            prop_assert_eq!(&a, &b, "{}", t.name);
        }
    }
}

/// Every (Y, U, V) triple (2^24 of them) through the YUYV kernel, for each
/// matrix and range: the fixed-point maths agrees at every extreme, not only
/// on the random samples above.
#[test]
fn yuyv_every_code_value_matches_scalar() {
    let w = 512; // 256 pixel pairs: all Y0 values, with Y1 = 255 - Y0
    let mut src = Vec::with_capacity(w * 2 * 256 * 256);
    for u in 0..=255u8 {
        for v in 0..=255u8 {
            for y in 0..=255u8 {
                src.extend_from_slice(&[y, u, 255 - y, v]);
            }
        }
    }
    let h = 256 * 256;
    let (mut a, mut b) = (vec![0u8; w * h * 3], vec![1u8; w * h * 3]);
    for m in [YuvMatrix::Bt601, YuvMatrix::Bt709] {
        for r in [YuvRange::Limited, YuvRange::Full] {
            let k = YuvCoeffs::new(m, r);
            kernels::scalar().yuyv_to_rgb(&src, w * 2, w, h, &k, &mut a);
            // The pixel kernels are the same in every native table of an
            // architecture: the first one stands for all.
            let t = &natives()[0];
            t.yuyv_to_rgb(&src, w * 2, w, h, &k, &mut b);
            assert!(a == b, "{} {m:?} {r:?} differs", t.name);
        }
    }
}

#[test]
fn dispatched_entry_points_use_the_native_table_by_default() {
    if std::env::var("LGMS_KERNELS").as_deref() == Ok("scalar") {
        assert_eq!(kernels::best().name, "scalar");
    } else {
        let fastest = natives().last().map(|t| t.name);
        assert_eq!(Some(kernels::best().name), fastest);
    }
}
