//! Measurements on screen: each lesion's two diameters as calipers (a line
//! with end ticks) with a label of their lengths and the area, and a scale
//! bar in millimetres, or *uncalibrated* (with no millimetre figure
//! anywhere) when the pixel spacing is not known.

use std::fmt::Write as _;

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{Line, PrimitiveStyle, Rectangle};

use super::hud::{layout, panel_size, text_panel, Layout, Line as TextLine, TEXT};
use super::target::BlendTarget;
use crate::measure::{Calibration, Lesion};

/// Caliper colour: yellow, apart from the mask's green and the HUD's white.
pub const CALIPER: Rgb888 = Rgb888::new(255, 230, 60);

/// The label of one lesion: `"12.3 x 8.1 mm  95 mm2"`, or `None` when
/// uncalibrated (no millimetre figure is ever made up).
pub(super) fn lesion_label(l: &Lesion) -> Option<TextLine> {
    let (long, short, area) = (l.long_mm?, l.short_mm?, l.area_mm2?);
    let mut t: TextLine = TextLine::default();
    let _ = write!(t, "{long:.1} x {short:.1} mm  {area:.0} mm2");
    Some(t)
}

/// The scale bar's length: the largest of 1, 2, 5, 10, 20, 50, 100 mm that
/// fits in `max_px` pixels at `mm_per_px`, with its length in pixels.
pub fn scale_bar(mm_per_px: f64, max_px: u32) -> Option<(u32, u32)> {
    [100u32, 50, 20, 10, 5, 2, 1]
        .into_iter()
        .map(|mm| (mm, (f64::from(mm) / mm_per_px).round() as u32))
        .find(|&(_, px)| px >= 8 && px <= max_px)
}

/// Draws every lesion's calipers and label, then the scale bar (bottom
/// right) or *uncalibrated*.
pub fn draw_measurements<T: BlendTarget>(
    target: &mut T,
    lesions: &[Lesion],
    cal: Calibration,
) -> Result<(), T::Error> {
    let bb = target.bounding_box();
    let Layout {
        font,
        pad,
        margin,
        outline_width,
    } = layout(bb.size);
    let stroke = PrimitiveStyle::with_stroke(CALIPER, outline_width);
    let at = |p: (f32, f32)| Point::new(p.0.round() as i32, p.1.round() as i32);
    for l in lesions {
        for seg in [l.long, l.short] {
            let (a, b) = (at(seg.a), at(seg.b));
            Line::new(a, b).into_styled(stroke).draw(target)?;
            // End ticks across the segment, 3 pixels each way.
            let d = b - a;
            let len = f64::from(d.x).hypot(f64::from(d.y)).max(1.0);
            let n = Point::new(
                (-f64::from(d.y) * 3.0 / len).round() as i32,
                (f64::from(d.x) * 3.0 / len).round() as i32,
            );
            for end in [a, b] {
                Line::new(end - n, end + n)
                    .into_styled(stroke)
                    .draw(target)?;
            }
        }
        if let Some(label) = lesion_label(l) {
            // Beside the long axis's lower end, kept inside the frame.
            let size = panel_size([label.0.as_str()].into_iter(), font, pad);
            let end = at(if l.long.a.1 > l.long.b.1 {
                l.long.a
            } else {
                l.long.b
            });
            // A label wider than a small frame starts at its left edge.
            let (left, top) = (bb.top_left.x, bb.top_left.y);
            let x = (end.x + 4)
                .min(left + bb.size.width as i32 - size.width as i32)
                .max(left);
            let y = (end.y + 4)
                .min(top + bb.size.height as i32 - size.height as i32)
                .max(top);
            text_panel(
                target,
                Point::new(x, y),
                &[(label.0.as_str(), CALIPER)],
                font,
                pad,
            )?;
        }
    }
    // Bottom right: the scale, or the word that says there is none.
    let right = bb.top_left.x + bb.size.width as i32 - margin;
    let bottom = bb.top_left.y + bb.size.height as i32 - margin;
    match cal
        .mm_per_px
        .and_then(|(sx, _)| scale_bar(sx, bb.size.width / 4))
    {
        Some((mm, px)) => {
            let mut t: TextLine = TextLine::default();
            let _ = write!(t, "{mm} mm");
            let size = panel_size([t.0.as_str()].into_iter(), font, pad);
            let bar_y = bottom - size.height as i32 - 4;
            let x0 = right - px as i32;
            Rectangle::new(Point::new(x0, bar_y), Size::new(px, 3))
                .into_styled(PrimitiveStyle::with_fill(TEXT))
                .draw(target)?;
            for x in [x0, right - 1] {
                Rectangle::new(Point::new(x, bar_y - 4), Size::new(1, 11))
                    .into_styled(PrimitiveStyle::with_fill(TEXT))
                    .draw(target)?;
            }
            text_panel(
                target,
                Point::new(right - size.width as i32, bottom - size.height as i32),
                &[(t.0.as_str(), TEXT)],
                font,
                pad,
            )?;
        }
        None => {
            const UNCALIBRATED: &str = "uncalibrated";
            let size = panel_size([UNCALIBRATED].into_iter(), font, pad);
            text_panel(
                target,
                Point::new(right - size.width as i32, bottom - size.height as i32),
                &[(UNCALIBRATED, TEXT)],
                font,
                pad,
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Frame, Mask, Rect};
    use crate::measure::Measurer;
    use crate::overlay::RgbTarget;

    #[test]
    fn labels_only_in_mm_and_scale_bars_that_fit() {
        let mut l = Lesion {
            long_mm: Some(12.34),
            short_mm: Some(8.06),
            area_mm2: Some(95.4),
            ..Default::default()
        };
        assert_eq!(
            lesion_label(&l).unwrap().0.as_str(),
            "12.3 x 8.1 mm  95 mm2"
        );
        l.long_mm = None;
        assert!(lesion_label(&l).is_none());
        // 0.1 mm per pixel, 160 pixels available: 10 mm is 100 px.
        assert_eq!(scale_bar(0.1, 160), Some((10, 100)));
        assert_eq!(scale_bar(0.5, 160), Some((50, 100)));
        assert_eq!(scale_bar(0.1, 5), None);
    }

    #[test]
    fn calipers_and_the_scale_are_drawn_where_they_belong() {
        let (w, h) = (200u32, 150u32);
        let mut mask = Mask::new(Rect::full(w, h));
        for y in 40..80u32 {
            for x in 50..130u32 {
                mask.data[(y * w + x) as usize] = 1;
            }
        }
        let draw = |cal: Calibration| {
            let mut lesions = Vec::new();
            Measurer::new(10).measure(&mask, cal, &mut lesions);
            let mut f = Frame::new(w, h);
            let mut t = RgbTarget::for_frame(&mut f).unwrap();
            draw_measurements(&mut t, &lesions, cal).unwrap();
            (f, lesions)
        };
        let (f, lesions) = draw(Calibration::spacing(0.2, 0.2));
        // The long caliper's midpoint is painted in the caliper colour.
        let l = lesions[0];
        let mid = (
            ((l.long.a.0 + l.long.b.0) / 2.0).round() as u32,
            ((l.long.a.1 + l.long.b.1) / 2.0).round() as u32,
        );
        let near = (mid.0.saturating_sub(1)..=mid.0 + 1)
            .flat_map(|x| (mid.1.saturating_sub(1)..=mid.1 + 1).map(move |y| (x, y)))
            .any(|(x, y)| f.pixel(x, y) == [255, 230, 60]);
        assert!(near, "{l:?}");
        // 0.2 mm per pixel, a quarter of 200 px: a 5 mm bar of 25 px.
        let white_in_corner = |f: &Frame| {
            (w - 60..w)
                .flat_map(|x| (h - 40..h).map(move |y| (x, y)))
                .filter(|&(x, y)| f.pixel(x, y)[0] > 200)
                .count()
        };
        assert!(white_in_corner(&f) > 25);
        // Uncalibrated: the calipers, no label (fewer caliper pixels).
        let (g, _) = draw(Calibration::NONE);
        let caliper = |f: &Frame| {
            f.rgb
                .chunks_exact(3)
                .filter(|p| p == &[255, 230, 60])
                .count()
        };
        assert!(caliper(&g) < caliper(&f));
        assert!(white_in_corner(&g) > 0, "the word uncalibrated");
    }
}
