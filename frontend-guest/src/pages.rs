//! A page allocator over the free RAM named in start-info: a bump
//! allocator (pages are never returned), enough for rings and I/O buffers.

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};
use pv_abi::layout::PAGE_SIZE;

static NEXT: AtomicU64 = AtomicU64::new(0);
static END: AtomicU64 = AtomicU64::new(0);

/// Hands out `start..end` (page-aligned guest-physical addresses).
pub fn init(start: u64, end: u64) {
    NEXT.store(start.next_multiple_of(PAGE_SIZE), SeqCst);
    END.store(end & !(PAGE_SIZE - 1), SeqCst);
}

/// Hands every page not allocated yet to the caller, a guest that manages
/// the rest of its RAM itself (`start..end`); later [`alloc`]s fail, so
/// nothing the library allocated (rings, the FIFO control block) is
/// handed out twice.
pub fn take_rest() -> (u64, u64) {
    let end = END.load(SeqCst);
    (NEXT.swap(end, SeqCst), end)
}

/// `n` contiguous zeroed pages; their guest-physical (= virtual) address.
pub fn alloc(n: u64) -> Option<u64> {
    let bytes = n.checked_mul(PAGE_SIZE)?;
    let mut cur = NEXT.load(SeqCst);
    loop {
        let end = cur.checked_add(bytes)?;
        if end > END.load(SeqCst) {
            return None;
        }
        match NEXT.compare_exchange(cur, end, SeqCst, SeqCst) {
            Ok(_) => return Some(cur),
            Err(now) => cur = now,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bump_allocates_aligned_until_full() {
        super::init(0x1001, 0x5000);
        assert_eq!(super::alloc(1), Some(0x2000));
        assert_eq!(super::alloc(2), Some(0x3000));
        assert_eq!(super::alloc(1), None);
    }
}
