//! Plain data that flows between the stages: frames and masks.
//!
//! Stages talk only through these types (as tract's ops talk through
//! tensors), so a stage can be tested, replaced or benchmarked alone.
//! Buffers are allocated once, when a stage starts, and then refilled in
//! place: `copy_from` reuses the destination's allocation.

use std::time::Instant;

/// A rectangle in frame pixel coordinates (the region of interest that the
/// network sees, and where its mask lands back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rect {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width in pixels.
    pub w: u32,
    /// Height in pixels.
    pub h: u32,
}

impl Rect {
    /// The whole of a `width` x `height` frame.
    pub fn full(width: u32, height: u32) -> Self {
        Rect {
            x: 0,
            y: 0,
            w: width,
            h: height,
        }
    }

    /// True when the rectangle is non-empty and lies inside a frame of this size.
    pub fn fits_in(&self, width: u32, height: u32) -> bool {
        self.w > 0
            && self.h > 0
            && u64::from(self.x) + u64::from(self.w) <= u64::from(width)
            && u64::from(self.y) + u64::from(self.h) <= u64::from(height)
    }
}

/// The largest frame any decoder or generator accepts, checked against a
/// file's or a flag's dimensions before anything is allocated for them, so
/// that no input (a corrupt header, a typo) can make the process abort on
/// allocation. `[capture] max_width` / `max_height` change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Widest frame accepted, in pixels.
    pub max_width: u32,
    /// Tallest frame accepted, in pixels.
    pub max_height: u32,
}

impl Limits {
    /// 8192 x 8192: four times 4K UHD, about 200 MB as RGB.
    pub const DEFAULT: Limits = Limits {
        max_width: 8192,
        max_height: 8192,
    };

    /// Checks a `width` x `height` frame that `what` (a file, a flag)
    /// declares: both sides 1 or more and within the limits.
    pub fn check(&self, what: &str, width: u64, height: u64) -> crate::Result<()> {
        if width == 0 || height == 0 {
            return Err(crate::Error::invalid(
                what,
                format!("size {width}x{height} has no pixels; fix: a frame of at least 1x1"),
            ));
        }
        if width > u64::from(self.max_width) || height > u64::from(self.max_height) {
            return Err(crate::Error::invalid(
                what,
                format!(
                    "size {width}x{height} is over the {}x{} limit; fix: a smaller frame, or raise \
                     capture.max_width/max_height if this size is real",
                    self.max_width, self.max_height
                ),
            ));
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// One video frame, packed RGB, 8 bits per channel, no row padding.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Sequence number given by the source, starting at 0.
    pub id: u64,
    /// When the source produced the frame (hardware timestamp where known).
    pub captured: Instant,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes, row-major RGB.
    pub rgb: Vec<u8>,
}

impl Frame {
    /// A black frame of the given size, id 0.
    pub fn new(width: u32, height: u32) -> Self {
        Frame {
            id: 0,
            captured: Instant::now(),
            width,
            height,
            rgb: vec![0; width as usize * height as usize * 3],
        }
    }

    /// Number of bytes per row.
    pub fn stride(&self) -> usize {
        self.width as usize * 3
    }

    /// The RGB value at (x, y). Panics when out of bounds (a programming error).
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// Copies `other` into `self`, reusing `self`'s buffer when sizes match.
    pub fn copy_from(&mut self, other: &Frame) {
        self.id = other.id;
        self.captured = other.captured;
        self.width = other.width;
        self.height = other.height;
        self.rgb.clear();
        self.rgb.extend_from_slice(&other.rgb);
    }
}

/// A binary segmentation mask for one frame, placed over `roi` of that frame.
#[derive(Debug, Clone)]
pub struct Mask {
    /// Id of the frame the network saw.
    pub frame_id: u64,
    /// Capture time of that frame: the mask's age is measured from here.
    pub captured: Instant,
    /// Where the mask lies in the frame; `data` is `roi.w * roi.h` bytes.
    pub roi: Rect,
    /// One byte per pixel: 1 inside the segmented region, 0 outside.
    pub data: Vec<u8>,
}

impl Mask {
    /// An empty mask covering `roi`.
    pub fn new(roi: Rect) -> Self {
        Mask {
            frame_id: 0,
            captured: Instant::now(),
            roi,
            data: vec![0; roi.w as usize * roi.h as usize],
        }
    }

    /// True when the mask covers frame pixel (x, y) and it is set.
    pub fn contains(&self, x: u32, y: u32) -> bool {
        if x < self.roi.x || y < self.roi.y {
            return false;
        }
        let (mx, my) = (x - self.roi.x, y - self.roi.y);
        if mx >= self.roi.w || my >= self.roi.h {
            return false;
        }
        self.data[my as usize * self.roi.w as usize + mx as usize] != 0
    }

    /// Number of set pixels.
    pub fn area(&self) -> usize {
        self.data.iter().filter(|&&v| v != 0).count()
    }

    /// Copies `other` into `self`, reusing `self`'s buffer when sizes match.
    pub fn copy_from(&mut self, other: &Mask) {
        self.frame_id = other.frame_id;
        self.captured = other.captured;
        self.roi = other.roi;
        self.data.clear();
        self.data.extend_from_slice(&other.data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rect_fits() {
        assert!(Rect::full(10, 10).fits_in(10, 10));
        assert!(!Rect {
            x: 5,
            y: 0,
            w: 6,
            h: 1
        }
        .fits_in(10, 10));
        assert!(!Rect {
            x: 0,
            y: 0,
            w: 0,
            h: 1
        }
        .fits_in(10, 10));
    }

    #[test]
    fn mask_contains_respects_roi() {
        let mut m = Mask::new(Rect {
            x: 2,
            y: 3,
            w: 4,
            h: 2,
        });
        m.data[0] = 1; // frame pixel (2, 3)
        assert!(m.contains(2, 3));
        assert!(!m.contains(3, 3));
        assert!(!m.contains(1, 3));
        assert!(!m.contains(2, 5));
        assert_eq!(m.area(), 1);
    }
}
