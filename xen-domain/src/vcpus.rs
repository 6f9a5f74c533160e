//! The domain's vCPUs as Xen's scheduler sees them (`struct vcpu`'s
//! `is_initialised` and `_VPF_down`): which exist, which have a register
//! state, which run. vCPU 0 starts initialised and up; every other vCPU
//! starts stopped and uninitialised, as Xen builds a domain, until the
//! guest calls `VCPUOP_initialise` and `VCPUOP_up` (`vcpu_op.rs`).
//!
//! Locking: one mutex over the per-vCPU flags (Xen's `domain_lock` for
//! `is_initialised`, the atomic `pause_flags` for `_VPF_down`), held only
//! for a flag update, never across a guest-memory copy or a wait. The
//! VMM's vCPU threads park on the condition variable while their vCPU is
//! down and pick up a new register state when it comes up; a vCPU taken
//! down by another is kicked out of the guest through the `kick` hook.

use crate::hvm_context::VcpuContext;
use pv_abi::hypercall::vcpu_op::{VcpuRunstateInfo, RUNSTATE_OFFLINE, RUNSTATE_RUNNING};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

pub mod state;

/// Most vCPUs a domain may have (`vmm run --vcpus`): the 32 `vcpu_info`
/// slots of the shared-info page (`XEN_LEGACY_MAX_VCPUS`).
pub const MAX_VCPUS: u32 = 32;

/// One vCPU's scheduler flags.
#[derive(Debug, Clone, Default)]
struct Slot {
    /// Xen's `is_initialised`: it has a register state.
    initialised: bool,
    /// Xen's `_VPF_down`.
    down: bool,
    /// A state from `VCPUOP_initialise` its thread has not loaded yet.
    pending: Option<VcpuContext>,
    /// Xen's `v->runstate`: the state, since when, time in each.
    runstate: VcpuRunstateInfo,
    /// `VCPUOP_register_runstate_memory_area`: where the guest wants a
    /// copy, and whether in the 32-bit layout (0: none).
    runstate_area: (u64, bool),
}

impl Slot {
    fn new(initialised: bool, down: bool) -> Self {
        let state = if down { RUNSTATE_OFFLINE } else { RUNSTATE_RUNNING };
        let runstate = VcpuRunstateInfo { state, ..Default::default() };
        Slot { initialised, down, pending: None, runstate, runstate_area: (0, false) }
    }
}

/// Xen's `vcpu_runstate_change()`: charges the time since the state was
/// entered to it, then enters `state` at `now` (ns of system time). A
/// clock read before the entry time (two vCPUs racing) charges nothing.
pub fn runstate_change(r: &mut VcpuRunstateInfo, state: u32, now: u64) {
    let delta = now.saturating_sub(r.state_entry_time);
    if let Some(t) = r.time.get_mut(r.state as usize) {
        *t = t.wrapping_add(delta);
    }
    r.state_entry_time = r.state_entry_time.max(now);
    r.state = state;
}

/// Called with a vCPU id to interrupt that vCPU's thread in the guest.
pub type Kick = Box<dyn Fn(u32) + Send + Sync>;

/// What a parked vCPU thread is told when its vCPU comes up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Woken {
    /// Up, with a new register state to load first (the first `up`).
    Load(VcpuContext),
    /// Up again (after `VCPUOP_down`): resume where it stopped.
    Resume,
}

/// The vCPUs of one domain.
pub struct VcpuSet {
    slots: Mutex<Vec<Slot>>,
    changed: Condvar,
    kick: Mutex<Option<Kick>>,
}

impl std::fmt::Debug for VcpuSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcpuSet").field("slots", &self.slots).finish()
    }
}

impl VcpuSet {
    /// `n` vCPUs (1..=[`MAX_VCPUS`], clamped): vCPU 0 initialised and up,
    /// the others uninitialised and down.
    pub fn new(n: u32) -> Self {
        let n = n.clamp(1, MAX_VCPUS) as usize;
        let mut slots = vec![Slot::new(false, true); n];
        slots[0] = Slot::new(true, false);
        VcpuSet { slots: Mutex::new(slots), changed: Condvar::new(), kick: Mutex::new(None) }
    }

    /// How many vCPUs the domain has.
    pub fn count(&self) -> u32 {
        self.lock().len() as u32
    }

    /// Sets the hook that interrupts a vCPU running guest code.
    pub fn set_kick(&self, kick: Kick) {
        *self.kick.lock().unwrap_or_else(|p| p.into_inner()) = Some(kick);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        // A panicking holder cannot leave the flags half-updated (each
        // update is one assignment): carry on with them.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `VCPUOP_initialise` (`arch_initialise_vcpu`): `-EEXIST` if `id` is
    /// already initialised (vCPU 0 always is), else records `ctx`; the
    /// vCPU stays down.
    pub fn initialise(&self, id: u32, ctx: VcpuContext) -> Result<(), i64> {
        let mut s = self.lock();
        let slot = s.get_mut(id as usize).ok_or(pv_abi::errno::ENOENT)?;
        if slot.initialised {
            return Err(pv_abi::errno::EEXIST);
        }
        slot.initialised = true;
        slot.down = true;
        slot.pending = Some(ctx);
        Ok(())
    }

    /// `VCPUOP_up` (`common_vcpu_op`): `-EINVAL` if not initialised, else
    /// clears `down` and wakes its thread (0 also if it already ran).
    pub fn up(&self, id: u32) -> Result<(), i64> {
        let mut s = self.lock();
        let slot = s.get_mut(id as usize).ok_or(pv_abi::errno::ENOENT)?;
        if !slot.initialised {
            return Err(pv_abi::errno::EINVAL);
        }
        slot.down = false;
        drop(s);
        self.changed.notify_all();
        Ok(())
    }

    /// `VCPUOP_down` (`common_vcpu_op`): `Ok(true)` if every other vCPU
    /// is down already (Xen then shuts the domain down with
    /// `SHUTDOWN_poweroff` and leaves this one running), else sets `down`
    /// and kicks the vCPU out of the guest.
    pub fn down(&self, id: u32) -> Result<bool, i64> {
        let mut s = self.lock();
        if id as usize >= s.len() {
            return Err(pv_abi::errno::ENOENT);
        }
        let last = s.iter().enumerate().all(|(i, v)| i == id as usize || v.down);
        if last {
            return Ok(true);
        }
        let was_down = std::mem::replace(&mut s[id as usize].down, true);
        drop(s);
        if !was_down {
            if let Some(k) = self.kick.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                k(id);
            }
        }
        Ok(false)
    }

    /// `VCPUOP_is_up`: whether `id` is up.
    pub fn is_up(&self, id: u32) -> Result<bool, i64> {
        self.lock().get(id as usize).map(|v| !v.down).ok_or(pv_abi::errno::ENOENT)
    }

    /// Whether `id` has a register state (Xen's `is_initialised`).
    pub fn is_initialised(&self, id: u32) -> bool {
        self.lock().get(id as usize).is_some_and(|v| v.initialised)
    }

    /// Whether `id` is down (its thread must stop entering the guest).
    pub fn is_down(&self, id: u32) -> bool {
        self.lock().get(id as usize).is_none_or(|v| v.down)
    }

    /// Parks the calling vCPU thread while `id` is down, waking at most
    /// every `step` to ask `stop` whether the run is over (`None`).
    pub fn wait_up(&self, id: u32, step: Duration, stop: impl Fn() -> bool) -> Option<Woken> {
        let mut s = self.lock();
        loop {
            if stop() {
                return None;
            }
            match s.get_mut(id as usize) {
                None => return None,
                Some(v) if !v.down => {
                    return Some(v.pending.take().map_or(Woken::Resume, Woken::Load));
                }
                Some(_) => {}
            }
            s = self.changed.wait_timeout(s, step).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Moves `id` to runstate `state` at `now` (ns of system time);
    /// returns the new runstate and the registered area, if any.
    pub fn set_runstate(&self, id: u32, state: u32, now: u64) -> Option<(VcpuRunstateInfo, (u64, bool))> {
        let mut s = self.lock();
        let slot = s.get_mut(id as usize)?;
        runstate_change(&mut slot.runstate, state, now);
        Some((slot.runstate, slot.runstate_area))
    }

    /// Xen's `vcpu_runstate_get()`: `id`'s runstate with the time in the
    /// current state counted up to `now`.
    pub fn runstate(&self, id: u32, now: u64) -> Option<VcpuRunstateInfo> {
        let s = self.lock();
        let mut r = s.get(id as usize)?.runstate;
        let delta = now.saturating_sub(r.state_entry_time);
        if let Some(t) = r.time.get_mut(r.state as usize) {
            *t = t.wrapping_add(delta);
        }
        Some(r)
    }

    /// Records `id`'s runstate area (`VCPUOP_register_runstate_memory_area`;
    /// address 0 unregisters).
    pub fn set_runstate_area(&self, id: u32, addr: u64, compat: bool) {
        if let Some(slot) = self.lock().get_mut(id as usize) {
            slot.runstate_area = (addr, compat);
        }
    }

    /// Wakes every parked thread (the run is ending).
    pub fn wake_all(&self) {
        self.changed.notify_all();
    }
}

/// Against `xen/common/domain.c` (`common_vcpu_op`: `VCPUOP_up` of an
/// uninitialised vCPU is `-EINVAL`; `VCPUOP_down` of the last running
/// vCPU shuts the domain down; `VCPUOP_is_up` is `!_VPF_down`),
/// `xen/arch/x86/domain.c` (`arch_initialise_vcpu`: `-EEXIST` once
/// initialised) and `xen/arch/x86/hvm/domain.c` (`arch_set_info_hvm_guest`
/// leaves the vCPU down).
#[cfg(test)]
mod tests {
    use super::*;
    use pv_abi::errno::{EEXIST, EINVAL, ENOENT};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    fn ctx() -> VcpuContext {
        VcpuContext::default()
    }

    #[test]
    fn vcpu_0_runs_and_the_others_start_down_and_uninitialised() {
        let v = VcpuSet::new(4);
        assert_eq!(v.count(), 4);
        assert_eq!(v.is_up(0), Ok(true));
        assert_eq!((1..4).map(|i| v.is_up(i)).collect::<Vec<_>>(), vec![Ok(false); 3]);
        assert_eq!(v.up(1), Err(EINVAL), "up before initialise");
        assert_eq!(v.initialise(0, ctx()), Err(EEXIST), "vCPU 0 is initialised at boot");
        assert_eq!(v.is_up(4), Err(ENOENT));
        assert_eq!(VcpuSet::new(0).count(), 1);
        assert_eq!(VcpuSet::new(1000).count(), MAX_VCPUS);
    }

    #[test]
    fn initialise_then_up_hands_the_state_over_once() {
        let v = VcpuSet::new(2);
        assert_eq!(v.initialise(1, ctx()), Ok(()));
        assert_eq!(v.initialise(1, ctx()), Err(EEXIST));
        assert_eq!(v.is_up(1), Ok(false), "initialise leaves it down");
        assert_eq!(v.up(1), Ok(()));
        assert_eq!(v.wait_up(1, Duration::from_millis(1), || false), Some(Woken::Load(ctx())));
        assert_eq!(v.wait_up(1, Duration::from_millis(1), || false), Some(Woken::Resume));
    }

    #[test]
    fn down_kicks_a_running_vcpu_once_and_the_last_one_down_is_a_poweroff() {
        let v = VcpuSet::new(3);
        let kicked = Arc::new(AtomicU32::new(0));
        let k = kicked.clone();
        v.set_kick(Box::new(move |id| {
            k.fetch_add(1 << (8 * id), Ordering::SeqCst);
        }));
        v.initialise(1, ctx()).unwrap();
        v.up(1).unwrap();
        assert_eq!(v.down(1), Ok(false));
        assert_eq!(v.down(1), Ok(false), "already down: no second kick");
        assert_eq!(kicked.load(Ordering::SeqCst), 1 << 8);
        assert!(v.is_down(1));
        assert_eq!(v.down(0), Ok(true), "vCPU 0 is the last one up");
        assert_eq!(v.is_up(0), Ok(true), "and stays up: the domain shuts down instead");
        assert_eq!(v.down(7), Err(ENOENT));
    }

    #[test]
    fn a_parked_thread_wakes_on_up_or_when_told_to_stop() {
        let v = Arc::new(VcpuSet::new(2));
        v.initialise(1, ctx()).unwrap();
        let w = v.clone();
        let t = std::thread::spawn(move || w.wait_up(1, Duration::from_millis(5), || false));
        std::thread::sleep(Duration::from_millis(10));
        v.up(1).unwrap();
        assert_eq!(t.join().unwrap(), Some(Woken::Load(ctx())));
        v.down(1).unwrap();
        assert_eq!(v.wait_up(1, Duration::from_millis(1), || true), None);
    }
}
