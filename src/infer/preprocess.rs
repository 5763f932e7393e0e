//! The network's input as its metadata describes it: channel order and
//! per-channel normalisation. The kernels that apply them
//! ([`crate::kernels::resize_normalize`], reference
//! [`crate::kernels::scalar::resize_normalize`]) take a [`Normalize`].

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
