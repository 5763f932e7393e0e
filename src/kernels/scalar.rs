//! The portable reference kernels: plain loops that say what each kernel
//! computes, and the generic table built from them and from each operator's
//! scalar kernel. The SIMD tables must agree with these (bit-exact for
//! integer outputs).
//!
//! Frame -> tensor and logits -> mask follow what the authors' data loader
//! does (OpenCV bilinear resize with half-pixel centres, albumentations
//! `Normalize`, then a second division), with every constant coming from the
//! model's metadata via [`Normalize`].

use super::{Kernels, YuvCoeffs};
use crate::frame::Rect;
use crate::infer::ops::{attention, conv1x1, conv3x3, dwconv, gelu, linear, qconv, upsample};
use crate::infer::preprocess::Normalize;

/// The generic table (see [`super::generic`]).
pub(super) const TABLE: Kernels = Kernels {
    name: "scalar",
    yuyv_to_rgb,
    nv12_to_rgb,
    grey_to_rgb,
    resize_normalize,
    logits_to_mask,
    blend_span,
    attention: attention::Kernel::SCALAR,
    conv1x1: conv1x1::Kernel::SCALAR,
    linear: linear::Kernel::SCALAR,
    gelu: gelu::Kernel::SCALAR,
    conv3x3: conv3x3::Kernel::SCALAR,
    dwconv: dwconv::Kernel::SCALAR,
    upsample: upsample::RowKernels::SCALAR,
    qconv: qconv::Kernel::SCALAR,
};

#[inline]
fn clamp8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// One pixel of the Q13 formula documented on [`YuvCoeffs`].
#[inline]
pub fn yuv_pixel(y: u8, u: u8, v: u8, k: &YuvCoeffs) -> [u8; 3] {
    let yt = (i32::from(y) - k.y_off) * k.y_mul + (1 << (YuvCoeffs::SHIFT - 1));
    let (u, v) = (i32::from(u) - 128, i32::from(v) - 128);
    [
        clamp8((yt + k.rv * v) >> YuvCoeffs::SHIFT),
        clamp8((yt - k.gu * u - k.gv * v) >> YuvCoeffs::SHIFT),
        clamp8((yt + k.bu * u) >> YuvCoeffs::SHIFT),
    ]
}

/// YUYV rows from pixel `x0` on (even) to the end of the row; shared with
/// the SIMD kernels for their tails.
#[inline]
pub fn yuyv_row(src: &[u8], width: usize, x0: usize, k: &YuvCoeffs, dst: &mut [u8]) {
    for x in x0..width {
        let m = &src[(x / 2) * 4..][..4];
        let y = if x % 2 == 0 { m[0] } else { m[2] };
        dst[x * 3..][..3].copy_from_slice(&yuv_pixel(y, m[1], m[3], k));
    }
}

/// NV12 row tail from pixel `x0` on (even).
#[inline]
pub fn nv12_row(y: &[u8], uv: &[u8], width: usize, x0: usize, k: &YuvCoeffs, dst: &mut [u8]) {
    for x in x0..width {
        let c = &uv[(x / 2) * 2..][..2];
        dst[x * 3..][..3].copy_from_slice(&yuv_pixel(y[x], c[0], c[1], k));
    }
}

/// Grey row tail from pixel `x0` on.
#[inline]
pub fn grey_row(src: &[u8], width: usize, x0: usize, k: &YuvCoeffs, dst: &mut [u8]) {
    for x in x0..width {
        dst[x * 3..][..3].copy_from_slice(&yuv_pixel(src[x], 128, 128, k));
    }
}

fn yuyv_to_rgb(
    src: &[u8],
    stride: usize,
    width: usize,
    height: usize,
    k: &YuvCoeffs,
    dst: &mut [u8],
) {
    for row in 0..height {
        yuyv_row(
            &src[row * stride..],
            width,
            0,
            k,
            &mut dst[row * width * 3..],
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn nv12_to_rgb(
    y: &[u8],
    y_stride: usize,
    uv: &[u8],
    uv_stride: usize,
    width: usize,
    height: usize,
    k: &YuvCoeffs,
    dst: &mut [u8],
) {
    for row in 0..height {
        let (yr, cr) = (&y[row * y_stride..], &uv[(row / 2) * uv_stride..]);
        nv12_row(yr, cr, width, 0, k, &mut dst[row * width * 3..]);
    }
}

fn grey_to_rgb(
    src: &[u8],
    stride: usize,
    width: usize,
    height: usize,
    k: &YuvCoeffs,
    dst: &mut [u8],
) {
    for row in 0..height {
        grey_row(
            &src[row * stride..],
            width,
            0,
            k,
            &mut dst[row * width * 3..],
        );
    }
}

/// The overlay's blend of one channel:
/// `round((alpha*over + (255-alpha)*under) / 255)` in integers.
#[inline]
pub fn blend_channel(under: u8, over: u8, alpha: u8) -> u8 {
    let a = u32::from(alpha);
    let v = a * u32::from(over) + (255 - a) * u32::from(under) + 128;
    ((v + (v >> 8)) >> 8) as u8
}

/// Scalar blend of a packed RGB run.
pub fn blend_span(span: &mut [u8], color: [u8; 3], alpha: u8) {
    for px in span.chunks_exact_mut(3) {
        for (under, over) in px.iter_mut().zip(color) {
            *under = blend_channel(*under, over, alpha);
        }
    }
}

/// Source coordinate and weights for one output sample of a bilinear resize
/// with half-pixel centres (OpenCV INTER_LINEAR, PyTorch align_corners=False).
#[inline]
pub fn bilinear_tap(dst: usize, scale: f32, src_len: usize) -> (usize, usize, f32) {
    let s = ((dst as f32 + 0.5) * scale - 0.5).max(0.0);
    let i0 = (s as usize).min(src_len - 1);
    let i1 = (i0 + 1).min(src_len - 1);
    (i0, i1, s - i0 as f32)
}

/// The preconditions every `resize_normalize` implementation (scalar, AVX2,
/// NEON) asserts before touching memory: `roi` inside the frame, buffer
/// sizes matching. Panics otherwise (a caller's bug; the engine checks the
/// ROI with a clear error first).
#[allow(clippy::too_many_arguments)]
pub fn check_resize_args(
    rgb: &[u8],
    width: usize,
    height: usize,
    roi: Rect,
    out_w: usize,
    out_h: usize,
    out: &[f32],
) {
    assert!(
        roi.fits_in(width as u32, height as u32),
        "roi outside frame"
    );
    // Checked products: a wrapped size must never pass.
    assert_eq!(
        Some(rgb.len()),
        super::volume(width, height, 3),
        "frame buffer size"
    );
    assert_eq!(
        Some(out.len()),
        super::volume(out_w, out_h, 3),
        "tensor size"
    );
}

/// Crops `roi` out of a packed RGB frame, resizes it bilinearly to
/// `out_w` x `out_h` and writes the normalised planar NCHW tensor into `out`
/// (`3 * out_w * out_h` floats), in one pass.
///
/// Panics if `roi` does not fit the frame or `out` has the wrong length: the
/// engine checks both once, when it is built.
#[allow(clippy::too_many_arguments)]
pub fn resize_normalize(
    rgb: &[u8],
    width: usize,
    height: usize,
    roi: Rect,
    out_w: usize,
    out_h: usize,
    norm: &Normalize,
    out: &mut [f32],
) {
    check_resize_args(rgb, width, height, roi, out_w, out_h, out);
    let (rx, ry, rw, rh) = (
        roi.x as usize,
        roi.y as usize,
        roi.w as usize,
        roi.h as usize,
    );
    let sx = rw as f32 / out_w as f32;
    let sy = rh as f32 / out_h as f32;
    let aff = norm.affine();
    let plane = out_w * out_h;
    for oy in 0..out_h {
        let (y0, y1, fy) = bilinear_tap(oy, sy, rh);
        let row0 = (ry + y0) * width * 3;
        let row1 = (ry + y1) * width * 3;
        for ox in 0..out_w {
            let (x0, x1, fx) = bilinear_tap(ox, sx, rw);
            let (c0, c1) = ((rx + x0) * 3, (rx + x1) * 3);
            for (c, &(scale, offset, src)) in aff.iter().enumerate() {
                let p00 = rgb[row0 + c0 + src] as f32;
                let p01 = rgb[row0 + c1 + src] as f32;
                let p10 = rgb[row1 + c0 + src] as f32;
                let p11 = rgb[row1 + c1 + src] as f32;
                let top = p00 + (p01 - p00) * fx;
                let bot = p10 + (p11 - p10) * fx;
                let p = top + (bot - top) * fy;
                out[c * plane + oy * out_w + ox] = p * scale + offset;
            }
        }
    }
}

/// Upsamples single-channel logits (`lw` x `lh`) bilinearly to
/// `out_w` x `out_h` and thresholds them: `out = 1` where the interpolated
/// logit is above `threshold`. Interpolating logits before thresholding
/// gives smooth mask edges at the ROI's resolution.
#[allow(clippy::too_many_arguments)]
pub fn logits_to_mask(
    logits: &[f32],
    lw: usize,
    lh: usize,
    threshold: f32,
    out_w: usize,
    out_h: usize,
    out: &mut [u8],
) {
    super::assert_logits(logits, lw, lh, out, out_w, out_h);
    let sx = lw as f32 / out_w as f32;
    let sy = lh as f32 / out_h as f32;
    for oy in 0..out_h {
        let (y0, y1, fy) = bilinear_tap(oy, sy, lh);
        let (r0, r1) = (&logits[y0 * lw..][..lw], &logits[y1 * lw..][..lw]);
        for ox in 0..out_w {
            let (x0, x1, fx) = bilinear_tap(ox, sx, lw);
            let top = r0[x0] + (r0[x1] - r0[x0]) * fx;
            let bot = r1[x0] + (r1[x1] - r1[x0]) * fx;
            out[oy * out_w + ox] = u8::from(top + (bot - top) * fy > threshold);
        }
    }
}

/// One output row of [`resize_normalize`] over columns
/// `ox_start..ox_end`, with the same float operations in the same order;
/// SIMD kernels use it for the columns they leave out.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn resize_row(
    rgb: &[u8],
    row0: usize,
    row1: usize,
    fy: f32,
    rx: usize,
    rw: usize,
    sx: f32,
    aff: &[(f32, f32, usize); 3],
    cols: std::ops::Range<usize>,
    out_row: [&mut [f32]; 3],
) {
    let [o0, o1, o2] = out_row;
    for ox in cols {
        let (x0, x1, fx) = bilinear_tap(ox, sx, rw);
        let (c0, c1) = ((rx + x0) * 3, (rx + x1) * 3);
        let mut v = [0f32; 3];
        for (c, &(scale, offset, src)) in aff.iter().enumerate() {
            let p00 = rgb[row0 + c0 + src] as f32;
            let p01 = rgb[row0 + c1 + src] as f32;
            let p10 = rgb[row1 + c0 + src] as f32;
            let p11 = rgb[row1 + c1 + src] as f32;
            let top = p00 + (p01 - p00) * fx;
            let bot = p10 + (p11 - p10) * fx;
            let p = top + (bot - top) * fy;
            v[c] = p * scale + offset;
        }
        o0[ox] = v[0];
        o1[ox] = v[1];
        o2[ox] = v[2];
    }
}

/// One output row of [`logits_to_mask`] over `cols`.
#[inline]
pub fn mask_row(
    r0: &[f32],
    r1: &[f32],
    fy: f32,
    sx: f32,
    threshold: f32,
    cols: std::ops::Range<usize>,
    out: &mut [u8],
) {
    for ox in cols {
        let (x0, x1, fx) = bilinear_tap(ox, sx, r0.len());
        let top = r0[x0] + (r0[x1] - r0[x0]) * fx;
        let bot = r1[x0] + (r1[x1] - r1[x0]) * fx;
        out[ox] = u8::from(top + (bot - top) * fy > threshold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::preprocess::ChannelOrder;

    #[test]
    fn blend_rounds_to_nearest_for_every_input() {
        for a in 0..=255u32 {
            for o in (0..=255u32).step_by(5) {
                for u in 0..=255u32 {
                    let exact = (a * o + (255 - a) * u) as f64 / 255.0;
                    let got = blend_channel(u as u8, o as u8, a as u8);
                    assert_eq!(got, exact.round() as u8, "a={a} o={o} u={u}");
                }
            }
        }
    }

    #[test]
    fn yuv_pixel_matches_float_formula_within_one() {
        // The Q13 integer formula against the textbook float conversion.
        for (m, r) in [
            (
                super::super::YuvMatrix::Bt601,
                super::super::YuvRange::Limited,
            ),
            (super::super::YuvMatrix::Bt709, super::super::YuvRange::Full),
        ] {
            let k = YuvCoeffs::new(m, r);
            let s = 8192.0;
            for (y, u, v) in [
                (16u8, 128u8, 128u8),
                (100, 50, 200),
                (235, 240, 16),
                (180, 10, 250),
            ] {
                let yf = (f64::from(y) - f64::from(k.y_off)) * f64::from(k.y_mul) / s;
                let (uf, vf) = (f64::from(u) - 128.0, f64::from(v) - 128.0);
                let want = [
                    yf + f64::from(k.rv) / s * vf,
                    yf - f64::from(k.gu) / s * uf - f64::from(k.gv) / s * vf,
                    yf + f64::from(k.bu) / s * uf,
                ];
                let got = yuv_pixel(y, u, v, &k);
                for c in 0..3 {
                    let w = want[c].clamp(0.0, 255.0);
                    assert!(
                        (f64::from(got[c]) - w).abs() <= 0.5 + 1e-9,
                        "{y} {u} {v}: {got:?} vs {want:?}"
                    );
                }
            }
        }
    }

    fn authors() -> Normalize {
        Normalize {
            channel_order: ChannelOrder::Bgr,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            max_pixel_value: 255.0,
            extra_scale: 1.0 / 255.0,
        }
    }

    #[test]
    fn identity_size_applies_authors_formula_in_bgr() {
        // 2x1 frame, two distinct pixels; same output size: no interpolation.
        let rgb = [10u8, 20, 30, 200, 100, 50];
        let mut out = vec![0.0; 6];
        let n = authors();
        resize_normalize(&rgb, 2, 1, Rect::full(2, 1), 2, 1, &n, &mut out);
        // Channel 0 is blue (the frame's third component), as cv2 gives it.
        let expect = |p: f32, c: usize| (p - 255.0 * n.mean[c]) / (255.0 * n.std[c]) / 255.0;
        assert!((out[0] - expect(30.0, 0)).abs() < 1e-7);
        assert!((out[1] - expect(50.0, 0)).abs() < 1e-7);
        assert!((out[2] - expect(20.0, 1)).abs() < 1e-7);
        assert!((out[4] - expect(10.0, 2)).abs() < 1e-7);
        assert!((out[5] - expect(200.0, 2)).abs() < 1e-7);
    }

    #[test]
    fn half_pixel_centres_match_opencv() {
        // Downscale 4 -> 2 with half-pixel centres samples at 0.5 and 2.5:
        // the mean of pixel pairs, as cv2.resize(INTER_LINEAR) gives.
        let row: Vec<u8> = [0u8, 100, 200, 255]
            .iter()
            .flat_map(|&v| [v, v, v])
            .collect();
        let mut out = vec![0.0; 6];
        let n = Normalize {
            channel_order: ChannelOrder::Rgb,
            mean: [0.0; 3],
            std: [1.0; 3],
            max_pixel_value: 1.0,
            extra_scale: 1.0,
        };
        resize_normalize(&row, 4, 1, Rect::full(4, 1), 2, 1, &n, &mut out);
        assert_eq!(&out[..2], &[50.0, 227.5]);
        // Upscale 2 -> 4: samples at -0.25 (clamped), 0.25, 0.75, 1.25 (clamped).
        let row2: Vec<u8> = [0u8, 100].iter().flat_map(|&v| [v, v, v]).collect();
        let mut up = vec![0.0; 12];
        resize_normalize(&row2, 2, 1, Rect::full(2, 1), 4, 1, &n, &mut up);
        assert_eq!(&up[..4], &[0.0, 25.0, 75.0, 100.0]);
    }

    #[test]
    fn roi_crops_before_resizing() {
        // 3x1 frame; ROI is the last pixel only.
        let rgb = [0u8, 0, 0, 0, 0, 0, 9, 8, 7];
        let mut out = vec![0.0; 3];
        let n = Normalize {
            channel_order: ChannelOrder::Rgb,
            mean: [0.0; 3],
            std: [1.0; 3],
            max_pixel_value: 1.0,
            extra_scale: 1.0,
        };
        resize_normalize(
            &rgb,
            3,
            1,
            Rect {
                x: 2,
                y: 0,
                w: 1,
                h: 1,
            },
            1,
            1,
            &n,
            &mut out,
        );
        assert_eq!(out, vec![9.0, 8.0, 7.0]);
    }

    #[test]
    fn mask_threshold_and_upscale() {
        // Logits 2x2: one positive corner; upscaled 4x4 keeps it in its quadrant.
        let logits = [5.0, -5.0, -5.0, -5.0];
        let mut m = vec![0u8; 16];
        logits_to_mask(&logits, 2, 2, 0.0, 4, 4, &mut m);
        #[rustfmt::skip]
        let expect = [1, 1, 0, 0,
                      1, 1, 0, 0,
                      0, 0, 0, 0,
                      0, 0, 0, 0];
        assert_eq!(m, expect);
        // Threshold is strict: a logit equal to it is background (sigmoid 0.5).
        let mut one = [9u8];
        logits_to_mask(&[0.0], 1, 1, 0.0, 1, 1, &mut one);
        assert_eq!(one[0], 0);
    }
}
