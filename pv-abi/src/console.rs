//! The PV console ring page (Xen's `io/console.h`).
//!
//! Two byte-stream rings with free-running 32-bit indices: `out` carries
//! guest output to the VMM, `in` carries input to the guest. The
//! `ring-buffers` crate's byte-stream ring implements the protocol.

/// Size of the input ring in bytes.
pub const XENCONS_IN_SIZE: usize = 1024;
/// Size of the output ring in bytes.
pub const XENCONS_OUT_SIZE: usize = 2048;

/// The console ring page (Xen's `xencons_interface`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenconsInterface {
    /// Input ring: VMM produces, guest consumes.
    pub in_: [u8; XENCONS_IN_SIZE],
    /// Output ring: guest produces, VMM consumes.
    pub out: [u8; XENCONS_OUT_SIZE],
    /// Bytes of `in_` consumed by the guest.
    pub in_cons: u32,
    /// Bytes of `in_` produced by the VMM.
    pub in_prod: u32,
    /// Bytes of `out` consumed by the VMM.
    pub out_cons: u32,
    /// Bytes of `out` produced by the guest.
    pub out_prod: u32,
}
crate::assert_layout!(
    XenconsInterface,
    size = 3088,
    in_ = 0,
    out = 1024,
    in_cons = 3072,
    in_prod = 3076,
    out_cons = 3080,
    out_prod = 3084
);

impl XenconsInterface {
    /// An empty console page.
    pub const fn zeroed() -> Self {
        XenconsInterface {
            in_: [0; XENCONS_IN_SIZE],
            out: [0; XENCONS_OUT_SIZE],
            in_cons: 0,
            in_prod: 0,
            out_cons: 0,
            out_prod: 0,
        }
    }
}

impl Default for XenconsInterface {
    fn default() -> Self {
        Self::zeroed()
    }
}
