//! Xen's global callback vector (`HVM_PARAM_CALLBACK_IRQ` of type
//! `HVM_PARAM_CALLBACK_TYPE_VECTOR`): an event-channel upcall is injected
//! straight into the vCPU at the guest's vector, with no local-APIC EOI,
//! when the guest can take it (IF = 1).
//!
//! PVH guests run with KVM's split irqchip (local APIC in the kernel, the
//! PIC/IO-APIC side in user space), which keeps MSI routing and irqfds and
//! allows `KVM_INTERRUPT`: the vector is queued as an external interrupt
//! (LVT0 is set to ExtINT at boot, as firmware's virtual-wire mode does).
//! A device or timer thread raising an upcall marks it pending and kicks
//! the vCPU out of `KVM_RUN` (`immediate_exit` plus a signal, as QEMU
//! does); before each entry the vCPU thread injects it if the guest is
//! ready, or asks KVM for an interrupt-window exit. The same code runs on
//! VT-x/AMD-V: nothing depends on instruction emulation.

use crate::kvm_ioctl_nr::KVM_INTERRUPT;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;

/// The vCPU thread and its `kvm_run.immediate_exit` byte while it runs.
struct Target {
    thread: libc::pthread_t,
    immediate_exit: *mut u8,
}

// SAFETY: the pointer is only dereferenced under the line's mutex while
// the vCPU thread is inside `Vcpu::run` (it clears the target before the
// `kvm_run` mapping can go away); the thread id is plain data.
unsafe impl Send for Target {}

/// The callback-vector line of one vCPU.
#[derive(Default)]
pub struct CallbackLine {
    /// The vector, 0 while the guest has not chosen the vector type.
    vector: AtomicU8,
    pending: AtomicBool,
    target: Mutex<Option<Target>>,
}

impl std::fmt::Debug for CallbackLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackLine").field("vector", &self.vector).field("pending", &self.pending).finish()
    }
}

impl CallbackLine {
    /// Sets (0: clears) the vector.
    pub fn set_vector(&self, vector: u8) {
        self.vector.store(vector, Ordering::SeqCst);
    }

    /// The vector, if the guest chose the callback-vector type.
    pub fn vector(&self) -> Option<u8> {
        Some(self.vector.load(Ordering::SeqCst)).filter(|&v| v != 0)
    }

    /// An upcall: mark it pending and kick the vCPU out of `KVM_RUN`.
    pub fn raise(&self) {
        self.pending.store(true, Ordering::SeqCst);
        self.kick();
    }

    /// Makes the vCPU leave `KVM_RUN` without an upcall (a domain
    /// watchdog's expiry, which the vCPU loop then acts on).
    pub fn kick(&self) {
        let t = self.target.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = t.as_ref() {
            // SAFETY: `immediate_exit` points into the running vCPU's
            // `kvm_run` page (see `Target`); a one-byte atomic store is
            // what KVM expects from another thread.
            unsafe { AtomicU8::from_ptr(t.immediate_exit) }.store(1, Ordering::SeqCst);
            // SAFETY: signals a live thread of this process (the vCPU
            // thread, which installed a no-op handler for the kick signal).
            unsafe { libc::pthread_kill(t.thread, crate::watchdog::kick_signal()) };
        }
    }

    /// Called by the vCPU thread when it starts (`Some`) and stops (`None`) running.
    pub fn set_target(&self, immediate_exit: Option<*mut u8>) {
        let mut t = self.target.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: `pthread_self` has no preconditions.
        *t = immediate_exit.map(|p| Target { thread: unsafe { libc::pthread_self() }, immediate_exit: p });
    }

    /// Before entering the guest: inject the pending upcall if the guest
    /// can take it, else ask for an interrupt-window exit.
    pub fn before_run(&self, fd: &mut kvm_ioctls::VcpuFd) {
        let Some(vector) = self.vector() else { return };
        let run = fd.get_kvm_run();
        run.immediate_exit = 0;
        if !self.pending.load(Ordering::SeqCst) {
            run.request_interrupt_window = 0;
            return;
        }
        if run.ready_for_interrupt_injection != 0 && run.if_flag != 0 {
            let irq = kvm_bindings::kvm_interrupt { irq: u32::from(vector) };
            // SAFETY: KVM_INTERRUPT reads one `kvm_interrupt` from a live
            // reference; the fd is this vCPU's.
            let r = unsafe { vmm_sys_util::ioctl::ioctl_with_ref(&*fd, KVM_INTERRUPT, &irq) };
            if r == 0 {
                self.pending.store(false, Ordering::SeqCst);
                fd.get_kvm_run().request_interrupt_window = 0;
                return;
            }
            tracing::debug!("KVM_INTERRUPT failed: {}", std::io::Error::last_os_error());
        }
        fd.get_kvm_run().request_interrupt_window = 1;
    }
}

/// Sets LVT0 of vCPU 0's local APIC to ExtINT, unmasked (virtual-wire
/// mode), so `KVM_INTERRUPT` vectors reach the vCPU under the split irqchip.
pub fn virtual_wire(fd: &kvm_ioctls::VcpuFd) -> Result<(), kvm_ioctls::Error> {
    const APIC_LVT0: usize = 0x350;
    const APIC_MODE_EXTINT: u32 = 0x700;
    let mut lapic = fd.get_lapic()?;
    let bytes = APIC_MODE_EXTINT.to_le_bytes();
    for (i, b) in bytes.iter().enumerate() {
        lapic.regs[APIC_LVT0 + i] = *b as libc::c_char;
    }
    fd.set_lapic(&lapic)
}

/// Number of IO-APIC pins the split irqchip reserves (routes 0..24; the
/// upcall MSI uses GSI 24).
const SPLIT_IRQCHIP_PINS: u64 = 24;

/// Creates the split irqchip (local APIC in the kernel).
pub fn split_irqchip(vm: &kvm_ioctls::VmFd) -> Result<(), kvm_ioctls::Error> {
    let cap = kvm_bindings::kvm_enable_cap {
        cap: kvm_bindings::KVM_CAP_SPLIT_IRQCHIP,
        args: [SPLIT_IRQCHIP_PINS, 0, 0, 0],
        ..Default::default()
    };
    vm.enable_cap(&cap)
}
