//! Grant table, guest side: one guest-owned page of v1 entries registered
//! with `GNTTABOP_setup_table`, a reference allocator, and end-of-access
//! that refuses while the VMM has the grant mapped.

use crate::arch;
use crate::hypercall::{check, Errno};
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};
use pv_abi::event_channel::{DomId, DOMID_SELF};
use pv_abi::grant_table::*;
use pv_abi::hypercall::nr;

/// Entries in the (one-page) table.
pub const NR_GRANTS: u32 = GRANT_ENTRIES_PER_FRAME as u32;
/// References Xen reserves for the toolstack (`GNTTAB_NR_RESERVED_ENTRIES`).
pub const NR_RESERVED: u32 = 8;

/// The table page: each v1 entry (flags, domid, frame) is one atomic word.
#[repr(C, align(4096))]
struct Table([AtomicU64; NR_GRANTS as usize]);
static TABLE: Table = Table([const { AtomicU64::new(0) }; NR_GRANTS as usize]);
/// Allocation bitmap: bit set = reference in use.
static USED: [AtomicU64; NR_GRANTS as usize / 64] = [const { AtomicU64::new(0) }; NR_GRANTS as usize / 64];

const IN_USE: u16 = GTF_READING | GTF_WRITING;

fn grant_op<T>(cmd: u32, arg: &mut T, count: u64) -> Result<u64, Errno> {
    // SAFETY: the VMM reads and writes `count` `T`s at the pointer, which
    // names `arg` (count is 1 for the ops used here).
    check(unsafe { arch::hypercall(nr::GRANT_TABLE_OP, cmd as u64, arg as *mut T as u64, count, 0, 0) })
}

/// Registers the table with the VMM. Returns Xen's `GNTST_*` status as an
/// error if the VMM refuses.
pub fn init() -> Result<(), i16> {
    let frames = [TABLE.0.as_ptr() as u64 >> 12];
    let mut op =
        GnttabSetupTable { dom: DOMID_SELF, nr_frames: 1, frame_list: frames.as_ptr() as u64, ..Default::default() };
    grant_op(GNTTABOP_SETUP_TABLE, &mut op, 1).map_err(|_| GNTST_GENERAL_ERROR)?;
    if op.status != GNTST_OKAY {
        return Err(op.status);
    }
    Ok(())
}

/// `GNTTABOP_setup_table` with arbitrary frame numbers (hostile-guest
/// tests); returns the `GNTST_*` status the VMM wrote back.
///
/// ```compile_fail,E0133
/// // Safe code cannot hand the VMM pages it does not own as a grant table.
/// let _ = frontend_guest::grant::setup_frames(&[0x100]);
/// ```
///
/// # Safety
///
/// If the VMM accepts the frames, it treats them as this guest's grant
/// table from then on (reading entries, and writing `GTF_reading` /
/// `GTF_writing` into them while grants are mapped) and stops using the
/// table [`init`] registered. Every frame must be a page the caller owns
/// for that use for the rest of the guest's life, or one the VMM refuses
/// (outside usable RAM), so nothing is registered.
pub unsafe fn setup_frames(frames: &[u64]) -> Result<i16, Errno> {
    let mut op = GnttabSetupTable {
        dom: DOMID_SELF,
        nr_frames: frames.len() as u32,
        frame_list: frames.as_ptr() as u64,
        ..Default::default()
    };
    grant_op(GNTTABOP_SETUP_TABLE, &mut op, 1)?;
    Ok(op.status)
}

/// `GNTTABOP_query_size`: (frames in use, maximum frames).
pub fn query_size() -> Result<(u32, u32), Errno> {
    let mut op = GnttabQuerySize { dom: DOMID_SELF, ..Default::default() };
    grant_op(GNTTABOP_QUERY_SIZE, &mut op, 1)?;
    Ok((op.nr_frames, op.max_nr_frames))
}

/// `GNTTABOP_copy`: the VMM runs each element of `ops` and writes its
/// `status` back (a failed element does not stop the batch). Fails as a
/// whole only for an unreadable array (`EFAULT`); a long batch is continued.
///
/// # Safety
/// The VMM writes every destination the elements name. A destination given
/// as a frame (`GNTCOPY_DEST_GREF` clear) can be any guest frame, so the
/// caller must own the bytes `dest.offset .. dest.offset + len` of it, as
/// for a DMA target: nothing else may hold a reference into them.
pub unsafe fn copy(ops: &mut [GnttabCopy]) -> Result<(), Errno> {
    // SAFETY: the VMM reads `ops.len()` elements at the pointer and writes
    // only their `status` fields, plus the destinations the caller vouched
    // for.
    let ret = unsafe {
        arch::hypercall(nr::GRANT_TABLE_OP, GNTTABOP_COPY as u64, ops.as_mut_ptr() as u64, ops.len() as u64, 0, 0)
    };
    check(ret).map(|_| ())
}

fn entry(gref: GrantRef) -> Option<&'static AtomicU64> {
    TABLE.0.get(gref as usize)
}

fn encode(flags: u16, domid: DomId, frame: u32) -> u64 {
    GrantEntryV1 { flags, domid, frame }.to_word()
}

/// The flags of `gref` as the VMM last left them.
pub fn flags(gref: GrantRef) -> u16 {
    entry(gref).map_or(0, |e| e.load(SeqCst) as u16)
}

fn alloc_ref() -> Option<GrantRef> {
    // References 0..8 stay reserved, as in Xen (idempotent).
    USED[0].fetch_or((1u64 << NR_RESERVED) - 1, SeqCst);
    for (w, word) in USED.iter().enumerate() {
        let mut cur = word.load(SeqCst);
        while cur != u64::MAX {
            let bit = (!cur).trailing_zeros();
            match word.compare_exchange(cur, cur | 1 << bit, SeqCst, SeqCst) {
                Ok(_) => return Some(w as u32 * 64 + bit),
                Err(now) => cur = now,
            }
        }
    }
    None
}

fn free_ref(gref: GrantRef) {
    if let Some(w) = USED.get(gref as usize / 64) {
        w.fetch_and(!(1 << (gref % 64)), SeqCst);
    }
}

/// Grants `domid` access to guest frame `frame` (read-only or writable).
pub fn grant_access(domid: DomId, frame: u64, readonly: bool) -> Option<GrantRef> {
    let gref = alloc_ref()?;
    let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
    // One atomic store publishes frame, domid and flags together.
    entry(gref)?.store(encode(flags, domid, frame as u32), SeqCst);
    Some(gref)
}

/// Grants access to the page holding guest-physical `gpa`.
pub fn grant_page(domid: DomId, gpa: u64, readonly: bool) -> Option<GrantRef> {
    grant_access(domid, gpa >> 12, readonly)
}

/// Ends access to `gref` (Xen's `gnttab_end_foreign_access_ref`): fails
/// with `EBUSY` while the VMM has it mapped; on success the reference is
/// free for reuse.
pub fn end_access(gref: GrantRef) -> Result<(), Errno> {
    let e = entry(gref).ok_or(Errno(pv_abi::errno::EINVAL))?;
    let mut cur = e.load(SeqCst);
    loop {
        if cur as u16 & IN_USE != 0 {
            return Err(Errno(pv_abi::errno::EBUSY));
        }
        match e.compare_exchange(cur, cur & !0xffff, SeqCst, SeqCst) {
            Ok(_) => break,
            Err(now) => cur = now,
        }
    }
    free_ref(gref);
    Ok(())
}

/// Writes a raw entry (for tests that forge or corrupt grants).
pub fn set_raw(gref: GrantRef, flags: u16, domid: DomId, frame: u32) {
    if let Some(e) = entry(gref) {
        e.store(encode(flags, domid, frame), SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_and_end_access_on_the_host() {
        let g = grant_access(0, 0x123, true).unwrap();
        assert!(g >= NR_RESERVED, "reserved references are never handed out");
        assert_eq!(flags(g), GTF_PERMIT_ACCESS | GTF_READONLY);
        let raw = entry(g).unwrap().load(SeqCst);
        assert_eq!(raw >> 32, 0x123);
        // Simulate the VMM mapping it.
        entry(g).unwrap().fetch_or(GTF_READING as u64, SeqCst);
        assert_eq!(end_access(g), Err(Errno(pv_abi::errno::EBUSY)));
        entry(g).unwrap().fetch_and(!(GTF_READING as u64), SeqCst);
        assert_eq!(end_access(g), Ok(()));
        assert_eq!(flags(g), 0);
    }
}
