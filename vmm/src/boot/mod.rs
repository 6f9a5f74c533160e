//! Boot, per guest kind: [`elf`] reads every image once and says how it
//! boots; [`pv`] enters our own guests in 64-bit mode with a start-info
//! page; [`pvh`] enters Xen PVH guests in 32-bit protected mode with
//! `hvm_start_info`.

pub mod elf;
pub mod pv;
pub mod pvh;

pub use pv::{entry_regs, long_mode_sregs, write_page_tables_and_gdt, write_start_info, MemoryPlan};
