//! Drawing into a display's memory (a mapped framebuffer page or a DRM
//! dumb buffer): pixel packing, letterboxed scaling of the composited
//! frame, and an embedded-graphics [`DrawTarget`] over the same memory.
//!
//! Safe code only: the display modules map the memory and lend it here as
//! a byte slice.

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;

use crate::frame::{Frame, Rect};
use crate::{Error, Result};

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
    pub fn unpack(&self, word: u32) -> [u8; 3] {
        let ch = |c: Channel| {
            let v = (word >> c.offset) & ((1 << c.length) - 1);
            let v = v << (8 - c.length);
            (v | (v >> c.length)) as u8
        };
        [ch(self.red), ch(self.green), ch(self.blue)]
    }

    #[inline]
    fn store(&self, dst: &mut [u8], word: u32) {
        dst.copy_from_slice(&word.to_le_bytes()[..self.bytes]);
    }

    /// Reads the pixel word at the start of `src`.
    pub fn load(&self, src: &[u8]) -> u32 {
        let mut w = [0u8; 4];
        w[..self.bytes].copy_from_slice(&src[..self.bytes]);
        u32::from_le_bytes(w)
    }
}

/// Where a `src_w` x `src_h` frame lands on a `dst_w` x `dst_h` panel,
/// scaled to fit with its aspect ratio kept, centred (letterbox/pillarbox).
pub fn letterbox(src_w: u32, src_h: u32, dst_w: u32, dst_h: u32) -> Rect {
    if src_w == 0 || src_h == 0 || dst_w == 0 || dst_h == 0 {
        return Rect {
            x: 0,
            y: 0,
            w: 0,
            h: 0,
        };
    }
    let (sw, sh, dw, dh) = (
        u64::from(src_w),
        u64::from(src_h),
        u64::from(dst_w),
        u64::from(dst_h),
    );
    // Fit by width unless that makes it too tall.
    let (w, h) = if dw * sh <= dh * sw {
        (dw, (sh * dw / sw).max(1))
    } else {
        ((sw * dh / sh).max(1), dh)
    };
    Rect {
        x: ((dw - w) / 2) as u32,
        y: ((dh - h) / 2) as u32,
        w: w as u32,
        h: h as u32,
    }
}

/// Precomputed nearest-neighbour scaling of one frame size onto one panel.
#[derive(Debug, Default)]
pub struct Scaler {
    key: (u32, u32, u32, u32),
    /// Destination rectangle on the panel.
    pub area: Option<Rect>,
    /// Source column (in bytes, x*3) for each destination column.
    xs: Vec<usize>,
    /// Source row for each destination row.
    ys: Vec<u32>,
}

impl Scaler {
    /// Recomputes the maps when the frame or panel size changed; returns
    /// true when it did (the caller then repaints the bars).
    pub fn prepare(&mut self, frame: &Frame, panel_w: u32, panel_h: u32) -> bool {
        let key = (frame.width, frame.height, panel_w, panel_h);
        if self.area.is_some() && self.key == key {
            return false;
        }
        let area = letterbox(frame.width, frame.height, panel_w, panel_h);
        self.xs = (0..area.w)
            .map(|x| (u64::from(x) * u64::from(frame.width) / u64::from(area.w)) as usize * 3)
            .collect();
        self.ys = (0..area.h)
            .map(|y| (u64::from(y) * u64::from(frame.height) / u64::from(area.h)) as u32)
            .collect();
        self.key = key;
        self.area = Some(area);
        true
    }
}

/// A display buffer lent for one frame: memory, geometry and format.
pub struct PanelView<'a> {
    mem: &'a mut [u8],
    width: u32,
    height: u32,
    stride: usize,
    format: PanelFormat,
}

impl<'a> PanelView<'a> {
    /// Wraps `mem` (at least `stride * height` bytes).
    pub fn new(
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
        Ok(PanelView {
            mem,
            width,
            height,
            stride,
            format,
        })
    }

    /// Draws `frame` scaled into `scaler`'s area (prepared for this frame and panel).
    pub fn blit(&mut self, frame: &Frame, scaler: &Scaler) {
        let Some(area) = scaler.area else { return };
        let bpp = self.format.bytes;
        let row_bytes = frame.width as usize * 3;
        for (dy, &sy) in scaler.ys.iter().enumerate() {
            let src = &frame.rgb[sy as usize * row_bytes..][..row_bytes];
            let start = (area.y as usize + dy) * self.stride + area.x as usize * bpp;
            let line = &mut self.mem[start..start + area.w as usize * bpp];
            for (out, &sx) in line.chunks_exact_mut(bpp).zip(&scaler.xs) {
                let word = self.format.pack([src[sx], src[sx + 1], src[sx + 2]]);
                self.format.store(out, word);
            }
        }
    }

    /// The colour at panel pixel (x, y) (for read-back checks).
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = y as usize * self.stride + x as usize * self.format.bytes;
        self.format.unpack(self.format.load(&self.mem[i..]))
    }
}

impl OriginDimensions for PanelView<'_> {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for PanelView<'_> {
    type Color = Rgb888;
    type Error = std::convert::Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> std::result::Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        let bpp = self.format.bytes;
        for Pixel(p, c) in pixels {
            if p.x >= 0 && p.y >= 0 && (p.x as u32) < self.width && (p.y as u32) < self.height {
                let i = p.y as usize * self.stride + p.x as usize * bpp;
                let word = self.format.pack([c.r(), c.g(), c.b()]);
                self.format.store(&mut self.mem[i..i + bpp], word);
            }
        }
        Ok(())
    }

    /// Row-wise fill: the letterbox bars are cleared with this every time
    /// the geometry changes, so it must not go pixel by pixel.
    fn fill_solid(
        &mut self,
        area: &Rectangle,
        color: Self::Color,
    ) -> std::result::Result<(), Self::Error> {
        let area = area.intersection(&self.bounding_box());
        let Some(br) = area.bottom_right() else {
            return Ok(());
        };
        let bpp = self.format.bytes;
        let word = self.format.pack([color.r(), color.g(), color.b()]);
        let bytes = word.to_le_bytes();
        let (x0, y0) = (area.top_left.x as usize, area.top_left.y as usize);
        for y in y0..=br.y as usize {
            let start = y * self.stride + x0 * bpp;
            let line = &mut self.mem[start..start + area.size.width as usize * bpp];
            for px in line.chunks_exact_mut(bpp) {
                px.copy_from_slice(&bytes[..bpp]);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};

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
    }

    #[test]
    fn letterbox_keeps_aspect_and_centres() {
        assert_eq!(
            letterbox(640, 480, 1280, 720),
            Rect {
                x: 160,
                y: 0,
                w: 960,
                h: 720
            }
        );
        assert_eq!(
            letterbox(1280, 720, 640, 480),
            Rect {
                x: 0,
                y: 60,
                w: 640,
                h: 360
            }
        );
        assert_eq!(letterbox(100, 100, 100, 100), Rect::full(100, 100));
    }

    #[test]
    fn blit_scales_into_the_box_and_leaves_bars() {
        // 2x1 frame (red, blue) onto an 8x8 panel: 8x4 box at y = 2.
        let mut frame = Frame::new(2, 1);
        frame.rgb.copy_from_slice(&[255, 0, 0, 0, 0, 255]);
        let stride = 8 * 4 + 16; // padded lines
        let mut mem = vec![0u8; stride * 8];
        let mut view = PanelView::new(&mut mem, 8, 8, stride, PanelFormat::XRGB8888).unwrap();
        view.fill_solid(
            &Rectangle::new(Point::zero(), Size::new(8, 8)),
            Rgb888::new(9, 9, 9),
        )
        .unwrap();
        let mut s = Scaler::default();
        assert!(s.prepare(&frame, 8, 8));
        assert!(!s.prepare(&frame, 8, 8));
        view.blit(&frame, &s);
        assert_eq!(view.pixel(0, 2), [255, 0, 0]);
        assert_eq!(view.pixel(3, 5), [255, 0, 0]);
        assert_eq!(view.pixel(4, 2), [0, 0, 255]);
        assert_eq!(view.pixel(7, 5), [0, 0, 255]);
        assert_eq!(view.pixel(0, 1), [9, 9, 9]);
        assert_eq!(view.pixel(7, 6), [9, 9, 9]);
        // The line padding is never written.
        assert!(mem[8 * 4..stride].iter().all(|&b| b == 0));
    }

    #[test]
    fn draw_target_clips_and_packs() {
        let mut mem = vec![0u8; 4 * 4 * 2];
        let mut view = PanelView::new(&mut mem, 4, 4, 8, PanelFormat::RGB565).unwrap();
        Rectangle::new(Point::new(2, 2), Size::new(5, 5))
            .into_styled(PrimitiveStyle::with_fill(Rgb888::new(0, 255, 0)))
            .draw(&mut view)
            .unwrap();
        assert_eq!(view.pixel(3, 3), [0, 255, 0]);
        assert_eq!(view.pixel(1, 3), [0, 0, 0]);
        assert!(PanelView::new(&mut mem, 5, 4, 8, PanelFormat::RGB565).is_err());
    }
}
