//! Raw pixel formats that capture devices and dump files deliver, and their
//! conversion to the pipeline's packed RGB.
//!
//! YUV conversion is the SIMD kernels' ([`crate::kernels::yuyv_to_rgb`],
//! [`crate::kernels::nv12_to_rgb`], [`crate::kernels::grey_to_rgb`]: AVX2 or
//! NEON where the CPU has them, the scalar reference otherwise), the one
//! colour conversion of the crate. YUV input is taken as BT.601 limited
//! range: that is what V4L2 drivers report for SD/webcam formats, and what
//! vivid produces by default. GREY is luma as-is (full range).

use crate::frame::Frame;
use crate::kernels::{self, YuvMatrix, YuvRange};
use crate::{Error, Result};

/// A raw frame layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    /// Packed 4:2:2, bytes Y0 U Y1 V.
    Yuyv,
    /// Planar Y, then interleaved U V at half resolution (4:2:0).
    Nv12,
    /// 8-bit luma only.
    #[serde(alias = "gray")]
    Grey,
    /// Packed R G B.
    Rgb24,
    /// Packed B G R.
    Bgr24,
    /// Motion JPEG: each buffer is a JPEG image.
    Mjpeg,
}

const fn fourcc(c: &[u8; 4]) -> u32 {
    (c[0] as u32) | ((c[1] as u32) << 8) | ((c[2] as u32) << 16) | ((c[3] as u32) << 24)
}

impl PixelFormat {
    /// Every format, in the order the config documentation lists them.
    pub const ALL: [PixelFormat; 6] = [
        PixelFormat::Yuyv,
        PixelFormat::Nv12,
        PixelFormat::Grey,
        PixelFormat::Rgb24,
        PixelFormat::Bgr24,
        PixelFormat::Mjpeg,
    ];

    /// Parses a config name (`"yuyv"`, `"nv12"`, `"grey"`, `"rgb24"`, `"bgr24"`, `"mjpeg"`).
    pub fn parse(name: &str) -> Option<Self> {
        let n = name.to_ascii_lowercase();
        let n = if n == "gray" { "grey".to_string() } else { n };
        Self::ALL.into_iter().find(|f| f.name() == n)
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::Yuyv => "yuyv",
            PixelFormat::Nv12 => "nv12",
            PixelFormat::Grey => "grey",
            PixelFormat::Rgb24 => "rgb24",
            PixelFormat::Bgr24 => "bgr24",
            PixelFormat::Mjpeg => "mjpeg",
        }
    }

    /// The V4L2 fourcc (`V4L2_PIX_FMT_*`).
    pub fn fourcc(self) -> u32 {
        match self {
            PixelFormat::Yuyv => fourcc(b"YUYV"),
            PixelFormat::Nv12 => fourcc(b"NV12"),
            PixelFormat::Grey => fourcc(b"GREY"),
            PixelFormat::Rgb24 => fourcc(b"RGB3"),
            PixelFormat::Bgr24 => fourcc(b"BGR3"),
            PixelFormat::Mjpeg => fourcc(b"MJPG"),
        }
    }

    /// The format for a V4L2 fourcc, if we can convert it.
    pub fn from_fourcc(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.fourcc() == code)
    }

    /// Bytes per line without padding (`None` for MJPEG).
    pub fn min_stride(self, width: u32) -> Option<usize> {
        let w = width as usize;
        match self {
            PixelFormat::Yuyv => Some(w * 2),
            // The interleaved CbCr row of an odd width has one more byte.
            PixelFormat::Nv12 => Some(w.div_ceil(2) * 2),
            PixelFormat::Grey => Some(w),
            PixelFormat::Rgb24 | PixelFormat::Bgr24 => Some(w * 3),
            PixelFormat::Mjpeg => None,
        }
    }

    /// Bytes of one frame with `stride` bytes per line (`None` for MJPEG).
    pub fn frame_len(self, stride: usize, height: u32) -> Option<usize> {
        let h = height as usize;
        match self {
            PixelFormat::Nv12 => Some(stride * h + stride * h.div_ceil(2)),
            PixelFormat::Mjpeg => None,
            _ => Some(stride * h),
        }
    }
}

/// Renders a fourcc as text for messages (`"YUYV"`).
pub fn fourcc_name(code: u32) -> String {
    code.to_le_bytes()
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

/// Converts raw frames of one format and size to RGB, holding the scratch
/// state (the JPEG decoder's output buffer) so that each frame reuses it.
pub struct Converter {
    format: PixelFormat,
    width: u32,
    height: u32,
    stride: usize,
}

impl Converter {
    /// A converter for frames of `width` x `height` with `stride` bytes per
    /// line (ignored for MJPEG). Fails when the stride is too small.
    pub fn new(format: PixelFormat, width: u32, height: u32, stride: usize) -> Result<Self> {
        if let Some(min) = format.min_stride(width) {
            if stride < min {
                return Err(Error::invalid(
                    format!("{} frame {width}x{height}", format.name()),
                    format!("line length {stride} is below the minimum {min}"),
                ));
            }
        }
        // A YUYV pixel pair shares its chroma: an odd width still takes the
        // whole last pair (4 bytes) on every line.
        if format == PixelFormat::Yuyv && stride < width.div_ceil(2) as usize * 4 {
            return Err(Error::invalid(
                format!("yuyv frame {width}x{height}"),
                format!(
                    "line length {stride} does not hold the last pixel pair of an odd width; \
                     fix: use an even capture.width"
                ),
            ));
        }
        Ok(Converter {
            format,
            width,
            height,
            stride,
        })
    }

    /// The format converted.
    pub fn format(&self) -> PixelFormat {
        self.format
    }

    /// Bytes one raw frame must have (`None` for MJPEG, whose size varies).
    pub fn frame_len(&self) -> Option<usize> {
        self.format.frame_len(self.stride, self.height)
    }

    /// Converts `src` into `dst` (resized to the converter's size, reusing
    /// its buffer). Errors name the format and what is wrong with the data.
    pub fn to_rgb(&self, src: &[u8], dst: &mut Frame) -> Result<()> {
        let (w, h) = (self.width as usize, self.height as usize);
        dst.width = self.width;
        dst.height = self.height;
        dst.rgb.resize(w * h * 3, 0);
        if let Some(need) = self.frame_len() {
            // The last line may lack its padding: drivers report bytesused
            // that way for some formats.
            let min = need - (self.stride - self.format.min_stride(self.width).unwrap_or(0));
            if src.len() < min {
                return Err(Error::invalid(
                    format!("{} frame {}x{}", self.format.name(), w, h),
                    format!("{} bytes, expected {need}", src.len()),
                ));
            }
        }
        let s = self.stride;
        let (m, limited) = (YuvMatrix::Bt601, YuvRange::Limited);
        match self.format {
            PixelFormat::Yuyv => kernels::yuyv_to_rgb(src, w, h, s, m, limited, &mut dst.rgb)?,
            PixelFormat::Nv12 => {
                let (y, uv) = src.split_at(s * h);
                kernels::nv12_to_rgb(y, s, uv, s, w, h, m, limited, &mut dst.rgb)?
            }
            PixelFormat::Grey => kernels::grey_to_rgb(src, w, h, s, YuvRange::Full, &mut dst.rgb)?,
            PixelFormat::Rgb24 => {
                for (y, out) in dst.rgb.chunks_exact_mut(w * 3).enumerate() {
                    out.copy_from_slice(&src[y * s..y * s + w * 3]);
                }
            }
            PixelFormat::Bgr24 => {
                for (y, out) in dst.rgb.chunks_exact_mut(w * 3).enumerate() {
                    let line = &src[y * s..y * s + w * 3];
                    for (i, o) in line.chunks_exact(3).zip(out.chunks_exact_mut(3)) {
                        o.copy_from_slice(&[i[2], i[1], i[0]]);
                    }
                }
            }
            PixelFormat::Mjpeg => decode_jpeg(src, dst, "MJPEG frame")?,
        }
        Ok(())
    }
}

/// BT.601 limited-range Y of one RGB pixel, in the classic 8-bit integer
/// form (the inverse of the kernels' conversion within one code value).
fn luma(r: i32, g: i32, b: i32) -> u8 {
    (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8
}

/// BT.601 limited-range Cb and Cr of an RGB colour.
fn chroma(r: i32, g: i32, b: i32) -> [u8; 2] {
    [
        (((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128) as u8,
        (((112 * r - 94 * g - 18 * b + 128) >> 8) + 128) as u8,
    ]
}

/// The mean RGB of `n` pixels whose channel sums are `sum`, rounded.
fn mean(sum: [i32; 3], n: i32) -> [i32; 3] {
    sum.map(|s| (s + n / 2) / n)
}

/// Encodes a packed RGB frame as a capture card sends it: YUYV or NV12,
/// BT.601 limited range, rows without padding ([`PixelFormat::min_stride`]),
/// each chroma sample from the mean colour of the pixels sharing it.
///
/// This is the camera's side, for the phantom's raw output and for tests,
/// never the pipeline's: the pipeline only converts to RGB ([`Converter`]).
/// `out` must hold [`PixelFormat::frame_len`] bytes and `width` be even.
pub fn encode_rgb(
    format: PixelFormat,
    rgb: &[u8],
    width: u32,
    height: u32,
    out: &mut [u8],
) -> Result<()> {
    let (w, h) = (width as usize, height as usize);
    let what = || format!("{} encoding of a {width}x{height} frame", format.name());
    if !w.is_multiple_of(2) || rgb.len() != w * h * 3 {
        return Err(Error::invalid(
            what(),
            format!(
                "{} RGB bytes; fix: pass an even width and a {width}x{height}x3 buffer",
                rgb.len()
            ),
        ));
    }
    let need = format
        .min_stride(width)
        .and_then(|s| format.frame_len(s, height));
    let need = match (format, need) {
        (PixelFormat::Yuyv | PixelFormat::Nv12, Some(n)) => n,
        _ => {
            return Err(Error::invalid(
                what(),
                "not an encodable format; fix: use yuyv or nv12",
            ))
        }
    };
    if out.len() != need {
        return Err(Error::invalid(
            what(),
            format!("output holds {} bytes, needs {need}", out.len()),
        ));
    }
    let px = |x: usize, y: usize| {
        let i = (y * w + x) * 3;
        [rgb[i], rgb[i + 1], rgb[i + 2]].map(i32::from)
    };
    match format {
        PixelFormat::Yuyv => {
            for (y, line) in out.chunks_exact_mut(w * 2).enumerate() {
                for (c, o) in line.chunks_exact_mut(4).enumerate() {
                    let (a, b) = (px(2 * c, y), px(2 * c + 1, y));
                    let [r, g, bl] = mean([a[0] + b[0], a[1] + b[1], a[2] + b[2]], 2);
                    let [cb, cr] = chroma(r, g, bl);
                    o.copy_from_slice(&[luma(a[0], a[1], a[2]), cb, luma(b[0], b[1], b[2]), cr]);
                }
            }
        }
        _ => {
            let (yp, uv) = out.split_at_mut(w * h);
            for (i, o) in yp.iter_mut().enumerate() {
                let [r, g, b] = px(i % w, i / w);
                *o = luma(r, g, b);
            }
            for (cy, line) in uv.chunks_exact_mut(w).enumerate() {
                for (cx, o) in line.chunks_exact_mut(2).enumerate() {
                    let (mut sum, mut n) = ([0i32; 3], 0);
                    for y in (2 * cy)..(2 * cy + 2).min(h) {
                        for x in [2 * cx, 2 * cx + 1] {
                            let p = px(x, y);
                            (0..3).for_each(|k| sum[k] += p[k]);
                            n += 1;
                        }
                    }
                    let [r, g, b] = mean(sum, n);
                    o.copy_from_slice(&chroma(r, g, b));
                }
            }
        }
    }
    Ok(())
}

/// Decodes a JPEG (an MJPEG buffer or an image file, named `what` in
/// errors) into `dst`, which must already have the expected size; a JPEG
/// of another size is an error, found before any pixel is decoded.
pub fn decode_jpeg(data: &[u8], dst: &mut Frame, what: &str) -> Result<()> {
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    let opts = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(data, opts);
    dec.decode_headers()
        .map_err(|e| Error::invalid_from(what, "bad header", e))?;
    let (w, h) = dec
        .dimensions()
        .ok_or_else(|| Error::invalid(what, "no dimensions in the header"))?;
    if (w as u32, h as u32) != (dst.width, dst.height) {
        return Err(Error::invalid(
            what,
            format!(
                "size {w}x{h}, expected {}x{}; fix: set the capture size to the stream's size",
                dst.width, dst.height
            ),
        ));
    }
    dst.rgb.resize(w * h * 3, 0);
    dec.decode_into(&mut dst.rgb)
        .map_err(|e| Error::invalid_from(what, "cannot decode", e))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn fourccs_round_trip() {
        assert_eq!(PixelFormat::Yuyv.fourcc(), 0x5659_5559);
        assert_eq!(fourcc_name(PixelFormat::Nv12.fourcc()), "NV12");
        for f in PixelFormat::ALL {
            assert_eq!(PixelFormat::from_fourcc(f.fourcc()), Some(f));
            assert_eq!(PixelFormat::parse(f.name()), Some(f));
        }
        assert_eq!(PixelFormat::parse("GRAY"), Some(PixelFormat::Grey));
        assert_eq!(PixelFormat::parse("h264"), None);
    }

    #[test]
    fn limited_range_extremes_through_the_kernels() {
        // YUYV 2x1 pairs: white and black, then BT.601 limited red (Y=81 U=90 V=240).
        let c = Converter::new(PixelFormat::Yuyv, 2, 1, 4).unwrap();
        let mut f = Frame::new(1, 1);
        c.to_rgb(&[235, 128, 16, 128], &mut f).unwrap();
        assert_eq!(f.rgb, [255, 255, 255, 0, 0, 0]);
        c.to_rgb(&[81, 90, 81, 240], &mut f).unwrap();
        let [r, g, b] = f.pixel(0, 0);
        assert!(r >= 253 && g <= 2 && b <= 2, "{r} {g} {b}");
        // The same pixels as the kernels' own scalar formula, bit for bit.
        let k = kernels::YuvCoeffs::new(YuvMatrix::Bt601, YuvRange::Limited);
        for (y, u, v) in [(81u8, 90u8, 240u8), (120, 60, 200), (200, 140, 30)] {
            c.to_rgb(&[y, u, y, v], &mut f).unwrap();
            assert_eq!(f.pixel(1, 0), kernels::scalar::yuv_pixel(y, u, v, &k));
        }
    }

    #[test]
    fn odd_yuyv_width_needs_the_whole_last_pair() {
        assert!(Converter::new(PixelFormat::Yuyv, 3, 1, 6).is_err());
        let c = Converter::new(PixelFormat::Yuyv, 3, 1, 8).unwrap();
        let mut f = Frame::new(1, 1);
        c.to_rgb(&[235, 128, 235, 128, 16, 128, 99, 128], &mut f)
            .unwrap();
        assert_eq!(f.rgb, [255, 255, 255, 255, 255, 255, 0, 0, 0]);
    }

    #[test]
    fn yuyv_uses_its_pair_chroma_and_stride() {
        // 2x2 frame, stride 8 (4 bytes padding per line).
        let src = [
            235, 128, 16, 128, 9, 9, 9, 9, // white, black
            81, 90, 81, 240, 9, 9, 9, 9, // red, red
        ];
        let c = Converter::new(PixelFormat::Yuyv, 2, 2, 8).unwrap();
        let mut f = Frame::new(1, 1);
        c.to_rgb(&src, &mut f).unwrap();
        assert_eq!((f.width, f.height), (2, 2));
        assert_eq!(f.pixel(0, 0), [255, 255, 255]);
        assert_eq!(f.pixel(1, 0), [0, 0, 0]);
        assert!(f.pixel(0, 1)[0] > 250 && f.pixel(1, 1)[2] < 5);
        assert!(c.to_rgb(&src[..10], &mut f).is_err());
    }

    #[test]
    fn nv12_chroma_is_shared_by_2x2_blocks() {
        // 2x2 luma of 81, one UV pair (90, 240): all four pixels red.
        let src = [81, 81, 81, 81, 90, 240];
        let c = Converter::new(PixelFormat::Nv12, 2, 2, 2).unwrap();
        let mut f = Frame::new(2, 2);
        c.to_rgb(&src, &mut f).unwrap();
        for (x, y) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            let [r, g, b] = f.pixel(x, y);
            assert!(r > 250 && g < 5 && b < 5);
        }
    }

    #[test]
    fn rgb_bgr_grey() {
        let mut f = Frame::new(1, 1);
        Converter::new(PixelFormat::Bgr24, 1, 1, 3)
            .unwrap()
            .to_rgb(&[1, 2, 3], &mut f)
            .unwrap();
        assert_eq!(f.pixel(0, 0), [3, 2, 1]);
        Converter::new(PixelFormat::Rgb24, 1, 1, 3)
            .unwrap()
            .to_rgb(&[1, 2, 3], &mut f)
            .unwrap();
        assert_eq!(f.pixel(0, 0), [1, 2, 3]);
        Converter::new(PixelFormat::Grey, 1, 1, 1)
            .unwrap()
            .to_rgb(&[77], &mut f)
            .unwrap();
        assert_eq!(f.pixel(0, 0), [77, 77, 77]);
        assert!(Converter::new(PixelFormat::Rgb24, 4, 1, 3).is_err());
    }

    /// A JPEG of `w` x `h`, left half red, right half blue.
    pub(crate) fn test_jpeg(w: u16, h: u16) -> Vec<u8> {
        let mut rgb = Vec::new();
        for _ in 0..h {
            for x in 0..w {
                rgb.extend_from_slice(if x < w / 2 {
                    &[255, 0, 0]
                } else {
                    &[0, 0, 255]
                });
            }
        }
        let mut out = Vec::new();
        let enc = jpeg_encoder::Encoder::new(&mut out, 95);
        enc.encode(&rgb, w, h, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        out
    }

    #[test]
    fn mjpeg_decodes_and_checks_size() {
        let jpeg = test_jpeg(32, 16);
        let c = Converter::new(PixelFormat::Mjpeg, 32, 16, 0).unwrap();
        let mut f = Frame::new(1, 1);
        c.to_rgb(&jpeg, &mut f).unwrap();
        let [r, g, b] = f.pixel(4, 8);
        assert!(r > 240 && g < 20 && b < 20, "{r} {g} {b}");
        let [r, g, b] = f.pixel(28, 8);
        assert!(r < 20 && g < 20 && b > 240, "{r} {g} {b}");
        let wrong = Converter::new(PixelFormat::Mjpeg, 64, 16, 0).unwrap();
        let e = wrong.to_rgb(&jpeg, &mut f).unwrap_err().to_string();
        assert!(e.contains("32x16"), "{e}");
        assert!(c.to_rgb(b"not a jpeg", &mut f).is_err());
    }
}
