//! A Linux TAP device (`/dev/net/tun`, `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`),
//! in the style of Cloud Hypervisor's `net_util`: a small wrapper over the
//! ioctls, no crate.
//!
//! Every frame carries a 10-byte virtio-net header, which is how the
//! checksum state crosses: frames from the host stack may come with a
//! partial checksum (`VIRTIO_NET_HDR_F_NEEDS_CSUM`, because checksum
//! offload is on: `TUNSETOFFLOAD(TUN_F_CSUM)`) or as already validated
//! (`VIRTIO_NET_HDR_F_DATA_VALID`); netback passes both on to the guest as
//! `NETRXF_*` flags. Frames netback writes always have complete checksums
//! and say `DATA_VALID` when the guest vouched for them, except a guest's
//! blank one, which goes as `NEEDS_CSUM` for the kernel to complete.
//! Frames are written straight from the guest's pages: the header and the
//! pieces in one `writev`, which the kernel copies as one packet.

use super::port::{NetPort, RxMeta, TxCsum};
use std::fs::File;
use std::io::{IoSlice, IoSliceMut, Read as _, Write as _};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use vm_memory::VolatileSlice;

const TUN_PATH: &str = "/dev/net/tun";
/// `_IOW('T', 202, int)`.
pub const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `_IOW('T', 208, unsigned int)`.
pub const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUN_F_CSUM: libc::c_uint = 0x01;
/// `struct virtio_net_hdr` (without `num_buffers`).
pub const VNET_HDR_LEN: usize = 10;
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;
/// Longest interface name (`IFNAMSIZ` - 1).
pub const MAX_NAME: usize = 15;

/// Why a TAP device could not be opened; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// No `/dev/net/tun`.
    #[error(
        "{TUN_PATH} is missing: load the tun module (`modprobe tun`) or create the node (`mknod {TUN_PATH} c 10 200`)"
    )]
    NoTunDevice,
    /// Not allowed to create or attach the device.
    #[error("no permission to create or attach TAP device '{0}': run as root (CAP_NET_ADMIN), or create it first with `ip tuntap add {0} mode tap user $USER`")]
    Permission(String),
    /// The name is in use.
    #[error("TAP name '{0}' is taken (another process has it open, or it is not a TAP device): pick another name")]
    Taken(String),
    /// Not a usable interface name.
    #[error("'{0}' is not a valid interface name (1-{MAX_NAME} characters, no '/', ':' or whitespace)")]
    BadName(String),
    /// Another system error.
    #[error("TAP device '{name}': {what}: {err}")]
    Io {
        /// The device.
        name: String,
        /// The step that failed.
        what: &'static str,
        /// The error.
        err: std::io::Error,
    },
}

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An open TAP device.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
    /// The interface's MTU when it was opened (`SIOCGIFMTU`).
    mtu: Option<u32>,
}

/// `struct ifreq` with its `ifr_mtu` member (`SIOCGIFMTU`).
#[repr(C)]
struct IfReqMtu {
    name: [u8; 16],
    mtu: libc::c_int,
    _pad: [u8; 20],
}
const _: () = assert!(size_of::<IfReqMtu>() == 40);

/// Checks an interface name.
pub fn check_name(name: &str) -> Result<(), TapError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if ok {
        Ok(())
    } else {
        Err(TapError::BadName(name.to_string()))
    }
}

impl Tap {
    /// Creates (or attaches to) the TAP device `name`, non-blocking, with
    /// virtio-net headers and checksum offload, and brings its link up.
    pub fn open(name: &str) -> Result<Tap, TapError> {
        check_name(name)?;
        let io = |what| move |err| TapError::Io { name: name.to_string(), what, err };
        let path = c"/dev/net/tun";
        // SAFETY: a NUL-terminated path; the returned descriptor is owned
        // by the `File` below.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => TapError::NoTunDevice,
                Some(libc::EACCES) | Some(libc::EPERM) => TapError::Permission(name.to_string()),
                _ => io("open /dev/net/tun")(e),
            });
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        let mut req = IfReq { name: [0; 16], flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, _pad: [0; 22] };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which
        // `IfReq` matches in size (40 bytes) and layout of the used fields.
        if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req) } < 0 {
            let e = std::io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => TapError::Permission(name.to_string()),
                Some(libc::EBUSY) | Some(libc::EINVAL) | Some(libc::EEXIST) => TapError::Taken(name.to_string()),
                _ => io("TUNSETIFF")(e),
            });
        }
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETOFFLOAD as _, TUN_F_CSUM as libc::c_ulong) } < 0 {
            return Err(io("TUNSETOFFLOAD")(std::io::Error::last_os_error()));
        }
        let mut tap = Tap { file, name: name.to_string(), mtu: None };
        if let Err(e) = tap.set_up() {
            tracing::warn!(tap = name, "cannot bring the link up ({e}); do it with `ip link set {name} up`");
        }
        // Read once here, before the seccomp filters: the front end is told
        // it when it connects (netif.h "MTU", virtio-net `mtu`).
        tap.mtu = match tap.read_mtu() {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(tap = name, "cannot read the MTU ({e}); the guest is told none (1500)");
                None
            }
        };
        Ok(tap)
    }

    /// A datagram socket for the interface ioctls.
    fn ctl_socket() -> std::io::Result<File> {
        // SAFETY: a plain datagram socket, closed by the `File` below.
        let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if s < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `s` is ours.
        Ok(unsafe { File::from_raw_fd(s) })
    }

    /// The interface's MTU.
    fn read_mtu(&self) -> std::io::Result<u32> {
        let sock = Self::ctl_socket()?;
        let mut req = IfReqMtu { name: [0; 16], mtu: 0, _pad: [0; 20] };
        req.name[..self.name.len()].copy_from_slice(self.name.as_bytes());
        // SAFETY: SIOCGIFMTU reads and writes one `struct ifreq`, which
        // `IfReqMtu` matches in size and in the layout of `ifr_mtu`.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU as _, &mut req) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        u32::try_from(req.mtu).map_err(|_| std::io::Error::other("negative MTU"))
    }

    /// Sets `IFF_UP` on the interface.
    fn set_up(&self) -> std::io::Result<()> {
        let sock = Self::ctl_socket()?;
        let mut req = IfReq { name: [0; 16], flags: 0, _pad: [0; 22] };
        req.name[..self.name.len()].copy_from_slice(self.name.as_bytes());
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write one `ifreq`.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.flags |= libc::IFF_UP as libc::c_short;
        // SAFETY: as above.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &mut req) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Another handle on the same open TAP (same queue), e.g. for a
    /// benchmark's raw baseline next to netback.
    pub fn try_clone(&self) -> std::io::Result<Tap> {
        Ok(Tap { file: self.file.try_clone()?, name: self.name.clone(), mtu: self.mtu })
    }

    /// The interface name.
    pub fn if_name(&self) -> &str {
        &self.name
    }

    /// Writes one raw frame with an empty virtio-net header (benchmarks'
    /// baseline: what a plain TAP user does).
    pub fn write_raw(&mut self, frame: &[u8]) -> std::io::Result<usize> {
        let hdr = [0u8; VNET_HDR_LEN];
        self.file.write_vectored(&[IoSlice::new(&hdr), IoSlice::new(frame)])
    }

    /// Reads one raw frame (header dropped); `WouldBlock` if none.
    pub fn read_raw(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut hdr = [0u8; VNET_HDR_LEN];
        let n = self.file.read_vectored(&mut [IoSliceMut::new(&mut hdr), IoSliceMut::new(buf)])?;
        Ok(n.saturating_sub(VNET_HDR_LEN))
    }
}

impl NetPort for Tap {
    fn send(&mut self, frame: &[u8], data_validated: bool) -> std::io::Result<()> {
        let csum = if data_validated { TxCsum::Validated } else { TxCsum::Complete };
        self.file.write_vectored(&[IoSlice::new(&vnet_hdr(csum)), IoSlice::new(frame)]).map(|_| ())
    }

    fn send_slices(&mut self, segments: &[VolatileSlice<'_>], csum: TxCsum) -> Option<std::io::Result<()>> {
        const MAX: usize = super::MAX_TX_SLOTS + 1;
        let hdr = vnet_hdr(csum);
        // Sized for the common cases, to set up no more iovecs than needed.
        match segments.len() {
            1 => Some(self.writev::<2>(&hdr, segments)),
            2 => Some(self.writev::<3>(&hdr, segments)),
            n if n <= MAX => Some(self.writev::<{ MAX + 1 }>(&hdr, segments)),
            _ => None,
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<Option<(usize, RxMeta)>> {
        let mut hdr = [0u8; VNET_HDR_LEN];
        match self.file.read_vectored(&mut [IoSliceMut::new(&mut hdr), IoSliceMut::new(buf)]) {
            Ok(n) if n > VNET_HDR_LEN => Ok(Some((
                n - VNET_HDR_LEN,
                RxMeta {
                    csum_blank: hdr[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0,
                    data_validated: hdr[0] & (VIRTIO_NET_HDR_F_DATA_VALID | VIRTIO_NET_HDR_F_NEEDS_CSUM) != 0,
                },
            ))),
            Ok(_) => Ok(Some((0, RxMeta::default()))),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn wake_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn mtu(&self) -> Option<u32> {
        self.mtu
    }
}

impl Tap {
    /// Writes `hdr` and `segments` (fewer than `N`) as one frame.
    fn writev<const N: usize>(&self, hdr: &[u8; VNET_HDR_LEN], segments: &[VolatileSlice<'_>]) -> std::io::Result<()> {
        // The guards keep the slices' pointers valid across the system call.
        let guards: [_; N] = std::array::from_fn(|i| segments.get(i).map(|s| s.ptr_guard()));
        let mut iov = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; N];
        iov[0] = libc::iovec { iov_base: hdr.as_ptr().cast_mut().cast(), iov_len: hdr.len() };
        for (v, (g, s)) in iov[1..].iter_mut().zip(guards.iter().flatten().zip(segments)) {
            *v = libc::iovec { iov_base: g.as_ptr().cast_mut().cast(), iov_len: s.len() };
        }
        let cnt = (segments.len() + 1).min(N) as libc::c_int;
        // SAFETY: `iov` holds `cnt` initialised iovecs: the header on the
        // caller's stack and ranges of `VolatileSlice`s of mapped guest
        // memory that stay mapped while `segments` is borrowed (the grants
        // are held by the caller). The kernel only reads them, and copies
        // the whole frame in this call (one TAP write is one packet);
        // guest memory is never behind a Rust reference.
        let rc = unsafe { libc::writev(self.file.as_raw_fd(), iov.as_ptr(), cnt) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The virtio-net header of a frame netback writes.
fn vnet_hdr(csum: TxCsum) -> [u8; VNET_HDR_LEN] {
    let mut hdr = [0u8; VNET_HDR_LEN];
    match csum {
        TxCsum::Complete => {}
        TxCsum::Validated => hdr[0] = VIRTIO_NET_HDR_F_DATA_VALID,
        TxCsum::Partial { start, offset } => {
            hdr[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
            hdr[6..8].copy_from_slice(&start.to_le_bytes());
            hdr[8..10].copy_from_slice(&offset.to_le_bytes());
        }
    }
    hdr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("tap0").is_ok());
        for bad in ["", "a/b", "a b", "x:1", "sixteen-chars-xx"] {
            assert!(matches!(check_name(bad), Err(TapError::BadName(_))), "{bad}");
        }
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }
}
