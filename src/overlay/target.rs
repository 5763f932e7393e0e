//! The one RGB [`DrawTarget`], [`RgbTarget`], and the adapters that change
//! how it is drawn on.
//!
//! Every drawing in the crate lands on an `RgbTarget`: packed pixels in
//! memory, rows `stride` bytes apart, in a [`PanelFormat`]. The composited
//! [`Frame`] is one (RGB8, rows without padding, [`RgbTarget::for_frame`]);
//! a display's memory is another (a mapped framebuffer page or DRM dumb
//! buffer, with the line length and pixel layout the device reports,
//! [`RgbTarget::with_format`]). So the displays add no drawing code of their
//! own: they lend their memory and a format.
//!
//! As embedded-graphics recommends for a fast target, `fill_solid` and
//! `fill_contiguous` are overridden: colours are packed once and rows are
//! written directly, not pixel by pixel through `draw_iter`. Variations are
//! adapters over any target instead of more targets: [`Blend`] (every
//! pixel alpha-blended, through [`BlendTarget::blend_hline`]) and [`Scaled`]
//! (every pixel an `n` x `n` block, for large text). Blending is done by the
//! SIMD kernel [`crate::kernels::blend_span`], for every pixel format.

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;

use crate::frame::Frame;
use crate::kernels::{self, Kernels};
use crate::{Error, Result};

// ---------------------------------------------------------------------------
// Pixel formats
// ---------------------------------------------------------------------------

/// One colour channel's place in a pixel word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    /// Bit offset of the channel's least significant bit.
    pub offset: u32,
    /// Bits in the channel (1..=8).
    pub length: u32,
}

/// A packed true-colour layout: 16, 24 or 32 bits per pixel, little endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PanelFormat {
    /// Bytes per pixel (2, 3 or 4).
    pub bytes: usize,
    /// Red channel.
    pub red: Channel,
    /// Green channel.
    pub green: Channel,
    /// Blue channel.
    pub blue: Channel,
}

impl PanelFormat {
    /// The composited frame's layout: the bytes R, G, B in that order (what
    /// DRM calls BGR888, as it names channels from the word's high end).
    pub const RGB8: PanelFormat = PanelFormat {
        bytes: 3,
        red: Channel {
            offset: 0,
            length: 8,
        },
        green: Channel {
            offset: 8,
            length: 8,
        },
        blue: Channel {
            offset: 16,
            length: 8,
        },
    };
    /// RGB565.
    pub const RGB565: PanelFormat = PanelFormat {
        bytes: 2,
        red: Channel {
            offset: 11,
            length: 5,
        },
        green: Channel {
            offset: 5,
            length: 6,
        },
        blue: Channel {
            offset: 0,
            length: 5,
        },
    };
    /// XRGB8888 (DRM's and most framebuffers' 32-bit layout).
    pub const XRGB8888: PanelFormat = PanelFormat {
        bytes: 4,
        red: Channel {
            offset: 16,
            length: 8,
        },
        green: Channel {
            offset: 8,
            length: 8,
        },
        blue: Channel {
            offset: 0,
            length: 8,
        },
    };

    /// Checks a layout a device reported; errors say what is unsupported.
    pub fn new(bits_per_pixel: u32, red: Channel, green: Channel, blue: Channel) -> Result<Self> {
        let bytes = match bits_per_pixel {
            16 => 2,
            24 => 3,
            32 => 4,
            other => {
                return Err(Error::invalid(
                    "display pixel format",
                    format!(
                        "{other} bits per pixel (palette or mono) is not supported; fix: set the \
                         panel to 16 or 32 bpp (fbset -depth 32, or video=...-32 on the kernel line)"
                    ),
                ))
            }
        };
        for (name, c) in [("red", red), ("green", green), ("blue", blue)] {
            if c.length == 0 || c.length > 8 || c.offset + c.length > bits_per_pixel {
                return Err(Error::invalid(
                    "display pixel format",
                    format!(
                        "{name} channel at bit {} with {} bits is not usable",
                        c.offset, c.length
                    ),
                ));
            }
        }
        Ok(PanelFormat {
            bytes,
            red,
            green,
            blue,
        })
    }

    /// A short name (`"RGB565"`, `"XRGB8888"`, `"XBGR8888"`, or the bit layout).
    pub fn describe(&self) -> String {
        let order = if self.red.offset > self.blue.offset {
            "RGB"
        } else {
            "BGR"
        };
        let sizes = (self.red.length, self.green.length, self.blue.length);
        match (self.bytes, sizes) {
            (2, (5, 6, 5)) => format!("{order}565"),
            (4, (8, 8, 8)) => format!("X{order}8888"),
            (3, (8, 8, 8)) => format!("{order}888"),
            _ => format!(
                "{}bpp r{}@{} g{}@{} b{}@{}",
                self.bytes * 8,
                self.red.length,
                self.red.offset,
                self.green.length,
                self.green.offset,
                self.blue.length,
                self.blue.offset
            ),
        }
    }

    /// The pixel word for an RGB colour.
    #[inline]
    pub fn pack(&self, [r, g, b]: [u8; 3]) -> u32 {
        let ch = |v: u8, c: Channel| (u32::from(v) >> (8 - c.length)) << c.offset;
        ch(r, self.red) | ch(g, self.green) | ch(b, self.blue)
    }

    /// The RGB colour of a pixel word, low bits filled by bit replication.
    #[inline]
    pub fn unpack(&self, word: u32) -> [u8; 3] {
        let ch = |c: Channel| {
            let v = (word >> c.offset) & ((1 << c.length) - 1);
            let v = v << (8 - c.length);
            (v | (v >> c.length)) as u8
        };
        [ch(self.red), ch(self.green), ch(self.blue)]
    }

    /// Writes `word` into the pixel at the start of `dst`.
    #[inline]
    pub fn store(&self, dst: &mut [u8], word: u32) {
        dst[..self.bytes].copy_from_slice(&word.to_le_bytes()[..self.bytes]);
    }

    /// Reads the pixel word at the start of `src`.
    #[inline]
    pub fn load(&self, src: &[u8]) -> u32 {
        let mut w = [0u8; 4];
        w[..self.bytes].copy_from_slice(&src[..self.bytes]);
        u32::from_le_bytes(w)
    }
}

// ---------------------------------------------------------------------------
// Blending
// ---------------------------------------------------------------------------

/// Blends `over` onto `under` with opacity `alpha` (0: `under`, 255: `over`):
/// per channel `round((alpha * over + (255 - alpha) * under) / 255)`, by
/// [`crate::kernels::blend_span`], so a single colour blends exactly as a
/// run of pixels does.
#[inline]
pub fn blend(under: Rgb888, over: Rgb888, alpha: u8) -> Rgb888 {
    let mut px = rgb(under);
    crate::kernels::blend_span(&mut px, rgb(over), alpha);
    Rgb888::new(px[0], px[1], px[2])
}

#[inline]
fn rgb(c: Rgb888) -> [u8; 3] {
    [c.r(), c.g(), c.b()]
}

/// A [`DrawTarget`] that can also blend colours over what it already shows.
///
/// The overlay's drawing code is generic over this trait, so it draws the
/// same on any [`RgbTarget`] as on the strict `MockDisplay` of the tests.
/// Implementations follow the embedded-graphics convention: pixels outside
/// the target are silently skipped, never a panic or an error.
pub trait BlendTarget: DrawTarget<Color = Rgb888> {
    /// Blends `color` with opacity `alpha` (see [`blend`]) over the `len`
    /// pixels from `start` to the right, on row `start.y`.
    fn blend_hline(
        &mut self,
        start: Point,
        len: u32,
        color: Rgb888,
        alpha: u8,
    ) -> Result<(), Self::Error>;
}

// ---------------------------------------------------------------------------
// RgbTarget
// ---------------------------------------------------------------------------

/// The RGB [`DrawTarget`] over packed pixels in memory: a [`Frame`]'s RGB8
/// buffer or a display's mapped memory in its [`PanelFormat`].
///
/// Out-of-bounds pixels are silently clipped. `fill_solid`,
/// `fill_contiguous` and [`BlendTarget::blend_hline`] work on whole clipped
/// rows.
pub struct RgbTarget<'a> {
    mem: &'a mut [u8],
    width: u32,
    height: u32,
    /// Bytes from one row to the next (at least `width * format.bytes`).
    stride: usize,
    format: PanelFormat,
    /// The table whose `blend_span` does the blending: [`kernels::best`],
    /// or another for comparing tables ([`RgbTarget::with_kernels`]).
    kernels: &'static Kernels,
}

impl<'a> RgbTarget<'a> {
    /// Wraps a packed RGB8 buffer, which must hold exactly
    /// `width * height * 3` bytes (rows without padding).
    pub fn new(rgb: &'a mut [u8], width: u32, height: u32) -> Result<Self> {
        let want = width as usize * height as usize * 3;
        if rgb.len() != want {
            return Err(Error::invalid(
                "overlay target",
                format!(
                    "buffer holds {} bytes but a {width}x{height} RGB frame needs {want}; \
                     fix: size the buffer width*height*3",
                    rgb.len()
                ),
            ));
        }
        Ok(RgbTarget {
            mem: rgb,
            width,
            height,
            stride: width as usize * 3,
            format: PanelFormat::RGB8,
            kernels: kernels::best(),
        })
    }

    /// Wraps a [`Frame`]'s pixels (fails if its buffer does not match its size).
    pub fn for_frame(frame: &'a mut Frame) -> Result<Self> {
        RgbTarget::new(&mut frame.rgb, frame.width, frame.height)
    }

    /// Wraps a display buffer: `mem` holds at least `stride * height` bytes,
    /// rows `stride` bytes apart, pixels in `format`.
    pub fn with_format(
        mem: &'a mut [u8],
        width: u32,
        height: u32,
        stride: usize,
        format: PanelFormat,
    ) -> Result<Self> {
        if stride < width as usize * format.bytes || mem.len() < stride * height as usize {
            return Err(Error::invalid(
                "display buffer",
                format!(
                    "{} bytes with line length {stride} cannot hold {width}x{height} at {} bytes per pixel",
                    mem.len(),
                    format.bytes
                ),
            ));
        }
        Ok(RgbTarget {
            mem,
            width,
            height,
            stride,
            format,
            kernels: kernels::best(),
        })
    }

    /// Blends with `kernels` instead of the run's table, so a benchmark
    /// times the compositor's drawing on the scalar and the native table
    /// side by side.
    pub fn with_kernels(mut self, kernels: &'static Kernels) -> Self {
        self.kernels = kernels;
        self
    }

    /// The pixel format of the memory.
    pub fn format(&self) -> PanelFormat {
        self.format
    }

    /// The colour at `p`, or `None` outside the target.
    pub fn pixel(&self, p: Point) -> Option<Rgb888> {
        let i = self.index(p)?;
        let [r, g, b] = self.format.unpack(self.format.load(&self.mem[i..]));
        Some(Rgb888::new(r, g, b))
    }

    /// The pixels of row `y` (`width * format.bytes` bytes, without the
    /// row's padding), or `None` below the target.
    pub fn row_mut(&mut self, y: u32) -> Option<&mut [u8]> {
        if y >= self.height {
            return None;
        }
        let start = y as usize * self.stride;
        Some(&mut self.mem[start..start + self.width as usize * self.format.bytes])
    }

    /// Byte offset of pixel `p`, or `None` outside the target.
    #[inline]
    fn index(&self, p: Point) -> Option<usize> {
        if p.x < 0 || p.y < 0 || p.x as u32 >= self.width || p.y as u32 >= self.height {
            return None;
        }
        Some(p.y as usize * self.stride + p.x as usize * self.format.bytes)
    }

    /// The bytes of the clipped run `x0..x0 + len` on row `y` (empty when
    /// the run misses the target).
    fn span_mut(&mut self, x0: i32, y: i32, len: u32) -> &mut [u8] {
        if y < 0 || y as u32 >= self.height || len == 0 {
            return &mut [];
        }
        let start = i64::from(x0).max(0);
        let end = (i64::from(x0) + i64::from(len)).min(i64::from(self.width));
        if start >= end {
            return &mut [];
        }
        let (row, bpp) = (y as usize * self.stride, self.format.bytes);
        &mut self.mem[row + start as usize * bpp..row + end as usize * bpp]
    }
}

impl OriginDimensions for RgbTarget<'_> {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for RgbTarget<'_> {
    type Color = Rgb888;
    type Error = core::convert::Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Rgb888>>,
    {
        let f = self.format;
        for Pixel(p, c) in pixels {
            if let Some(i) = self.index(p) {
                f.store(&mut self.mem[i..], f.pack(rgb(c)));
            }
        }
        Ok(())
    }

    fn fill_contiguous<I>(&mut self, area: &Rectangle, colors: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Rgb888>,
    {
        let clipped = area.intersection(&self.bounding_box());
        if clipped != *area {
            // Partly outside: the colours of clipped pixels must still be
            // consumed in order, which the per-pixel path does.
            return self.draw_iter(area.points().zip(colors).map(|(p, c)| Pixel(p, c)));
        }
        let f = self.format;
        let mut colors = colors.into_iter();
        for y in area.rows() {
            let span = self.span_mut(area.top_left.x, y, area.size.width);
            for px in span.chunks_exact_mut(f.bytes) {
                let Some(c) = colors.next() else {
                    return Ok(());
                };
                f.store(px, f.pack(rgb(c)));
            }
        }
        Ok(())
    }

    fn fill_solid(&mut self, area: &Rectangle, color: Rgb888) -> Result<(), Self::Error> {
        let area = area.intersection(&self.bounding_box());
        if area.is_zero_sized() {
            return Ok(());
        }
        let f = self.format;
        let word = f.pack(rgb(color));
        for y in area.rows() {
            for px in self
                .span_mut(area.top_left.x, y, area.size.width)
                .chunks_exact_mut(f.bytes)
            {
                f.store(px, word);
            }
        }
        Ok(())
    }
}

impl BlendTarget for RgbTarget<'_> {
    fn blend_hline(
        &mut self,
        start: Point,
        len: u32,
        color: Rgb888,
        alpha: u8,
    ) -> Result<(), Self::Error> {
        /// Pixels converted to RGB8 at a time on other formats (on the stack).
        const CHUNK: usize = 64;
        let (f, k) = (self.format, self.kernels);
        let span = self.span_mut(start.x, start.y, len);
        if f == PanelFormat::RGB8 {
            k.blend_span(span, rgb(color), alpha);
            return Ok(());
        }
        // Other layouts go through a small RGB8 buffer, so the same kernel
        // does the arithmetic.
        let mut buf = [0u8; CHUNK * 3];
        for chunk in span.chunks_mut(CHUNK * f.bytes) {
            let n = chunk.len() / f.bytes;
            for (px, out) in chunk.chunks_exact(f.bytes).zip(buf.chunks_exact_mut(3)) {
                out.copy_from_slice(&f.unpack(f.load(px)));
            }
            k.blend_span(&mut buf[..n * 3], rgb(color), alpha);
            for (px, c) in chunk.chunks_exact_mut(f.bytes).zip(buf.chunks_exact(3)) {
                f.store(px, f.pack([c[0], c[1], c[2]]));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Adapters
// ---------------------------------------------------------------------------

/// Adapter that makes every pixel drawn through it alpha-blended, so that any
/// embedded-graphics drawable (a rectangle, text) can be drawn translucent.
pub struct Blend<'a, T> {
    target: &'a mut T,
    alpha: u8,
}

impl<'a, T: BlendTarget> Blend<'a, T> {
    /// Draws on `target` with opacity `alpha` (0: invisible, 255: opaque).
    pub fn new(target: &'a mut T, alpha: u8) -> Self {
        Blend { target, alpha }
    }
}

impl<T: BlendTarget> Dimensions for Blend<'_, T> {
    fn bounding_box(&self) -> Rectangle {
        self.target.bounding_box()
    }
}

impl<T: BlendTarget> DrawTarget for Blend<'_, T> {
    type Color = Rgb888;
    type Error = T::Error;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Rgb888>>,
    {
        for Pixel(p, c) in pixels {
            self.target.blend_hline(p, 1, c, self.alpha)?;
        }
        Ok(())
    }

    fn fill_solid(&mut self, area: &Rectangle, color: Rgb888) -> Result<(), Self::Error> {
        let area = area.intersection(&self.target.bounding_box());
        if area.is_zero_sized() {
            return Ok(());
        }
        for y in area.rows() {
            self.target.blend_hline(
                Point::new(area.top_left.x, y),
                area.size.width,
                color,
                self.alpha,
            )?;
        }
        Ok(())
    }
}

/// Adapter that draws every pixel as a `scale` x `scale` block, so a small
/// bitmap font can be drawn large. Its own coordinates are the target's
/// divided by `scale`; blocks are clipped by the target.
pub struct Scaled<'a, T> {
    target: &'a mut T,
    scale: u32,
}

impl<'a, T: DrawTarget> Scaled<'a, T> {
    /// Draws on `target` with each pixel `scale` x `scale` (at least 1).
    pub fn new(target: &'a mut T, scale: u32) -> Self {
        Scaled {
            target,
            scale: scale.max(1),
        }
    }

    /// The target's rectangle for `area` in the adapter's coordinates.
    fn blow_up(&self, area: &Rectangle) -> Rectangle {
        let k = self.scale;
        Rectangle::new(area.top_left * k as i32, area.size * k)
    }
}

impl<T: DrawTarget> Dimensions for Scaled<'_, T> {
    fn bounding_box(&self) -> Rectangle {
        let bb = self.target.bounding_box();
        Rectangle::new(bb.top_left / self.scale as i32, bb.size / self.scale)
    }
}

impl<T: DrawTarget> DrawTarget for Scaled<'_, T> {
    type Color = T::Color;
    type Error = T::Error;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<T::Color>>,
    {
        for Pixel(p, c) in pixels {
            let block = self.blow_up(&Rectangle::new(p, Size::new(1, 1)));
            self.target.fill_solid(&block, c)?;
        }
        Ok(())
    }

    fn fill_solid(&mut self, area: &Rectangle, color: T::Color) -> Result<(), Self::Error> {
        let block = self.blow_up(area);
        self.target.fill_solid(&block, color)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use embedded_graphics::mock_display::MockDisplay;
    use embedded_graphics::mono_font::{ascii::FONT_6X10, MonoTextStyle};
    use embedded_graphics::primitives::{Circle, PrimitiveStyle};
    use embedded_graphics::text::Text;

    pub(crate) fn frame_of(w: u32, h: u32, c: [u8; 3]) -> Frame {
        let mut f = Frame::new(w, h);
        for px in f.rgb.chunks_exact_mut(3) {
            px.copy_from_slice(&c);
        }
        f
    }

    #[test]
    fn blend_matches_rounded_formula_everywhere() {
        for a in 0..=255u32 {
            for u in 0..=255u32 {
                for o in 0..=255u32 {
                    let want = (a * o + (255 - a) * u + 127) / 255;
                    let got = blend(
                        Rgb888::new(u as u8, 0, 0),
                        Rgb888::new(o as u8, 0, 0),
                        a as u8,
                    );
                    assert_eq!(u32::from(got.r()), want, "alpha {a} under {u} over {o}");
                }
            }
        }
    }

    #[test]
    fn blend_on_frame_bytes_at_known_alphas() {
        let under = [200u8, 100, 0];
        let over = Rgb888::new(0, 220, 120);
        for (alpha, want) in [
            (0u8, [200u8, 100, 0]),
            (255, [0, 220, 120]),
            (128, [100, 160, 60]),
        ] {
            let mut f = frame_of(3, 1, under);
            let mut t = RgbTarget::for_frame(&mut f).unwrap();
            t.blend_hline(Point::new(1, 0), 1, over, alpha).unwrap();
            assert_eq!(f.pixel(1, 0), want, "alpha {alpha}");
            assert_eq!(f.pixel(0, 0), under);
            assert_eq!(f.pixel(2, 0), under);
        }
        // Black under white at half: 32640 / 255 = 128 exactly.
        assert_eq!(
            blend(Rgb888::BLACK, Rgb888::WHITE, 128),
            Rgb888::new(128, 128, 128)
        );
    }

    #[test]
    fn frame_target_rejects_wrong_buffer() {
        let mut buf = vec![0u8; 10];
        let e = RgbTarget::new(&mut buf, 2, 2).err().unwrap().to_string();
        assert!(e.contains("2x2") && e.contains("12"), "{e}");
    }

    #[test]
    fn frame_target_fills_match_per_pixel_drawing_and_clip() {
        let areas = [
            Rectangle::new(Point::new(1, 1), Size::new(3, 2)),
            Rectangle::new(Point::new(-2, -1), Size::new(4, 3)),
            Rectangle::new(Point::new(4, 3), Size::new(10, 10)),
            Rectangle::new(Point::new(-10, 2), Size::new(30, 1)),
            Rectangle::new(Point::new(50, 50), Size::new(3, 3)),
        ];
        for area in areas {
            let colors = || (0..).map(|i: u32| Rgb888::new(i as u8, (i * 7) as u8, 3));
            let mut fast = Frame::new(6, 5);
            let mut slow = Frame::new(6, 5);
            {
                let mut t = RgbTarget::for_frame(&mut fast).unwrap();
                t.fill_contiguous(&area, colors()).unwrap();
                let mut s = RgbTarget::for_frame(&mut slow).unwrap();
                s.draw_iter(area.points().zip(colors()).map(|(p, c)| Pixel(p, c)))
                    .unwrap();
            }
            assert_eq!(fast.rgb, slow.rgb, "fill_contiguous {area:?}");

            let c = Rgb888::new(9, 8, 7);
            let mut fast = Frame::new(6, 5);
            let mut slow = Frame::new(6, 5);
            RgbTarget::for_frame(&mut fast)
                .unwrap()
                .fill_solid(&area, c)
                .unwrap();
            RgbTarget::for_frame(&mut slow)
                .unwrap()
                .draw_iter(area.points().map(|p| Pixel(p, c)))
                .unwrap();
            assert_eq!(fast.rgb, slow.rgb, "fill_solid {area:?}");
        }
        // Some area above drew something: the comparison is not vacuous.
        let mut f = Frame::new(6, 5);
        RgbTarget::for_frame(&mut f)
            .unwrap()
            .fill_solid(&areas[1], Rgb888::WHITE)
            .unwrap();
        assert_eq!(f.pixel(1, 1), [255; 3]);
        assert_eq!(f.pixel(2, 1), [0; 3]);
    }

    #[test]
    fn blend_adapter_blends_and_clips() {
        let mut f = frame_of(4, 4, [0, 0, 0]);
        let mut t = RgbTarget::for_frame(&mut f).unwrap();
        Blend::new(&mut t, 128)
            .fill_solid(
                &Rectangle::new(Point::new(2, -3), Size::new(9, 5)),
                Rgb888::WHITE,
            )
            .unwrap();
        Blend::new(&mut t, 255)
            .draw_iter([Pixel(Point::new(-1, 0), Rgb888::RED)])
            .unwrap();
        assert_eq!(f.pixel(2, 0), [128; 3]);
        assert_eq!(f.pixel(3, 1), [128; 3]);
        assert_eq!(f.pixel(1, 0), [0; 3]);
        assert_eq!(f.pixel(2, 2), [0; 3]);
    }

    /// Text and shapes, partly outside a 64x64 target.
    fn scene<T: DrawTarget<Color = Rgb888>>(t: &mut T) -> Result<(), T::Error> {
        Text::new(
            "Ag 42",
            Point::new(2, 9),
            MonoTextStyle::new(&FONT_6X10, Rgb888::RED),
        )
        .draw(t)?;
        Circle::new(Point::new(40, 40), 40)
            .into_styled(PrimitiveStyle::with_fill(Rgb888::GREEN))
            .draw(t)?;
        Rectangle::new(Point::new(-4, 30), Size::new(12, 6))
            .into_styled(PrimitiveStyle::with_stroke(Rgb888::BLUE, 1))
            .draw(t)
    }

    #[test]
    fn rgb_target_draws_what_the_strict_mock_draws() {
        // The mock fails on overdraw; out of bounds it only records, so the
        // comparison below also shows that the target clips to 64x64.
        let mut mock = MockDisplay::<Rgb888>::new();
        mock.set_allow_out_of_bounds_drawing(true);
        scene(&mut mock).unwrap();
        for format in [PanelFormat::RGB8, PanelFormat::XRGB8888] {
            let stride = 64 * format.bytes + 8;
            let mut mem = vec![0u8; stride * 64];
            let mut t = RgbTarget::with_format(&mut mem, 64, 64, stride, format).unwrap();
            scene(&mut t).unwrap();
            for p in Rectangle::new(Point::zero(), Size::new(64, 64)).points() {
                let want = mock.get_pixel(p).unwrap_or(Rgb888::BLACK);
                assert_eq!(t.pixel(p), Some(want), "{} at {p}", format.describe());
            }
            // The rows' padding is never written.
            assert!(mem.chunks(stride).all(|r| r[64 * format.bytes..] == [0; 8]));
        }
    }

    #[test]
    fn blending_on_a_panel_format_matches_rgb8() {
        let color = Rgb888::new(0, 220, 120);
        let mut f = frame_of(130, 2, [200, 100, 8]);
        RgbTarget::for_frame(&mut f)
            .unwrap()
            .blend_hline(Point::new(-3, 1), 200, color, 102)
            .unwrap();
        let mut mem = vec![0u8; 130 * 2 * 4];
        let mut t =
            RgbTarget::with_format(&mut mem, 130, 2, 130 * 4, PanelFormat::XRGB8888).unwrap();
        t.fill_solid(&t.bounding_box(), Rgb888::new(200, 100, 8))
            .unwrap();
        t.blend_hline(Point::new(-3, 1), 200, color, 102).unwrap();
        for p in t.bounding_box().points() {
            let [r, g, b] = f.pixel(p.x as u32, p.y as u32);
            assert_eq!(t.pixel(p), Some(Rgb888::new(r, g, b)), "{p}");
        }
        assert_eq!(t.pixel(Point::new(0, 0)), Some(Rgb888::new(200, 100, 8)));
    }

    #[test]
    fn pack_unpack_565_and_bgr() {
        let f = PanelFormat::RGB565;
        assert_eq!(f.pack([255, 0, 0]), 0xF800);
        assert_eq!(f.pack([0, 255, 0]), 0x07E0);
        assert_eq!(f.unpack(0x001F), [0, 0, 255]);
        assert_eq!(f.unpack(0xFFFF), [255, 255, 255]);
        let bgr = PanelFormat::new(
            32,
            Channel {
                offset: 0,
                length: 8,
            },
            Channel {
                offset: 8,
                length: 8,
            },
            Channel {
                offset: 16,
                length: 8,
            },
        )
        .unwrap();
        assert_eq!(bgr.describe(), "XBGR8888");
        assert_eq!(bgr.pack([1, 2, 3]), 0x0003_0201);
        assert_eq!(PanelFormat::XRGB8888.pack([1, 2, 3]), 0x0001_0203);
        assert_eq!(PanelFormat::RGB565.describe(), "RGB565");
        assert!(PanelFormat::new(8, f.red, f.green, f.blue).is_err());
        // The frame's own layout is a format like the others.
        let mut px = [0u8; 3];
        PanelFormat::RGB8.store(&mut px, PanelFormat::RGB8.pack([1, 2, 3]));
        assert_eq!(px, [1, 2, 3]);
    }

    #[test]
    fn panel_target_clips_and_packs() {
        let mut mem = vec![0u8; 4 * 4 * 2];
        let mut view = RgbTarget::with_format(&mut mem, 4, 4, 8, PanelFormat::RGB565).unwrap();
        Rectangle::new(Point::new(2, 2), Size::new(5, 5))
            .into_styled(PrimitiveStyle::with_fill(Rgb888::new(0, 255, 0)))
            .draw(&mut view)
            .unwrap();
        assert_eq!(view.pixel(Point::new(3, 3)), Some(Rgb888::new(0, 255, 0)));
        assert_eq!(view.pixel(Point::new(1, 3)), Some(Rgb888::BLACK));
        assert_eq!(view.pixel(Point::new(4, 3)), None);
        assert!(RgbTarget::with_format(&mut mem, 5, 4, 8, PanelFormat::RGB565).is_err());
    }

    #[test]
    fn scaled_draws_blocks_without_overdraw_and_clips() {
        let mut d = MockDisplay::<Rgb888>::new();
        let mut s = Scaled::new(&mut d, 3);
        assert_eq!(s.bounding_box().size, Size::new(21, 21));
        s.draw_iter([
            Pixel(Point::new(0, 0), Rgb888::RED),
            Pixel(Point::new(1, 1), Rgb888::GREEN),
        ])
        .unwrap();
        d.assert_pattern(&["RRR   ", "RRR   ", "RRR   ", "   GGG", "   GGG", "   GGG"]);

        // Blocks are clipped by the target: on a 4x4 frame at scale 3 the
        // block at (0, 0) is whole, the one at (1, 1) shows one pixel.
        let mut f = frame_of(4, 4, [0, 0, 0]);
        let mut t = RgbTarget::for_frame(&mut f).unwrap();
        let mut s = Scaled::new(&mut t, 3);
        s.draw_iter([
            Pixel(Point::new(1, 1), Rgb888::WHITE),
            Pixel(Point::new(-1, 0), Rgb888::RED),
        ])
        .unwrap();
        s.fill_solid(
            &Rectangle::new(Point::zero(), Size::new(1, 1)),
            Rgb888::BLUE,
        )
        .unwrap();
        assert_eq!(f.pixel(3, 3), [255; 3]);
        assert_eq!(f.pixel(2, 2), [0, 0, 255]);
        assert_eq!(f.pixel(0, 3), [0; 3]);
    }
}
