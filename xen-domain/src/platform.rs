//! What the hypervisor needs from the machine, and nothing more.
//!
//! The `vmm` crate implements [`Platform`] with KVM (an MSI irqfd or the
//! PVH callback vector for upcalls, ioeventfds for doorbells, memory slots
//! for placed pages, `rdtsc` for time); `fake::FakePlatform` (feature
//! `fake`) records the calls for unit tests and fuzzing. Every method is
//! cheap and never blocks.

use vmm_sys_util::eventfd::EventFd;

/// The machine refused an operation (the hypercall reports `EIO`/`EINVAL`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the machine refused {what}: {why}")]
pub struct PlatformError {
    /// Which operation.
    pub what: &'static str,
    /// Why (the host errno's text).
    pub why: String,
}

/// The machine under a domain.
pub trait Platform: Send + Sync {
    /// Interrupts vCPU `vcpu` for an event-channel upcall (the caller has
    /// already set `evtchn_upcall_pending`): through the upcall vector
    /// routing, or the callback vector if the guest chose one.
    fn raise_upcall(&self, vcpu: u32);

    /// Makes a guest write of `port` to the doorbell I/O port
    /// (`pv_abi::hypercall::DOORBELL_PORT`) signal `wake` without a
    /// hypercall exit.
    fn bind_doorbell(&self, port: u32, wake: &EventFd) -> Result<(), PlatformError>;

    /// Undoes [`bind_doorbell`](Self::bind_doorbell).
    fn unbind_doorbell(&self, port: u32, wake: &EventFd) -> Result<(), PlatformError>;

    /// Maps the VMM page at guest-physical `vmm_page` also at guest frame
    /// `gpfn` (a Xen PVH guest placing shared info or a grant frame);
    /// `alias` numbers the placeable page (one mapping per alias). `gpfn`
    /// may be a RAM frame (never a VMM page): the placed page hides the RAM
    /// page there until [`remove_page`](Self::remove_page).
    fn place_page(&self, alias: usize, vmm_page: u64, gpfn: u64) -> Result<(), PlatformError>;

    /// Removes alias `alias`, mapped at `gpfn` (a RAM frame under it shows
    /// again).
    fn remove_page(&self, alias: usize, gpfn: u64) -> Result<(), PlatformError>;

    /// Gives the host memory behind guest RAM frame `gpfn` back to the host
    /// (`madvise(MADV_DONTNEED)`): the guest freed it; the frame stays
    /// mapped and reads zero.
    fn discard_page(&self, gpfn: u64) -> Result<(), PlatformError>;

    /// `HVMOP_set_evtchn_upcall_vector`: vCPU `vcpu`'s upcalls arrive at
    /// its local APIC as `vector` from now on (Xen's per-vCPU
    /// `arch.hvm.evtchn_upcall_vector`).
    fn set_upcall_vector(&self, vcpu: u32, vector: u8) -> Result<(), PlatformError>;

    /// `HVM_PARAM_CALLBACK_IRQ` of the vector type: upcalls are injected
    /// straight at `vector` (0: back to the upcall vector routing).
    fn set_callback_vector(&self, vector: u8);

    /// The host TSC now, which the guest's TSC is a fixed offset of: the
    /// pvclock's `tsc_timestamp` ([`crate::time::PvClock::publish`]).
    fn host_tsc(&self) -> u64 {
        crate::time::host_tsc()
    }
}
