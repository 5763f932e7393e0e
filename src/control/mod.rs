//! The control interface: a local Unix socket that takes one JSON command
//! per line and answers each with one JSON line, for the cart's buttons,
//! foot switch daemon or a technician's shell (`socat - UNIX:PATH`).
//!
//! ```text
//! {"cmd": "freeze"}                 hold the screen (capture and inference go on)
//! {"cmd": "unfreeze"}               back to live, at once
//! {"cmd": "step", "frames": -5}     while frozen: move through the cine
//! {"cmd": "set-depth", "mm": 60}    the scanner's depth: new pixel spacing
//! {"cmd": "overlay", "on": false}   hide or show the mask and calipers
//! {"cmd": "save-snapshot"}          the picture on screen as a PNG and a DICOM file
//! {"cmd": "save-cine"}              the cine as one multi-frame DICOM file
//! {"cmd": "set-patient", "id": "P1", "name": "Doe^Jane"}   whose images (a new study)
//! {"cmd": "status"}                 what the screen is doing
//! ```
//!
//! Each answer is `{"ok": true, ...state}` or `{"ok": false, "error": "..."}`.
//! Commands reach the compositor through a channel ([`Requests`]); it
//! applies them between two frames, so a command never stalls the video.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use crate::{Error, Result};

pub mod input;

/// One command, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Hold the screen on the newest shown frame.
    Freeze,
    /// Back to live.
    Unfreeze,
    /// Move the frozen picture this many frames (negative: back in time).
    Step(i64),
    /// The scanner's depth in mm over the ROI's height.
    SetDepth(f64),
    /// Show or hide the overlay (mask, calipers).
    Overlay(bool),
    /// Save the picture on screen (frozen or live, overlay included) as a
    /// PNG in the snapshot folder, and as a DICOM file in the spool.
    SaveSnapshot,
    /// Save the cine (every frame it holds, oldest first) as one
    /// multi-frame DICOM file in the spool.
    SaveCine,
    /// The patient of the next files; a new study begins.
    SetPatient(crate::dicom::Patient),
    /// Report the state only.
    Status,
}

/// Parses one command line; the error says what is wrong and what is valid.
pub fn parse(line: &str) -> std::result::Result<Command, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
        format!("not JSON ({e}); send one object per line, e.g. {{\"cmd\": \"freeze\"}}")
    })?;
    let cmd = v.get("cmd").and_then(|c| c.as_str()).ok_or(
        "no \"cmd\"; one of freeze, unfreeze, step, set-depth, overlay, save-snapshot, save-cine, set-patient, status",
    )?;
    let number = |key: &str| v.get(key).and_then(|n| n.as_f64());
    Ok(match cmd {
        "freeze" => Command::Freeze,
        "unfreeze" => Command::Unfreeze,
        "status" => Command::Status,
        "save-snapshot" => Command::SaveSnapshot,
        "save-cine" => Command::SaveCine,
        "set-patient" => {
            let text = |key: &str| match v.get(key) {
                None => Ok(""),
                Some(s) => s.as_str().ok_or(format!("set-patient: \"{key}\" is not a string")),
            };
            let (id, name) = (text("id")?, text("name")?);
            if id.trim().is_empty() {
                return Err("set-patient needs \"id\", the patient ID (and \"name\", e.g. \"Doe^Jane\")".into());
            }
            Command::SetPatient(
                crate::dicom::Patient::new(id, name).map_err(|e| format!("set-patient: {e}"))?,
            )
        }
        "step" => {
            let n = number("frames").unwrap_or(-1.0);
            if n.fract() != 0.0 || n.abs() > 100_000.0 {
                return Err(format!(
                    "step: frames = {n} is not a whole number of frames"
                ));
            }
            Command::Step(n as i64)
        }
        "set-depth" => match number("mm") {
            Some(mm) if mm.is_finite() && mm > 0.0 && mm <= 1000.0 => Command::SetDepth(mm),
            _ => return Err("set-depth needs \"mm\", the depth in mm (0 < mm <= 1000)".into()),
        },
        "overlay" => match v.get("on").and_then(|b| b.as_bool()) {
            Some(on) => Command::Overlay(on),
            None => return Err("overlay needs \"on\": true or false".into()),
        },
        other => {
            return Err(format!(
                "unknown cmd {other:?}; one of freeze, unfreeze, step, set-depth, overlay, save-snapshot, save-cine, set-patient, status"
            ))
        }
    })
}

/// A command and where its answer goes.
#[derive(Debug)]
pub struct Request {
    /// The command.
    pub command: Command,
    /// The compositor's answer: the state after the command, or why not.
    pub reply: mpsc::SyncSender<std::result::Result<serde_json::Value, String>>,
}

/// The compositor's end of the channel.
pub type Requests = mpsc::Receiver<Request>;

/// The socket: accepts connections on its own thread, one thread per
/// client, and forwards their commands. The socket file is removed when the
/// server is dropped.
#[derive(Debug)]
pub struct Server {
    path: PathBuf,
}

impl Server {
    /// Binds `path` (an existing socket file there is replaced) and starts
    /// accepting; commands go to `tx` (the compositor's channel).
    pub fn start(path: &Path, tx: mpsc::Sender<Request>) -> Result<Server> {
        if path.exists() {
            let meta = std::fs::symlink_metadata(path)
                .map_err(|e| Error::io(format!("control socket {path:?}"), e))?;
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(Error::invalid(
                    format!("control socket {path:?}"),
                    "a file that is not a socket is there; fix: choose another control.socket path",
                ));
            }
            std::fs::remove_file(path)
                .map_err(|e| Error::io(format!("replacing control socket {path:?}"), e))?;
        }
        let listener = UnixListener::bind(path)
            .map_err(|e| Error::io(format!("binding control socket {path:?}"), e))?;
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let tx = tx.clone();
                    let _ = std::thread::Builder::new()
                        .name("control-client".into())
                        .spawn(move || serve(stream, &tx));
                }
            })
            .map_err(|e| Error::io("starting the control thread", e))?;
        log::info!("control socket at {path:?}");
        Ok(Server {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Answers one client's lines until it hangs up.
fn serve(stream: UnixStream, tx: &mpsc::Sender<Request>) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let answer = match parse(&line) {
            Err(e) => serde_json::json!({"ok": false, "error": e}),
            Ok(command) => {
                let (reply, answer) = mpsc::sync_channel(1);
                if tx.send(Request { command, reply }).is_err() {
                    serde_json::json!({"ok": false, "error": "the pipeline has stopped"})
                } else {
                    match answer.recv_timeout(Duration::from_secs(2)) {
                        Ok(Ok(mut state)) => {
                            state["ok"] = true.into();
                            state
                        }
                        Ok(Err(e)) => serde_json::json!({"ok": false, "error": e}),
                        Err(_) => {
                            serde_json::json!({"ok": false, "error": "no answer from the pipeline within 2 s"})
                        }
                    }
                }
            }
        };
        if writeln!(out, "{answer}").is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_or_say_why_not() {
        assert_eq!(parse(r#"{"cmd":"freeze"}"#), Ok(Command::Freeze));
        assert_eq!(
            parse(r#"{"cmd":"step","frames":-3}"#),
            Ok(Command::Step(-3))
        );
        assert_eq!(parse(r#"{"cmd":"step"}"#), Ok(Command::Step(-1)));
        assert_eq!(
            parse(r#"{"cmd":"set-depth","mm":45.5}"#),
            Ok(Command::SetDepth(45.5))
        );
        assert_eq!(
            parse(r#"{"cmd":"overlay","on":false}"#),
            Ok(Command::Overlay(false))
        );
        assert_eq!(parse(r#"{"cmd":"save-cine"}"#), Ok(Command::SaveCine));
        assert_eq!(
            parse(r#"{"cmd":"set-patient","id":" P-1 ","name":"Doe^Jane"}"#),
            Ok(Command::SetPatient(
                crate::dicom::Patient::new("P-1", "Doe^Jane").unwrap()
            ))
        );
        for (bad, says) in [
            ("freeze", "not JSON"),
            (r#"{"cmd":"explode"}"#, "unknown cmd"),
            (r#"{"cmd":"set-depth","mm":-2}"#, "set-depth"),
            (r#"{"cmd":"step","frames":1.5}"#, "whole number"),
            (r#"{"cmd":"overlay"}"#, "\"on\""),
            (r#"{"x":1}"#, "no \"cmd\""),
            (r#"{"cmd":"set-patient","name":"Doe"}"#, "needs \"id\""),
            (r#"{"cmd":"set-patient","id":7}"#, "not a string"),
            (r#"{"cmd":"set-patient","id":"a\\b"}"#, "patient_id"),
            (
                r#"{"cmd":"set-patient","id":"P","name":"Ünal"}"#,
                "patient_name",
            ),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn the_socket_forwards_commands_and_answers_each_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let (tx, rx) = mpsc::channel();
        let server = Server::start(&path, tx).unwrap();
        // A stand-in compositor: answers with the command it got.
        std::thread::spawn(move || {
            for r in rx {
                let answer = match r.command {
                    Command::Step(_) => Err("not frozen".to_string()),
                    c => Ok(serde_json::json!({"got": format!("{c:?}")})),
                };
                let _ = r.reply.send(answer);
            }
        });
        let mut s = UnixStream::connect(&path).unwrap();
        s.write_all(b"{\"cmd\":\"freeze\"}\n{\"cmd\":\"step\"}\nnonsense\n")
            .unwrap();
        let mut lines = BufReader::new(s.try_clone().unwrap()).lines();
        let mut next = || -> serde_json::Value {
            serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap()
        };
        let a = next();
        assert_eq!(
            (a["ok"].as_bool(), a["got"].as_str()),
            (Some(true), Some("Freeze"))
        );
        let b = next();
        assert_eq!(
            (b["ok"].as_bool(), b["error"].as_str()),
            (Some(false), Some("not frozen"))
        );
        let c = next();
        assert!(c["error"].as_str().unwrap().contains("not JSON"), "{c}");
        drop(server);
        assert!(!path.exists(), "the socket file is removed");
    }
}
