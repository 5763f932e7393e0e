//! The overlay: everything drawn on a composited frame, through
//! embedded-graphics [`DrawTarget`]s.
//!
//! | module | job |
//! | --- | --- |
//! | [`target`] | the one RGB target, [`RgbTarget`] (frames and display memory alike), and the [`Blend`] and [`Scaled`] adapters |
//! | [`mask`] | the mask's alpha-blended fill and outline |
//! | [`calipers`] | lesion diameters as calipers with their lengths, the scale bar or *uncalibrated* |
//! | [`hud`] | rate, latency, model and state as text |
//! | [`no_signal`] | the NO SIGNAL screen the compositor shows when the source is silent |
//!
//! Why embedded-graphics: the same drawing code must land on our in-memory
//! [`Frame`](crate::frame::Frame) and, on a cart, on a framebuffer or DRM
//! buffer whose size is known only at run time. Both are an [`RgbTarget`];
//! the overlay itself is generic over [`BlendTarget`] (a `DrawTarget` that
//! can also alpha-blend a run of pixels), so the tests draw it on the strict
//! `MockDisplay` too.
//!
//! Why the overlay *pauses*: a mask that is older than `max_mask_age` no
//! longer matches the anatomy on screen, and drawing it would show the
//! clinician a region in the wrong place. So a stale mask is not drawn at all,
//! and the HUD says so ("overlay paused (mask N ms old)"), as it does when no
//! mask has arrived yet or the model has failed ([`OverlayState`]). These
//! state lines are drawn even with the HUD switched off, because a missing
//! overlay without an explanation reads as "nothing found". The fixed label
//! [`LABEL`] is always drawn.

#![deny(unsafe_code)]

pub mod calipers;
pub mod hud;
pub mod mask;
pub mod no_signal;
pub mod target;

use std::time::{Duration, Instant};

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;

use crate::config::OverlayConfig;
use crate::frame::Mask;
use hud::{hud_lines, layout, panel_size, text_panel, Layout, TEXT};

pub use hud::HudInfo;
pub use mask::{draw_mask, outline_color};
pub use target::{blend, Blend, BlendTarget, Channel, PanelFormat, RgbTarget, Scaled};

/// Draws `text` in amber on a panel at the top right: a state the person
/// at the screen must not miss (FROZEN, overlay off).
pub fn draw_notice<T: BlendTarget>(target: &mut T, text: &str) -> Result<(), T::Error> {
    let bb = target.bounding_box();
    let Layout {
        font, pad, margin, ..
    } = layout(bb.size);
    let size = panel_size([text].into_iter(), font, pad);
    let x = (bb.top_left.x + bb.size.width as i32 - margin - size.width as i32).max(bb.top_left.x);
    text_panel(
        target,
        Point::new(x, bb.top_left.y + margin),
        &[(text, hud::AMBER)],
        font,
        pad,
    )
}

/// The fixed label drawn on every composited frame, HUD or not.
pub const LABEL: &str = "AI overlay - not for diagnosis";

/// What the overlay shows for the current frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlayState {
    /// A fresh mask is drawn; it is `age_ms` old.
    Live {
        /// Age of the mask (from the capture of the frame it was computed on).
        age_ms: u64,
    },
    /// The newest mask is older than the limit: nothing is drawn.
    Paused {
        /// Age of the mask.
        age_ms: u64,
    },
    /// No mask has been produced yet.
    NoMask,
    /// The model failed: the AI is off, no mask is drawn.
    ModelError,
}

impl OverlayState {
    /// Decides the state: a failed model wins over any mask; a mask exactly
    /// `max_age` old is still live. Age is measured from `mask.captured` to
    /// `now`.
    pub fn decide(
        mask: Option<&Mask>,
        now: Instant,
        max_age: Duration,
        model_failed: bool,
    ) -> Self {
        if model_failed {
            return OverlayState::ModelError;
        }
        let Some(mask) = mask else {
            return OverlayState::NoMask;
        };
        let age = now.saturating_duration_since(mask.captured);
        let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        if age <= max_age {
            OverlayState::Live { age_ms }
        } else {
            OverlayState::Paused { age_ms }
        }
    }

    /// True when a mask is drawn in this state.
    pub fn draws_mask(&self) -> bool {
        matches!(self, OverlayState::Live { .. })
    }
}

/// How the overlay looks (see [`OverlayStyle::from_config`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OverlayStyle {
    /// Mask fill colour.
    pub color: Rgb888,
    /// Fill opacity, 0 (invisible) ..= 255 (opaque).
    pub alpha: u8,
    /// Outline colour, `None` for no outline.
    pub outline: Option<Rgb888>,
    /// Draw the HUD (the label and non-live states are drawn regardless).
    pub hud: bool,
    /// Masks older than this are not drawn.
    pub max_mask_age: Duration,
}

impl OverlayStyle {
    /// The style of a validated `[overlay]` config section: alpha 0..=1 maps
    /// to 0..=255 rounded, `outline = true` to [`outline_color`] of the fill.
    pub fn from_config(cfg: &OverlayConfig, max_mask_age: Duration) -> Self {
        let color = Rgb888::new(cfg.color[0], cfg.color[1], cfg.color[2]);
        OverlayStyle {
            color,
            alpha: (cfg.alpha.clamp(0.0, 1.0) * 255.0).round() as u8,
            outline: cfg.outline.then(|| outline_color(color)),
            hud: cfg.hud,
            max_mask_age,
        }
    }
}

/// Draws the mask and HUD onto frames; keeps the last state to log changes.
#[derive(Debug)]
pub struct Overlay {
    style: OverlayStyle,
    last: Option<OverlayState>,
}

impl Overlay {
    /// An overlay that draws in `style`.
    pub fn new(style: OverlayStyle) -> Self {
        Overlay { style, last: None }
    }

    /// The style it draws in.
    pub fn style(&self) -> &OverlayStyle {
        &self.style
    }

    /// Composes one frame: decides the [`OverlayState`] from `mask` and
    /// `hud`, draws the mask when it is live, then the HUD (top left) and the
    /// label (bottom left). Returns the state it drew.
    pub fn draw<T: BlendTarget>(
        &mut self,
        target: &mut T,
        mask: Option<&Mask>,
        hud: &HudInfo<'_>,
    ) -> Result<OverlayState, T::Error> {
        let state = OverlayState::decide(mask, hud.now, self.style.max_mask_age, hud.model_failed);
        self.log_change(state);
        let bb = target.bounding_box();
        let Layout {
            font,
            pad,
            margin,
            outline_width,
        } = layout(bb.size);
        if let (true, Some(mask)) = (state.draws_mask(), mask) {
            let s = &self.style;
            draw_mask(target, mask, s.color, s.alpha, s.outline, outline_width)?;
        }

        let (lines, n) = hud_lines(self.style.hud, state, hud);
        if n > 0 {
            let mut refs: [(&str, Rgb888); 3] = [("", TEXT); 3];
            for (r, (l, c)) in refs.iter_mut().zip(&lines[..n]) {
                *r = (l.0.as_str(), *c);
            }
            text_panel(
                target,
                bb.top_left + Point::new(margin, margin),
                &refs[..n],
                font,
                pad,
            )?;
        }
        let label = [(LABEL, TEXT)];
        let h = panel_size([LABEL].into_iter(), font, pad).height as i32;
        let at = Point::new(
            bb.top_left.x + margin,
            bb.top_left.y + bb.size.height as i32 - margin - h,
        );
        text_panel(target, at, &label, font, pad)?;
        Ok(state)
    }

    /// Logs state changes once, not every frame.
    fn log_change(&mut self, state: OverlayState) {
        let kind = std::mem::discriminant(&state);
        if self.last.map(|l| std::mem::discriminant(&l)) == Some(kind) {
            return;
        }
        match state {
            OverlayState::Live { age_ms } => log::info!("overlay live (mask {age_ms} ms old)"),
            OverlayState::Paused { age_ms } => log::warn!(
                "overlay paused: newest mask is {age_ms} ms old (limit {} ms)",
                self.style.max_mask_age.as_millis()
            ),
            OverlayState::NoMask => log::info!("overlay paused: no mask yet"),
            OverlayState::ModelError => log::error!("overlay off: model error"),
        }
        self.last = Some(state);
    }
}

#[cfg(test)]
mod tests {
    use super::hud::tests::info;
    use super::mask::tests::mask_from;
    use super::target::tests::frame_of;
    use super::*;
    use crate::frame::{Frame, Rect};
    use embedded_graphics::primitives::Rectangle;

    /// Number of pixels that differ between two equal-sized frames inside `r`.
    fn changed_in(a: &Frame, b: &Frame, r: Rectangle) -> usize {
        r.points()
            .filter(|p| a.pixel(p.x as u32, p.y as u32) != b.pixel(p.x as u32, p.y as u32))
            .count()
    }

    fn style(hud: bool) -> OverlayStyle {
        OverlayStyle {
            color: Rgb888::new(0, 220, 120),
            alpha: 102,
            outline: Some(Rgb888::WHITE),
            hud,
            max_mask_age: Duration::from_millis(150),
        }
    }

    #[test]
    fn state_decision() {
        let m = mask_from(0, 0, &["#"]);
        let t0 = m.captured;
        let max = Duration::from_millis(150);
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(
            OverlayState::decide(Some(&m), at(150), max, false),
            OverlayState::Live { age_ms: 150 }
        );
        assert_eq!(
            OverlayState::decide(Some(&m), at(151), max, false),
            OverlayState::Paused { age_ms: 151 }
        );
        assert_eq!(
            OverlayState::decide(None, at(0), max, false),
            OverlayState::NoMask
        );
        assert_eq!(
            OverlayState::decide(Some(&m), at(1), max, true),
            OverlayState::ModelError
        );
    }

    /// Region of the top-left HUD panel and of the bottom-left label on a
    /// 256x256 frame (small font, margin 4).
    const HUD_AREA: Rectangle = Rectangle::new(Point::new(0, 0), Size::new(200, 50));
    const LABEL_AREA: Rectangle = Rectangle::new(Point::new(0, 230), Size::new(200, 26));
    const MASK_AREA: Rectangle = Rectangle::new(Point::new(150, 100), Size::new(60, 60));

    fn square_mask() -> Mask {
        let mut m = Mask::new(Rect {
            x: 150,
            y: 100,
            w: 60,
            h: 60,
        });
        m.data.fill(1);
        m
    }

    fn compose(
        style: OverlayStyle,
        mask: Option<&Mask>,
        hud: &HudInfo<'_>,
    ) -> (Frame, OverlayState) {
        let mut f = frame_of(256, 256, [90, 90, 90]);
        let mut t = RgbTarget::for_frame(&mut f).unwrap();
        let state = Overlay::new(style).draw(&mut t, mask, hud).unwrap();
        (f, state)
    }

    #[test]
    fn stale_mask_is_not_drawn_and_hud_says_paused() {
        let blank = frame_of(256, 256, [90, 90, 90]);
        let m = square_mask();
        let (live, s) = compose(
            style(true),
            Some(&m),
            &info(m.captured + Duration::from_millis(100)),
        );
        assert_eq!(s, OverlayState::Live { age_ms: 100 });
        assert_eq!(changed_in(&blank, &live, MASK_AREA), 60 * 60);

        let (paused, s) = compose(
            style(true),
            Some(&m),
            &info(m.captured + Duration::from_millis(500)),
        );
        assert_eq!(s, OverlayState::Paused { age_ms: 500 });
        assert_eq!(changed_in(&blank, &paused, MASK_AREA), 0);
        assert!(
            changed_in(&live, &paused, HUD_AREA) > 0,
            "HUD must show the pause"
        );

        let mut h = info(m.captured);
        h.model_failed = true;
        let (off, s) = compose(style(true), Some(&m), &h);
        assert_eq!(s, OverlayState::ModelError);
        assert_eq!(changed_in(&blank, &off, MASK_AREA), 0);
        assert!(changed_in(&paused, &off, HUD_AREA) > 0);
    }

    #[test]
    fn label_is_drawn_with_hud_off_and_states_still_show() {
        let blank = frame_of(256, 256, [90, 90, 90]);
        let m = square_mask();
        let (f, _) = compose(style(false), Some(&m), &info(m.captured));
        assert_eq!(changed_in(&blank, &f, HUD_AREA), 0, "HUD is off");
        assert!(changed_in(&blank, &f, LABEL_AREA) > 100, "label missing");
        let (on, _) = compose(style(true), Some(&m), &info(m.captured));
        assert!(changed_in(&blank, &on, HUD_AREA) > 100, "HUD missing");

        let (f, s) = compose(style(false), None, &info(m.captured));
        assert_eq!(s, OverlayState::NoMask);
        assert!(
            changed_in(&blank, &f, HUD_AREA) > 100,
            "no-mask state must show with HUD off"
        );
    }

    #[test]
    fn tiny_and_empty_targets_do_not_panic() {
        let m = mask_from(0, 0, &["###"; 3]);
        for (w, h) in [(0, 0), (1, 1), (16, 16), (64, 20), (256, 256), (640, 480)] {
            let mut f = Frame::new(w, h);
            let mut t = RgbTarget::for_frame(&mut f).unwrap();
            for hud in [true, false] {
                Overlay::new(style(hud))
                    .draw(&mut t, Some(&m), &info(m.captured))
                    .unwrap();
            }
        }
    }

    #[test]
    fn style_from_config() {
        let c = OverlayConfig::default();
        let s = OverlayStyle::from_config(&c, Duration::from_millis(150));
        assert_eq!(s.alpha, 102);
        assert_eq!(s.color, Rgb888::new(0, 220, 120));
        assert_eq!(s.outline, Some(outline_color(s.color)));
        let no = OverlayStyle::from_config(
            &OverlayConfig {
                outline: false,
                alpha: 1.0,
                ..c
            },
            Duration::from_millis(150),
        );
        assert_eq!((no.outline, no.alpha), (None, 255));
    }
}
