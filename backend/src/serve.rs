//! The request loop every ring back end runs, written once.
//!
//! Per wake-up: copy each request out of the ring (the ring view does the
//! copy-before-validate), answer it, push the response; publish (Xen's
//! notify rule decides whether the front end is told); re-arm `req_event`
//! and check once more before sleeping. Work per call is bounded by a
//! budget so one guest cannot hold a device thread.

use crate::ring_page::RingPage;
use ring_buffers::{BackRing, Pod, RingError};

/// A device that answers requests on one back ring.
pub trait RingService {
    /// Request type.
    type Req: Pod;
    /// Response type.
    type Rsp: Pod;

    /// The ring.
    fn ring(&mut self) -> &mut BackRing<RingPage, Self::Req, Self::Rsp>;
    /// Handles one (already copied) request and returns its response.
    fn answer(&mut self, req: &Self::Req) -> Self::Rsp;
    /// Budget units answering `req` costs (default 1): a request whose work
    /// grows with its size (a large discard) costs more, so a wake-up does
    /// bounded work whatever the guest asks.
    fn cost(&self, _req: &Self::Req) -> usize {
        1
    }
    /// Publishes pushed responses, notifying the front end if Xen's rule
    /// says it waits. Called at least once per batch.
    fn publish(&mut self);
    /// Called after each response is pushed (e.g. to publish early so a
    /// batch never outgrows the ring). Default: nothing.
    fn pushed(&mut self) {}
    /// Whether a corrupt ring stopped the device.
    fn stopped(&self) -> bool;
    /// Stops the device for good: the guest corrupted its ring. Implementations
    /// log the error with the device's name.
    fn stop(&mut self, e: RingError);

    /// Handles everything on the ring. Returns the number of requests.
    fn process(&mut self) -> usize
    where
        Self: Sized,
    {
        self.process_budget(usize::MAX).0
    }

    /// Like [`process`](Self::process) but stops once `budget` units are
    /// spent (see [`cost`](Self::cost); one per request by default);
    /// also returns whether requests were left on the ring. A stopped
    /// device does nothing.
    fn process_budget(&mut self, budget: usize) -> (usize, bool)
    where
        Self: Sized,
    {
        if self.stopped() {
            return (0, false);
        }
        match serve(self, budget) {
            Ok(r) => r,
            Err((done, e)) => {
                self.stop(e);
                (done, false)
            }
        }
    }
}

/// Serves requests until the ring is empty (and the final check agrees) or
/// `budget` units (see [`RingService::cost`]) were spent. Returns the number answered and whether
/// requests were left. A corrupt ring is an error after publishing what
/// was answered; the caller stops the device.
pub fn serve<S: RingService>(s: &mut S, budget: usize) -> Result<(usize, bool), (usize, RingError)> {
    let (mut done, mut spent) = (0, 0usize);
    loop {
        loop {
            if spent >= budget {
                s.publish();
                let more = matches!(s.ring().unconsumed_requests(), Ok(n) if n > 0);
                return Ok((done, more));
            }
            match s.ring().pop_request() {
                Ok(Some(req)) => {
                    spent = spent.saturating_add(s.cost(&req));
                    let rsp = s.answer(&req);
                    if let Err(e) = s.ring().push_response(&rsp) {
                        s.publish();
                        return Err((done, e));
                    }
                    done += 1;
                    s.pushed();
                }
                Ok(None) => break,
                Err(e) => {
                    s.publish();
                    return Err((done, e));
                }
            }
        }
        s.publish();
        match s.ring().final_check_for_requests() {
            Ok(true) => continue,
            Ok(false) => return Ok((done, false)),
            Err(e) => return Err((done, e)),
        }
    }
}
