//! The `phantom` subcommand, run as a user would.

mod common;

#[test]
fn phantom_writes_image_mask_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tmp");
    let run = common::lgms_edge()
        .args(["phantom", "--out"])
        .arg(&out)
        .args(["--count", "3", "--seed", "1"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for i in 0..3 {
        let name = format!("{i:05}.png");
        let img = image::open(out.join("images").join(&name)).unwrap();
        let mask = image::open(out.join("masks").join(&name)).unwrap();
        assert_eq!((img.width(), img.height()), (256, 256));
        assert_eq!((mask.width(), mask.height()), (256, 256));
    }
    assert!(!out.join("images/00003.png").exists());
}

#[test]
fn phantom_endoscopy_with_size() {
    let dir = tempfile::tempdir().unwrap();
    let run = common::lgms_edge()
        .args(["phantom", "--out"])
        .arg(dir.path())
        .args(["--count", "1", "--kind", "endoscopy", "--size", "96x64"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let img = image::open(dir.path().join("images/00000.png")).unwrap();
    assert_eq!((img.width(), img.height()), (96, 64));
}

#[test]
fn bad_arguments_fail_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (vec!["--count", "1", "--kind", "mri"], "ultrasound"),
        (vec!["--count", "1", "--size", "big"], "256x256"),
        (vec!["--count", "1", "--size", "8x8"], "32..=4096"),
        (vec!["--count", "0"], "--count 1"),
    ] {
        let run = common::lgms_edge()
            .args(["phantom", "--out"])
            .arg(dir.path())
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{args:?} succeeded");
        assert!(
            err.contains("fix") && err.contains(needle),
            "{args:?}: {err}"
        );
    }
}
