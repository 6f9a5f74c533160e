//! Hypercall dispatch: a table from hypercall number to handler.
//!
//! Handlers take the [`Domain`] and the five argument registers and return
//! a value or an errno. Guest pointers are validated by [`GuestRam`]'s
//! checked copies; nothing here holds a reference into guest memory.

use crate::domain::Domain;
use crate::memory::BadGuestRange;
use pv_abi::errno::{EFAULT, EINVAL, ENOSYS};
use pv_abi::hypercall::{console_io, nr, sched_op, xen_version, ABI_VERSION};

/// A hypercall's outcome: the value for `rax`, or a positive errno.
pub type HcResult = Result<u64, i64>;

/// A hypercall handler.
pub type Handler = fn(&mut Domain, &[u64; 5]) -> HcResult;

/// Number of slots in the dispatch table.
pub const TABLE_SIZE: usize = 64;

impl From<BadGuestRange> for i64 {
    fn from(_: BadGuestRange) -> i64 {
        EFAULT
    }
}

/// The dispatch table.
#[derive(Clone)]
pub struct HypercallTable {
    handlers: [Option<Handler>; TABLE_SIZE],
}

impl Default for HypercallTable {
    fn default() -> Self {
        let mut t = HypercallTable { handlers: [None; TABLE_SIZE] };
        t.register(nr::CONSOLE_IO, do_console_io);
        t.register(nr::SCHED_OP, do_sched_op);
        t.register(nr::XEN_VERSION, do_xen_version);
        t.register(nr::EVENT_CHANNEL_OP, |dom, a| dom.evtchn.hypercall(a[0], a[1]));
        t.register(nr::GRANT_TABLE_OP, crate::pvh::gnttab::grant_table_op);
        t.register(nr::MEMORY_OP, crate::pvh::memory_op::memory_op);
        t.register(nr::HVM_OP, crate::pvh::hvm_op::hvm_op);
        t.register(nr::MMU_UPDATE, crate::paging::do_mmu_update);
        t.register(nr::MMUEXT_OP, crate::paging::do_mmuext_op);
        t
    }
}

impl HypercallTable {
    /// Installs (or replaces) the handler for `nr`.
    pub fn register(&mut self, nr: u64, handler: Handler) {
        self.handlers[nr as usize] = Some(handler);
    }

    /// Runs hypercall `nr`; unknown numbers give `-ENOSYS`. Returns the raw
    /// `rax` value for the guest.
    pub fn dispatch(&self, dom: &mut Domain, nr: u64, args: &[u64; 5]) -> u64 {
        let handler = usize::try_from(nr).ok().and_then(|i| self.handlers.get(i).copied().flatten());
        let result = match handler {
            _ if nr == nr::MULTICALL => crate::multicall::do_multicall(self, dom, args),
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
            dom.ram.check(buf, count)?;
            Ok(0)
        }
        _ => Err(ENOSYS),
    }
}

fn do_sched_op(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
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
            dom.ram.write_obj(a[1], &info)?;
            Ok(0)
        }
        _ => Err(ENOSYS),
    }
}

/// A guest's request to stop (`SCHEDOP_shutdown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shutdown {
    /// `SHUTDOWN_*` reason.
    pub reason: u32,
    /// Exit status the guest chose.
    pub code: u32,
}
