//! The measurements of a snapshot as a DICOM Comprehensive SR, shaped
//! after TID 1500 (Measurement Report): one Measurement Group per lesion
//! with its long and short diameters in mm and its area in mm², coded
//! with SNOMED CT concepts and UCUM units, and the snapshot it was
//! measured on in the Image Library.
//!
//! Why it is shaped this way: a PACS or a reporting system reads numbers
//! with units and codes from an SR, where the JSON sidecar is lgms-edge's
//! own format. It is written only for a calibrated snapshot with lesions:
//! without a spacing there is no mm figure to report (the pixels stay in
//! the sidecar), and a cine's per-frame figures stay in its sidecar too.
//! CompletionFlag PARTIAL and VerificationFlag UNVERIFIED say what the
//! numbers are: a model's, unchecked by anyone.

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use super::{
    format_ds, new_uid, put_patient_and_study, text, DicomError, Header, Instance, Modality, Result,
};
use crate::measure::Lesion;

/// Comprehensive SR Storage.
pub const COMPREHENSIVE_SR: &str = "1.2.840.10008.5.1.4.1.1.88.33";

/// A coded concept: value, scheme, meaning.
type Code = (&'static str, &'static str, &'static str);

const REPORT: Code = ("126000", "DCM", "Imaging Measurement Report");
const LANGUAGE: Code = ("121049", "DCM", "Language of Content Item and Descendants");
const ENGLISH: Code = ("en-US", "RFC5646", "English (United States)");
const PROCEDURE: Code = ("121058", "DCM", "Procedure reported");
const ULTRASONOGRAPHY: Code = ("16310003", "SCT", "Ultrasonography");
const ENDOSCOPY: Code = ("423827005", "SCT", "Endoscopy");
const IMAGE_LIBRARY: Code = ("111028", "DCM", "Image Library");
const IMAGE_LIBRARY_GROUP: Code = ("126200", "DCM", "Image Library Group");
const MEASUREMENTS: Code = ("126010", "DCM", "Imaging Measurements");
const GROUP: Code = ("125007", "DCM", "Measurement Group");
const TRACKING_ID: Code = ("112039", "DCM", "Tracking Identifier");
const TRACKING_UID: Code = ("112040", "DCM", "Tracking Unique Identifier");
const LONG_AXIS: Code = ("103339001", "SCT", "Long Axis");
const SHORT_AXIS: Code = ("103340004", "SCT", "Short Axis");
const AREA: Code = ("42798000", "SCT", "Area");
const MM: Code = ("mm", "UCUM", "millimeter");
const MM2: Code = ("mm2", "UCUM", "square millimeter");

fn code_item((value, scheme, meaning): Code) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        text(tags::CODE_VALUE, VR::SH, value),
        text(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme),
        text(tags::CODE_MEANING, VR::LO, meaning),
    ])
}

fn sequence(tag: dicom_core::Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

/// A content item: its relationship to its parent, its value type and
/// its concept name.
fn item(relationship: &str, value_type: &str, concept: Option<Code>) -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    if !relationship.is_empty() {
        o.put(text(tags::RELATIONSHIP_TYPE, VR::CS, relationship));
    }
    o.put(text(tags::VALUE_TYPE, VR::CS, value_type));
    if let Some(c) = concept {
        o.put(sequence(
            tags::CONCEPT_NAME_CODE_SEQUENCE,
            vec![code_item(c)],
        ));
    }
    o
}

fn container(
    relationship: &str,
    concept: Code,
    children: Vec<InMemDicomObject>,
) -> InMemDicomObject {
    let mut o = item(relationship, "CONTAINER", Some(concept));
    o.put(text(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE"));
    o.put(sequence(tags::CONTENT_SEQUENCE, children));
    o
}

fn coded(relationship: &str, concept: Code, value: Code) -> InMemDicomObject {
    let mut o = item(relationship, "CODE", Some(concept));
    o.put(sequence(
        tags::CONCEPT_CODE_SEQUENCE,
        vec![code_item(value)],
    ));
    o
}

fn number(concept: Code, value: f64, unit: Code) -> InMemDicomObject {
    let mut o = item("CONTAINS", "NUM", Some(concept));
    let measured = InMemDicomObject::from_element_iter([
        text(tags::NUMERIC_VALUE, VR::DS, &format_ds(value)),
        sequence(tags::MEASUREMENT_UNITS_CODE_SEQUENCE, vec![code_item(unit)]),
    ]);
    o.put(sequence(tags::MEASURED_VALUE_SEQUENCE, vec![measured]));
    o
}

fn sop_reference(class: &str, instance: &str) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, class),
        text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, instance),
    ])
}

/// The SR of the lesions measured on `image` (a snapshot written with
/// `header`); `None` when no lesion has a calibrated figure.
pub fn report(header: &Header, image: &Instance, lesions: &[Lesion]) -> Result<Option<Instance>> {
    let mut groups = Vec::new();
    for (i, l) in lesions.iter().enumerate() {
        let (Some(long), Some(short), Some(area)) = (l.long_mm, l.short_mm, l.area_mm2) else {
            continue;
        };
        let mut tracking = item("HAS OBS CONTEXT", "TEXT", Some(TRACKING_ID));
        tracking.put(text(tags::TEXT_VALUE, VR::UT, &format!("lesion {}", i + 1)));
        let mut tracking_uid = item("HAS OBS CONTEXT", "UIDREF", Some(TRACKING_UID));
        tracking_uid.put(text(tags::UID, VR::UI, &new_uid()?));
        groups.push(container(
            "CONTAINS",
            GROUP,
            vec![
                tracking,
                tracking_uid,
                number(LONG_AXIS, long, MM),
                number(SHORT_AXIS, short, MM),
                number(AREA, area, MM2),
            ],
        ));
    }
    if groups.is_empty() {
        return Ok(None);
    }
    let procedure = match header.modality {
        Modality::Ultrasound => ULTRASONOGRAPHY,
        Modality::Endoscopy => ENDOSCOPY,
    };
    let mut picture = item("CONTAINS", "IMAGE", None);
    picture.put(sequence(
        tags::REFERENCED_SOP_SEQUENCE,
        vec![sop_reference(image.sop_class_uid, &image.sop_instance_uid)],
    ));
    let library = container(
        "CONTAINS",
        IMAGE_LIBRARY,
        vec![container("CONTAINS", IMAGE_LIBRARY_GROUP, vec![picture])],
    );

    let uid = new_uid()?;
    let now = chrono::Utc::now();
    let (date, time) = (
        now.format("%Y%m%d").to_string(),
        now.format("%H%M%S%.3f").to_string(),
    );
    let study = &header.study;
    let mut o = container(
        "",
        REPORT,
        vec![
            coded("HAS CONCEPT MOD", LANGUAGE, ENGLISH),
            coded("HAS CONCEPT MOD", PROCEDURE, procedure),
            library,
            container("CONTAINS", MEASUREMENTS, groups),
        ],
    );
    o.put(sequence(
        tags::CONTENT_TEMPLATE_SEQUENCE,
        vec![InMemDicomObject::from_element_iter([
            text(tags::MAPPING_RESOURCE, VR::CS, "DCMR"),
            text(tags::TEMPLATE_IDENTIFIER, VR::CS, "1500"),
        ])],
    ));
    // SOP Common.
    o.put(text(tags::SOP_CLASS_UID, VR::UI, COMPREHENSIVE_SR));
    o.put(text(tags::SOP_INSTANCE_UID, VR::UI, &uid));
    o.put(text(tags::INSTANCE_CREATION_DATE, VR::DA, &date));
    o.put(text(tags::INSTANCE_CREATION_TIME, VR::TM, &time));
    // Patient and General Study: the snapshot's.
    put_patient_and_study(&mut o, header);
    // SR Document Series: an SR goes in a series of its own.
    o.put(text(tags::MODALITY, VR::CS, "SR"));
    o.put(text(tags::SERIES_INSTANCE_UID, VR::UI, &new_uid()?));
    o.put(text(tags::SERIES_NUMBER, VR::IS, "2"));
    o.put(sequence(
        tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
        Vec::new(),
    ));
    // General Equipment.
    o.put(text(tags::MANUFACTURER, VR::LO, "lgms-edge"));
    // SR Document General.
    o.put(text(
        tags::INSTANCE_NUMBER,
        VR::IS,
        &header.instance_number.to_string(),
    ));
    o.put(text(tags::COMPLETION_FLAG, VR::CS, "PARTIAL"));
    o.put(text(tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED"));
    o.put(text(tags::CONTENT_DATE, VR::DA, &date));
    o.put(text(tags::CONTENT_TIME, VR::TM, &time));
    o.put(sequence(
        tags::PERFORMED_PROCEDURE_CODE_SEQUENCE,
        Vec::new(),
    ));
    let series = InMemDicomObject::from_element_iter([
        text(tags::SERIES_INSTANCE_UID, VR::UI, &study.series_uid),
        sequence(
            tags::REFERENCED_SOP_SEQUENCE,
            vec![sop_reference(image.sop_class_uid, &image.sop_instance_uid)],
        ),
    ]);
    o.put(sequence(
        tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
        vec![InMemDicomObject::from_element_iter([
            text(tags::STUDY_INSTANCE_UID, VR::UI, &study.study_uid),
            sequence(tags::REFERENCED_SERIES_SEQUENCE, vec![series]),
        ])],
    ));
    let obj = o
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .map_err(|e| DicomError::Encode(e.to_string()))?;
    Ok(Some(Instance {
        sop_instance_uid: uid,
        sop_class_uid: COMPREHENSIVE_SR,
        frames: 0,
        obj,
    }))
}
