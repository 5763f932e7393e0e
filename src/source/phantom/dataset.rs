//! Training and evaluation datasets from the phantom: image/mask PNG pairs
//! in the layout of the LGMSNet loaders.

use std::path::Path;

use super::math::mix64;
use super::{Phantom, PhantomKind};
use crate::frame::{Frame, Mask, Rect};
use crate::{Error, Result};

/// Frames between consecutive samples of a dataset (in the phantom's time).
const DATASET_T_STEP: u64 = 7;

/// Writes `count` image/mask pairs for training and evaluation in the layout
/// of the LGMSNet loaders: `out_dir/images/NNNNN.png` (RGB) and
/// `out_dir/masks/NNNNN.png` (8-bit grey, 0 or 255). Each sample comes from
/// its own sequence (seeded from `seed` and its index) at time `7 * index`,
/// so lesion count, shape and place vary across samples.
pub fn write_dataset(
    out_dir: &Path,
    kind: PhantomKind,
    count: u32,
    seed: u64,
    width: u32,
    height: u32,
) -> Result<()> {
    if count == 0 {
        return Err(Error::invalid(
            "dataset count 0",
            "nothing to write; fix: use --count 1 or more",
        ));
    }
    // Before any folder or buffer is made for it.
    super::check_size(width, height)?;
    let images = out_dir.join("images");
    let masks = out_dir.join("masks");
    for dir in [&images, &masks] {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating dataset folder {dir:?}"), e))?;
    }
    let mut frame = Frame::new(width, height);
    let mut mask = Mask::new(Rect::full(width, height));
    let mut grey = vec![0u8; width as usize * height as usize];
    for i in 0..count {
        let seq_seed = mix64(seed ^ mix64(u64::from(i) ^ 0xDA7A));
        let mut phantom = Phantom::new(kind, width, height, seq_seed)?;
        phantom.render(u64::from(i) * DATASET_T_STEP, &mut frame, &mut mask)?;
        for (g, &m) in grey.iter_mut().zip(mask.data.iter()) {
            *g = if m != 0 { 255 } else { 0 };
        }
        let name = format!("{i:05}.png");
        let save = |path: &Path, data: &[u8], ty| {
            image::save_buffer(path, data, width, height, ty).map_err(|e| Error::Sink {
                sink: format!("dataset {out_dir:?}"),
                reason: format!("writing {path:?}: {e}; fix: check free space and permissions"),
            })
        };
        save(
            &images.join(&name),
            &frame.rgb,
            image::ExtendedColorType::Rgb8,
        )?;
        save(&masks.join(&name), &grey, image::ExtendedColorType::L8)?;
    }
    log::info!("wrote {count} {kind} image/mask pairs ({width}x{height}) to {out_dir:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_has_matching_binary_pairs() {
        let dir = tempfile::tempdir().unwrap();
        write_dataset(dir.path(), PhantomKind::Ultrasound, 4, 9, 64, 48).unwrap();
        let mut areas = Vec::new();
        for i in 0..4 {
            let name = format!("{i:05}.png");
            let img = image::open(dir.path().join("images").join(&name)).unwrap();
            let mask = image::open(dir.path().join("masks").join(&name)).unwrap();
            assert_eq!(img.color(), image::ColorType::Rgb8);
            assert_eq!(mask.color(), image::ColorType::L8);
            assert_eq!((img.width(), img.height()), (64, 48));
            assert_eq!((mask.width(), mask.height()), (64, 48));
            let m = mask.to_luma8();
            assert!(m.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
            let area = m.pixels().filter(|p| p.0[0] == 255).count();
            assert!(area > 0, "{name}: empty mask");
            areas.push(area);
        }
        assert_eq!(
            std::fs::read_dir(dir.path().join("images"))
                .unwrap()
                .count(),
            4
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("masks")).unwrap().count(),
            4
        );
        areas.dedup();
        assert!(
            areas.len() > 1,
            "all samples have the same lesion area: no variety"
        );
        assert!(write_dataset(dir.path(), PhantomKind::Ultrasound, 0, 9, 64, 48).is_err());
    }
}
