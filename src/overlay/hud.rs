//! The HUD: rate, latency, model and overlay state as text on translucent
//! panels, and the sizes (font, padding, outline width) for a target's size.
//!
//! Nothing here allocates per frame: lines are formatted into fixed-size
//! [`Line`]s on the stack, cut at their capacity rather than grown.

use std::fmt::Write as _;
use std::time::Instant;

use embedded_graphics::mono_font::ascii::{FONT_6X10, FONT_9X15};
use embedded_graphics::mono_font::{MonoFont, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;
use embedded_graphics::text::{Baseline, Text};

use super::target::{Blend, BlendTarget};
use super::OverlayState;

/// Per-frame numbers for the HUD.
#[derive(Debug, Clone, Copy)]
pub struct HudInfo<'a> {
    /// Displayed frames per second.
    pub fps: f32,
    /// End-to-end latency (capture to display) in ms, if measured yet.
    pub latency_ms: Option<f32>,
    /// Model name, e.g. `"lgmsnet"` (cut to fit the line).
    pub model: &'a str,
    /// Model precision, e.g. `"fp32"` or `"int8"`.
    pub precision: &'a str,
    /// When the frame is composed: the mask's age is measured against this.
    pub now: Instant,
    /// The model has failed; the AI is off.
    pub model_failed: bool,
}

/// Longest HUD line kept; longer text (a long model name) is cut.
pub(super) const LINE_CAP: usize = 48;

/// The word after the precision when the model runs without a passing
/// accuracy record (`allow_ungated = true`): the HUD then reads e.g.
/// "lgmsnet int8 unverified".
pub const UNVERIFIED: &str = "unverified";

/// A line of text formatted without allocating; text past `N` bytes is cut
/// at a character boundary.
#[derive(Default)]
pub(super) struct Line<const N: usize = LINE_CAP>(pub(super) heapless::String<N>);

impl<const N: usize> std::fmt::Write for Line<N> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for c in s.chars() {
            if self.0.push(c).is_err() {
                break;
            }
        }
        Ok(())
    }
}

pub(super) const TEXT: Rgb888 = Rgb888::new(235, 238, 240);
const TEXT_DIM: Rgb888 = Rgb888::new(170, 178, 186);
pub(super) const AMBER: Rgb888 = Rgb888::new(255, 186, 40);
const RED: Rgb888 = Rgb888::new(255, 90, 80);
const PANEL: Rgb888 = Rgb888::new(12, 16, 20);
const PANEL_ALPHA: u8 = 200;

/// The state line and its colour.
fn state_line(state: OverlayState) -> (Line, Rgb888) {
    let mut l = Line::default();
    let color = match state {
        OverlayState::Live { age_ms } => {
            let _ = write!(l, "mask {age_ms} ms old");
            TEXT_DIM
        }
        OverlayState::Paused { age_ms } => {
            let _ = write!(l, "overlay paused (mask {age_ms} ms old)");
            AMBER
        }
        OverlayState::NoMask => {
            let _ = write!(l, "overlay paused (no mask yet)");
            AMBER
        }
        OverlayState::ModelError => {
            let _ = write!(l, "AI OFF: model error");
            RED
        }
    };
    (l, color)
}

/// The HUD's lines for `state`: with `hud` on, rate/latency, model and
/// state; with it off, only the state line, and only when not live.
pub(super) fn hud_lines(
    hud_on: bool,
    state: OverlayState,
    hud: &HudInfo<'_>,
) -> ([(Line, Rgb888); 3], usize) {
    let mut lines: [(Line, Rgb888); 3] = Default::default();
    if !hud_on {
        if state.draws_mask() {
            return (lines, 0);
        }
        lines[0] = state_line(state);
        return (lines, 1);
    }
    let _ = write!(lines[0].0, "{:.1} fps  ", hud.fps);
    match hud.latency_ms {
        Some(ms) => {
            let _ = write!(lines[0].0, "latency {ms:.0} ms");
        }
        None => {
            let _ = write!(lines[0].0, "latency -- ms");
        }
    }
    lines[0].1 = TEXT;
    // The precision's word ("unverified" included) is never the part cut:
    // a long model name gives way to it.
    let room = LINE_CAP.saturating_sub(hud.precision.chars().count() + 1);
    for c in hud.model.chars().take(room) {
        let _ = lines[1].0.write_char(c);
    }
    let _ = write!(lines[1].0, " {}", hud.precision);
    lines[1].1 = if hud.precision.ends_with(UNVERIFIED) {
        AMBER
    } else {
        TEXT
    };
    lines[2] = state_line(state);
    (lines, 3)
}

/// Draws `lines` on a translucent dark panel whose top-left corner is
/// `top_left`.
pub(super) fn text_panel<T: BlendTarget>(
    target: &mut T,
    top_left: Point,
    lines: &[(&str, Rgb888)],
    font: &MonoFont<'_>,
    pad: u32,
) -> Result<(), T::Error> {
    let size = panel_size(lines.iter().map(|(s, _)| *s), font, pad);
    Blend::new(target, PANEL_ALPHA).fill_solid(&Rectangle::new(top_left, size), PANEL)?;
    let step = font.character_size.height + LINE_GAP;
    for (i, (text, color)) in lines.iter().enumerate() {
        let at = top_left + Point::new(pad as i32, (pad + i as u32 * step) as i32);
        Text::with_baseline(text, at, MonoTextStyle::new(font, *color), Baseline::Top)
            .draw(target)?;
    }
    Ok(())
}

const LINE_GAP: u32 = 2;

pub(super) fn panel_size<'s>(
    lines: impl Iterator<Item = &'s str> + Clone,
    font: &MonoFont<'_>,
    pad: u32,
) -> Size {
    let n = lines.clone().count() as u32;
    let chars = lines.map(|s| s.chars().count()).max().unwrap_or(0) as u32;
    let cw = font.character_size.width + font.character_spacing;
    let ch = font.character_size.height;
    Size::new(
        chars * cw + 2 * pad,
        n * ch + n.saturating_sub(1) * LINE_GAP + 2 * pad,
    )
}

/// Sizes for a target of this size: larger text and a 2 px outline from
/// about VGA up, where 1 px is hard to see at viewing distance.
pub(super) struct Layout {
    pub(super) font: &'static MonoFont<'static>,
    pub(super) pad: u32,
    pub(super) margin: i32,
    pub(super) outline_width: u32,
}

pub(super) fn layout(size: Size) -> Layout {
    if size.width >= 560 && size.height >= 360 {
        Layout {
            font: &FONT_9X15,
            pad: 5,
            margin: 8,
            outline_width: 2,
        }
    } else {
        Layout {
            font: &FONT_6X10,
            pad: 3,
            margin: 4,
            outline_width: 1,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn info(now: Instant) -> HudInfo<'static> {
        HudInfo {
            fps: 29.97,
            latency_ms: Some(41.6),
            model: "lgmsnet",
            precision: "int8",
            now,
            model_failed: false,
        }
    }

    #[test]
    fn state_lines_say_what_happened() {
        let s = |st| state_line(st).0 .0;
        assert_eq!(
            s(OverlayState::Paused { age_ms: 500 }).as_str(),
            "overlay paused (mask 500 ms old)"
        );
        assert_eq!(
            s(OverlayState::NoMask).as_str(),
            "overlay paused (no mask yet)"
        );
        assert_eq!(s(OverlayState::ModelError).as_str(), "AI OFF: model error");
        assert_eq!(
            s(OverlayState::Live { age_ms: 33 }).as_str(),
            "mask 33 ms old"
        );
        let (lines, n) = hud_lines(
            true,
            OverlayState::Live { age_ms: 33 },
            &info(Instant::now()),
        );
        assert_eq!(n, 3);
        assert_eq!(lines[0].0 .0.as_str(), "30.0 fps  latency 42 ms");
        assert_eq!(lines[1].0 .0.as_str(), "lgmsnet int8");
    }

    #[test]
    fn an_unverified_model_says_so_even_with_a_long_name() {
        // The compositor splits the label "NAME int8 unverified" at its last space.
        let mut h = info(Instant::now());
        h.model = "lgmsnet-random int8";
        h.precision = UNVERIFIED;
        let (lines, _) = hud_lines(true, OverlayState::NoMask, &h);
        assert_eq!(lines[1].0 .0.as_str(), "lgmsnet-random int8 unverified");
        assert_eq!(lines[1].1, AMBER);
        let long = format!("{} int8", "m".repeat(200));
        h.model = &long;
        let (lines, _) = hud_lines(true, OverlayState::NoMask, &h);
        assert!(lines[1].0 .0.ends_with(" unverified"));
        assert_eq!(lines[1].0 .0.len(), LINE_CAP);
        // A verified model keeps the ordinary colour.
        let (lines, _) = hud_lines(true, OverlayState::NoMask, &info(Instant::now()));
        assert_eq!(lines[1].1, TEXT);
    }

    #[test]
    fn long_model_name_is_cut_not_a_panic() {
        let long = "m".repeat(200);
        let mut h = info(Instant::now());
        h.model = &long;
        let (lines, _) = hud_lines(true, OverlayState::NoMask, &h);
        assert_eq!(lines[1].0 .0.len(), LINE_CAP);
    }
}
