//! `multicall` (Xen's `xen/common/multicall.c`,
//! `xen/include/public/xen.h` `struct multicall_entry`): several
//! hypercalls in one exit, with Xen's semantics.
//!
//! Each entry is copied in, run through the ordinary dispatch table with
//! its first five `args`, and its `result` (the raw `rax` value) written
//! back. A failing entry does not stop the batch: the guest reads each
//! result. A nested `multicall` entry is refused with `-EINVAL` (Xen's
//! "multicall reentry is disallowed"). The call itself returns 0, or
//! `-EFAULT` if the array is not in guest RAM (checked up front, so nothing
//! runs). A 32-bit PVH caller's entries use the compat layout
//! (`compat_multicall_entry`: `u32 op, result, args[6]`, 32 bytes), as
//! Xen's `hvm_do_multicall_call()` chooses by the vCPU's mode.
//!
//! Xen has no entry limit: long batches continue through the preemption
//! budget ([`crate::preempt`]). Our own guests keep the project's cap of
//! [`MAX_MULTICALL_ENTRIES`] (`-E2BIG`, checked by their `paging` test).

use crate::domain::{Domain, HcResult};
use pv_abi::errno::{E2BIG, EFAULT, EINVAL};
use pv_abi::hypercall::nr;
use pv_abi::multicall::{MulticallEntry, MAX_MULTICALL_ENTRIES};
use std::mem::size_of;

/// Bytes of one field of an entry (`op`, `result`, each arg): 8, or 4 in
/// the compat layout.
fn field_bytes(dom: &Domain) -> u64 {
    if dom.compat {
        4
    } else {
        8
    }
}

/// Little-endian integer of `w` bytes at `i` of `raw`.
fn le(raw: &[u8], i: usize, w: usize) -> u64 {
    raw[i..i + w].iter().rev().fold(0, |v, b| (v << 8) | u64::from(*b))
}

/// Writes `values` as `w`-byte little-endian fields at `gpa`.
fn put(dom: &Domain, gpa: u64, values: &[u64], w: usize) -> Result<(), i64> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()[..w].to_vec()).collect();
    dom.ram.copy_to_guest(gpa, &bytes).map_err(Into::into)
}

/// Runs a `multicall(entries, count)`, each entry through `dispatch`
/// (the hypercall table's: number and arguments in, raw `rax` out). Work
/// is bounded per exit ([`crate::preempt`]): the multicall is continued at
/// the first entry not finished; an entry whose own hypercall was
/// continued gets its new arguments written into its `args` and is re-run
/// from there.
pub fn do_multicall(dom: &mut Domain, a: &[u64; 5], dispatch: impl Fn(&mut Domain, u64, &[u64; 5]) -> u64) -> HcResult {
    // Xen's `unsigned int nr_calls`.
    let (array, count) = (a[0], a[1] & 0xffff_ffff);
    if dom.pvh.is_none() && a[1] > MAX_MULTICALL_ENTRIES {
        return Err(E2BIG);
    }
    let w = field_bytes(dom);
    let size = 8 * w;
    debug_assert!(w == 4 || size == size_of::<MulticallEntry>() as u64);
    // Checked up front (as an output: results are written back) so a bad
    // array runs nothing.
    dom.ram.check_output(array, count * size)?;
    for i in 0..count {
        let gpa = array + i * size;
        if dom.preempt_check(i) {
            dom.create_continuation([gpa, count - i, 0, 0, 0]);
            return Ok(0);
        }
        dom.charge(1);
        let raw = dom.ram.read_vec(gpa, size).map_err(|_| EFAULT)?;
        let f = |k: usize| le(&raw, k * w as usize, w as usize);
        let op = f(0);
        let result = if op == nr::MULTICALL {
            tracing::debug!("nested multicall refused");
            (-EINVAL) as u64
        } else {
            dispatch(dom, op, &[f(2), f(3), f(4), f(5), f(6)])
        };
        if let Some(args) = dom.continuation.take() {
            put(dom, gpa + 2 * w, &args, w as usize)?;
            dom.create_continuation([gpa, count - i, 0, 0, 0]);
            return Ok(0);
        }
        put(dom, gpa + w, &[result], w as usize)?;
    }
    Ok(0)
}

/// Against `xen/include/public/xen.h` (`struct multicall_entry`: `op`,
/// `result`, `args[6]`) and `xen/common/multicall.c` (`do_multicall`:
/// each entry's raw return value in `result`, a failing entry does not
/// stop the batch, `-EFAULT` for an array the guest cannot access;
/// re-entering `multicall` from an entry is refused; no count limit) and
/// `xen/arch/x86/hvm/hypercall.c` (`hvm_do_multicall_call()`: the compat
/// entry for 32-bit callers).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{TestDomain, TEST_ARG, TEST_POOL};
    use pv_abi::errno::ENOSYS;
    use pv_abi::hypercall::{xen_version, ABI_VERSION};
    use pv_abi::start_info::paging_mode;

    const SIZE: u64 = size_of::<MulticallEntry>() as u64;

    fn entries(t: &TestDomain, at: u64, list: &[MulticallEntry]) {
        for (i, e) in list.iter().enumerate() {
            t.put(at + i as u64 * SIZE, e);
        }
    }

    fn result(t: &TestDomain, at: u64, i: u64) -> i64 {
        t.get::<MulticallEntry>(at + i * SIZE).result as i64
    }

    #[test]
    fn each_entry_runs_and_gets_its_own_result() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        entries(
            &t,
            TEST_ARG,
            &[
                MulticallEntry::new(nr::XEN_VERSION, [xen_version::VERSION, 0, 0, 0, 0, 0]),
                MulticallEntry::new(63, [0; 6]),
                MulticallEntry::new(nr::XEN_VERSION, [99, 0, 0, 0, 0, 0]),
            ],
        );
        assert_eq!(t.call(nr::MULTICALL, [TEST_ARG, 3, 0, 0, 0]), 0);
        assert_eq!(result(&t, TEST_ARG, 0), i64::from(ABI_VERSION));
        assert_eq!(result(&t, TEST_ARG, 1), -ENOSYS, "an unknown hypercall");
        assert_eq!(result(&t, TEST_ARG, 2), -ENOSYS, "a failure does not stop the batch");
    }

    #[test]
    fn a_nested_multicall_is_einval() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        entries(&t, TEST_ARG, &[MulticallEntry::new(nr::MULTICALL, [TEST_ARG, 1, 0, 0, 0, 0])]);
        assert_eq!(t.call(nr::MULTICALL, [TEST_ARG, 1, 0, 0, 0]), 0);
        assert_eq!(result(&t, TEST_ARG, 0), -EINVAL);
    }

    #[test]
    fn too_many_entries_is_e2big_for_our_own_guests() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        assert_eq!(t.call(nr::MULTICALL, [TEST_ARG, MAX_MULTICALL_ENTRIES + 1, 0, 0, 0]), -E2BIG);
        assert_eq!(t.call(nr::MULTICALL, [TEST_ARG, u64::MAX, 0, 0, 0]), -E2BIG);
        assert_eq!(t.call(nr::MULTICALL, [TEST_ARG, 0, 0, 0, 0]), 0, "an empty batch");
    }

    #[test]
    fn an_array_outside_ram_or_in_the_pool_is_efault_and_runs_nothing() {
        let mut t = TestDomain::new(paging_mode::PV);
        let shutdown = pv_abi::hypercall::sched_op::SHUTDOWN;
        t.dom.ram.write_obj(TEST_POOL, &MulticallEntry::new(nr::SCHED_OP, [shutdown, TEST_ARG, 0, 0, 0, 0])).unwrap();
        assert_eq!(t.call(nr::MULTICALL, [TEST_POOL, 1, 0, 0, 0]), -EFAULT);
        assert_eq!(t.call(nr::MULTICALL, [crate::fake::TEST_RAM - SIZE, 2, 0, 0, 0]), -EFAULT);
        assert_eq!(t.call(nr::MULTICALL, [u64::MAX - 8, 1, 0, 0, 0]), -EFAULT);
        assert_eq!(t.dom.shutdown, None);
    }

    /// `do_multicall()` has no count limit for a Xen guest: 300 entries run
    /// (the budget would continue a longer batch), and the count is Xen's
    /// `unsigned int`.
    #[test]
    fn a_pvh_guest_has_no_entry_limit() {
        let mut t = TestDomain::pvh();
        let list = vec![MulticallEntry::new(nr::XEN_VERSION, [xen_version::VERSION, 0, 0, 0, 0, 0]); 300];
        entries(&t, TEST_ARG, &list);
        assert_eq!(t.call(nr::MULTICALL, [TEST_ARG, 300, 0, 0, 0]), 0);
        assert_eq!(result(&t, TEST_ARG, 299), (4 << 16) | 17);
        assert_eq!(t.call(nr::MULTICALL, [TEST_ARG, 1 << 32, 0, 0, 0]), 0, "count 0 in 32 bits");
    }

    /// `compat_multicall_entry` (`xen/include/public/xen.h` under the compat
    /// translation, `hvm_do_multicall_call()`): 32-bit `op`, `result` and
    /// `args`, 32 bytes per entry, for a 32-bit PVH caller.
    #[test]
    fn a_32_bit_pvh_guest_uses_the_compat_entry_layout() {
        let mut t = TestDomain::pvh();
        // Two compat entries: xen_version(VERSION), then an unknown hypercall.
        t.put(TEST_ARG, &[nr::XEN_VERSION as u32, 0xdead, xen_version::VERSION as u32, 0, 0, 0, 0, 0]);
        t.put(TEST_ARG + 32, &[63u32, 0xdead, 0, 0, 0, 0, 0, 0]);
        t.put(TEST_ARG + 64, &[0xaaaa_aaaau32; 8]);
        t.dom.compat = true;
        t.dom.start_exit();
        let table = t.table.clone();
        let r = do_multicall(&mut t.dom, &[TEST_ARG, 2, 0, 0, 0], |d, n, a| table.dispatch(d, n, a));
        assert_eq!(r, Ok(0));
        assert_eq!(t.get::<[u32; 2]>(TEST_ARG), [nr::XEN_VERSION as u32, (4 << 16) | 17]);
        assert_eq!(t.get::<[u32; 2]>(TEST_ARG + 32), [63, (-ENOSYS) as u32]);
        assert_eq!(t.get::<[u32; 8]>(TEST_ARG + 64), [0xaaaa_aaaa; 8], "nothing beyond two entries");
    }

    #[test]
    fn a_spent_budget_continues_at_the_first_entry_not_run() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        let list = vec![MulticallEntry::new(nr::XEN_VERSION, [xen_version::VERSION, 0, 0, 0, 0, 0]); 4];
        entries(&t, TEST_ARG, &list);
        t.dom.start_exit();
        t.dom.work_left = 2;
        assert_eq!(do_multicall(&mut t.dom, &[TEST_ARG, 4, 0, 0, 0], |d, n, a| t.table.dispatch(d, n, a)), Ok(0));
        assert_eq!(t.dom.continuation, Some([TEST_ARG + 2 * SIZE, 2, 0, 0, 0]));
        assert_eq!(result(&t, TEST_ARG, 1), i64::from(ABI_VERSION));
        assert_eq!(result(&t, TEST_ARG, 2), 0, "not run yet");
    }
}
