//! Checks of the capture and display paths against real kernel drivers,
//! run inside the test VM (`tests/vm/run.sh`): vivid for V4L2, vfb for the
//! framebuffer, bochs for DRM/KMS.
//!
//! Each check prints one line `VMCHECK <name> PASS|FAIL <detail>` and the
//! exit status is the number of failures. Frame counts are small: the VM
//! runs under software emulation.
//!
//! Usage: `vm_check capture FORMAT | drops | fb BPP | drm | reconnect |
//! bars-in Y4M | keys`

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;

use lgms_edge::config::{CaptureConfig, OverlayConfig};
use lgms_edge::frame::{Frame, Mask, Rect};
use lgms_edge::overlay::{HudInfo, Overlay, OverlayState, OverlayStyle, RgbTarget};
use lgms_edge::sink::display::panel::{letterbox, PanelFormat};
use lgms_edge::sink::record::Y4mRecorder;
use lgms_edge::sink::Sink;
use lgms_edge::source::pixfmt::PixelFormat;
use lgms_edge::source::reconnect::Reconnecting;
use lgms_edge::source::replay::{Pace, ReplayOptions, Y4mReplay};
use lgms_edge::source::v4l2::V4l2Source;
use lgms_edge::source::FrameSource;

type Check = Result<String, String>;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.join(" ");
    let result = match args.first().map(String::as_str) {
        Some("capture") => capture(args.get(1).map_or("yuyv", |s| s.as_str())),
        Some("drops") => drops(),
        Some("fb") => fb(args.get(1).and_then(|s| s.parse().ok()).unwrap_or(32)),
        Some("drm") => drm(),
        Some("reconnect") => reconnect(),
        Some("bars-in") => bars_in(args.get(1).map_or("/tmp/shown.y4m", |s| s.as_str())),
        Some("keys") => keys(),
        _ => Err(
            "usage: vm_check capture FMT | drops | fb BPP | drm | reconnect | bars-in Y4M | keys"
                .into(),
        ),
    };
    match result {
        Ok(detail) => println!("VMCHECK {name} PASS {detail}"),
        Err(detail) => {
            println!("VMCHECK {name} FAIL {detail}");
            std::process::exit(1);
        }
    }
}

fn cap_config(format: &str) -> CaptureConfig {
    CaptureConfig {
        format: PixelFormat::parse(format).expect("vm_check names known formats"),
        width: 640,
        height: 360,
        fps: 15.0,
        buffers: 3,
        timeout_ms: 3000,
        ..CaptureConfig::default()
    }
}

/// vivid's default test pattern is the 75% colour bar: white, yellow,
/// cyan, green, magenta, red, blue, black, left to right. Returns which
/// channels are lit in the middle of each bar, as "RGB" letters.
fn bar_signature(f: &Frame) -> Vec<String> {
    bar_signature_at(f, f.height - 8) // below vivid's text lines at the top
}

fn bar_signature_at(f: &Frame, y: u32) -> Vec<String> {
    (0..8)
        .map(|i| {
            let x = f.width * (2 * i + 1) / 16;
            let [r, g, b] = f.pixel(x, y);
            let on = |v: u8, c: char| {
                if v > 120 {
                    c.to_string()
                } else if v < 60 {
                    String::new()
                } else {
                    "?".into()
                }
            };
            format!("{}{}{}", on(r, 'R'), on(g, 'G'), on(b, 'B'))
        })
        .collect()
}

const BARS: [&str; 8] = ["RGB", "RG", "GB", "G", "RB", "R", "B", ""];

fn check_bars(f: &Frame, grey: bool) -> Result<(), String> {
    if grey {
        // Luma falls bar by bar in this order.
        let y = f.height - 8;
        let l: Vec<u8> = (0..8)
            .map(|i| f.pixel(f.width * (2 * i + 1) / 16, y)[0])
            .collect();
        if l.windows(2).all(|w| w[0] > w[1]) && l[0] > 150 && l[7] < 40 {
            return Ok(());
        }
        return Err(format!("grey bars not falling: {l:?}"));
    }
    let sig = bar_signature(f);
    if sig == BARS {
        Ok(())
    } else {
        let rows: Vec<String> = (1..8)
            .map(|k| {
                format!(
                    "y={}: {:?}",
                    f.height * k / 8,
                    bar_signature_at(f, f.height * k / 8)
                )
            })
            .collect();
        Err(format!("bars {sig:?}, expected {BARS:?}; rows {rows:?}"))
    }
}

fn capture(format: &str) -> Check {
    let cfg = cap_config(format);
    let mut src = V4l2Source::open(Path::new("/dev/video0"), &cfg).map_err(|e| e.to_string())?;
    let rec_path = format!("/tmp/in-{format}.y4m");
    let rec = Y4mRecorder::create(&rec_path, 15.0, 64 << 20).map_err(|e| e.to_string())?;
    src.record_into(std::sync::Arc::new(std::sync::Mutex::new(rec)));
    let mut f = Frame::new(1, 1);
    let mut frames = Vec::new();
    for _ in 0..4 {
        if !src.next_frame(&mut f).map_err(|e| e.to_string())? {
            return Err("stream ended".into());
        }
        let age = f.captured.elapsed();
        if age > Duration::from_secs(2) {
            return Err(format!("frame {} is {age:?} old", f.id));
        }
        frames.push(f.clone());
    }
    if (f.width, f.height) != (640, 360) {
        return Err(format!("size {}x{}", f.width, f.height));
    }
    check_bars(&f, format == "grey")?;
    let ids: Vec<u64> = frames.iter().map(|f| f.id).collect();
    if ids != [0, 1, 2, 3] {
        return Err(format!("ids {ids:?}"));
    }
    let stats = src.stats();
    drop(src);
    // The input recording replays to the frames that were captured.
    let opts = ReplayOptions::new(Pace::Fast, 15.0);
    let mut rep = Y4mReplay::open(Path::new(&rec_path), opts).map_err(|e| e.to_string())?;
    let mut r = Frame::new(1, 1);
    let mut n = 0;
    let mut worst = 0u8;
    while rep.next_frame(&mut r).map_err(|e| e.to_string())? {
        worst = worst.max(
            r.rgb
                .iter()
                .zip(&frames[n].rgb)
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap_or(0),
        );
        n += 1;
    }
    if n != 4 || worst > 2 {
        return Err(format!(
            "replay of {rec_path}: {n} frames, max diff {worst}"
        ));
    }
    Ok(format!(
        "640x360 {format}: bars {:?}; {stats:?}; recorded+replayed {n} frames max diff {worst}",
        bar_signature(&f)
    ))
}

/// A recording of what the CLI showed must hold vivid's bars (the overlay
/// covers the top and bottom left corners, so some row between must show
/// them all), in every one of its frames after the first few.
fn bars_in(path: &str) -> Check {
    let opts = ReplayOptions::new(Pace::Fast, 15.0);
    let mut rep = Y4mReplay::open(Path::new(path), opts).map_err(|e| e.to_string())?;
    let mut f = Frame::new(1, 1);
    let (mut n, mut with_bars) = (0, 0);
    while rep.next_frame(&mut f).map_err(|e| e.to_string())? {
        n += 1;
        if (f.height / 2..f.height).any(|y| bar_signature_at(&f, y) == BARS) {
            with_bars += 1;
        }
    }
    if n < 10 || with_bars < n - 1 {
        return Err(format!("{path}: {with_bars} of {n} frames show the bars"));
    }
    Ok(format!(
        "{path}: {n} frames {}x{}, {with_bars} show vivid's bars",
        f.width, f.height
    ))
}

/// A slow consumer must get the newest frame, with the skipped ones counted.
fn drops() -> Check {
    let mut cfg = cap_config("yuyv");
    cfg.fps = 30.0;
    cfg.buffers = 4;
    let mut src = V4l2Source::open(Path::new("/dev/video0"), &cfg).map_err(|e| e.to_string())?;
    let mut f = Frame::new(1, 1);
    src.next_frame(&mut f).map_err(|e| e.to_string())?;
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(400));
        src.next_frame(&mut f).map_err(|e| e.to_string())?;
        // The frame handed over is fresh, not one that waited in the queue.
        let age = f.captured.elapsed();
        if age > Duration::from_millis(250) {
            return Err(format!("frame {} was {age:?} old after a stall", f.id));
        }
    }
    let s = src.stats();
    if s.stale_dropped + s.driver_dropped == 0 || s.delivered != 4 {
        return Err(format!("no drops counted after stalls: {s:?}"));
    }
    check_bars(&f, false)?;
    Ok(format!("{s:?}"))
}

/// Reads what the framebuffer shows, independently of the sink: depth,
/// line length and pan offset from sysfs, the pixels by read().
fn fb_readback(dev: &str, yres: u32) -> Result<(PanelFormat, Vec<u8>, usize), String> {
    let sys = "/sys/class/graphics/fb0";
    let read = |f: &str| {
        std::fs::read_to_string(format!("{sys}/{f}")).map_err(|e| format!("{sys}/{f}: {e}"))
    };
    let bpp: u32 = read("bits_per_pixel")?
        .trim()
        .parse()
        .map_err(|e| format!("bpp: {e}"))?;
    let stride: usize = read("stride")?
        .trim()
        .parse()
        .map_err(|e| format!("stride: {e}"))?;
    let pan = read("pan")?;
    let (_, yoff) = pan.trim().split_once(',').ok_or(format!("pan {pan:?}"))?;
    let yoff: usize = yoff.parse().map_err(|_| format!("pan {pan:?}"))?;
    let fmt = channel_layout(dev, bpp)?;
    let all = std::fs::read(dev).map_err(|e| format!("reading {dev}: {e}"))?;
    let start = yoff * stride;
    let page = all
        .get(start..start + stride * yres as usize)
        .ok_or(format!(
            "{dev}: {} bytes, page at {start} missing",
            all.len()
        ))?
        .to_vec();
    Ok((fmt, page, stride))
}

/// The channel layout the driver reports (FBIOGET_VSCREENINFO), read here
/// with a plain ioctl rather than through the sink.
fn channel_layout(dev: &str, bpp: u32) -> Result<PanelFormat, String> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(dev).map_err(|e| e.to_string())?;
    let mut var = [0u32; 40]; // struct fb_var_screeninfo, 160 bytes
                              // SAFETY: FBIOGET_VSCREENINFO writes 160 bytes into the buffer.
    if unsafe { libc::ioctl(f.as_raw_fd(), 0x4600, var.as_mut_ptr()) } != 0 {
        return Err(format!(
            "FBIOGET_VSCREENINFO: {}",
            std::io::Error::last_os_error()
        ));
    }
    if var[6] != bpp {
        return Err(format!("ioctl says {} bpp, sysfs {bpp}", var[6]));
    }
    let ch = |i: usize| lgms_edge::sink::display::panel::Channel {
        offset: var[i],
        length: var[i + 1],
    };
    PanelFormat::new(bpp, ch(8), ch(11), ch(14)).map_err(|e| e.to_string())
}

/// A test frame: a grey ramp composited by the runtime's overlay (a live
/// mask over a box, its outline, the HUD and the label). Returns the
/// frame, the ramp it was drawn on, and the mask's box.
fn overlay_frame(w: u32, h: u32) -> (Frame, Frame, Rectangle) {
    let mut f = Frame::new(w, h);
    for (i, px) in f.rgb.chunks_exact_mut(3).enumerate() {
        let x = (i as u32 % w) * 100 / w;
        px.copy_from_slice(&[x as u8 + 50, x as u8 + 50, x as u8 + 50]);
    }
    let plain = f.clone();
    let roi = Rect {
        x: 120,
        y: 60,
        w: 80,
        h: 60,
    };
    let mut mask = Mask::new(roi);
    mask.data.fill(1);
    mask.captured = Instant::now();
    let style = OverlayStyle::from_config(&OverlayConfig::default(), Duration::from_secs(60));
    let mut overlay = Overlay::new(style);
    let hud = HudInfo {
        fps: 15.0,
        latency_ms: Some(42.0),
        model: "lgmsnet",
        precision: "fp32",
        now: Instant::now(),
        model_failed: false,
    };
    let mut t = RgbTarget::for_frame(&mut f).expect("frame buffer matches its size");
    let state = overlay.draw(&mut t, Some(&mask), &hud);
    assert!(matches!(state, Ok(OverlayState::Live { .. })), "{state:?}");
    let boxr = Rectangle::new(
        Point::new(roi.x as i32, roi.y as i32),
        Size::new(roi.w, roi.h),
    );
    (f, plain, boxr)
}

/// Where the centre of `boxr` (frame coordinates) lands on the panel.
fn box_centre(frame: &Frame, boxr: &Rectangle, area: &Rect) -> (u32, u32) {
    let c = boxr.center();
    (
        area.x + (c.x as u32 * area.w).div_ceil(frame.width),
        area.y + (c.y as u32 * area.h).div_ceil(frame.height),
    )
}

/// The mask's centre on the panel must show the overlay's blended fill,
/// not the plain ramp under it.
fn check_mask_pixel(
    frame: &Frame,
    plain: &Frame,
    boxr: &Rectangle,
    area: &Rect,
    get: &dyn Fn(u32, u32) -> [u8; 3],
    tol: u8,
) -> Result<String, String> {
    let (px, py) = box_centre(frame, boxr, area);
    let c = boxr.center();
    let want = frame.pixel(c.x as u32, c.y as u32);
    let under = plain.pixel(c.x as u32, c.y as u32);
    let got = get(px, py);
    let near = |a: [u8; 3], b: [u8; 3]| a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= tol);
    if want == under || !near(got, want) {
        return Err(format!(
            "mask centre at panel ({px},{py}) is {got:?}, overlay drew {want:?} over {under:?}"
        ));
    }
    Ok(format!(
        "mask centre panel ({px},{py}) = {got:?} (ramp {under:?})"
    ))
}

/// Checks a shown panel image against the frame: every panel pixel in
/// the letterbox area must be the frame's pixel it maps to (within the
/// format's precision), the bars black.
fn compare(
    frame: &Frame,
    pw: u32,
    ph: u32,
    get: &dyn Fn(u32, u32) -> [u8; 3],
    tol: u8,
) -> Result<String, String> {
    let area = letterbox(frame.width, frame.height, pw, ph);
    let mut bad = 0;
    let mut first = String::new();
    for y in (0..ph).step_by(3) {
        for x in (0..pw).step_by(3) {
            let inside = x >= area.x && x < area.x + area.w && y >= area.y && y < area.y + area.h;
            let want = if inside {
                let sx =
                    (u64::from(x - area.x) * u64::from(frame.width) / u64::from(area.w)) as u32;
                let sy =
                    (u64::from(y - area.y) * u64::from(frame.height) / u64::from(area.h)) as u32;
                frame.pixel(sx, sy)
            } else {
                [0, 0, 0]
            };
            let got = get(x, y);
            if got.iter().zip(want).any(|(a, b)| a.abs_diff(b) > tol) {
                if bad == 0 {
                    first = format!("({x},{y}) got {got:?} want {want:?}");
                }
                bad += 1;
            }
        }
    }
    if bad > 0 {
        return Err(format!("{bad} wrong pixels, first {first}"));
    }
    Ok(format!("box {}x{}+{}+{}", area.w, area.h, area.x, area.y))
}

fn fb(bpp: u32) -> Check {
    let dev = "/dev/fb0";
    // bpp 8: vfb's palette default, which the sink must switch itself.
    lgms_edge::sink::display::fbdev::set_depth(Path::new(dev), bpp).map_err(|e| e.to_string())?;
    let mut sink =
        lgms_edge::sink::display::fbdev::FbSink::open(Path::new(dev)).map_err(|e| e.to_string())?;
    let (w, h, fmt) = sink.geometry();
    // 320x200 on 640x480: scaled 2x with 40-line bars above and below.
    let (frame, plain, boxr) = overlay_frame(320, 200);
    sink.write(&plain).map_err(|e| e.to_string())?;
    sink.write(&frame).map_err(|e| e.to_string())?;
    let (rfmt, page, stride) = fb_readback(dev, h)?;
    if rfmt != fmt {
        return Err(format!(
            "sysfs says {}, the sink {}",
            rfmt.describe(),
            fmt.describe()
        ));
    }
    let get = |x: u32, y: u32| {
        let i = y as usize * stride + x as usize * rfmt.bytes;
        rfmt.unpack(rfmt.load(&page[i..]))
    };
    let tol = if bpp == 16 { 8 } else { 0 };
    let detail = compare(&frame, w, h, &get, tol)?;
    let area = letterbox(frame.width, frame.height, w, h);
    let m = check_mask_pixel(&frame, &plain, &boxr, &area, &get, tol)?;
    Ok(format!(
        "{w}x{h} {} {}; {detail}; {m}",
        fmt.describe(),
        if sink.double_buffered() {
            "pan double-buffered"
        } else {
            "single"
        }
    ))
}

fn drm() -> Check {
    let mut sink = lgms_edge::sink::display::drm::DrmSink::open(Path::new("/dev/dri/card0"))
        .map_err(|e| e.to_string())?;
    let (w, h, conn) = sink.geometry();
    // 4:3 on the (16:10) bochs mode: pillarboxed.
    let (frame, plain, boxr) = overlay_frame(320, 240);
    sink.write(&plain).map_err(|e| e.to_string())?;
    sink.write(&frame).map_err(|e| e.to_string())?;
    sink.finish().map_err(|e| e.to_string())?;
    // Read back what the CRTC scans out, through a second open of the card.
    let shown = readback_crtc(w, h)?;
    let get = |x: u32, y: u32| {
        let i = (y * w + x) as usize * 4;
        [shown[i + 2], shown[i + 1], shown[i]]
    };
    let detail = compare(&frame, w, h, &get, 0)?;
    let area = letterbox(frame.width, frame.height, w, h);
    let m = check_mask_pixel(&frame, &plain, &boxr, &area, &get, 0)?;
    if std::env::var("VM_HOLD").is_ok_and(|v| !v.is_empty()) {
        // Let the host take a screendump of the emulated display.
        println!("VMDRM-READY");
        std::thread::sleep(Duration::from_secs(4));
    }
    Ok(format!(
        "{conn} {w}x{h}, {} flips; {detail}; {m}",
        sink.frames()
    ))
}

/// The scanned-out framebuffer of the first active CRTC, as packed XRGB8888
/// rows of `w` pixels (GETFB gives a root client the buffer handle).
fn readback_crtc(w: u32, h: u32) -> Result<Vec<u8>, String> {
    use drm::control::Device as _;
    use std::os::fd::AsFd;
    struct Card(std::fs::File);
    impl AsFd for Card {
        fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
            self.0.as_fd()
        }
    }
    impl drm::Device for Card {}
    impl drm::control::Device for Card {}
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/dri/card0")
        .map_err(|e| e.to_string())?;
    let card = Card(file);
    let res = card.resource_handles().map_err(|e| e.to_string())?;
    for &c in res.crtcs() {
        let info = card.get_crtc(c).map_err(|e| e.to_string())?;
        let Some(fb) = info.framebuffer() else {
            continue;
        };
        let fbi = card
            .get_framebuffer(fb)
            .map_err(|e| format!("GETFB: {e}"))?;
        let handle = fbi
            .buffer()
            .ok_or("GETFB gave no buffer handle (not root?)")?;
        let pitch = fbi.pitch() as usize;
        let map = drm_ffi::mode::dumbbuffer::map(card.as_fd(), handle.into(), 0, 0)
            .map_err(|e| format!("MAP_DUMB: {e}"))?;
        // SAFETY: offset from the kernel for this buffer; read-only view
        // dropped before the function returns.
        let m = unsafe {
            memmap2::MmapOptions::new()
                .offset(map.offset)
                .len(pitch * h as usize)
                .map(&card.0)
        }
        .map_err(|e| format!("mmap: {e}"))?;
        let mut out = Vec::with_capacity((w * h * 4) as usize);
        for y in 0..h as usize {
            out.extend_from_slice(&m[y * pitch..y * pitch + w as usize * 4]);
        }
        return Ok(out);
    }
    Err("no CRTC is scanning out".into())
}

fn sh(cmd: &str) -> (bool, String) {
    match Command::new("sh").arg("-c").arg(cmd).output() {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
            .trim()
            .to_string(),
        ),
        Err(e) => (false, e.to_string()),
    }
}

/// Pulls the capture driver out from under a streaming source and puts it
/// back: the source must report the loss (errors, as the pipeline's NO
/// SIGNAL screen expects), then resume by itself.
fn reconnect() -> Check {
    let cfg = cap_config("yuyv");
    let open_cfg = cfg.clone();
    let mut src = Reconnecting::new(
        "/dev/video0",
        Box::new(move || {
            V4l2Source::open(Path::new("/dev/video0"), &open_cfg)
                .map(|s| Box::new(s) as Box<dyn FrameSource>)
        }),
        (cfg.width, cfg.height),
        cfg.fps,
    );
    let status = src.status();
    let (tx, rx) = std::sync::mpsc::channel::<(u64, bool, Instant)>();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let worker = std::thread::spawn(move || -> Result<Frame, String> {
        let mut f = Frame::new(1, 1);
        let mut last_live = Frame::new(1, 1);
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            // A lost device is an error from the source; the pipeline
            // retries at its own pace, as this loop does.
            let ns = match src.next_frame(&mut f) {
                Ok(true) => false,
                Ok(false) => return Err("stream ended".into()),
                Err(_) => true,
            };
            if ns {
                std::thread::sleep(Duration::from_millis(50));
            } else {
                last_live.copy_from(&f);
            }
            let _ = tx.send((f.id, ns, Instant::now()));
        }
        Ok(last_live)
    });
    let wait_for = |want_ns: bool, n: usize, limit: Duration| -> Result<Duration, String> {
        let t0 = Instant::now();
        let mut seen = 0;
        while seen < n {
            let left = limit
                .checked_sub(t0.elapsed())
                .ok_or(format!("timeout waiting for no_signal={want_ns}"))?;
            let (_, ns, _) = rx
                .recv_timeout(left)
                .map_err(|_| format!("timeout waiting for no_signal={want_ns}"))?;
            if ns == want_ns {
                seen += 1;
            } else {
                seen = 0;
            }
        }
        Ok(t0.elapsed())
    };
    wait_for(false, 5, Duration::from_secs(30))?;
    // Pull the driver. With the device open, the kernel holds the module
    // (rmmod says "in use"), as a USB unplug does not wait for the app:
    // unbind the device first, which is what an unplug does to the driver.
    let (ok, out) = sh("rmmod vivid");
    let how = if ok {
        "rmmod while streaming".to_string()
    } else {
        let (ok2, out2) = sh("echo vivid.0 > /sys/bus/platform/drivers/vivid/unbind");
        if !ok2 {
            return Err(format!("rmmod: {out}; unbind: {out2}"));
        }
        format!("rmmod refused ({out}); unbound vivid.0")
    };
    let lost_after = wait_for(true, 3, Duration::from_secs(20))?;
    // Once the source gave the device up, the module must be removable.
    let mut removed = ok;
    for _ in 0..20 {
        if removed {
            break;
        }
        removed = sh("rmmod vivid").0;
        if !removed {
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    if !removed {
        return Err(
            "vivid could not be removed after the loss: the source still holds the device".into(),
        );
    }
    if !sh("ls /dev/video0").0 {
        // expected: the node is gone while the driver is out
    }
    let attempts = status.lock().map(|s| s.attempts).unwrap_or(0);
    std::thread::sleep(Duration::from_millis(1500));
    let (ok, out) = sh("modprobe vivid n_devs=1 node_types=0x1");
    if !ok {
        return Err(format!("modprobe vivid: {out}"));
    }
    let back_after = wait_for(false, 5, Duration::from_secs(30))?;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let last = worker
        .join()
        .map_err(|_| "capture thread panicked".to_string())??;
    check_bars(&last, false)?;
    let s = status
        .lock()
        .map(|s| s.clone())
        .map_err(|_| "status lock")?;
    if !s.live || s.reconnects != 1 {
        return Err(format!("status {s:?}"));
    }
    Ok(format!(
        "{how}; loss reported after {lost_after:?} ({attempts} reopen attempts); vivid removed and reloaded; live again {back_after:?} after modprobe; reconnects {}",
        s.reconnects
    ))
}

/// A uinput keyboard (a foot switch, as the kernel sees one): its F1,
/// LEFT, F2 and F3 presses must arrive on the control channel as freeze,
/// one step back, save-snapshot and save-cine, through evdev and
/// `control::input`.
fn keys() -> Check {
    use lgms_edge::control::input::{event_bytes, key_map, start, EV_KEY, EV_SYN};
    use lgms_edge::control::Command;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    const UI_SET_EVBIT: libc::c_ulong = 0x4004_5564;
    const UI_SET_KEYBIT: libc::c_ulong = 0x4004_5565;
    const UI_DEV_CREATE: libc::c_ulong = 0x5501;
    const KEY_F1: u16 = 59;
    const KEY_LEFT: u16 = 105;
    const KEY_F2: u16 = 60;
    const KEY_F3: u16 = 61;
    let pressed = [KEY_F1, KEY_LEFT, KEY_F2, KEY_F3];
    let before: Vec<_> = input_nodes();
    let mut ui = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/uinput")
        .map_err(|e| format!("/dev/uinput: {e}"))?;
    let fd = ui.as_raw_fd();
    let bits = pressed
        .iter()
        .map(|&k| (UI_SET_KEYBIT, libc::c_int::from(k)));
    for (req, arg) in std::iter::once((UI_SET_EVBIT, libc::c_int::from(EV_KEY))).chain(bits) {
        // SAFETY: `fd` is the open uinput device; these requests take an int.
        if unsafe { libc::ioctl(fd, req, arg) } != 0 {
            return Err(format!(
                "uinput ioctl {req:#x}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    // struct uinput_user_dev: name[80], input_id (4 x u16), ff_effects_max,
    // then four 64-entry abs arrays; a zeroed one with a name will do.
    let mut dev = vec![0u8; 80 + 8 + 4 + 4 * 64 * 4];
    dev[..11].copy_from_slice(b"foot-switch");
    ui.write_all(&dev)
        .map_err(|e| format!("uinput setup: {e}"))?;
    // SAFETY: as above; UI_DEV_CREATE takes no argument.
    if unsafe { libc::ioctl(fd, UI_DEV_CREATE) } != 0 {
        return Err(format!(
            "UI_DEV_CREATE: {}",
            std::io::Error::last_os_error()
        ));
    }
    let t0 = Instant::now();
    let node = loop {
        if let Some(n) = input_nodes().into_iter().find(|n| !before.contains(n)) {
            break n;
        }
        if t0.elapsed() > Duration::from_secs(5) {
            return Err("no new /dev/input/event* after UI_DEV_CREATE".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let keys = [
        ("KEY_F1", "freeze"),
        ("KEY_LEFT", "step-back"),
        ("KEY_F2", "save-snapshot"),
        ("KEY_F3", "save-cine"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (tx, rx) = std::sync::mpsc::channel();
    start(std::slice::from_ref(&node), key_map(&keys)?, tx);
    // Let the reader open the node before the keys are pressed.
    std::thread::sleep(Duration::from_millis(500));
    for code in pressed {
        for value in [1, 0] {
            ui.write_all(&event_bytes(EV_KEY, code, value))
                .and_then(|()| ui.write_all(&event_bytes(EV_SYN, 0, 0)))
                .map_err(|e| format!("uinput event: {e}"))?;
        }
    }
    let mut got = Vec::new();
    while got.len() < pressed.len() {
        let r = rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| format!("only {got:?} arrived from {node:?}"))?;
        got.push(r.command);
        let _ = r.reply.send(Ok(serde_json::json!({})));
    }
    let want = [
        Command::Freeze,
        Command::Step(-1),
        Command::SaveSnapshot,
        Command::SaveCine,
    ];
    if got != want {
        return Err(format!("{node:?} gave {got:?}"));
    }
    Ok(format!(
        "{node:?}: F1 -> {:?}, LEFT -> {:?}, F2 -> {:?}, F3 -> {:?}",
        got[0], got[1], got[2], got[3]
    ))
}

fn input_nodes() -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/dev/input")
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("event"))
                })
                .collect()
        })
        .unwrap_or_default()
}
