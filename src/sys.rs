//! The crate's one `ioctl` call, [`xioctl`], for the device modules (V4L2
//! capture, the framebuffer display; DRM goes through the `drm` crate).
//!
//! A request code is typed with the argument it takes ([`Ioctl<T>`]), so the
//! call is safe: the promise an ioctl needs, that the kernel reads and writes
//! only within `*arg`, is made once per argument type ([`IoctlArg`], an
//! `unsafe` trait) or per untyped code ([`Ioctl::unchecked`]), instead of at
//! every call. The one other ioctl of the crate, the console's `KDSETMODE`
//! in the framebuffer display, takes its argument by value, not by pointer,
//! and is made there.

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd};

/// `_IOC_WRITE`: the kernel reads the argument.
pub(crate) const IOC_WRITE: u64 = 1;
/// `_IOC_READ`: the kernel writes the argument.
pub(crate) const IOC_READ: u64 = 2;

/// An ioctl request code and the type of the argument it takes by pointer.
pub(crate) struct Ioctl<T> {
    code: u64,
    arg: PhantomData<fn(&mut T)>,
}

impl<T> Clone for Ioctl<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Ioctl<T> {}

/// A plain-data argument of the crate's ioctls (a kernel UAPI struct or an
/// integer).
///
/// # Safety
///
/// Implementors promise that all-zero bytes are a valid value of the type,
/// and that for every request the crate issues with it the kernel reads
/// and writes only the `size_of::<Self>()` bytes behind the pointer: no
/// pointer inside it is followed (the crate's V4L2 buffers are
/// `V4L2_MEMORY_MMAP`, never `USERPTR` or multi-planar).
pub(crate) unsafe trait IoctlArg: Copy {}

// SAFETY: an integer has no pointer, and zero is a valid integer.
unsafe impl IoctlArg for i32 {}
// SAFETY: as for i32.
unsafe impl IoctlArg for u32 {}

/// The all-zero value of an ioctl argument: what the kernel expects in
/// the reserved fields of a UAPI struct.
pub(crate) fn zeroed<T: IoctlArg>() -> T {
    // SAFETY: `IoctlArg` promises that all-zero bytes are a valid `T`.
    unsafe { std::mem::zeroed() }
}

impl<T: IoctlArg> Ioctl<T> {
    /// A request whose code encodes its direction (`IOC_READ | IOC_WRITE`
    /// bits), type, number and the size of `T`, as Linux's `_IOC` does.
    ///
    /// Safe: the kernel copies the argument in and out by the size in the
    /// code (`video_usercopy` for V4L2, `_IOC_SIZE` generally), which is
    /// `size_of::<T>()`, and [`IoctlArg`] promises it follows no pointer
    /// inside. Whether `T` is the struct the driver means is a question of
    /// right answers, not of memory safety.
    pub(crate) const fn sized(dir: u64, ty: u8, nr: u8) -> Self {
        let size = std::mem::size_of::<T>();
        assert!(size < 1 << 14, "ioctl argument too large for _IOC");
        Ioctl {
            code: (dir << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64,
            arg: PhantomData,
        }
    }
}

impl<T> Ioctl<T> {
    /// A request of an older interface whose code does not encode the
    /// argument's size (such as the framebuffer's `FBIOGET_VSCREENINFO`).
    ///
    /// # Safety
    ///
    /// For `code`, the kernel must read and write no more than
    /// `size_of::<T>()` bytes behind the pointer: `T` has the layout of the
    /// struct the request is defined with.
    pub(crate) const unsafe fn unchecked(code: u64) -> Self {
        Ioctl {
            code,
            arg: PhantomData,
        }
    }

    /// The request code.
    pub(crate) const fn code(self) -> u64 {
        self.code
    }
}

impl<T> fmt::Debug for Ioctl<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ioctl({:#x})", self.code)
    }
}

impl<T> PartialEq<u64> for Ioctl<T> {
    fn eq(&self, code: &u64) -> bool {
        self.code == *code
    }
}

/// Runs one ioctl on `fd`, retrying while a signal interrupts it (EINTR).
pub(crate) fn xioctl<F: AsFd, T>(fd: &F, request: Ioctl<T>, arg: &mut T) -> std::io::Result<()> {
    let fd = fd.as_fd().as_raw_fd();
    loop {
        // SAFETY: `fd` is open (borrowed for the call); `arg` is a valid,
        // exclusive `T` for the call, and `request` is typed with `T`, so
        // the kernel stays within `*arg` (see `Ioctl::sized` and
        // `Ioctl::unchecked`).
        let r = unsafe { libc::ioctl(fd, request.code as _, arg as *mut T) };
        if r != -1 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // SAFETY: bytes have no pointer, and zero bytes are valid; only the
    // code is computed from it here, no ioctl is issued.
    unsafe impl IoctlArg for [u8; 208] {}

    #[test]
    fn sized_codes_match_the_kernel_headers() {
        // _IOWR('V', 5, struct v4l2_format) and _IOW('F', 0x20, __u32).
        assert_eq!(
            Ioctl::<[u8; 208]>::sized(IOC_READ | IOC_WRITE, b'V', 5),
            0xc0d0_5605
        );
        assert_eq!(Ioctl::<u32>::sized(IOC_WRITE, b'F', 0x20), 0x4004_4620);
    }

    #[test]
    fn errors_are_reported_and_not_retried_forever() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let mut v = 0u32;
        let e = xioctl(&f, Ioctl::<u32>::sized(IOC_READ, b'V', 0), &mut v).unwrap_err();
        // The kernel answers ENOTTY; qemu-user (the aarch64 tests) answers
        // ENOSYS for an ioctl it does not translate. Either way: an error,
        // returned at once.
        assert!(
            matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::ENOSYS)),
            "{e:?}"
        );
    }
}
