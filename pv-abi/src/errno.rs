//! Error numbers returned (negated) in `rax` by hypercalls.
//!
//! The values are Xen's (`xen/include/public/errno.h`), which match Linux on
//! x86 for every value used here.

/// Operation not permitted.
pub const EPERM: i64 = 1;
/// No such file or directory (store: no such node).
pub const ENOENT: i64 = 2;
/// No such process (Xen: no such domain).
pub const ESRCH: i64 = 3;
/// I/O error.
pub const EIO: i64 = 5;
/// No such device or address (`VCPUOP_register_vcpu_info`: a bad place).
pub const ENXIO: i64 = 6;
/// Argument list too long / value too large for the buffer.
pub const E2BIG: i64 = 7;
/// Bad file descriptor (event channels: bad port).
pub const EBADF: i64 = 9;
/// Try again.
pub const EAGAIN: i64 = 11;
/// Out of memory.
pub const ENOMEM: i64 = 12;
/// Permission denied.
pub const EACCES: i64 = 13;
/// Bad address: a guest pointer or length outside guest RAM or overflowing.
pub const EFAULT: i64 = 14;
/// Device or resource busy (e.g. a grant still in use).
pub const EBUSY: i64 = 16;
/// Already exists.
pub const EEXIST: i64 = 17;
/// No such device.
pub const ENODEV: i64 = 19;
/// Is a directory.
pub const EISDIR: i64 = 21;
/// Invalid argument.
pub const EINVAL: i64 = 22;
/// No space left on device / no free slot.
pub const ENOSPC: i64 = 28;
/// Read-only file system.
pub const EROFS: i64 = 30;
/// Result out of range.
pub const ERANGE: i64 = 34;
/// Unknown hypercall or sub-operation.
pub const ENOSYS: i64 = 38;
/// Timer expired (`VCPU_SSHOTTMR_future` with a deadline in the past).
pub const ETIME: i64 = 62;
/// Argument out of domain (`XENMEM_add_to_physmap`: a start extent beyond 16 bits).
pub const EDOM: i64 = 33;
/// Value too large (`XENMAPSPACE_gmfn_range` wrapping around).
pub const EOVERFLOW: i64 = 75;
/// Illegal byte sequence (`XENMAPSPACE_gmfn_range`: start extent beyond `size`).
pub const EILSEQ: i64 = 84;
/// Directory not empty.
pub const ENOTEMPTY: i64 = 39;
/// Already connected.
pub const EISCONN: i64 = 106;
/// Operation not supported.
pub const EOPNOTSUPP: i64 = 95;
/// No buffer space available (`XENVER_*2`: the caller's buffer is too small).
pub const ENOBUFS: i64 = 105;

/// Short name of an errno value (positive), for logs and guest messages.
pub const fn name(errno: i64) -> &'static str {
    match errno {
        EPERM => "EPERM",
        ENOENT => "ENOENT",
        ESRCH => "ESRCH",
        EIO => "EIO",
        ENXIO => "ENXIO",
        E2BIG => "E2BIG",
        EBADF => "EBADF",
        EAGAIN => "EAGAIN",
        ENOMEM => "ENOMEM",
        EACCES => "EACCES",
        EFAULT => "EFAULT",
        EBUSY => "EBUSY",
        EEXIST => "EEXIST",
        ENODEV => "ENODEV",
        EISDIR => "EISDIR",
        EINVAL => "EINVAL",
        ENOSPC => "ENOSPC",
        EROFS => "EROFS",
        ERANGE => "ERANGE",
        ENOSYS => "ENOSYS",
        ENOTEMPTY => "ENOTEMPTY",
        ETIME => "ETIME",
        EISCONN => "EISCONN",
        EOPNOTSUPP => "EOPNOTSUPP",
        ENOBUFS => "ENOBUFS",
        EDOM => "EDOM",
        EOVERFLOW => "EOVERFLOW",
        EILSEQ => "EILSEQ",
        _ => "E?",
    }
}
