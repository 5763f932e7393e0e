//! The preprocessing stage around the network: frame -> input tensor and
//! logits -> mask, as the model's metadata describes them (channel order
//! and per-channel normalisation in [`Normalize`]).
//!
//! The work is done by the kernel table ([`crate::kernels::resize_normalize`],
//! [`crate::kernels::logits_to_mask`]); the reference formulas they are
//! tested against live beside them in [`crate::kernels::scalar`].

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
