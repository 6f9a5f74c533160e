//! The `echo` sample PV device: the smallest complete split driver, and the
//! worked example of adding a new PV device protocol (see docs/adding-a-device.md).
//!
//! The front end puts [`EchoRequest`]s on a one-page shared ring (Xen ring
//! layout, granted to domain 0, key `ring-ref`) and notifies its event
//! channel (key `event-channel`); the back end answers each with an
//! [`EchoResponse`]. Data travels in pages the front end grants.

/// Device type name in the store (`device/echo/<id>`).
pub const DEVICE_TYPE: &str = "echo";

/// Store keys of the echo device (beyond `xenbus::keys`).
pub mod keys {
    /// Back end: XOR is supported (`1`).
    pub const FEATURE_XOR: &str = "feature-xor";
}

/// Do nothing but answer (a pure event round trip).
pub const ECHO_OP_PING: u8 = 0;
/// Sum the bytes of the granted range (the grant may be read-only); the sum
/// is returned in [`EchoResponse::value`].
pub const ECHO_OP_SUM: u8 = 1;
/// XOR every byte of the granted range with `key`, in place (needs a
/// writable grant); returns the sum of the new bytes.
pub const ECHO_OP_XOR: u8 = 2;

/// Response status: done.
pub const ECHO_RSP_OKAY: i16 = 0;
/// Response status: malformed request (range outside the page, bad op).
pub const ECHO_RSP_EINVAL: i16 = -22;
/// Response status: the grant was refused (bad ref, revoked, read-only).
pub const ECHO_RSP_EACCES: i16 = -13;

/// One request.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EchoRequest {
    /// Echoed in the response.
    pub id: u64,
    /// Grant reference of the data page (unused for `PING`).
    pub gref: u32,
    /// Offset of the data in the page.
    pub offset: u16,
    /// Length of the data in bytes (`offset + len <= 4096`).
    pub len: u16,
    /// One of the `ECHO_OP_*` values.
    pub op: u8,
    /// XOR key for `ECHO_OP_XOR`.
    pub key: u8,
    /// Zero.
    pub _pad: [u8; 6],
}
crate::assert_layout!(EchoRequest, size = 24, id = 0, gref = 8, offset = 12, len = 14, op = 16, key = 17);

/// One response.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EchoResponse {
    /// The request's id.
    pub id: u64,
    /// `ECHO_RSP_*`.
    pub status: i16,
    /// Zero.
    pub _pad: u16,
    /// Result of the operation (a byte sum).
    pub value: u32,
}
crate::assert_layout!(EchoResponse, size = 16, id = 0, status = 8, value = 12);

/// The echo device over virtio (device id
/// [`ECHO`](crate::virtio::device_id::ECHO), one queue): a chain is this
/// header (device-readable), the data (device-readable, at most a page),
/// for `ECHO_OP_XOR` an output buffer of the same length (device-writable,
/// receives the XORed bytes), then a [`VirtioEchoResponse`]
/// (device-writable). The same operations as the Xen ring.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtioEchoHeader {
    /// One of the `ECHO_OP_*` values.
    pub op: u8,
    /// XOR key for `ECHO_OP_XOR`.
    pub key: u8,
    /// Zero.
    pub _pad: [u8; 6],
}
crate::assert_layout!(VirtioEchoHeader, size = 8, op = 0, key = 1);

/// The last 8 bytes of a virtio echo chain, written by the device.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtioEchoResponse {
    /// `ECHO_RSP_*`.
    pub status: i16,
    /// Zero.
    pub _pad: u16,
    /// Result of the operation (a byte sum).
    pub value: u32,
}
crate::assert_layout!(VirtioEchoResponse, size = 8, status = 0, value = 4);

crate::pod::impl_pod!(EchoRequest, EchoResponse, VirtioEchoHeader, VirtioEchoResponse);
