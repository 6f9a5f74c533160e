//! A [`Platform`] that records what the hypervisor asked of the machine,
//! for unit tests and fuzzing without `/dev/kvm`.

use crate::platform::{Platform, PlatformError};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use vmm_sys_util::eventfd::EventFd;

/// One request to the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// [`Platform::raise_upcall`].
    RaiseUpcall(u32),
    /// [`Platform::bind_doorbell`] (the port).
    BindDoorbell(u32),
    /// [`Platform::unbind_doorbell`] (the port).
    UnbindDoorbell(u32),
    /// [`Platform::place_page`]: alias, VMM page, guest frame.
    PlacePage(usize, u64, u64),
    /// [`Platform::remove_page`]: alias, guest frame.
    RemovePage(usize, u64),
    /// [`Platform::discard_page`]: guest frame.
    DiscardPage(u64),
    /// [`Platform::set_upcall_vector`].
    SetUpcallVector(u32, u8),
    /// [`Platform::set_callback_vector`].
    SetCallbackVector(u8),
}

/// Records every call; optionally refuses doorbells and placements, as a
/// machine out of resources would.
#[derive(Debug, Default)]
pub struct FakePlatform {
    calls: Mutex<Vec<Call>>,
    refuse_doorbells: AtomicBool,
    refuse_placement: AtomicBool,
    tsc: AtomicU64,
}

impl FakePlatform {
    /// Makes [`Platform::bind_doorbell`] fail from now on (or not).
    pub fn refuse_doorbells(&self, refuse: bool) {
        self.refuse_doorbells.store(refuse, Ordering::SeqCst);
    }

    /// Sets what [`Platform::host_tsc`] reads (0 until set).
    pub fn set_tsc(&self, tsc: u64) {
        self.tsc.store(tsc, Ordering::SeqCst);
    }

    /// Makes [`Platform::place_page`] fail from now on (or not).
    pub fn refuse_placement(&self, refuse: bool) {
        self.refuse_placement.store(refuse, Ordering::SeqCst);
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().clone()
    }

    /// How many upcalls were raised.
    pub fn upcalls(&self) -> usize {
        self.lock().iter().filter(|c| matches!(c, Call::RaiseUpcall(_))).count()
    }

    /// Ports with a doorbell bound now (bound and not unbound since).
    pub fn doorbells(&self) -> Vec<u32> {
        let mut bound = Vec::new();
        for c in self.lock().iter() {
            match c {
                Call::BindDoorbell(p) => bound.push(*p),
                Call::UnbindDoorbell(p) => bound.retain(|b| b != p),
                _ => {}
            }
        }
        bound
    }

    /// Forgets the calls so far.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Call>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, c: Call) {
        self.lock().push(c);
    }
}

fn refused(what: &'static str) -> PlatformError {
    PlatformError { what, why: "refused by the fake platform".into() }
}

impl Platform for FakePlatform {
    fn raise_upcall(&self, vcpu: u32) {
        self.record(Call::RaiseUpcall(vcpu));
    }

    fn bind_doorbell(&self, port: u32, _wake: &EventFd) -> Result<(), PlatformError> {
        if self.refuse_doorbells.load(Ordering::SeqCst) {
            return Err(refused("bind_doorbell"));
        }
        self.record(Call::BindDoorbell(port));
        Ok(())
    }

    fn unbind_doorbell(&self, port: u32, _wake: &EventFd) -> Result<(), PlatformError> {
        self.record(Call::UnbindDoorbell(port));
        Ok(())
    }

    fn place_page(&self, alias: usize, vmm_page: u64, gpfn: u64) -> Result<(), PlatformError> {
        if self.refuse_placement.load(Ordering::SeqCst) {
            return Err(refused("place_page"));
        }
        self.record(Call::PlacePage(alias, vmm_page, gpfn));
        Ok(())
    }

    fn remove_page(&self, alias: usize, gpfn: u64) -> Result<(), PlatformError> {
        self.record(Call::RemovePage(alias, gpfn));
        Ok(())
    }

    fn discard_page(&self, gpfn: u64) -> Result<(), PlatformError> {
        self.record(Call::DiscardPage(gpfn));
        Ok(())
    }

    fn set_upcall_vector(&self, vcpu: u32, vector: u8) -> Result<(), PlatformError> {
        self.record(Call::SetUpcallVector(vcpu, vector));
        Ok(())
    }

    fn set_callback_vector(&self, vector: u8) {
        self.record(Call::SetCallbackVector(vector));
    }

    fn host_tsc(&self) -> u64 {
        self.tsc.load(Ordering::SeqCst)
    }
}

/// Guest RAM of a [`TestDomain`].
pub const TEST_RAM: u64 = 4 << 20;
/// The page-table pool of a [`TestDomain`]: the top MiB (a read-only slot).
pub const TEST_POOL: u64 = 3 << 20;
/// A scratch area tests put hypercall arguments in.
pub const TEST_ARG: u64 = 0x20_0000;

/// A domain over a [`FakePlatform`], as the VMM builds one for its own
/// guests (shared info at `pv_abi::layout::SHARED_INFO`, outputs refused in
/// the reserved low pages and the pool), or for a Xen PVH guest.
pub struct TestDomain {
    /// The domain.
    pub dom: crate::domain::Domain,
    /// What it asked of the machine.
    pub platform: std::sync::Arc<FakePlatform>,
    /// The default hypercall table.
    pub table: crate::hypercall::HypercallTable,
}

impl TestDomain {
    /// A domain for the project's own guests, paging mode `mode`.
    pub fn new(mode: u32) -> Self {
        use crate::guest_memory::{GuestRam, Slot, RESERVED_LOW};
        let ram = GuestRam::new(&[
            Slot { start: 0, len: TEST_POOL, readonly: false },
            Slot { start: TEST_POOL, len: TEST_RAM - TEST_POOL, readonly: true },
        ])
        .expect("test RAM");
        let mut protected = vec![RESERVED_LOW];
        if mode != pv_abi::start_info::paging_mode::NATIVE {
            protected.push(TEST_POOL..TEST_RAM);
        }
        ram.protect_outputs(protected);
        Self::over(ram, pv_abi::layout::SHARED_INFO, mode)
    }

    /// A Xen PVH guest's domain (its VMM pages at the top of RAM).
    pub fn pvh() -> Self {
        use crate::guest_memory::{GuestRam, Slot};
        let layout = crate::pvh::PvhLayout::new(TEST_RAM);
        let ram = GuestRam::new(&[Slot { start: 0, len: TEST_RAM, readonly: false }]).expect("test RAM");
        let vmm_pages = layout.vmm_base..layout.mem_bytes;
        ram.protect_outputs([vmm_pages].to_vec());
        let mut t = Self::over(ram, layout.shared_info(), pv_abi::start_info::paging_mode::NATIVE);
        let clock = crate::time::PvClock::new(1_000_000, 0);
        let platform: std::sync::Arc<dyn Platform> = t.platform.clone();
        t.dom.pvh = Some(Box::new(crate::pvh::PvhState::new(layout, platform, clock)));
        t
    }

    fn over(ram: crate::guest_memory::GuestRam, shared_info: u64, mode: u32) -> Self {
        use std::sync::Arc;
        let platform = Arc::new(FakePlatform::default());
        let evtchn = crate::event_channel::EventChannels::new(platform.clone(), ram.clone(), shared_info)
            .expect("shared info in RAM");
        let grants =
            crate::grant_table::mapper::GrantTable::new(ram.mem().clone(), pv_abi::layout::KERNEL_BASE, TEST_POOL);
        let mut dom =
            crate::domain::Domain::new(ram, crate::console::ConsoleOut::Null, Arc::new(evtchn), Arc::new(grants));
        dom.paging = crate::mmu::validator::PagingState::new(mode, TEST_POOL, TEST_RAM, TEST_RAM);
        TestDomain { dom, platform, table: crate::hypercall::HypercallTable::default() }
    }

    /// Runs hypercall `nr` as the vCPU loop does (one exit, no
    /// continuation followed): the signed `rax` the guest sees.
    pub fn call(&mut self, nr: u64, args: [u64; 5]) -> i64 {
        self.dom.start_exit();
        self.table.dispatch(&mut self.dom, nr, &args) as i64
    }

    /// Writes `v` into guest memory at `gpa` (as the guest would).
    pub fn put<T: pv_abi::Pod>(&self, gpa: u64, v: &T) {
        self.dom.ram.write_obj(gpa, v).expect("test address in RAM");
    }

    /// Reads a `T` from guest memory at `gpa`.
    pub fn get<T: pv_abi::Pod>(&self, gpa: u64) -> T {
        self.dom.ram.read_obj(gpa).expect("test address in RAM")
    }
}
