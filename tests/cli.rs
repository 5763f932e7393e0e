//! The binary's contract with a device engineer: bad input gives a clear
//! message naming the thing and the fix, and a non-zero exit; good input
//! runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
#[path = "common/control.rs"]
mod control;

fn bin() -> Command {
    let mut c = common::lgms_edge();
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c.env("RUST_LOG", "warn");
    c
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fails_with(out: Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

/// The stdout of a run that must have succeeded (else its stderr).
fn succeeds(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A board file in `dir`: a small phantom and the tiny test model.
fn tiny_bench_config(dir: &std::path::Path) -> PathBuf {
    tiny_config(dir, "b.toml", "[phantom]\nwidth = 96\nheight = 64")
}

/// A stats report (JSON) has a line for each of the seven stages.
fn assert_every_stage(report: &serde_json::Value) {
    let stages: Vec<&str> = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    for s in [
        "capture",
        "preprocess",
        "inference",
        "postprocess",
        "compose",
        "display",
        "end_to_end",
    ] {
        assert!(stages.contains(&s), "{stages:?}");
    }
}

#[test]
fn info_on_missing_model() {
    let out = bin().args(["info", "models/nope.onnx"]).output().unwrap();
    fails_with(out, &["models/nope.onnx", "not found", "fix"]);
}

#[test]
fn info_on_truncated_model() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(root().join("tests/fixtures/tiny_dark.onnx")).unwrap();
    let p = dir.path().join("half.onnx");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let out = bin().arg("info").arg(&p).output().unwrap();
    fails_with(out, &["half.onnx", "not a valid ONNX model"]);
}

#[test]
fn info_on_wrong_input_shape() {
    let out = bin()
        .args(["info", "tests/fixtures/wrong_channels.onnx"])
        .output()
        .unwrap();
    fails_with(out, &["wrong_channels.onnx", "expected [1, 3, H, W]"]);
}

#[test]
fn info_on_unsupported_operator() {
    let out = bin()
        .args(["info", "tests/fixtures/unsupported_op.onnx"])
        .output()
        .unwrap();
    fails_with(out, &["FancySegment"]);
}

#[test]
fn info_prints_model_and_cpu() {
    let out = bin()
        .args(["info", "tests/fixtures/tiny_dark.onnx"])
        .output()
        .unwrap();
    let text = succeeds(&out);
    for n in [
        "tiny-dark",
        "[1, 3, 32, 32]",
        "parameters:",
        "cpu:",
        "operators",
        // The tiny model has none of the patterns our operators replace.
        "lgms ops:     0 attention, 0 upsample 2x, 0 1x1 conv, 0 3x3 conv, 0 depthwise split, 0 gelu, 0 int8 conv, 0 max pool, 0 norm, 0 linear, 0 permute",
    ] {
        assert!(text.contains(n), "{n}: {text}");
    }
}

/// `info` names the subgraphs on our operators; `LGMS_SKIP_OPS` leaves the
/// named ones to tract.
#[test]
fn info_reports_our_operators_and_skip_ops() {
    for (skip, line, op) in [
        (
            "",
            "4 attention, 4 upsample 2x, 8 1x1 conv, 17 3x3 conv, 3 depthwise split, 5 gelu, 0 int8 conv, 4 max pool, 11 norm, 16 linear, 4 permute",
            "LgmsAttention",
        ),
        (
            "attention,conv1x1,norm,dwconv,permute",
            "0 attention, 4 upsample 2x, 0 1x1 conv, 17 3x3 conv, 0 depthwise split, 9 gelu, 0 int8 conv, 4 max pool, 0 norm, 16 linear, 0 permute",
            "Softmax",
        ),
    ] {
        let out = bin()
            .env("LGMS_SKIP_OPS", skip)
            .args(["info", "models/lgmsnet-phantom-us.f32.onnx"])
            .output()
            .unwrap();
        let text = succeeds(&out);
        assert!(
            text.contains(&format!("lgms ops:     {line}")),
            "{skip}: {text}"
        );
        assert!(text.contains(op), "{skip}: {text}");
    }
}

#[test]
fn run_with_unreadable_or_bad_config() {
    let out = bin()
        .args(["run", "--config", "boards/does-not-exist.toml"])
        .output()
        .unwrap();
    fails_with(out, &["boards/does-not-exist.toml", "cannot read"]);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "source = \"phantom\"\n[model\npath = 3").unwrap();
    fails_with(
        bin().arg("run").arg("--config").arg(&p).output().unwrap(),
        &["bad.toml", "invalid TOML"],
    );
    std::fs::write(&p, "max_mask_age_ms = -5\n[model]\npath = \"x.onnx\"\n").unwrap();
    fails_with(
        bin().arg("run").arg("--config").arg(&p).output().unwrap(),
        &["bad.toml", "max_mask_age_ms"],
    );
    // A valid config naming a missing model.
    std::fs::write(&p, "[model]\npath = \"missing-model.onnx\"\n").unwrap();
    fails_with(
        bin().arg("run").arg("--config").arg(&p).output().unwrap(),
        &["missing-model.onnx", "not found"],
    );
}

#[test]
fn run_from_config_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    let video = dir.path().join("v.y4m");
    let stats = dir.path().join("s.json");
    let model = root().join("tests/fixtures/tiny_dark.onnx");
    std::fs::write(
        &cfg,
        format!(
            "display = {:?}\nframes = 12\nstats_json = {:?}\n[phantom]\nwidth = 128\nheight = 96\nfps = {}\n[model]\npath = {:?}\n",
            video.display().to_string(),
            stats.display().to_string(),
            // Under qemu-user (make test-aarch64) a slower source, so that
            // the display keeps pace and all 12 frames come out.
            if std::env::var_os("LGMS_EMULATED").is_some() { 8 } else { 30 },
            model.display().to_string()
        ),
    )
    .unwrap();
    let out = bin().arg("run").arg("--config").arg(&cfg).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("12 in, 12 out"), "{text}");
    let y4m = std::fs::read(&video).unwrap();
    assert!(y4m.starts_with(b"YUV4MPEG2 W128 H96"));
    assert_eq!(y4m.windows(6).filter(|w| w == b"FRAME\n").count(), 12);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    assert_eq!(json["frames_out"], 12);
    assert_every_stage(&json);
}

#[test]
fn eval_matches_the_hand_computed_dice() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("e.json");
    let out = bin()
        .args([
            "eval",
            "--model",
            "tests/fixtures/tiny_dark.onnx",
            "--data",
            "tests/fixtures/eval",
            "--json",
        ])
        .arg(&json)
        .args(["--compare", "tests/fixtures/tiny_dark.onnx"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    // See tests/fixtures/eval/README.md: a.png IoU 2/3 (Dice 0.8), b.png 1 (Dice 1).
    let iou_a = (512.0 + 1e-5) / (768.0 + 1e-5);
    let dice_a = 2.0 * iou_a / (1.0 + iou_a);
    let close = |v: &serde_json::Value, x: f64| (v.as_f64().unwrap() - x).abs() < 1e-9;
    assert!(close(&r["per_image"][0]["iou"], iou_a), "{r}");
    assert!(close(&r["mean_dice"], (dice_a + 1.0) / 2.0), "{r}");
    assert!(close(&r["mean_iou"], (iou_a + 1.0) / 2.0), "{r}");
    // A model compared with itself agrees perfectly.
    assert!(close(&r["mean_agreement_iou"], 1.0), "{r}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mean Dice 0.9000"), "{text}");
    // A folder without masks/ is a clear error.
    let bad = bin()
        .args([
            "eval",
            "--model",
            "tests/fixtures/tiny_dark.onnx",
            "--data",
            "models",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("images"));
}

#[test]
fn bench_reports_every_stage_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_bench_config(dir.path());
    let json = dir.path().join("b.json");
    let out = bin()
        .args(["bench", "--frames", "5", "--warmup", "1", "--config"])
        .arg(&cfg)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["frames_out"], 5);
    assert_every_stage(&r);
    for s in r["stages"].as_array().unwrap() {
        assert_eq!(s["count"], 5, "{s}");
        assert!(s["p99_ms"].as_f64().unwrap() >= s["p50_ms"].as_f64().unwrap());
    }
    assert!(r["fps"].as_f64().unwrap() > 0.0);
}

/// `bench --profile` lists the time per tract operator; `--stock` and
/// `--f16` load the model the other ways and still run every stage.
#[test]
fn bench_profile_stock_and_f16() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_bench_config(dir.path());
    for extra in [&["--profile", "2"][..], &["--stock"], &["--f16"]] {
        let out = bin()
            .args(["bench", "--frames", "2", "--warmup", "0", "--config"])
            .arg(&cfg)
            .args(extra)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("inference"), "{extra:?}: {text}");
        if extra[0] == "--profile" {
            assert!(
                text.contains("profile:") && text.contains("ms per inference"),
                "{text}"
            );
            // The tiny model is one convolution: it shows up by name.
            assert!(text.contains("top 15 nodes:"), "{text}");
        }
        if extra[0] == "--f16" {
            assert!(text.contains("f16"), "{text}");
        }
    }
}

/// Bad `demo` flags are a usage error naming the setting and its fix; no
/// generated configuration text shows through.
#[test]
fn demo_with_bad_flags() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, value, key) in [
        ("--fps", "NaN", "phantom.fps = NaN"),
        ("--fps", "inf", "phantom.fps = inf"),
        ("--workers", "0", "model.workers = 0"),
        ("--max-mask-age-ms", "0", "max_mask_age_ms = 0"),
    ] {
        let out = bin()
            .args(["demo", "--model", "tests/fixtures/tiny_dark.onnx", "--out"])
            .arg(dir.path())
            .args([flag, value])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        fails_with(out, &[key, "fix"]);
        for generated in ["TOML", "[model]", "<demo", "config \""] {
            assert!(!err.contains(generated), "{flag} {value}: {err}");
        }
    }
}

/// A demo that ends by itself writes its GIF (only a signal skips it), and
/// its video and statistics.
#[test]
fn demo_writes_its_gif() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args([
            "demo",
            "--model",
            "tests/fixtures/tiny_dark.onnx",
            "--frames",
            "3",
        ])
        .args(["--allow-ungated", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = succeeds(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("stopped by a signal"), "{err}");
    let gif = std::fs::read(dir.path().join("demo.gif")).unwrap();
    assert!(gif.starts_with(b"GIF89a"), "not a GIF");
    for f in ["demo.y4m", "stats.json"] {
        assert!(dir.path().join(f).is_file(), "{f} missing: {text}");
    }
}

/// A usage error is not dressed up as a config file; a cause is said once.
#[test]
fn errors_name_their_cause_once() {
    let out = bin().args(["bench", "--frames", "0"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    fails_with(out, &["--frames 0", "fix"]);
    assert!(!err.contains("<bench>") && !err.contains("config"), "{err}");
    let out = bin()
        .args(["run", "--config", "boards/does-not-exist.toml"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn roi_outside_the_frame_names_the_config_and_leaves_the_display_alone() {
    let dir = tempfile::tempdir().unwrap();
    let display = dir.path().join("shown.y4m");
    std::fs::write(&display, b"an earlier run's video").unwrap();
    let cfg = dir.path().join("roi.toml");
    let model = root().join("tests/fixtures/tiny_dark.onnx");
    std::fs::write(
        &cfg,
        format!(
            "display = {:?}\nframes = 2\nroi = {{ x = 80, y = 0, w = 64, h = 64 }}\n\
             [phantom]\nwidth = 96\nheight = 64\n[model]\npath = {:?}\n",
            display.display().to_string(),
            model.display().to_string()
        ),
    )
    .unwrap();
    let out = bin()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    fails_with(out, &["roi.toml", "roi", "96x64", "fix"]);
    assert_eq!(
        std::fs::read(&display).unwrap(),
        b"an earlier run's video",
        "the display file was touched before the config was checked"
    );
}

/// `lgms-edge run -c CFG`, to its end.
fn run_config(cfg: &std::path::Path) -> Output {
    bin().arg("run").arg("-c").arg(cfg).output().unwrap()
}

/// A config `name` in `dir` running the tiny model, with the `extra` keys.
fn tiny_config(dir: &std::path::Path, name: &str, extra: &str) -> PathBuf {
    let cfg = dir.join(name);
    let model = root().join("tests/fixtures/tiny_dark.onnx");
    std::fs::write(
        &cfg,
        format!(
            "{extra}\n[model]\npath = {:?}\n",
            model.display().to_string()
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn outputs_are_checked_before_any_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let display = dir.path().join("shown.y4m");
    std::fs::write(&display, b"an earlier run's video").unwrap();
    let d = display.display().to_string();
    // The recording would overwrite the display.
    let cfg = tiny_config(
        dir.path(),
        "same.toml",
        &format!("display = {d:?}\nrecord = \"input\"\nrecord_path = {d:?}\nframes = 2"),
    );
    let out = run_config(&cfg);
    fails_with(
        out,
        &["same.toml", "display and record_path", "shown.y4m", "fix"],
    );
    // Statistics that could not be written are found before the run.
    let cfg = tiny_config(
        dir.path(),
        "stats.toml",
        &format!(
            "display = {d:?}\nstats_json = {:?}\nframes = 2",
            format!("{d}/s.json")
        ),
    );
    let out = run_config(&cfg);
    fails_with(out, &["stats.toml", "stats_json", "not a folder", "fix"]);
    assert_eq!(std::fs::read(&display).unwrap(), b"an earlier run's video");
}

#[test]
fn a_damaged_file_replays_to_its_end_counting_the_damage() {
    let dir = tempfile::tempdir().unwrap();
    // Ten 64x48 grey frames; frame 4's marker damaged in place.
    let mut y4m = b"YUV4MPEG2 W64 H48 F10:1 Cmono\n".to_vec();
    for n in 0..10u8 {
        y4m.extend(if n == 4 {
            &b"FRXME\n"[..]
        } else {
            &b"FRAME\n"[..]
        });
        y4m.extend(std::iter::repeat_n(n * 20, 64 * 48));
    }
    let src = dir.path().join("in.y4m");
    std::fs::write(&src, &y4m).unwrap();
    let shown = dir.path().join("out.y4m");
    let stats = dir.path().join("s.json");
    let cfg = tiny_config(
        dir.path(),
        "replay.toml",
        &format!(
            "source = {:?}\ndisplay = {:?}\nstats_json = {:?}\n[capture]\npace = \"fast\"",
            src.display().to_string(),
            shown.display().to_string(),
            stats.display().to_string()
        ),
    );
    let out = run_config(&cfg);
    let text = succeeds(&out);
    assert!(
        text.contains("10 in, 9 out, 0 dropped, 1 corrupt"),
        "{text}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("frame 4") && err.contains("in.y4m"), "{err}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    assert_eq!(json["frames_corrupt"], 1);
    // Lossless replay: every frame shown carries its own mask.
    assert_eq!(json["frames_with_mask"], 9);
    let written = std::fs::read(&shown).unwrap();
    assert_eq!(written.windows(6).filter(|w| w == b"FRAME\n").count(), 9);
    // Strict: the damaged frame is an error.
    let cfg = tiny_config(
        dir.path(),
        "strict.toml",
        &format!(
            "source = {:?}\ndisplay = \"null\"\n[capture]\npace = \"fast\"\nstrict = true",
            src.display().to_string()
        ),
    );
    let out = run_config(&cfg);
    fails_with(out, &["in.y4m", "frame 4", "corrupt"]);
}

#[test]
fn absurd_sizes_and_wrong_kinds_of_path_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args([
            "phantom",
            "--count",
            "1",
            "--size",
            "100000x100000",
            "--out",
        ])
        .arg(dir.path().join("p"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    fails_with(out, &["100000x100000", "fix"]);
    assert!(
        !dir.path().join("p").exists(),
        "nothing made before the check"
    );
    let out = bin().arg("info").arg(dir.path()).output().unwrap();
    fails_with(out, &["is a folder", "fix"]);
    let cfg = tiny_config(dir.path(), "gone.toml", "source = \"no/such/folder\"");
    let out = run_config(&cfg);
    fails_with(out, &["no/such/folder", "does not exist", "fix"]);
}

#[test]
fn a_signal_ends_an_endless_run_with_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(
        dir.path(),
        "endless.toml",
        "display = \"null\"\n[phantom]\nwidth = 96\nheight = 64\nfps = 30",
    );
    let child = bin()
        .args(["run", "-c", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let pid = child.id() as i32;
    // SAFETY: `pid` is our own child, still running (it never ends alone).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let t0 = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    let text = succeeds(&out);
    // Under qemu-user the tiny model may still be loading at the signal.
    if std::env::var_os("LGMS_EMULATED").is_none() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(3),
            "took {:?}",
            t0.elapsed()
        );
    }
    assert!(
        text.contains(" out, ") && text.contains("model load:"),
        "{text}"
    );
}

#[test]
fn a_full_disk_stops_the_recording_not_the_video() {
    // /dev/full answers every write with ENOSPC, as a full card does.
    if !std::path::Path::new("/dev/full").exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let shown = dir.path().join("shown.y4m");
    let cfg = tiny_config(
        dir.path(),
        "full.toml",
        &format!(
            "display = {:?}\nframes = 12\nrecord = \"input\"\nrecord_path = \"/dev/full\"\n\
             [phantom]\nwidth = 96\nheight = 64\nfps = 30",
            shown.display().to_string()
        ),
    );
    let out = run_config(&cfg);
    let text = succeeds(&out);
    assert!(text.contains("12 in, 12 out"), "{text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("recording \"/dev/full\" stopped") && err.contains("the video goes on"),
        "{err}"
    );
    let video = std::fs::read(&shown).unwrap();
    assert_eq!(video.windows(6).filter(|w| w == b"FRAME\n").count(), 12);
}

/// The tiny test model under `dir`, declared `precision` by a sidecar JSON
/// with the extra metadata `extra` (an accuracy record), and a board file
/// running it at that precision; returns (config, stats path).
fn declared_model(
    dir: &std::path::Path,
    precision: &str,
    extra: &[(&str, &str)],
    allow_ungated: bool,
) -> (PathBuf, PathBuf) {
    let model = dir.join("m.onnx");
    std::fs::copy(root().join("tests/fixtures/tiny_dark.onnx"), &model).unwrap();
    let mut md = serde_json::Map::new();
    md.insert("lgms.precision".into(), precision.into());
    for (k, v) in extra {
        md.insert((*k).into(), (*v).into());
    }
    std::fs::write(dir.join("m.onnx.json"), serde_json::to_string(&md).unwrap()).unwrap();
    let cfg = dir.join("c.toml");
    let stats = dir.join("s.json");
    std::fs::write(
        &cfg,
        format!(
            "display = \"null\"\nframes = 3\nstats_json = {:?}\n[phantom]\nwidth = 96\nheight = 64\n[model]\npath = {:?}\nprecision = \"int8\"\nallow_ungated = {allow_ungated}\n",
            stats.display().to_string(),
            model.display().to_string()
        ),
    )
    .unwrap();
    (cfg, stats)
}

fn passing_record(agreement: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("lgms.gate.int8.passed", "true"),
        ("lgms.gate.int8.agreement_mean_iou", agreement),
        ("lgms.gate.int8.min_iou", "0.97"),
        ("lgms.gate.int8.gate", "0.97"),
        ("lgms.gate.int8.held_out_frames", "6"),
        ("lgms.gate.int8.held_out_source", "my-frames/"),
        ("lgms.gate.int8.held_out_sha256", "ab12cd34ef56ab12cd34"),
        ("lgms.gate.int8.kept_f32", "/stem/conv/conv.0/Conv"),
        (
            "lgms.gate.int8.measured_with",
            "lgms-edge masks (tract int8)",
        ),
    ]
}

#[test]
fn run_refuses_an_int8_model_without_a_passing_record() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = declared_model(dir.path(), "int8", &[], false);
    let out = bin().arg("run").arg("--config").arg(&cfg).output().unwrap();
    fails_with(
        out,
        &[
            "m.onnx",
            "runs as int8 without a passing accuracy record",
            "make model-int8",
            "CALIB=",
            "allow_ungated = true",
        ],
    );
    // A record below its gate is refused too, saying what was reached.
    let dir = tempfile::tempdir().unwrap();
    let mut failing = passing_record("0.81");
    failing[0] = ("lgms.gate.int8.passed", "false");
    let (cfg, _) = declared_model(dir.path(), "int8", &failing, false);
    let out = bin().arg("run").arg("--config").arg(&cfg).output().unwrap();
    fails_with(out, &["FAILED: mean mask IoU vs f32 0.8100", "gate 0.970"]);
}

#[test]
fn run_allows_an_ungated_model_when_the_board_says_so_and_says_unverified() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, stats) = declared_model(dir.path(), "int8", &[], true);
    let out = bin().arg("run").arg("--config").arg(&cfg).output().unwrap();
    let text = succeeds(&out);
    assert!(text.contains("int8 unverified"), "{text}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    assert!(
        json.to_string().contains("int8 unverified"),
        "the report names the model unverified: {json}"
    );
    // With a passing record it runs, and is not called unverified.
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = declared_model(dir.path(), "int8", &passing_record("0.985"), false);
    let out = bin().arg("run").arg("--config").arg(&cfg).output().unwrap();
    let text = succeeds(&out);
    assert!(!text.contains("unverified"), "{text}");
}

/// `info` names the int8 conv kernel the run uses: every aarch64 core has
/// one (the Pi 4's Cortex-A72 `neon-widening`, a dotprod core
/// `neon-dotprod`).
#[test]
fn info_names_the_int8_kernel() {
    let out = bin()
        .args(["info", "models/lgmsnet-phantom-us.int8.onnx"])
        .output()
        .unwrap();
    let text = succeeds(&out);
    let want = lgms_edge::infer::ops::qconv::selected().map_or("none", |k| k.name());
    assert!(text.contains(&format!("int8 kernel:  {want}")), "{text}");
    #[cfg(target_arch = "aarch64")]
    assert!(
        text.contains("int8 kernel:  neon-"),
        "no NEON int8 kernel: {text}"
    );
}

#[test]
fn info_prints_the_accuracy_record() {
    let dir = tempfile::tempdir().unwrap();
    declared_model(dir.path(), "int8", &passing_record("0.985"), false);
    let out = bin()
        .arg("info")
        .arg(dir.path().join("m.onnx"))
        .output()
        .unwrap();
    let text = succeeds(&out);
    for needle in [
        "gate int8:    PASSED: mean mask IoU vs f32 0.9850 (min 0.9700) against gate 0.970 on 6 held-out frames of my-frames/ (sha256 ab12cd34ef56)",
        "layers kept f32: 1 (/stem/conv/conv.0/Conv)",
        "measured with lgms-edge masks (tract int8)",
    ] {
        assert!(text.contains(needle), "lacks {needle:?}: {text}");
    }
    let dir = tempfile::tempdir().unwrap();
    declared_model(dir.path(), "int8", &[], false);
    let out = bin()
        .arg("info")
        .arg(dir.path().join("m.onnx"))
        .output()
        .unwrap();
    let text = succeeds(&out);
    assert!(text.contains("gate int8:    no accuracy record"), "{text}");
    assert!(
        text.contains("refuses it as int8 unless allow_ungated = true"),
        "{text}"
    );
}

#[test]
fn masks_writes_masks_and_inputs_that_reproduce_them() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    // Pictures of different sizes: each is resized as a whole frame.
    for (i, (w, h)) in [(40u32, 30u32), (64, 64), (50, 20)].into_iter().enumerate() {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 5) as u8, (y * 7) as u8, (i * 80) as u8])
        });
        img.save(frames.join(format!("f{i}.png"))).unwrap();
    }
    let model = root().join("tests/fixtures/tiny_dark.onnx");
    let a = dir.path().join("a");
    let out = bin()
        .args(["masks", "--inputs", "--model"])
        .arg(&model)
        .arg("--frames")
        .arg(&frames)
        .arg("--out")
        .arg(&a)
        .output()
        .unwrap();
    let text = succeeds(&out);
    assert!(text.contains("3 masks"), "{text}");
    for n in ["f0", "f1", "f2"] {
        let m = image::open(a.join("masks").join(format!("{n}.png"))).unwrap();
        assert_eq!((m.width(), m.height()), (32, 32));
        assert_eq!(
            std::fs::metadata(a.join("inputs").join(format!("{n}.f32")))
                .unwrap()
                .len(),
            4 * 3 * 32 * 32
        );
    }
    // --logits: the logits, whose sign is the mask.
    let d = dir.path().join("d");
    let out = bin()
        .args(["masks", "--logits", "--limit", "1", "--model"])
        .arg(&model)
        .arg("--frames")
        .arg(&frames)
        .arg("--out")
        .arg(&d)
        .output()
        .unwrap();
    succeeds(&out);
    let logits: Vec<f32> = std::fs::read(d.join("logits/f0.f32"))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let mask = image::open(d.join("masks/f0.png")).unwrap().to_luma8();
    assert_eq!(logits.len(), 32 * 32);
    for (l, m) in logits.iter().zip(mask.as_raw()) {
        assert_eq!(*l > 0.0, *m == 255);
    }
    // The written inputs, fed back, give the same masks.
    let b = dir.path().join("b");
    let out = bin()
        .args(["masks", "--limit", "2", "--model"])
        .arg(&model)
        .arg("--frames")
        .arg(a.join("inputs"))
        .arg("--out")
        .arg(&b)
        .output()
        .unwrap();
    assert!(succeeds(&out).contains("2 masks"));
    for n in ["f0", "f1"] {
        let name = format!("masks/{n}.png");
        assert_eq!(
            std::fs::read(a.join(&name)).unwrap(),
            std::fs::read(b.join(&name)).unwrap()
        );
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("masks.json")).unwrap()).unwrap();
    assert_eq!(report["names"], serde_json::json!(["f0", "f1"]));
    // --step 2 takes one frame in two.
    let c = dir.path().join("c");
    let out = bin()
        .args(["masks", "--step", "2", "--model"])
        .arg(&model)
        .arg("--frames")
        .arg(&frames)
        .arg("--out")
        .arg(&c)
        .output()
        .unwrap();
    assert!(succeeds(&out).contains("2 masks"));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.join("masks.json")).unwrap()).unwrap();
    assert_eq!(report["names"], serde_json::json!(["f0", "f2"]));
    // Nothing to read is an error naming the folder.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = bin()
        .args(["masks", "--model"])
        .arg(&model)
        .arg("--frames")
        .arg(&empty)
        .arg("--out")
        .arg(dir.path().join("c"))
        .output()
        .unwrap();
    fails_with(out, &["empty", "no .f32 inputs"]);
}

#[test]
fn run_refuses_f16_without_an_f16_record_in_the_f32_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = declared_model(dir.path(), "f32", &passing_record("0.99"), false);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("precision = \"int8\"", "precision = \"f16\"");
    std::fs::write(&cfg, text).unwrap();
    let out = bin().arg("run").arg("--config").arg(&cfg).output().unwrap();
    // The int8 record says nothing about f16.
    fails_with(
        out,
        &[
            "runs as f16 without a passing accuracy record",
            "make model-f16",
            "lgms.gate.f16",
        ],
    );
}

#[test]
fn the_control_socket_answers_while_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ctl.sock");
    let cfg = tiny_config(
        dir.path(),
        "ctl.toml",
        &format!(
            "display = \"null\"\nframes = 90\n[phantom]\nwidth = 96\nheight = 64\nfps = 30\n\
             [control]\nsocket = {:?}\ncine_seconds = 2",
            sock.display().to_string()
        ),
    );
    let (child, s) = control::run_with_control_socket(control::run_cmd(&cfg, "warn"), &sock);
    let mut c = control::Control::new(s);
    c.wait_for_cine(1);
    let answers: Vec<serde_json::Value> = [
        r#"{"cmd":"freeze"}"#,
        r#"{"cmd":"status"}"#,
        r#"{"cmd":"fly"}"#,
    ]
    .iter()
    .map(|cmd| c.ask(cmd))
    .collect();
    assert_eq!(answers[0]["ok"], true, "{answers:?}");
    assert_eq!(answers[1]["frozen"], true, "{answers:?}");
    assert_eq!(answers[2]["ok"], false, "{answers:?}");
    drop(c);
    let out = child.wait();
    succeeds(&out);
    assert!(!sock.exists(), "the socket file goes with the run");
}

#[test]
fn save_cine_and_set_patient_write_dicom_files_to_the_spool() {
    use dicom_dictionary_std::tags;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ctl.sock");
    let spool = dir.path().join("spool");
    let cfg = tiny_config(
        dir.path(),
        "dicom.toml",
        &format!(
            "display = \"null\"\nframes = 150\n[phantom]\nwidth = 96\nheight = 64\nfps = 30\n\
             [measure]\ndepth_mm = 32\n\
             [control]\nsocket = {:?}\ncine_seconds = 0.5\nspool_dir = {:?}\nsnapshot_dir = {:?}\n\
             patient_id = \"BOARD-1\"\nstudy_id = \"S1\"\naccession_number = \"A1\"",
            sock.display().to_string(),
            spool.display().to_string(),
            dir.path().join("snaps").display().to_string(),
        ),
    );
    let (child, s) = control::run_with_control_socket(control::run_cmd(&cfg, "warn"), &sock);
    let mut c = control::Control::new(s);
    // A full cine: 0.5 s at 30 fps.
    c.wait_for_cine(15);
    let mut ask = |cmd: &str| c.ask(cmd);
    let board = ask(r#"{"cmd":"save-snapshot"}"#);
    let bad = ask(r#"{"cmd":"set-patient","id":"P\\1","name":"Doe^Jane"}"#);
    let set = ask(r#"{"cmd":"set-patient","id":"P-77","name":"Doe^Jane"}"#);
    let cine = ask(r#"{"cmd":"save-cine"}"#);
    drop(c);
    let out = child.wait();
    succeeds(&out);
    assert_eq!(board["ok"], true, "{board}");
    assert_eq!(bad["ok"], false, "{bad}");
    assert!(
        bad["error"].as_str().unwrap().contains("patient_id"),
        "{bad}"
    );
    assert_eq!(
        (set["ok"].as_bool(), set["patient_id"].as_str()),
        (Some(true), Some("P-77"))
    );
    assert_eq!(cine["ok"], true, "{cine}");

    // Both files are whole once the run is over (each was renamed into place).
    let open = |answer: &serde_json::Value| {
        let path = PathBuf::from(answer["dicom"].as_str().unwrap());
        assert_eq!(path.parent(), Some(spool.as_path()));
        let obj = dicom_object::open_file(&path).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path.with_extension("json")).unwrap()).unwrap();
        (obj, json, path)
    };
    let text = |obj: &dicom_object::DefaultDicomObject, tag| {
        obj.element(tag)
            .unwrap()
            .to_str()
            .unwrap()
            .trim()
            .to_string()
    };
    let (shot, shot_json, shot_path) = open(&board);
    assert_eq!(text(&shot, tags::PATIENT_ID), "BOARD-1");
    assert_eq!(text(&shot, tags::STUDY_ID), "S1");
    assert_eq!(text(&shot, tags::ACCESSION_NUMBER), "A1");
    assert_eq!(text(&shot, tags::SOP_CLASS_UID), lgms_edge::dicom::US_IMAGE);
    let uid = text(&shot, tags::SOP_INSTANCE_UID);
    assert_eq!(shot_path.file_stem().unwrap().to_str(), Some(uid.as_str()));
    assert_eq!(shot_json["sop_instance_uid"], uid.as_str());
    assert_eq!(shot_json["calibrated"], true);
    assert_eq!(
        shot.element(tags::PIXEL_DATA)
            .unwrap()
            .to_bytes()
            .unwrap()
            .len(),
        96 * 64 * 3
    );
    // 32 mm over 64 rows: 0.5 mm, 0.05 cm per pixel.
    let region = &shot
        .element(tags::SEQUENCE_OF_ULTRASOUND_REGIONS)
        .unwrap()
        .items()
        .unwrap()[0];
    let dx = region
        .element(tags::PHYSICAL_DELTA_X)
        .unwrap()
        .to_float64()
        .unwrap();
    assert!((dx - 0.05).abs() < 1e-9, "{dx}");

    let (cine_obj, cine_json, _) = open(&cine);
    assert_eq!(
        text(&cine_obj, tags::SOP_CLASS_UID),
        lgms_edge::dicom::US_MULTIFRAME_IMAGE
    );
    assert_eq!(text(&cine_obj, tags::PATIENT_ID), "P-77");
    assert_eq!(text(&cine_obj, tags::PATIENT_NAME), "Doe^Jane");
    assert_ne!(
        text(&cine_obj, tags::STUDY_INSTANCE_UID),
        text(&shot, tags::STUDY_INSTANCE_UID),
        "a new patient, a new study"
    );
    let frames: usize = text(&cine_obj, tags::NUMBER_OF_FRAMES).parse().unwrap();
    assert_eq!(frames, 15, "the whole cine ring");
    assert_eq!(cine_json["frames"].as_array().unwrap().len(), frames);
    assert_eq!(
        cine_obj
            .element(tags::PIXEL_DATA)
            .unwrap()
            .to_bytes()
            .unwrap()
            .len(),
        frames * 96 * 64 * 3
    );
    let ms: f64 = text(&cine_obj, tags::FRAME_TIME).parse().unwrap();
    assert!((20.0..50.0).contains(&ms), "about 33 ms: {ms}");
    let left: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    // A snapshot with measured lesions also has its SR in the spool.
    let lesions = shot_json["frames"][0].as_array().unwrap().len();
    let report = shot_json["measurement_report"].as_str();
    assert_eq!(report.is_some(), lesions > 0, "{shot_json}");
    if let Some(uid) = report {
        let sr = dicom_object::open_file(spool.join(format!("{uid}.dcm"))).unwrap();
        assert_eq!(
            text(&sr, tags::SOP_CLASS_UID),
            lgms_edge::dicom::sr::COMPREHENSIVE_SR
        );
        assert_eq!(text(&sr, tags::PATIENT_ID), "BOARD-1");
    }
    assert_eq!(
        left.len(),
        4 + usize::from(report.is_some()),
        "two files and two sidecars (and the SR), nothing half written: {left:?}"
    );
}

/// The `.dcm` files of `spool` with their SOP class UIDs.
fn spooled_classes(spool: &Path) -> Vec<(PathBuf, String)> {
    use dicom_dictionary_std::tags;
    let Ok(entries) = std::fs::read_dir(spool) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .map(|p| {
            let obj = dicom_object::open_file(&p).unwrap();
            let class = obj.element(tags::SOP_CLASS_UID).unwrap().to_str().unwrap();
            let class = class.trim_end_matches(['\0', ' ']).to_string();
            (p, class)
        })
        .collect()
}

#[test]
fn keys_from_an_input_device_freeze_and_save_snapshot_and_cine() {
    use dicom_dictionary_std::tags;
    use lgms_edge::dicom::{US_IMAGE, US_MULTIFRAME_IMAGE};
    let dir = tempfile::tempdir().unwrap();
    let (sock, fifo, spool) = (
        dir.path().join("ctl.sock"),
        dir.path().join("event0"),
        dir.path().join("spool"),
    );
    control::Keys::make(&fifo);
    let cfg = tiny_config(
        dir.path(),
        "keys.toml",
        &format!(
            "display = \"null\"\n[phantom]\nwidth = 96\nheight = 64\nfps = 30\n\
             [control]\nsocket = {:?}\ncine_seconds = 0.5\nspool_dir = {:?}\nsnapshot_dir = {:?}\n\
             input = [{:?}]\nkeys = {{ KEY_F1 = \"freeze\", KEY_F2 = \"save-snapshot\", KEY_F3 = \"save-cine\" }}",
            sock.display().to_string(),
            spool.display().to_string(),
            dir.path().join("snaps").display().to_string(),
            fifo.display().to_string(),
        ),
    );
    let (child, s) = control::run_with_control_socket(control::run_cmd(&cfg, "warn"), &sock);
    let mut c = control::Control::new(s);
    c.wait_for_cine(15);
    let mut keys = control::Keys::open(&fifo);
    assert_eq!(c.ask(r#"{"cmd":"status"}"#)["frozen"], false);
    keys.press(59); // KEY_F1
    let mut polls = 0;
    while c.ask(r#"{"cmd":"status"}"#)["frozen"] != true {
        polls += 1;
        assert!(polls < 250, "KEY_F1 did not freeze the run");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    keys.press(60); // KEY_F2
    keys.press(61); // KEY_F3
    let mut files = Vec::new();
    for _ in 0..500 {
        files = spooled_classes(&spool);
        if files.len() >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(keys);
    drop(c);
    control::stop(child);
    let mut classes: Vec<&str> = files.iter().map(|(_, c)| c.as_str()).collect();
    classes.sort();
    assert_eq!(classes, [US_MULTIFRAME_IMAGE, US_IMAGE], "{files:?}");
    let (cine, _) = files
        .iter()
        .find(|(_, c)| c == US_MULTIFRAME_IMAGE)
        .unwrap();
    let cine = dicom_object::open_file(cine).unwrap();
    let frames = cine
        .element(tags::NUMBER_OF_FRAMES)
        .unwrap()
        .to_int::<u32>();
    assert_eq!(frames.unwrap(), 15, "the whole cine ring");
    let pngs = std::fs::read_dir(dir.path().join("snaps")).unwrap().count();
    assert_eq!(pngs, 1, "the snapshot's PNG");
}
