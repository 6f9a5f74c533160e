//! XSM_TARGET as the grant-table operations apply it to a domain id
//! (below both [`super::op`] and [`super::pvh_frames`], which share it).

use crate::domid::is_self;
use pv_abi::event_channel::{DomId, DOMID_VMM};
use pv_abi::grant_table::{GNTST_BAD_DOMAIN, GNTST_PERMISSION_DENIED};

/// The `GNTST_*` status XSM_TARGET gives a domain id (`gnttab_query_size()`,
/// `gnttab_setup_table()`): the caller itself is fine, domain 0 exists
/// (`GNTST_permission_denied`), anything else does not (`GNTST_bad_domain`).
pub fn target_status(dom: DomId) -> Option<i16> {
    if is_self(dom) {
        None
    } else if dom == DOMID_VMM {
        Some(GNTST_PERMISSION_DENIED)
    } else {
        Some(GNTST_BAD_DOMAIN)
    }
}
