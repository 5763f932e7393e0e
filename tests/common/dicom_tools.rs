//! What the DICOM and PACS tests share: the outside tools they drive
//! (dcmtk's `storescp` and `findscu`, dicom3tools' `dciodvfy`, Orthanc),
//! free loopback ports and bounded waits. Each test crate uses a part.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `tool` cannot be started; then says SKIPPED and which Debian
/// package to install (CI installs them all).
pub fn missing(tool: &str, package: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!("SKIPPED: {tool} is not installed (apt-get install {package})");
    }
    !found
}

/// A port nothing listens on (just now).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Polls `done` every 20 ms; panics naming `what` after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "no {what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether something accepts connections on the loopback `port`.
pub fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// dciodvfy's report on `file` when it holds an "Error" line.
pub fn dciodvfy_errors(file: &Path) -> Option<String> {
    let out = Command::new("dciodvfy").arg(file).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    // Shown with --nocapture: the warnings too.
    eprintln!("{file:?}:\n{text}");
    text.lines()
        .any(|l| l.starts_with("Error"))
        .then(|| format!("{file:?}:\n{text}"))
}

/// storescp as AE `ANY-SCP` on `port`, writing what it receives to `out`;
/// `extra` arguments go first. Killed on drop.
pub struct Scp(Child);

impl Scp {
    pub fn start(port: u16, out: &Path) -> Scp {
        Scp::start_with(port, out, &[])
    }

    pub fn start_with(port: u16, out: &Path, extra: &[&str]) -> Scp {
        std::fs::create_dir_all(out).unwrap();
        let child = Command::new("storescp")
            .args(extra)
            .args(["-aet", "ANY-SCP", "-od"])
            .arg(out)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let scp = Scp(child);
        wait_for(Duration::from_secs(10), "storescp listening", || {
            listening(port)
        });
        scp
    }
}

impl Drop for Scp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The files in `dir` whose name holds `uid`.
pub fn files_named(dir: &Path, uid: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(uid))
        .collect()
}
