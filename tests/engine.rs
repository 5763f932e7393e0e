//! The engine against real ONNX files: tiny committed fixtures
//! (tests/fixtures/make_fixtures.py) for every refusal path, and the bundled
//! LGMSNet for parity with PyTorch.

use std::path::{Path, PathBuf};

use lgms_edge::frame::{Frame, Mask, Rect};
use lgms_edge::infer::engine::Engine;
use lgms_edge::infer::model::{read_metadata, LoadOptions, Model, Precision};
use lgms_edge::pipeline::stats::{Stage, StageRecorder};
use lgms_edge::Error;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load(p: &Path) -> Result<std::sync::Arc<Model>, Error> {
    Model::load(p, &LoadOptions::default())
}

#[test]
fn tiny_model_segments_dark_square_where_it_is() {
    let model = load(&fixture("tiny_dark.onnx")).unwrap();
    let info = model.info();
    assert_eq!(info.name, "tiny-dark");
    assert_eq!(info.input_hw, (32, 32));
    assert_eq!(info.threshold, 0.0);
    let mut engine = Engine::new(model).unwrap();
    // 96x64 light frame with a dark 24x16 block at (40, 20).
    let mut frame = Frame::new(96, 64);
    frame.rgb.fill(230);
    for y in 20..36 {
        for x in 40..64 {
            let i = (y * 96 + x) * 3;
            frame.rgb[i..i + 3].copy_from_slice(&[20, 20, 20]);
        }
    }
    frame.id = 7;
    let roi = Rect::full(96, 64);
    let mut mask = Mask::new(roi);
    let mut rec = StageRecorder::new(16);
    engine.segment(&frame, roi, &mut mask, &mut rec).unwrap();
    assert_eq!(mask.frame_id, 7);
    assert!(mask.contains(52, 28), "centre of the dark block");
    assert!(
        !mask.contains(10, 10) && !mask.contains(90, 60),
        "light background"
    );
    // Resizing to 32x32 and back blurs the edges by at most a few pixels.
    let area = mask.area() as i64;
    assert!((area - 24 * 16).abs() < 24 * 16 / 3, "area {area}");
    for stage in [Stage::Preprocess, Stage::Inference, Stage::Postprocess] {
        assert_eq!(rec.samples(stage).count(), 1);
    }
}

#[test]
fn roi_mask_lands_inside_the_roi() {
    let mut engine = Engine::new(load(&fixture("tiny_dark.onnx")).unwrap()).unwrap();
    let mut frame = Frame::new(64, 64);
    frame.rgb.fill(0); // all dark: everything in the ROI is foreground
    let roi = Rect {
        x: 16,
        y: 8,
        w: 32,
        h: 40,
    };
    let mut mask = Mask::new(roi);
    engine
        .segment(&frame, roi, &mut mask, &mut StageRecorder::new(4))
        .unwrap();
    assert_eq!(mask.roi, roi);
    assert!(mask.contains(16, 8) && mask.contains(47, 47));
    assert!(!mask.contains(15, 8) && !mask.contains(48, 20) && !mask.contains(20, 48));
    // A ROI outside the frame is refused with a clear error.
    let bad = Rect {
        x: 40,
        y: 0,
        w: 32,
        h: 10,
    };
    let e = engine
        .segment(&frame, bad, &mut mask, &mut StageRecorder::new(4))
        .unwrap_err();
    assert!(e.to_string().contains("region of interest"), "{e}");
}

#[test]
fn missing_model_is_named() {
    let e = load(Path::new("no/such/model.onnx")).unwrap_err();
    assert!(matches!(e, Error::ModelNotFound { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains("no/such/model.onnx") && msg.contains("fix"),
        "{msg}"
    );
}

#[test]
fn truncated_model_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("tiny_dark.onnx")).unwrap();
    let p = dir.path().join("cut.onnx");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = load(&p).unwrap_err();
    assert!(matches!(e, Error::ModelCorrupt { .. }), "{e:?}");
    assert!(e.to_string().contains("cut.onnx"));
    // Not ONNX at all.
    std::fs::write(&p, b"this is not a model").unwrap();
    assert!(matches!(load(&p).unwrap_err(), Error::ModelCorrupt { .. }));
}

#[test]
fn wrong_input_shape_is_refused() {
    let e = load(&fixture("wrong_channels.onnx")).unwrap_err();
    assert!(matches!(e, Error::ModelShape { .. }), "{e:?}");
    assert!(e.to_string().contains("[1, 1, 32, 32]"), "{e}");
}

#[test]
fn unsupported_operator_is_named() {
    let e = load(&fixture("unsupported_op.onnx")).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::UnsupportedOp { .. }), "{e:?}");
    assert!(msg.contains("FancySegment"), "{msg}");
}

#[test]
fn preprocessing_comes_from_metadata_or_sidecar() {
    let e = load(&fixture("no_metadata.onnx")).unwrap_err();
    assert!(matches!(e, Error::ModelMetadata { .. }), "{e:?}");
    assert!(e.to_string().contains("lgms.channel_order"), "{e}");
    // The same file with a sidecar next to it loads, with the sidecar's values.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.onnx");
    std::fs::copy(fixture("no_metadata.onnx"), &p).unwrap();
    std::fs::write(
        dir.path().join("m.onnx.json"),
        r#"{"lgms.channel_order":"BGR","lgms.mean":"0.5,0.5,0.5","lgms.std":"0.25,0.25,0.25",
            "lgms.max_pixel_value":"255","lgms.extra_scale":"1","lgms.threshold":"0.3","lgms.name":"side"}"#,
    )
    .unwrap();
    let m = load(&p).unwrap();
    assert_eq!(m.info().name, "side");
    assert_eq!(m.info().threshold, 0.3);
    assert_eq!(m.info().normalize.mean, [0.5; 3]);
    // A malformed value names the key.
    std::fs::write(
        dir.path().join("m.onnx.json"),
        r#"{"lgms.channel_order":"BGR","lgms.mean":"0.5,x","lgms.std":"1,1,1",
            "lgms.max_pixel_value":"255","lgms.extra_scale":"1","lgms.threshold":"0"}"#,
    )
    .unwrap();
    let e = load(&p).unwrap_err().to_string();
    assert!(e.contains("lgms.mean"), "{e}");
}

#[test]
fn bundled_model_matches_pytorch_parity_vectors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut manifest = root.join("models/parity/manifest.json");
    std::env::set_current_dir(root).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    if emulated() {
        // One vector under qemu (~90 s per inference there): the manifest
        // with only its first vector, its paths made absolute.
        let dir = root.join("models/parity");
        let text = std::fs::read_to_string(&manifest).unwrap();
        let mut m: serde_json::Value = serde_json::from_str(&text).unwrap();
        let v = &mut m["vectors"].as_array_mut().unwrap()[0];
        for key in ["input", "logits"] {
            let abs = dir.join(v[key].as_str().unwrap());
            v[key] = abs.display().to_string().into();
        }
        m["vectors"].as_array_mut().unwrap().truncate(1);
        m["model"] = root
            .join("models/lgmsnet-phantom-us.f32.onnx")
            .display()
            .to_string()
            .into();
        manifest = tmp.path().join("manifest.json");
        std::fs::write(&manifest, m.to_string()).unwrap();
    }
    let outcome = lgms_edge::tools::parity::check(&manifest, None, None).unwrap();
    assert!(!outcome.vectors.is_empty());
    assert!(outcome.passed(), "tract vs PyTorch: {}", outcome.to_text());
}

/// `make test-aarch64` sets this: the suite runs under qemu-user, where one
/// f32 inference takes ~40 s.
fn emulated() -> bool {
    std::env::var_os("LGMS_EMULATED").is_some()
}

#[test]
fn bundled_int8_masks_agree_with_f32() {
    if emulated() {
        // Two full inferences would add minutes to `make test-aarch64`; the
        // NEON int8 kernel is checked against the scalar one in tests/ops.rs.
        eprintln!("skipped under emulation (LGMS_EMULATED): run it on the board");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let f32m = load(&root.join("models/lgmsnet-phantom-us.f32.onnx")).unwrap();
    let i8m = load(&root.join("models/lgmsnet-phantom-us.int8.onnx")).unwrap();
    assert_eq!(i8m.info().precision, Precision::Int8);
    // tract must run the quantised convolutions as integer ops, not in f32.
    assert!(
        i8m.info()
            .op_histogram
            .keys()
            .any(|op| op.contains("i8") || op.contains("I8") || op.contains("Q")),
        "no quantised op in the optimised int8 plan: {:?}",
        i8m.info().op_histogram
    );
    let (mut a, mut b) = (Engine::new(f32m).unwrap(), Engine::new(i8m).unwrap());
    let input = lgms_edge::tools::parity::read_f32(
        &root.join("models/parity/image0.input.f32"),
        3 * 256 * 256,
    )
    .unwrap();
    let ma: Vec<u8> = a
        .run_tensor(&input)
        .unwrap()
        .iter()
        .map(|&l| u8::from(l > 0.0))
        .collect();
    let mb: Vec<u8> = b
        .run_tensor(&input)
        .unwrap()
        .iter()
        .map(|&l| u8::from(l > 0.0))
        .collect();
    assert!(ma.contains(&1), "the phantom frame has a lesion");
    let (iou, _) = lgms_edge::tools::eval::iou_dice(&mb, &ma);
    assert!(iou >= 0.97, "int8 vs f32 mask IoU {iou}");
}

/// `model.precision = "f16"`: tract converts the f32 model at load; the
/// engine still takes f32 in and gives f32 logits, close to the f32 run.
#[test]
fn f16_conversion_runs_and_stays_close_to_f32() {
    let p = fixture("tiny_dark.onnx");
    let half = Model::load(
        &p,
        &LoadOptions {
            f16: true,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert_eq!(half.info().precision, Precision::F16);
    assert_eq!(half.info().substitutions, Default::default());
    let full = load(&p).unwrap();
    let (h, w) = full.info().input_hw;
    let input: Vec<f32> = (0..3 * h * w)
        .map(|i| ((i * 7919) % 255) as f32 / 255.0 - 0.5)
        .collect();
    let want = Engine::new(full)
        .unwrap()
        .run_tensor(&input)
        .unwrap()
        .to_vec();
    let mut e16 = Engine::new(half).unwrap();
    let got = e16.run_tensor(&input).unwrap().to_vec();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
    let diff = want
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    // f16 keeps ~3 significant digits.
    assert!(
        diff <= 1e-2 * scale,
        "f16 vs f32: max |diff| {diff} (scale {scale})"
    );
    assert!(
        got.iter().zip(&want).any(|(a, b)| a != b),
        "no f16 rounding at all: not converted?"
    );
}

#[test]
fn f16_needs_an_f32_model() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let e = Model::load(
        &root.join("models/lgmsnet-phantom-us.int8.onnx"),
        &LoadOptions {
            f16: true,
            ..LoadOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("f32") && e.contains("lgms.precision"), "{e}");
}

/// The precision (and every metadata entry) is read from the ONNX protobuf
/// alone: a model whose graph cannot be built still tells it, and the
/// entries are those the full load reports.
#[test]
fn metadata_is_read_without_building_the_graph() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let int8 = read_metadata(&root.join("models/lgmsnet-phantom-us.int8.onnx")).unwrap();
    assert_eq!(int8.precision().unwrap(), Precision::Int8);
    // The graph has an operator tract does not know: loading fails, the
    // metadata does not.
    let p = fixture("unsupported_op.onnx");
    assert!(matches!(load(&p), Err(Error::UnsupportedOp { .. })));
    read_metadata(&p).unwrap();
    let tiny = fixture("tiny_dark.onnx");
    let meta = read_metadata(&tiny).unwrap();
    assert_eq!(meta.entries(), &load(&tiny).unwrap().info().metadata);
    assert_eq!(meta.precision().unwrap(), Precision::F32);
    assert!(matches!(
        read_metadata(Path::new("no/such/model.onnx")),
        Err(Error::ModelNotFound { .. })
    ));
}

/// An `lgms.precision` the runtime does not know is refused by name.
#[test]
fn unknown_precision_metadata_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.onnx");
    std::fs::copy(fixture("tiny_dark.onnx"), &p).unwrap();
    std::fs::write(
        dir.path().join("m.onnx.json"),
        r#"{"lgms.precision": "bf16"}"#,
    )
    .unwrap();
    let e = read_metadata(&p)
        .unwrap()
        .precision()
        .unwrap_err()
        .to_string();
    assert!(e.contains("lgms.precision") && e.contains("bf16"), "{e}");
    let e = load(&p).unwrap_err().to_string();
    assert!(e.contains("bf16"), "{e}");
}

/// A corrupt model keeps tract's error as its source.
#[test]
fn corrupt_model_keeps_its_cause() {
    use std::error::Error as _;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("junk.onnx");
    std::fs::write(&p, b"this is not a model").unwrap();
    let e = load(&p).unwrap_err();
    let cause = e.source().expect("tract's error").to_string();
    assert!(e.to_string().contains(&cause), "{e} / {cause}");
}

/// A copy of the tiny model with `sidecar` metadata next to it.
fn with_sidecar(dir: &Path, sidecar: &str) -> PathBuf {
    let p = dir.join("m.onnx");
    std::fs::copy(fixture("tiny_dark.onnx"), &p).unwrap();
    std::fs::write(dir.join("m.onnx.json"), sidecar).unwrap();
    p
}

/// Non-finite logits are a failing model, never a mask.
#[test]
fn nan_or_infinite_logits_are_an_inference_error() {
    let dir = tempfile::tempdir().unwrap();
    // A denormal pixel scale turns every bright pixel into infinity.
    let p = with_sidecar(dir.path(), r#"{"lgms.max_pixel_value": "1e-45"}"#);
    let mut engine = Engine::new(load(&p).unwrap()).unwrap();
    let mut frame = Frame::new(32, 32);
    frame.rgb.fill(200);
    let roi = Rect::full(32, 32);
    let mut mask = Mask::new(roi);
    let e = engine
        .segment(&frame, roi, &mut mask, &mut StageRecorder::new(4))
        .unwrap_err();
    assert!(matches!(e, Error::Inference { .. }), "{e:?}");
    assert!(e.to_string().contains("NaN or infinite"), "{e}");
}

/// A resize filter the runtime does not implement is refused, not ignored.
#[test]
fn an_unimplemented_resize_filter_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = with_sidecar(dir.path(), r#"{"lgms.resize": "lanczos"}"#);
    let e = load(&p).unwrap_err().to_string();
    assert!(e.contains("lgms.resize") && e.contains("lanczos"), "{e}");
    let p = with_sidecar(dir.path(), r#"{"lgms.resize": "bilinear"}"#);
    load(&p).unwrap();
}

/// The bundled int8 model was written by the gate: it carries a passing
/// accuracy record measured through lgms-edge at 0.99 or better, so
/// `lgms-edge run` takes it without `allow_ungated`; the random model's
/// int8 fixtures carry none and are refused.
#[test]
fn bundled_int8_carries_a_passing_accuracy_record() {
    use lgms_edge::infer::gate::{self, GateRecord, GateStatus};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("models/lgmsnet-phantom-us.int8.onnx");
    let md = read_metadata(&path).unwrap();
    let r = GateRecord::from_metadata(&path, md.entries(), Precision::Int8)
        .unwrap()
        .expect("a gate record");
    assert!(
        r.trusted() && r.gate >= 0.99 && r.agreement >= 0.99,
        "{r:?}"
    );
    assert!(r.held_out_frames >= 4 && r.held_out_sha256.len() == 64);
    assert!(r.measured_with.contains("lgms-edge"), "{}", r.measured_with);
    assert!(matches!(
        gate::check(&path, md.entries(), Precision::Int8, false),
        Ok(GateStatus::Passed(_))
    ));
    let random = root.join("models/lgmsnet-random.int8.onnx");
    let md = read_metadata(&random).unwrap();
    assert!(matches!(
        gate::check(&random, md.entries(), Precision::Int8, false),
        Err(Error::ModelUngated { .. })
    ));
}
