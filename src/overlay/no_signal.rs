//! The NO SIGNAL screen.
//!
//! This is the only NO SIGNAL path: the compositor ([`crate::pipeline`])
//! draws it, at the source's pace, whenever no frame has arrived for a
//! while, so the display says that the source is silent instead of freezing
//! on the last frame. Sources do not draw it themselves: a source that loses
//! its device reports the loss and the compositor shows it. It draws through
//! the one RGB target, [`RgbTarget`], with the [`Scaled`] adapter for the
//! large title.

use std::fmt::Write as _;
use std::time::Duration;

use embedded_graphics::mono_font::{ascii::FONT_10X20, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::text::{Alignment, Text};

use super::hud::Line;
use super::target::{RgbTarget, Scaled};
use crate::frame::Frame;

/// Background of the NO SIGNAL screen (dark grey, so that a black panel
/// and a NO SIGNAL screen are told apart).
pub const NO_SIGNAL_BG: [u8; 3] = [32, 32, 32];
/// Colour of the NO SIGNAL title.
pub const NO_SIGNAL_FG: [u8; 3] = [255, 255, 255];
/// Colour of the detail line under the title.
const DETAIL: Rgb888 = Rgb888::new(200, 200, 200);
/// Longest detail line kept (a long source name is cut).
const DETAIL_CAP: usize = 128;

/// Paints the NO SIGNAL screen into `frame`, resized to `size` (its buffer
/// is reused): the title, and under it `label` (the source), the number of
/// NO SIGNAL frames shown so far and how long the signal has been lost.
pub fn draw_no_signal(
    frame: &mut Frame,
    size: (u32, u32),
    label: &str,
    attempts: u32,
    lost_for: Duration,
) {
    let (w, h) = size;
    frame.width = w;
    frame.height = h;
    frame.rgb.resize(w as usize * h as usize * 3, 0);
    let Ok(mut target) = RgbTarget::for_frame(frame) else {
        // Unreachable: the buffer was just sized for the frame.
        return;
    };
    let [r, g, b] = NO_SIGNAL_BG;
    let all = target.bounding_box();
    // Drawing into memory cannot fail (the error type is Infallible).
    let _ = target.fill_solid(&all, Rgb888::new(r, g, b));

    // The title is the font's glyphs scaled up to about half the width.
    let scale = (w / 2 / (9 * 10)).clamp(1, 8);
    let [r, g, b] = NO_SIGNAL_FG;
    let title = MonoTextStyle::new(&FONT_10X20, Rgb888::new(r, g, b));
    let centre = Point::new((w / 2 / scale) as i32, (h / 2 / scale) as i32);
    let _ = Text::with_alignment("NO SIGNAL", centre, title, Alignment::Center)
        .draw(&mut Scaled::new(&mut target, scale));

    let mut detail = Line::<DETAIL_CAP>::default();
    let _ = write!(
        detail,
        "{label} - retry {attempts}, {} s",
        lost_for.as_secs()
    );
    let y = (h / 2 + 20 * scale) as i32 + 10;
    let _ = Text::with_alignment(
        detail.0.as_str(),
        Point::new((w / 2) as i32, y),
        MonoTextStyle::new(&FONT_10X20, DETAIL),
        Alignment::Center,
    )
    .draw(&mut target);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(f: &Frame, c: [u8; 3]) -> usize {
        f.rgb.chunks_exact(3).filter(|p| *p == c).count()
    }

    #[test]
    fn screen_is_resized_grey_with_white_title_and_detail() {
        let mut f = Frame::new(4, 4);
        f.id = 9;
        draw_no_signal(&mut f, (640, 480), "/dev/video0", 3, Duration::from_secs(5));
        assert_eq!(
            (f.width, f.height, f.rgb.len(), f.id),
            (640, 480, 640 * 480 * 3, 9)
        );
        assert_eq!(f.pixel(0, 0), NO_SIGNAL_BG);
        assert_eq!(f.pixel(639, 479), NO_SIGNAL_BG);
        // The title is scaled 3x (640 / 2 / 90): a large white area, centred.
        let white = count(&f, NO_SIGNAL_FG);
        assert!(white > 9 * 200, "{white} title pixels");
        let (mut x0, mut x1) = (u32::MAX, 0);
        for y in 0..240 {
            for x in 0..640 {
                if f.pixel(x, y) == NO_SIGNAL_FG {
                    (x0, x1) = (x0.min(x), x1.max(x));
                }
            }
        }
        assert!(
            x0 > 100 && x1 < 540 && ((x0 + x1) / 2).abs_diff(320) < 16,
            "{x0}..{x1}"
        );
        // The detail line is under the title.
        let below = (260..480).flat_map(|y| (0..640).map(move |x| (x, y)));
        assert!(below.clone().any(|(x, y)| f.pixel(x, y) == [200; 3]));
        assert!(!below
            .into_iter()
            .any(|(x, y)| f.pixel(x, y) == NO_SIGNAL_FG));
    }

    #[test]
    fn detail_line_changes_with_the_count_and_a_long_label_is_cut() {
        let draw = |label: &str, n, s| {
            let mut f = Frame::new(1, 1);
            draw_no_signal(&mut f, (320, 240), label, n, Duration::from_secs(s));
            f
        };
        let a = draw("cam", 1, 0);
        assert_ne!(a.rgb, draw("cam", 2, 0).rgb);
        assert_ne!(a.rgb, draw("cam", 1, 7).rgb);
        assert_eq!(a.rgb, draw("cam", 1, 0).rgb);
        let long = "x".repeat(1000);
        let f = draw(&long, 1, 0);
        assert_eq!(f.pixel(0, 0), NO_SIGNAL_BG);
    }

    #[test]
    fn tiny_sizes_do_not_panic() {
        for size in [(0, 0), (1, 1), (0, 10), (30, 2), (2000, 20)] {
            let mut f = Frame::new(8, 8);
            draw_no_signal(&mut f, size, "cam", 1, Duration::ZERO);
            assert_eq!((f.width, f.height), size);
        }
    }
}
