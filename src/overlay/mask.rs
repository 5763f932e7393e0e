//! Drawing a segmentation mask: the alpha-blended fill and the outline.
//!
//! The mask is drawn run by run (a row's consecutive pixels that are all
//! fill or all outline), so a [`BlendTarget`] blends or fills whole spans
//! at once; each target pixel is touched at most once, so the strict
//! `MockDisplay` of the tests checks it for overdraw.

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;

use super::target::{blend, BlendTarget};
use crate::frame::Mask;

/// Draws `mask` at its `roi` (frame coordinates) on `target`.
///
/// Every set pixel is blended with `fill` at opacity `alpha`, except, when
/// `outline` is given, the mask's boundary pixels, which are drawn opaque in
/// the outline colour instead. A boundary pixel is a set pixel within
/// `outline_width` steps (4-neighbour steps, i.e. Manhattan distance; the
/// width is clamped to 1..=2) of an unset pixel or of the roi's edge; with
/// width 1 that is a set pixel with a 4-neighbour outside the mask. Each
/// target pixel is touched at most once, and only pixels inside the target's
/// bounding box are drawn (the overlay clips itself, so it also works on
/// strict targets). A mask whose data is shorter than its roi draws nothing
/// (logged: it is a bug upstream).
pub fn draw_mask<T: BlendTarget>(
    target: &mut T,
    mask: &Mask,
    fill: Rgb888,
    alpha: u8,
    outline: Option<Rgb888>,
    outline_width: u32,
) -> Result<(), T::Error> {
    /// Offsets within Manhattan distance 1, then those at distance 2.
    const NEAR: [(isize, isize); 12] = [
        (-1, 0),
        (1, 0),
        (0, -1),
        (0, 1),
        (-2, 0),
        (2, 0),
        (0, -2),
        (0, 2),
        (-1, -1),
        (1, -1),
        (-1, 1),
        (1, 1),
    ];
    let roi = mask.roi;
    let (w, h) = (roi.w as usize, roi.h as usize);
    if w == 0 || h == 0 {
        return Ok(());
    }
    if mask.data.len() < w * h {
        log::error!(
            "mask of frame {} holds {} bytes for a {}x{} roi; not drawn",
            mask.frame_id,
            mask.data.len(),
            w,
            h
        );
        return Ok(());
    }
    let bb = target.bounding_box();
    let Some(br) = bb.bottom_right() else {
        return Ok(());
    };
    // Mask columns and rows that land inside the target, in i64 so that no
    // roi position can overflow.
    let (rx, ry) = (i64::from(roi.x), i64::from(roi.y));
    let mx0 = (i64::from(bb.top_left.x) - rx).clamp(0, w as i64) as usize;
    let mx1 = (i64::from(br.x) + 1 - rx).clamp(0, w as i64) as usize;
    let my0 = (i64::from(bb.top_left.y) - ry).clamp(0, h as i64) as usize;
    let my1 = (i64::from(br.y) + 1 - ry).clamp(0, h as i64) as usize;
    let near = match (outline, outline_width) {
        (None, _) => &NEAR[..0],
        (Some(_), 0 | 1) => &NEAR[..4],
        (Some(_), _) => &NEAR[..],
    };
    // Unset, or outside the roi.
    let outside = |mx: isize, my: isize| {
        mx < 0
            || my < 0
            || mx as usize >= w
            || my as usize >= h
            || mask.data[my as usize * w + mx as usize] == 0
    };

    for my in my0..my1 {
        let row = |r: usize| &mask.data[r * w..(r + 1) * w];
        let cur = row(my);
        // Rows at distance 1 and 2, for the fast path (empty when absent,
        // and then the fast path is not taken).
        let up1 = if my >= 1 { row(my - 1) } else { &[] };
        let up2 = if my >= 2 { row(my - 2) } else { &[] };
        let dn1 = if my + 1 < h { row(my + 1) } else { &[] };
        let dn2 = if my + 2 < h { row(my + 2) } else { &[] };
        let k = near.len().min(8) / 4; // 0, 1 or 2
        let is_edge = |mx: usize| match k {
            0 => false,
            // Away from the roi's edges every neighbour is in the roi: plain
            // loads (most mask pixels take this path).
            1 if my >= 1 && my + 1 < h && mx >= 1 && mx + 1 < w => {
                cur[mx - 1] == 0 || cur[mx + 1] == 0 || up1[mx] == 0 || dn1[mx] == 0
            }
            2 if my >= 2 && my + 2 < h && mx >= 2 && mx + 2 < w => {
                cur[mx - 2..=mx + 2].contains(&0)
                    || up1[mx - 1..=mx + 1].contains(&0)
                    || dn1[mx - 1..=mx + 1].contains(&0)
                    || up2[mx] == 0
                    || dn2[mx] == 0
            }
            _ => near
                .iter()
                .any(|&(dx, dy)| outside(mx as isize + dx, my as isize + dy)),
        };
        // Fits in i32: it lies inside the target's bounding box.
        let y = (ry + my as i64) as i32;
        let mut mx = mx0;
        while mx < mx1 {
            if cur[mx] == 0 {
                // Most of a mask is background: it is skipped 16 bytes at a
                // time, so a 1080p frame's mask scan stays well under a
                // millisecond.
                mx += 1;
                while mx + 16 <= mx1 && cur[mx..mx + 16] == [0u8; 16] {
                    mx += 16;
                }
                continue;
            }
            let start = mx;
            let edge = is_edge(mx);
            mx += 1;
            while mx < mx1 && cur[mx] != 0 && is_edge(mx) == edge {
                mx += 1;
            }
            let p = Point::new((rx + start as i64) as i32, y);
            let len = (mx - start) as u32;
            match outline {
                Some(c) if edge => target.fill_solid(&Rectangle::new(p, Size::new(len, 1)), c)?,
                _ if alpha > 0 => target.blend_hline(p, len, fill, alpha)?,
                _ => {}
            }
        }
    }
    Ok(())
}

/// A brighter, paler version of `fill` for the outline, so the edge reads
/// on both dark and bright anatomy without a second hue.
pub fn outline_color(fill: Rgb888) -> Rgb888 {
    blend(fill, Rgb888::WHITE, 110)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::frame::Rect;
    use embedded_graphics::mock_display::MockDisplay;

    /// The strict mock display, made blendable: the blended colour (over
    /// black where nothing is drawn yet) goes through `draw_iter`, so the
    /// mock still fails on overdraw and on out-of-bounds drawing.
    impl BlendTarget for MockDisplay<Rgb888> {
        fn blend_hline(
            &mut self,
            start: Point,
            len: u32,
            color: Rgb888,
            alpha: u8,
        ) -> Result<(), Self::Error> {
            for i in 0..len as i32 {
                let p = start + Point::new(i, 0);
                let under = self.get_pixel(p).unwrap_or(Rgb888::BLACK);
                Pixel(p, blend(under, color, alpha)).draw(self)?;
            }
            Ok(())
        }
    }

    /// A mask over a roi at (x, y) from ASCII art: `#` set, anything else unset.
    pub(crate) fn mask_from(x: u32, y: u32, rows: &[&str]) -> Mask {
        let roi = Rect {
            x,
            y,
            w: rows[0].len() as u32,
            h: rows.len() as u32,
        };
        let mut m = Mask::new(roi);
        for (my, r) in rows.iter().enumerate() {
            for (mx, c) in r.bytes().enumerate() {
                m.data[my * roi.w as usize + mx] = u8::from(c == b'#');
            }
        }
        m
    }

    const HOLE: [&str; 7] = [
        "........", ".######.", ".######.", ".##..##.", ".######.", ".######.", "........",
    ];

    #[test]
    fn pixels_after_long_background_runs_are_drawn() {
        use crate::frame::Frame;
        use crate::overlay::RgbTarget;
        // Set pixels at and around the 16-byte steps of the background skip.
        let set = [0usize, 15, 16, 17, 31, 48, 63, 64, 77, 79];
        let row: String = (0..80)
            .map(|x| if set.contains(&x) { '#' } else { '.' })
            .collect();
        let m = mask_from(0, 0, &[&row]);
        let mut f = Frame::new(80, 1);
        let mut t = RgbTarget::for_frame(&mut f).unwrap();
        draw_mask(&mut t, &m, Rgb888::WHITE, 255, None, 1).unwrap();
        for x in 0..80 {
            let want = if set.contains(&x) { 255 } else { 0 };
            assert_eq!(f.pixel(x as u32, 0), [want; 3], "x = {x}");
        }
    }

    #[test]
    fn outline_is_boundary_and_fill_is_interior() {
        let mut d = MockDisplay::<Rgb888>::new();
        draw_mask(
            &mut d,
            &mask_from(0, 0, &HOLE),
            Rgb888::RED,
            255,
            Some(Rgb888::GREEN),
            1,
        )
        .unwrap();
        d.assert_pattern(&[
            "        ", " GGGGGG ", " GRGGRG ", " GG  GG ", " GRGGRG ", " GGGGGG ",
        ]);
    }

    #[test]
    fn fill_only_covers_every_set_pixel_at_roi_offset() {
        let mut d = MockDisplay::<Rgb888>::new();
        draw_mask(&mut d, &mask_from(3, 2, &HOLE), Rgb888::RED, 255, None, 1).unwrap();
        d.assert_pattern(&[
            "          ",
            "          ",
            "          ",
            "    RRRRRR",
            "    RRRRRR",
            "    RR  RR",
            "    RRRRRR",
            "    RRRRRR",
        ]);
    }

    #[test]
    fn roi_edge_counts_as_outside() {
        let mut d = MockDisplay::<Rgb888>::new();
        draw_mask(
            &mut d,
            &mask_from(1, 1, &["###", "###", "###"]),
            Rgb888::RED,
            255,
            Some(Rgb888::BLUE),
            1,
        )
        .unwrap();
        d.assert_pattern(&["    ", " BBB", " BRB", " BBB"]);
    }

    #[test]
    fn outline_two_wide() {
        let mut d = MockDisplay::<Rgb888>::new();
        let m = mask_from(0, 0, &["########"; 8]);
        draw_mask(&mut d, &m, Rgb888::RED, 255, Some(Rgb888::GREEN), 2).unwrap();
        d.assert_pattern(&[
            "GGGGGGGG", "GGGGGGGG", "GGRRRRGG", "GGRRRRGG", "GGRRRRGG", "GGRRRRGG", "GGGGGGGG",
            "GGGGGGGG",
        ]);
        // Manhattan distance: an inner corner two steps away diagonally
        // counts, so a lone hole gets a diamond-shaped ring.
        let mut hole = ["#########"; 9];
        hole[4] = "####.####";
        let mut d = MockDisplay::<Rgb888>::new();
        draw_mask(
            &mut d,
            &mask_from(0, 0, &hole),
            Rgb888::RED,
            255,
            Some(Rgb888::GREEN),
            2,
        )
        .unwrap();
        d.assert_pattern(&[
            "GGGGGGGGG",
            "GGGGGGGGG",
            "GGRRGRRGG",
            "GGRGGGRGG",
            "GGGG GGGG",
            "GGRGGGRGG",
            "GGRRGRRGG",
            "GGGGGGGGG",
            "GGGGGGGGG",
        ]);
    }

    #[test]
    fn mask_beyond_target_is_clipped() {
        // The mock panics on any out-of-bounds pixel: drawing must clip itself.
        let mut d = MockDisplay::<Rgb888>::new();
        let m = mask_from(60, 62, &["########"; 4]);
        draw_mask(&mut d, &m, Rgb888::RED, 255, Some(Rgb888::GREEN), 1).unwrap();
        assert_eq!(d.get_pixel(Point::new(60, 62)), Some(Rgb888::GREEN));
        assert_eq!(d.get_pixel(Point::new(61, 63)), Some(Rgb888::RED));
        // Clipped at the target's edge, which is not the mask's edge.
        assert_eq!(d.get_pixel(Point::new(63, 63)), Some(Rgb888::RED));
        assert_eq!(
            d.affected_area(),
            Rectangle::new(Point::new(60, 62), Size::new(4, 2))
        );

        let far = mask_from(u32::MAX - 4, u32::MAX - 4, &["###"; 3]);
        let mut d = MockDisplay::<Rgb888>::new();
        draw_mask(&mut d, &far, Rgb888::RED, 255, Some(Rgb888::GREEN), 1).unwrap();
        assert_eq!(d.affected_area().size, Size::zero());
    }

    #[test]
    fn short_mask_data_draws_nothing() {
        let mut m = mask_from(0, 0, &["##", "##"]);
        m.data.truncate(3);
        let mut d = MockDisplay::<Rgb888>::new();
        draw_mask(&mut d, &m, Rgb888::RED, 255, None, 1).unwrap();
        assert_eq!(d.affected_area().size, Size::zero());
    }
}
