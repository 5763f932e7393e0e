//! A run of `lgms-edge` driven through its control socket, for the tests
//! that freeze, save and set the patient while the video goes on. Each
//! test crate uses a part.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Lines, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// `lgms-edge run -c CFG` from the repository root (the tests' board
/// files name the fixtures from there), logging at `rust_log`.
pub fn run_cmd(cfg: &Path, rust_log: &str) -> Command {
    let mut c = crate::common::lgms_edge();
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", rust_log)
        .args(["run", "-c"])
        .arg(cfg);
    c
}

/// A started run, killed when dropped before it was waited for: a failing
/// test leaves no endless run behind.
pub struct Run(Option<Child>);

impl Run {
    /// The process.
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("not yet waited for")
    }

    /// Waits for the run's end: its status and output.
    pub fn wait(mut self) -> std::process::Output {
        let child = self.0.take().expect("not yet waited for");
        child.wait_with_output().unwrap()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `run` (an `lgms-edge run -c CFG` command) and connects to its
/// control socket `sock` once it appears (within 5 s).
pub fn run_with_control_socket(mut run: Command, sock: &Path) -> (Run, UnixStream) {
    let child = run
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run = Run(Some(child));
    for _ in 0..100 {
        if let Ok(s) = UnixStream::connect(sock) {
            return (run, s);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = {
        let mut run = run;
        let _ = run.child().kill();
        run.wait()
    };
    panic!("the socket {sock:?} does not appear: {out:?}");
}

/// One JSON command per line, one JSON answer per line.
pub struct Control {
    stream: UnixStream,
    lines: Lines<BufReader<UnixStream>>,
}

impl Control {
    pub fn new(stream: UnixStream) -> Control {
        let lines = BufReader::new(stream.try_clone().unwrap()).lines();
        Control { stream, lines }
    }

    /// Sends `cmd` (a JSON object) and returns the answer.
    pub fn ask(&mut self, cmd: &str) -> serde_json::Value {
        self.stream
            .write_all(format!("{cmd}\n").as_bytes())
            .unwrap();
        serde_json::from_str(&self.lines.next().unwrap().unwrap()).unwrap()
    }

    /// Asks for the status until the cine holds `frames` (within 10 s:
    /// the model may still be loading).
    pub fn wait_for_cine(&mut self, frames: u64) {
        for _ in 0..200 {
            let v = self.ask(r#"{"cmd":"status"}"#);
            if v["cine_frames"].as_u64().unwrap_or(0) >= frames {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the cine does not reach {frames} frames");
    }
}

/// Ends `run` as Ctrl-C does and returns its output; the run must succeed.
pub fn stop(mut run: Run) -> std::process::Output {
    let pid = run.child().id() as i32;
    // SAFETY: `pid` is our own child, not yet waited for, so it is still
    // ours.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let out = run.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A FIFO standing in for `/dev/input/eventN`: the run opens it as it
/// opens a device and reads `struct input_event` records from it.
pub struct Keys(std::fs::File);

impl Keys {
    /// Makes the FIFO `path` (before the run starts).
    pub fn make(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "{path:?}");
    }

    /// Opens `path` for writing once the run reads it (within 10 s).
    /// Non-blocking, so a run that never opens it fails the test instead
    /// of hanging it.
    pub fn open(path: &Path) -> Keys {
        use std::os::unix::fs::OpenOptionsExt;
        for _ in 0..500 {
            match std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
            {
                Ok(f) => return Keys(f),
                // ENXIO: no reader yet.
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                Err(e) => panic!("{path:?}: {e}"),
            }
        }
        panic!("the run does not open {path:?}");
    }

    /// One key press and release, each reported, as a keyboard sends them.
    pub fn press(&mut self, code: u16) {
        use lgms_edge::control::input::{event_bytes, EV_KEY, EV_SYN};
        for value in [1, 0] {
            self.0.write_all(&event_bytes(EV_KEY, code, value)).unwrap();
            self.0.write_all(&event_bytes(EV_SYN, 0, 0)).unwrap();
        }
    }
}

/// What `run` writes to its stderr (its log), collected as it comes, so
/// that a test can wait for a line while the run goes on.
pub fn log_of(run: &mut Run) -> std::sync::Arc<std::sync::Mutex<String>> {
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let stderr = run.child().stderr.take().expect("stderr piped");
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut text = sink.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    log
}
