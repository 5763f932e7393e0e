//! Scalar reference kernels for the two per-pixel stages around the network:
//! frame -> input tensor, and logits -> mask.
//!
//! These are the formulas the fast kernels are tested against. They follow
//! what the authors' data loader does (OpenCV bilinear resize with
//! half-pixel centres, albumentations `Normalize`, then a second division),
//! with every constant coming from the model's metadata via [`Normalize`].

use crate::frame::{Frame, Mask, Rect};
use crate::{Error, Result};

/// Order of the colour channels in the network's input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelOrder {
    /// Red, green, blue.
    Rgb,
    /// Blue, green, red (what OpenCV-trained models expect).
    Bgr,
}

/// Per-channel normalisation: `x = ((p - max*mean[c]) / (max*std[c])) * extra_scale`,
/// with `mean` and `std` listed in the tensor's channel order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    /// Channel order of the tensor.
    pub channel_order: ChannelOrder,
    /// Mean per tensor channel, in units of `max_pixel_value`.
    pub mean: [f32; 3],
    /// Standard deviation per tensor channel, in units of `max_pixel_value`.
    pub std: [f32; 3],
    /// Pixel value that mean and std are fractions of (255 for 8-bit input).
    pub max_pixel_value: f32,
    /// Multiplier applied after normalising (the authors' extra 1/255).
    pub extra_scale: f32,
}

impl Normalize {
    /// `(scale, offset)` per tensor channel such that `x = p * scale + offset`,
    /// and the index of the RGB component feeding that channel.
    pub fn affine(&self) -> [(f32, f32, usize); 3] {
        std::array::from_fn(|c| {
            let s = self.extra_scale / (self.max_pixel_value * self.std[c]);
            let o = -self.mean[c] / self.std[c] * self.extra_scale;
            let src = match self.channel_order {
                ChannelOrder::Rgb => c,
                ChannelOrder::Bgr => 2 - c,
            };
            (s, o, src)
        })
    }
}

/// The engine's preprocessing step: fills `input` (planar NCHW, `input_hw`
/// = (height, width)) from `roi` of `frame`, resized and normalised as the
/// model's metadata says. A frame that does not hold its ROI, or whose
/// buffer does not match its size, is an error, never a panic in a kernel.
pub fn frame_to_input(
    frame: &Frame,
    roi: Rect,
    input_hw: (usize, usize),
    norm: &Normalize,
    input: &mut [f32],
) -> Result<()> {
    if !roi.fits_in(frame.width, frame.height) {
        return Err(Error::invalid(
            format!("frame {} ({}x{})", frame.id, frame.width, frame.height),
            format!("region of interest {roi:?} does not fit; fix the roi in the config"),
        ));
    }
    if frame.rgb.len() != frame.width as usize * frame.height as usize * 3 {
        return Err(Error::invalid(
            format!("frame {}", frame.id),
            "pixel buffer does not match its size (corrupt frame)",
        ));
    }
    let (h, w) = input_hw;
    crate::kernels::resize_normalize(
        &frame.rgb,
        frame.width as usize,
        frame.height as usize,
        roi,
        w,
        h,
        norm,
        input,
    );
    Ok(())
}

/// The engine's postprocessing step: thresholds `logits` (row-major,
/// `logits_hw` = (height, width)) into `mask`, upscaled to `mask.roi`'s size.
pub fn mask_from_logits(
    logits: &[f32],
    logits_hw: (usize, usize),
    threshold: f32,
    mask: &mut Mask,
) {
    let (lh, lw) = logits_hw;
    let (w, h) = (mask.roi.w as usize, mask.roi.h as usize);
    mask.data.resize(w * h, 0);
    crate::kernels::logits_to_mask(logits, lw, lh, threshold, w, h, &mut mask.data);
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
    assert_eq!(rgb.len(), width * height * 3, "frame buffer size");
    assert_eq!(out.len(), 3 * out_w * out_h, "tensor size");
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
    assert_eq!(logits.len(), lw * lh, "logits size");
    assert_eq!(out.len(), out_w * out_h, "mask size");
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

#[cfg(test)]
mod tests {
    use super::*;

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
