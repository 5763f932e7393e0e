//! AVX2 kernels (x86_64) and the x86_64 tables: [`plug`] adds them, with
//! the operators' AVX2 + FMA and VNNI kernels, after detecting the features.
//!
//! The entries below are private: [`plug`] is the only place that puts them
//! in a table, after [`Avx2Fma::detect`]. Each one checks its buffer sizes
//! with `assert!` (the dispatching wrappers have already checked them, so
//! these never fire in use) and then calls a
//! `#[target_feature(enable = "avx2")]` body. Vector loads and stores stay
//! inside the ranges those asserts establish; the comments at each loop say
//! why.

use std::arch::x86_64::*;

use super::cpu::{Avx2Fma, Avx512Vnni, AvxVnni};
use super::scalar::{self, bilinear_tap, blend_channel, check_resize_args};
use super::{Kernels, YuvCoeffs};
use crate::frame::Rect;
use crate::infer::ops::{attention, conv1x1, conv3x3, dwconv, gelu, linear, qconv, upsample};
use crate::infer::preprocess::Normalize;

/// Appends this CPU's x86_64 tables to `tables` (whose first entry is the
/// generic table): AVX2 + FMA for everything, then the same with the int8
/// conv on AVX-VNNI and on AVX-512 VNNI, each where the CPU has it.
pub(super) fn plug(tables: &mut Vec<Kernels>) {
    let Some(avx2) = Avx2Fma::detect() else {
        return;
    };
    let t = Kernels {
        name: "avx2",
        yuyv_to_rgb,
        nv12_to_rgb,
        grey_to_rgb,
        resize_normalize,
        logits_to_mask,
        blend_span,
        attention: attention::Kernel::avx2(avx2),
        conv1x1: conv1x1::Kernel::avx2(avx2),
        linear: linear::Kernel::avx2(avx2),
        gelu: gelu::Kernel::avx2(avx2),
        conv3x3: conv3x3::Kernel::avx2(avx2),
        dwconv: dwconv::Kernel::avx2(avx2),
        upsample: upsample::RowKernels::avx2(avx2),
        qconv: qconv::Kernel::avx2(avx2),
    };
    tables.push(t);
    if let Some(vnni) = AvxVnni::detect() {
        tables.push(Kernels {
            name: "avx2+avxvnni",
            qconv: qconv::Kernel::avx_vnni(vnni),
            ..t
        });
    }
    if let Some(vnni) = Avx512Vnni::detect() {
        tables.push(Kernels {
            name: "avx2+avx512vnni",
            qconv: qconv::Kernel::avx512_vnni(vnni),
            ..t
        });
    }
}

/// Broadcast YUV coefficients.
#[derive(Clone, Copy)]
struct Yuv {
    y_off: __m256i,
    y_mul: __m256i,
    round: __m256i,
    c128: __m256i,
    rv: __m256i,
    gu: __m256i,
    gv: __m256i,
    bu: __m256i,
    pack: __m256i,
    order: __m256i,
}

impl Yuv {
    #[target_feature(enable = "avx2")]
    fn new(k: &YuvCoeffs) -> Self {
        #[rustfmt::skip]
        let pack = _mm256_setr_epi8(
            0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11, -1, -1, -1, -1,
            0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11, -1, -1, -1, -1,
        );
        Yuv {
            y_off: _mm256_set1_epi32(k.y_off),
            y_mul: _mm256_set1_epi32(k.y_mul),
            round: _mm256_set1_epi32(1 << (YuvCoeffs::SHIFT - 1)),
            c128: _mm256_set1_epi32(128),
            rv: _mm256_set1_epi32(k.rv),
            gu: _mm256_set1_epi32(k.gu),
            gv: _mm256_set1_epi32(k.gv),
            bu: _mm256_set1_epi32(k.bu),
            pack,
            order: _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 3, 7),
        }
    }
}

/// Converts 8 pixels whose Y, U, V bytes are the low 8 bytes of `y`, `u`,
/// `v` (chroma already repeated per pixel) and stores 24 RGB bytes at `dst`.
///
/// # Safety
/// `dst..dst + 24` must be writable.
#[target_feature(enable = "avx2")]
unsafe fn yuv8(y: __m128i, u: __m128i, v: __m128i, c: &Yuv, dst: *mut u8) {
    let y = _mm256_cvtepu8_epi32(y);
    let u = _mm256_sub_epi32(_mm256_cvtepu8_epi32(u), c.c128);
    let v = _mm256_sub_epi32(_mm256_cvtepu8_epi32(v), c.c128);
    let yt = _mm256_add_epi32(
        _mm256_mullo_epi32(_mm256_sub_epi32(y, c.y_off), c.y_mul),
        c.round,
    );
    const S: i32 = YuvCoeffs::SHIFT as i32;
    let r = _mm256_srai_epi32::<S>(_mm256_add_epi32(yt, _mm256_mullo_epi32(c.rv, v)));
    let g = _mm256_srai_epi32::<S>(_mm256_sub_epi32(
        _mm256_sub_epi32(yt, _mm256_mullo_epi32(c.gu, u)),
        _mm256_mullo_epi32(c.gv, v),
    ));
    let b = _mm256_srai_epi32::<S>(_mm256_add_epi32(yt, _mm256_mullo_epi32(c.bu, u)));
    // Saturating packs are the clamp to 0..=255: per 128-bit lane
    // r0-3 g0-3 b0-3 0000, then interleaved to r0 g0 b0 ... b3, then the
    // two 12-byte halves made contiguous.
    let rg = _mm256_packs_epi32(r, g);
    let bz = _mm256_packs_epi32(b, _mm256_setzero_si256());
    let px = _mm256_shuffle_epi8(_mm256_packus_epi16(rg, bz), c.pack);
    let px = _mm256_permutevar8x32_epi32(px, c.order);
    // SAFETY: the caller guarantees 24 writable bytes; both stores are unaligned.
    unsafe {
        _mm_storeu_si128(dst.cast(), _mm256_castsi256_si128(px));
        _mm_storel_epi64(dst.add(16).cast(), _mm256_extracti128_si256::<1>(px));
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
    super::assert_yuyv(src, stride, width, height, dst);
    // SAFETY: only `plug` reaches this function, after detecting AVX2;
    // sizes checked above.
    unsafe { yuyv_avx2(src, stride, width, height, k, dst) }
}

#[target_feature(enable = "avx2")]
unsafe fn yuyv_avx2(
    src: &[u8],
    stride: usize,
    width: usize,
    height: usize,
    k: &YuvCoeffs,
    dst: &mut [u8],
) {
    let c = Yuv::new(k);
    let ys = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1);
    let us = _mm_setr_epi8(1, 1, 5, 5, 9, 9, 13, 13, -1, -1, -1, -1, -1, -1, -1, -1);
    let vs = _mm_setr_epi8(3, 3, 7, 7, 11, 11, 15, 15, -1, -1, -1, -1, -1, -1, -1, -1);
    for r in 0..height {
        let s = &src[r * stride..];
        let d = &mut dst[r * width * 3..][..width * 3];
        let mut x = 0;
        while x + 8 <= width {
            // SAFETY: x + 8 <= width, so the 16 source bytes at 2x lie within
            // the row's div_ceil(width, 2) * 4 bytes, and the 24 output bytes
            // at 3x within the output row.
            unsafe {
                let m = _mm_loadu_si128(s.as_ptr().add(x * 2).cast());
                yuv8(
                    _mm_shuffle_epi8(m, ys),
                    _mm_shuffle_epi8(m, us),
                    _mm_shuffle_epi8(m, vs),
                    &c,
                    d.as_mut_ptr().add(x * 3),
                );
            }
            x += 8;
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
    // SAFETY: only `plug` reaches this function, after detecting AVX2;
    // sizes checked above.
    unsafe { nv12_avx2(y, y_stride, uv, uv_stride, width, height, k, dst) }
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2")]
unsafe fn nv12_avx2(
    y: &[u8],
    y_stride: usize,
    uv: &[u8],
    uv_stride: usize,
    width: usize,
    height: usize,
    k: &YuvCoeffs,
    dst: &mut [u8],
) {
    let c = Yuv::new(k);
    let us = _mm_setr_epi8(0, 0, 2, 2, 4, 4, 6, 6, -1, -1, -1, -1, -1, -1, -1, -1);
    let vs = _mm_setr_epi8(1, 1, 3, 3, 5, 5, 7, 7, -1, -1, -1, -1, -1, -1, -1, -1);
    for r in 0..height {
        let (yr, cr) = (&y[r * y_stride..], &uv[(r / 2) * uv_stride..]);
        let d = &mut dst[r * width * 3..][..width * 3];
        let mut x = 0;
        while x + 8 <= width {
            // SAFETY: x + 8 <= width: 8 Y bytes at x and 8 CbCr bytes at x
            // (x even, 4 pairs) are inside their rows; 24 output bytes at 3x.
            unsafe {
                let yy = _mm_loadl_epi64(yr.as_ptr().add(x).cast());
                let cc = _mm_loadl_epi64(cr.as_ptr().add(x).cast());
                yuv8(
                    yy,
                    _mm_shuffle_epi8(cc, us),
                    _mm_shuffle_epi8(cc, vs),
                    &c,
                    d.as_mut_ptr().add(x * 3),
                );
            }
            x += 8;
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
    // SAFETY: only `plug` reaches this function, after detecting AVX2;
    // sizes checked above.
    unsafe { grey_avx2(src, stride, width, height, k, dst) }
}

#[target_feature(enable = "avx2")]
unsafe fn grey_avx2(
    src: &[u8],
    stride: usize,
    width: usize,
    height: usize,
    k: &YuvCoeffs,
    dst: &mut [u8],
) {
    let c = Yuv::new(k);
    let neutral = _mm_set1_epi8(-128); // 0x80: zero chroma
    for r in 0..height {
        let s = &src[r * stride..];
        let d = &mut dst[r * width * 3..][..width * 3];
        let mut x = 0;
        while x + 8 <= width {
            // SAFETY: x + 8 <= width bounds the 8-byte load and 24-byte store.
            unsafe {
                let yy = _mm_loadl_epi64(s.as_ptr().add(x).cast());
                yuv8(yy, neutral, neutral, &c, d.as_mut_ptr().add(x * 3));
            }
            x += 8;
        }
        scalar::grey_row(s, width, x, k, d);
    }
}

fn blend_span(span: &mut [u8], color: [u8; 3], alpha: u8) {
    // SAFETY: only `plug` reaches this function, after detecting AVX2.
    unsafe { blend_avx2(span, color, alpha) }
}

#[target_feature(enable = "avx2")]
unsafe fn blend_avx2(span: &mut [u8], color: [u8; 3], alpha: u8) {
    let a = u16::from(alpha);
    // 48 bytes = 16 pixels: three 16-byte pieces, each with its own phase
    // of the R,G,B pattern of `alpha * over + 128`.
    let bias: [__m256i; 3] = std::array::from_fn(|j| {
        let lanes: [u16; 16] =
            std::array::from_fn(|i| a * u16::from(color[(16 * j + i) % 3]) + 128);
        // SAFETY: reads 32 bytes from a 32-byte array.
        unsafe { _mm256_loadu_si256(lanes.as_ptr().cast()) }
    });
    let ia = _mm256_set1_epi16((255 - a) as i16);
    let n = span.len() / 48 * 48;
    let (body, tail) = span.split_at_mut(n);
    for chunk in body.chunks_exact_mut(48) {
        for (j, b) in bias.iter().enumerate() {
            // SAFETY: the piece is 16 bytes inside a 48-byte chunk.
            unsafe {
                let p = chunk.as_mut_ptr().add(16 * j);
                let u = _mm256_cvtepu8_epi16(_mm_loadu_si128(p.cast()));
                // (255 - a) * under + a * over + 128 <= 65153: fits u16.
                let v = _mm256_add_epi16(_mm256_mullo_epi16(u, ia), *b);
                let v = _mm256_srli_epi16::<8>(_mm256_add_epi16(v, _mm256_srli_epi16::<8>(v)));
                let packed = _mm256_permute4x64_epi64::<0b1000>(_mm256_packus_epi16(v, v));
                _mm_storeu_si128(p.cast(), _mm256_castsi256_si128(packed));
            }
        }
    }
    for px in tail.chunks_exact_mut(3) {
        for (under, over) in px.iter_mut().zip(color) {
            *under = blend_channel(*under, over, alpha);
        }
    }
}

/// Bilinear taps of 8 consecutive output columns from `ox`, computed with
/// the same float operations as [`bilinear_tap`] so that indices and weights
/// are identical to the scalar ones.
#[target_feature(enable = "avx2")]
fn taps8(ox: usize, scale: __m256, last: __m256i) -> (__m256i, __m256i, __m256) {
    let d = _mm256_add_epi32(
        _mm256_set1_epi32(ox as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    );
    let s = _mm256_sub_ps(
        _mm256_mul_ps(
            _mm256_add_ps(_mm256_cvtepi32_ps(d), _mm256_set1_ps(0.5)),
            scale,
        ),
        _mm256_set1_ps(0.5),
    );
    let s = _mm256_max_ps(s, _mm256_setzero_ps());
    let i0 = _mm256_min_epi32(_mm256_cvttps_epi32(s), last);
    let i1 = _mm256_min_epi32(_mm256_add_epi32(i0, _mm256_set1_epi32(1)), last);
    (i0, i1, _mm256_sub_ps(s, _mm256_cvtepi32_ps(i0)))
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
    assert!(
        width * height * 3 < i32::MAX as usize,
        "frame too large for 32-bit offsets"
    );
    // SAFETY: only `plug` reaches this function, after detecting AVX2;
    // sizes checked above.
    unsafe { resize_avx2(rgb, width, roi, out_w, out_h, norm, out) }
}

#[target_feature(enable = "avx2")]
unsafe fn resize_avx2(
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
    // The gathers read 4 bytes at a pixel's offset (its R, G, B and one
    // more byte). That stays inside the frame while the right tap's pixel
    // has a right neighbour in the frame: true for a prefix of columns
    // (taps grow with the column); the rest go through the scalar row.
    let mut simd_cols = out_w;
    while simd_cols > 0 && rx + bilinear_tap(simd_cols - 1, sx, rw).1 + 2 > width {
        simd_cols -= 1;
    }
    let simd_cols = simd_cols / 8 * 8;
    let scale = _mm256_set1_ps(sx);
    let last = _mm256_set1_epi32(rw as i32 - 1);
    let rxv = _mm256_set1_epi32(rx as i32);
    let mask = _mm256_set1_epi32(0xff);
    let (o0, rest) = out.split_at_mut(plane);
    let (o1, o2) = rest.split_at_mut(plane);
    for oy in 0..out_h {
        let (y0, y1, fy) = bilinear_tap(oy, sy, rh);
        let row0 = (ry + y0) * width * 3;
        let row1 = (ry + y1) * width * 3;
        let fyv = _mm256_set1_ps(fy);
        let rows = [
            &mut o0[oy * out_w..][..out_w],
            &mut o1[oy * out_w..][..out_w],
            &mut o2[oy * out_w..][..out_w],
        ];
        let mut ox = 0;
        while ox < simd_cols {
            let (i0, i1, fx) = taps8(ox, scale, last);
            let off = |i: __m256i| {
                let p = _mm256_add_epi32(i, rxv);
                _mm256_add_epi32(_mm256_add_epi32(p, p), p)
            };
            let (off0, off1) = (off(i0), off(i1));
            // SAFETY: offsets are (rx + tap) * 3 with rx + tap + 2 <= width
            // (simd_cols above), so each 4-byte read lies within its row.
            let (g00, g01, g10, g11) = unsafe {
                let b0 = rgb.as_ptr().add(row0).cast::<i32>();
                let b1 = rgb.as_ptr().add(row1).cast::<i32>();
                (
                    _mm256_i32gather_epi32::<1>(b0, off0),
                    _mm256_i32gather_epi32::<1>(b0, off1),
                    _mm256_i32gather_epi32::<1>(b1, off0),
                    _mm256_i32gather_epi32::<1>(b1, off1),
                )
            };
            for (c, &(sc, of, src)) in aff.iter().enumerate() {
                let sh = _mm_cvtsi32_si128(8 * src as i32);
                let ch = |g: __m256i| {
                    _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srl_epi32(g, sh), mask))
                };
                let (p00, p01, p10, p11) = (ch(g00), ch(g01), ch(g10), ch(g11));
                let top = _mm256_add_ps(p00, _mm256_mul_ps(_mm256_sub_ps(p01, p00), fx));
                let bot = _mm256_add_ps(p10, _mm256_mul_ps(_mm256_sub_ps(p11, p10), fx));
                let p = _mm256_add_ps(top, _mm256_mul_ps(_mm256_sub_ps(bot, top), fyv));
                let v = _mm256_add_ps(_mm256_mul_ps(p, _mm256_set1_ps(sc)), _mm256_set1_ps(of));
                // SAFETY: ox + 8 <= simd_cols <= out_w, the row's length.
                unsafe { _mm256_storeu_ps(rows[c].as_mut_ptr().add(ox), v) };
            }
            ox += 8;
        }
        scalar::resize_row(rgb, row0, row1, fy, rx, rw, sx, &aff, ox..out_w, rows);
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
    assert!(lw < i32::MAX as usize);
    // SAFETY: only `plug` reaches this function, after detecting AVX2;
    // sizes checked above.
    unsafe { mask_avx2(logits, lw, lh, threshold, out_w, out_h, out) }
}

/// Byte `i` of entry `m` is bit `i` of `m`: expands a movemask to 0/1 bytes.
const BITS_TO_BYTES: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut m = 0;
    while m < 256 {
        let mut i = 0;
        while i < 8 {
            if m & (1 << i) != 0 {
                t[m] |= 1 << (8 * i);
            }
            i += 1;
        }
        m += 1;
    }
    t
};

#[target_feature(enable = "avx2")]
unsafe fn mask_avx2(
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
    let scale = _mm256_set1_ps(sx);
    let last = _mm256_set1_epi32(lw as i32 - 1);
    let thr = _mm256_set1_ps(threshold);
    let simd_cols = out_w / 8 * 8;
    for oy in 0..out_h {
        let (y0, y1, fy) = bilinear_tap(oy, sy, lh);
        let (r0, r1) = (&logits[y0 * lw..][..lw], &logits[y1 * lw..][..lw]);
        let fyv = _mm256_set1_ps(fy);
        let orow = &mut out[oy * out_w..][..out_w];
        let mut ox = 0;
        while ox < simd_cols {
            let (i0, i1, fx) = taps8(ox, scale, last);
            // SAFETY: taps are clamped to 0..lw, inside both rows.
            let (a0, a1, b0, b1) = unsafe {
                (
                    _mm256_i32gather_ps::<4>(r0.as_ptr(), i0),
                    _mm256_i32gather_ps::<4>(r0.as_ptr(), i1),
                    _mm256_i32gather_ps::<4>(r1.as_ptr(), i0),
                    _mm256_i32gather_ps::<4>(r1.as_ptr(), i1),
                )
            };
            let top = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_sub_ps(a1, a0), fx));
            let bot = _mm256_add_ps(b0, _mm256_mul_ps(_mm256_sub_ps(b1, b0), fx));
            let v = _mm256_add_ps(top, _mm256_mul_ps(_mm256_sub_ps(bot, top), fyv));
            let m = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(v, thr)) as usize;
            orow[ox..ox + 8].copy_from_slice(&BITS_TO_BYTES[m].to_le_bytes());
            ox += 8;
        }
        scalar::mask_row(r0, r1, fy, sx, threshold, ox..out_w, orow);
    }
}
