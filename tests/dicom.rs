//! The DICOM files checked by dciodvfy (Debian's dicom3tools), which knows
//! every IOD's modules and attributes: an "Error" line fails the test.
//! Skipped, with a message, where dciodvfy is not installed; CI installs it.

#[path = "common/dicom_tools.rs"]
mod tools;

use lgms_edge::dicom::{self, Header, Modality, ModelTag, Patient, Study};
use lgms_edge::frame::{Frame, Rect};
use lgms_edge::measure::Calibration;

fn frames(n: u64) -> Vec<Frame> {
    (0..n)
        .map(|id| {
            let mut f = Frame::new(64, 48);
            f.id = id;
            for (i, b) in f.rgb.iter_mut().enumerate() {
                *b = (i as u64 * 7 + id) as u8;
            }
            f
        })
        .collect()
}

fn header(modality: Modality, calibration: Calibration) -> Header {
    Header {
        modality,
        patient: Patient::new("P-1", "Doe^Jane").unwrap(),
        study: Study::new("S1", "A1").unwrap(),
        model: ModelTag {
            name: "lgmsnet-phantom-us".into(),
            version: "1".into(),
            sha256: "0".repeat(64),
            precision: "f32".into(),
        },
        calibration,
        region: Rect {
            x: 4,
            y: 4,
            w: 56,
            h: 40,
        },
        instance_number: 1,
        sop_instance_uid: dicom::new_uid().unwrap(),
    }
}

#[test]
fn dciodvfy_finds_no_error_in_the_snapshot_and_the_cine() {
    if tools::missing("dciodvfy", "dicom3tools") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = frames(4);
    let refs: Vec<&Frame> = fs.iter().collect();
    let none: Vec<&[lgms_edge::measure::Lesion]> = vec![&[]; 4];
    let mut files = Vec::new();
    for modality in [Modality::Ultrasound, Modality::Endoscopy] {
        for cal in [Calibration::spacing(0.2, 0.2), Calibration::NONE] {
            let h = header(modality, cal);
            files.push(dicom::save(dir.path(), &h, &refs[..1], &none[..1], None).unwrap());
            let h = header(modality, cal);
            files.push(dicom::save(dir.path(), &h, &refs, &none, Some(33.3)).unwrap());
        }
    }
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| tools::dciodvfy_errors(f))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
