//! Xenbus device states (Xen's `io/xenbus.h`), as written to the store's
//! `state` nodes in decimal, and the store key names every split device
//! uses (per-device keys live with each protocol: `blkif::keys`,
//! `echo::keys`).

/// Store keys common to every split device (Xen's `xenstore-paths` names).
pub mod keys {
    /// Both directories: the xenbus state, in decimal.
    pub const STATE: &str = "state";
    /// Front-end directory: the back-end directory's path.
    pub const BACKEND: &str = "backend";
    /// Front-end directory: the back end's domain id.
    pub const BACKEND_ID: &str = "backend-id";
    /// Back-end directory: the front-end directory's path.
    pub const FRONTEND: &str = "frontend";
    /// Back-end directory: the front end's domain id.
    pub const FRONTEND_ID: &str = "frontend-id";
    /// Back-end directory: why connecting failed.
    pub const ERROR: &str = "error";
    /// Front end: the grant reference of a one-page ring.
    pub const RING_REF: &str = "ring-ref";
    /// Front end: the unbound event-channel port the back end binds to.
    pub const EVENT_CHANNEL: &str = "event-channel";
    /// Front end: the ABI its ring structures follow.
    pub const PROTOCOL: &str = "protocol";
    /// Front end: log2 of the pages of a multi-page ring.
    pub const RING_PAGE_ORDER: &str = "ring-page-order";
    /// Front end: first ring page of a multi-page ring (`ring-ref0`..).
    pub const RING_REF0: &str = "ring-ref0";
    /// Back end: the largest `ring-page-order` it accepts.
    pub const MAX_RING_PAGE_ORDER: &str = "max-ring-page-order";
    /// Back end: the most queues (rings) a front end may use
    /// (`io/blkif.h`, `io/netif.h`, "Multi-queue").
    pub const MULTI_QUEUE_MAX_QUEUES: &str = "multi-queue-max-queues";
    /// Front end: the queues it uses; with more than one, each queue's
    /// keys (`ring-ref`, `event-channel`, ...) live in `queue-<N>/`.
    pub const MULTI_QUEUE_NUM_QUEUES: &str = "multi-queue-num-queues";
    /// Front end: prefix of a queue's directory (`queue-0`, `queue-1`...).
    pub const QUEUE_PREFIX: &str = "queue-";
    /// vbd front end: the disk's number (`docs/misc/vbd-interface.txt`),
    /// the same as the directory's name (`libxl_disk.c`).
    pub const VIRTUAL_DEVICE: &str = "virtual-device";
    /// vbd, both directories: `disk` or `cdrom` (`libxl_disk.c`).
    pub const DEVICE_TYPE: &str = "device-type";
    /// vif, both directories: the device id (`libxl_nic.c`).
    pub const HANDLE: &str = "handle";
}

/// The `protocol` value for the x86-64 ring layout (Xen's
/// `XEN_IO_PROTO_ABI_X86_64`), what the project's own front ends speak.
pub const XEN_IO_PROTO_ABI_X86_64: &str = "x86_64-abi";
/// The `protocol` value for the 32-bit x86 ring layout (Xen's
/// `XEN_IO_PROTO_ABI_X86_32`, [`crate::blkif::x86_32`]), which blkback also
/// accepts (32-bit front ends such as GRUB's i386 PVH build).
pub const XEN_IO_PROTO_ABI_X86_32: &str = "x86_32-abi";

/// A xenbus device state (Xen's `enum xenbus_state`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum XenbusState {
    /// Unknown or not yet written.
    Unknown = 0,
    /// Setting up.
    Initialising = 1,
    /// Back end: waiting for the front end's details (features published).
    InitWait = 2,
    /// Front end: ring, grants and event channel published.
    Initialised = 3,
    /// Connected: the rings are live.
    Connected = 4,
    /// Shutting down.
    Closing = 5,
    /// Closed.
    Closed = 6,
    /// Reconfiguring.
    Reconfiguring = 7,
    /// Reconfigured.
    Reconfigured = 8,
}

impl XenbusState {
    /// The state with numeric value `v`, or `None` if `v` is not a state.
    pub const fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => XenbusState::Unknown,
            1 => XenbusState::Initialising,
            2 => XenbusState::InitWait,
            3 => XenbusState::Initialised,
            4 => XenbusState::Connected,
            5 => XenbusState::Closing,
            6 => XenbusState::Closed,
            7 => XenbusState::Reconfiguring,
            8 => XenbusState::Reconfigured,
            _ => return None,
        })
    }

    /// The numeric value written to the store.
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// Parses the decimal text of a store `state` node (surrounding ASCII
    /// whitespace and a trailing NUL are ignored).
    pub fn parse(s: &[u8]) -> Option<Self> {
        let s = s.strip_suffix(b"\0").unwrap_or(s).trim_ascii();
        if s.len() > 2 {
            return None;
        }
        parse_u32(s).and_then(Self::from_u32)
    }

    /// The decimal text for a store `state` node.
    pub const fn as_str(self) -> &'static str {
        match self {
            XenbusState::Unknown => "0",
            XenbusState::Initialising => "1",
            XenbusState::InitWait => "2",
            XenbusState::Initialised => "3",
            XenbusState::Connected => "4",
            XenbusState::Closing => "5",
            XenbusState::Closed => "6",
            XenbusState::Reconfiguring => "7",
            XenbusState::Reconfigured => "8",
        }
    }
}

/// Parses a decimal `u32` as both sides write it to the store: ASCII
/// digits only (a trailing NUL is tolerated), no sign, no whitespace, no
/// overflow. The one parser for store numbers (the VMM's back ends and
/// store server, and the guest's store client).
pub fn parse_u32(v: &[u8]) -> Option<u32> {
    let v = v.strip_suffix(b"\0").unwrap_or(v);
    if v.is_empty() || v.len() > 10 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u32, |a, d| a.checked_mul(10)?.checked_add(u32::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_numbers_are_strict_decimal() {
        assert_eq!(parse_u32(b"0"), Some(0));
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967295\0"), Some(u32::MAX));
        for bad in [&b""[..], b"\0", b"-1", b"+1", b"4294967296", b"1x", b"0x10", b" 1", b"1 ", b"99999999999"] {
            assert_eq!(parse_u32(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn round_trip() {
        for v in 0..=8 {
            let s = XenbusState::from_u32(v).unwrap();
            assert_eq!(s.as_u32(), v);
            assert_eq!(XenbusState::parse(s.as_str().as_bytes()), Some(s));
        }
        assert_eq!(XenbusState::from_u32(9), None);
        assert_eq!(XenbusState::parse(b" 4\0"), Some(XenbusState::Connected));
        assert_eq!(XenbusState::parse(b"x"), None);
        assert_eq!(XenbusState::parse(b""), None);
        assert_eq!(XenbusState::parse(b"444"), None);
    }
}
