//! DICOM export: the picture on screen (overlay and calipers burned in) as
//! a DICOM Part-10 file, the cine as one multi-frame file, each with a JSON
//! sidecar of the lesion measurements, and a calibrated snapshot's
//! measurements as a Comprehensive SR ([`sr`]), written to a spool folder.
//!
//! What is written, and why:
//!
//! - Ultrasound: *Ultrasound Image Storage* for one frame and *Ultrasound
//!   Multi-frame Image Storage* for the cine, with the pixel spacing in the
//!   Sequence of Ultrasound Regions (PhysicalDeltaX/Y in cm, units 3) when
//!   calibrated, and no region at all when not: a region without a spacing
//!   would invite a viewer to measure in the wrong units.
//! - Endoscopy: *Secondary Capture Image Storage* for one frame and
//!   *Multi-frame True Color Secondary Capture* for the cine (modality ES,
//!   conversion type WSD). The file is a capture of the workstation's screen with an
//!   AI overlay burned in, which is what Secondary Capture describes; VL
//!   Endoscopic Image Storage is for the scope's own acquisition and asks
//!   for acquisition context and anatomy that the cart does not know.
//! - The model that drew the overlay (name, version, sha256, precision) is
//!   in DerivationDescription: a General Image attribute of every image
//!   IOD, so it is valid in all three files and shown as text by viewers,
//!   where ContributingEquipmentSequence would need coded purposes for an
//!   AI model that DICOM has no code for.
//! - ImageComments says "AI overlay - not for diagnosis", ImageType is
//!   DERIVED and BurnedInAnnotation YES: the pixels carry drawn marks.
//!
//! Pixels are RGB, 8 bits, PlanarConfiguration 0 (the frame's own layout),
//! uncompressed Explicit VR Little Endian: no codec on the cart, and any
//! PACS takes it. Text values are checked against their VR (length, the
//! default character repertoire) before they reach a file
//! ([`Patient::new`], [`Study::new`]), so no SpecificCharacterSet is needed.

use std::io::Write;
use std::path::{Path, PathBuf};

use dicom_core::value::DataSetSequence;
use dicom_core::{dicom_value, DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileDicomObject, FileMetaTableBuilder, InMemDicomObject};

use crate::frame::{Frame, Rect};
use crate::measure::{Calibration, Lesion};

/// The image comment of every file: the picture is not a diagnostic image.
pub const IMAGE_COMMENTS: &str = "AI overlay - not for diagnosis";

/// Ultrasound Image Storage.
pub const US_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.6.1";
/// Ultrasound Multi-frame Image Storage.
pub const US_MULTIFRAME_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.3.1";
/// Secondary Capture Image Storage.
pub const SECONDARY_CAPTURE: &str = "1.2.840.10008.5.1.4.1.1.7";
/// Multi-frame True Color Secondary Capture Image Storage.
pub const SC_MULTIFRAME_TRUE_COLOR: &str = "1.2.840.10008.5.1.4.1.1.7.4";

/// What went wrong writing a DICOM file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DicomError {
    /// A text value does not fit its DICOM value representation.
    #[error("{field} {value:?}: {reason}")]
    BadValue {
        /// The attribute, as the board file names it (e.g. "patient_id").
        field: &'static str,
        /// The value given.
        value: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A cine without frames.
    #[error("no frames to write")]
    NoFrames,
    /// The frames of a cine differ in size, or a frame's buffer does not
    /// match its size.
    #[error("frame {index} is {got}, expected {want}")]
    FrameSize {
        /// Which frame.
        index: usize,
        /// What it is.
        got: String,
        /// What it should be.
        want: String,
    },
    /// The operating system gave no random bytes for a UID.
    #[error("no random bytes for a UID: {0}")]
    Random(String),
    /// dicom-rs refused the object (a bug here, not a user error).
    #[error("encoding the DICOM object: {0}")]
    Encode(String),
    /// A spool file could not be written.
    #[error("{path:?}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// This module's result.
pub type Result<T> = std::result::Result<T, DicomError>;

/// Which IODs a run writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Modality {
    /// Ultrasound (US): Ultrasound Image and Ultrasound Multi-frame Image.
    #[default]
    Ultrasound,
    /// Endoscopy (ES): Secondary Capture, one frame or several.
    Endoscopy,
}

impl Modality {
    /// The DICOM modality code.
    pub fn code(self) -> &'static str {
        match self {
            Modality::Ultrasound => "US",
            Modality::Endoscopy => "ES",
        }
    }

    /// Parses the code of a board file (`"US"` or `"ES"`).
    pub fn from_code(s: &str) -> Option<Modality> {
        match s {
            "US" => Some(Modality::Ultrasound),
            "ES" => Some(Modality::Endoscopy),
            _ => None,
        }
    }

    fn sop_class(self, frames: usize) -> &'static str {
        match (self, frames) {
            (Modality::Ultrasound, 1) => US_IMAGE,
            (Modality::Ultrasound, _) => US_MULTIFRAME_IMAGE,
            (Modality::Endoscopy, 1) => SECONDARY_CAPTURE,
            (Modality::Endoscopy, _) => SC_MULTIFRAME_TRUE_COLOR,
        }
    }
}

/// A fresh UID under the UUID-derived root `2.25` (PS3.5 B.2): 2.25 and
/// a random (version 4) UUID as one decimal number, unique without a
/// registered root.
pub fn new_uid() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).map_err(|e| DicomError::Random(e.to_string()))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Ok(format!("2.25.{}", u128::from_be_bytes(b)))
}

/// Checks a text value against a DICOM VR of at most `max` characters from
/// the default repertoire (printable ASCII, no backslash: it separates
/// values). `extra` names characters the VR also forbids.
fn check_text(field: &'static str, value: &str, max: usize, extra: &str) -> Result<String> {
    let bad = |reason: String| DicomError::BadValue {
        field,
        value: value.to_string(),
        reason,
    };
    let v = value.trim();
    if let Some(c) = v
        .chars()
        .find(|c| !(' '..='~').contains(c) || *c == '\\' || extra.contains(*c))
    {
        return Err(bad(format!(
            "has {c:?}; use printable ASCII without '\\'{}",
            if extra.is_empty() {
                String::new()
            } else {
                format!(" or {extra:?}")
            }
        )));
    }
    if v.len() > max {
        return Err(bad(format!("is {} characters; at most {max}", v.len())));
    }
    Ok(v.to_string())
}

/// The patient, checked against the VRs of PatientID (LO: 64 characters)
/// and PatientName (PN: 64 per component group, at most five components
/// separated by `^`, such as `Doe^Jane`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Patient {
    id: String,
    name: String,
}

impl Patient {
    /// Checks both values; an empty value is allowed (type 2 attributes).
    pub fn new(id: &str, name: &str) -> Result<Patient> {
        let id = check_text("patient_id", id, 64, "")?;
        // '=' separates the ideographic and phonetic groups, which need a
        // character set beyond the default one.
        let name = check_text("patient_name", name, 64, "=")?;
        if name.matches('^').count() > 4 {
            return Err(DicomError::BadValue {
                field: "patient_name",
                value: name,
                reason: "has more than 5 components; family^given^middle^prefix^suffix".into(),
            });
        }
        Ok(Patient { id, name })
    }

    /// PatientID.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// PatientName.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// One study and its series: the UIDs that group the files of one
/// examination, with the StudyID and AccessionNumber (SH: 16 characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Study {
    study_uid: String,
    series_uid: String,
    study_id: String,
    accession: String,
    /// StudyDate and StudyTime (UTC), when the study began here.
    date: String,
    time: String,
}

/// Checks a StudyID and an AccessionNumber (SH: 16 characters).
pub fn check_study(study_id: &str, accession: &str) -> Result<()> {
    check_text("study_id", study_id, 16, "")?;
    check_text("accession_number", accession, 16, "")?;
    Ok(())
}

impl Study {
    /// A new study with fresh UIDs, starting now.
    pub fn new(study_id: &str, accession: &str) -> Result<Study> {
        let now = chrono::Utc::now();
        Ok(Study {
            study_uid: new_uid()?,
            series_uid: new_uid()?,
            study_id: check_text("study_id", study_id, 16, "")?,
            accession: check_text("accession_number", accession, 16, "")?,
            date: now.format("%Y%m%d").to_string(),
            time: now.format("%H%M%S").to_string(),
        })
    }

    /// StudyInstanceUID.
    pub fn study_uid(&self) -> &str {
        &self.study_uid
    }

    /// SeriesInstanceUID.
    pub fn series_uid(&self) -> &str {
        &self.series_uid
    }

    /// StudyID.
    pub fn study_id(&self) -> &str {
        &self.study_id
    }

    /// AccessionNumber.
    pub fn accession(&self) -> &str {
        &self.accession
    }
}

/// The model that drew the overlay, as the header states it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelTag {
    /// `lgms.name`.
    pub name: String,
    /// `lgms.version`, or what the file says of its export.
    pub version: String,
    /// SHA-256 of the model file, hex.
    pub sha256: String,
    /// f32, int8 or f16.
    pub precision: String,
}

impl ModelTag {
    /// The DerivationDescription (ST: 1024 characters, so long names are cut).
    fn description(&self) -> String {
        let mut s = format!(
            "Segmentation overlay burned in by lgms-edge {}; model {} version {} precision {} sha256 {}",
            env!("CARGO_PKG_VERSION"),
            self.name,
            self.version,
            self.precision,
            self.sha256
        );
        s.retain(|c| (' '..='~').contains(&c) && c != '\\');
        s.truncate(1024);
        s
    }
}

/// What a run's files state, from the board file and the model.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Which IODs.
    pub modality: Modality,
    /// The patient until the control socket sets another.
    pub patient: Patient,
    /// StudyID of the studies begun here.
    pub study_id: String,
    /// AccessionNumber of the studies begun here.
    pub accession: String,
    /// The model that draws the overlay.
    pub model: ModelTag,
}

/// What a file states besides its pixels: owned, so that it goes with
/// the frames to the thread that writes them.
#[derive(Debug, Clone)]
pub struct Header {
    /// Which IODs.
    pub modality: Modality,
    /// Whose images.
    pub patient: Patient,
    /// Which study and series.
    pub study: Study,
    /// The model that drew the overlay.
    pub model: ModelTag,
    /// The pixel spacing, if known.
    pub calibration: Calibration,
    /// The part of the frame the spacing holds for (the ROI).
    pub region: Rect,
    /// InstanceNumber.
    pub instance_number: u32,
    /// SOPInstanceUID ([`new_uid`]), known before the file is written so
    /// that a command can answer with the file's name at once.
    pub sop_instance_uid: String,
}

/// A DICOM object ready to be written, with the UIDs that name it.
pub struct Instance {
    /// SOPInstanceUID: the file's name in the spool.
    pub sop_instance_uid: String,
    /// SOPClassUID.
    pub sop_class_uid: &'static str,
    /// Frames in the pixel data.
    pub frames: usize,
    obj: FileDicomObject<InMemDicomObject>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("sop_instance_uid", &self.sop_instance_uid)
            .field("sop_class_uid", &self.sop_class_uid)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

impl Instance {
    /// Writes the Part-10 file (preamble, meta group, data set) to `to`.
    pub fn write_to(&self, to: impl Write) -> Result<()> {
        self.obj
            .write_all(to)
            .map_err(|e| DicomError::Encode(e.to_string()))
    }
}

/// One frame as a single-frame image (Ultrasound Image, or Secondary
/// Capture for endoscopy).
pub fn snapshot(header: &Header, frame: &Frame) -> Result<Instance> {
    build(header, &[frame], None)
}

/// Frames, oldest first, as one multi-frame image (Ultrasound Multi-frame
/// Image, or Multi-frame True Color Secondary Capture for endoscopy), shown
/// `frame_time_ms` apart.
pub fn cine(header: &Header, frames: &[&Frame], frame_time_ms: f64) -> Result<Instance> {
    if !(frame_time_ms.is_finite() && frame_time_ms > 0.0) {
        return Err(DicomError::BadValue {
            field: "frame time",
            value: frame_time_ms.to_string(),
            reason: "must be a positive number of ms".into(),
        });
    }
    build(header, frames, Some(frame_time_ms))
}

fn text(tag: Tag, vr: VR, v: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(v))
}

fn build(header: &Header, frames: &[&Frame], frame_time_ms: Option<f64>) -> Result<Instance> {
    let first = frames.first().ok_or(DicomError::NoFrames)?;
    let (w, h) = (first.width, first.height);
    let size = |f: &Frame| format!("{}x{} ({} bytes)", f.width, f.height, f.rgb.len());
    let frame_bytes = w as usize * h as usize * 3;
    for (index, f) in frames.iter().enumerate() {
        if f.width != w || f.height != h || f.rgb.len() != frame_bytes {
            return Err(DicomError::FrameSize {
                index,
                got: size(f),
                want: format!("{w}x{h} ({frame_bytes} bytes)"),
            });
        }
    }
    if w == 0 || h == 0 || w > u32::from(u16::MAX) || h > u32::from(u16::MAX) {
        return Err(DicomError::FrameSize {
            index: 0,
            got: size(first),
            want: "1..=65535 rows and columns".into(),
        });
    }
    let modality = header.modality;
    let multi = frame_time_ms.is_some();
    let class = modality.sop_class(if multi { frames.len().max(2) } else { 1 });
    let uid = header.sop_instance_uid.clone();
    let now = chrono::Utc::now();
    let (date, time) = (
        now.format("%Y%m%d").to_string(),
        now.format("%H%M%S%.3f").to_string(),
    );
    let mut o = InMemDicomObject::new_empty();
    // SOP Common.
    o.put(text(tags::SOP_CLASS_UID, VR::UI, class));
    o.put(text(tags::SOP_INSTANCE_UID, VR::UI, &uid));
    o.put(text(tags::INSTANCE_CREATION_DATE, VR::DA, &date));
    o.put(text(tags::INSTANCE_CREATION_TIME, VR::TM, &time));
    o.put(text(tags::TIMEZONE_OFFSET_FROM_UTC, VR::SH, "+0000"));
    put_patient_and_study(&mut o, header);
    let study = &header.study;
    // General Series.
    o.put(text(tags::MODALITY, VR::CS, modality.code()));
    o.put(text(tags::SERIES_INSTANCE_UID, VR::UI, &study.series_uid));
    o.put(text(tags::SERIES_NUMBER, VR::IS, "1"));
    // Type 2C (paired body parts): empty, as the cart does not know the side.
    o.put(text(tags::LATERALITY, VR::CS, ""));
    // General Equipment.
    o.put(text(tags::MANUFACTURER, VR::LO, "lgms-edge"));
    o.put(text(tags::MANUFACTURER_MODEL_NAME, VR::LO, "lgms-edge"));
    o.put(text(
        tags::SOFTWARE_VERSIONS,
        VR::LO,
        concat!("lgms-edge ", env!("CARGO_PKG_VERSION")),
    ));
    if modality == Modality::Endoscopy {
        // SC Equipment: captured from a workstation's screen.
        o.put(text(tags::CONVERSION_TYPE, VR::CS, "WSD"));
    }
    // General Image.
    o.put(text(
        tags::INSTANCE_NUMBER,
        VR::IS,
        &header.instance_number.to_string(),
    ));
    o.put(text(tags::PATIENT_ORIENTATION, VR::CS, ""));
    o.put(text(tags::CONTENT_DATE, VR::DA, &date));
    o.put(text(tags::CONTENT_TIME, VR::TM, &time));
    let image_type = match modality {
        Modality::Ultrasound => dicom_value!(Strs, ["DERIVED", "PRIMARY"]),
        Modality::Endoscopy => dicom_value!(Strs, ["DERIVED", "SECONDARY"]),
    };
    o.put(DataElement::new(tags::IMAGE_TYPE, VR::CS, image_type));
    o.put(text(
        tags::DERIVATION_DESCRIPTION,
        VR::ST,
        &header.model.description(),
    ));
    o.put(text(tags::IMAGE_COMMENTS, VR::LT, IMAGE_COMMENTS));
    o.put(text(tags::BURNED_IN_ANNOTATION, VR::CS, "YES"));
    o.put(text(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"));
    // Image Pixel.
    o.put(DataElement::new(
        tags::SAMPLES_PER_PIXEL,
        VR::US,
        dicom_value!(U16, [3]),
    ));
    o.put(text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB"));
    o.put(DataElement::new(
        tags::PLANAR_CONFIGURATION,
        VR::US,
        dicom_value!(U16, [0]),
    ));
    o.put(DataElement::new(
        tags::ROWS,
        VR::US,
        dicom_value!(U16, [h as u16]),
    ));
    o.put(DataElement::new(
        tags::COLUMNS,
        VR::US,
        dicom_value!(U16, [w as u16]),
    ));
    for tag in [tags::BITS_ALLOCATED, tags::BITS_STORED] {
        o.put(DataElement::new(tag, VR::US, dicom_value!(U16, [8])));
    }
    o.put(DataElement::new(
        tags::HIGH_BIT,
        VR::US,
        dicom_value!(U16, [7]),
    ));
    o.put(DataElement::new(
        tags::PIXEL_REPRESENTATION,
        VR::US,
        dicom_value!(U16, [0]),
    ));
    // Multi-frame and Cine.
    if let Some(ms) = frame_time_ms {
        o.put(text(
            tags::NUMBER_OF_FRAMES,
            VR::IS,
            &frames.len().to_string(),
        ));
        o.put(DataElement::new(
            tags::FRAME_INCREMENT_POINTER,
            VR::AT,
            PrimitiveValue::Tags([tags::FRAME_TIME].into_iter().collect()),
        ));
        o.put(text(tags::FRAME_TIME, VR::DS, &format_ds(ms)));
    }
    // US Region Calibration, only where the spacing is known.
    if let (Modality::Ultrasound, Some((mx, my))) = (modality, header.calibration.mm_per_px) {
        o.put(DataElement::new(
            tags::SEQUENCE_OF_ULTRASOUND_REGIONS,
            VR::SQ,
            DataSetSequence::from(vec![us_region(header.region, w, h, mx, my)]),
        ));
    }
    let mut pixels = Vec::with_capacity(frame_bytes * frames.len() + 1);
    for f in frames {
        pixels.extend_from_slice(&f.rgb);
    }
    // OB values have an even length; the pad byte is zero.
    if pixels.len() % 2 == 1 {
        pixels.push(0);
    }
    o.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::U8(pixels.into()),
    ));
    let obj = o
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .map_err(|e| DicomError::Encode(e.to_string()))?;
    Ok(Instance {
        sop_instance_uid: uid,
        sop_class_uid: class,
        frames: frames.len(),
        obj,
    })
}

/// The Patient and General Study modules of `header`: the same in every
/// file of a study, images and SR alike.
fn put_patient_and_study(o: &mut InMemDicomObject, header: &Header) {
    o.put(text(tags::PATIENT_NAME, VR::PN, header.patient.name()));
    o.put(text(tags::PATIENT_ID, VR::LO, header.patient.id()));
    o.put(text(tags::PATIENT_BIRTH_DATE, VR::DA, ""));
    o.put(text(tags::PATIENT_SEX, VR::CS, ""));
    let study = &header.study;
    o.put(text(tags::STUDY_INSTANCE_UID, VR::UI, &study.study_uid));
    o.put(text(tags::STUDY_DATE, VR::DA, &study.date));
    o.put(text(tags::STUDY_TIME, VR::TM, &study.time));
    o.put(text(tags::REFERRING_PHYSICIAN_NAME, VR::PN, ""));
    o.put(text(tags::STUDY_ID, VR::SH, &study.study_id));
    o.put(text(tags::ACCESSION_NUMBER, VR::SH, &study.accession));
}

/// One region of the Sequence of Ultrasound Regions: a 2D tissue region
/// over `region` (clamped to the frame), its spacing in cm per pixel.
fn us_region(region: Rect, w: u32, h: u32, mx: f64, my: f64) -> InMemDicomObject {
    let x0 = region.x.min(w - 1);
    let y0 = region.y.min(h - 1);
    let x1 = (region.x.saturating_add(region.w.max(1)) - 1).clamp(x0, w - 1);
    let y1 = (region.y.saturating_add(region.h.max(1)) - 1).clamp(y0, h - 1);
    let ul = |tag, v: u32| DataElement::new(tag, VR::UL, dicom_value!(U32, [v]));
    let us = |tag, v: u16| DataElement::new(tag, VR::US, dicom_value!(U16, [v]));
    let fd = |tag, v: f64| DataElement::new(tag, VR::FD, dicom_value!(F64, [v]));
    InMemDicomObject::from_element_iter([
        // 1: 2D (tissue or flow), 1: tissue; no flags set.
        us(tags::REGION_SPATIAL_FORMAT, 1),
        us(tags::REGION_DATA_TYPE, 1),
        ul(tags::REGION_FLAGS, 0),
        ul(tags::REGION_LOCATION_MIN_X0, x0),
        ul(tags::REGION_LOCATION_MIN_Y0, y0),
        ul(tags::REGION_LOCATION_MAX_X1, x1),
        ul(tags::REGION_LOCATION_MAX_Y1, y1),
        // 3: cm.
        us(tags::PHYSICAL_UNITS_X_DIRECTION, 3),
        us(tags::PHYSICAL_UNITS_Y_DIRECTION, 3),
        fd(tags::PHYSICAL_DELTA_X, mx / 10.0),
        fd(tags::PHYSICAL_DELTA_Y, my / 10.0),
    ])
}

/// A decimal string (DS: at most 16 characters).
fn format_ds(v: f64) -> String {
    let mut s = format!("{v:.6}");
    while s.contains('.') && (s.ends_with('0') || s.ends_with('.')) {
        s.pop();
    }
    s.truncate(16);
    s
}

/// The JSON sidecar of a file: the lesions measured on each of its frames
/// (oldest first), in mm and mm² when calibrated and always in pixels.
pub fn sidecar(
    instance: &Instance,
    calibration: Calibration,
    lesions: &[&[Lesion]],
) -> serde_json::Value {
    let frames: Vec<serde_json::Value> = lesions
        .iter()
        .map(|ls| {
            ls.iter()
                .map(|l| {
                    let mut v = serde_json::json!({
                        "centre_px": [l.centre.0, l.centre.1],
                        "area_px": l.area_px,
                        "long_px": l.long_px,
                        "short_px": l.short_px,
                    });
                    if calibration.mm_per_px.is_some() {
                        v["area_mm2"] = l.area_mm2.into();
                        v["long_mm"] = l.long_mm.into();
                        v["short_mm"] = l.short_mm.into();
                    }
                    v
                })
                .collect()
        })
        .collect();
    serde_json::json!({
        "sop_instance_uid": instance.sop_instance_uid,
        "sop_class_uid": instance.sop_class_uid,
        "calibrated": calibration.mm_per_px.is_some(),
        "mm_per_pixel": calibration.mm_per_px.map(|(x, y)| [x, y]),
        "frames": frames,
    })
}

/// Writes `path` whole or not at all: a `.part` file beside it, synced,
/// then renamed over it.
fn write_whole(path: &Path, write: impl FnOnce(&mut std::fs::File) -> Result<()>) -> Result<()> {
    let io = |source| DicomError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let done = (|| {
        let mut f = std::fs::File::create(&part).map_err(io)?;
        write(&mut f)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&part, path).map_err(io)
    })();
    if done.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    done
}

/// Puts a file and its sidecar into the spool folder `dir` as
/// `<SOPInstanceUID>.json` and `<SOPInstanceUID>.dcm`. The sidecar comes
/// first, so whoever takes `.dcm` files from the spool finds it; each is
/// written aside and renamed, so a crash or a full disk never leaves half
/// a file under a final name. Returns the DICOM file's path.
pub fn spool(dir: &Path, instance: &Instance, sidecar: &serde_json::Value) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|source| DicomError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let json = dir.join(format!("{}.json", instance.sop_instance_uid));
    write_whole(&json, |f| {
        serde_json::to_writer_pretty(&mut *f, sidecar)
            .map_err(|e| DicomError::Encode(e.to_string()))
    })?;
    write_dcm(dir, instance)
}

/// Writes `instance` whole into `dir` as `<SOPInstanceUID>.dcm`.
fn write_dcm(dir: &Path, instance: &Instance) -> Result<PathBuf> {
    let dcm = dir.join(format!("{}.dcm", instance.sop_instance_uid));
    write_whole(&dcm, |f| {
        let mut w = std::io::BufWriter::new(f);
        instance.write_to(&mut w)?;
        w.flush().map_err(|source| DicomError::Io {
            path: dcm.clone(),
            source,
        })
    })?;
    Ok(dcm)
}

/// Builds the file of `frames` (one: a single-frame image; a frame time:
/// a multi-frame image) and puts it with its sidecar into the spool `dir`.
/// `lesions` holds the lesions drawn on each frame. A calibrated snapshot
/// with lesions gets its measurements as an SR ([`sr::report`]) too, after
/// the image, named in the image's sidecar.
pub fn save(
    dir: &Path,
    header: &Header,
    frames: &[&Frame],
    lesions: &[&[Lesion]],
    frame_time_ms: Option<f64>,
) -> Result<PathBuf> {
    let instance = match (frame_time_ms, frames) {
        (Some(ms), _) => cine(header, frames, ms)?,
        (None, [frame]) => snapshot(header, frame)?,
        (None, _) => {
            return Err(DicomError::BadValue {
                field: "frame time",
                value: "none".into(),
                reason: format!("{} frames need a frame time", frames.len()),
            })
        }
    };
    let report = match (frame_time_ms, lesions) {
        (None, [drawn]) => sr::report(header, &instance, drawn)?,
        _ => None,
    };
    let mut json = sidecar(&instance, header.calibration, lesions);
    if let Some(sr) = &report {
        json["measurement_report"] = sr.sop_instance_uid.clone().into();
    }
    let path = spool(dir, &instance, &json)?;
    if let Some(sr) = &report {
        write_dcm(dir, sr)?;
    }
    Ok(path)
}

pub mod sr;

#[cfg(test)]
mod tests;
