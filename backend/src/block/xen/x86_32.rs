//! blkback for front ends using the 32-bit ring layout (`protocol =
//! x86_32-abi`, e.g. GRUB's i386 Xen PVH build): the ring holds
//! [`x86_32::Request`]s and [`x86_32::Response`]s; each request is
//! converted to the native layout and answered by the same transport logic
//! ([`Blkback`]), its response converted back.

use super::Blkback;
use crate::ring_page::{ConnectError, RingPage};
use crate::serve::RingService;
use crate::Notify;
use pv_abi::blkif::x86_32;
use ring_buffers::BackRing;
use std::sync::Arc;

/// blkback over a 32-bit-layout ring.
pub struct Blkback32 {
    ring: BackRing<RingPage, x86_32::Request, x86_32::Response>,
    /// The transport logic. Its own (native-layout) view of the ring page
    /// is never used for this front end.
    pub inner: Blkback,
}

impl std::fmt::Debug for Blkback32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blkback32").field("inner", &self.inner).finish()
    }
}

impl Blkback32 {
    /// Maps the front end's ring (grant `ring_ref`) and attaches in the
    /// 32-bit layout.
    pub fn connect(
        grants: Arc<xen_domain::grant_table::GrantTable>,
        ring_ref: u32,
        notify: Arc<dyn Notify>,
        device: super::BlockExecutor,
        log: pv_util::ratelimit::SharedLogLimiter,
    ) -> Result<Self, ConnectError> {
        let ring = crate::ring_page::attach_back_ring(&grants, ring_ref)?;
        let inner = Blkback::connect(grants, ring_ref, notify, device, log)?;
        Ok(Blkback32 { ring, inner })
    }
}

impl RingService for Blkback32 {
    type Req = x86_32::Request;
    type Rsp = x86_32::Response;

    fn ring(&mut self) -> &mut BackRing<RingPage, x86_32::Request, x86_32::Response> {
        &mut self.ring
    }

    fn answer(&mut self, req: &x86_32::Request) -> x86_32::Response {
        self.inner.reply(&req.to_native()).into()
    }

    fn cost(&self, req: &x86_32::Request) -> usize {
        self.inner.cost(&req.to_native())
    }

    fn publish(&mut self) {
        let b = &mut self.inner;
        b.count_answered();
        if b.unpublished == 0 {
            return;
        }
        b.unpublished = 0;
        b.in_flight.clear();
        b.metrics().batches.inc();
        if self.ring.push_responses_and_check_notify() {
            b.metrics().notifies.inc();
            b.notify.notify();
        }
    }

    fn pushed(&mut self) {
        self.inner.unpublished += 1;
        if self.inner.unpublished >= self.ring.size() {
            self.publish();
        }
    }

    fn stopped(&self) -> bool {
        self.inner.broken
    }

    fn stop(&mut self, e: ring_buffers::RingError) {
        self.inner.stop(e);
    }
}
