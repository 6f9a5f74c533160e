//! The store wire protocol (Xen's `io/xs_wire.h`).
//!
//! Messages are an [`XsdSockmsg`] header followed by `len` payload bytes
//! (usually NUL-terminated strings), carried over the two byte-stream rings
//! of a [`XenstoreDomainInterface`] page.

/// Message type: control / debug.
pub const XS_CONTROL: u32 = 0;
/// Message type: list a node's children.
pub const XS_DIRECTORY: u32 = 1;
/// Message type: read a node.
pub const XS_READ: u32 = 2;
/// Message type: read a node's permissions.
pub const XS_GET_PERMS: u32 = 3;
/// Message type: register a watch (path, token).
pub const XS_WATCH: u32 = 4;
/// Message type: remove a watch.
pub const XS_UNWATCH: u32 = 5;
/// Message type: start a transaction.
pub const XS_TRANSACTION_START: u32 = 6;
/// Message type: end a transaction.
pub const XS_TRANSACTION_END: u32 = 7;
/// Message type: introduce a domain.
pub const XS_INTRODUCE: u32 = 8;
/// Message type: release a domain.
pub const XS_RELEASE: u32 = 9;
/// Message type: get a domain's home path.
pub const XS_GET_DOMAIN_PATH: u32 = 10;
/// Message type: write a node (path NUL value).
pub const XS_WRITE: u32 = 11;
/// Message type: create a directory node.
pub const XS_MKDIR: u32 = 12;
/// Message type: remove a node and its children.
pub const XS_RM: u32 = 13;
/// Message type: set a node's permissions.
pub const XS_SET_PERMS: u32 = 14;
/// Message type: asynchronous watch event (path NUL token NUL).
pub const XS_WATCH_EVENT: u32 = 15;
/// Message type: error reply; the payload is an errno name such as `ENOENT`.
pub const XS_ERROR: u32 = 16;
/// Message type: is a domain introduced.
pub const XS_IS_DOMAIN_INTRODUCED: u32 = 17;
/// Message type: resume a domain.
pub const XS_RESUME: u32 = 18;
/// Message type: set a domain's target.
pub const XS_SET_TARGET: u32 = 19;
/// Message type: reset all watches.
pub const XS_RESET_WATCHES: u32 = 21;
/// Message type: partial directory listing.
pub const XS_DIRECTORY_PART: u32 = 22;
/// Number of valid message types (one more than the largest).
pub const XS_TYPE_COUNT: u32 = 23;
/// A type guaranteed to stay invalid.
pub const XS_INVALID: u32 = 0xffff;

/// Size of each store ring in bytes.
pub const XENSTORE_RING_SIZE: usize = 1024;
/// Largest message payload.
pub const XENSTORE_PAYLOAD_MAX: u32 = 4096;
/// Largest absolute path.
pub const XENSTORE_ABS_PATH_MAX: usize = 3072;
/// Largest relative path.
pub const XENSTORE_REL_PATH_MAX: usize = 2048;

/// `server_features` bit: the ring can be reconnected.
pub const XENSTORE_SERVER_FEATURE_RECONNECTION: u32 = 1;
/// `server_features` bit: the `error` field is valid.
pub const XENSTORE_SERVER_FEATURE_ERROR: u32 = 2;
/// `connection`: steady state.
pub const XENSTORE_CONNECTED: u32 = 0;
/// `connection`: reconnect in progress.
pub const XENSTORE_RECONNECT: u32 = 1;
/// `error`: none.
pub const XENSTORE_ERROR_NONE: u32 = 0;
/// `error`: communication problem.
pub const XENSTORE_ERROR_COMM: u32 = 1;
/// `error`: invalid ring index.
pub const XENSTORE_ERROR_RINGIDX: u32 = 2;
/// `error`: protocol violation.
pub const XENSTORE_ERROR_PROTO: u32 = 3;

/// Index of the path in a watch event's payload.
pub const XS_WATCH_PATH: u32 = 0;
/// Index of the token in a watch event's payload.
pub const XS_WATCH_TOKEN: u32 = 1;

/// The errors a store may name in an [`XS_ERROR`] reply (Xen's
/// `xsd_errors` table): errno value and the NUL-less name sent on the wire.
pub const XSD_ERRORS: [(i64, &str); 16] = {
    use crate::errno::*;
    [
        (EINVAL, "EINVAL"),
        (EACCES, "EACCES"),
        (EEXIST, "EEXIST"),
        (EISDIR, "EISDIR"),
        (ENOENT, "ENOENT"),
        (ENOMEM, "ENOMEM"),
        (ENOSPC, "ENOSPC"),
        (EIO, "EIO"),
        (ENOTEMPTY, "ENOTEMPTY"),
        (ENOSYS, "ENOSYS"),
        (EROFS, "EROFS"),
        (EBUSY, "EBUSY"),
        (EAGAIN, "EAGAIN"),
        (EISCONN, "EISCONN"),
        (E2BIG, "E2BIG"),
        (EPERM, "EPERM"),
    ]
};

/// The wire name of store error `errno` (positive), if it is in
/// [`XSD_ERRORS`].
pub fn xsd_error_name(errno: i64) -> Option<&'static str> {
    XSD_ERRORS.iter().find(|(e, _)| *e == errno).map(|(_, n)| *n)
}

/// The errno of the store error named `name` (a trailing NUL is ignored),
/// if it is in [`XSD_ERRORS`].
pub fn xsd_error_errno(name: &[u8]) -> Option<i64> {
    let name = name.strip_suffix(b"\0").unwrap_or(name);
    XSD_ERRORS.iter().find(|(_, n)| n.as_bytes() == name).map(|(e, _)| *e)
}

/// The header of every store message (Xen's `xsd_sockmsg`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XsdSockmsg {
    /// One of the `XS_*` message types.
    pub type_: u32,
    /// Request id chosen by the client, echoed in the reply.
    pub req_id: u32,
    /// Transaction id (0 outside a transaction).
    pub tx_id: u32,
    /// Length of the payload that follows the header.
    pub len: u32,
}
crate::assert_layout!(XsdSockmsg, size = 16, type_ = 0, req_id = 4, tx_id = 8, len = 12);

impl XsdSockmsg {
    /// Size of the header on the wire.
    pub const SIZE: usize = core::mem::size_of::<XsdSockmsg>();

    /// The header as its 16 little-endian wire bytes.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.type_.to_le_bytes());
        b[4..8].copy_from_slice(&self.req_id.to_le_bytes());
        b[8..12].copy_from_slice(&self.tx_id.to_le_bytes());
        b[12..16].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// Parses a header from its 16 wire bytes (no validation of the fields).
    pub fn from_bytes(b: &[u8; 16]) -> Self {
        let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        XsdSockmsg { type_: w(0), req_id: w(4), tx_id: w(8), len: w(12) }
    }
}

/// The store ring page (Xen's `xenstore_domain_interface`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenstoreDomainInterface {
    /// Requests: guest produces, store consumes.
    pub req: [u8; XENSTORE_RING_SIZE],
    /// Replies and watch events: store produces, guest consumes.
    pub rsp: [u8; XENSTORE_RING_SIZE],
    /// Bytes of `req` consumed.
    pub req_cons: u32,
    /// Bytes of `req` produced.
    pub req_prod: u32,
    /// Bytes of `rsp` consumed.
    pub rsp_cons: u32,
    /// Bytes of `rsp` produced.
    pub rsp_prod: u32,
    /// `XENSTORE_SERVER_FEATURE_*` bits.
    pub server_features: u32,
    /// `XENSTORE_CONNECTED` or `XENSTORE_RECONNECT`.
    pub connection: u32,
    /// `XENSTORE_ERROR_*`.
    pub error: u32,
}
crate::assert_layout!(
    XenstoreDomainInterface,
    size = 2076,
    req = 0,
    rsp = 1024,
    req_cons = 2048,
    req_prod = 2052,
    rsp_cons = 2056,
    rsp_prod = 2060,
    server_features = 2064,
    connection = 2068,
    error = 2072
);

impl XenstoreDomainInterface {
    /// An empty store page.
    pub const fn zeroed() -> Self {
        XenstoreDomainInterface {
            req: [0; XENSTORE_RING_SIZE],
            rsp: [0; XENSTORE_RING_SIZE],
            req_cons: 0,
            req_prod: 0,
            rsp_cons: 0,
            rsp_prod: 0,
            server_features: 0,
            connection: 0,
            error: 0,
        }
    }
}

impl Default for XenstoreDomainInterface {
    fn default() -> Self {
        Self::zeroed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xsd_error_names_round_trip() {
        for (errno, name) in XSD_ERRORS {
            assert_eq!(xsd_error_name(errno), Some(name));
            assert_eq!(xsd_error_errno(name.as_bytes()), Some(errno));
        }
        assert_eq!(xsd_error_errno(b"ENOENT\0"), Some(crate::errno::ENOENT));
        assert_eq!(xsd_error_errno(b"ENOENTX"), None);
        assert_eq!(xsd_error_name(crate::errno::EFAULT), None);
    }
}
