//! The Xen transport of the echo device: the echo ring page, grant
//! references and an event channel, set up by the xenbus handshake.
//!
//! Per wake-up (the request loop in `crate::serve`) it copies each request
//! off the ring, validates it (operation, range within the page), maps the
//! data grant, runs the [`EchoExecutor`] and writes the `EchoResponse`;
//! responses are published per batch with Xen's notify rule.

use super::executor::EchoExecutor;
use super::metrics::EchoMetrics;
use super::request::{Operation, Request};
use crate::ring_page::RingPage;
use crate::serve::RingService as _;
use crate::Notify;
use pv_abi::echo::*;
use pv_abi::xenbus::keys as xb;
use pv_util::ratelimit::SharedLogLimiter;
use ring_buffers::BackRing;
use std::sync::Arc;
use xen_domain::grant_table::GrantTable;

pub use crate::ring_page::ConnectError;

/// The Xen transport of one connected echo front end.
pub struct Echo {
    ring: BackRing<RingPage, EchoRequest, EchoResponse>,
    grants: Arc<GrantTable>,
    notify: Arc<dyn Notify>,
    device: EchoExecutor,
    metrics: Arc<EchoMetrics>,
    broken: bool,
    /// Guest-caused log lines: the device's budget, shared by its
    /// connections.
    pub(crate) log: SharedLogLimiter,
}

impl std::fmt::Debug for Echo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Echo").field("metrics", &self.metrics).finish_non_exhaustive()
    }
}

impl Echo {
    /// Maps the front end's ring (grant `ring_ref`, writable) and attaches.
    pub fn connect(
        grants: Arc<GrantTable>,
        ring_ref: u32,
        notify: Arc<dyn Notify>,
        metrics: Arc<EchoMetrics>,
        log: SharedLogLimiter,
    ) -> Result<Self, ConnectError> {
        let ring = crate::ring_page::attach_back_ring(&grants, ring_ref)?;
        let device = EchoExecutor;
        Ok(Echo { ring, grants, notify, device, metrics, broken: false, log })
    }

    /// Whether a corrupt ring stopped the device.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<EchoMetrics> {
        &self.metrics
    }

    fn reply(&mut self, req: &EchoRequest) -> EchoResponse {
        let mut rsp = EchoResponse { id: req.id, status: ECHO_RSP_OKAY, _pad: 0, value: 0 };
        match self.run(req) {
            Ok(v) => rsp.value = v,
            Err((status, why)) => {
                pv_util::limited_warn!(self.log, id = req.id, op = req.op, "echo: request refused: {why}");
                rsp.status = status;
            }
        }
        rsp
    }

    /// Validates `req`, maps its data grant and runs it.
    fn run(&self, req: &EchoRequest) -> Result<u32, (i16, String)> {
        let op = match req.op {
            ECHO_OP_PING => return self.device.execute(&Request { op: Operation::Ping, data: None }).map_err(einval),
            ECHO_OP_SUM => Operation::Sum,
            ECHO_OP_XOR => Operation::Xor { key: req.key },
            other => return Err((ECHO_RSP_EINVAL, format!("unknown operation {other}"))),
        };
        let (off, len) = (u64::from(req.offset), usize::from(req.len));
        if off + len as u64 > pv_abi::layout::PAGE_SIZE {
            return Err((ECHO_RSP_EINVAL, format!("range {off}+{len} crosses the page")));
        }
        let writable = op.writes_guest_memory();
        let page = self.grants.map(req.gref, writable).map_err(|e| (ECHO_RSP_EACCES, e.to_string()))?;
        let data = page.slice(off, len, writable).map_err(|e| (ECHO_RSP_EACCES, e.to_string()))?;
        self.device.execute(&Request { op, data: Some(&data) }).map_err(einval)
    }
}

fn einval(e: super::EchoError) -> (i16, String) {
    (ECHO_RSP_EINVAL, e.to_string())
}

impl crate::serve::RingService for Echo {
    type Req = EchoRequest;
    type Rsp = EchoResponse;

    fn ring(&mut self) -> &mut BackRing<RingPage, EchoRequest, EchoResponse> {
        &mut self.ring
    }

    fn answer(&mut self, req: &EchoRequest) -> EchoResponse {
        let rsp = self.reply(req);
        self.metrics.requests.inc();
        if rsp.status != ECHO_RSP_OKAY {
            self.metrics.errors.inc();
        }
        rsp
    }

    fn publish(&mut self) {
        if self.ring.push_responses_and_check_notify() {
            self.metrics.notifies.inc();
            self.notify.notify();
        }
    }

    fn stopped(&self) -> bool {
        self.broken
    }

    fn stop(&mut self, e: ring_buffers::RingError) {
        pv_util::limited_warn!(self.log, "echo: corrupt ring from the guest ({e}); device stopped");
        self.metrics.ring_errors.inc();
        self.broken = true;
    }
}

/// The echo device type: `--device echo` (no options); ids 0, 1, ...; all
/// echo devices share one device thread.
pub const DEVICE: crate::xenbus::DeviceType =
    crate::xenbus::DeviceType { name: DEVICE_TYPE, id: |i| i as u32, own_thread: false, build };

fn build(options: &str) -> Result<Box<dyn crate::xenbus::XenbusBackend>, crate::xenbus::BuildError> {
    if !options.is_empty() {
        return Err(crate::xenbus::BuildError::EchoOptions(options.to_string()));
    }
    Ok(Box::new(EchoBackend::default()))
}

/// The echo device as a [`SplitBackend`](crate::xenbus::SplitBackend):
/// disconnected until the front end publishes its `ring-ref`.
#[derive(Debug, Default)]
pub struct EchoBackend {
    metrics: Arc<EchoMetrics>,
    /// The connected transport, if any.
    pub echo: Option<Echo>,
}

impl EchoBackend {
    /// The metrics (shared with every connection).
    pub fn metrics(&self) -> &Arc<EchoMetrics> {
        &self.metrics
    }
}

impl crate::xenbus::SplitBackend for EchoBackend {
    fn device_type(&self) -> &'static str {
        DEVICE_TYPE
    }

    fn metrics(&self) -> Arc<dyn pv_util::metrics::DeviceMetrics> {
        self.metrics.clone()
    }

    fn features(&self) -> Vec<(String, String)> {
        vec![(keys::FEATURE_XOR.into(), "1".into())]
    }

    fn connect(
        &mut self,
        front: &dyn crate::xenbus::FrontendKeys,
        grants: &Arc<GrantTable>,
        notify: Arc<dyn Notify>,
        log: &SharedLogLimiter,
    ) -> Result<(), ConnectError> {
        let ring_ref = front.read_u32(xb::RING_REF).map_err(ConnectError::FrontendKey)?;
        let echo = Echo::connect(grants.clone(), ring_ref, notify, self.metrics.clone(), log.clone())?;
        self.echo = Some(echo);
        Ok(())
    }

    fn disconnect(&mut self) {
        self.echo = None;
    }

    fn process(&mut self) -> bool {
        self.metrics.kicks.inc();
        self.echo.as_mut().is_some_and(|e| e.process_budget(crate::xenbus::PROCESS_BUDGET).1)
    }
}
