//! The spool sender: delivers the DICOM files of the spool folder to a
//! PACS by C-STORE, on its own thread.
//!
//! Why it is built this way:
//!
//! - The spool folder is the queue. A file is sent by C-STORE and, once
//!   the PACS answers with a success (or warning) status, renamed into
//!   `sent/` beside it with its JSON sidecar. What is in the spool is
//!   still to be sent, what is in `sent/` was stored: a restart, a crash
//!   or a power cut resumes from the folder, and never sends a file the
//!   PACS confirmed. The one window left is between the PACS's answer and
//!   the rename: a crash there sends the file again on restart, with the
//!   same SOP Instance UID, which a PACS takes as the same instance.
//! - Only finished files are taken: the export writes `<uid>.dcm.part`
//!   and renames it (see [`crate::dicom::spool`]), so a `.dcm` is whole.
//! - One association per file, with one presentation context (the file's
//!   SOP class; Explicit or Implicit VR Little Endian): simple to reason
//!   about, and the spool holds a few files a minute, not thousands.
//! - A PACS that cannot be reached (or refuses the association) is an
//!   outage: the pass stops, the thread waits with the crate's one
//!   [`Backoff`], and logs once when the outage begins and once when it
//!   ends.
//! - A file the PACS refuses for good (a C-STORE failure status, or its
//!   SOP class not accepted) moves with its sidecar into `failed/` beside
//!   `sent/`, with one log line naming the file, the status and the fix:
//!   sending it again would be refused again, and it must not hold back the
//!   files after it. The refusals that a PACS lifts by itself (out of
//!   resources: its disk is full) keep the file in the spool, retried with
//!   the others; so does an answer without a status.
//! - The thread shares nothing with the video pipeline but the folder, and
//!   every network call has a timeout, so stopping it is bounded.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dicom_transfer_syntax_registry::entries::{
    EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
};
use dicom_ul::association::client::ClientAssociationOptions;
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu, PresentationContextResultReason};

use crate::source::backoff::Backoff;

/// The folder inside the spool that holds what the PACS has stored.
pub const SENT_DIR: &str = "sent";

/// The folder inside the spool that holds what the PACS refused for good.
pub const FAILED_DIR: &str = "failed";

/// The most characters of an AE title.
pub const AE_TITLE_MAX: usize = 16;

/// Where and how to send (the checked `[pacs]` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The PACS's host name or address.
    pub host: String,
    /// Its DICOM port.
    pub port: u16,
    /// The PACS's AE title.
    pub called_ae: String,
    /// Ours.
    pub calling_ae: String,
    /// The wait after failed passes.
    pub backoff: Backoff,
    /// The wait between passes that found nothing wrong.
    pub poll: Duration,
    /// The limit of each connect, read and write.
    pub timeout: Duration,
}

impl Settings {
    /// `AE@host:port`, for messages.
    pub fn address(&self) -> String {
        format!("{}@{}:{}", self.called_ae, self.host, self.port)
    }
}

/// `Err` says why `value` is no AE title: empty or all spaces, more than
/// 16 characters, or a character outside printable ASCII or a backslash.
pub fn check_ae_title(value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err("is empty".into());
    }
    if value.len() > AE_TITLE_MAX {
        return Err(format!(
            "has {} characters, at most {AE_TITLE_MAX} are allowed",
            value.len()
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|&c| !(' '..='~').contains(&c) || c == '\\')
    {
        return Err(format!(
            "holds {c:?}; only printable ASCII without a backslash is allowed"
        ));
    }
    Ok(())
}

/// Why a file was not stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// No association: the PACS is down, unreachable or refuses us, or the
    /// connection broke during the transfer. Every file waits.
    #[error("PACS {address}: {reason}")]
    Unreachable {
        /// `AE@host:port`.
        address: String,
        /// Why.
        reason: String,
    },
    /// The PACS refused this file for now (out of resources, or an
    /// answer without a status); others may still go.
    #[error("{path:?}: {reason}")]
    Refused {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The PACS refused this file for good: a C-STORE failure status, or
    /// its SOP class not accepted. Sending it again would fail again.
    #[error("{path:?}: {reason}")]
    Rejected {
        /// The file.
        path: PathBuf,
        /// Why, with the status when the PACS gave one.
        reason: String,
    },
    /// The file cannot be read or the spool cannot be changed.
    #[error("{path:?}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// What one pass over the spool did.
#[derive(Debug, Default)]
pub struct Pass {
    /// Files stored and moved to `sent/`.
    pub sent: Vec<PathBuf>,
    /// The outage that ended the pass, if any.
    pub outage: Option<SendError>,
    /// Files refused for now or unreadable (still in the spool).
    pub refused: Vec<SendError>,
    /// Files refused for good, each with why; moved to `failed/`.
    pub failed: Vec<SendError>,
}

/// The `.dcm` files of `spool`, oldest first (by name within the same
/// time); `.part` files and folders are left out. Sidecars whose file is
/// already in `sent/` or `failed/` (a crash between the two renames) are
/// moved there.
pub fn pending(spool: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let entries = match std::fs::read_dir(spool) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let (sent, failed) = (spool.join(SENT_DIR), spool.join(FAILED_DIR));
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if !entry.file_type()?.is_file() {
            continue;
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some("dcm") => {
                let modified = entry.metadata()?.modified()?;
                files.push((modified, path));
            }
            Some("json") if !path.with_extension("dcm").exists() => {
                let name = path.with_extension("dcm");
                let name = name.file_name().unwrap_or_default();
                if let Some(dir) = [&sent, &failed].into_iter().find(|d| d.join(name).exists()) {
                    std::fs::rename(&path, dir.join(path.file_name().unwrap_or_default()))?;
                }
            }
            _ => {}
        }
    }
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// Sends every pending file of `spool` until the first outage; each file
/// stored is moved to `sent/` at once. `stop` ends the pass between files.
pub fn send_pending(spool: &Path, settings: &Settings, stop: &AtomicBool) -> Pass {
    let mut pass = Pass::default();
    let files = match pending(spool) {
        Ok(f) => f,
        Err(e) => {
            pass.refused.push(SendError::File {
                path: spool.to_path_buf(),
                reason: format!("cannot list the spool: {e}"),
            });
            return pass;
        }
    };
    for path in files {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let sent = store(&path, settings).and_then(|()| {
            move_into(&path, SENT_DIR).map_err(|e| SendError::File {
                path: path.clone(),
                reason: format!("stored, but {e}; it may be sent again"),
            })
        });
        match sent {
            Ok(()) => pass.sent.push(path),
            Err(e @ SendError::Unreachable { .. }) => {
                pass.outage = Some(e);
                break;
            }
            Err(e @ SendError::Rejected { .. }) => match move_into(&path, FAILED_DIR) {
                Ok(()) => pass.failed.push(e),
                Err(why) => pass.refused.push(SendError::File {
                    path: path.clone(),
                    reason: format!("{e}, and it cannot be moved to {FAILED_DIR}/: {why}"),
                }),
            },
            Err(e) => pass.refused.push(e),
        }
    }
    pass
}

/// Renames `path` and its sidecar into the spool's folder `dir` (`sent/`
/// or `failed/`) and syncs both folders, so that the move outlives a power
/// cut. `Err` says which step failed.
fn move_into(path: &Path, dir: &str) -> Result<(), String> {
    let spool = path.parent().unwrap_or(Path::new("."));
    let target = spool.join(dir);
    std::fs::create_dir_all(&target).map_err(|e| format!("cannot create {dir}/: {e}"))?;
    let name = path.file_name().unwrap_or_default();
    std::fs::rename(path, target.join(name))
        .map_err(|e| format!("cannot move it to {dir}/: {e}"))?;
    let json = path.with_extension("json");
    if json.exists() {
        let name = json.file_name().unwrap_or_default();
        std::fs::rename(&json, target.join(name))
            .map_err(|e| format!("cannot move its sidecar to {dir}/: {e}"))?;
    }
    for d in [&target, spool] {
        std::fs::File::open(d)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("cannot sync the spool: {e}"))?;
    }
    Ok(())
}

/// C-STORE of one file: `Ok` when the PACS answers success or a warning.
pub fn store(path: &Path, settings: &Settings) -> Result<(), SendError> {
    let refused = |reason: String| SendError::Refused {
        path: path.to_path_buf(),
        reason,
    };
    let rejected = |reason: String| SendError::Rejected {
        path: path.to_path_buf(),
        reason,
    };
    let unreachable = |reason: String| SendError::Unreachable {
        address: settings.address(),
        reason,
    };
    let obj = dicom_object::open_file(path).map_err(|e| SendError::File {
        path: path.to_path_buf(),
        reason: format!("not a readable DICOM file: {e}"),
    })?;
    let class = obj.meta().media_storage_sop_class_uid().to_string();
    let instance = obj.meta().media_storage_sop_instance_uid().to_string();
    let not_accepted = || rejected(format!("the PACS does not accept SOP class {class}"));
    let mut assoc = ClientAssociationOptions::new()
        .calling_ae_title(settings.calling_ae.as_str())
        .called_ae_title(settings.called_ae.as_str())
        .with_presentation_context(
            class.as_str(),
            vec![
                EXPLICIT_VR_LITTLE_ENDIAN.uid(),
                IMPLICIT_VR_LITTLE_ENDIAN.uid(),
            ],
        )
        .connection_timeout(settings.timeout)
        .read_timeout(settings.timeout)
        .write_timeout(settings.timeout)
        .establish((settings.host.as_str(), settings.port))
        .map_err(|e| match e {
            // The PACS answered, and takes no file of this class.
            dicom_ul::association::Error::NoAcceptedPresentationContexts { .. } => not_accepted(),
            e => unreachable(chain(&e)),
        })?;
    let Some(pc) = assoc
        .presentation_contexts()
        .iter()
        .find(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .cloned()
    else {
        let _ = assoc.abort();
        return Err(not_accepted());
    };
    let ts = if pc.transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN.uid() {
        IMPLICIT_VR_LITTLE_ENDIAN.erased()
    } else {
        EXPLICIT_VR_LITTLE_ENDIAN.erased()
    };
    let command = store_command(1, &class, &instance);
    let sent = (|| -> Result<Vec<u8>, String> {
        assoc
            .send(&Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: pc.id,
                    value_type: PDataValueType::Command,
                    is_last: true,
                    data: command,
                }],
            })
            .map_err(|e| e.to_string())?;
        let mut w = assoc.send_pdata(pc.id);
        obj.write_dataset_with_ts(&mut w, &ts)
            .map_err(|e| e.to_string())?;
        w.flush().map_err(|e| e.to_string())?;
        w.finish().map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        loop {
            match assoc.receive().map_err(|e| chain(&e))? {
                Pdu::PData { data } => {
                    for pdv in data {
                        if pdv.value_type == PDataValueType::Command {
                            response.extend_from_slice(&pdv.data);
                            if pdv.is_last {
                                return Ok(response);
                            }
                        }
                    }
                }
                other => return Err(format!("unexpected answer {other:?}")),
            }
        }
    })();
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            let _ = assoc.abort();
            return Err(unreachable(format!("transfer of {path:?} broke: {e}")));
        }
    };
    let _ = assoc.release();
    match response_status(&response) {
        Some(s) if stored(s) => Ok(()),
        Some(s) if out_of_resources(s) => Err(refused(format!(
            "C-STORE refused with status {s:#06x} ({})",
            status_meaning(s)
        ))),
        Some(s) => Err(rejected(format!(
            "C-STORE failed with status {s:#06x} ({})",
            status_meaning(s)
        ))),
        None => Err(refused("C-STORE answer without a status".into())),
    }
}

/// An error with its causes, `a: b: c`: dicom-ul's own message leaves
/// out the system's reason (refused, timed out, no route).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

/// Whether a C-STORE status means the PACS has the instance: success
/// (0000) or a warning (B000 coercion, B006 elements discarded, B007
/// data set does not match the SOP class).
pub fn stored(status: u16) -> bool {
    matches!(status, 0x0000 | 0xB000 | 0xB006 | 0xB007)
}

/// Whether a failure status says the PACS lacks the resources now
/// (A7xx, or 0213 resource limitation): a refusal it lifts by itself.
pub fn out_of_resources(status: u16) -> bool {
    status & 0xFF00 == 0xA700 || status == 0x0213
}

/// What a C-STORE failure status means (PS3.4 B.2.3, PS3.7 C), for logs.
pub fn status_meaning(status: u16) -> &'static str {
    match status {
        0x0110 => "processing failure",
        0x0117 => "invalid SOP instance",
        0x0122 => "SOP class not supported",
        0x0124 => "not authorized",
        0x0211 => "unrecognized operation",
        0x0212 => "mistyped argument",
        0x0213 => "resource limitation",
        s if s & 0xFF00 == 0xA700 => "out of resources",
        s if s & 0xFF00 == 0xA900 => "data set does not match SOP class",
        s if s & 0xF000 == 0xC000 => "cannot understand",
        _ => "failure",
    }
}

/// The command set of a C-STORE-RQ in Implicit VR Little Endian (PS3.7
/// 9.3.1.1), CommandGroupLength first.
pub fn store_command(message_id: u16, class: &str, instance: &str) -> Vec<u8> {
    fn element(out: &mut Vec<u8>, element: u16, value: &[u8]) {
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&element.to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }
    fn uid(s: &str) -> Vec<u8> {
        let mut v = s.as_bytes().to_vec();
        if v.len() % 2 == 1 {
            v.push(0);
        }
        v
    }
    let mut body = Vec::new();
    element(&mut body, 0x0002, &uid(class)); // AffectedSOPClassUID
    element(&mut body, 0x0100, &0x0001u16.to_le_bytes()); // CommandField: C-STORE-RQ
    element(&mut body, 0x0110, &message_id.to_le_bytes()); // MessageID
    element(&mut body, 0x0700, &0u16.to_le_bytes()); // Priority: medium
    element(&mut body, 0x0800, &0u16.to_le_bytes()); // CommandDataSetType: present
    element(&mut body, 0x1000, &uid(instance)); // AffectedSOPInstanceUID
    let mut out = Vec::with_capacity(body.len() + 12);
    element(&mut out, 0x0000, &(body.len() as u32).to_le_bytes()); // CommandGroupLength
    out.extend_from_slice(&body);
    out
}

/// The Status (0000,0900) of a C-STORE-RSP command set in Implicit VR
/// Little Endian; `None` when it is missing, the command is no C-STORE-RSP
/// (CommandField 8001) or the bytes are cut short.
pub fn response_status(command: &[u8]) -> Option<u16> {
    let mut rest = command;
    let (mut field, mut status) = (None, None);
    while rest.len() >= 8 {
        let group = u16::from_le_bytes([rest[0], rest[1]]);
        let elem = u16::from_le_bytes([rest[2], rest[3]]);
        let len = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        let value = rest.get(8..8 + len)?;
        if group == 0 && len == 2 {
            let v = u16::from_le_bytes([value[0], value[1]]);
            match elem {
                0x0100 => field = Some(v),
                0x0900 => status = Some(v),
                _ => {}
            }
        }
        rest = &rest[8 + len..];
    }
    status.filter(|_| field == Some(0x8001))
}

/// What the sender did over a run, for the final report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Files the PACS stored (moved to `sent/`).
    pub sent: u64,
    /// Files the PACS refused for good (moved to `failed/`).
    pub failed: u64,
}

/// The sender thread; dropping it stops it (within one network timeout).
pub struct Sender {
    stop: Arc<AtomicBool>,
    counts: Arc<std::sync::Mutex<Counts>>,
    thread: Option<JoinHandle<()>>,
}

impl Sender {
    /// Starts sending the files of `spool` to the PACS of `settings`.
    pub fn start(spool: PathBuf, settings: Settings) -> std::io::Result<Sender> {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(std::sync::Mutex::new(Counts::default()));
        let (flag, tally) = (stop.clone(), counts.clone());
        let thread = std::thread::Builder::new()
            .name("pacs-sender".into())
            .spawn(move || run(&spool, &settings, &flag, &tally))?;
        Ok(Sender {
            stop,
            counts,
            thread: Some(thread),
        })
    }

    /// Stops the thread (within one network timeout) and returns what it
    /// did.
    pub fn finish(mut self) -> Counts {
        self.stop_and_join();
        *self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// The thread: passes over the spool, `poll` apart while all goes well,
/// the backoff's delay apart while the PACS is out or files are refused.
fn run(spool: &Path, settings: &Settings, stop: &AtomicBool, counts: &std::sync::Mutex<Counts>) {
    log::info!(
        "pacs: sending {} to {} as {}",
        spool.display(),
        settings.address(),
        settings.calling_ae
    );
    let mut failures = 0u32;
    let mut outage = false;
    let mut refused_logged: HashSet<String> = HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        let pass = send_pending(spool, settings, stop);
        for p in &pass.sent {
            log::info!("pacs: stored {}", p.display());
        }
        for e in &pass.failed {
            log::error!(
                "pacs: {e}; moved with its sidecar to {}; fix: see the PACS's log for why, \
                 change the PACS (or the board's [pacs]) so that it accepts the file, then \
                 move both files back into {} to send them again",
                spool.join(FAILED_DIR).display(),
                spool.display()
            );
        }
        {
            let mut c = counts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            c.sent += pass.sent.len() as u64;
            c.failed += pass.failed.len() as u64;
        }
        match &pass.outage {
            Some(e) if !outage => {
                log::warn!(
                    "pacs: {e}; files stay in {} and are retried",
                    spool.display()
                );
                outage = true;
            }
            Some(e) => log::debug!("pacs: still out: {e}"),
            // Back only once an association was made: a file stored or
            // refused by the PACS (an empty spool proves nothing).
            None if outage
                && (!pass.sent.is_empty()
                    || pass
                        .refused
                        .iter()
                        .any(|e| matches!(e, SendError::Refused { .. }))
                    || !pass.failed.is_empty()) =>
            {
                log::info!("pacs: {} reachable again", settings.address());
                outage = false;
            }
            None => {}
        }
        for e in &pass.refused {
            if refused_logged.insert(e.to_string()) {
                log::warn!("pacs: {e}; kept in the spool and retried");
            }
        }
        let failed = pass.outage.is_some() || !pass.refused.is_empty();
        failures = if failed {
            failures.saturating_add(1)
        } else {
            0
        };
        let wait = if failed {
            settings.backoff.delay(failures)
        } else {
            settings.poll
        };
        let until = Instant::now() + wait;
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20).min(wait));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ae_titles_are_checked() {
        assert!(check_ae_title("ANY-SCP").is_ok());
        assert!(check_ae_title("A234567890123456").is_ok());
        for bad in ["", "  ", "A2345678901234567", "A\\B", "Zoë", "A\tB"] {
            assert!(check_ae_title(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_store_command_reads_back() {
        let c = store_command(7, "1.2.3", "1.2.34");
        // group length, even-padded UID
        assert_eq!(&c[..8], &[0, 0, 0, 0, 4, 0, 0, 0]);
        let len = u32::from_le_bytes([c[8], c[9], c[10], c[11]]) as usize;
        assert_eq!(len, c.len() - 12);
        assert!(c.windows(6).any(|w| w == b"1.2.3\0"));
        // an answer: CommandField 8001, Status B000, then 0000 (success)
        let mut rsp = Vec::new();
        for (e, v) in [(0x0100u16, 0x8001u16), (0x0900, 0xB000)] {
            rsp.extend_from_slice(&0u16.to_le_bytes());
            rsp.extend_from_slice(&e.to_le_bytes());
            rsp.extend_from_slice(&2u32.to_le_bytes());
            rsp.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(response_status(&rsp), Some(0xB000));
        assert!(stored(0xB000) && stored(0) && !stored(0xA700) && !stored(0xC000));
        assert_eq!(response_status(&rsp[..rsp.len() - 1]), None);
        assert_eq!(response_status(&c), None, "a request is no answer");
    }

    #[test]
    fn pending_skips_parts_and_moves_orphan_sidecars() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("1.dcm"), b"x").unwrap();
        std::fs::write(d.join("1.json"), b"{}").unwrap();
        std::fs::write(d.join("2.dcm.part"), b"x").unwrap();
        std::fs::write(d.join("3.json"), b"{}").unwrap(); // being written
        std::fs::create_dir_all(d.join(SENT_DIR)).unwrap();
        std::fs::write(d.join(SENT_DIR).join("4.dcm"), b"x").unwrap();
        std::fs::write(d.join("4.json"), b"{}").unwrap(); // crash between renames
        std::fs::create_dir_all(d.join(FAILED_DIR)).unwrap();
        std::fs::write(d.join(FAILED_DIR).join("5.dcm"), b"x").unwrap();
        std::fs::write(d.join("5.json"), b"{}").unwrap(); // the same, into failed/
        assert_eq!(pending(d).unwrap(), vec![d.join("1.dcm")]);
        assert!(d.join("3.json").exists());
        assert!(d.join(SENT_DIR).join("4.json").exists() && !d.join("4.json").exists());
        assert!(d.join(FAILED_DIR).join("5.json").exists() && !d.join("5.json").exists());
        assert!(pending(&d.join("missing")).unwrap().is_empty());
    }

    /// A small snapshot with its sidecar in `spool`; the file's path.
    fn spooled(spool: &Path) -> PathBuf {
        let inst = crate::dicom::snapshot(
            &crate::dicom::Header {
                modality: crate::dicom::Modality::Ultrasound,
                patient: crate::dicom::Patient::new("P", "A^B").unwrap(),
                study: crate::dicom::Study::new("S", "A").unwrap(),
                model: crate::dicom::ModelTag::default(),
                calibration: crate::measure::Calibration::default(),
                region: crate::frame::Rect::full(16, 16),
                instance_number: 1,
                sop_instance_uid: crate::dicom::new_uid().unwrap(),
            },
            &crate::frame::Frame::new(16, 16),
        )
        .unwrap();
        crate::dicom::spool(spool, &inst, &serde_json::json!({})).unwrap()
    }

    fn loopback(port: u16) -> Settings {
        Settings {
            host: "127.0.0.1".into(),
            port,
            called_ae: "ANY-SCP".into(),
            calling_ae: "LGMS-EDGE".into(),
            backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(20)),
            poll: Duration::from_millis(10),
            timeout: Duration::from_secs(2),
        }
    }

    /// A storage SCP on a loopback port that takes one association and
    /// answers its C-STORE with `status`: the statuses no tool at hand
    /// sends on demand.
    fn scripted_scp(status: u16) -> (u16, std::thread::JoinHandle<()>) {
        use dicom_ul::association::server::ServerAssociationOptions;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let thread = std::thread::spawn(move || {
            let (socket, _) = listener.accept().unwrap();
            let mut assoc = ServerAssociationOptions::new()
                .accept_any()
                .promiscuous(true)
                .establish(socket)
                .unwrap();
            // C-STORE-RSP: CommandField 8001 and the status, what
            // `response_status` reads.
            let mut rsp = Vec::new();
            for (e, v) in [(0x0100u16, 0x8001u16), (0x0900, status)] {
                rsp.extend_from_slice(&0u16.to_le_bytes());
                rsp.extend_from_slice(&e.to_le_bytes());
                rsp.extend_from_slice(&2u32.to_le_bytes());
                rsp.extend_from_slice(&v.to_le_bytes());
            }
            while let Ok(pdu) = assoc.receive() {
                match pdu {
                    Pdu::PData { data } => {
                        let Some(last) = data
                            .iter()
                            .find(|d| d.value_type == PDataValueType::Data && d.is_last)
                        else {
                            continue;
                        };
                        let pdv = PDataValue {
                            presentation_context_id: last.presentation_context_id,
                            value_type: PDataValueType::Command,
                            is_last: true,
                            data: rsp.clone(),
                        };
                        assoc.send(&Pdu::PData { data: vec![pdv] }).unwrap();
                    }
                    Pdu::ReleaseRQ => {
                        let _ = assoc.send(&Pdu::ReleaseRP);
                        break;
                    }
                    _ => break,
                }
            }
        });
        (port, thread)
    }

    #[test]
    fn a_failure_status_moves_the_file_to_failed_and_out_of_resources_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = spooled(dir.path());
        let (port, scp) = scripted_scp(0xA700);
        let pass = send_pending(dir.path(), &loopback(port), &AtomicBool::new(false));
        scp.join().unwrap();
        assert!(pass.failed.is_empty() && pass.outage.is_none(), "{pass:?}");
        assert!(
            matches!(&pass.refused[..], [SendError::Refused { reason, .. }] if reason.contains("0xa700 (out of resources)")),
            "{pass:?}"
        );
        assert!(path.exists(), "retried later");

        let (port, scp) = scripted_scp(0xC000);
        let pass = send_pending(dir.path(), &loopback(port), &AtomicBool::new(false));
        scp.join().unwrap();
        assert!(pass.refused.is_empty() && pass.outage.is_none(), "{pass:?}");
        assert!(
            matches!(&pass.failed[..], [SendError::Rejected { reason, .. }] if reason.contains("0xc000 (cannot understand)")),
            "{pass:?}"
        );
        let failed = dir.path().join(FAILED_DIR);
        let name = path.file_name().unwrap();
        assert!(failed.join(name).exists() && failed.join(name).with_extension("json").exists());
        assert!(
            pending(dir.path()).unwrap().is_empty(),
            "nothing left to send"
        );
        assert!(!path.with_extension("json").exists());
    }

    #[test]
    fn an_unreadable_file_is_refused_and_nothing_listening_is_an_outage() {
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let settings = loopback(port);
        std::fs::write(dir.path().join("bad.dcm"), b"not dicom").unwrap();
        let pass = send_pending(dir.path(), &settings, &AtomicBool::new(false));
        assert!(pass.sent.is_empty() && pass.outage.is_none());
        assert!(matches!(pass.refused[..], [SendError::File { .. }]));
        std::fs::remove_file(dir.path().join("bad.dcm")).unwrap();
        // a real file, nothing listening
        let path = spooled(dir.path());
        let pass = send_pending(dir.path(), &settings, &AtomicBool::new(false));
        assert!(matches!(pass.outage, Some(SendError::Unreachable { .. })));
        assert!(path.exists() && !dir.path().join(SENT_DIR).exists());
    }
}
