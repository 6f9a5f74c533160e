//! Direct paging (Xen's `xen/arch/x86/mm.c` `do_mmu_update`,
//! `do_mmuext_op`; `xen/include/public/xen.h` `MMU_*`, `MMUEXT_*`): the
//! page-table pool, the `mmu_update` and `mmuext_op` hypercalls, and the
//! trapped-write entry point, all over one [`validator`].
//!
//! Modes (per VM, [`paging_mode`]):
//!
//! - `native`: the pool is an ordinary read-write memslot; the guest writes
//!   its entries itself and nothing is validated (the hardware-assisted
//!   baseline). `mmu_update`/`mmuext_op` return `-ENODEV`.
//! - `trapped`: the pool is a `KVM_MEM_READONLY` memslot; each guest write
//!   to it exits as MMIO and goes through [`PagingState::trapped_write`]
//!   (trap-and-emulate, like write-protected shadow paging). A rejected
//!   write is dropped (the entry keeps its old value) and logged; a store
//!   instruction has no way to return an errno.
//! - `pv`: the pool is read-only too; the guest batches updates into
//!   `mmu_update` (directly or inside a `multicall`).
//!
//! TLB: KVM gives the VMM no way to flush a guest's TLB, so
//! `MMUEXT_TLB_FLUSH_LOCAL` and `MMUEXT_INVLPG_LOCAL` only check their
//! arguments; the guest's MMU executes the flush itself (`invlpg`, or a
//! CR3 reload) right after the hypercall that changed its tables returns.
//! `MMUEXT_NEW_BASEPTR` loads CR3 through `KVM_SET_SREGS`, which makes KVM
//! drop the vCPU's cached translations.
//!
//! What this enforces: on KVM the host is protected by KVM's own
//! second-level translation whatever the guest's tables say. The validation
//! keeps the guest to Xen's PV discipline (and makes its cost measurable);
//! the guest still runs in ring 0 and could load CR3 itself.

pub mod validator;

use crate::domain::{Domain, HcResult};
use pv_abi::errno::EINVAL;
use pv_abi::event_channel::DOMID_SELF;
use pv_abi::layout::PAGE_SHIFT;
use pv_abi::mmu::{self, mmu_err, MmuUpdate, MmuextOp, MMU_UPDATE_PREEMPTED};
use pv_abi::start_info::paging_mode;
pub use validator::{PagingMetrics, PagingState};

/// Entries read from guest memory per copy.
const CHUNK: u64 = 512;

/// Parses `native`, `trapped` or `pv`.
pub fn parse_mode(s: &str) -> Option<u32> {
    match s {
        "native" => Some(paging_mode::NATIVE),
        "trapped" => Some(paging_mode::TRAPPED),
        "pv" => Some(paging_mode::PV),
        _ => None,
    }
}

/// The name of a paging mode.
pub fn mode_name(mode: u32) -> &'static str {
    match mode {
        paging_mode::NATIVE => "native",
        paging_mode::TRAPPED => "trapped",
        paging_mode::PV => "pv",
        _ => "unknown",
    }
}

fn check_mode_and_domain(dom: &Domain, domid: u64) -> Result<(), i64> {
    if dom.paging.mode == paging_mode::NATIVE {
        return Err(mmu_err::WRONG_MODE);
    }
    if domid != u64::from(DOMID_SELF) && domid != 0 {
        return Err(EINVAL);
    }
    Ok(())
}

/// Runs the batch `(array, count, pdone, domid)` of entries of type `T`,
/// calling `one` on each, with Xen's semantics: stop at the first failure,
/// write the number done to `pdone` (if non-zero), return 0 or the
/// failure's errno. Work is bounded per exit ([`crate::preempt`]): when the
/// budget is spent the rest becomes a continuation with
/// `count = remaining | MMU_UPDATE_PREEMPTED`, `*pdone` holding the
/// number done so far.
fn run_batch<T: pv_abi::pod::Pod>(
    dom: &mut Domain,
    a: &[u64; 5],
    mut one: impl FnMut(&mut Domain, T) -> Result<(), i64>,
) -> HcResult {
    let (array, raw_count, pdone) = (a[0], a[1], a[2]);
    let size = std::mem::size_of::<T>() as u64;
    let continued = raw_count & MMU_UPDATE_PREEMPTED != 0;
    let count = raw_count & !MMU_UPDATE_PREEMPTED;
    if count > u64::from(u32::MAX) {
        return Err(EINVAL);
    }
    let mut before = 0u64;
    if pdone != 0 {
        // Checked before any work, so a refused `pdone` applies nothing.
        dom.ram.check_output(pdone, 4)?;
        if continued {
            before = u64::from(dom.ram.read_obj::<u32>(pdone)?);
        }
    }
    let mut done = 0u64;
    let mut result = Ok(0);
    'outer: while done < count {
        let n = (count - done).min(CHUNK);
        let off = done.checked_mul(size).and_then(|o| array.checked_add(o)).ok_or(mmu_err::BAD_ARRAY)?;
        let bytes = match dom.ram.read_vec(off, n * size) {
            Ok(b) => b,
            Err(_) => {
                result = Err(mmu_err::BAD_ARRAY);
                break;
            }
        };
        for chunk in bytes.chunks_exact(size as usize) {
            if dom.preempt_check(done) {
                if pdone != 0 {
                    dom.ram.copy_obj_to_guest(pdone, &(before.wrapping_add(done) as u32))?;
                }
                dom.create_continuation([
                    array + done * size,
                    (count - done) | MMU_UPDATE_PREEMPTED,
                    pdone,
                    a[3],
                    a[4],
                ]);
                return Ok(0);
            }
            let entry: T = pv_abi::pod::from_bytes(chunk).ok_or(mmu_err::BAD_ARRAY)?;
            let scanned = dom.paging.frames_scanned.get();
            let res = one(dom, entry);
            let frames = dom.paging.frames_scanned.get().wrapping_sub(scanned);
            dom.charge(1 + frames.saturating_mul(crate::preempt::FRAME_UNITS));
            if let Err(e) = res {
                result = Err(e);
                break 'outer;
            }
            done += 1;
        }
    }
    if pdone != 0 {
        dom.ram.copy_obj_to_guest(pdone, &(before.wrapping_add(done) as u32))?;
    }
    result
}

/// `mmu_update(reqs, count, pdone, domid)`.
pub fn do_mmu_update(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    // Not in Xen's HVM hypercall table (`xen/include/hypercall-defs.c`):
    // `hvm_hypercall()` answers `-ENOSYS`.
    if dom.pvh.is_some() {
        return Err(pv_abi::errno::ENOSYS);
    }
    check_mode_and_domain(dom, a[3])?;
    run_batch(dom, a, |dom, req: MmuUpdate| {
        if req.cmd() != mmu::MMU_NORMAL_PT_UPDATE {
            dom.paging.counters.rejected += 1;
            tracing::debug!(ptr = req.ptr, "mmu_update: unsupported command");
            return Err(mmu_err::UNKNOWN_CMD);
        }
        dom.paging.update(&dom.ram, req.addr(), req.val)
    })
}

fn frame_gpa(mfn: u64) -> Result<u64, i64> {
    mfn.checked_mul(1 << PAGE_SHIFT).filter(|g| g >> PAGE_SHIFT == mfn).ok_or(mmu_err::NOT_IN_POOL)
}

fn one_mmuext(dom: &mut Domain, op: MmuextOp) -> Result<(), i64> {
    let arg1 = op.arg1_raw();
    let vcpu = dom.current;
    let res = match op.cmd {
        mmu::MMUEXT_PIN_L1_TABLE..=mmu::MMUEXT_PIN_L4_TABLE => {
            let level = (op.cmd - mmu::MMUEXT_PIN_L1_TABLE + 1) as u8;
            frame_gpa(arg1).and_then(|g| dom.paging.pin(&dom.ram, g, level))
        }
        mmu::MMUEXT_UNPIN_TABLE => frame_gpa(arg1).and_then(|g| dom.paging.unpin(g)),
        mmu::MMUEXT_NEW_BASEPTR => {
            frame_gpa(arg1).map_err(|_| mmu_err::NOT_PINNED).and_then(|g| dom.paging.new_baseptr(vcpu, g))
        }
        // The guest flushes its own TLB after the call (module docs).
        mmu::MMUEXT_TLB_FLUSH_LOCAL => Ok(()),
        mmu::MMUEXT_INVLPG_LOCAL => {
            // Canonical 48-bit address.
            let top = (arg1 as i64) >> 47;
            if top == 0 || top == -1 {
                Ok(())
            } else {
                Err(EINVAL)
            }
        }
        _ => Err(mmu_err::UNKNOWN_CMD),
    };
    if let Err(e) = res {
        dom.paging.counters.rejected += 1;
        tracing::debug!(?op, errno = pv_abi::errno::name(e), "mmuext_op rejected");
    }
    res
}

/// `mmuext_op(ops, count, pdone, domid)`.
pub fn do_mmuext_op(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    // `do_mmuext_op()` (`xen/arch/x86/mm.c`) for an HVM caller: the page
    // owner (`get_pg_owner()`) is the caller itself for `DOMID_SELF`, which
    // is not PV (`-EINVAL`); a foreign owner is refused (`-ESRCH`).
    if dom.pvh.is_some() {
        let self_id = a[3] as u16 == DOMID_SELF;
        return Err(if self_id { EINVAL } else { pv_abi::errno::ESRCH });
    }
    check_mode_and_domain(dom, a[3])?;
    run_batch(dom, a, one_mmuext)
}

/// The trapped entry point, called by the vCPU loop for an MMIO write to
/// the pool: validates and applies it, or drops it and logs why.
pub fn trapped_write(dom: &mut Domain, addr: u64, data: &[u8]) {
    if let Err(e) = dom.paging.trapped_write(&dom.ram, addr, data) {
        tracing::debug!(addr, errno = pv_abi::errno::name(e), "trapped page-table write dropped");
    }
}

/// Against `xen/include/public/xen.h` (`struct mmu_update`,
/// `MMU_NORMAL_PT_UPDATE`, `struct mmuext_op`, `MMUEXT_*`, the `pdone`
/// count) and `xen/arch/x86/mm.c` (`do_mmu_update`/`do_mmuext_op`: stop at
/// the first failure with `*pdone` counting the applied entries; `-ENOSYS`
/// for an unknown command; `-EFAULT` for an unreadable array). The
/// per-rule errno values are ours (`pv_abi::mmu::mmu_err`), as documented
/// there.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{TestDomain, TEST_ARG, TEST_POOL};
    use pv_abi::errno::EFAULT;
    use pv_abi::hypercall::nr;
    use pv_abi::mmu::pte;

    const PDONE: u64 = TEST_ARG + 0x800;
    const SELF: u64 = DOMID_SELF as u64;

    fn updates(t: &TestDomain, list: &[MmuUpdate]) {
        for (i, u) in list.iter().enumerate() {
            t.put(TEST_ARG + 16 * i as u64, u);
        }
    }

    fn pin_l4(t: &mut TestDomain) {
        t.put(TEST_ARG, &MmuextOp::with_mfn(mmu::MMUEXT_PIN_L4_TABLE, TEST_POOL >> PAGE_SHIFT));
        assert_eq!(t.call(nr::MMUEXT_OP, [TEST_ARG, 1, 0, SELF, 0]), 0);
    }

    /// `hvm_hypercall()` (`xen/arch/x86/hvm/hypercall.c`, the `hvm64`
    /// column of `xen/include/hypercall-defs.c` has no `mmu_update`):
    /// `-ENOSYS`; `do_mmuext_op()` (`xen/arch/x86/mm.c`) refuses a page owner
    /// that is not PV: `-EINVAL` for `DOMID_SELF`, `-ESRCH` for another.
    #[test]
    fn pvh_guests_get_xens_hvm_errnos() {
        let mut t = TestDomain::pvh();
        assert_eq!(t.call(nr::MMU_UPDATE, [TEST_ARG, 1, 0, SELF, 0]), -pv_abi::errno::ENOSYS);
        assert_eq!(t.call(nr::MMUEXT_OP, [TEST_ARG, 1, 0, SELF, 0]), -EINVAL);
        assert_eq!(t.call(nr::MMUEXT_OP, [TEST_ARG, 1, 0, 0, 0]), -pv_abi::errno::ESRCH);
    }

    #[test]
    fn native_mode_has_no_direct_paging() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        assert_eq!(t.call(nr::MMU_UPDATE, [TEST_ARG, 1, 0, SELF, 0]), -mmu_err::WRONG_MODE);
        assert_eq!(t.call(nr::MMUEXT_OP, [TEST_ARG, 1, 0, SELF, 0]), -mmu_err::WRONG_MODE);
    }

    #[test]
    fn updates_apply_in_order_and_pdone_counts_them() {
        let mut t = TestDomain::new(paging_mode::PV);
        pin_l4(&mut t);
        let l3 = TEST_POOL + 0x1000;
        updates(&t, &[MmuUpdate::normal(TEST_POOL, l3 | pte::P | pte::RW), MmuUpdate::normal(TEST_POOL + 8, 0)]);
        assert_eq!(t.call(nr::MMU_UPDATE, [TEST_ARG, 2, PDONE, SELF, 0]), 0);
        assert_eq!(t.get::<u32>(PDONE), 2);
        assert_eq!(t.get::<u64>(TEST_POOL), l3 | pte::P | pte::RW | pte::A);
        assert_eq!(t.dom.paging.counters.applied, 2);
    }

    #[test]
    fn the_first_failure_stops_the_batch_with_its_errno() {
        let mut t = TestDomain::new(paging_mode::PV);
        pin_l4(&mut t);
        updates(
            &t,
            &[
                MmuUpdate::normal(TEST_POOL + 8, 0),
                MmuUpdate::normal(TEST_POOL + 4, 0),
                MmuUpdate::normal(TEST_POOL + 16, 0),
            ],
        );
        assert_eq!(t.call(nr::MMU_UPDATE, [TEST_ARG, 3, PDONE, SELF, 0]), -mmu_err::MISALIGNED);
        assert_eq!(t.get::<u32>(PDONE), 1);
        // A command other than MMU_NORMAL_PT_UPDATE.
        updates(&t, &[MmuUpdate { ptr: TEST_POOL | mmu::MMU_MACHPHYS_UPDATE, val: 0 }]);
        assert_eq!(t.call(nr::MMU_UPDATE, [TEST_ARG, 1, PDONE, SELF, 0]), -mmu_err::UNKNOWN_CMD);
        assert_eq!(t.get::<u32>(PDONE), 0);
    }

    #[test]
    fn pdone_in_the_pool_is_efault_and_applies_nothing() {
        let mut t = TestDomain::new(paging_mode::PV);
        pin_l4(&mut t);
        updates(&t, &[MmuUpdate::normal(TEST_POOL, (TEST_POOL + 0x1000) | pte::P)]);
        assert_eq!(t.call(nr::MMU_UPDATE, [TEST_ARG, 1, TEST_POOL + 0x2000, SELF, 0]), -EFAULT);
        assert_eq!(t.get::<u64>(TEST_POOL), 0);
        assert_eq!(t.call(nr::MMU_UPDATE, [crate::fake::TEST_RAM - 8, 1, 0, SELF, 0]), -mmu_err::BAD_ARRAY);
    }

    #[test]
    fn only_this_domain_may_be_named() {
        let mut t = TestDomain::new(paging_mode::PV);
        assert_eq!(t.call(nr::MMU_UPDATE, [TEST_ARG, 1, 0, 5, 0]), -EINVAL);
        assert_eq!(t.call(nr::MMUEXT_OP, [TEST_ARG, 1, 0, 5, 0]), -EINVAL);
        assert_eq!(t.call(nr::MMU_UPDATE, [TEST_ARG, u64::from(u32::MAX) + 1, 0, SELF, 0]), -EINVAL);
    }

    #[test]
    fn mmuext_checks_new_baseptr_invlpg_and_unknown_commands() {
        let mut t = TestDomain::new(paging_mode::PV);
        let one = |t: &mut TestDomain, op: MmuextOp| {
            t.put(TEST_ARG, &op);
            t.call(nr::MMUEXT_OP, [TEST_ARG, 1, 0, SELF, 0])
        };
        let l4 = TEST_POOL >> PAGE_SHIFT;
        assert_eq!(one(&mut t, MmuextOp::with_mfn(mmu::MMUEXT_NEW_BASEPTR, l4)), -mmu_err::NOT_PINNED);
        pin_l4(&mut t);
        assert_eq!(one(&mut t, MmuextOp::with_mfn(mmu::MMUEXT_NEW_BASEPTR, l4)), 0);
        assert_eq!(t.dom.paging.pending_cr3, Some(TEST_POOL));
        assert_eq!(one(&mut t, MmuextOp::with_linear_addr(mmu::MMUEXT_INVLPG_LOCAL, 1 << 47)), -EINVAL);
        assert_eq!(one(&mut t, MmuextOp::with_linear_addr(mmu::MMUEXT_INVLPG_LOCAL, 0x40_0000)), 0);
        assert_eq!(one(&mut t, MmuextOp::plain(mmu::MMUEXT_TLB_FLUSH_LOCAL)), 0);
        assert_eq!(one(&mut t, MmuextOp::plain(mmu::MMUEXT_COPY_PAGE)), -mmu_err::UNKNOWN_CMD);
        assert_eq!(one(&mut t, MmuextOp::with_mfn(mmu::MMUEXT_UNPIN_TABLE, l4)), -mmu_err::IN_USE);
    }

    #[test]
    fn trapped_writes_are_validated_and_bad_ones_dropped() {
        let mut t = TestDomain::new(paging_mode::TRAPPED);
        pin_l4(&mut t);
        let l3 = TEST_POOL + 0x1000;
        trapped_write(&mut t.dom, TEST_POOL, &(l3 | pte::P).to_le_bytes());
        assert_eq!(t.get::<u64>(TEST_POOL), l3 | pte::P | pte::A);
        trapped_write(&mut t.dom, TEST_POOL + 8, &(0x10_0000 | pte::P).to_le_bytes());
        assert_eq!(t.get::<u64>(TEST_POOL + 8), 0, "an upper entry must point into the pool");
        assert_eq!(t.dom.paging.counters.trapped_writes, 2);
    }
}
