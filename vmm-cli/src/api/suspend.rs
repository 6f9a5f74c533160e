//! `PUT /vm.suspend` and `PUT /vm.resume` of a suspended VM: Xen's
//! cooperative suspend ([`vmm::control::suspend_cooperatively`]): the
//! guest is asked through `control/shutdown = suspend` and parks itself
//! with `SCHEDOP_shutdown(SHUTDOWN_suspend)`; a resume cancels the suspend
//! (the hypercall returns 1) or, with `"fresh": true`, continues the guest
//! as a new domain (it returns 0 and the front ends reconnect).

use super::{control_error, with_view, Response, Shared};
use serde::Deserialize;
use std::time::Duration;
use vmm::control::{Resume, SuspendError, SUSPEND_TIMEOUT};
use xen_domain::domid::GUEST_DOMID;

/// `PUT /vm.suspend` body (optional).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Suspend {
    /// How long the guest has to suspend (default 60 s, libxl's).
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// `PUT /vm.resume` body (optional).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResumeBody {
    /// A suspended guest continues as a new domain (back ends reset, the
    /// hypercall returns 0) instead of seeing its suspend cancelled.
    #[serde(default)]
    fresh: bool,
}

fn body<T: Default + for<'a> Deserialize<'a>>(raw: &[u8], hint: &str) -> Result<T, Response> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(raw).map_err(|e| Response::error(400, format!("bad body: {e}; send {hint}")))
}

pub(super) fn suspend_error(e: SuspendError) -> Response {
    match e {
        SuspendError::Control(c) => control_error(c),
        SuspendError::TimedOut(_) | SuspendError::Reset(_) => Response::error(504, e.to_string()),
        SuspendError::Store { .. } => Response::error(500, e.to_string()),
    }
}

/// Suspends the guest cooperatively; 204 once it is suspended.
pub(super) fn suspend(s: &Shared, raw: &[u8]) -> Response {
    let b: Suspend = match body(raw, "{\"timeout_ms\": <ms>} or nothing") {
        Ok(b) => b,
        Err(r) => return r,
    };
    let timeout = b.timeout_ms.map_or(SUSPEND_TIMEOUT, Duration::from_millis).min(SUSPEND_TIMEOUT);
    let store = match with_view(s, |v| Ok(v.store.clone())) {
        Ok(st) => st,
        Err(r) => return r,
    };
    match vmm::control::suspend_cooperatively(&s.control, &store, GUEST_DOMID, timeout) {
        Ok(()) => Response::no_content(),
        Err(e) => suspend_error(e),
    }
}

/// Resumes: a suspended guest as the body says, a paused one by
/// unparking its vCPUs (`"fresh"` is refused for a VM that is not
/// suspended).
pub(super) fn resume(s: &Shared, raw: &[u8]) -> Response {
    let b: ResumeBody = match body(raw, "{\"fresh\": true} or nothing") {
        Ok(b) => b,
        Err(r) => return r,
    };
    if !s.control.is_suspended() {
        if b.fresh {
            return Response::error(409, "the VM is not suspended: \"fresh\" applies to a suspended VM only");
        }
        return match s.control.resume() {
            Ok(()) => Response::no_content(),
            Err(e) => control_error(e),
        };
    }
    let store = match with_view(s, |v| Ok(v.store.clone())) {
        Ok(st) => st,
        Err(r) => return r,
    };
    let how = if b.fresh { Resume::NewDomain } else { Resume::Cancelled };
    match vmm::control::resume_suspended(&s.control, &store, GUEST_DOMID, how, SUSPEND_TIMEOUT) {
        Ok(()) => Response::no_content(),
        Err(e) => suspend_error(e),
    }
}
