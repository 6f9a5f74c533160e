//! Our own guests' 64-bit direct boot: the memory plan, identity page tables, GDT,
//! start-info, and the vCPU's initial registers.

use crate::error::VmmError;
use crate::memory::{GuestRam, Slot};
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use pv_abi::layout::*;
use pv_abi::start_info::{mem_kind, MemRegion, RingInfo, StartInfo, MAX_CMDLINE};

/// Where everything goes in guest-physical memory for one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Total RAM.
    pub mem_bytes: u64,
    /// Start of the page-table pool (top of RAM).
    pub pool_start: u64,
}

impl MemoryPlan {
    /// Plans a VM of `mem_bytes` (already validated): the pool takes 1/16
    /// of RAM, between 1 MiB and 64 MiB, at the top.
    pub fn new(mem_bytes: u64) -> Self {
        let pool = (mem_bytes / 16).clamp(1 << 20, 64 << 20) & !(PAGE_SIZE - 1);
        MemoryPlan { mem_bytes, pool_start: mem_bytes - pool }
    }

    /// The KVM slots: RAM below the pool, then the pool.
    pub fn slots(&self, pool_readonly: bool) -> [Slot; 2] {
        [
            Slot { start: 0, len: self.pool_start, readonly: false },
            Slot { start: self.pool_start, len: self.mem_bytes - self.pool_start, readonly: pool_readonly },
        ]
    }

    /// Where a guest image may load: above the reserved megabyte, below the pool.
    pub fn loadable(&self) -> (u64, u64) {
        (KERNEL_BASE, self.pool_start)
    }
}

const PTE_P: u64 = 1 << 0;
const PTE_RW: u64 = 1 << 1;
const PTE_PWT: u64 = 1 << 3;
const PTE_PCD: u64 = 1 << 4;
const PTE_A: u64 = 1 << 5;
const PTE_D: u64 = 1 << 6;
const PTE_PS: u64 = 1 << 7;

/// Writes the identity map of the first 4 GiB (2 MiB pages; the top GiB,
/// which holds the local APIC, uncached) and the GDT. Accessed and Dirty are
/// preset so the hardware walker never needs to write these tables.
pub fn write_page_tables_and_gdt(ram: &GuestRam) -> Result<(), VmmError> {
    let w = |gpa: u64, v: u64| ram.write_obj(gpa, &v).map_err(|e| VmmError::BootWrite(e.to_string()));
    w(BOOT_PML4, BOOT_PDPT | PTE_P | PTE_RW | PTE_A)?;
    for gib in 0..BOOT_PD_COUNT {
        let pd = BOOT_PD + gib * PAGE_SIZE;
        w(BOOT_PDPT + gib * 8, pd | PTE_P | PTE_RW | PTE_A)?;
        let cache = if gib == 3 { PTE_PCD | PTE_PWT } else { 0 };
        for i in 0..512u64 {
            let frame = (gib << 30) | (i << 21);
            w(pd + i * 8, frame | PTE_P | PTE_RW | PTE_PS | PTE_A | PTE_D | cache)?;
        }
    }
    // Null, 64-bit code (selector 0x08), data (selector 0x10).
    w(BOOT_GDT, 0)?;
    w(BOOT_GDT + 8, 0x00af_9b00_0000_ffff)?;
    w(BOOT_GDT + 16, 0x00cf_9300_0000_ffff)?;
    Ok(())
}

/// Fills and writes the start-info page.
pub fn write_start_info(
    ram: &GuestRam,
    plan: &MemoryPlan,
    image_end: u64,
    cmdline: &str,
    paging_mode: u32,
) -> Result<StartInfo, VmmError> {
    if cmdline.len() >= MAX_CMDLINE {
        return Err(VmmError::CmdlineTooLong(cmdline.len()));
    }
    let mut si = StartInfo::new();
    si.mem_bytes = plan.mem_bytes;
    si.free_start = image_end;
    si.free_end = plan.pool_start;
    si.shared_info = SHARED_INFO;
    si.console = RingInfo { gpa: CONSOLE_RING, evtchn: 0, _pad: 0 };
    si.store = RingInfo { gpa: STORE_RING, evtchn: 0, _pad: 0 };
    si.pt_pool_start = plan.pool_start;
    si.pt_pool_end = plan.mem_bytes;
    si.boot_pml4 = BOOT_PML4;
    si.paging_mode = paging_mode;
    let regions = [
        MemRegion { start: 0, len: KERNEL_BASE, kind: mem_kind::RESERVED, _pad: 0 },
        MemRegion { start: KERNEL_BASE, len: plan.pool_start - KERNEL_BASE, kind: mem_kind::RAM, _pad: 0 },
        MemRegion { start: plan.pool_start, len: plan.mem_bytes - plan.pool_start, kind: mem_kind::PT_POOL, _pad: 0 },
    ];
    si.mem_map[..regions.len()].copy_from_slice(&regions);
    si.nr_mem_regions = regions.len() as u32;
    si.cmdline[..cmdline.len()].copy_from_slice(cmdline.as_bytes());
    si.cmdline_len = cmdline.len() as u32;
    ram.write_obj(START_INFO, &si).map_err(|e| VmmError::BootWrite(e.to_string()))?;
    Ok(si)
}

const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

fn segment(selector: u16, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl: 0,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Puts `sregs` in 64-bit long mode on the boot page tables and GDT, with an
/// empty IDT (an exception before the guest installs one triple-faults).
pub fn long_mode_sregs(sregs: &mut kvm_sregs) {
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.cr4 = CR4_PAE;
    sregs.cr3 = BOOT_PML4;
    sregs.efer = EFER_LME | EFER_LMA | EFER_NXE;
    sregs.cs = segment(SELECTOR_CODE64, true);
    let data = segment(SELECTOR_DATA, false);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.gdt.base = BOOT_GDT;
    sregs.gdt.limit = 3 * 8 - 1;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
}

/// Initial general registers: entry point, boot stack, start-info in `rdi`.
pub fn entry_regs(entry: u64) -> kvm_regs {
    kvm_regs { rip: entry, rsp: BOOT_STACK_TOP, rdi: START_INFO, rflags: 0x2, ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_keeps_pool_at_top_and_within_bounds() {
        let p = MemoryPlan::new(64 << 20);
        assert_eq!(p.pool_start, 60 << 20);
        let p = MemoryPlan::new(4 << 20);
        assert_eq!(p.pool_start, 3 << 20);
        let p = MemoryPlan::new(2 << 30);
        assert_eq!(p.mem_bytes - p.pool_start, 64 << 20);
        let s = p.slots(true);
        assert_eq!(s[0].len + s[1].len, 2 << 30);
        assert!(s[1].readonly && !s[0].readonly);
    }

    #[test]
    fn identity_map_and_start_info_are_written() {
        let plan = MemoryPlan::new(8 << 20);
        let ram = GuestRam::new(&plan.slots(false)).unwrap();
        write_page_tables_and_gdt(&ram).unwrap();
        let pde: u64 = ram.read_obj(BOOT_PD + 8).unwrap();
        assert_eq!(pde & !0xfff, 2 << 20);
        assert_ne!(pde & PTE_PS, 0);
        let si = write_start_info(&ram, &plan, 0x20_0000, "a=b", 0).unwrap();
        let back: StartInfo = ram.read_obj(START_INFO).unwrap();
        assert_eq!(back.cmdline_bytes(), b"a=b");
        assert_eq!(back.free_end, si.pt_pool_start);
        assert!(write_start_info(&ram, &plan, 0, &"x".repeat(MAX_CMDLINE), 0).is_err());
    }
}
