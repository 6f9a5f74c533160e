//! Hypercall dispatch: a table from hypercall number to handler, and the
//! calling conventions (Xen's 64-bit one and, for 32-bit PVH code, the
//! compat one).
//!
//! Handlers take the [`Domain`] and the five argument registers and return
//! a value or an errno. Guest pointers are validated by
//! [`GuestRam`](crate::guest_memory::GuestRam)'s checked copies; nothing
//! here holds a reference into guest memory.

use crate::domain::{Domain, HcResult};
use pv_abi::errno::ENOSYS;
use pv_abi::hypercall::nr;

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
const DEFAULT_HANDLERS: [(u64, Handler); 13] = [
    (nr::CONSOLE_IO, crate::console_io::console_io),
    (nr::SCHED_OP, crate::sched_op::sched_op),
    (nr::SET_TIMER_OP, crate::sched_op::set_timer_op),
    (nr::VCPU_OP, crate::vcpu_op::vcpu_op),
    (nr::XEN_VERSION, crate::xen_version::xen_version),
    (nr::EVENT_CHANNEL_OP, |dom, a| dom.evtchn.hypercall(a[0], a[1])),
    (nr::GRANT_TABLE_OP, crate::grant_table::op::grant_table_op),
    (nr::MEMORY_OP, crate::memory_op::memory_op),
    (nr::HVM_OP, crate::hvm_op::hvm_op),
    (nr::MMU_UPDATE, crate::mmu::do_mmu_update),
    (nr::MMUEXT_OP, crate::mmu::do_mmuext_op),
    (nr::SYSCTL, crate::toolstack_op::sysctl),
    (nr::DOMCTL, crate::toolstack_op::domctl),
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

/// The registers a hypercall reads its number and arguments from and
/// writes its result to (a copy the vCPU loop exchanges with the machine).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HypercallRegs {
    /// `rax`: number in, result out.
    pub rax: u64,
    /// `rbx`.
    pub rbx: u64,
    /// `rcx`.
    pub rcx: u64,
    /// `rdx`.
    pub rdx: u64,
    /// `rsi`.
    pub rsi: u64,
    /// `rdi`.
    pub rdi: u64,
    /// `r8`.
    pub r8: u64,
    /// `r10`.
    pub r10: u64,
    /// `rip`.
    pub rip: u64,
}

impl HypercallRegs {
    /// Hypercall number and arguments: Xen's 64-bit convention (`rdi, rsi,
    /// rdx, r10, r8`) or, from 32-bit code (`compat`), `ebx, ecx, edx,
    /// esi, edi`.
    pub fn args(&self, compat: bool) -> (u64, [u64; 5]) {
        if compat {
            let w = |v: u64| v & 0xffff_ffff;
            (w(self.rax), [w(self.rbx), w(self.rcx), w(self.rdx), w(self.rsi), w(self.rdi)])
        } else {
            (self.rax, [self.rdi, self.rsi, self.rdx, self.r10, self.r8])
        }
    }

    /// Completes a hypercall: its result in `rax`, or for a continuation
    /// the `out` re-executed with the remaining work's arguments (`rax`
    /// still holds the number): `pv_abi::hypercall`, "Continuations".
    pub fn complete(&mut self, compat: bool, result: u64, continuation: Option<[u64; 5]>) {
        match continuation {
            Some(a) => {
                self.rip = self.rip.wrapping_sub(pv_abi::hypercall::HYPERCALL_INSN_LEN);
                if compat {
                    (self.rbx, self.rcx, self.rdx, self.rsi, self.rdi) = (a[0], a[1], a[2], a[3], a[4]);
                } else {
                    (self.rdi, self.rsi, self.rdx, self.r10, self.r8) = (a[0], a[1], a[2], a[3], a[4]);
                }
            }
            None => self.rax = result,
        }
    }
}

/// Against `xen/include/public/arch-x86/xen-x86_64.h` and
/// `xen-x86_32.h` (argument registers of each convention) and
/// `xen/arch/x86/hypercall.c` (`-ENOSYS` for numbers without a handler).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_64_bit_and_compat_conventions_read_their_registers() {
        let r = HypercallRegs {
            rax: 0x1_0000_0011,
            rbx: 1 << 32 | 1,
            rcx: 2,
            rdx: 3,
            rsi: 4,
            rdi: 5,
            r8: 6,
            r10: 7,
            rip: 0x1000,
        };
        assert_eq!(r.args(false), (0x1_0000_0011, [5, 4, 3, 7, 6]));
        assert_eq!(r.args(true), (0x11, [1, 2, 3, 4, 5]), "32-bit halves only");
    }

    #[test]
    fn completion_writes_rax_or_rewinds_for_a_continuation() {
        let mut r = HypercallRegs { rax: 13, rip: 0x1002, ..Default::default() };
        r.complete(false, (-ENOSYS) as u64, None);
        assert_eq!((r.rax as i64, r.rip), (-ENOSYS, 0x1002));
        let mut r = HypercallRegs { rax: 13, rip: 0x1002, ..Default::default() };
        r.complete(false, 0, Some([1, 2, 3, 4, 5]));
        assert_eq!((r.rax, r.rip, r.rdi, r.rsi, r.rdx, r.r10, r.r8), (13, 0x1000, 1, 2, 3, 4, 5));
        let mut r = HypercallRegs { rax: 13, rip: 0x1002, ..Default::default() };
        r.complete(true, 0, Some([1, 2, 3, 4, 5]));
        assert_eq!((r.rbx, r.rcx, r.rdx, r.rsi, r.rdi), (1, 2, 3, 4, 5));
    }

    #[test]
    fn numbers_without_a_handler_are_enosys() {
        let mut t = crate::fake::TestDomain::new(pv_abi::start_info::paging_mode::NATIVE);
        for nr in [0, 2, 63, 64, u64::MAX] {
            assert_eq!(t.call(nr, [0; 5]), -ENOSYS, "hypercall {nr}");
        }
    }

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
