//! NEON kernels (aarch64) and the aarch64 tables: [`plug`] adds them, with
//! the operators' NEON and `sdot` kernels, after detecting the features.
//! NEON (Advanced SIMD) is part of the aarch64 base ISA, so every board has
//! it; it is still detected, as every feature a table needs is.
//!
//! The entries below are private: [`plug`] is the only place that puts them
//! in a table. Each checks its buffer sizes with `assert!` (the dispatching
//! wrappers have already checked them) and then uses vector loads and stores
//! inside the ranges those asserts establish.

use std::arch::aarch64::*;

use super::cpu::{DotProd, Neon};
use super::scalar::{self, bilinear_tap, blend_channel, check_resize_args};
use super::{Kernels, YuvCoeffs};
use crate::frame::Rect;
use crate::infer::ops::{attention, conv1x1, conv3x3, dwconv, gelu, linear, qconv, upsample};
use crate::infer::preprocess::Normalize;

/// Appends this CPU's aarch64 tables to `tables` (whose first entry is the
/// generic table): NEON, with the int8 conv on the widening kernel (every
/// aarch64 core, the Pi 4's Cortex-A72 included), then the same with the
/// int8 conv on `sdot` where the CPU has the dot-product extension.
pub(super) fn plug(tables: &mut Vec<Kernels>) {
    let Some(neon) = Neon::detect() else {
        return;
    };
    let t = Kernels {
        name: "neon",
        yuyv_to_rgb,
        nv12_to_rgb,
        grey_to_rgb,
        resize_normalize,
        logits_to_mask,
        blend_span,
        attention: attention::Kernel::neon(neon),
        conv1x1: conv1x1::Kernel::neon(neon),
        linear: linear::Kernel::neon(neon),
        gelu: gelu::Kernel::neon(neon),
        conv3x3: conv3x3::Kernel::neon(neon),
        dwconv: dwconv::Kernel::neon(neon),
        upsample: upsample::RowKernels::neon(neon),
        qconv: qconv::Kernel::neon_widening(neon),
    };
    tables.push(t);
    if let Some(dot) = DotProd::detect() {
        tables.push(Kernels {
            name: "neon+dotprod",
            qconv: qconv::Kernel::neon_dot(dot),
            ..t
        });
    }
}

/// Converts 8 pixels (Y, and chroma already repeated per pixel) with the
/// Q13 formula of [`YuvCoeffs`] in 32-bit lanes; returns R, G, B.
#[inline]
#[target_feature(enable = "neon")]
fn yuv8(y: uint8x8_t, u: uint8x8_t, v: uint8x8_t, k: &YuvCoeffs) -> [uint8x8_t; 3] {
    let y = vsubq_s16(
        vreinterpretq_s16_u16(vmovl_u8(y)),
        vdupq_n_s16(k.y_off as i16),
    );
    let c128 = vdupq_n_s16(128);
    let u = vsubq_s16(vreinterpretq_s16_u16(vmovl_u8(u)), c128);
    let v = vsubq_s16(vreinterpretq_s16_u16(vmovl_u8(v)), c128);
    let round = vdupq_n_s32(1 << (YuvCoeffs::SHIFT - 1));
    let (ym, rv, gu, gv, bu) = (
        k.y_mul as i16,
        k.rv as i16,
        k.gu as i16,
        k.gv as i16,
        k.bu as i16,
    );
    const S: i32 = YuvCoeffs::SHIFT as i32;
    let half = |y: int16x4_t, u: int16x4_t, v: int16x4_t| {
        let yt = vmlal_n_s16(round, y, ym);
        let r = vshrq_n_s32::<S>(vmlal_n_s16(yt, v, rv));
        let g = vshrq_n_s32::<S>(vmlsl_n_s16(vmlsl_n_s16(yt, u, gu), v, gv));
        let b = vshrq_n_s32::<S>(vmlal_n_s16(yt, u, bu));
        [vqmovun_s32(r), vqmovun_s32(g), vqmovun_s32(b)]
    };
    let lo = half(vget_low_s16(y), vget_low_s16(u), vget_low_s16(v));
    let hi = half(vget_high_s16(y), vget_high_s16(u), vget_high_s16(v));
    // Saturating narrows: i32 -> u16 clamps below 0, u16 -> u8 above 255.
    std::array::from_fn(|c| vqmovn_u16(vcombine_u16(lo[c], hi[c])))
}

/// Converts 16 pixels given as even/odd Y and their 8 shared chroma pairs,
/// storing 48 RGB bytes at `dst`.
///
/// # Safety
/// `dst..dst + 48` must be writable.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn yuv16(
    ye: uint8x8_t,
    yo: uint8x8_t,
    u: uint8x8_t,
    v: uint8x8_t,
    k: &YuvCoeffs,
    dst: *mut u8,
) {
    let e = yuv8(ye, u, v, k);
    let o = yuv8(yo, u, v, k);
    let z = |c: usize| {
        let p = vzip_u8(e[c], o[c]);
        vcombine_u8(p.0, p.1)
    };
    // SAFETY: the caller guarantees 48 writable bytes.
    unsafe { vst3q_u8(dst, uint8x16x3_t(z(0), z(1), z(2))) };
}

fn yuyv_to_rgb(
    src: &[u8],
    stride: usize,
    width: usize,
    height: usize,
    k: &YuvCoeffs,
    dst: &mut [u8],
) {
    super::assert_yuyv(src, stride, width, height, dst);
    // SAFETY: only `plug` reaches this function, after detecting NEON;
    // sizes checked above.
    unsafe { yuyv_neon(src, stride, width, height, k, dst) }
}

#[target_feature(enable = "neon")]
unsafe fn yuyv_neon(
    src: &[u8],
    stride: usize,
    width: usize,
    height: usize,
    k: &YuvCoeffs,
    dst: &mut [u8],
) {
    for r in 0..height {
        let s = &src[r * stride..];
        let d = &mut dst[r * width * 3..][..width * 3];
        let mut x = 0;
        while x + 16 <= width {
            // SAFETY: x + 16 <= width: the 32 source bytes at 2x are inside the
            // row, the 48 output bytes at 3x inside the output row.
            unsafe {
                let m = vld4_u8(s.as_ptr().add(x * 2));
                yuv16(m.0, m.2, m.1, m.3, k, d.as_mut_ptr().add(x * 3));
            }
            x += 16;
        }
        scalar::yuyv_row(s, width, x, k, d);
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
    super::assert_nv12(y, y_stride, uv, uv_stride, width, height, dst);
    // SAFETY: only `plug` reaches this function, after detecting NEON;
    // sizes checked above.
    unsafe { nv12_neon(y, y_stride, uv, uv_stride, width, height, k, dst) }
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "neon")]
unsafe fn nv12_neon(
    y: &[u8],
    y_stride: usize,
    uv: &[u8],
    uv_stride: usize,
    width: usize,
    height: usize,
    k: &YuvCoeffs,
    dst: &mut [u8],
) {
    for r in 0..height {
        let (yr, cr) = (&y[r * y_stride..], &uv[(r / 2) * uv_stride..]);
        let d = &mut dst[r * width * 3..][..width * 3];
        let mut x = 0;
        while x + 16 <= width {
            // SAFETY: x + 16 <= width: 16 Y bytes at x and 16 CbCr bytes at x
            // (x even: 8 pairs) are inside their rows; 48 output bytes at 3x.
            unsafe {
                let yy = vld2_u8(yr.as_ptr().add(x));
                let cc = vld2_u8(cr.as_ptr().add(x));
                yuv16(yy.0, yy.1, cc.0, cc.1, k, d.as_mut_ptr().add(x * 3));
            }
            x += 16;
        }
        scalar::nv12_row(yr, cr, width, x, k, d);
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
    super::assert_grey(src, stride, width, height, dst);
    // SAFETY: only `plug` reaches this function, after detecting NEON;
    // sizes checked above.
    unsafe { grey_neon(src, stride, width, height, k, dst) }
}

#[target_feature(enable = "neon")]
unsafe fn grey_neon(
    src: &[u8],
    stride: usize,
    width: usize,
    height: usize,
    k: &YuvCoeffs,
    dst: &mut [u8],
) {
    let neutral = vdup_n_u8(128);
    for r in 0..height {
        let s = &src[r * stride..];
        let d = &mut dst[r * width * 3..][..width * 3];
        let mut x = 0;
        while x + 16 <= width {
            // SAFETY: x + 16 <= width bounds the 16-byte load and 48-byte store.
            unsafe {
                let yy = vld2_u8(s.as_ptr().add(x));
                yuv16(yy.0, yy.1, neutral, neutral, k, d.as_mut_ptr().add(x * 3));
            }
            x += 16;
        }
        scalar::grey_row(s, width, x, k, d);
    }
}

fn blend_span(span: &mut [u8], color: [u8; 3], alpha: u8) {
    // SAFETY: only `plug` reaches this function, after detecting NEON.
    unsafe { blend_neon(span, color, alpha) }
}

#[target_feature(enable = "neon")]
unsafe fn blend_neon(span: &mut [u8], color: [u8; 3], alpha: u8) {
    let a = u16::from(alpha);
    let bias: [uint16x8_t; 3] = std::array::from_fn(|c| vdupq_n_u16(a * u16::from(color[c]) + 128));
    let ia = vdup_n_u8(255 - alpha);
    let n = span.len() / 48 * 48;
    let (body, tail) = span.split_at_mut(n);
    for chunk in body.chunks_exact_mut(48) {
        // SAFETY: 48 bytes = 16 pixels, read and written in place.
        unsafe {
            let px = vld3q_u8(chunk.as_ptr());
            let one = |under: uint8x16_t, b: uint16x8_t| {
                // (255 - a) * under + a * over + 128 <= 65153: fits u16.
                let half = |u: uint8x8_t| {
                    let v = vmlal_u8(b, u, ia);
                    vshrn_n_u16::<8>(vaddq_u16(v, vshrq_n_u16::<8>(v)))
                };
                vcombine_u8(half(vget_low_u8(under)), half(vget_high_u8(under)))
            };
            let out = uint8x16x3_t(one(px.0, bias[0]), one(px.1, bias[1]), one(px.2, bias[2]));
            vst3q_u8(chunk.as_mut_ptr(), out);
        }
    }
    for px in tail.chunks_exact_mut(3) {
        for (under, over) in px.iter_mut().zip(color) {
            *under = blend_channel(*under, over, alpha);
        }
    }
}

/// Taps of 4 consecutive output columns from `ox`, with the same float
/// operations as [`bilinear_tap`] (identical indices and weights).
#[inline]
#[target_feature(enable = "neon")]
fn taps4(ox: usize, scale: float32x4_t, last: uint32x4_t) -> (uint32x4_t, uint32x4_t, float32x4_t) {
    let lanes: [u32; 4] = [0, 1, 2, 3];
    // SAFETY: reads the 4-element array above.
    let d = vaddq_u32(vdupq_n_u32(ox as u32), unsafe { vld1q_u32(lanes.as_ptr()) });
    let s = vsubq_f32(
        vmulq_f32(vaddq_f32(vcvtq_f32_u32(d), vdupq_n_f32(0.5)), scale),
        vdupq_n_f32(0.5),
    );
    let s = vmaxq_f32(s, vdupq_n_f32(0.0));
    let i0 = vminq_u32(vcvtq_u32_f32(s), last);
    let i1 = vminq_u32(vaddq_u32(i0, vdupq_n_u32(1)), last);
    (i0, i1, vsubq_f32(s, vcvtq_f32_u32(i0)))
}

#[allow(clippy::too_many_arguments)]
fn resize_normalize(
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
    // SAFETY: only `plug` reaches this function, after detecting NEON;
    // sizes checked above.
    unsafe { resize_neon(rgb, width, roi, out_w, out_h, norm, out) }
}

#[target_feature(enable = "neon")]
unsafe fn resize_neon(
    rgb: &[u8],
    width: usize,
    roi: Rect,
    out_w: usize,
    out_h: usize,
    norm: &Normalize,
    out: &mut [f32],
) {
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
    let simd_cols = out_w / 4 * 4;
    let scale = vdupq_n_f32(sx);
    let last = vdupq_n_u32(rw as u32 - 1);
    let (o0, rest) = out.split_at_mut(plane);
    let (o1, o2) = rest.split_at_mut(plane);
    for oy in 0..out_h {
        let (y0, y1, fy) = bilinear_tap(oy, sy, rh);
        let row0 = &rgb[(ry + y0) * width * 3..][..width * 3];
        let row1 = &rgb[(ry + y1) * width * 3..][..width * 3];
        let fyv = vdupq_n_f32(fy);
        let rows = [
            &mut o0[oy * out_w..][..out_w],
            &mut o1[oy * out_w..][..out_w],
            &mut o2[oy * out_w..][..out_w],
        ];
        let mut ox = 0;
        while ox < simd_cols {
            let (i0, i1, fx) = taps4(ox, scale, last);
            let (mut x0, mut x1) = ([0u32; 4], [0u32; 4]);
            // SAFETY: stores 4 lanes into 4-element arrays.
            unsafe {
                vst1q_u32(x0.as_mut_ptr(), i0);
                vst1q_u32(x1.as_mut_ptr(), i1);
            }
            // NEON has no gather: collect the 4 columns' corners channel-major
            // (bytes R0..R3 G0..G3 B0..B3) so each widens to float lanes.
            let mut q = [[0u8; 16]; 4];
            for j in 0..4 {
                let (c0, c1) = ((rx + x0[j] as usize) * 3, (rx + x1[j] as usize) * 3);
                for s in 0..3 {
                    q[0][4 * s + j] = row0[c0 + s];
                    q[1][4 * s + j] = row0[c1 + s];
                    q[2][4 * s + j] = row1[c0 + s];
                    q[3][4 * s + j] = row1[c1 + s];
                }
            }
            let f: [[float32x4_t; 3]; 4] = std::array::from_fn(|n| {
                // SAFETY: reads a 16-byte array.
                let b = unsafe { vld1q_u8(q[n].as_ptr()) };
                let lo = vmovl_u8(vget_low_u8(b));
                let hi = vmovl_u8(vget_high_u8(b));
                [
                    vcvtq_f32_u32(vmovl_u16(vget_low_u16(lo))),
                    vcvtq_f32_u32(vmovl_u16(vget_high_u16(lo))),
                    vcvtq_f32_u32(vmovl_u16(vget_low_u16(hi))),
                ]
            });
            for (c, &(sc, of, src)) in aff.iter().enumerate() {
                let (p00, p01, p10, p11) = (f[0][src], f[1][src], f[2][src], f[3][src]);
                let top = vaddq_f32(p00, vmulq_f32(vsubq_f32(p01, p00), fx));
                let bot = vaddq_f32(p10, vmulq_f32(vsubq_f32(p11, p10), fx));
                let p = vaddq_f32(top, vmulq_f32(vsubq_f32(bot, top), fyv));
                let v = vaddq_f32(vmulq_f32(p, vdupq_n_f32(sc)), vdupq_n_f32(of));
                // SAFETY: ox + 4 <= simd_cols <= out_w, the row's length.
                unsafe { vst1q_f32(rows[c].as_mut_ptr().add(ox), v) };
            }
            ox += 4;
        }
        let (r0, r1) = ((ry + y0) * width * 3, (ry + y1) * width * 3);
        scalar::resize_row(rgb, r0, r1, fy, rx, rw, sx, &aff, ox..out_w, rows);
    }
}

fn logits_to_mask(
    logits: &[f32],
    lw: usize,
    lh: usize,
    threshold: f32,
    out_w: usize,
    out_h: usize,
    out: &mut [u8],
) {
    super::assert_logits(logits, lw, lh, out, out_w, out_h);
    // SAFETY: only `plug` reaches this function, after detecting NEON;
    // sizes checked above.
    unsafe { mask_neon(logits, lw, lh, threshold, out_w, out_h, out) }
}

#[target_feature(enable = "neon")]
unsafe fn mask_neon(
    logits: &[f32],
    lw: usize,
    lh: usize,
    threshold: f32,
    out_w: usize,
    out_h: usize,
    out: &mut [u8],
) {
    let sx = lw as f32 / out_w as f32;
    let sy = lh as f32 / out_h as f32;
    let scale = vdupq_n_f32(sx);
    let last = vdupq_n_u32(lw as u32 - 1);
    let thr = vdupq_n_f32(threshold);
    let one = vdupq_n_u32(1);
    let simd_cols = out_w / 4 * 4;
    for oy in 0..out_h {
        let (y0, y1, fy) = bilinear_tap(oy, sy, lh);
        let (r0, r1) = (&logits[y0 * lw..][..lw], &logits[y1 * lw..][..lw]);
        let fyv = vdupq_n_f32(fy);
        let orow = &mut out[oy * out_w..][..out_w];
        let mut ox = 0;
        while ox < simd_cols {
            let (i0, i1, fx) = taps4(ox, scale, last);
            let (mut x0, mut x1) = ([0u32; 4], [0u32; 4]);
            // SAFETY: stores 4 lanes into 4-element arrays.
            unsafe {
                vst1q_u32(x0.as_mut_ptr(), i0);
                vst1q_u32(x1.as_mut_ptr(), i1);
            }
            let g = |r: &[f32], x: &[u32; 4]| {
                let t = [
                    r[x[0] as usize],
                    r[x[1] as usize],
                    r[x[2] as usize],
                    r[x[3] as usize],
                ];
                // SAFETY: reads a 4-element array.
                unsafe { vld1q_f32(t.as_ptr()) }
            };
            let (a0, a1, b0, b1) = (g(r0, &x0), g(r0, &x1), g(r1, &x0), g(r1, &x1));
            let top = vaddq_f32(a0, vmulq_f32(vsubq_f32(a1, a0), fx));
            let bot = vaddq_f32(b0, vmulq_f32(vsubq_f32(b1, b0), fx));
            let v = vaddq_f32(top, vmulq_f32(vsubq_f32(bot, top), fyv));
            let m = vandq_u32(vcgtq_f32(v, thr), one);
            let m16 = vmovn_u32(m);
            let m8 = vmovn_u16(vcombine_u16(m16, m16));
            let bytes = vget_lane_u32::<0>(vreinterpret_u32_u8(m8)).to_le_bytes();
            orow[ox..ox + 4].copy_from_slice(&bytes);
            ox += 4;
        }
        scalar::mask_row(r0, r1, fy, sx, threshold, ox..out_w, orow);
    }
}
