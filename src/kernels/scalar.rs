//! The portable reference kernels: plain loops that say what each kernel
//! computes. The SIMD tables must agree with these (bit-exact for integer
//! outputs). Frame -> tensor and logits -> mask are the references in
//! [`crate::infer::preprocess`].

use super::{Kernels, YuvCoeffs};
use crate::infer::preprocess;

/// The scalar table.
pub static KERNELS: Kernels = Kernels {
    name: "scalar",
    yuyv_to_rgb,
    nv12_to_rgb,
    grey_to_rgb,
    resize_normalize: preprocess::resize_normalize,
    logits_to_mask: preprocess::logits_to_mask,
    blend_span,
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

/// One output row of [`preprocess::resize_normalize`] over columns
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
        let (x0, x1, fx) = preprocess::bilinear_tap(ox, sx, rw);
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

/// One output row of [`preprocess::logits_to_mask`] over `cols`.
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
        let (x0, x1, fx) = preprocess::bilinear_tap(ox, sx, r0.len());
        let top = r0[x0] + (r0[x1] - r0[x0]) * fx;
        let bot = r1[x0] + (r1[x1] - r1[x0]) * fx;
        out[ox] = u8::from(top + (bot - top) * fy > threshold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
