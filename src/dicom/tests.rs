use super::*;
use dicom_object::open_file;

fn frame(w: u32, h: u32, id: u64) -> Frame {
    let mut f = Frame::new(w, h);
    f.id = id;
    for (i, b) in f.rgb.iter_mut().enumerate() {
        *b = (i as u64 + id) as u8;
    }
    f
}

struct Fixture {
    patient: Patient,
    study: Study,
    model: ModelTag,
}

fn fixture() -> Fixture {
    Fixture {
        patient: Patient::new("PID-0042", "Doe^Jane").unwrap(),
        study: Study::new("S17", "ACC-9").unwrap(),
        model: ModelTag {
            name: "lgmsnet-phantom-us".into(),
            version: "1.2".into(),
            sha256: "ab".repeat(32),
            precision: "int8".into(),
        },
    }
}

fn header(fx: &Fixture, modality: Modality, calibration: Calibration) -> Header {
    Header {
        modality,
        patient: fx.patient.clone(),
        study: fx.study.clone(),
        model: fx.model.clone(),
        calibration,
        region: Rect {
            x: 8,
            y: 4,
            w: 48,
            h: 40,
        },
        instance_number: 3,
        sop_instance_uid: new_uid().unwrap(),
    }
}

fn str_of(obj: &dicom_object::DefaultDicomObject, tag: Tag) -> String {
    obj.element(tag)
        .unwrap()
        .to_str()
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn a_calibrated_ultrasound_snapshot_reads_back_with_its_spacing_and_identifiers() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let f = frame(64, 48, 7);
    let inst = snapshot(
        &header(&fx, Modality::Ultrasound, Calibration::spacing(0.25, 0.3)),
        &f,
    )
    .unwrap();
    let lesion = Lesion {
        area_px: 100,
        area_mm2: Some(7.5),
        long_mm: Some(3.0),
        short_mm: Some(2.5),
        long_px: 12.0,
        short_px: 10.0,
        ..Lesion::default()
    };
    let side = sidecar(&inst, Calibration::spacing(0.25, 0.3), &[&[lesion]]);
    let path = spool(dir.path(), &inst, &side).unwrap();
    assert_eq!(
        path,
        dir.path().join(format!("{}.dcm", inst.sop_instance_uid))
    );

    let obj = open_file(&path).unwrap();
    assert_eq!(
        obj.meta()
            .media_storage_sop_class_uid()
            .trim_end_matches('\0'),
        US_IMAGE
    );
    assert_eq!(
        obj.meta()
            .media_storage_sop_instance_uid()
            .trim_end_matches('\0'),
        inst.sop_instance_uid
    );
    assert_eq!(str_of(&obj, tags::SOP_CLASS_UID), US_IMAGE);
    assert_eq!(str_of(&obj, tags::SOP_INSTANCE_UID), inst.sop_instance_uid);
    assert_eq!(str_of(&obj, tags::STUDY_INSTANCE_UID), fx.study.study_uid());
    assert_eq!(
        str_of(&obj, tags::SERIES_INSTANCE_UID),
        fx.study.series_uid()
    );
    assert_eq!(str_of(&obj, tags::PATIENT_ID), "PID-0042");
    assert_eq!(str_of(&obj, tags::PATIENT_NAME), "Doe^Jane");
    assert_eq!(str_of(&obj, tags::STUDY_ID), "S17");
    assert_eq!(str_of(&obj, tags::ACCESSION_NUMBER), "ACC-9");
    assert_eq!(str_of(&obj, tags::MODALITY), "US");
    assert_eq!(str_of(&obj, tags::IMAGE_COMMENTS), IMAGE_COMMENTS);
    assert_eq!(str_of(&obj, tags::BURNED_IN_ANNOTATION), "YES");
    assert_eq!(str_of(&obj, tags::PHOTOMETRIC_INTERPRETATION), "RGB");
    let derivation = str_of(&obj, tags::DERIVATION_DESCRIPTION);
    for part in [
        "lgmsnet-phantom-us",
        "version 1.2",
        "int8",
        &"ab".repeat(32),
    ] {
        assert!(derivation.contains(part), "{derivation}");
    }
    assert_eq!(
        obj.element(tags::ROWS).unwrap().to_int::<u16>().unwrap(),
        48
    );
    assert_eq!(
        obj.element(tags::COLUMNS).unwrap().to_int::<u16>().unwrap(),
        64
    );
    assert_eq!(
        obj.element(tags::PLANAR_CONFIGURATION)
            .unwrap()
            .to_int::<u16>()
            .unwrap(),
        0
    );
    assert_eq!(
        obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap(),
        &f.rgb[..]
    );
    assert!(
        obj.element(tags::NUMBER_OF_FRAMES).is_err(),
        "one frame, no multi-frame module"
    );

    let regions = obj
        .element(tags::SEQUENCE_OF_ULTRASOUND_REGIONS)
        .unwrap()
        .items()
        .unwrap();
    assert_eq!(regions.len(), 1);
    let r = &regions[0];
    let f64_of = |tag| r.element(tag).unwrap().to_float64().unwrap();
    assert!((f64_of(tags::PHYSICAL_DELTA_X) - 0.025).abs() < 1e-12);
    assert!((f64_of(tags::PHYSICAL_DELTA_Y) - 0.03).abs() < 1e-12);
    let int_of = |tag| r.element(tag).unwrap().to_int::<u32>().unwrap();
    assert_eq!(int_of(tags::PHYSICAL_UNITS_X_DIRECTION), 3);
    assert_eq!(int_of(tags::PHYSICAL_UNITS_Y_DIRECTION), 3);
    assert_eq!(
        [
            tags::REGION_LOCATION_MIN_X0,
            tags::REGION_LOCATION_MIN_Y0,
            tags::REGION_LOCATION_MAX_X1,
            tags::REGION_LOCATION_MAX_Y1
        ]
        .map(int_of),
        [8, 4, 55, 43]
    );

    let json: serde_json::Value =
        serde_json::from_reader(std::fs::File::open(path.with_extension("json")).unwrap()).unwrap();
    assert_eq!(json["sop_instance_uid"], inst.sop_instance_uid.as_str());
    assert_eq!(json["calibrated"], true);
    assert_eq!(json["frames"][0][0]["area_mm2"], 7.5);
    assert_eq!(json["frames"][0][0]["long_mm"], 3.0);
    assert_eq!(json["frames"][0][0]["short_px"], 10.0);
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left.len(),
        2,
        "the file and its sidecar, no .part left: {left:?}"
    );
}

#[test]
fn an_uncalibrated_snapshot_has_no_ultrasound_region_and_pixel_measurements_only() {
    let fx = fixture();
    let inst = snapshot(
        &header(&fx, Modality::Ultrasound, Calibration::NONE),
        &frame(16, 8, 1),
    )
    .unwrap();
    let mut bytes = Vec::new();
    inst.write_to(&mut bytes).unwrap();
    let obj = dicom_object::from_reader(&bytes[128..]).unwrap();
    assert!(obj.element(tags::SEQUENCE_OF_ULTRASOUND_REGIONS).is_err());
    let lesion = Lesion {
        area_px: 40,
        long_px: 9.0,
        ..Lesion::default()
    };
    let json = sidecar(&inst, Calibration::NONE, &[&[lesion]]);
    assert_eq!(json["calibrated"], false);
    assert_eq!(json["frames"][0][0]["area_px"], 40);
    assert!(json["frames"][0][0].get("area_mm2").is_none());
}

#[test]
fn a_cine_is_one_multiframe_file_with_its_frame_time() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let frames: Vec<Frame> = (0..5).map(|i| frame(20, 10, i)).collect();
    let refs: Vec<&Frame> = frames.iter().collect();
    let h = header(&fx, Modality::Ultrasound, Calibration::spacing(0.1, 0.1));
    let inst = cine(&h, &refs, 33.333_333_3).unwrap();
    let empty: Vec<&[Lesion]> = vec![&[]; 5];
    let path = spool(dir.path(), &inst, &sidecar(&inst, h.calibration, &empty)).unwrap();
    let obj = open_file(&path).unwrap();
    assert_eq!(str_of(&obj, tags::SOP_CLASS_UID), US_MULTIFRAME_IMAGE);
    assert_eq!(str_of(&obj, tags::NUMBER_OF_FRAMES), "5");
    assert_eq!(str_of(&obj, tags::FRAME_TIME), "33.333333");
    assert_eq!(
        obj.element(tags::FRAME_INCREMENT_POINTER)
            .unwrap()
            .value()
            .primitive()
            .unwrap(),
        &PrimitiveValue::Tags([tags::FRAME_TIME].into_iter().collect())
    );
    let pixels = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    assert_eq!(pixels.len(), 5 * 20 * 10 * 3);
    assert_eq!(&pixels[4 * 600..], &frames[4].rgb[..], "oldest first");
    assert!(obj.element(tags::SEQUENCE_OF_ULTRASOUND_REGIONS).is_ok());
}

#[test]
fn endoscopy_is_secondary_capture_without_an_ultrasound_region() {
    let fx = fixture();
    let h = header(&fx, Modality::Endoscopy, Calibration::spacing(0.1, 0.1));
    let inst = snapshot(&h, &frame(8, 8, 0)).unwrap();
    assert_eq!(inst.sop_class_uid, SECONDARY_CAPTURE);
    let mut bytes = Vec::new();
    inst.write_to(&mut bytes).unwrap();
    let obj = dicom_object::from_reader(&bytes[128..]).unwrap();
    assert_eq!(str_of(&obj, tags::MODALITY), "ES");
    assert_eq!(str_of(&obj, tags::CONVERSION_TYPE), "WSD");
    assert!(obj.element(tags::SEQUENCE_OF_ULTRASOUND_REGIONS).is_err());
}

#[test]
fn uids_are_fresh_and_valid() {
    let a = new_uid().unwrap();
    let b = new_uid().unwrap();
    assert_ne!(a, b);
    for u in [a, b] {
        assert!(u.starts_with("2.25.") && u.len() <= 64, "{u}");
        let tail = &u[5..];
        assert!(tail.bytes().all(|c| c.is_ascii_digit()), "{u}");
        assert!(
            tail == "0" || !tail.starts_with('0'),
            "no leading zero: {u}"
        );
    }
}

#[test]
fn bad_identifiers_and_frames_are_errors() {
    for (id, name, says) in [
        ("a\\b", "x", "patient_id"),
        (&"9".repeat(65) as &str, "x", "at most 64"),
        ("p", "Dö^Jane", "patient_name"),
        ("p", "a^b^c^d^e^f", "5 components"),
        ("p", "Doe=Jane", "patient_name"),
        ("p\tq", "x", "patient_id"),
    ] {
        let e = Patient::new(id, name).unwrap_err().to_string();
        assert!(e.contains(says), "{id:?} {name:?}: {e}");
    }
    assert!(Study::new(&"1".repeat(17), "").is_err());
    assert!(Study::new("", &"1".repeat(17)).is_err());
    assert_eq!(Patient::new("  P1 ", "").unwrap().id(), "P1");

    let fx = fixture();
    let h = header(&fx, Modality::Ultrasound, Calibration::NONE);
    assert!(matches!(cine(&h, &[], 30.0), Err(DicomError::NoFrames)));
    let (a, b) = (frame(8, 8, 0), frame(8, 6, 1));
    assert!(matches!(
        cine(&h, &[&a, &b], 30.0),
        Err(DicomError::FrameSize { index: 1, .. })
    ));
    assert!(cine(&h, &[&a], f64::NAN).is_err());
}
