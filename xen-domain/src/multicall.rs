//! `multicall` (Xen's `xen/common/multicall.c`,
//! `xen/include/public/xen.h` `struct multicall_entry`): several
//! hypercalls in one exit, with Xen's semantics.
//!
//! Each entry is copied in, run through the ordinary dispatch table with
//! its first five `args`, and its `result` (the raw `rax` value) written
//! back. A failing entry does not stop the batch: the guest reads each
//! result. A nested `multicall` entry is refused with `-EINVAL` (Xen's
//! "multicall reentry is disallowed"). The call itself returns 0, `-E2BIG`
//! for more than [`MAX_MULTICALL_ENTRIES`] entries, or `-EFAULT` if the
//! array is not in guest RAM (entries before the bad one have run).

use crate::domain::{Domain, HcResult};
use pv_abi::errno::{E2BIG, EFAULT, EINVAL};
use pv_abi::hypercall::nr;
use pv_abi::multicall::{MulticallEntry, MAX_MULTICALL_ENTRIES};
use std::mem::{offset_of, size_of};

/// Runs a `multicall(entries, count)`, each entry through `dispatch`
/// (the hypercall table's: number and arguments in, raw `rax` out). Work
/// is bounded per exit ([`crate::preempt`]): the multicall is continued at
/// the first entry not finished; an entry whose own hypercall was
/// continued gets its new arguments written into its `args` and is re-run
/// from there.
pub fn do_multicall(dom: &mut Domain, a: &[u64; 5], dispatch: impl Fn(&mut Domain, u64, &[u64; 5]) -> u64) -> HcResult {
    let (array, count) = (a[0], a[1]);
    if count > MAX_MULTICALL_ENTRIES {
        return Err(E2BIG);
    }
    let size = size_of::<MulticallEntry>() as u64;
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
        let entry: MulticallEntry = dom.ram.read_obj(gpa).map_err(|_| EFAULT)?;
        let result = if entry.op == nr::MULTICALL {
            tracing::debug!("nested multicall refused");
            (-EINVAL) as u64
        } else {
            let args = [entry.args[0], entry.args[1], entry.args[2], entry.args[3], entry.args[4]];
            dispatch(dom, entry.op, &args)
        };
        if let Some(args) = dom.continuation.take() {
            let at = gpa + offset_of!(MulticallEntry, args) as u64;
            let bytes: Vec<u8> = args.iter().flat_map(|v| v.to_le_bytes()).collect();
            dom.ram.copy_to_guest(at, &bytes)?;
            dom.create_continuation([gpa, count - i, 0, 0, 0]);
            return Ok(0);
        }
        dom.ram.copy_obj_to_guest(gpa + offset_of!(MulticallEntry, result) as u64, &result)?;
    }
    Ok(0)
}

/// Against `xen/include/public/xen.h` (`struct multicall_entry`: `op`,
/// `result`, `args[6]`) and `xen/common/multicall.c` (`do_multicall`:
/// each entry's raw return value in `result`, a failing entry does not
/// stop the batch, `-EFAULT` for an array the guest cannot access;
/// re-entering `multicall` from an entry is refused).
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
    fn too_many_entries_is_e2big() {
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
