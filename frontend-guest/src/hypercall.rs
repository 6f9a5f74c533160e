//! Safe wrappers for the hypercalls the guest uses.

use crate::arch;
use pv_abi::hypercall::{console_io, nr, sched_op, xen_version};

/// A negative hypercall result: the positive errno value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i64);

impl Errno {
    /// Short name such as `EFAULT`.
    pub fn name(self) -> &'static str {
        pv_abi::errno::name(self.0)
    }
}

/// Converts a raw `rax` result to `Ok(value)` or `Err(errno)`.
pub fn check(ret: i64) -> Result<u64, Errno> {
    if ret < 0 {
        Err(Errno(-ret))
    } else {
        Ok(ret as u64)
    }
}

/// Raw hypercall with explicit arguments, for tests that probe the VMM with
/// hostile values.
///
/// ```compile_fail,E0133
/// // Safe code cannot make the VMM write wherever it likes.
/// frontend_guest::hypercall::raw(0, 0, 0, 0);
/// ```
///
/// # Safety
///
/// Hypercall `nr` may write guest memory at any argument it takes as a
/// guest address (the VMM checks only that it is guest RAM, not what the
/// guest keeps there). Each such argument must name memory the caller owns
/// for the size the hypercall writes, or be an address the VMM refuses
/// (outside RAM, in its reserved pages), so the call fails without writing.
pub unsafe fn raw(nr: u64, a1: u64, a2: u64, a3: u64) -> i64 {
    // SAFETY: the caller upholds the contract above for every address
    // argument; the remaining registers are zero.
    unsafe { arch::hypercall(nr, a1, a2, a3, 0, 0) }
}

/// Writes `buf` to the VMM console in one hypercall; returns bytes written.
pub fn console_write(buf: &[u8]) -> Result<u64, Errno> {
    // SAFETY: `console_io` write only reads `buf`, which is valid for its length.
    check(unsafe { arch::hypercall(nr::CONSOLE_IO, console_io::WRITE, buf.len() as u64, buf.as_ptr() as u64, 0, 0) })
}

/// `xen_version(XENVER_version)`: the VMM's ABI version, `(major << 16) | minor`.
/// This is also the cheapest hypercall, used as the null hypercall.
pub fn version() -> Result<u64, Errno> {
    // SAFETY: XENVER_version takes no pointer.
    check(unsafe { arch::hypercall(nr::XEN_VERSION, xen_version::VERSION, 0, 0, 0, 0) })
}

/// `xen_version(XENVER_get_features)`: feature word `submap_idx`.
pub fn features(submap_idx: u32) -> Result<u32, Errno> {
    let mut info = xen_version::FeatureInfo { submap_idx, submap: 0 };
    // SAFETY: the VMM writes a `FeatureInfo` at the pointer, which names `info`.
    check(unsafe { arch::hypercall(nr::XEN_VERSION, xen_version::GET_FEATURES, &mut info as *mut _ as u64, 0, 0, 0) })?;
    Ok(info.submap)
}

/// `sched_op(SCHEDOP_yield)`.
pub fn sched_yield() {
    // SAFETY: no pointer argument.
    let _ = unsafe { arch::hypercall(nr::SCHED_OP, sched_op::YIELD, 0, 0, 0, 0) };
}

/// `sched_op(SCHEDOP_shutdown)` with a reason and the VMM's exit status.
pub fn shutdown(reason: u32, exit_code: u32) -> ! {
    let arg = sched_op::SchedShutdown { reason };
    // SAFETY: the VMM reads a `SchedShutdown` at the pointer, which names `arg`.
    let _ =
        unsafe { arch::hypercall(nr::SCHED_OP, sched_op::SHUTDOWN, &arg as *const _ as u64, exit_code as u64, 0, 0) };
    arch::halt_forever()
}

/// `vcpu_op(cmd, vcpu, arg)` (`xen/include/public/vcpu.h`) with the
/// command's argument structure `arg` (`None`: a null pointer).
pub fn vcpu_op<T>(cmd: u64, vcpu: u32, arg: Option<&mut T>) -> Result<u64, Errno> {
    let ptr = arg.map_or(0, |a| a as *mut T as u64);
    // SAFETY: the VMM reads (and for some commands writes) one `T` at the
    // pointer, which names `arg` (the `VCPUOP_*` argument structure for
    // `cmd`), or none for a null pointer.
    check(unsafe { arch::hypercall(nr::VCPU_OP, cmd, vcpu as u64, ptr, 0, 0) })
}

/// How a guest continues after [`suspend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resumed {
    /// The toolstack cancelled the suspend (the hypercall returned 1):
    /// same domain, every connection as it was.
    Cancelled,
    /// The guest continues as a new domain (it returned 0, as after a
    /// restore): front ends must reconnect to back ends in `InitWait`.
    NewDomain,
}

/// `sched_op(SCHEDOP_shutdown, SHUTDOWN_suspend)`, Xen's cooperative
/// suspend: the call returns when the toolstack resumes the guest; the
/// return value says how (`xen/include/public/sched.h`: it "returns 1 if
/// suspend was cancelled or the domain was merely checkpointed, and 0 if
/// it is resuming in a new domain"; `tools/libs/guest/xg_resume.c`). Our
/// own guests pass 0 in `rdx` (Xen's x86 PV ABI wants the start-info MFN
/// there; this VMM keeps the start-info page where it is).
pub fn suspend() -> Result<Resumed, Errno> {
    let arg = sched_op::SchedShutdown { reason: sched_op::SHUTDOWN_SUSPEND };
    // SAFETY: the VMM reads a `SchedShutdown` at the pointer, which names `arg`.
    let r = check(unsafe { arch::hypercall(nr::SCHED_OP, sched_op::SHUTDOWN, &arg as *const _ as u64, 0, 0, 0) })?;
    Ok(if r == 0 { Resumed::NewDomain } else { Resumed::Cancelled })
}

/// `event_channel_op` with the `EVTCHNOP_*` argument structure `arg` for
/// `cmd` (below both event-channel ABIs, 2-level and FIFO).
pub(crate) fn event_channel_op<T>(cmd: u32, arg: &mut T) -> Result<u64, Errno> {
    // SAFETY: the VMM reads and writes one `T` at the pointer, which names
    // `arg` (the `EVTCHNOP_*` argument structure for `cmd`).
    check(unsafe { arch::hypercall(nr::EVENT_CHANNEL_OP, cmd as u64, arg as *mut T as u64, 0, 0, 0) })
}
