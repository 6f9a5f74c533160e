//! A [`Platform`] that records what the hypervisor asked of the machine,
//! for unit tests and fuzzing without `/dev/kvm`.

use crate::platform::{Platform, PlatformError};
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
    /// [`Platform::set_upcall_vector`].
    SetUpcallVector(u8),
    /// [`Platform::set_callback_vector`].
    SetCallbackVector(u8),
}

/// Records every call; optionally refuses doorbells and placements, as a
/// machine out of resources would.
#[derive(Debug, Default)]
pub struct FakePlatform {
    calls: Mutex<Vec<Call>>,
    /// Refuse [`Platform::bind_doorbell`].
    pub refuse_doorbells: bool,
    /// Refuse [`Platform::place_page`].
    pub refuse_placement: bool,
}

impl FakePlatform {
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
        if self.refuse_doorbells {
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
        if self.refuse_placement {
            return Err(refused("place_page"));
        }
        self.record(Call::PlacePage(alias, vmm_page, gpfn));
        Ok(())
    }

    fn remove_page(&self, alias: usize, gpfn: u64) -> Result<(), PlatformError> {
        self.record(Call::RemovePage(alias, gpfn));
        Ok(())
    }

    fn set_upcall_vector(&self, vector: u8) -> Result<(), PlatformError> {
        self.record(Call::SetUpcallVector(vector));
        Ok(())
    }

    fn set_callback_vector(&self, vector: u8) {
        self.record(Call::SetCallbackVector(vector));
    }
}
