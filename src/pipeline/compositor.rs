//! The display thread: shows every frame the source produces, at its pace,
//! with the newest mask drawn only when it belongs to the frame.
//!
//! The mask-age gate: a mask is drawn only when `frame.captured -
//! mask.captured <= max_mask_age`, so a late mask is never painted on a
//! frame it does not belong to ([`crate::overlay::OverlayState`] says what
//! is shown instead). When no frame has come for a while, the compositor
//! shows the NO SIGNAL screen ([`crate::overlay::no_signal`], the only NO
//! SIGNAL path) at the source's pace instead of freezing on the last frame.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::slots::{lock, wait, Shared};
use super::{FrameRecord, Options, RecordState};
use crate::frame::{Frame, Mask};
use std::fmt::Write as _;

use crate::control::Command;
use crate::dicom::{Header, Patient, Study};
use crate::measure::{Calibration, Lesion, Measurer, Settings, Smoother, MAX_LESIONS};
use crate::overlay::calipers::draw_measurements;
use crate::overlay::draw_notice;
use crate::overlay::no_signal::draw_no_signal;
use crate::overlay::{HudInfo, Overlay, OverlayState, OverlayStyle, RgbTarget};
use crate::pipeline::stats::{Stage, StageRecorder};
use crate::sink::Sink;
use crate::Result;

/// What the compositor counted.
pub(super) struct CompositorResult {
    pub(super) rec: StageRecorder,
    pub(super) frames_out: u64,
    pub(super) dropped: u64,
    pub(super) with_mask: u64,
    pub(super) stale: u64,
    pub(super) no_mask: u64,
    pub(super) records: Vec<FrameRecord>,
    /// When the first and the last camera frame were handed to the sink.
    pub(super) first_shown: Option<Instant>,
    pub(super) last_shown: Option<Instant>,
}

/// Names for the HUD, split once from the segmenter's label.
struct HudText<'a> {
    model: &'a str,
    precision: &'a str,
}

#[allow(clippy::too_many_arguments)]
/// Runs the display loop until the source is done or the run stops:
/// frames of `width` x `height` arriving every `period` go to `sink`.
pub(super) fn compositor_loop(
    shared: &Shared,
    sink: &mut dyn Sink,
    opts: &Options,
    label: &str,
    source_name: &str,
    period: Duration,
    width: u32,
    height: u32,
) -> Result<CompositorResult> {
    let mut out = CompositorResult {
        rec: StageRecorder::new(opts.stat_capacity),
        frames_out: 0,
        dropped: 0,
        with_mask: 0,
        stale: 0,
        no_mask: 0,
        records: Vec::with_capacity(if opts.keep_records {
            opts.frames.min(1 << 20) as usize
        } else {
            0
        }),
        first_shown: None,
        last_shown: None,
    };
    let mut overlay = Overlay::new(OverlayStyle::from_config(&opts.overlay, opts.max_mask_age));
    let text = match label.rsplit_once(' ') {
        Some((model, precision)) => HudText { model, precision },
        None => HudText {
            model: label,
            precision: "",
        },
    };
    let mut frame = Frame::new(width, height);
    let mut mask: Option<Mask> = None;
    let mut last_gen = 0u64;
    let mut fps_meter = FpsMeter::new();
    let mut last_e2e_ms: Option<f32> = None;
    // Without a frame for this long the screen says NO SIGNAL instead of freezing.
    let no_signal_after = (period * 3).max(Duration::from_millis(300));
    let mut last_frame_at = Instant::now();
    let mut lost_at: Option<Instant> = None;
    let mut no_signal_frames = 0u32;
    let mut display_failures = 0u32;
    let mut measuring = opts.measure.map(|s| {
        (
            Measurer::new(s.min_area_px),
            Smoother::new(s.smooth_frames),
            s,
        )
    });
    let mut lesions = Vec::with_capacity(MAX_LESIONS);
    let roi = opts.roi.unwrap_or(crate::frame::Rect::full(width, height));
    let mut ctl = Control::new(opts.dicom.patient.clone());
    // Allocated once: the memory a board file states (frames x size).
    let mut cine = Cine::new(
        if opts.control.is_some() {
            opts.cine_frames.max(1)
        } else {
            opts.cine_frames
        },
        width,
        height,
    );
    let mut held = Frame::new(width, height);

    loop {
        let mut no_signal = false;
        // The lesions drawn on this frame: the first this many of `lesions`.
        let mut drawn_lesions = 0;
        {
            let mut slot = lock(&shared.frames);
            loop {
                if shared.stop.load(Ordering::SeqCst) {
                    return Ok(out);
                }
                if slot.gen > last_gen {
                    break;
                }
                if slot.done {
                    return Ok(out);
                }
                if opts.lossless {
                    // A file replayed frame by frame: waiting is not a lost
                    // signal, the next frame comes once this one is shown.
                    slot = wait(&shared.frame_cv, slot, Duration::from_millis(50));
                    continue;
                }
                let waited = last_frame_at.elapsed();
                let wait_for = if lost_at.is_some() {
                    period
                } else {
                    no_signal_after
                };
                if waited >= wait_for {
                    no_signal = true;
                    break;
                }
                slot = wait(
                    &shared.frame_cv,
                    slot,
                    (wait_for - waited).min(Duration::from_millis(50)),
                );
            }
            if !no_signal {
                out.dropped += slot.gen - last_gen - 1;
                last_gen = slot.gen;
                frame.copy_from(&slot.frame);
            }
        }
        last_frame_at = Instant::now();
        let t0 = last_frame_at;
        let mut record = FrameRecord {
            frame_id: frame.id,
            mask_frame_id: None,
            mask_age_ms: None,
            state: RecordState::NoMask,
            shown_at: t0,
        };
        if no_signal {
            // Keep the display alive at the source's pace with a clear state,
            // rather than freezing on the last frame.
            no_signal_frames += 1;
            let since = *lost_at.get_or_insert(t0);
            if no_signal_frames == 1 {
                let reason = lock(&shared.source_error).clone();
                log::warn!(
                    "no frame from {source_name} for {no_signal_after:?}: showing NO SIGNAL{}",
                    reason.map(|r| format!(" ({r})")).unwrap_or_default()
                );
            }
            draw_no_signal(
                &mut frame,
                (width, height),
                source_name,
                no_signal_frames,
                t0.saturating_duration_since(since),
            );
            record.state = RecordState::NoSignal;
        } else {
            if lost_at.take().is_some() {
                log::info!("{source_name}: frames are arriving again");
                no_signal_frames = 0;
            }
            let model_failed;
            let mut fresh_mask = false;
            {
                let mut slot = lock(&shared.masks);
                if opts.lossless {
                    // Every frame waits for its own inference (or its failure).
                    while slot.finished.is_none_or(|f| f < frame.id) {
                        if shared.stop.load(Ordering::SeqCst) {
                            return Ok(out);
                        }
                        slot = wait(&shared.mask_cv, slot, Duration::from_millis(50));
                    }
                }
                if let Some(m) = slot.mask.as_ref() {
                    match mask.as_mut() {
                        Some(mine) if mine.frame_id == m.frame_id => {}
                        Some(mine) => {
                            mine.copy_from(m);
                            fresh_mask = true;
                        }
                        None => {
                            mask = Some(m.clone());
                            fresh_mask = true;
                        }
                    }
                }
                model_failed = slot.error.is_some();
            }
            let hud = HudInfo {
                fps: fps_meter.fps() as f32,
                latency_ms: last_e2e_ms,
                model: text.model,
                precision: text.precision,
                // The mask's age is measured against the capture of the frame
                // it would be drawn on: that is what "wrong frame" means.
                now: frame.captured,
                model_failed,
            };
            // Lossless replay: only the frame's own mask is ever drawn on it.
            let frame_id = frame.id;
            let drawn = mask
                .as_ref()
                .filter(|m| !opts.lossless || m.frame_id == frame_id);
            // Each new mask is measured once (in the display thread, so that
            // the smoothing sees the masks in order).
            if let (true, Some((m, smoother, settings)), Some(mk)) =
                (fresh_mask, measuring.as_mut(), mask.as_ref())
            {
                m.measure(mk, settings.calibration, &mut lesions);
                smoother.smooth(&mut lesions);
            }
            if ctl.overlay_on {
                let mut target = RgbTarget::for_frame(&mut frame)?;
                let state = match overlay.draw(&mut target, drawn, &hud) {
                    Ok(s) => s,
                    Err(never) => match never {},
                };
                if let Some((_, _, settings)) = &measuring {
                    let shown = if state.draws_mask() {
                        &lesions[..]
                    } else {
                        &[]
                    };
                    drawn_lesions = shown.len();
                    if let Err(never) = draw_measurements(&mut target, shown, settings.calibration)
                    {
                        match never {}
                    }
                }
                record.mask_age_ms = match state {
                    OverlayState::Live { .. } | OverlayState::Paused { .. } => drawn.map(|m| {
                        frame
                            .captured
                            .saturating_duration_since(m.captured)
                            .as_secs_f64()
                            * 1e3
                    }),
                    _ => None,
                };
                record.state = match state {
                    OverlayState::Live { .. } => RecordState::Drawn,
                    OverlayState::Paused { .. } => RecordState::Stale,
                    OverlayState::ModelError => RecordState::ModelError,
                    OverlayState::NoMask => RecordState::NoMask,
                };
                if state.draws_mask() {
                    record.mask_frame_id = drawn.map(|m| m.frame_id);
                }
                match record.state {
                    RecordState::Drawn => out.with_mask += 1,
                    RecordState::Stale => out.stale += 1,
                    _ => out.no_mask += 1,
                }
            } else {
                let mut target = RgbTarget::for_frame(&mut frame)?;
                if let Err(never) = draw_notice(&mut target, "overlay off") {
                    match never {}
                }
                out.no_mask += 1;
            }
        }
        // Commands from the control socket, between two frames.
        if let Some(rx) = &opts.control {
            let rx = lock(rx);
            while let Ok(req) = rx.try_recv() {
                let answer = ctl.apply(req.command, &cine, &mut measuring, roi, opts, period);
                let _ = req.reply.send(answer);
            }
        }
        // The cine keeps the shown frames; frozen, it holds still and the
        // screen shows one of them while capture and inference go on.
        if !no_signal && ctl.frozen.is_none() {
            cine.push(&frame, &lesions[..drawn_lesions]);
        }
        let mut show = &frame;
        if let Some(back) = ctl.frozen {
            if let Some(f) = cine.back(back) {
                held.copy_from(f);
                let mut note = heapless::String::<32>::new();
                let _ = write!(note, "FROZEN  -{back} / {}", cine.len());
                let mut target = RgbTarget::for_frame(&mut held)?;
                if let Err(never) = draw_notice(&mut target, &note) {
                    match never {}
                }
                show = &held;
            }
        }
        let t1 = Instant::now();
        let written = sink.write(show);
        let t2 = Instant::now();
        if let Err(e) = written {
            // A display that fails a write (a full disk under a video file,
            // a display being reset) is tried again with the next frame;
            // the frame counts as dropped. A display that never comes back
            // stops the systemd watchdog pings, which restarts the service.
            display_failures += 1;
            if display_failures == 1 || display_failures.is_power_of_two() {
                log::error!(
                    "display {}: {e} (failure {display_failures}; the next frame is tried)",
                    sink.name()
                );
            }
            if !no_signal {
                lock(&shared.frames).shown = last_gen;
                shared.frame_cv.notify_all();
            }
            continue;
        }
        if display_failures > 0 {
            log::info!(
                "display {} works again after {display_failures} failed frames",
                sink.name()
            );
            display_failures = 0;
        }
        if !no_signal {
            lock(&shared.frames).shown = last_gen;
            shared.frame_cv.notify_all();
            out.first_shown.get_or_insert(t2);
            out.last_shown = Some(t2);
        }
        out.rec.record(Stage::Compose, t1 - t0);
        out.rec.record(Stage::Display, t2 - t1);
        if !no_signal {
            let e2e = t2.saturating_duration_since(frame.captured);
            out.rec.record(Stage::EndToEnd, e2e);
            last_e2e_ms = Some((e2e.as_secs_f64() * 1e3) as f32);
            out.frames_out += 1;
            if let Some(w) = &opts.watchdog {
                let mut w = lock(w);
                if out.frames_out == 1 {
                    w.ready();
                } else {
                    w.frame_shown();
                }
            }
        }
        fps_meter.tick(t2);
        record.shown_at = t2;
        if opts.keep_records {
            out.records.push(record);
        }
    }
}

/// The last shown frames, in a ring allocated at start, with the lesions
/// drawn on each. Frames are shared with the threads that save them: a
/// frame still being saved is left to its saver and the ring takes a new
/// one in its place, so saving never stops the video (and a cine being
/// saved holds at most a second ring's memory until it is written).
struct Cine {
    frames: Vec<Arc<Frame>>,
    lesions: Vec<Vec<Lesion>>,
    /// Where the next frame goes.
    head: usize,
    len: usize,
}

impl Cine {
    fn new(n: usize, width: u32, height: u32) -> Self {
        Cine {
            frames: (0..n)
                .map(|_| Arc::new(Frame::new(width, height)))
                .collect(),
            lesions: (0..n).map(|_| Vec::with_capacity(MAX_LESIONS)).collect(),
            head: 0,
            len: 0,
        }
    }

    fn push(&mut self, f: &Frame, lesions: &[Lesion]) {
        if self.frames.is_empty() {
            return;
        }
        let slot = &mut self.frames[self.head];
        match Arc::get_mut(slot) {
            Some(mine) => mine.copy_from(f),
            None => *slot = Arc::new(f.clone()),
        }
        let ls = &mut self.lesions[self.head];
        ls.clear();
        ls.extend_from_slice(lesions);
        self.head = (self.head + 1) % self.frames.len();
        self.len = (self.len + 1).min(self.frames.len());
    }

    fn index(&self, back: usize) -> Option<usize> {
        let n = self.frames.len();
        (back < self.len).then(|| (self.head + n - 1 - back) % n)
    }

    /// The frame `back` frames before the newest (0: the newest).
    fn back(&self, back: usize) -> Option<&Frame> {
        self.index(back).map(|i| &*self.frames[i])
    }

    /// The frame `back` frames before the newest and its lesions, shared.
    fn take(&self, back: usize) -> Option<(Arc<Frame>, Vec<Lesion>)> {
        self.index(back)
            .map(|i| (self.frames[i].clone(), self.lesions[i].clone()))
    }

    /// Every frame held, oldest first, with its lesions.
    fn take_all(&self) -> (Vec<Arc<Frame>>, Vec<Vec<Lesion>>) {
        (0..self.len)
            .rev()
            .filter_map(|back| self.take(back))
            .unzip()
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// What the control socket has set.
#[derive(Debug)]
struct Control {
    /// Frozen on the frame this many before the newest.
    frozen: Option<usize>,
    overlay_on: bool,
    depth_mm: Option<f64>,
    /// Whose images the DICOM files are.
    patient: Patient,
    /// The study of this patient's files, begun at the first file.
    study: Option<Study>,
    /// InstanceNumber of the last file of the study.
    instances: u32,
    /// A cine is being written: one at a time, so that saved cines never
    /// hold more than one ring's worth of frames.
    cine_saving: Arc<AtomicBool>,
    /// The threads writing snapshots and cines, joined before the run
    /// ends so that a stop never leaves a file unwritten.
    writers: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Control {
    fn drop(&mut self) {
        if self.writers.iter().any(|w| !w.is_finished()) {
            log::info!("waiting for snapshots and cines to be written");
        }
        for w in self.writers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Control {
    fn new(patient: Patient) -> Self {
        Control {
            frozen: None,
            overlay_on: true,
            depth_mm: None,
            patient,
            study: None,
            instances: 0,
            cine_saving: Arc::new(AtomicBool::new(false)),
            writers: Vec::new(),
        }
    }

    /// The header of the next DICOM file: a new study for a new patient,
    /// the next instance number, a fresh SOP Instance UID.
    fn next_header(
        &mut self,
        opts: &super::Options,
        calibration: Calibration,
        roi: crate::frame::Rect,
    ) -> std::result::Result<Header, String> {
        let s = &opts.dicom;
        let study = match &self.study {
            Some(study) => study.clone(),
            None => {
                let study = Study::new(&s.study_id, &s.accession).map_err(|e| e.to_string())?;
                self.study = Some(study.clone());
                self.instances = 0;
                study
            }
        };
        self.instances += 1;
        Ok(Header {
            modality: s.modality,
            patient: self.patient.clone(),
            study,
            model: s.model.clone(),
            calibration,
            region: roi,
            instance_number: self.instances,
            sop_instance_uid: crate::dicom::new_uid().map_err(|e| e.to_string())?,
        })
    }

    /// Applies one command; the answer is the state after it, or why not.
    fn apply(
        &mut self,
        cmd: Command,
        cine: &Cine,
        measuring: &mut Option<(Measurer, Smoother, Settings)>,
        roi: crate::frame::Rect,
        opts: &super::Options,
        period: Duration,
    ) -> std::result::Result<serde_json::Value, String> {
        let mut saved = None;
        let mut dicom = None;
        self.writers.retain(|w| !w.is_finished());
        let calibration = measuring
            .as_ref()
            .map_or(Calibration::NONE, |(_, _, s)| s.calibration);
        match cmd {
            Command::Freeze => {
                if cine.len() == 0 {
                    return Err("nothing has been shown yet".into());
                }
                self.frozen = Some(0);
            }
            Command::Unfreeze => self.frozen = None,
            Command::Step(n) => {
                let Some(back) = self.frozen else {
                    return Err("not frozen; send freeze first".into());
                };
                let last = cine.len().saturating_sub(1) as i64;
                self.frozen = Some((back as i64 - n).clamp(0, last) as usize);
            }
            Command::SetDepth(mm) => {
                let Some((_, _, settings)) = measuring.as_mut() else {
                    return Err("measurements are off ([measure] enabled = false)".into());
                };
                settings.calibration = Calibration::from_depth(mm, roi);
                self.depth_mm = Some(mm);
                log::info!("depth set to {mm} mm over the {} rows of the roi", roi.h);
            }
            Command::Overlay(on) => self.overlay_on = on,
            Command::SetPatient(p) => {
                log::info!("patient set; the next DICOM file begins a new study");
                self.patient = p;
                self.study = None;
            }
            Command::SaveSnapshot => {
                let Some((frame, lesions)) = cine.take(self.frozen.unwrap_or(0)) else {
                    return Err("nothing has been shown yet".into());
                };
                let header = self.next_header(opts, calibration, roi)?;
                let ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                let path = opts
                    .snapshot_dir
                    .join(format!("snapshot-{ms}-frame{}.png", frame.id));
                let spool = opts.spool_dir.clone();
                let dcm = spool.join(format!("{}.dcm", header.sop_instance_uid));
                // Encoded on its own thread: the video does not wait for it.
                let (dir, to) = (opts.snapshot_dir.clone(), path.clone());
                let writer = std::thread::Builder::new()
                    .name("snapshot".into())
                    .spawn(move || {
                        let written = std::fs::create_dir_all(&dir)
                            .map_err(|e| e.to_string())
                            .and_then(|()| {
                                // Written aside, then renamed: a snapshot on
                                // disk is always whole.
                                let part = to.with_extension("png.part");
                                image::save_buffer_with_format(
                                    &part,
                                    &frame.rgb,
                                    frame.width,
                                    frame.height,
                                    image::ExtendedColorType::Rgb8,
                                    image::ImageFormat::Png,
                                )
                                .map_err(|e| e.to_string())?;
                                std::fs::rename(&part, &to).map_err(|e| e.to_string())
                            });
                        match written {
                            Ok(()) => log::info!("snapshot {to:?}"),
                            Err(e) => log::error!("snapshot {to:?} not written: {e}"),
                        }
                        match crate::dicom::save(&spool, &header, &[&frame], &[&lesions], None) {
                            Ok(p) => log::info!("snapshot DICOM {p:?}"),
                            Err(e) => log::error!("snapshot DICOM not written: {e}"),
                        }
                    })
                    .map_err(|e| format!("cannot start the snapshot thread: {e}"))?;
                self.writers.push(writer);
                saved = Some(path.display().to_string());
                dicom = Some(dcm.display().to_string());
            }
            Command::SaveCine => {
                if cine.len() == 0 {
                    return Err("nothing has been shown yet".into());
                }
                if self.cine_saving.load(Ordering::SeqCst) {
                    return Err(
                        "a cine is still being written; send save-cine again when it is done"
                            .into(),
                    );
                }
                let header = self.next_header(opts, calibration, roi)?;
                let (frames, lesions) = cine.take_all();
                let frame_time_ms = frame_time_ms(&frames, period);
                let dcm = opts
                    .spool_dir
                    .join(format!("{}.dcm", header.sop_instance_uid));
                let spool = opts.spool_dir.clone();
                let busy = self.cine_saving.clone();
                busy.store(true, Ordering::SeqCst);
                let started =
                    std::thread::Builder::new()
                        .name("save-cine".into())
                        .spawn(move || {
                            let refs: Vec<&Frame> = frames.iter().map(|f| &**f).collect();
                            let ls: Vec<&[Lesion]> = lesions.iter().map(|l| &l[..]).collect();
                            match crate::dicom::save(
                                &spool,
                                &header,
                                &refs,
                                &ls,
                                Some(frame_time_ms),
                            ) {
                                Ok(p) => log::info!("cine DICOM {p:?}: {} frames", refs.len()),
                                Err(e) => log::error!("cine DICOM not written: {e}"),
                            }
                            busy.store(false, Ordering::SeqCst);
                        });
                match started {
                    Ok(writer) => self.writers.push(writer),
                    Err(e) => {
                        self.cine_saving.store(false, Ordering::SeqCst);
                        return Err(format!("cannot start the cine thread: {e}"));
                    }
                }
                dicom = Some(dcm.display().to_string());
            }
            Command::Status => {}
        }
        let spacing = measuring
            .as_ref()
            .and_then(|(_, _, s)| s.calibration.mm_per_px);
        Ok(serde_json::json!({
            "frozen": self.frozen.is_some(),
            "frames_back": self.frozen,
            "cine_frames": cine.len(),
            "overlay": self.overlay_on,
            "depth_mm": self.depth_mm,
            "mm_per_pixel": spacing.map(|(x, y)| [x, y]),
            "patient_id": self.patient.id(),
            "snapshot": saved,
            "dicom": dicom,
        }))
    }
}

/// The time between the frames of a cine, from their capture times; the
/// source's period when they tell nothing (one frame, a replayed file).
fn frame_time_ms(frames: &[Arc<Frame>], period: Duration) -> f64 {
    let fallback = if period.is_zero() {
        1000.0 / 30.0
    } else {
        period.as_secs_f64() * 1e3
    };
    match (frames.first(), frames.last()) {
        (Some(a), Some(b)) if frames.len() > 1 => {
            let ms = b
                .captured
                .saturating_duration_since(a.captured)
                .as_secs_f64()
                * 1e3
                / (frames.len() - 1) as f64;
            if ms > 0.0 {
                ms
            } else {
                fallback
            }
        }
        _ => fallback,
    }
}

/// Frames per second over a sliding window of recent frames.
struct FpsMeter {
    times: heapless::Deque<Instant, 32>,
}

impl FpsMeter {
    fn new() -> Self {
        FpsMeter {
            times: heapless::Deque::new(),
        }
    }

    fn tick(&mut self, t: Instant) {
        if self.times.is_full() {
            self.times.pop_front();
        }
        let _ = self.times.push_back(t);
    }

    fn fps(&self) -> f64 {
        match (self.times.front(), self.times.back()) {
            (Some(a), Some(b)) if self.times.len() > 1 && b > a => {
                (self.times.len() - 1) as f64 / (*b - *a).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}
