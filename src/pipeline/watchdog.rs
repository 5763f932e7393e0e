//! systemd integration for kiosk boards: readiness, the watchdog that
//! proves frames are still flowing, and real-time priority where allowed.
//!
//! The unit (`deploy/lgms-edge.service`) sets `Type=notify` and
//! `WatchdogSec=`. The pipeline calls [`Watchdog::ready`] once the first
//! frame is shown and [`Watchdog::frame_shown`] for every frame after: the
//! ping is tied to frames, not to a timer thread, so a stalled camera or a
//! wedged display stops the pings and systemd restarts the service.
//! Outside systemd (no `NOTIFY_SOCKET`) every call is a no-op.
//!
//! The notify protocol is one datagram per message on a Unix socket; std
//! has what it needs, so no libsystemd binding.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// Pings systemd's watchdog while frames flow.
#[derive(Debug)]
pub struct Watchdog {
    socket: Option<(UnixDatagram, String)>,
    /// Ping at most this often (half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3) advises).
    every: Option<Duration>,
    last: Option<Instant>,
}

impl Watchdog {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` from the environment.
    pub fn from_env() -> Self {
        let path = std::env::var("NOTIFY_SOCKET").ok();
        let usec = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok());
        Self::new(path.as_deref(), usec)
    }

    /// A watchdog that talks to `socket` (a path, or `@name` for an abstract
    /// socket) and pings every `watchdog_usec / 2` microseconds.
    pub fn new(socket: Option<&str>, watchdog_usec: Option<u64>) -> Self {
        let socket = socket.and_then(|p| match UnixDatagram::unbound() {
            Ok(s) => Some((s, p.to_string())),
            Err(e) => {
                log::warn!("systemd notify socket {p:?}: cannot create a datagram socket ({e}); no readiness or watchdog pings");
                None
            }
        });
        let every = watchdog_usec
            .filter(|&u| u > 0)
            .map(|u| Duration::from_micros(u / 2));
        Watchdog {
            socket,
            every,
            last: None,
        }
    }

    /// True when running under systemd with a notify socket.
    pub fn active(&self) -> bool {
        self.socket.is_some()
    }

    /// Tells systemd the service is up (`READY=1`) and pings once.
    pub fn ready(&mut self) {
        self.send("READY=1\nSTATUS=showing frames");
        self.ping(Instant::now());
    }

    /// Called for every frame shown; pings when the last ping is older than
    /// half the watchdog period. Cheap when there is nothing to send.
    pub fn frame_shown(&mut self) {
        let Some(every) = self.every else { return };
        let now = Instant::now();
        if self.last.is_none_or(|t| now.duration_since(t) >= every) {
            self.ping(now);
        }
    }

    /// Tells systemd the service is stopping on purpose.
    pub fn stopping(&mut self) {
        self.send("STOPPING=1");
    }

    fn ping(&mut self, now: Instant) {
        if self.every.is_some() {
            self.send("WATCHDOG=1");
            self.last = Some(now);
        }
    }

    fn send(&self, msg: &str) {
        let Some((sock, path)) = &self.socket else {
            return;
        };
        let sent = if let Some(name) = path.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .and_then(|addr| sock.send_to_addr(msg.as_bytes(), &addr))
        } else {
            sock.send_to(msg.as_bytes(), path)
        };
        if let Err(e) = sent {
            log::warn!("systemd notify socket {path:?}: sending {msg:?} failed: {e}");
        }
    }
}

/// Raises the calling thread to `SCHED_FIFO` at `priority` (1..=99).
/// Returns false, with a log line, where that is not permitted (no
/// `CAP_SYS_NICE` and no `LimitRTPRIO=` in the unit): the thread then keeps
/// running at normal priority, which is slower to react but correct.
pub fn try_realtime(priority: i32) -> bool {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: sched_setscheduler reads `param` only; pid 0 is this thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        log::info!("thread runs SCHED_FIFO priority {priority}");
        true
    } else {
        let e = std::io::Error::last_os_error();
        log::info!("real-time priority {priority} not permitted ({e}); fix on a cart: LimitRTPRIO={priority} in the unit");
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv_all(s: &UnixDatagram) -> Vec<String> {
        s.set_nonblocking(true).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = s.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    #[test]
    fn pings_only_when_frames_flow_and_period_elapsed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        // 40 ms watchdog: ping at most every 20 ms.
        let mut w = Watchdog::new(path.to_str(), Some(40_000));
        assert!(w.active());
        w.ready();
        assert_eq!(
            recv_all(&server),
            ["READY=1\nSTATUS=showing frames", "WATCHDOG=1"]
        );
        w.frame_shown(); // too soon after the last ping
        assert!(recv_all(&server).is_empty());
        std::thread::sleep(Duration::from_millis(25));
        // No frame: no ping, however long it has been.
        assert!(recv_all(&server).is_empty());
        w.frame_shown();
        assert_eq!(recv_all(&server), ["WATCHDOG=1"]);
        w.stopping();
        assert_eq!(recv_all(&server), ["STOPPING=1"]);
    }

    #[test]
    fn abstract_socket_names_work() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("lgms-edge-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let mut w = Watchdog::new(Some(&format!("@{name}")), None);
        w.ready();
        // No WATCHDOG_USEC: readiness only.
        assert_eq!(recv_all(&server), ["READY=1\nSTATUS=showing frames"]);
    }

    #[test]
    fn without_systemd_it_does_nothing() {
        let mut w = Watchdog::new(None, Some(1000));
        assert!(!w.active());
        w.ready();
        w.frame_shown();
    }
}
