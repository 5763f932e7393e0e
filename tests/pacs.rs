//! The spool sender against a real storage SCP: dcmtk's `storescp` on a
//! loopback port. A snapshot is spooled through the library, sent, found
//! in storescp's folder and moved to `sent/`; with the PACS down first, it
//! stays spooled until storescp starts, then arrives exactly once, also
//! across a sender restart. Skipped, with a message, where storescp is not
//! installed; CI installs dcmtk. Last, `lgms-edge run` with a `[pacs]`
//! section sends what its spool holds.

mod common;
#[path = "common/control.rs"]
mod control;
#[path = "common/dicom_tools.rs"]
mod tools;

use std::path::Path;
use std::time::Duration;

use lgms_edge::dicom::{self, Header, Modality, ModelTag, Patient, Study};
use lgms_edge::frame::{Frame, Rect};
use lgms_edge::measure::Calibration;
use lgms_edge::pacs::{Sender, Settings, FAILED_DIR, SENT_DIR};
use lgms_edge::source::backoff::Backoff;
use tools::{files_named as received, free_port, wait_for, Scp};

fn settings(port: u16) -> Settings {
    Settings {
        host: "127.0.0.1".into(),
        port,
        called_ae: "ANY-SCP".into(),
        calling_ae: "LGMS-EDGE".into(),
        backoff: Backoff::new(Duration::from_millis(50), Duration::from_millis(200)),
        poll: Duration::from_millis(50),
        timeout: Duration::from_secs(5),
    }
}

/// A snapshot in the spool, as `save-snapshot` writes it; its UID.
fn spool_snapshot(spool: &Path) -> String {
    let mut f = Frame::new(64, 48);
    for (i, b) in f.rgb.iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    let header = Header {
        modality: Modality::Ultrasound,
        patient: Patient::new("P-1", "Doe^Jane").unwrap(),
        study: Study::new("S1", "A1").unwrap(),
        model: ModelTag {
            name: "lgmsnet-phantom-us".into(),
            version: "1".into(),
            sha256: "0".repeat(64),
            precision: "f32".into(),
        },
        calibration: Calibration::spacing(0.2, 0.2),
        region: Rect::full(64, 48),
        instance_number: 1,
        sop_instance_uid: dicom::new_uid().unwrap(),
    };
    let path = dicom::save(spool, &header, &[&f], &[&[]], None).unwrap();
    assert!(path.exists());
    header.sop_instance_uid
}

/// A board file in `dir` for a small phantom run through the tiny model,
/// with `head` first, the spool `dir/spool`, a control socket `dir/ctl.sock`
/// and the PACS on the loopback `port`.
fn pacs_board(dir: &Path, port: u16, head: &str) -> std::path::PathBuf {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_dark.onnx");
    let cfg = dir.join("pacs.toml");
    std::fs::write(
        &cfg,
        format!(
            "{head}\ndisplay = \"null\"\n[phantom]\nwidth = 96\nheight = 64\nfps = 30\n\
             [control]\nspool_dir = {:?}\nsocket = {:?}\n\
             [pacs]\nhost = \"127.0.0.1\"\nport = {port}\nretry_min_ms = 50\nretry_max_ms = 200\n\
             [model]\npath = {:?}\n",
            dir.join("spool").display().to_string(),
            dir.join("ctl.sock").display().to_string(),
            model.display().to_string(),
        ),
    )
    .unwrap();
    cfg
}

fn assert_sent(spool: &Path, uid: &str) {
    let sent = spool.join(SENT_DIR);
    assert!(sent.join(format!("{uid}.dcm")).exists());
    assert!(sent.join(format!("{uid}.json")).exists(), "sidecar moved");
    assert!(!spool.join(format!("{uid}.dcm")).exists());
    assert!(!spool.join(format!("{uid}.json")).exists());
}

#[test]
fn a_spooled_snapshot_reaches_storescp_and_moves_to_sent() {
    if tools::missing("storescp", "dcmtk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (spool, out) = (dir.path().join("spool"), dir.path().join("scp"));
    let port = free_port();
    let _scp = Scp::start(port, &out);
    let uid = spool_snapshot(&spool);
    let sender = Sender::start(spool.clone(), settings(port)).unwrap();
    wait_for(Duration::from_secs(20), "file in sent/", || {
        spool.join(SENT_DIR).join(format!("{uid}.dcm")).exists()
    });
    drop(sender);
    assert_sent(&spool, &uid);
    let got = received(&out, &uid);
    assert_eq!(got.len(), 1, "{got:?}");
    // What arrived is the instance that was spooled.
    let obj = dicom_object::open_file(&got[0]).unwrap();
    assert_eq!(obj.meta().media_storage_sop_instance_uid(), uid);
}

#[test]
fn a_pacs_down_first_gets_the_file_exactly_once_when_it_comes_up() {
    if tools::missing("storescp", "dcmtk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (spool, out) = (dir.path().join("spool"), dir.path().join("scp"));
    let port = free_port();
    let uid = spool_snapshot(&spool);
    let sender = Sender::start(spool.clone(), settings(port)).unwrap();
    // Nothing listens: several retries pass, the file stays.
    std::thread::sleep(Duration::from_millis(800));
    assert!(spool.join(format!("{uid}.dcm")).exists());
    assert!(!spool.join(SENT_DIR).join(format!("{uid}.dcm")).exists());
    let _scp = Scp::start(port, &out);
    wait_for(Duration::from_secs(20), "file in sent/", || {
        spool.join(SENT_DIR).join(format!("{uid}.dcm")).exists()
    });
    // A few more passes, then a restarted sender: nothing is sent again.
    std::thread::sleep(Duration::from_millis(300));
    drop(sender);
    let again = Sender::start(spool.clone(), settings(port)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(again);
    assert_sent(&spool, &uid);
    let got = received(&out, &uid);
    assert_eq!(got.len(), 1, "delivered exactly once: {got:?}");
}

#[test]
fn run_with_a_pacs_section_sends_the_spool() {
    if tools::missing("storescp", "dcmtk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (spool, out) = (dir.path().join("spool"), dir.path().join("scp"));
    let port = free_port();
    let _scp = Scp::start(port, &out);
    let uid = spool_snapshot(&spool);
    let cfg = pacs_board(dir.path(), port, "frames = 60");
    let run = control::run_cmd(&cfg, "warn").output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_sent(&spool, &uid);
    assert_eq!(received(&out, &uid).len(), 1);
}

/// A storage SCP that takes CT images only: what a PACS configured without
/// ultrasound answers.
const CT_ONLY: &str = "[[TransferSyntaxes]]\n[Uncompressed]\n\
TransferSyntax1 = LocalEndianExplicit\nTransferSyntax2 = LittleEndianImplicit\n\
[[PresentationContexts]]\n[CT]\nPresentationContext1 = CTImageStorage\\Uncompressed\n\
[[Profiles]]\n[CT]\nPresentationContexts = CT\n";

#[test]
fn a_file_the_pacs_refuses_moves_to_failed_with_its_sidecar_and_a_fix() {
    if tools::missing("storescp", "dcmtk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (spool, out) = (dir.path().join("spool"), dir.path().join("scp"));
    let profile = dir.path().join("ct-only.cfg");
    std::fs::write(&profile, CT_ONLY).unwrap();
    let port = free_port();
    let _scp = Scp::start_with(port, &out, &["-xf", profile.to_str().unwrap(), "CT"]);
    let uid = spool_snapshot(&spool);
    let cfg = pacs_board(dir.path(), port, "");
    let (child, socket) = control::run_with_control_socket(
        control::run_cmd(&cfg, "warn"),
        &dir.path().join("ctl.sock"),
    );
    let failed = spool.join(FAILED_DIR);
    wait_for(Duration::from_secs(20), "file in failed/", || {
        failed.join(format!("{uid}.json")).exists()
    });
    drop(socket);
    let done = control::stop(child);
    assert!(failed.join(format!("{uid}.dcm")).exists());
    assert!(!spool.join(format!("{uid}.dcm")).exists());
    assert!(!spool.join(SENT_DIR).exists());
    assert!(received(&out, &uid).is_empty());
    let log = String::from_utf8_lossy(&done.stderr);
    let line = log
        .lines()
        .find(|l| l.contains(&uid))
        .unwrap_or_else(|| panic!("no log line names the file: {log}"));
    for needle in ["does not accept SOP class", "failed", "fix:"] {
        assert!(line.contains(needle), "{needle:?} missing: {line}");
    }
    let report = String::from_utf8_lossy(&done.stdout);
    assert!(
        report.contains("pacs: 0 files stored, 1 refused"),
        "{report}"
    );
}
