//! Hypercall dispatch: a table from hypercall number to handler.
//!
//! Handlers take the [`Domain`] and the five argument registers and return
//! a value or an errno. Guest pointers are validated by [`GuestRam`](crate::memory::GuestRam)'s
//! checked copies; nothing here holds a reference into guest memory.

use crate::domain::Domain;
pub use crate::domain::{HcResult, Shutdown};
use pv_abi::errno::{EINVAL, ENOSYS};
use pv_abi::hypercall::{console_io, nr, sched_op, xen_version, ABI_VERSION};

/// A hypercall handler.
pub type Handler = fn(&mut Domain, &[u64; 5]) -> HcResult;

/// Number of slots in the dispatch table.
pub const TABLE_SIZE: usize = 64;

/// The dispatch table.
#[derive(Clone)]
pub struct HypercallTable {
    handlers: [Option<Handler>; TABLE_SIZE],
}

/// The handlers every VMM installs.
const DEFAULT_HANDLERS: [(u64, Handler); 11] = [
    (nr::CONSOLE_IO, do_console_io),
    (nr::SCHED_OP, crate::pvh::timer::sched_op),
    (nr::SET_TIMER_OP, crate::pvh::timer::set_timer_op),
    (nr::VCPU_OP, crate::pvh::timer::vcpu_op),
    (nr::XEN_VERSION, do_xen_version),
    (nr::EVENT_CHANNEL_OP, |dom, a| dom.evtchn.hypercall(a[0], a[1])),
    (nr::GRANT_TABLE_OP, crate::pvh::gnttab::grant_table_op),
    (nr::MEMORY_OP, crate::pvh::memory_op::memory_op),
    (nr::HVM_OP, crate::pvh::hvm_op::hvm_op),
    (nr::MMU_UPDATE, crate::paging::do_mmu_update),
    (nr::MMUEXT_OP, crate::paging::do_mmuext_op),
];

// Every default number has a slot, checked at compile time.
const _: () = {
    let mut i = 0;
    while i < DEFAULT_HANDLERS.len() {
        assert!(DEFAULT_HANDLERS[i].0 < TABLE_SIZE as u64);
        i += 1;
    }
};

/// A hypercall number with no slot in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("hypercall number {0} is beyond the dispatch table ({TABLE_SIZE} slots)")]
pub struct NoSlot(pub u64);

impl Default for HypercallTable {
    fn default() -> Self {
        let mut handlers = [None; TABLE_SIZE];
        for (nr, handler) in DEFAULT_HANDLERS {
            handlers[nr as usize] = Some(handler);
        }
        HypercallTable { handlers }
    }
}

impl HypercallTable {
    /// Installs (or replaces) the handler for `nr`; numbers from
    /// [`TABLE_SIZE`] up have no slot (Xen's `NR_hypercalls` is 64 too).
    pub fn register(&mut self, nr: u64, handler: Handler) -> Result<(), NoSlot> {
        let slot = usize::try_from(nr).ok().and_then(|i| self.handlers.get_mut(i)).ok_or(NoSlot(nr))?;
        *slot = Some(handler);
        Ok(())
    }

    /// Runs hypercall `nr`; unknown numbers give `-ENOSYS`. Returns the raw
    /// `rax` value for the guest.
    pub fn dispatch(&self, dom: &mut Domain, nr: u64, args: &[u64; 5]) -> u64 {
        let handler = usize::try_from(nr).ok().and_then(|i| self.handlers.get(i).copied().flatten());
        let result = match handler {
            _ if nr == nr::MULTICALL => {
                crate::multicall::do_multicall(dom, args, |dom, nr, args| self.dispatch(dom, nr, args))
            }
            Some(h) => h(dom, args),
            None => {
                tracing::debug!(nr, "unknown hypercall");
                Err(ENOSYS)
            }
        };
        match result {
            Ok(v) => v,
            Err(errno) => {
                tracing::debug!(nr, name = nr::name(nr), errno = pv_abi::errno::name(errno), "hypercall failed");
                (-errno) as u64
            }
        }
    }
}

fn do_console_io(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    let (cmd, count, buf) = (a[0], a[1], a[2]);
    match cmd {
        console_io::WRITE => {
            if count > console_io::MAX_COUNT {
                dom.ram.check(buf, count)?;
                return Err(EINVAL);
            }
            let bytes = dom.ram.read_vec(buf, count)?;
            dom.console.write(&bytes);
            Ok(count)
        }
        console_io::READ => {
            // An output buffer (nothing to read yet): checked as one.
            dom.ram.check_output(buf, count)?;
            Ok(0)
        }
        _ => Err(ENOSYS),
    }
}

pub(crate) fn do_sched_op(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    match a[0] {
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

fn do_xen_version(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    if let Some(r) = crate::pvh::hvm_op::xen_version(dom, a) {
        return r;
    }
    match a[0] {
        xen_version::VERSION => Ok(ABI_VERSION as u64),
        xen_version::GET_FEATURES => {
            let mut info: xen_version::FeatureInfo = dom.ram.read_obj(a[1])?;
            info.submap = if info.submap_idx == 0 { dom.features } else { 0 };
            dom.ram.copy_obj_to_guest(a[1], &info)?;
            Ok(0)
        }
        _ => Err(ENOSYS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_refuses_numbers_without_a_slot() {
        let mut t = HypercallTable::default();
        let h: Handler = |_, _| Ok(7);
        assert_eq!(t.register(TABLE_SIZE as u64, h), Err(NoSlot(64)));
        assert_eq!(t.register(u64::MAX, h), Err(NoSlot(u64::MAX)));
        assert_eq!(t.register(TABLE_SIZE as u64 - 1, h), Ok(()));
        assert!(t.handlers[TABLE_SIZE - 1].is_some());
        assert!(DEFAULT_HANDLERS.iter().all(|(nr, _)| t.handlers[*nr as usize].is_some()));
    }
}
