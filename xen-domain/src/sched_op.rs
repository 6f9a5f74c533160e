//! `sched_op` and `set_timer_op` (Xen's `xen/common/sched/core.c`,
//! `xen/include/public/sched.h`): yield, block, shutdown, and for PVH
//! guests `SCHEDOP_poll` and the one-shot timer.
//!
//! `SCHEDOP_poll` waits on the vCPU thread, bounded per exit
//! ([`MAX_POLL_WAIT`]), for a pending port or the poll's timeout.

use crate::domain::{Domain, HcResult, Shutdown};
use pv_abi::errno::{EINVAL, ENOSYS};
use pv_abi::hypercall::sched_op;
use std::time::{Duration, Instant};

/// Most ports one `SCHEDOP_poll` may name (Xen's limit in `do_poll`).
pub const MAX_POLL_PORTS: u32 = 128;
/// Longest a single `SCHEDOP_poll` exit waits before returning (the guest
/// polls again if nothing happened): bounded work per exit.
pub const MAX_POLL_WAIT: Duration = Duration::from_millis(50);

/// `sched_op(cmd, arg)`.
pub fn sched_op(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    match a[0] {
        sched_op::POLL if dom.pvh.is_some() => poll(dom, a[1]),
        // The vCPU blocks in the guest's own `sti; hlt` (handled in the
        // kernel with the in-kernel irqchip), so these return at once.
        sched_op::YIELD | sched_op::BLOCK => Ok(0),
        sched_op::SHUTDOWN => {
            let arg: sched_op::SchedShutdown = dom.ram.read_obj(a[1])?;
            dom.shutdown = Some(Shutdown { reason: arg.reason, code: a[2] as u32 });
            Ok(0)
        }
        _ => Err(ENOSYS),
    }
}

/// Reads `n` little-endian bytes at `i` of `raw` as an integer.
fn le(raw: &[u8], i: usize, n: usize) -> u64 {
    raw[i..i + n].iter().rev().fold(0, |v, b| (v << 8) | u64::from(*b))
}

/// `SCHEDOP_poll`: `{handle ports; u32 nr_ports; u64 timeout}`, 24 bytes
/// (16 in the compat layout).
fn poll(dom: &mut Domain, arg: u64) -> HcResult {
    let (ports_at, nr, timeout) = if dom.compat {
        let raw = dom.ram.read_vec(arg, 16)?;
        (le(&raw, 0, 4), le(&raw, 4, 4) as u32, le(&raw, 8, 8))
    } else {
        let raw = dom.ram.read_vec(arg, 24)?;
        (le(&raw, 0, 8), le(&raw, 8, 8) as u32, le(&raw, 16, 8))
    };
    if nr > MAX_POLL_PORTS {
        return Err(EINVAL);
    }
    let raw = dom.ram.read_vec(ports_at, u64::from(nr) * 4)?;
    let ports: Vec<u32> = raw.chunks_exact(4).map(|c| le(c, 0, 4) as u32).collect();
    let pvh = dom.pvh.as_mut().ok_or(ENOSYS)?;
    let deadline = (timeout != 0).then(|| pvh.clock.boot + Duration::from_nanos(timeout));
    let cap = Instant::now() + MAX_POLL_WAIT;
    while !ports.iter().any(|&p| dom.evtchn.is_pending(p)) {
        let now = Instant::now();
        if now >= cap || deadline.is_some_and(|d| now >= d) {
            break;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    publish_clock(dom)?;
    Ok(0)
}

/// Refreshes the pvclock in the shared-info page, if the guest placed it.
fn publish_clock(dom: &mut Domain) -> Result<(), i64> {
    let layout = dom.evtchn.layout();
    let Some(pvh) = dom.pvh.as_mut() else { return Ok(()) };
    if pvh.placed[0].is_some() {
        pvh.clock.publish(&dom.ram, pvh.layout.shared_info(), layout)?;
    }
    Ok(())
}

/// Arms the one-shot timer at absolute system time `ns` (0 cancels) and
/// refreshes the pvclock.
pub fn arm(dom: &mut Domain, ns: u64) -> Result<(), i64> {
    let pvh = dom.pvh.as_mut().ok_or(ENOSYS)?;
    let deadline = (ns != 0).then(|| pvh.clock.boot + Duration::from_nanos(ns));
    if let Some(t) = &pvh.timer {
        t.set(deadline);
    }
    publish_clock(dom)
}

/// `set_timer_op(timeout)`: absolute system time in ns (64-bit: `rdi`;
/// 32-bit: low half in `ebx`, high in `ecx`); 0 cancels.
pub fn set_timer_op(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    let ns = if dom.compat { a[0] | (a[1] << 32) } else { a[0] };
    arm(dom, ns).map(|()| 0)
}
