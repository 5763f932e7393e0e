//! Showing the composited frame on a display's memory (a mapped
//! framebuffer page or a DRM dumb buffer): where it lands (letterboxed, its
//! aspect kept) and the scaled copy into the display's pixel format.
//!
//! Everything else drawn on that memory (the bars, a clear) goes through the
//! one RGB target, [`RgbTarget`] over the display's memory and
//! [`PanelFormat`]: the displays have no drawing code of their own.
//!
//! Safe code only: the display modules map the memory and lend it here as
//! a byte slice.

#![deny(unsafe_code)]

pub use crate::overlay::{Channel, PanelFormat, RgbTarget};

use embedded_graphics::prelude::*;

use crate::frame::{Frame, Rect};
use crate::{Error, Result};

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

    /// Draws `frame` scaled into the area on `target` (prepared for this
    /// frame and the target's size).
    pub fn blit(&self, frame: &Frame, target: &mut RgbTarget<'_>) {
        let Some(area) = self.area else { return };
        let format = target.format();
        let bpp = format.bytes;
        let row_bytes = frame.width as usize * 3;
        for (dy, &sy) in self.ys.iter().enumerate() {
            let src = &frame.rgb[sy as usize * row_bytes..][..row_bytes];
            let Some(row) = target.row_mut(area.y + dy as u32) else {
                return;
            };
            let line = &mut row[area.x as usize * bpp..][..area.w as usize * bpp];
            for (out, &sx) in line.chunks_exact_mut(bpp).zip(&self.xs) {
                format.store(out, format.pack([src[sx], src[sx + 1], src[sx + 2]]));
            }
        }
    }
}

/// The colour at (x, y) of a display buffer, for read-back checks; an
/// error outside the buffer.
pub fn read_back(view: &RgbTarget<'_>, x: u32, y: u32) -> Result<[u8; 3]> {
    let p = Point::new(
        x.try_into().unwrap_or(i32::MAX),
        y.try_into().unwrap_or(i32::MAX),
    );
    let c = view.pixel(p).ok_or_else(|| {
        Error::invalid(
            "display read-back",
            format!(
                "({x}, {y}) is outside the {}x{} panel",
                view.size().width,
                view.size().height
            ),
        )
    })?;
    Ok([c.r(), c.g(), c.b()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_graphics::pixelcolor::Rgb888;

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
        let mut view =
            RgbTarget::with_format(&mut mem, 8, 8, stride, PanelFormat::XRGB8888).unwrap();
        view.fill_solid(&view.bounding_box(), Rgb888::new(9, 9, 9))
            .unwrap();
        let mut s = Scaler::default();
        assert!(s.prepare(&frame, 8, 8));
        assert!(!s.prepare(&frame, 8, 8));
        s.blit(&frame, &mut view);
        let at = |x, y| view.pixel(Point::new(x, y));
        assert_eq!(at(0, 2), Some(Rgb888::RED));
        assert_eq!(at(3, 5), Some(Rgb888::RED));
        assert_eq!(at(4, 2), Some(Rgb888::BLUE));
        assert_eq!(at(7, 5), Some(Rgb888::BLUE));
        assert_eq!(at(0, 1), Some(Rgb888::new(9, 9, 9)));
        assert_eq!(at(7, 6), Some(Rgb888::new(9, 9, 9)));
        // The line padding is never written.
        assert!(mem[8 * 4..stride].iter().all(|&b| b == 0));
    }
}
