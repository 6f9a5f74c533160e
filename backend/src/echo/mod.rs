//! The `echo` sample back-end (protocol in `pv_abi::echo`): the smallest
//! complete split-driver back-end, and the template for a new device.
//!
//! Per wake-up it consumes every request on the shared ring (each copied
//! out of shared memory before it is looked at), answers each, publishes
//! the responses, and notifies the front end only when Xen's rule says the
//! front end is waiting (`rsp_event`); then it re-arms `req_event` and
//! checks once more before sleeping.

use crate::grant::GrantTable;
use crate::ring_page::RingPage;
use crate::serve::RingService as _;
use crate::Notify;
use pv_abi::echo::*;
use ring_buffers::BackRing;
use std::sync::Arc;

/// Traffic counters, for tests and benchmarks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EchoCounters {
    /// Notifications received from the guest (eventfd counts).
    pub kicks: u64,
    /// Requests answered.
    pub requests: u64,
    /// Requests answered with an error status.
    pub errors: u64,
    /// Notifications sent to the guest.
    pub notifies: u64,
}

/// Echo device logic for one connected front end.
pub struct Echo {
    ring: BackRing<RingPage, EchoRequest, EchoResponse>,
    grants: Arc<GrantTable>,
    notify: Arc<dyn Notify>,
    broken: bool,
    /// Counters.
    pub counters: EchoCounters,
}

impl std::fmt::Debug for Echo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Echo").field("counters", &self.counters).finish_non_exhaustive()
    }
}

pub use crate::ring_page::ConnectError;

impl Echo {
    /// Maps the front end's ring (grant `ring_ref`, writable) and attaches.
    pub fn connect(grants: Arc<GrantTable>, ring_ref: u32, notify: Arc<dyn Notify>) -> Result<Self, ConnectError> {
        let ring = crate::ring_page::attach_back_ring(&grants, ring_ref)?;
        Ok(Echo { ring, grants, notify, broken: false, counters: EchoCounters::default() })
    }

    fn reply(&self, req: &EchoRequest) -> EchoResponse {
        let mut rsp = EchoResponse { id: req.id, status: ECHO_RSP_OKAY, _pad: 0, value: 0 };
        let result = match req.op {
            ECHO_OP_PING => Ok(0),
            ECHO_OP_SUM | ECHO_OP_XOR => self.data_op(req),
            _ => Err(ECHO_RSP_EINVAL),
        };
        match result {
            Ok(v) => rsp.value = v,
            Err(status) => rsp.status = status,
        }
        rsp
    }

    fn data_op(&self, req: &EchoRequest) -> Result<u32, i16> {
        let (off, len) = (req.offset as u64, req.len as usize);
        if off + len as u64 > pv_abi::layout::PAGE_SIZE {
            return Err(ECHO_RSP_EINVAL);
        }
        let writable = req.op == ECHO_OP_XOR;
        let page = self.grants.map(req.gref, writable).map_err(|e| {
            tracing::debug!("echo: {e}");
            ECHO_RSP_EACCES
        })?;
        let mut buf = [0u8; 4096];
        let data = &mut buf[..len];
        page.read(off, data).map_err(|_| ECHO_RSP_EINVAL)?;
        if writable {
            data.iter_mut().for_each(|b| *b ^= req.key);
            page.write(off, data).map_err(|_| ECHO_RSP_EACCES)?;
        }
        Ok(data.iter().map(|&b| b as u32).sum())
    }
}

impl Echo {
    /// Whether a corrupt ring stopped the device.
    pub fn is_broken(&self) -> bool {
        self.broken
    }
}

impl crate::serve::RingService for Echo {
    type Req = EchoRequest;
    type Rsp = EchoResponse;

    fn ring(&mut self) -> &mut BackRing<RingPage, EchoRequest, EchoResponse> {
        &mut self.ring
    }

    fn answer(&mut self, req: &EchoRequest) -> EchoResponse {
        let rsp = self.reply(req);
        self.counters.requests += 1;
        if rsp.status != ECHO_RSP_OKAY {
            self.counters.errors += 1;
        }
        rsp
    }

    fn publish(&mut self) {
        if self.ring.push_responses_and_check_notify() {
            self.counters.notifies += 1;
            self.notify.notify();
        }
    }

    fn stopped(&self) -> bool {
        self.broken
    }

    fn stop(&mut self, e: ring_buffers::RingError) {
        tracing::warn!("echo: corrupt ring from the guest ({e}); device stopped");
        self.broken = true;
    }
}

/// The echo device as a [`SplitBackend`](crate::xenbus::SplitBackend):
/// disconnected until the front end publishes its `ring-ref`.
#[derive(Debug, Default)]
pub struct EchoBackend {
    /// The connected device, if any.
    pub echo: Option<Echo>,
    /// Counters of earlier connections plus the live one.
    pub counters: EchoCounters,
}

impl crate::xenbus::SplitBackend for EchoBackend {
    fn device_type(&self) -> &'static str {
        DEVICE_TYPE
    }

    fn features(&self) -> Vec<(String, String)> {
        vec![("feature-xor".into(), "1".into())]
    }

    fn connect(
        &mut self,
        front: &dyn crate::xenbus::FrontendKeys,
        grants: &Arc<GrantTable>,
        notify: Arc<dyn Notify>,
    ) -> Result<(), String> {
        let ring_ref = front.read_u32("ring-ref")?;
        let echo = Echo::connect(grants.clone(), ring_ref, notify).map_err(|e| e.to_string())?;
        self.echo = Some(echo);
        Ok(())
    }

    fn disconnect(&mut self) {
        self.echo = None;
    }

    fn process(&mut self) -> bool {
        let mut more = false;
        if let Some(e) = &mut self.echo {
            let before = e.counters;
            more = e.process_budget(crate::xenbus::PROCESS_BUDGET).1;
            let after = e.counters;
            self.counters.requests += after.requests - before.requests;
            self.counters.errors += after.errors - before.errors;
            self.counters.notifies += after.notifies - before.notifies;
        }
        self.counters.kicks += 1;
        more
    }
}
