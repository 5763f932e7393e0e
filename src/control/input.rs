//! Keys and foot switches: Linux input events (`/dev/input/event*`) mapped
//! to control commands by the board file, so a cart's buttons work without
//! any client on the socket.
//!
//! ```toml
//! [control]
//! input = ["/dev/input/by-id/usb-foot-switch-event-kbd"]
//! keys = { KEY_F1 = "freeze", KEY_F2 = "unfreeze", KEY_LEFT = "step-back", KEY_RIGHT = "step-forward", "30" = "overlay-toggle" }
//! ```
//!
//! A key is a name from the table below or its number in
//! `linux/input-event-codes.h`; a key press (not its release or repeat)
//! sends the command. A device that is missing or unplugged is opened again
//! every two seconds, so a foot switch can be plugged in at any time.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use super::{Command, Request};

/// The commands a key can send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyAction {
    /// Freeze.
    Freeze,
    /// Unfreeze.
    Unfreeze,
    /// Freeze when live, unfreeze when frozen.
    FreezeToggle,
    /// One frame back in the cine.
    StepBack,
    /// One frame forward.
    StepForward,
    /// Overlay off when on, on when off.
    OverlayToggle,
    /// The picture on screen as a PNG and a DICOM file.
    SaveSnapshot,
    /// The cine as a multi-frame DICOM file.
    SaveCine,
}

impl KeyAction {
    /// Parses a board file's action name.
    pub fn parse(name: &str) -> Option<KeyAction> {
        Some(match name {
            "freeze" => KeyAction::Freeze,
            "unfreeze" => KeyAction::Unfreeze,
            "freeze-toggle" => KeyAction::FreezeToggle,
            "step-back" => KeyAction::StepBack,
            "step-forward" => KeyAction::StepForward,
            "overlay-toggle" => KeyAction::OverlayToggle,
            "save-snapshot" => KeyAction::SaveSnapshot,
            "save-cine" => KeyAction::SaveCine,
            _ => return None,
        })
    }

    /// The valid names, for error messages.
    pub const NAMES: &'static str =
        "freeze, unfreeze, freeze-toggle, step-back, step-forward, overlay-toggle, save-snapshot, save-cine";
}

/// Key names accepted besides numbers: what carts' keypads and foot
/// switches send.
const KEY_NAMES: [(&str, u16); 22] = [
    ("KEY_ESC", 1),
    ("KEY_ENTER", 28),
    ("KEY_SPACE", 57),
    ("KEY_A", 30),
    ("KEY_B", 48),
    ("KEY_C", 46),
    ("KEY_F1", 59),
    ("KEY_F2", 60),
    ("KEY_F3", 61),
    ("KEY_F4", 62),
    ("KEY_F5", 63),
    ("KEY_F6", 64),
    ("KEY_UP", 103),
    ("KEY_LEFT", 105),
    ("KEY_RIGHT", 106),
    ("KEY_DOWN", 108),
    ("KEY_PAGEUP", 104),
    ("KEY_PAGEDOWN", 109),
    ("BTN_0", 256),
    ("BTN_1", 257),
    ("BTN_2", 258),
    ("BTN_LEFT", 272),
];

/// A key's code from its name or number.
pub fn key_code(name: &str) -> Option<u16> {
    KEY_NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, c)| c)
        .or_else(|| name.parse().ok())
}

/// The board file's `keys` table, checked: code -> action. The error names
/// the key or action at fault.
pub fn key_map(keys: &BTreeMap<String, String>) -> Result<Vec<(u16, KeyAction)>, String> {
    keys.iter()
        .map(|(k, a)| {
            let code = key_code(k).ok_or_else(|| {
                format!("control.keys: key {k:?} is neither a known name (KEY_F1, KEY_LEFT, BTN_0, ...) nor a number")
            })?;
            let action = KeyAction::parse(a).ok_or_else(|| {
                format!("control.keys: {k} = {a:?}; fix: one of {}", KeyAction::NAMES)
            })?;
            Ok((code, action))
        })
        .collect()
}

/// Size of `struct input_event` on 64-bit Linux (x86_64, aarch64).
pub const EVENT_SIZE: usize = 24;
/// `EV_SYN`, the end of one report.
pub const EV_SYN: u16 = 0;
/// `EV_KEY`, a key or button.
pub const EV_KEY: u16 = 1;

/// One `struct input_event` as the kernel lays it out (the time, which
/// this reader ignores, left zero): what a uinput device is written and
/// what [`forward_keys`] reads.
pub fn event_bytes(kind: u16, code: u16, value: i32) -> [u8; EVENT_SIZE] {
    let mut e = [0u8; EVENT_SIZE];
    e[16..18].copy_from_slice(&kind.to_ne_bytes());
    e[18..20].copy_from_slice(&code.to_ne_bytes());
    e[20..24].copy_from_slice(&value.to_ne_bytes());
    e
}

/// Reads input events from `dev` until it ends, sending the mapped
/// command of each key press. Returns the number of commands sent.
pub fn forward_keys(
    mut dev: impl Read,
    map: &[(u16, KeyAction)],
    tx: &mpsc::Sender<Request>,
) -> usize {
    let mut buf = [0u8; EVENT_SIZE];
    let mut sent = 0;
    // What a toggle toggles: the last state this reader asked for.
    let (mut frozen, mut overlay_on) = (false, true);
    while dev.read_exact(&mut buf).is_ok() {
        let kind = u16::from_ne_bytes([buf[16], buf[17]]);
        let code = u16::from_ne_bytes([buf[18], buf[19]]);
        let value = i32::from_ne_bytes([buf[20], buf[21], buf[22], buf[23]]);
        if kind != EV_KEY || value != 1 {
            continue;
        }
        let Some(&(_, action)) = map.iter().find(|(c, _)| *c == code) else {
            continue;
        };
        let command = match action {
            KeyAction::Freeze => Command::Freeze,
            KeyAction::Unfreeze => Command::Unfreeze,
            KeyAction::FreezeToggle if frozen => Command::Unfreeze,
            KeyAction::FreezeToggle => Command::Freeze,
            KeyAction::StepBack => Command::Step(-1),
            KeyAction::StepForward => Command::Step(1),
            KeyAction::OverlayToggle => Command::Overlay(!overlay_on),
            KeyAction::SaveSnapshot => Command::SaveSnapshot,
            KeyAction::SaveCine => Command::SaveCine,
        };
        match command {
            Command::Freeze => frozen = true,
            Command::Unfreeze => frozen = false,
            Command::Overlay(on) => overlay_on = on,
            _ => {}
        }
        let (reply, answer) = mpsc::sync_channel(1);
        if tx.send(Request { command, reply }).is_err() {
            break;
        }
        sent += 1;
        if let Ok(Err(e)) = answer.recv_timeout(Duration::from_secs(2)) {
            log::warn!("key {code}: {e}");
        }
    }
    sent
}

/// Starts one thread per device that forwards its key presses, reopening
/// a missing or unplugged device every two seconds.
pub fn start(devices: &[PathBuf], map: Vec<(u16, KeyAction)>, tx: mpsc::Sender<Request>) {
    for path in devices {
        let (dev, map, tx) = (path.clone(), map.clone(), tx.clone());
        let spawned = std::thread::Builder::new()
            .name("control-input".into())
            .spawn(move || {
                let mut warned = false;
                loop {
                    match std::fs::File::open(&dev) {
                        Ok(f) => {
                            log::info!("control keys from {dev:?}");
                            warned = false;
                            forward_keys(f, &map, &tx);
                            log::warn!("input device {dev:?} went away; waiting for it");
                        }
                        Err(e) if !warned => {
                            log::warn!("input device {dev:?}: {e}; waiting for it");
                            warned = true;
                        }
                        Err(_) => {}
                    }
                    std::thread::sleep(Duration::from_secs(2));
                }
            });
        if let Err(e) = spawned {
            log::error!("cannot start the input thread for {path:?}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_presses_become_commands() {
        let keys: BTreeMap<String, String> = [
            ("KEY_F1", "freeze-toggle"),
            ("KEY_LEFT", "step-back"),
            ("30", "overlay-toggle"),
            ("KEY_F2", "save-cine"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let map = key_map(&keys).unwrap();
        let mut bytes = Vec::new();
        for e in [
            event_bytes(EV_KEY, 59, 1), // F1 down: freeze
            event_bytes(EV_KEY, 59, 0), // release: nothing
            event_bytes(4, 4, 59),      // a scan-code event: nothing
            event_bytes(EV_KEY, 105, 1),
            event_bytes(EV_KEY, 105, 2), // auto-repeat: nothing
            event_bytes(EV_KEY, 30, 1),
            event_bytes(EV_KEY, 59, 1), // F1 again: unfreeze
            event_bytes(EV_KEY, 99, 1), // not mapped
            event_bytes(EV_KEY, 60, 1), // F2: save the cine
        ] {
            bytes.extend(e);
        }
        let (tx, rx) = mpsc::channel::<Request>();
        let seen = std::thread::spawn(move || {
            let mut got = Vec::new();
            for r in rx {
                got.push(r.command);
                let _ = r.reply.send(Ok(serde_json::json!({})));
            }
            got
        });
        assert_eq!(forward_keys(&bytes[..], &map, &tx), 5);
        drop(tx);
        assert_eq!(
            seen.join().unwrap(),
            [
                Command::Freeze,
                Command::Step(-1),
                Command::Overlay(false),
                Command::Unfreeze,
                Command::SaveCine
            ]
        );
    }

    #[test]
    fn bad_keys_and_actions_are_named() {
        let one = |k: &str, a: &str| {
            key_map(&[(k.to_string(), a.to_string())].into_iter().collect()).unwrap_err()
        };
        assert!(one("KEY_NOPE", "freeze").contains("KEY_NOPE"));
        assert!(one("KEY_F1", "explode").contains("step-back"));
        assert_eq!(key_code("btn_0"), Some(256));
        assert_eq!(key_code("42"), Some(42));
    }
}
