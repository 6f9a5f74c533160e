//! `multicall`: several hypercalls in one exit (Xen's `multicall_entry`).
//!
//! Arguments: `rdi` = guest-physical address of an array of
//! [`MulticallEntry`], `rsi` = count. The VMM runs each entry's hypercall
//! with `args` as its argument registers and stores the result in `result`.

/// Largest number of entries one `multicall` accepts.
pub const MAX_MULTICALL_ENTRIES: u64 = 256;

/// One call in a batch (Xen's `multicall_entry`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MulticallEntry {
    /// The hypercall number ([`nr`](crate::hypercall::nr)).
    pub op: u64,
    /// OUT: the call's return value (as `rax` would hold it).
    pub result: u64,
    /// The arguments, in `rdi, rsi, rdx, r10, r8, r9` order.
    pub args: [u64; 6],
}
crate::assert_layout!(MulticallEntry, size = 64, op = 0, result = 8, args = 16);

impl MulticallEntry {
    /// An entry calling hypercall `op` with `args`.
    pub const fn new(op: u64, args: [u64; 6]) -> Self {
        MulticallEntry { op, result: 0, args }
    }
}
