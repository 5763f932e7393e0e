//! The kernels: the per-pixel kernels of the frame path and the inner loops
//! of our tract operators ([`crate::infer::ops`]), in one table chosen once
//! per process.
//!
//! As in tract-linalg's `Ops`: [`generic()`] is a complete portable table
//! whose formulas are the reference ([`scalar`] and each operator's scalar
//! kernel); each architecture then plugs its SIMD kernels over a copy of it,
//! once, after detecting the features they need (x86_64: AVX2 + FMA, then
//! AVX-VNNI and AVX-512 VNNI for the int8 conv; aarch64: NEON, then `sdot`).
//! [`supported()`] lists every table this CPU can run, from the generic one
//! to the fastest; [`best()`] is the one the run uses: the fastest, unless
//! `LGMS_KERNELS=scalar` in the environment forces the generic one (to
//! compare outputs or timings on a board).
//!
//! The tables' fields are private: a SIMD kernel enters a table only in the
//! architecture's `plug`, or through an operator kernel's constructor that
//! takes a proof of the CPU features ([`cpu`]), so safe code cannot reach a
//! `#[target_feature]` function on a CPU without that feature. Every table
//! in [`supported()`] is property-tested against the generic one
//! (`tests/kernels.rs`, `tests/ops.rs`): integer outputs bit-exact, float
//! outputs within a stated tolerance.
//!
//! The public functions here check buffer sizes and return an error naming
//! the buffer; the kernels behind them can then index without checks.

use std::sync::OnceLock;

use crate::frame::Rect;
use crate::infer::ops::{attention, conv1x1, conv3x3, dwconv, gelu, linear, qconv, upsample};
use crate::infer::preprocess::Normalize;
use crate::{Error, Result};

pub mod cpu;
pub mod scalar;

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(target_arch = "aarch64")]
mod neon;

pub use cpu::cpu_features;

/// YUV -> RGB colour matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum YuvMatrix {
    /// ITU-R BT.601 (SD video, most USB cameras and ultrasound grabbers).
    Bt601,
    /// ITU-R BT.709 (HD video).
    Bt709,
}

/// Range of the Y'CbCr code values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum YuvRange {
    /// Y in 16..=235, Cb/Cr in 16..=240 ("TV" range, the V4L2 default).
    Limited,
    /// All of 0..=255 ("PC"/JPEG range).
    Full,
}

/// Integer YUV -> RGB coefficients in Q13 fixed point.
///
/// Per pixel, with `u = U - 128`, `v = V - 128`:
/// `yt = (Y - y_off) * y_mul + 4096`, then
/// `R = clamp((yt + rv*v) >> 13)`, `G = clamp((yt - gu*u - gv*v) >> 13)`,
/// `B = clamp((yt + bu*u) >> 13)`. All three implementations evaluate exactly
/// this in 32-bit integers, so their outputs are identical.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct YuvCoeffs {
    /// Black level subtracted from Y (16 limited, 0 full).
    pub y_off: i32,
    /// Luma gain.
    pub y_mul: i32,
    /// Cr contribution to red.
    pub rv: i32,
    /// Cb contribution subtracted from green.
    pub gu: i32,
    /// Cr contribution subtracted from green.
    pub gv: i32,
    /// Cb contribution to blue.
    pub bu: i32,
}

impl YuvCoeffs {
    /// Fixed-point shift of the coefficients.
    pub const SHIFT: u32 = 13;

    /// The coefficients of a matrix and range.
    pub fn new(matrix: YuvMatrix, range: YuvRange) -> Self {
        let (kr, kb) = match matrix {
            YuvMatrix::Bt601 => (0.299f64, 0.114f64),
            YuvMatrix::Bt709 => (0.2126, 0.0722),
        };
        let kg = 1.0 - kr - kb;
        let (y_off, ys, cs) = match range {
            YuvRange::Limited => (16, 255.0 / 219.0, 255.0 / 224.0),
            YuvRange::Full => (0, 1.0, 1.0),
        };
        let q = |x: f64| (x * f64::from(1u32 << Self::SHIFT)).round() as i32;
        YuvCoeffs {
            y_off,
            y_mul: q(ys),
            rv: q(2.0 * (1.0 - kr) * cs),
            gu: q(2.0 * kb * (1.0 - kb) / kg * cs),
            gv: q(2.0 * kr * (1.0 - kr) / kg * cs),
            bu: q(2.0 * (1.0 - kb) * cs),
        }
    }
}

/// Converts YUYV (YUY2) rows to packed RGB.
pub type YuyvFn =
    fn(src: &[u8], stride: usize, width: usize, height: usize, k: &YuvCoeffs, dst: &mut [u8]);
/// Converts NV12 (Y plane + interleaved CbCr plane at half resolution) to packed RGB.
#[allow(clippy::type_complexity)]
pub type Nv12Fn = fn(
    y: &[u8],
    y_stride: usize,
    uv: &[u8],
    uv_stride: usize,
    width: usize,
    height: usize,
    k: &YuvCoeffs,
    dst: &mut [u8],
);
/// Converts 8-bit grey (a Y plane) to packed RGB.
pub type GreyFn =
    fn(src: &[u8], stride: usize, width: usize, height: usize, k: &YuvCoeffs, dst: &mut [u8]);
/// ROI crop + bilinear resize + normalisation into planar NCHW f32
/// (see [`scalar::resize_normalize`]).
#[allow(clippy::type_complexity)]
pub type ResizeNormalizeFn = fn(
    rgb: &[u8],
    width: usize,
    height: usize,
    roi: Rect,
    out_w: usize,
    out_h: usize,
    norm: &Normalize,
    out: &mut [f32],
);
/// Bilinear logits upsample + threshold into a 0/1 mask
/// (see [`scalar::logits_to_mask`]).
pub type LogitsToMaskFn = fn(
    logits: &[f32],
    lw: usize,
    lh: usize,
    threshold: f32,
    out_w: usize,
    out_h: usize,
    out: &mut [u8],
);
/// Alpha-blends one colour over a run of packed RGB pixels.
pub type BlendSpanFn = fn(span: &mut [u8], color: [u8; 3], alpha: u8);

/// One complete set of kernels: the pixel kernels and each operator's.
#[derive(Debug, Clone, Copy)]
pub struct Kernels {
    /// Name of the table: `"scalar"`, or the CPU features it needs joined
    /// by `+` (`"avx2"`, `"avx2+avx512vnni"`, `"neon+dotprod"`, ...).
    pub name: &'static str,
    yuyv_to_rgb: YuyvFn,
    nv12_to_rgb: Nv12Fn,
    grey_to_rgb: GreyFn,
    resize_normalize: ResizeNormalizeFn,
    logits_to_mask: LogitsToMaskFn,
    blend_span: BlendSpanFn,
    attention: attention::Kernel,
    conv1x1: conv1x1::Kernel,
    linear: linear::Kernel,
    gelu: gelu::Kernel,
    conv3x3: conv3x3::Kernel,
    dwconv: dwconv::Kernel,
    upsample: upsample::RowKernels,
    qconv: qconv::Kernel,
}

impl Kernels {
    /// YUYV -> RGB ([`YuyvFn`]); panics on buffers too small for the sizes.
    pub fn yuyv_to_rgb(
        &self,
        src: &[u8],
        stride: usize,
        width: usize,
        height: usize,
        k: &YuvCoeffs,
        dst: &mut [u8],
    ) {
        (self.yuyv_to_rgb)(src, stride, width, height, k, dst)
    }
    /// NV12 -> RGB ([`Nv12Fn`]); panics on buffers too small for the sizes.
    #[allow(clippy::too_many_arguments)]
    pub fn nv12_to_rgb(
        &self,
        y: &[u8],
        y_stride: usize,
        uv: &[u8],
        uv_stride: usize,
        width: usize,
        height: usize,
        k: &YuvCoeffs,
        dst: &mut [u8],
    ) {
        (self.nv12_to_rgb)(y, y_stride, uv, uv_stride, width, height, k, dst)
    }
    /// GREY -> RGB ([`GreyFn`]); panics on buffers too small for the sizes.
    pub fn grey_to_rgb(
        &self,
        src: &[u8],
        stride: usize,
        width: usize,
        height: usize,
        k: &YuvCoeffs,
        dst: &mut [u8],
    ) {
        (self.grey_to_rgb)(src, stride, width, height, k, dst)
    }
    /// Frame -> input tensor ([`scalar::resize_normalize`]).
    #[allow(clippy::too_many_arguments)]
    pub fn resize_normalize(
        &self,
        rgb: &[u8],
        width: usize,
        height: usize,
        roi: Rect,
        out_w: usize,
        out_h: usize,
        norm: &Normalize,
        out: &mut [f32],
    ) {
        (self.resize_normalize)(rgb, width, height, roi, out_w, out_h, norm, out)
    }
    /// Logits -> mask ([`scalar::logits_to_mask`]).
    #[allow(clippy::too_many_arguments)]
    pub fn logits_to_mask(
        &self,
        logits: &[f32],
        lw: usize,
        lh: usize,
        threshold: f32,
        out_w: usize,
        out_h: usize,
        out: &mut [u8],
    ) {
        (self.logits_to_mask)(logits, lw, lh, threshold, out_w, out_h, out)
    }
    /// Mask fill ([`blend_span`]).
    pub fn blend_span(&self, span: &mut [u8], color: [u8; 3], alpha: u8) {
        (self.blend_span)(span, color, alpha)
    }
    /// The attention operator's kernel.
    pub fn attention(&self) -> attention::Kernel {
        self.attention
    }
    /// The 1x1 convolution's kernel.
    pub fn conv1x1(&self) -> conv1x1::Kernel {
        self.conv1x1
    }
    /// The token-major linear layer's kernel.
    pub fn linear(&self) -> linear::Kernel {
        self.linear
    }
    /// The direct 3x3 convolution's kernel.
    pub fn conv3x3(&self) -> conv3x3::Kernel {
        self.conv3x3
    }
    /// The depthwise convolutions' row kernel.
    pub fn dwconv(&self) -> dwconv::Kernel {
        self.dwconv
    }
    /// The exact GELU kernel.
    pub fn gelu(&self) -> gelu::Kernel {
        self.gelu
    }
    /// The 2x upsampling's row kernels.
    pub fn upsample(&self) -> upsample::RowKernels {
        self.upsample
    }
    /// The int8 convolution's kernel.
    pub fn qconv(&self) -> qconv::Kernel {
        self.qconv
    }
}

/// The complete portable table: every kernel's scalar reference.
pub fn generic() -> Kernels {
    scalar::TABLE
}

/// Every table this CPU can run: [`generic()`] first, then each
/// architecture's, fastest last. Built once per process.
pub fn supported() -> &'static [Kernels] {
    static ALL: OnceLock<Vec<Kernels>> = OnceLock::new();
    ALL.get_or_init(|| {
        #[allow(unused_mut)]
        let mut all = vec![generic()];
        #[cfg(target_arch = "x86_64")]
        x86::plug(&mut all);
        #[cfg(target_arch = "aarch64")]
        neon::plug(&mut all);
        all
    })
}

/// The generic table, as a `'static` reference.
pub fn scalar() -> &'static Kernels {
    &supported()[0]
}

/// The fastest table for this CPU, if it has one besides the generic table.
pub fn native() -> Option<&'static Kernels> {
    let all = supported();
    all[1..].last()
}

/// The table the run uses: [`native()`] when present, unless
/// `LGMS_KERNELS=scalar`. Chosen once per process.
pub fn best() -> &'static Kernels {
    static BEST: OnceLock<&'static Kernels> = OnceLock::new();
    BEST.get_or_init(|| {
        let forced = std::env::var("LGMS_KERNELS").ok();
        if let Some(v) = forced.as_deref().filter(|v| *v != "scalar") {
            log::warn!("LGMS_KERNELS={v:?} is not a choice; fix: LGMS_KERNELS=scalar (the reference kernels) or unset it; using the fastest table");
        }
        match (forced.as_deref(), native()) {
            (Some("scalar"), _) | (_, None) => scalar(),
            (_, Some(k)) => k,
        }
    })
}

/// What the CPU offers and which kernels the run will use (for `info`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CpuReport {
    /// Architecture the binary was built for.
    pub arch: &'static str,
    /// SIMD features found at run time (see [`cpu_features`]).
    pub features: Vec<String>,
    /// Name of the kernel table [`best()`] picked.
    pub kernels: &'static str,
}

impl std::fmt::Display for CpuReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cpu {} [{}]; pixel kernels: {}",
            self.arch,
            self.features.join(", "),
            self.kernels
        )
    }
}

/// The CPU's SIMD features and the kernel table this run uses.
pub fn cpu_report() -> CpuReport {
    CpuReport {
        arch: std::env::consts::ARCH,
        features: cpu_features(),
        kernels: best().name,
    }
}

/// `stride * (rows - 1) + row`: the bytes a strided image of `rows` rows
/// needs (none for no rows). `None` on overflow.
fn strided_len(stride: usize, rows: usize, row: usize) -> Option<usize> {
    match rows.checked_sub(1) {
        None => Some(0),
        Some(r) => r.checked_mul(stride)?.checked_add(row),
    }
}

/// `a * b * c`, `None` on overflow.
fn volume(a: usize, b: usize, c: usize) -> Option<usize> {
    a.checked_mul(b)?.checked_mul(c)
}

// The buffer checks every SIMD wrapper makes before its `unsafe` call, in
// checked arithmetic: the tables' methods are public, so sizes come from
// safe code and a wrapped product must never pass a check. They panic, as
// documented on the methods (a caller's bug; the stages check with clear
// errors first).

/// YUYV: `stride >= row`, `src` holds `height` rows, `dst` the RGB output.
pub(crate) fn assert_yuyv(src: &[u8], stride: usize, width: usize, height: usize, dst: &[u8]) {
    let row = width.div_ceil(2).checked_mul(4);
    assert!(
        row.is_some_and(
            |row| stride >= row && strided_len(stride, height, row).is_some_and(|n| src.len() >= n)
        ) && volume(width, height, 3).is_some_and(|n| dst.len() >= n),
        "YUYV buffers too small for {width}x{height} (stride {stride})"
    );
}

/// NV12: both planes hold their rows, `dst` the RGB output.
#[allow(clippy::too_many_arguments)]
pub(crate) fn assert_nv12(
    y: &[u8],
    y_stride: usize,
    uv: &[u8],
    uv_stride: usize,
    width: usize,
    height: usize,
    dst: &[u8],
) {
    let uv_row = width.div_ceil(2).checked_mul(2);
    assert!(
        y_stride >= width
            && strided_len(y_stride, height, width).is_some_and(|n| y.len() >= n)
            && uv_row.is_some_and(|row| uv_stride >= row
                && strided_len(uv_stride, height.div_ceil(2), row).is_some_and(|n| uv.len() >= n))
            && volume(width, height, 3).is_some_and(|n| dst.len() >= n),
        "NV12 buffers too small for {width}x{height}"
    );
}

/// GREY: `src` holds `height` rows, `dst` the RGB output.
pub(crate) fn assert_grey(src: &[u8], stride: usize, width: usize, height: usize, dst: &[u8]) {
    assert!(
        stride >= width
            && strided_len(stride, height, width).is_some_and(|n| src.len() >= n)
            && volume(width, height, 3).is_some_and(|n| dst.len() >= n),
        "GREY buffers too small for {width}x{height} (stride {stride})"
    );
}

/// Logits -> mask: a non-empty `lw` x `lh` logit map and an `out_w` x
/// `out_h` mask, exactly.
pub(crate) fn assert_logits(
    logits: &[f32],
    lw: usize,
    lh: usize,
    out: &[u8],
    out_w: usize,
    out_h: usize,
) {
    assert!(lw > 0 && lh > 0, "empty logit map {lw}x{lh}");
    assert_eq!(Some(logits.len()), volume(lw, lh, 1), "logits size");
    assert_eq!(Some(out.len()), volume(out_w, out_h, 1), "mask size");
}

/// `want`: the size from [`strided_len`] or [`volume`]; `None` (a size past
/// the address space, from an absurd stride) is refused like a short buffer.
fn need(what: &str, have: usize, want: Option<usize>) -> Result<()> {
    match want {
        Some(want) if have >= want => Ok(()),
        Some(want) => Err(Error::invalid(
            what,
            format!("buffer holds {have} bytes, needs at least {want}; fix: size it for the frame's width, height and stride"),
        )),
        None => Err(Error::invalid(
            what,
            format!("buffer holds {have} bytes, and the stride asks for more than memory holds; fix: pass the driver's bytesperline"),
        )),
    }
}

fn check_image(width: usize, height: usize) -> Result<()> {
    if width == 0 || height == 0 || width > 16384 || height > 16384 {
        return Err(Error::invalid(
            "image size",
            format!("{width}x{height} is out of range; fix: use 1..=16384 pixels per side"),
        ));
    }
    Ok(())
}

/// YUYV (`Y0 U Y1 V` per pixel pair; an odd width's last pair has its `Y1`
/// ignored) to packed RGB, `width * height * 3` bytes.
pub fn yuyv_to_rgb(
    src: &[u8],
    width: usize,
    height: usize,
    stride: usize,
    matrix: YuvMatrix,
    range: YuvRange,
    dst: &mut [u8],
) -> Result<()> {
    check_image(width, height)?;
    let row = width.div_ceil(2) * 4;
    if stride < row {
        return Err(Error::invalid(
            "YUYV stride",
            format!("{stride} < {row} bytes per row; fix: pass the driver's bytesperline"),
        ));
    }
    need("YUYV frame", src.len(), strided_len(stride, height, row))?;
    need("RGB output", dst.len(), volume(width, height, 3))?;
    best().yuyv_to_rgb(
        src,
        stride,
        width,
        height,
        &YuvCoeffs::new(matrix, range),
        dst,
    );
    Ok(())
}

/// NV12 (a `y_stride` Y plane, then `ceil(height/2)` rows of interleaved
/// CbCr at half width, `uv_stride` apart) to packed RGB.
#[allow(clippy::too_many_arguments)]
pub fn nv12_to_rgb(
    y: &[u8],
    y_stride: usize,
    uv: &[u8],
    uv_stride: usize,
    width: usize,
    height: usize,
    matrix: YuvMatrix,
    range: YuvRange,
    dst: &mut [u8],
) -> Result<()> {
    check_image(width, height)?;
    let uv_row = width.div_ceil(2) * 2;
    if y_stride < width || uv_stride < uv_row {
        return Err(Error::invalid(
            "NV12 stride",
            format!("Y stride {y_stride} / CbCr stride {uv_stride} too small for width {width}; fix: pass the driver's bytesperline"),
        ));
    }
    need(
        "NV12 Y plane",
        y.len(),
        strided_len(y_stride, height, width),
    )?;
    need(
        "NV12 CbCr plane",
        uv.len(),
        strided_len(uv_stride, height.div_ceil(2), uv_row),
    )?;
    need("RGB output", dst.len(), volume(width, height, 3))?;
    let k = YuvCoeffs::new(matrix, range);
    best().nv12_to_rgb(y, y_stride, uv, uv_stride, width, height, &k, dst);
    Ok(())
}

/// 8-bit grey (luma; `range` says whether 16 is black) to packed RGB.
pub fn grey_to_rgb(
    src: &[u8],
    width: usize,
    height: usize,
    stride: usize,
    range: YuvRange,
    dst: &mut [u8],
) -> Result<()> {
    check_image(width, height)?;
    if stride < width {
        return Err(Error::invalid(
            "GREY stride",
            format!("{stride} < width {width}; fix: pass the driver's bytesperline"),
        ));
    }
    need("GREY frame", src.len(), strided_len(stride, height, width))?;
    need("RGB output", dst.len(), volume(width, height, 3))?;
    let k = YuvCoeffs::new(YuvMatrix::Bt601, range);
    best().grey_to_rgb(src, stride, width, height, &k, dst);
    Ok(())
}

/// Dispatched [`scalar::resize_normalize`]: same signature,
/// same panics on sizes (the engine checks them once when it is built).
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
    best().resize_normalize(rgb, width, height, roi, out_w, out_h, norm, out)
}

/// Dispatched [`scalar::logits_to_mask`]: same signature and panics.
pub fn logits_to_mask(
    logits: &[f32],
    lw: usize,
    lh: usize,
    threshold: f32,
    out_w: usize,
    out_h: usize,
    out: &mut [u8],
) {
    best().logits_to_mask(logits, lw, lh, threshold, out_w, out_h, out)
}

/// Blends `color` at opacity `alpha` (0: unchanged, 255: `color`) over every
/// pixel of a packed RGB run (`span.len()` a multiple of 3), with the
/// overlay's rounding: `round((alpha*over + (255-alpha)*under) / 255)`.
pub fn blend_span(span: &mut [u8], color: [u8; 3], alpha: u8) {
    best().blend_span(span, color, alpha)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes from safe code that would wrap unchecked products or reach
    /// past the buffers: every table must refuse them (panic), never read
    /// out of bounds.
    #[test]
    fn every_table_refuses_wrapping_or_empty_sizes() {
        let k = YuvCoeffs::new(YuvMatrix::Bt601, YuvRange::Limited);
        let huge = (1usize << (usize::BITS - 1)) + 1;
        for t in supported() {
            let refused =
                |f: &dyn Fn()| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err();
            assert!(
                refused(&|| t.yuyv_to_rgb(&[0; 16], 16, 8, huge, &k, &mut [0; 48])),
                "{}",
                t.name
            );
            assert!(
                refused(&|| t.grey_to_rgb(&[0; 16], 16, 8, huge, &k, &mut [0; 48])),
                "{}",
                t.name
            );
            assert!(
                refused(&|| t.nv12_to_rgb(&[0; 16], 8, &[0; 16], 8, 8, huge, &k, &mut [0; 48])),
                "{}",
                t.name
            );
            assert!(
                refused(&|| t.logits_to_mask(&[], 0, 5, 0.0, 8, 1, &mut [0; 8])),
                "{}",
                t.name
            );
        }
    }

    #[test]
    fn coefficients_are_the_standard_ones() {
        let k = YuvCoeffs::new(YuvMatrix::Bt601, YuvRange::Limited);
        // 255/219, 1.402*255/224, 0.344136*255/224, 0.714136*255/224, 1.772*255/224
        assert_eq!((k.y_off, k.y_mul), (16, 9539));
        assert_eq!((k.rv, k.gu, k.gv, k.bu), (13075, 3209, 6660, 16525));
        let f = YuvCoeffs::new(YuvMatrix::Bt709, YuvRange::Full);
        assert_eq!((f.y_off, f.y_mul), (0, 8192));
        // 1.5748, 0.187324, 0.468124, 1.8556
        assert_eq!((f.rv, f.gu, f.gv, f.bu), (12901, 1535, 3835, 15201));
    }

    #[test]
    fn known_colours() {
        // Limited-range black, white and BT.601 red (81, 90, 240).
        let mut rgb = [0u8; 6];
        let yuyv = [16, 128, 235, 128];
        yuyv_to_rgb(
            &yuyv,
            2,
            1,
            4,
            YuvMatrix::Bt601,
            YuvRange::Limited,
            &mut rgb,
        )
        .unwrap();
        assert_eq!(rgb, [0, 0, 0, 255, 255, 255]);
        let red = [81, 90, 81, 240];
        yuyv_to_rgb(&red, 2, 1, 4, YuvMatrix::Bt601, YuvRange::Limited, &mut rgb).unwrap();
        assert!(rgb[0] >= 254 && rgb[1] <= 1 && rgb[2] <= 1, "{rgb:?}");
        // Full-range grey is copied unchanged.
        let mut g = [0u8; 9];
        grey_to_rgb(&[0, 77, 255], 3, 1, 3, YuvRange::Full, &mut g).unwrap();
        assert_eq!(g, [0, 0, 0, 77, 77, 77, 255, 255, 255]);
    }

    #[test]
    fn short_buffers_are_errors_naming_the_buffer() {
        let mut rgb = [0u8; 12];
        let e =
            yuyv_to_rgb(&[0; 7], 2, 2, 4, YuvMatrix::Bt601, YuvRange::Full, &mut rgb).unwrap_err();
        assert!(e.to_string().contains("YUYV frame"), "{e}");
        let e =
            yuyv_to_rgb(&[0; 8], 2, 2, 3, YuvMatrix::Bt601, YuvRange::Full, &mut rgb).unwrap_err();
        assert!(e.to_string().contains("stride"), "{e}");
        // A stride whose frame would pass the end of memory: an error, not a panic.
        let e = grey_to_rgb(&[0; 4], 2, 3, usize::MAX / 2, YuvRange::Full, &mut rgb).unwrap_err();
        assert!(e.to_string().contains("GREY frame"), "{e}");
        let e = grey_to_rgb(&[0; 4], 2, 2, 2, YuvRange::Full, &mut rgb[..11]).unwrap_err();
        assert!(e.to_string().contains("RGB output"), "{e}");
        let e = nv12_to_rgb(
            &[0; 4],
            2,
            &[0; 1],
            2,
            2,
            2,
            YuvMatrix::Bt709,
            YuvRange::Full,
            &mut rgb,
        )
        .unwrap_err();
        assert!(e.to_string().contains("CbCr"), "{e}");
    }

    #[test]
    fn report_names_the_chosen_table() {
        let r = cpu_report();
        assert_eq!(r.kernels, best().name);
        assert!(r.to_string().contains(r.arch));
        // A native table is named by the features it needs, all found.
        if r.kernels != "scalar" {
            for f in r.kernels.split('+') {
                assert!(r.features.iter().any(|have| have == f), "{f}: {r}");
            }
        }
    }

    #[test]
    fn supported_tables_start_generic_and_include_the_chosen_one() {
        let all = supported();
        assert_eq!(all[0].name, "scalar");
        assert_eq!(all[0].qconv().name(), "scalar");
        assert!(all.iter().any(|k| std::ptr::eq(k, best())));
        let mut names: Vec<_> = all.iter().map(|k| k.name).collect();
        names.dedup();
        assert_eq!(names.len(), all.len(), "{names:?}");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            all.len() > 1,
            cpu::Avx2Fma::detect().is_some(),
            "an AVX2 + FMA CPU gets a native table"
        );
    }
}
