//! Event channels, guest side: the upcall handler, over the FIFO ABI
//! ([`crate::evtchn_fifo`]) when the VMM offers it, else the 2-level
//! bitmaps of the shared-info page (as Linux chooses: FIFO if
//! `EVTCHNOP_init_control` succeeds); and the `event_channel_op` wrappers.
//! The guest command-line word `evtchn=2l` forces 2-level.
//!
//! The upcall handler only records which ports fired (a counter per port);
//! drivers wait with [`wait_until`] and look at their rings. No function
//! pointers are stored, so nothing here needs `unsafe`.
//!
//! SMP: each vCPU takes its own upcalls (its local APIC, its `vcpu_info`
//! slot, its FIFO queues). Each port belongs to one vCPU ([`port_cpu`]: 0
//! unless [`bind_ipi`] or [`bind_vcpu`] said otherwise); on 2-level the
//! pending bitmap is shared, so a vCPU's scan takes only its own ports
//! and leaves the others' for their vCPU (whose selector bit Xen set), as
//! Linux's `cpu_evtchn_mask`.

use crate::arch;
use crate::cpu;
use crate::hypercall::{event_channel_op as op, Errno};
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::SeqCst};
use pv_abi::event_channel::*;
use pv_abi::shared_info::{evtchn_word_bit, SharedInfo, BITS_PER_WORD};

/// Ports this guest tracks (the VMM offers no more).
pub const MAX_PORTS: usize = pv_abi::event_channel::MAX_PORTS as usize;

static SHARED_INFO: AtomicU64 = AtomicU64::new(0);
static PORT_EVENTS: [AtomicU32; MAX_PORTS] = [const { AtomicU32::new(0) }; MAX_PORTS];
static UPCALLS: AtomicU64 = AtomicU64::new(0);
/// Per selector bit: how often the upcall handler found it set (the
/// upcall-pending edge of the ports in that bitmap word).
static WORD_SCANS: [AtomicU32; BITS_PER_WORD as usize] = [const { AtomicU32::new(0) }; BITS_PER_WORD as usize];
/// FIFO: per port, how often the upcall took it off a queue.
static DEQUEUES: [AtomicU32; MAX_PORTS] = [const { AtomicU32::new(0) }; MAX_PORTS];
/// Per port: the vCPU it notifies (Xen's `notify_vcpu_id`, as this guest
/// bound it).
static PORT_CPU: [AtomicU8; MAX_PORTS] = [const { AtomicU8::new(0) }; MAX_PORTS];
/// Events a vCPU's upcall found on a port bound to another vCPU (0 unless
/// delivery is misrouted).
static MISROUTED: AtomicU64 = AtomicU64::new(0);

const APIC_SVR: u32 = 0xf0;
const APIC_TPR: u32 = 0x80;
const APIC_EOI: u32 = 0xb0;
const MSR_APIC_BASE: u32 = 0x1b;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;
/// x2APIC registers are MSRs at 0x800 + (xAPIC offset >> 4).
const fn x2apic_msr(reg: u32) -> u32 {
    0x800 + (reg >> 4)
}

/// Whether the local APIC runs in x2APIC mode (MSR access, no MMIO page
/// to keep mapped — which matters once the guest runs on page tables it
/// built itself).
static X2APIC: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

fn apic_write(reg: u32, value: u32) {
    if X2APIC.load(SeqCst) {
        arch::wrmsr(x2apic_msr(reg), value as u64);
    } else {
        arch::lapic_write(reg, value);
    }
}

fn si_word(off: usize) -> &'static AtomicU64 {
    let base = SHARED_INFO.load(SeqCst);
    assert!(base != 0, "event channels used before evtchn::init");
    // SAFETY: `base` is the shared-info page from start-info (identity
    // mapped, assigned for the guest's life); `off` comes from the pv-abi
    // offset helpers and is 8-byte aligned inside the page.
    unsafe { arch::shared_u64(base + off as u64) }
}

/// Chooses the ABI (FIFO if `fifo` and the VMM accepts it, else
/// 2-level), then enables the local APIC and interrupts. The IDT must be
/// loaded first (`interrupts::init`, which `rt` runs just before).
pub fn init(shared_info: u64, fifo: bool) {
    SHARED_INFO.store(shared_info, SeqCst);
    if fifo {
        if let Err(e) = crate::evtchn_fifo::init() {
            if crate::evtchn_fifo::active() {
                crate::println!("evtchn: FIFO event array refused ({}): events lost", e.name());
            }
        }
    }
    init_cpu();
}

/// Enables the running vCPU's local APIC (x2APIC mode when offered) and
/// its interrupts: what each vCPU does for itself before it can take
/// upcalls (vCPU 0 in [`init`], the others as they come up).
pub fn init_cpu() {
    if arch::has_x2apic() {
        arch::wrmsr(MSR_APIC_BASE, arch::rdmsr(MSR_APIC_BASE) | APIC_BASE_ENABLE | APIC_BASE_X2APIC);
        X2APIC.store(true, SeqCst);
    }
    apic_write(APIC_TPR, 0);
    apic_write(APIC_SVR, 0x1ff); // enabled, spurious vector 0xff
    arch::sti();
}

/// Writes a local-APIC register of the running vCPU (`reg` its xAPIC
/// offset), through the x2APIC MSRs when enabled.
pub fn apic_reg_write(reg: u32, value: u32) {
    apic_write(reg, value);
}

/// The ABI in use: `"fifo"` or `"2-level"`.
pub fn abi() -> &'static str {
    if crate::evtchn_fifo::active() {
        "fifo"
    } else {
        "2-level"
    }
}

/// Whether [`init`] ran.
pub fn initialized() -> bool {
    SHARED_INFO.load(SeqCst) != 0
}

/// Xen's 2-level scan of the shared-info bitmaps on vCPU `cpu`: its
/// selector word, then each bitmap word it names, taking only the ports
/// bound to `cpu`.
fn scan_2level(cpu: u32) {
    loop {
        let mut sel = si_word(SharedInfo::pending_sel_offset(cpu as usize)).swap(0, SeqCst);
        if sel == 0 {
            break;
        }
        // Visit only set bits (trailing-zero scans), as Xen guests do:
        // the handler's cost is per event, not per bitmap word.
        while sel != 0 {
            let word = sel.trailing_zeros() as usize;
            sel &= sel - 1;
            WORD_SCANS[word].fetch_add(1, SeqCst);
            let pending = si_word(SharedInfo::pending_word_offset(word));
            let mask = si_word(SharedInfo::mask_word_offset(word)).load(SeqCst);
            let mut ready = pending.load(SeqCst) & !mask;
            while ready != 0 {
                let bit = ready.trailing_zeros();
                ready &= ready - 1;
                let port = word as u32 * BITS_PER_WORD + bit;
                if port_cpu(port) != cpu {
                    continue;
                }
                pending.fetch_and(!(1u64 << bit), SeqCst);
                deliver(cpu, port);
            }
        }
    }
}

/// Counts an event on `port`, taken by vCPU `cpu`'s upcall (and, should
/// the port be bound to another vCPU, a misrouted one).
#[inline(always)]
fn deliver(cpu: u32, port: u32) {
    if let (Some(c), Some(owner)) = (PORT_EVENTS.get(port as usize), PORT_CPU.get(port as usize)) {
        c.fetch_add(1, SeqCst);
        if u32::from(owner.load(SeqCst)) != cpu {
            MISROUTED.fetch_add(1, SeqCst);
        }
    }
}

/// The upcall (interrupt vector `UPCALL_VECTOR`) on the running vCPU: its
/// FIFO queues or Xen's 2-level scan, through its `vcpu_info` slot.
pub extern "C" fn pv_upcall_handler() {
    UPCALLS.fetch_add(1, SeqCst);
    let cpu = cpu::id();
    cpu::get(cpu).upcalls.fetch_add(1, SeqCst);
    let base = SHARED_INFO.load(SeqCst);
    if base != 0 && (cpu as usize) < cpu::MAX_CPUS {
        let pending_at = base + SharedInfo::upcall_pending_offset(cpu as usize) as u64;
        // SAFETY: byte inside the shared-info page (see `si_word`): one of
        // its 32 `vcpu_info` slots, `cpu` < MAX_CPUS = 32.
        let upcall_pending = unsafe { arch::shared_u8(pending_at) };
        upcall_pending.store(0, SeqCst);
        if crate::evtchn_fifo::active() {
            let dequeued = |port: u32| {
                if let Some(c) = DEQUEUES.get(port as usize) {
                    c.fetch_add(1, SeqCst);
                }
            };
            crate::evtchn_fifo::handle_events(cpu, |p| deliver(cpu, p), dequeued);
        } else {
            scan_2level(cpu);
        }
    }
    apic_write(APIC_EOI, 0);
}

/// The vCPU `port` notifies, as this guest bound it.
pub fn port_cpu(port: u32) -> u32 {
    PORT_CPU.get(port as usize).map_or(0, |c| u32::from(c.load(SeqCst)))
}

/// Events any vCPU's upcall found on a port bound to another vCPU.
pub fn misrouted() -> u64 {
    MISROUTED.load(SeqCst)
}

fn set_port_cpu(port: u32, vcpu: u32) {
    if let Some(c) = PORT_CPU.get(port as usize) {
        c.store(vcpu.min(cpu::MAX_CPUS as u32 - 1) as u8, SeqCst);
    }
}

/// `EVTCHNOP_bind_ipi`: a new port whose sends interrupt `vcpu` (Xen
/// binds it for good).
pub fn bind_ipi(vcpu: u32) -> Result<u32, Errno> {
    let mut a = EvtchnBindIpi { vcpu, port: 0 };
    op(EVTCHNOP_BIND_IPI, &mut a)?;
    set_port_cpu(a.port, vcpu);
    Ok(a.port)
}

/// `EVTCHNOP_bind_vcpu`: `port`'s events go to `vcpu` from now on.
pub fn bind_vcpu(port: u32, vcpu: u32) -> Result<(), Errno> {
    op(EVTCHNOP_BIND_VCPU, &mut EvtchnBindVcpu { port, vcpu })?;
    set_port_cpu(port, vcpu);
    Ok(())
}

/// Signals end of interrupt to the local APIC (for other interrupt
/// handlers than the upcall's).
pub fn eoi() {
    apic_write(APIC_EOI, 0);
}

/// Upcall interrupts taken so far.
pub fn upcalls() -> u64 {
    UPCALLS.load(SeqCst)
}

/// Upcalls whose selector named the bitmap word of `port` (for a port
/// alone in its word: the upcall-pending edges raised for it). On FIFO:
/// how often the port was taken off a queue (linked for delivery).
pub fn word_scans(port: u32) -> u32 {
    if crate::evtchn_fifo::active() {
        return DEQUEUES.get(port as usize).map_or(0, |c| c.load(SeqCst));
    }
    let word = (port / BITS_PER_WORD) as usize;
    WORD_SCANS.get(word).map_or(0, |c| c.load(SeqCst))
}

/// Events delivered on `port` so far.
pub fn events(port: u32) -> u32 {
    PORT_EVENTS.get(port as usize).map_or(0, |c| c.load(SeqCst))
}

/// Waits (halting between upcalls) until `cond` holds. `cond` is checked
/// with interrupts off so a wake-up between the check and the halt is not
/// lost.
pub fn wait_until(mut cond: impl FnMut() -> bool) {
    loop {
        arch::cli();
        if cond() {
            arch::sti();
            return;
        }
        arch::sti_hlt();
    }
}

/// `EVTCHNOP_alloc_unbound`: a new port that `remote_dom` may bind.
pub fn alloc_unbound(remote_dom: DomId) -> Result<u32, Errno> {
    let mut a = EvtchnAllocUnbound { dom: DOMID_SELF, remote_dom, port: 0 };
    op(EVTCHNOP_ALLOC_UNBOUND, &mut a)?;
    Ok(a.port)
}

/// `EVTCHNOP_bind_interdomain`: connects to `remote_port` of `remote_dom`.
pub fn bind_interdomain(remote_dom: DomId, remote_port: u32) -> Result<u32, Errno> {
    let mut a = EvtchnBindInterdomain { remote_dom, _pad: 0, remote_port, local_port: 0 };
    op(EVTCHNOP_BIND_INTERDOMAIN, &mut a)?;
    Ok(a.local_port)
}

/// `EVTCHNOP_send`: notifies the remote end (one exit to the VMM).
pub fn send(port: u32) -> Result<(), Errno> {
    op(EVTCHNOP_SEND, &mut EvtchnSend { port }).map(|_| ())
}

/// Notifies the remote end through the doorbell (no userspace exit when
/// the VMM bound an ioeventfd to the port).
pub fn notify(port: u32) {
    arch::doorbell(port);
}

/// `EVTCHNOP_close`.
pub fn close(port: u32) -> Result<(), Errno> {
    op(EVTCHNOP_CLOSE, &mut EvtchnClose { port }).map(|_| ())
}

/// `EVTCHNOP_unmask`: clears the mask; an event that arrived while masked
/// is delivered now, once.
pub fn unmask(port: u32) -> Result<(), Errno> {
    op(EVTCHNOP_UNMASK, &mut EvtchnUnmask { port }).map(|_| ())
}

/// `EVTCHNOP_status`: the port's state (`EVTCHNSTAT_*`).
pub fn status(port: u32) -> Result<u32, Errno> {
    let mut a = EvtchnStatus { dom: DOMID_SELF, port, ..Default::default() };
    op(EVTCHNOP_STATUS, &mut a)?;
    Ok(a.status)
}

/// Masks `port` (a plain bit set in shared-info, or MASKED in its FIFO
/// event word, as Xen guests do).
pub fn mask(port: u32) {
    if crate::evtchn_fifo::active() {
        return crate::evtchn_fifo::mask(port);
    }
    if let Some((word, bit)) = evtchn_word_bit(port) {
        si_word(SharedInfo::mask_word_offset(word)).fetch_or(1 << bit, SeqCst);
    }
}

/// Whether `port`'s pending bit is set.
pub fn is_pending(port: u32) -> bool {
    if crate::evtchn_fifo::active() {
        return crate::evtchn_fifo::is_pending(port);
    }
    evtchn_word_bit(port).is_some_and(|(w, b)| si_word(SharedInfo::pending_word_offset(w)).load(SeqCst) & (1 << b) != 0)
}

/// Sleeps until `ring` has a response to consume: re-arms `rsp_event`
/// (Xen's final check) so the back end notifies `port`, then halts between
/// upcalls. Returns at once if a response is already there. Every front
/// end's blocking wait is this.
pub fn wait_for_responses<M, Req, Rsp>(
    ring: &mut ring_buffers::FrontRing<M, Req, Rsp>,
    port: u32,
) -> Result<(), ring_buffers::RingError>
where
    M: ring_buffers::RingMemory,
    Req: ring_buffers::Pod,
    Rsp: ring_buffers::Pod,
{
    loop {
        if ring.final_check_for_responses()? {
            return Ok(());
        }
        let seen = events(port);
        let mut err = None;
        wait_until(|| {
            events(port) != seen
                || match ring.unconsumed_responses() {
                    Ok(n) => n > 0,
                    Err(e) => {
                        err = Some(e);
                        true
                    }
                }
        });
        if let Some(e) = err {
            return Err(e);
        }
    }
}
