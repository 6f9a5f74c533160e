//! The guest as the hypercall handlers see it: its RAM and the VMM-side
//! state its hypercalls act on.

use crate::console::ConsoleOut;
use crate::evtchn::EventChannels;
use crate::hypercall::Shutdown;
use crate::memory::GuestRam;
use crate::paging::PagingState;
use backend::grant::GrantTable;
use pv_abi::hypercall::xen_version;
use std::sync::Arc;

/// One PV domain (the VMM itself is domain 0; this is the guest).
#[derive(Debug)]
pub struct Domain {
    /// Guest RAM.
    pub ram: GuestRam,
    /// Console output.
    pub console: ConsoleOut,
    /// Set by `SCHEDOP_shutdown`; the vCPU loop stops when it sees it.
    pub shutdown: Option<Shutdown>,
    /// Feature bits reported by `XENVER_get_features`.
    pub features: u32,
    /// Event channels.
    pub evtchn: Arc<EventChannels>,
    /// The guest's grant table (shared with the back-ends' mapper).
    pub grants: Arc<GrantTable>,
    /// Direct-paging state (mode, pool, pinned tables).
    pub paging: PagingState,
    /// Xen PVH guest state (`None` for the project's own guests).
    pub pvh: Option<Box<crate::pvh::PvhState>>,
    /// The current hypercall came from 32-bit code: arguments use the
    /// compat (32-bit) structure layouts.
    pub compat: bool,
}

impl Domain {
    /// A domain over `ram` writing its console to `console`.
    pub fn new(ram: GuestRam, console: ConsoleOut, evtchn: Arc<EventChannels>, grants: Arc<GrantTable>) -> Self {
        let features = xen_version::FEATURE_CONSOLE_IO
            | xen_version::FEATURE_EVTCHN
            | xen_version::FEATURE_EVTCHN_DOORBELL
            | xen_version::FEATURE_GNTTAB
            | xen_version::FEATURE_DIRECT_PAGING
            | xen_version::FEATURE_MULTICALL;
        Domain {
            ram,
            console,
            shutdown: None,
            features,
            evtchn,
            grants,
            paging: PagingState::new(pv_abi::start_info::paging_mode::NATIVE, 0, 0, 0),
            pvh: None,
            compat: false,
        }
    }
}
