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

#[test]
fn a_calibrated_snapshot_with_lesions_gets_its_measurements_as_an_sr() {
    use dicom_dictionary_std::tags;
    use lgms_edge::measure::Lesion;
    let dir = tempfile::tempdir().unwrap();
    let fs = frames(1);
    let lesion = Lesion {
        area_px: 400,
        long_mm: Some(12.5),
        short_mm: Some(8.25),
        area_mm2: Some(80.0),
        long_px: 62.5,
        short_px: 41.25,
        ..Lesion::default()
    };
    let h = header(Modality::Ultrasound, Calibration::spacing(0.2, 0.2));
    let image = dicom::save(dir.path(), &h, &[&fs[0]], &[&[lesion]], None).unwrap();
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image.with_extension("json")).unwrap()).unwrap();
    let sr_uid = sidecar["measurement_report"].as_str().unwrap();
    let sr_path = dir.path().join(format!("{sr_uid}.dcm"));
    let sr = dicom_object::open_file(&sr_path).unwrap();
    let text = |o: &dicom_object::InMemDicomObject, tag| {
        o.element(tag)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches(['\0', ' '])
            .to_string()
    };
    assert_eq!(text(&sr, tags::SOP_CLASS_UID), dicom::sr::COMPREHENSIVE_SR);
    assert_eq!(text(&sr, tags::PATIENT_ID), "P-1");
    assert_eq!(text(&sr, tags::STUDY_INSTANCE_UID), h.study.study_uid());
    // Every NUM of the tree: concept meaning, value, unit.
    fn nums(o: &dicom_object::InMemDicomObject, out: &mut Vec<(String, f64, String)>) {
        let Ok(children) = o.element(tags::CONTENT_SEQUENCE) else {
            return;
        };
        for c in children.items().unwrap() {
            if c.element(tags::VALUE_TYPE)
                .unwrap()
                .to_str()
                .unwrap()
                .trim()
                == "NUM"
            {
                let concept = &c
                    .element(tags::CONCEPT_NAME_CODE_SEQUENCE)
                    .unwrap()
                    .items()
                    .unwrap()[0];
                let value = &c
                    .element(tags::MEASURED_VALUE_SEQUENCE)
                    .unwrap()
                    .items()
                    .unwrap()[0];
                let unit = &value
                    .element(tags::MEASUREMENT_UNITS_CODE_SEQUENCE)
                    .unwrap()
                    .items()
                    .unwrap()[0];
                out.push((
                    concept
                        .element(tags::CODE_MEANING)
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .trim()
                        .into(),
                    value
                        .element(tags::NUMERIC_VALUE)
                        .unwrap()
                        .to_float64()
                        .unwrap(),
                    unit.element(tags::CODE_VALUE)
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .trim()
                        .into(),
                ));
            }
            nums(c, out);
        }
    }
    let mut found = Vec::new();
    nums(&sr, &mut found);
    assert_eq!(
        found,
        [
            ("Long Axis".to_string(), 12.5, "mm".to_string()),
            ("Short Axis".into(), 8.25, "mm".into()),
            ("Area".into(), 80.0, "mm2".into()),
        ]
    );
    // The image it measures, in the Image Library.
    let bytes = std::fs::read(&sr_path).unwrap();
    let image_uid = image.file_stem().unwrap().to_str().unwrap();
    assert!(bytes
        .windows(image_uid.len())
        .any(|w| w == image_uid.as_bytes()));
    if !tools::missing("dciodvfy", "dicom3tools") {
        if let Some(errors) = tools::dciodvfy_errors(&sr_path) {
            panic!("{errors}");
        }
    }
    // Uncalibrated, or no lesion: no SR.
    for (cal, lesions) in [
        (Calibration::NONE, vec![Lesion::default()]),
        (Calibration::spacing(0.2, 0.2), vec![]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let h = header(Modality::Ultrasound, cal);
        let image = dicom::save(dir.path(), &h, &[&fs[0]], &[&lesions], None).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "{image:?}"
        );
    }
}
