//! Shared test helpers: page-aligned process memory standing in for a
//! shared ring page.
#![allow(dead_code)]

use ring_buffers::RawMemory;

/// One 4 KiB page, page-aligned.
#[repr(C, align(4096))]
#[derive(Clone, Copy)]
pub struct Page(pub [u8; 4096]);

/// `n` zeroed pages that outlive every `RawMemory` made from them.
pub struct Region {
    pages: Box<[Page]>,
}

impl Region {
    /// `n` zeroed pages.
    pub fn new(n: usize) -> Self {
        Region { pages: vec![Page([0; 4096]); n].into_boxed_slice() }
    }

    /// A `RawMemory` over the whole region.
    pub fn mem(&mut self) -> RawMemory {
        let len = self.pages.len() * 4096;
        // SAFETY: the pages are owned by `self`, which the tests keep alive
        // (and do not otherwise touch) while any `RawMemory` is used.
        unsafe { RawMemory::new(self.pages.as_mut_ptr().cast::<u8>(), len) }.unwrap()
    }
}
