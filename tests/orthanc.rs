//! A real PACS: Debian's Orthanc, started by the test on loopback ports
//! with its own configuration and storage in a temporary folder. A run of
//! `lgms-edge` with a `[pacs]` section saves a snapshot and a cine from the
//! control socket and from key presses; the test then queries them back by
//! C-FIND (dcmtk's `findscu`) and Orthanc's REST API, checks identifiers,
//! SOP classes, frame count and pixel spacing of the stored files and runs
//! `dciodvfy` on them. A second test starts with Orthanc down: the files
//! wait in the spool, arrive once Orthanc is up, and a restarted run does
//! not send them again (Orthanc logs every instance it receives, through a
//! Lua filter, so a resent one would show even though Orthanc keeps one
//! copy). Skipped, with a message, where Orthanc or dcmtk is missing; CI
//! installs both.

mod common;
#[path = "common/control.rs"]
mod control;
#[path = "common/dicom_tools.rs"]
mod tools;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use lgms_edge::dicom::sr::COMPREHENSIVE_SR;
use lgms_edge::dicom::{US_IMAGE, US_MULTIFRAME_IMAGE};
use lgms_edge::pacs::SENT_DIR;
use tools::{free_port, wait_for};

/// Orthanc's AE title in these tests, and ours.
const PACS_AE: &str = "ORTHANC";
const OUR_AE: &str = "LGMS-EDGE";

/// An Orthanc of the test's own: configuration, storage and the log of
/// received instances in `dir`. Killed on drop, also when a test panics.
struct Orthanc {
    dir: PathBuf,
    dicom_port: u16,
    http_port: u16,
    child: Option<Child>,
}

impl Orthanc {
    /// Writes the configuration for free ports; nothing runs yet.
    fn new(dir: &Path) -> Orthanc {
        std::fs::create_dir_all(dir).unwrap();
        let (dicom_port, http_port) = (free_port(), free_port());
        // Every instance received, before Orthanc decides whether it is
        // new: "<SOP Instance UID> <calling AE>" per line.
        let lua = dir.join("received.lua");
        std::fs::write(
            &lua,
            format!(
                "function ReceivedInstanceFilter(dicom, origin, info)\n\
                 local f = io.open([[{}]], 'a')\n\
                 f:write(dicom.SOPInstanceUID, ' ', origin.RemoteAet, '\\n')\n\
                 f:close()\n\
                 return true\n\
                 end\n",
                dir.join("received.txt").display()
            ),
        )
        .unwrap();
        // Only the cart's AE title may store and query (the default allows
        // any); nothing but loopback reaches the HTTP server, which needs
        // no login there.
        let config = serde_json::json!({
            "Name": "lgms-edge-test",
            "StorageDirectory": dir.join("db"),
            "IndexDirectory": dir.join("db"),
            "Plugins": [],
            "LuaScripts": [lua],
            "HttpPort": http_port,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "HttpCompressionEnabled": false,
            "DicomPort": dicom_port,
            "DicomAet": PACS_AE,
            "DicomCheckCalledAet": true,
            "DicomAlwaysAllowStore": false,
            "DicomAlwaysAllowFind": false,
            "DicomModalities": { "cart": [OUR_AE, "127.0.0.1", 104] },
        });
        std::fs::write(dir.join("orthanc.json"), config.to_string()).unwrap();
        Orthanc {
            dir: dir.to_path_buf(),
            dicom_port,
            http_port,
            child: None,
        }
    }

    /// Starts Orthanc and waits (at most 30 s) until both its servers answer.
    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join("orthanc.log")).unwrap();
        let child = Command::new("Orthanc")
            .arg(self.dir.join("orthanc.json"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let log = self.dir.join("orthanc.log");
        wait_for(Duration::from_secs(30), "Orthanc up", || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "Orthanc ended ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            tools::listening(self.dicom_port) && self.http("/system").is_some()
        });
    }

    /// The body of a GET on the REST API; `None` on anything but 200.
    fn http(&self, path: &str) -> Option<Vec<u8>> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.http_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut r = BufReader::new(s);
        let mut status = String::new();
        r.read_line(&mut status).ok()?;
        let mut length = None;
        loop {
            let mut line = String::new();
            r.read_line(&mut line).ok()?;
            if line.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                }
            }
        }
        let mut body = vec![0; length?];
        r.read_exact(&mut body).ok()?;
        status.contains(" 200 ").then_some(body)
    }

    fn json(&self, path: &str) -> serde_json::Value {
        let body = self
            .http(path)
            .unwrap_or_else(|| panic!("GET {path} failed"));
        serde_json::from_slice(&body).unwrap()
    }

    /// Orthanc's instance IDs.
    fn instances(&self) -> Vec<String> {
        serde_json::from_value(self.json("/instances")).unwrap()
    }

    /// How many times each SOP Instance UID was received, and from which
    /// calling AE titles.
    fn receptions(&self) -> BTreeMap<String, Vec<String>> {
        let text = std::fs::read_to_string(self.dir.join("received.txt")).unwrap_or_default();
        let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in text.lines() {
            let (uid, ae) = line.split_once(' ').unwrap();
            seen.entry(uid.into()).or_default().push(ae.trim().into());
        }
        seen
    }

    /// C-FIND (study root) at `level` with `keys` (`Tag=value` or `Tag`
    /// to be returned), as the cart's AE title: the matches.
    fn find(&self, level: &str, keys: &[&str]) -> Vec<DefaultDicomObject> {
        let out = tempfile::tempdir().unwrap();
        let mut c = Command::new("findscu");
        c.args(["-S", "-X", "-aet", OUR_AE, "-aec", PACS_AE, "-od"])
            .arg(out.path())
            .args(["-k", &format!("QueryRetrieveLevel={level}")]);
        for k in keys {
            c.args(["-k", k]);
        }
        let run = c
            .args(["127.0.0.1", &self.dicom_port.to_string()])
            .output()
            .unwrap();
        assert!(run.status.success(), "{run:?}");
        let mut files: Vec<PathBuf> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| dicom_object::open_file(f).unwrap())
            .collect()
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn text(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> String {
    obj.element(tag)
        .map(|e| {
            e.to_str()
                .unwrap()
                .trim_end_matches(['\0', ' '])
                .to_string()
        })
        .unwrap_or_default()
}

/// A board file in `dir` for an endless phantom run whose spool goes to
/// `pacs`, with a control socket, keys read from the FIFO `dir/event0` (F2
/// a snapshot, F3 a cine) and identifiers from the board; `measure` is the
/// `[measure]` section.
fn board(dir: &Path, pacs: &Orthanc, measure: &str) -> PathBuf {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_dark.onnx");
    let path = |name: &str| dir.join(name).display().to_string();
    let cfg = dir.join("cart.toml");
    std::fs::write(
        &cfg,
        format!(
            "display = \"null\"\n[phantom]\nwidth = 96\nheight = 64\nfps = 30\n\
             [measure]\n{measure}\n\
             [control]\nsocket = {:?}\ncine_seconds = 0.5\nspool_dir = {:?}\nsnapshot_dir = {:?}\n\
             patient_id = \"BOARD-1\"\npatient_name = \"Board^Patient\"\nstudy_id = \"S1\"\naccession_number = \"A1\"\n\
             input = [{:?}]\nkeys = {{ KEY_F2 = \"save-snapshot\", KEY_F3 = \"save-cine\" }}\n\
             [pacs]\nhost = \"127.0.0.1\"\nport = {}\ncalled_ae = {PACS_AE:?}\ncalling_ae = {OUR_AE:?}\n\
             retry_min_ms = 50\nretry_max_ms = 200\n\
             [model]\npath = {:?}\n",
            path("ctl.sock"),
            path("spool"),
            path("snaps"),
            path("event0"),
            pacs.dicom_port,
            model.display().to_string(),
        ),
    )
    .unwrap();
    cfg
}

/// `lgms-edge run` on `cfg`, its control socket connected.
fn start_run(dir: &Path, cfg: &Path) -> (control::Run, control::Control) {
    let run = control::run_cmd(cfg, "info,lgms_edge::pacs=debug");
    let (child, s) = control::run_with_control_socket(run, &dir.join("ctl.sock"));
    (child, control::Control::new(s))
}

/// The SOP Instance UID of a save's answer (its file is `<uid>.dcm`).
fn saved_uid(answer: &serde_json::Value) -> String {
    assert_eq!(answer["ok"], true, "{answer}");
    let path = PathBuf::from(answer["dicom"].as_str().unwrap());
    path.file_stem().unwrap().to_str().unwrap().to_string()
}

/// The SRs named by the sidecars in `folder`: SR UID -> image UID.
fn measurement_reports(folder: &Path) -> BTreeMap<String, String> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter_map(|p| {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
            let image = p.file_stem()?.to_str()?.to_string();
            Some((v["measurement_report"].as_str()?.to_string(), image))
        })
        .collect()
}

/// The `.dcm` files in `folder`.
fn dcm_files(folder: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(folder)
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
                .collect()
        })
        .unwrap_or_default()
}

/// A second, independent reader on the files Orthanc gave back: pydicom
/// decodes every pixel and finds the identifiers and the spacing. Skipped,
/// with a message, where pydicom is not installed (`requirements-dev.txt`).
fn pydicom_reads(folder: &Path) {
    const CHECK: &str = r#"
import pathlib, sys
import pydicom
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.dcm")):
    ds = pydicom.dcmread(path)
    if ds.Modality == "SR":
        continue
    frames = int(getattr(ds, "NumberOfFrames", 1))
    shape = (frames, 64, 96, 3) if frames > 1 else (64, 96, 3)
    assert ds.pixel_array.shape == shape, (path, ds.pixel_array.shape)
    assert ds.PatientID in ("BOARD-1", "P-77") and ds.StudyID == "S1", path
    assert ds.AccessionNumber == "A1", path
    region = ds.SequenceOfUltrasoundRegions[0]
    assert abs(region.PhysicalDeltaX - 0.05) < 1e-9, path
    assert abs(region.PhysicalDeltaY - 0.05) < 1e-9, path
    print(path.name, ds.SOPClassUID, frames)
"#;
    let probe = Command::new("python3")
        .args(["-c", "import pydicom"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: pydicom is not installed (pip install -r requirements-dev.txt)");
        return;
    }
    let out = Command::new("python3")
        .args(["-c", CHECK])
        .arg(folder)
        .output()
        .unwrap();
    assert!(out.status.success(), "pydicom: {out:?}");
    let read = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(read, 4, "pydicom read every file");
}

fn orthanc_missing() -> bool {
    tools::missing("Orthanc", "orthanc") || tools::missing("findscu", "dcmtk")
}

#[test]
fn snapshots_and_cines_from_socket_and_keys_are_stored_in_orthanc_and_read_back() {
    if orthanc_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut pacs = Orthanc::new(&dir.path().join("orthanc"));
    pacs.start();
    let cfg = board(dir.path(), &pacs, "depth_mm = 32");
    control::Keys::make(&dir.path().join("event0"));
    let (run, mut c) = start_run(dir.path(), &cfg);
    c.wait_for_cine(15);

    // From the socket: frozen, a snapshot for the board's patient, then a
    // new patient and the cine.
    assert_eq!(c.ask(r#"{"cmd":"freeze"}"#)["frozen"], true);
    let shot = saved_uid(&c.ask(r#"{"cmd":"save-snapshot"}"#));
    let set = c.ask(r#"{"cmd":"set-patient","id":"P-77","name":"Doe^Jane"}"#);
    assert_eq!(set["ok"], true, "{set}");
    let cine = saved_uid(&c.ask(r#"{"cmd":"save-cine"}"#));
    wait_for(
        Duration::from_secs(30),
        "snapshot and cine in Orthanc",
        || {
            let received = pacs.receptions();
            received.contains_key(&shot) && received.contains_key(&cine)
        },
    );
    // From the keys: another snapshot and cine, for the new patient.
    let mut keys = control::Keys::open(&dir.path().join("event0"));
    keys.press(60); // KEY_F2
    keys.press(61); // KEY_F3
                    // A snapshot with measured lesions comes with its SR, written just
                    // after it: all is sent when the 4 images are and every SR their
                    // sidecars name.
    let spool = dir.path().join("spool");
    let mut reports = BTreeMap::new();
    wait_for(
        Duration::from_secs(30),
        "4 images and their SRs sent",
        || {
            reports = measurement_reports(&spool.join(SENT_DIR));
            let sent = dcm_files(&spool.join(SENT_DIR)).len();
            sent == 4 + reports.len() && dcm_files(&spool).is_empty()
        },
    );
    drop(keys);
    drop(c);
    control::stop(run);
    assert!(dcm_files(&spool).is_empty(), "all sent");
    let sent = dcm_files(&spool.join(SENT_DIR)).len();
    assert_eq!(sent, 4 + reports.len());

    // Each instance arrived once, from our AE title.
    let received = pacs.receptions();
    assert_eq!(received.len(), sent, "{received:?}");
    for (uid, from) in &received {
        assert_eq!(from, &[OUR_AE], "{uid}");
    }
    assert!(received.contains_key(&shot) && received.contains_key(&cine));

    // Back through the REST API: the tags, then the stored file itself.
    let retrieved = dir.path().join("retrieved");
    std::fs::create_dir_all(&retrieved).unwrap();
    let mut stored = BTreeMap::new();
    for id in pacs.instances() {
        let file = pacs
            .http(&format!("/instances/{id}/file"))
            .expect("the stored file");
        let tags_json = pacs.json(&format!("/instances/{id}/simplified-tags"));
        let uid = tags_json["SOPInstanceUID"].as_str().unwrap().to_string();
        let path = retrieved.join(format!("{uid}.dcm"));
        std::fs::write(&path, file).unwrap();
        stored.insert(uid, (tags_json, path));
    }
    let mut classes = BTreeMap::new();
    for (uid, (t, path)) in &stored {
        let obj = dicom_object::open_file(path).unwrap();
        assert_eq!(text(&obj, tags::SOP_INSTANCE_UID), *uid);
        let class = text(&obj, tags::SOP_CLASS_UID);
        assert_eq!(t["SOPClassUID"], class.as_str());
        *classes.entry(class.clone()).or_insert(0) += 1;
        let patient = if *uid == shot || reports.get(uid) == Some(&shot) {
            ("BOARD-1", "Board^Patient")
        } else {
            ("P-77", "Doe^Jane")
        };
        assert_eq!(
            (t["PatientID"].as_str(), t["PatientName"].as_str()),
            (Some(patient.0), Some(patient.1)),
            "{uid}: {t}"
        );
        assert_eq!(
            (
                text(&obj, tags::PATIENT_ID),
                text(&obj, tags::STUDY_ID),
                text(&obj, tags::ACCESSION_NUMBER)
            ),
            (patient.0.to_string(), "S1".into(), "A1".into())
        );
        if let Some(errors) = tools::dciodvfy_errors(path) {
            panic!("{errors}");
        }
        if class == COMPREHENSIVE_SR {
            assert!(reports.contains_key(uid), "{uid} is named by its image");
            continue;
        }
        if class == US_MULTIFRAME_IMAGE {
            assert_eq!(t["NumberOfFrames"], "15", "the whole cine ring: {t}");
            assert_eq!(text(&obj, tags::NUMBER_OF_FRAMES), "15");
        }
        // 32 mm over 64 rows: 0.05 cm per pixel, in the Sequence of
        // Ultrasound Regions.
        let region = &obj
            .element(tags::SEQUENCE_OF_ULTRASOUND_REGIONS)
            .unwrap()
            .items()
            .unwrap()[0];
        for tag in [tags::PHYSICAL_DELTA_X, tags::PHYSICAL_DELTA_Y] {
            let d = region.element(tag).unwrap().to_float64().unwrap();
            assert!((d - 0.05).abs() < 1e-9, "{uid}: {d}");
        }
    }
    let mut want = BTreeMap::from([(US_IMAGE.to_string(), 2), (US_MULTIFRAME_IMAGE.into(), 2)]);
    if !reports.is_empty() {
        want.insert(COMPREHENSIVE_SR.into(), reports.len());
    }
    assert_eq!(classes, want);
    pydicom_reads(&retrieved);

    // C-FIND: the new patient's study, then its images.
    let studies = pacs.find(
        "STUDY",
        &[
            "PatientID=P-77",
            "StudyInstanceUID",
            "StudyID",
            "AccessionNumber",
        ],
    );
    assert_eq!(studies.len(), 1, "one study for P-77");
    assert_eq!(text(&studies[0], tags::STUDY_ID), "S1");
    assert_eq!(text(&studies[0], tags::ACCESSION_NUMBER), "A1");
    let study = text(&studies[0], tags::STUDY_INSTANCE_UID);
    let images = pacs.find(
        "IMAGE",
        &[
            &format!("StudyInstanceUID={study}"),
            "SOPInstanceUID",
            "SOPClassUID",
            "NumberOfFrames",
        ],
    );
    let mut found: Vec<(String, String)> = images
        .iter()
        .map(|i| {
            (
                text(i, tags::SOP_CLASS_UID),
                text(i, tags::NUMBER_OF_FRAMES),
            )
        })
        .filter(|(class, _)| class != COMPREHENSIVE_SR)
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            (US_MULTIFRAME_IMAGE.to_string(), "15".to_string()),
            (US_MULTIFRAME_IMAGE.into(), "15".into()),
            (US_IMAGE.into(), String::new()),
        ],
        "the cine saved from the socket, the snapshot and cine from the keys"
    );
    assert!(images
        .iter()
        .any(|i| text(i, tags::SOP_INSTANCE_UID) == cine));
}

#[test]
fn files_spooled_while_orthanc_is_down_arrive_once_and_a_restart_sends_nothing_again() {
    if orthanc_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut pacs = Orthanc::new(&dir.path().join("orthanc"));
    // Uncalibrated: no SR, the images only.
    let cfg = board(dir.path(), &pacs, "enabled = true");
    let spool = dir.path().join("spool");
    control::Keys::make(&dir.path().join("event0"));

    // Orthanc down: the files wait in the spool through the retries.
    let (mut run, mut c) = start_run(dir.path(), &cfg);
    let log = control::log_of(&mut run);
    c.wait_for_cine(15);
    let first = [
        saved_uid(&c.ask(r#"{"cmd":"save-snapshot"}"#)),
        saved_uid(&c.ask(r#"{"cmd":"save-cine"}"#)),
    ];
    wait_for(Duration::from_secs(10), "both files spooled", || {
        dcm_files(&spool).len() == 2
    });
    wait_for(Duration::from_secs(10), "the outage and 3 retries", || {
        let log = log.lock().unwrap();
        log.contains("files stay in") && log.matches("pacs: still out").count() >= 3
    });
    drop(c);
    control::stop(run);
    assert_eq!(dcm_files(&spool).len(), 2);
    assert!(!spool.join(SENT_DIR).exists());

    // Orthanc up, the cart started again: both arrive.
    pacs.start();
    let (run, c) = start_run(dir.path(), &cfg);
    wait_for(Duration::from_secs(30), "both files in sent/", || {
        dcm_files(&spool.join(SENT_DIR)).len() == 2
    });
    drop(c);
    control::stop(run);
    assert!(dcm_files(&spool).is_empty());

    // Once more: a new snapshot goes, and proves that the sender has
    // passed over the spool; the earlier two are not sent again.
    let (run, mut c) = start_run(dir.path(), &cfg);
    let third = saved_uid(&c.ask(r#"{"cmd":"save-snapshot"}"#));
    wait_for(Duration::from_secs(30), "the third file in sent/", || {
        dcm_files(&spool.join(SENT_DIR)).len() == 3
    });
    drop(c);
    control::stop(run);
    let received = pacs.receptions();
    assert_eq!(
        received.keys().collect::<Vec<_>>(),
        {
            let mut all = vec![&first[0], &first[1], &third];
            all.sort();
            all
        },
        "{received:?}"
    );
    for (uid, from) in &received {
        assert_eq!(from.len(), 1, "{uid} received {} times", from.len());
    }
    assert_eq!(pacs.instances().len(), 3);
}
