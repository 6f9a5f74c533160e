//! The host side of a network device: where netback's frames go and come
//! from. Two ports: a Linux TAP device ([`super::tap::Tap`]) and an
//! in-process peer ([`super::peer::Peer`]) for tests and benchmarks.

use std::os::fd::RawFd;
use vm_memory::VolatileSlice;

/// What the host side says about a frame's checksum (virtio-net header
/// flags for the TAP; set by the sender for the in-process peer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxMeta {
    /// The TCP/UDP checksum is partial and still to be computed (the frame
    /// never left this host): `NETRXF_csum_blank | NETRXF_data_validated`.
    pub csum_blank: bool,
    /// The checksum was verified: `NETRXF_data_validated`.
    pub data_validated: bool,
}

/// The checksum state of a frame sent by [`NetPort::send_slices`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxCsum {
    /// Complete, not vouched for.
    Complete,
    /// Complete, and the front end vouches for it.
    Validated,
    /// Partial: the field at `start + offset` holds the pseudo-header sum;
    /// the host completes the sum over `start..` (virtio-net `NEEDS_CSUM`).
    Partial {
        /// Where the summed data starts.
        start: u16,
        /// The field's offset from `start`.
        offset: u16,
    },
}

/// A host-side network port.
pub trait NetPort: Send {
    /// Sends one complete frame (checksums filled in) to the host side.
    /// `data_validated`: the front end vouches for the checksum.
    fn send(&mut self, frame: &[u8], data_validated: bool) -> std::io::Result<()>;
    /// Sends one frame given as its pieces (in checked, mapped guest
    /// memory), without gathering it first; `None` if this port cannot,
    /// and the caller gathers and uses [`send`](Self::send).
    fn send_slices(&mut self, _segments: &[VolatileSlice<'_>], _csum: TxCsum) -> Option<std::io::Result<()>> {
        None
    }
    /// Takes the next frame from the host side into `buf`; `None` if there
    /// is none now. A frame longer than `buf` is cut (and its length says so).
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<Option<(usize, RxMeta)>>;
    /// A descriptor that polls readable while [`recv`](Self::recv) has frames.
    fn wake_fd(&self) -> RawFd;
    /// A name for logs.
    fn name(&self) -> &str;
    /// The host side's MTU, if it has one (a TAP's, read when it was
    /// opened): what the back end tells the front end it may send.
    fn mtu(&self) -> Option<u32> {
        None
    }
}
