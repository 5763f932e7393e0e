//! The overlay: the mask's alpha-blended fill and outline, and a HUD, drawn
//! through embedded-graphics [`DrawTarget`]s.
//!
//! Why embedded-graphics: the same drawing code must land on our in-memory
//! [`Frame`] (through [`FrameTarget`]) and, on a cart,
//! straight onto a framebuffer or DRM buffer whose size is known only at run
//! time. Everything here is generic over [`BlendTarget`], a `DrawTarget` that
//! can also alpha-blend a horizontal run of pixels; a new display only has to
//! implement that one method on top of `DrawTarget`.
//!
//! Why the overlay *pauses*: a mask that is older than `max_mask_age` no
//! longer matches the anatomy on screen, and drawing it would show the
//! clinician a region in the wrong place. So a stale mask is not drawn at all,
//! and the HUD says so ("overlay paused (mask N ms old)"), as it does when no
//! mask has arrived yet or the model has failed ([`OverlayState`]). These
//! state lines are drawn even with the HUD switched off, because a missing
//! overlay without an explanation reads as "nothing found". The fixed label
//! [`LABEL`] is always drawn.
//!
//! Nothing here allocates per frame: HUD lines are formatted into fixed-size
//! `heapless::String`s on the stack.

#![deny(unsafe_code)]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use embedded_graphics::mono_font::ascii::{FONT_6X10, FONT_9X15};
use embedded_graphics::mono_font::{MonoFont, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;
use embedded_graphics::text::{Baseline, Text};

use crate::config::OverlayConfig;
use crate::frame::{Frame, Mask};
use crate::{Error, Result};

/// The fixed label drawn on every composited frame, HUD or not.
pub const LABEL: &str = "AI overlay - not for diagnosis";

// ---------------------------------------------------------------------------
// Blending
// ---------------------------------------------------------------------------

/// Blends one 8-bit channel: `round((alpha * over + (255 - alpha) * under) / 255)`.
///
/// Integer only. Rounding is to the nearest integer (ties cannot occur, as
/// 255 is odd), so `alpha = 0` gives `under` exactly and `alpha = 255` gives
/// `over` exactly. The division by 255 uses the shift form
/// `(v + 128 + ((v + 128) >> 8)) >> 8`, which equals `(v + 127) / 255` for
/// every `v` in `0..=255 * 255` (checked exhaustively in the tests).
#[inline]
pub fn blend_channel(under: u8, over: u8, alpha: u8) -> u8 {
    let a = u32::from(alpha);
    let v = a * u32::from(over) + (255 - a) * u32::from(under) + 128;
    ((v + (v >> 8)) >> 8) as u8
}

/// Blends `over` onto `under` with opacity `alpha` (0: `under`, 255: `over`),
/// channel by channel with [`blend_channel`].
#[inline]
pub fn blend(under: Rgb888, over: Rgb888, alpha: u8) -> Rgb888 {
    Rgb888::new(
        blend_channel(under.r(), over.r(), alpha),
        blend_channel(under.g(), over.g(), alpha),
        blend_channel(under.b(), over.b(), alpha),
    )
}

/// A [`DrawTarget`] that can also blend colours over what it already shows.
///
/// The overlay's drawing code is generic over this trait, so it draws the same
/// on a [`FrameTarget`] as on a framebuffer or DRM buffer. Implementations
/// must follow the embedded-graphics convention: pixels outside the target
/// are silently skipped, never a panic or an error.
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

// ---------------------------------------------------------------------------
// FrameTarget
// ---------------------------------------------------------------------------

/// A [`DrawTarget`] over a packed RGB8 buffer (3 bytes a pixel, rows without
/// padding), such as [`Frame::rgb`].
///
/// Out-of-bounds pixels are silently clipped. `fill_solid` and
/// `fill_contiguous` write rows directly instead of going pixel by pixel.
pub struct FrameTarget<'a> {
    rgb: &'a mut [u8],
    width: u32,
    height: u32,
}

impl<'a> FrameTarget<'a> {
    /// Wraps `rgb`, which must hold exactly `width * height * 3` bytes.
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
        Ok(FrameTarget { rgb, width, height })
    }

    /// Wraps a [`Frame`]'s pixels (fails if its buffer does not match its size).
    pub fn for_frame(frame: &'a mut Frame) -> Result<Self> {
        FrameTarget::new(&mut frame.rgb, frame.width, frame.height)
    }

    /// The colour at `p`, or `None` outside the buffer.
    pub fn pixel(&self, p: Point) -> Option<Rgb888> {
        self.index(p)
            .map(|i| Rgb888::new(self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]))
    }

    /// Byte offset of pixel `p`, or `None` outside the buffer.
    #[inline]
    fn index(&self, p: Point) -> Option<usize> {
        if p.x < 0 || p.y < 0 || p.x as u32 >= self.width || p.y as u32 >= self.height {
            return None;
        }
        Some((p.y as usize * self.width as usize + p.x as usize) * 3)
    }

    /// The bytes of the clipped run `x0..x0 + len` on row `y` (empty when
    /// the run misses the buffer).
    fn span_mut(&mut self, x0: i32, y: i32, len: u32) -> &mut [u8] {
        if y < 0 || y as u32 >= self.height || len == 0 {
            return &mut [];
        }
        let start = i64::from(x0).max(0);
        let end = (i64::from(x0) + i64::from(len)).min(i64::from(self.width));
        if start >= end {
            return &mut [];
        }
        let row = y as usize * self.width as usize;
        &mut self.rgb[(row + start as usize) * 3..(row + end as usize) * 3]
    }
}

impl OriginDimensions for FrameTarget<'_> {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for FrameTarget<'_> {
    type Color = Rgb888;
    type Error = core::convert::Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Rgb888>>,
    {
        for Pixel(p, c) in pixels {
            if let Some(i) = self.index(p) {
                self.rgb[i..i + 3].copy_from_slice(&[c.r(), c.g(), c.b()]);
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
        let mut colors = colors.into_iter();
        for y in area.rows() {
            let span = self.span_mut(area.top_left.x, y, area.size.width);
            for px in span.chunks_exact_mut(3) {
                let Some(c) = colors.next() else {
                    return Ok(());
                };
                px.copy_from_slice(&[c.r(), c.g(), c.b()]);
            }
        }
        Ok(())
    }

    fn fill_solid(&mut self, area: &Rectangle, color: Rgb888) -> Result<(), Self::Error> {
        let rgb = [color.r(), color.g(), color.b()];
        for y in area.rows() {
            for px in self
                .span_mut(area.top_left.x, y, area.size.width)
                .chunks_exact_mut(3)
            {
                px.copy_from_slice(&rgb);
            }
        }
        Ok(())
    }
}

impl BlendTarget for FrameTarget<'_> {
    fn blend_hline(
        &mut self,
        start: Point,
        len: u32,
        color: Rgb888,
        alpha: u8,
    ) -> Result<(), Self::Error> {
        let over = [color.r(), color.g(), color.b()];
        for px in self.span_mut(start.x, start.y, len).chunks_exact_mut(3) {
            for (under, over) in px.iter_mut().zip(over) {
                *under = blend_channel(*under, over, alpha);
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Mask drawing
// ---------------------------------------------------------------------------

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
                mx += 1;
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

// ---------------------------------------------------------------------------
// State and HUD
// ---------------------------------------------------------------------------

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

/// Longest HUD line kept; longer text (a long model name) is cut.
const LINE_CAP: usize = 48;

/// One HUD line, formatted without allocating; text past [`LINE_CAP`] is cut.
#[derive(Default)]
struct Line(heapless::String<LINE_CAP>);

impl std::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for c in s.chars() {
            if self.0.push(c).is_err() {
                break;
            }
        }
        Ok(())
    }
}

const TEXT: Rgb888 = Rgb888::new(235, 238, 240);
const TEXT_DIM: Rgb888 = Rgb888::new(170, 178, 186);
const AMBER: Rgb888 = Rgb888::new(255, 186, 40);
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
fn hud_lines(hud_on: bool, state: OverlayState, hud: &HudInfo<'_>) -> ([(Line, Rgb888); 3], usize) {
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
    let _ = write!(lines[1].0, "{} {}", hud.model, hud.precision);
    lines[1].1 = TEXT;
    lines[2] = state_line(state);
    (lines, 3)
}

/// Draws `lines` on a translucent dark panel whose top-left corner is
/// `top_left`.
fn text_panel<T: BlendTarget>(
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

fn panel_size<'s>(
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
struct Layout {
    font: &'static MonoFont<'static>,
    pad: u32,
    margin: i32,
    outline_width: u32,
}

fn layout(size: Size) -> Layout {
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
    fn mask_from(x: u32, y: u32, rows: &[&str]) -> Mask {
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

    fn frame_of(w: u32, h: u32, c: [u8; 3]) -> Frame {
        let mut f = Frame::new(w, h);
        for px in f.rgb.chunks_exact_mut(3) {
            px.copy_from_slice(&c);
        }
        f
    }

    /// Number of pixels that differ between two equal-sized frames inside `r`.
    fn changed_in(a: &Frame, b: &Frame, r: Rectangle) -> usize {
        r.points()
            .filter(|p| a.pixel(p.x as u32, p.y as u32) != b.pixel(p.x as u32, p.y as u32))
            .count()
    }

    const HOLE: [&str; 7] = [
        "........", ".######.", ".######.", ".##..##.", ".######.", ".######.", "........",
    ];

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

    #[test]
    fn blend_channel_matches_rounded_formula_everywhere() {
        for a in 0..=255u32 {
            for u in 0..=255u32 {
                for o in 0..=255u32 {
                    let want = (a * o + (255 - a) * u + 127) / 255;
                    let got = blend_channel(u as u8, o as u8, a as u8);
                    assert_eq!(u32::from(got), want, "alpha {a} under {u} over {o}");
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
            let mut t = FrameTarget::for_frame(&mut f).unwrap();
            t.blend_hline(Point::new(1, 0), 1, over, alpha).unwrap();
            assert_eq!(f.pixel(1, 0), want, "alpha {alpha}");
            assert_eq!(f.pixel(0, 0), under);
            assert_eq!(f.pixel(2, 0), under);
        }
        // Black under white at half: 128 (127.5 rounds up? no: 32767/255).
        assert_eq!(
            blend(Rgb888::BLACK, Rgb888::WHITE, 128),
            Rgb888::new(128, 128, 128)
        );
    }

    #[test]
    fn frame_target_rejects_wrong_buffer() {
        let mut buf = vec![0u8; 10];
        let e = FrameTarget::new(&mut buf, 2, 2).err().unwrap().to_string();
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
                let mut t = FrameTarget::for_frame(&mut fast).unwrap();
                t.fill_contiguous(&area, colors()).unwrap();
                let mut s = FrameTarget::for_frame(&mut slow).unwrap();
                s.draw_iter(area.points().zip(colors()).map(|(p, c)| Pixel(p, c)))
                    .unwrap();
            }
            assert_eq!(fast.rgb, slow.rgb, "fill_contiguous {area:?}");

            let c = Rgb888::new(9, 8, 7);
            let mut fast = Frame::new(6, 5);
            let mut slow = Frame::new(6, 5);
            FrameTarget::for_frame(&mut fast)
                .unwrap()
                .fill_solid(&area, c)
                .unwrap();
            FrameTarget::for_frame(&mut slow)
                .unwrap()
                .draw_iter(area.points().map(|p| Pixel(p, c)))
                .unwrap();
            assert_eq!(fast.rgb, slow.rgb, "fill_solid {area:?}");
        }
        // Some area above drew something: the comparison is not vacuous.
        let mut f = Frame::new(6, 5);
        FrameTarget::for_frame(&mut f)
            .unwrap()
            .fill_solid(&areas[1], Rgb888::WHITE)
            .unwrap();
        assert_eq!(f.pixel(1, 1), [255; 3]);
        assert_eq!(f.pixel(2, 1), [0; 3]);
    }

    #[test]
    fn blend_adapter_blends_and_clips() {
        let mut f = frame_of(4, 4, [0, 0, 0]);
        let mut t = FrameTarget::for_frame(&mut f).unwrap();
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

    fn style(hud: bool) -> OverlayStyle {
        OverlayStyle {
            color: Rgb888::new(0, 220, 120),
            alpha: 102,
            outline: Some(Rgb888::WHITE),
            hud,
            max_mask_age: Duration::from_millis(150),
        }
    }

    fn info(now: Instant) -> HudInfo<'static> {
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
    fn long_model_name_is_cut_not_a_panic() {
        let long = "m".repeat(200);
        let mut h = info(Instant::now());
        h.model = &long;
        let (lines, _) = hud_lines(true, OverlayState::NoMask, &h);
        assert_eq!(lines[1].0 .0.len(), LINE_CAP);
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
        let mut t = FrameTarget::for_frame(&mut f).unwrap();
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
            let mut t = FrameTarget::for_frame(&mut f).unwrap();
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
