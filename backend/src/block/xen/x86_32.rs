//! The 32-bit blkif ring layout (`protocol = x86_32-abi`, e.g. GRUB's
//! i386 Xen PVH build): the ring holds [`x86_32::Request`]s and
//! [`x86_32::Response`]s; [`Blkback<X86_32>`](super::Blkback) converts
//! each request to the native layout, answers it with the same transport
//! logic as a native ring, and converts the response back.

use super::RingLayout;
use pv_abi::blkif::{x86_32, BlkifRequest, BlkifResponse};

/// The 32-bit layout (`protocol` [`pv_abi::xenbus::XEN_IO_PROTO_ABI_X86_32`]).
#[derive(Debug)]
pub struct X86_32;

impl RingLayout for X86_32 {
    type Req = x86_32::Request;
    type Rsp = x86_32::Response;

    fn native<R>(req: &x86_32::Request, f: impl FnOnce(&BlkifRequest) -> R) -> R {
        f(&req.to_native())
    }

    fn response(rsp: BlkifResponse) -> x86_32::Response {
        rsp.into()
    }
}
