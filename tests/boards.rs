//! Every board file in boards/ loads through the same path as
//! `lgms-edge run --config`, and carries the settings its board needs.

use std::path::Path;

use lgms_edge::config::{Config, SourceSpec};
use lgms_edge::infer::model::Precision;
use lgms_edge::source::pixfmt::PixelFormat;

fn boards() -> Vec<(String, Config)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("boards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("boards/ folder") {
        let path = entry.expect("boards/ entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name")
            .to_string();
        let cfg = Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        out.push((name, cfg));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn every_board_file_loads() {
    let names: Vec<String> = boards().into_iter().map(|(n, _)| n).collect();
    for want in ["jetson-orin-nano", "rpi4", "rpi5", "x86-dev"] {
        assert!(
            names.iter().any(|n| n == want),
            "boards/{want}.toml missing (have {names:?})"
        );
    }
}

#[test]
fn boards_suit_their_hardware() {
    for (name, c) in boards() {
        match name.as_str() {
            // Cortex-A72: no fp16 arithmetic.
            "rpi4" => assert_eq!(c.model.precision, Precision::F32, "{name}"),
            "x86-dev" => assert_eq!(c.source, SourceSpec::Phantom, "{name}"),
            // The pixel path at a cart's size: a 1080p phantom camera whose
            // raw frames go through the capture conversion.
            "bench-1080p" => {
                assert_eq!(c.source, SourceSpec::Phantom, "{name}");
                assert_eq!((c.phantom.width, c.phantom.height), (1920, 1080));
                assert!(
                    matches!(
                        c.phantom.pixel_format,
                        PixelFormat::Yuyv | PixelFormat::Nv12
                    ),
                    "{name}: {:?}",
                    c.phantom.pixel_format
                );
            }
            _ => {}
        }
        if !matches!(name.as_str(), "x86-dev" | "bench-1080p") {
            assert!(
                matches!(c.source, SourceSpec::V4l2(_)),
                "{name}: a cart captures from V4L2"
            );
            let roi = c
                .roi
                .unwrap_or_else(|| panic!("{name}: a cart board sets the ROI"));
            assert!(
                roi.w >= 256 && roi.h >= 256,
                "{name}: ROI {roi:?} smaller than the network input"
            );
        }
        let cores = c.model.workers * c.model.threads;
        assert!(
            cores <= 6,
            "{name}: {cores} inference threads is more than any supported board has cores"
        );
    }
}

#[test]
fn every_board_names_a_model_that_ships() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, c) in boards() {
        let p = &c.model.path;
        assert!(
            p.is_file() || root.join(p).is_file(),
            "boards/{name}.toml: model {p:?} is not in the repository"
        );
    }
}
