//! The hypervisor's [`Platform`] on KVM.
//!
//! - Upcalls: an eventfd registered as an irqfd on [`UPCALL_GSI`], routed
//!   as an MSI to the guest's upcall vector (`KVM_SET_GSI_ROUTING`); or,
//!   once a PVH guest chose `HVM_PARAM_CALLBACK_IRQ` of the vector type,
//!   the callback line that injects the vector with `KVM_INTERRUPT`
//!   ([`crate::pvh::callback`]).
//! - Doorbells: one ioeventfd per bound port on
//!   [`DOORBELL_PORT`](pv_abi::hypercall::DOORBELL_PORT), datamatch = port.
//! - Placed pages: one extra memory slot per placeable page, aliasing the
//!   VMM page's host memory at the guest frame.

use crate::error::VmmError;
use crate::memory::GuestRam;
use crate::pvh::callback::CallbackLine;
use kvm_bindings::{kvm_irq_routing_entry, kvm_userspace_memory_region, KvmIrqRouting};
use kvm_ioctls::{IoEventAddress, VmFd};
use pv_abi::hypercall::DOORBELL_PORT;
use pv_abi::layout::PAGE_SIZE;
use std::sync::{Arc, Mutex};
use vmm_sys_util::eventfd::EventFd;
use xen_domain::platform::{Platform, PlatformError};

pub use pv_abi::event_channel::UPCALL_VECTOR;
/// The GSI the upcall irqfd is routed through.
pub const UPCALL_GSI: u32 = 24;
/// KVM memory slot of the first placed page (slots 0 and 1 are RAM).
const FIRST_ALIAS_SLOT: u32 = 2;

/// A GSI routing entry delivering an MSI with `vector` to APIC id 0
/// (fixed delivery, edge). `KVM_SET_GSI_ROUTING` replaces the whole table,
/// so [`KvmPlatform`] keeps every route and installs them all together.
pub fn msi_route(gsi: u32, vector: u32) -> kvm_irq_routing_entry {
    let mut entry = kvm_irq_routing_entry { gsi, type_: kvm_bindings::KVM_IRQ_ROUTING_MSI, ..Default::default() };
    entry.u.msi.address_lo = pv_abi::layout::LAPIC_BASE as u32;
    entry.u.msi.data = vector;
    entry
}

/// The GSI routing table: the upcall route plus the devices' routes.
/// `KVM_SET_GSI_ROUTING` replaces the whole table, so every change
/// installs all of them again (issue 18 item 6: a PVH guest choosing its
/// upcall vector must not lose the virtio routes).
#[derive(Debug, Default)]
struct Routes {
    upcall_vector: u8,
    devices: Vec<kvm_irq_routing_entry>,
}

impl Routes {
    fn table(&self) -> Vec<kvm_irq_routing_entry> {
        let mut all = vec![msi_route(UPCALL_GSI, u32::from(self.upcall_vector))];
        all.extend(self.devices.iter().copied());
        all
    }

    fn install(&self, vm: &VmFd) -> Result<(), kvm_ioctls::Error> {
        let routing = KvmIrqRouting::from_entries(&self.table()).map_err(|_| kvm_ioctls::Error::new(libc::E2BIG))?;
        vm.set_gsi_routing(&routing)
    }
}

fn refused(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> PlatformError {
    move |e| PlatformError { what, why: e.to_string() }
}

/// KVM under a domain.
pub struct KvmPlatform {
    vm: Arc<VmFd>,
    ram: GuestRam,
    upcall: EventFd,
    routes: Mutex<Routes>,
    /// The PVH callback-vector line of vCPU 0 (the vCPU thread injects it).
    pub callback: Arc<CallbackLine>,
}

impl std::fmt::Debug for KvmPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmPlatform").field("callback", &self.callback).finish_non_exhaustive()
    }
}

impl KvmPlatform {
    /// Sets up the upcall path (MSI route + irqfd). Needs the in-kernel
    /// (or split) irqchip.
    pub fn new(vm: Arc<VmFd>, ram: GuestRam) -> Result<Self, VmmError> {
        let upcall = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| VmmError::Io("eventfd", e))?;
        let routes = Routes { upcall_vector: UPCALL_VECTOR, devices: Vec::new() };
        routes.install(&vm).map_err(VmmError::kvm("KVM_SET_GSI_ROUTING"))?;
        vm.register_irqfd(&upcall, UPCALL_GSI).map_err(VmmError::kvm("KVM_IRQFD"))?;
        Ok(KvmPlatform { vm, ram, upcall, routes: Mutex::new(routes), callback: Arc::default() })
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds the devices' GSI routes (virtio MSIs) to the table and
    /// installs it, the upcall route included.
    pub fn add_device_routes(&self, extra: &[kvm_irq_routing_entry]) -> Result<(), VmmError> {
        let mut r = self.routes();
        r.devices.extend_from_slice(extra);
        r.install(&self.vm).map_err(VmmError::kvm("KVM_SET_GSI_ROUTING"))
    }

    /// Every route installed now, the upcall route first (what the last
    /// `KVM_SET_GSI_ROUTING` passed; KVM cannot be asked).
    pub fn installed_routes(&self) -> Vec<kvm_irq_routing_entry> {
        self.routes().table()
    }

    fn alias_region(&self, alias: usize, vmm_page: u64, gpa: u64, size: u64) -> Option<kvm_userspace_memory_region> {
        let host = self.ram.host_address(vmm_page)?;
        Some(kvm_userspace_memory_region {
            slot: FIRST_ALIAS_SLOT + alias as u32,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: host as u64,
        })
    }
}

impl Platform for KvmPlatform {
    fn raise_upcall(&self, _vcpu: u32) {
        if self.callback.vector().is_some() {
            self.callback.raise();
        } else if let Err(e) = self.upcall.write(1) {
            tracing::warn!("cannot signal the upcall irqfd: {e}");
        }
    }

    fn bind_doorbell(&self, port: u32, wake: &EventFd) -> Result<(), PlatformError> {
        let addr = IoEventAddress::Pio(u64::from(DOORBELL_PORT));
        self.vm.register_ioevent(wake, &addr, port).map_err(refused("KVM_IOEVENTFD"))
    }

    fn unbind_doorbell(&self, port: u32, wake: &EventFd) -> Result<(), PlatformError> {
        let addr = IoEventAddress::Pio(u64::from(DOORBELL_PORT));
        self.vm.unregister_ioevent(wake, &addr, port).map_err(refused("KVM_IOEVENTFD deassign"))
    }

    fn place_page(&self, alias: usize, vmm_page: u64, gpfn: u64) -> Result<(), PlatformError> {
        let gpa = gpfn.checked_mul(PAGE_SIZE).ok_or(PlatformError { what: "place_page", why: "frame".into() })?;
        let region = self
            .alias_region(alias, vmm_page, gpa, PAGE_SIZE)
            .ok_or(PlatformError { what: "place_page", why: "VMM page outside RAM".into() })?;
        // SAFETY: the host page is one page of guest RAM's mmap, which
        // lives as long as the VM (both owned by `Vm`); the caller checked
        // that `gpfn` lies in the hole, where no other slot is.
        unsafe { self.vm.set_user_memory_region(region) }.map_err(refused("KVM_SET_USER_MEMORY_REGION"))
    }

    fn remove_page(&self, alias: usize, gpfn: u64) -> Result<(), PlatformError> {
        let region = self
            .alias_region(alias, 0, gpfn.wrapping_mul(PAGE_SIZE), 0)
            .ok_or(PlatformError { what: "remove_page", why: "no RAM".into() })?;
        // SAFETY: deleting a slot (size 0) a placement created; no host
        // memory is handed to KVM.
        unsafe { self.vm.set_user_memory_region(region) }.map_err(refused("KVM_SET_USER_MEMORY_REGION"))
    }

    fn set_upcall_vector(&self, vector: u8) -> Result<(), PlatformError> {
        let mut r = self.routes();
        let old = std::mem::replace(&mut r.upcall_vector, vector);
        r.install(&self.vm).map_err(|e| {
            r.upcall_vector = old;
            refused("KVM_SET_GSI_ROUTING")(e)
        })
    }

    fn set_callback_vector(&self, vector: u8) {
        self.callback.set_vector(vector);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xen_domain::guest_memory::Slot;

    /// Issue 18 item 6: `HVMOP_set_evtchn_upcall_vector` re-routes the
    /// upcall GSI, and `KVM_SET_GSI_ROUTING` replaces the whole table; the
    /// virtio routes must survive the change.
    #[test]
    fn an_upcall_vector_change_keeps_the_device_routes() {
        let kvm = crate::builder::open_kvm().expect("this test needs /dev/kvm");
        let vm = Arc::new(kvm.create_vm().expect("KVM_CREATE_VM"));
        vm.create_irq_chip().expect("KVM_CREATE_IRQCHIP");
        let ram = GuestRam::new(&[Slot { start: 0, len: 1 << 20, readonly: false }]).unwrap();
        let platform = KvmPlatform::new(vm, ram).unwrap();
        let virtio = [msi_route(UPCALL_GSI + 1, 0x41), msi_route(UPCALL_GSI + 2, 0x42)];
        platform.add_device_routes(&virtio).unwrap();
        platform.set_upcall_vector(0xf3).unwrap();
        let routes: Vec<(u32, u32)> = platform.installed_routes().iter().map(|r| (r.gsi, msi_data(r))).collect();
        assert_eq!(routes, [(UPCALL_GSI, 0xf3), (UPCALL_GSI + 1, 0x41), (UPCALL_GSI + 2, 0x42)]);
    }

    fn msi_data(r: &kvm_irq_routing_entry) -> u32 {
        // SAFETY: every route this platform installs is of the MSI type.
        unsafe { r.u.msi.data }
    }
}
