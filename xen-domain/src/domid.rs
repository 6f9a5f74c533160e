//! Domain ids: the VMM and its back ends are domain 0, the guest is
//! [`GUEST_DOMID`].

use pv_abi::event_channel::{DomId, DOMID_SELF};

/// The guest's domain id.
pub const GUEST_DOMID: DomId = 1;

/// Whether `domid` names the calling guest (`DOMID_SELF` or its own id).
pub fn is_self(domid: DomId) -> bool {
    domid == DOMID_SELF || domid == GUEST_DOMID
}
