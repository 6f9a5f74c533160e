//! The hypervisor's [`Platform`] on KVM.
//!
//! - Upcalls: per vCPU, an eventfd registered as an irqfd on that vCPU's
//!   GSI ([`upcall_gsi`]), routed as an MSI to the vCPU's upcall vector at
//!   its local APIC (`KVM_SET_GSI_ROUTING`; APIC id = vCPU id); or, once a
//!   PVH guest chose `HVM_PARAM_CALLBACK_IRQ` of the vector type, the
//!   callback line that injects the vector with `KVM_INTERRUPT`
//!   ([`crate::pvh::callback`]). Our own guests take upcalls on
//!   [`UPCALL_VECTOR`] on every vCPU; a PVH guest's vCPUs 1.. only once it
//!   chose a vector for them (`HVMOP_set_evtchn_upcall_vector`, per vCPU as
//!   in Xen) or the callback vector.
//! - Doorbells: one ioeventfd per bound port on
//!   [`DOORBELL_PORT`](pv_abi::hypercall::DOORBELL_PORT), datamatch = port.
//! - Placed pages: one memory slot per placed page, aliasing the VMM page's
//!   host memory at the guest frame. KVM slots may not overlap, so a page
//!   placed over a RAM frame splits the RAM slot around it: the RAM is
//!   re-registered as the pieces between placed frames ([`SlotLayout`]).
//!   The RAM page under a placed frame is hidden from the guest (the
//!   hypervisor has freed it, `discard_page`); the VMM's own `GuestRam`
//!   accesses at that address still reach the hidden page, not the placed
//!   one (no hypercall reads guest structures there: see
//!   docs/conformance.md, `XENMEM_add_to_physmap`).

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
/// The GSI vCPU 0's upcall irqfd is routed through.
pub const UPCALL_GSI: u32 = 24;
/// vCPU `n`'s (n >= 1) upcall GSI is `AP_UPCALL_GSI_BASE + n`: above the
/// virtio devices' GSIs (which follow [`UPCALL_GSI`]).
pub const AP_UPCALL_GSI_BASE: u32 = 512;

/// The GSI vCPU `vcpu`'s upcalls travel on.
pub fn upcall_gsi(vcpu: u32) -> u32 {
    if vcpu == 0 {
        UPCALL_GSI
    } else {
        AP_UPCALL_GSI_BASE + vcpu
    }
}

/// The memory slots of a PVH guest: RAM (its `GuestRam` regions, as
/// `memory::RegisterSlots` registered them, slots `0..n`) minus the frames
/// pages are placed at, plus one slot per placed page. At most
/// `regions + 2 * PLACEABLE` slots.
#[derive(Debug, Default)]
struct SlotLayout {
    /// RAM regions: guest-physical start, length, host address.
    ram: Vec<(u64, u64, u64)>,
    /// Placed pages by alias: guest frame, host address of the VMM page.
    placed: std::collections::BTreeMap<usize, (u64, u64)>,
    /// Slot numbers registered now.
    in_use: u32,
}

impl SlotLayout {
    /// The layout `memory::RegisterSlots` registered: one writable slot per
    /// RAM region (a PVH guest has no read-only pool; only PVH guests place pages).
    fn new(ram: &GuestRam) -> Self {
        use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};
        let ram: Vec<_> = ram
            .mem()
            .iter()
            .filter_map(|r| {
                let host = r.get_host_address(MemoryRegionAddress(0)).ok()? as u64;
                Some((r.start_addr().0, r.len(), host))
            })
            .collect();
        SlotLayout { in_use: ram.len() as u32, ram, placed: Default::default() }
    }

    /// Every slot: RAM pieces around the placed frames, then the placed pages.
    fn regions(&self) -> Vec<kvm_userspace_memory_region> {
        let mut frames: Vec<u64> = self.placed.values().map(|&(g, _)| g * PAGE_SIZE).collect();
        frames.sort_unstable();
        let mut out = Vec::new();
        let mut push = |gpa: u64, size: u64, host: u64| {
            if size > 0 {
                let slot = out.len() as u32;
                out.push(kvm_userspace_memory_region {
                    slot,
                    flags: 0,
                    guest_phys_addr: gpa,
                    memory_size: size,
                    userspace_addr: host,
                });
            }
        };
        for &(start, len, host) in &self.ram {
            let mut at = start;
            for &f in frames.iter().filter(|&&f| f >= start && f < start + len) {
                push(at, f - at, host + (at - start));
                at = f + PAGE_SIZE;
            }
            push(at, start + len - at, host + (at - start));
        }
        for &(gpfn, host) in self.placed.values() {
            push(gpfn * PAGE_SIZE, PAGE_SIZE, host);
        }
        out
    }

    /// Re-registers every slot: deletes the ones in use, then adds the new
    /// layout (deleting first, since slots may not overlap even briefly).
    fn install(&mut self, vm: &VmFd) -> Result<(), kvm_ioctls::Error> {
        for slot in 0..self.in_use {
            let gone = kvm_userspace_memory_region { slot, ..Default::default() };
            // SAFETY: deleting a slot (size 0) hands KVM no host memory.
            unsafe { vm.set_user_memory_region(gone) }?;
        }
        self.in_use = 0;
        for region in self.regions() {
            // SAFETY: every host range is part of guest RAM's mmap, which
            // lives as long as the VM (both owned by `Vm`); `regions()`
            // never overlaps two slots.
            unsafe { vm.set_user_memory_region(region) }?;
            self.in_use = region.slot + 1;
        }
        Ok(())
    }
}

/// A GSI routing entry delivering an MSI with `vector` to APIC id 0
/// (fixed delivery, edge). `KVM_SET_GSI_ROUTING` replaces the whole table,
/// so [`KvmPlatform`] keeps every route and installs them all together.
pub fn msi_route(gsi: u32, vector: u32) -> kvm_irq_routing_entry {
    msi_route_to(gsi, vector, 0)
}

/// An MSI route with `vector` to the local APIC `apic_id` (MSI address
/// bits 19:12, physical destination mode).
pub fn msi_route_to(gsi: u32, vector: u32, apic_id: u32) -> kvm_irq_routing_entry {
    let mut entry = kvm_irq_routing_entry { gsi, type_: kvm_bindings::KVM_IRQ_ROUTING_MSI, ..Default::default() };
    entry.u.msi.address_lo = pv_abi::layout::LAPIC_BASE as u32 | ((apic_id & 0xff) << 12);
    entry.u.msi.data = vector;
    entry
}

/// The GSI routing table: the upcall route plus the devices' routes.
/// `KVM_SET_GSI_ROUTING` replaces the whole table, so every change
/// installs all of them again (issue 18 item 6: a PVH guest choosing its
/// upcall vector must not lose the virtio routes).
#[derive(Debug, Default)]
struct Routes {
    /// Per vCPU: its upcall vector (0: no route; vCPU 0 always has one).
    upcall_vectors: Vec<u8>,
    devices: Vec<kvm_irq_routing_entry>,
}

impl Routes {
    fn table(&self) -> Vec<kvm_irq_routing_entry> {
        let upcalls = self.upcall_vectors.iter().enumerate().filter(|&(i, &v)| i == 0 || v != 0);
        let mut all: Vec<_> =
            upcalls.map(|(i, &v)| msi_route_to(upcall_gsi(i as u32), u32::from(v), i as u32)).collect();
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
    /// vCPUs 1..'s upcall irqfds (index `vcpu - 1`), set once by
    /// [`KvmPlatform::add_vcpu_upcalls`] before any device runs.
    ap_upcalls: std::sync::OnceLock<Vec<EventFd>>,
    /// Per vCPU: its upcall vector (0: none), read on every upcall
    /// without a lock.
    vectors: Vec<std::sync::atomic::AtomicU8>,
    routes: Mutex<Routes>,
    slots: Mutex<SlotLayout>,
    /// The PVH callback-vector line of vCPU 0 (the vCPU thread injects it).
    pub callback: Arc<CallbackLine>,
    /// The callback lines of vCPUs 1.. (index `vcpu - 1`).
    secondary: Mutex<Vec<Arc<CallbackLine>>>,
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
        let mut upcall_vectors = vec![0; crate::vm::MAX_VCPUS as usize];
        upcall_vectors[0] = UPCALL_VECTOR;
        let vectors = upcall_vectors.iter().map(|&v| std::sync::atomic::AtomicU8::new(v)).collect();
        let routes = Routes { upcall_vectors, devices: Vec::new() };
        routes.install(&vm).map_err(VmmError::kvm("KVM_SET_GSI_ROUTING"))?;
        vm.register_irqfd(&upcall, UPCALL_GSI).map_err(VmmError::kvm("KVM_IRQFD"))?;
        let slots = Mutex::new(SlotLayout::new(&ram));
        Ok(KvmPlatform {
            vm,
            ram,
            upcall,
            ap_upcalls: std::sync::OnceLock::new(),
            vectors,
            routes: Mutex::new(routes),
            slots,
            callback: Arc::default(),
            secondary: Mutex::default(),
        })
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, SlotLayout> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A callback line for the next secondary vCPU (the builder calls
    /// this for vCPUs 1, 2, .. in order), with the domain's vector.
    pub fn add_secondary_line(&self) -> Arc<CallbackLine> {
        let line = Arc::new(CallbackLine::default());
        if let Some(v) = self.callback.vector() {
            line.set_vector(v);
        }
        self.secondary_lines().push(line.clone());
        line
    }

    /// Gives vCPUs 1..`vcpus` an upcall irqfd each on their own GSI
    /// ([`upcall_gsi`]); for our own guests (`own_guest`) also the route
    /// to [`UPCALL_VECTOR`] at their local APIC, as vCPU 0 has (a PVH
    /// guest chooses its vCPUs' vectors itself). Call once, before any
    /// device can raise an upcall.
    pub fn add_vcpu_upcalls(&self, vcpus: u32, own_guest: bool) -> Result<(), VmmError> {
        let mut fds = Vec::new();
        for id in 1..vcpus.min(crate::vm::MAX_VCPUS) {
            let fd = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| VmmError::Io("eventfd", e))?;
            self.vm.register_irqfd(&fd, upcall_gsi(id)).map_err(VmmError::kvm("KVM_IRQFD"))?;
            fds.push(fd);
        }
        if self.ap_upcalls.set(fds).is_err() {
            return Err(VmmError::Io("upcall irqfds", std::io::Error::other("set up twice")));
        }
        if own_guest {
            let mut r = self.routes();
            for id in 1..vcpus.min(crate::vm::MAX_VCPUS) {
                r.upcall_vectors[id as usize] = UPCALL_VECTOR;
                self.vectors[id as usize].store(UPCALL_VECTOR, std::sync::atomic::Ordering::SeqCst);
            }
            r.install(&self.vm).map_err(VmmError::kvm("KVM_SET_GSI_ROUTING"))?;
        }
        Ok(())
    }

    fn secondary_lines(&self) -> std::sync::MutexGuard<'_, Vec<Arc<CallbackLine>>> {
        self.secondary.lock().unwrap_or_else(|p| p.into_inner())
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
}

impl Platform for KvmPlatform {
    fn raise_upcall(&self, vcpu: u32) {
        if vcpu != 0 {
            // vCPUs 1..: the callback vector if the guest chose it, else
            // the vCPU's own upcall MSI if it has a vector.
            if let Some(line) = self.secondary_lines().get(vcpu as usize - 1).filter(|l| l.vector().is_some()) {
                return line.raise();
            }
            let has_vector =
                self.vectors.get(vcpu as usize).is_some_and(|v| v.load(std::sync::atomic::Ordering::SeqCst) != 0);
            match self.ap_upcalls.get().and_then(|fds| fds.get(vcpu as usize - 1)) {
                Some(fd) if has_vector => {
                    if let Err(e) = fd.write(1) {
                        tracing::warn!(vcpu, "cannot signal the upcall irqfd: {e}");
                    }
                }
                _ => tracing::debug!(vcpu, "no upcall vector on this vCPU: upcall left pending"),
            }
        } else if self.callback.vector().is_some() {
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
        let bad = |why: &str| PlatformError { what: "place_page", why: why.into() };
        gpfn.checked_mul(PAGE_SIZE).filter(|gpa| gpa.checked_add(PAGE_SIZE).is_some()).ok_or(bad("frame"))?;
        let host = self.ram.host_address(vmm_page).ok_or(bad("VMM page outside RAM"))? as u64;
        let mut slots = self.slots();
        if slots.placed.iter().any(|(&a, &(g, _))| a != alias && g == gpfn) {
            return Err(bad("frame already holds a placed page"));
        }
        slots.placed.insert(alias, (gpfn, host));
        slots.install(&self.vm).map_err(refused("KVM_SET_USER_MEMORY_REGION"))
    }

    fn remove_page(&self, alias: usize, _gpfn: u64) -> Result<(), PlatformError> {
        let mut slots = self.slots();
        if slots.placed.remove(&alias).is_none() {
            return Ok(());
        }
        slots.install(&self.vm).map_err(refused("KVM_SET_USER_MEMORY_REGION"))
    }

    fn discard_page(&self, gpfn: u64) -> Result<(), PlatformError> {
        let host = gpfn
            .checked_mul(PAGE_SIZE)
            .and_then(|gpa| self.ram.host_address(gpa))
            .ok_or(PlatformError { what: "discard_page", why: "frame outside RAM".into() })?;
        // SAFETY: `host` is the start of one page of guest RAM's private
        // anonymous mmap (RAM is page-aligned); dropping it only makes the
        // guest read zeros there, which is what freeing the page means.
        let rc = unsafe { libc::madvise(host.cast(), PAGE_SIZE as usize, libc::MADV_DONTNEED) };
        if rc != 0 {
            let why = std::io::Error::last_os_error().to_string();
            return Err(PlatformError { what: "madvise(MADV_DONTNEED)", why });
        }
        Ok(())
    }

    fn set_upcall_vector(&self, vcpu: u32, vector: u8) -> Result<(), PlatformError> {
        let i = vcpu as usize;
        let mut r = self.routes();
        let Some(old) = r.upcall_vectors.get(i).copied() else {
            return Err(PlatformError { what: "set_upcall_vector", why: format!("no vCPU {vcpu}") });
        };
        r.upcall_vectors[i] = vector;
        r.install(&self.vm).map_err(|e| {
            r.upcall_vectors[i] = old;
            refused("KVM_SET_GSI_ROUTING")(e)
        })?;
        self.vectors[i].store(vector, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    fn set_callback_vector(&self, vector: u8) {
        // `HVM_PARAM_CALLBACK_IRQ` is per domain: every vCPU's line.
        self.callback.set_vector(vector);
        self.secondary_lines().iter().for_each(|l| l.set_vector(vector));
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
        platform.set_upcall_vector(0, 0xf3).unwrap();
        let routes: Vec<(u32, u32)> = platform.installed_routes().iter().map(|r| (r.gsi, msi_data(r))).collect();
        assert_eq!(routes, [(UPCALL_GSI, 0xf3), (UPCALL_GSI + 1, 0x41), (UPCALL_GSI + 2, 0x42)]);
    }

    /// Issue 19: each vCPU's upcalls reach its own local APIC (MSI
    /// destination = APIC id = vCPU id). Our own guests' vCPUs all get
    /// `UPCALL_VECTOR`; a PVH guest's vCPU 1 only once it chose a vector
    /// (`hvmop_set_evtchn_upcall_vector()` in `xen/arch/x86/hvm/hvm.c`
    /// sets `v->arch.hvm.evtchn_upcall_vector` per vCPU).
    #[test]
    fn every_vcpu_has_its_own_upcall_route() {
        let kvm = crate::builder::open_kvm().expect("this test needs /dev/kvm");
        let ram = GuestRam::new(&[Slot { start: 0, len: 1 << 20, readonly: false }]).unwrap();
        let route = |r: &kvm_irq_routing_entry| {
            // SAFETY: every route this platform installs is of the MSI type.
            let dest = unsafe { r.u.msi.address_lo } >> 12 & 0xff;
            (r.gsi, msi_data(r), dest)
        };
        let v = u32::from(UPCALL_VECTOR);
        for (own, want) in [
            (true, vec![(UPCALL_GSI, v, 0), (upcall_gsi(1), v, 1), (upcall_gsi(2), v, 2)]),
            (false, vec![(UPCALL_GSI, v, 0), (upcall_gsi(2), 0xf5, 2)]),
        ] {
            let vm = Arc::new(kvm.create_vm().expect("KVM_CREATE_VM"));
            vm.create_irq_chip().expect("KVM_CREATE_IRQCHIP");
            let platform = KvmPlatform::new(vm, ram.clone()).unwrap();
            platform.add_vcpu_upcalls(3, own).unwrap();
            if !own {
                platform.set_upcall_vector(2, 0xf5).unwrap();
            }
            let routes: Vec<_> = platform.installed_routes().iter().map(route).collect();
            assert_eq!(routes, want, "own guest: {own}");
        }
    }

    fn msi_data(r: &kvm_irq_routing_entry) -> u32 {
        // SAFETY: every route this platform installs is of the MSI type.
        unsafe { r.u.msi.data }
    }
}

#[cfg(test)]
mod slot_tests {
    use super::*;

    /// A page placed over RAM splits the RAM slot around it; one in the
    /// hole is a slot of its own; no two slots overlap.
    #[test]
    fn placed_frames_split_ram_into_pieces() {
        let mut l = SlotLayout { ram: vec![(0, 0x10_0000, 0x7000_0000)], ..Default::default() };
        l.placed.insert(0, (0x10, 0x9000_0000));
        l.placed.insert(3, (0x8_0000, 0x9000_1000));
        l.placed.insert(1, (0, 0x9000_2000));
        let r: Vec<(u32, u64, u64, u64)> =
            l.regions().iter().map(|r| (r.slot, r.guest_phys_addr, r.memory_size, r.userspace_addr)).collect();
        assert_eq!(
            r,
            [
                (0, 0x1000, 0xf000, 0x7000_1000),
                (1, 0x11000, 0x10_0000 - 0x11000, 0x7001_1000),
                (2, 0x10000, 0x1000, 0x9000_0000),
                (3, 0, 0x1000, 0x9000_2000),
                (4, 0x8000_0000, 0x1000, 0x9000_1000),
            ]
        );
    }
}
