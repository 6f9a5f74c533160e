//! PVH boot (Xen `docs/misc/pvh.pandoc`): `hvm_start_info` with the memory
//! map and command line, and the vCPU in 32-bit protected mode with paging
//! off, flat segments, a TSS, and `ebx` pointing at the start-info.

use crate::error::VmmError;
use crate::memory::GuestRam;
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use pv_abi::hvm::{HvmMemmapEntry, HvmStartInfo, HVM_START_MAGIC, HVM_START_VERSION};
use xen_domain::pvh::PvhLayout;

/// Offset of the memory map in the start-info page.
const MEMMAP_OFFSET: u64 = 0x100;
/// Offset of the command line in the start-info page.
const CMDLINE_OFFSET: u64 = 0x400;
/// Longest command line (NUL included) that fits the page.
pub const MAX_CMDLINE: usize = (4096 - CMDLINE_OFFSET) as usize;

/// Writes `hvm_start_info`, its memory map and the command line into the
/// start-info page; returns its address (for `ebx`).
pub fn write_start_info(ram: &GuestRam, layout: &PvhLayout, cmdline: &str) -> Result<u64, VmmError> {
    if cmdline.len() >= MAX_CMDLINE {
        return Err(VmmError::CmdlineTooLong(cmdline.len()));
    }
    let w = |e: crate::memory::BadGuestRange| VmmError::BootWrite(e.to_string());
    let base = layout.start_info();
    let map = layout.memory_map();
    for (i, &(addr, size, kind)) in map.iter().enumerate() {
        let e = HvmMemmapEntry { addr, size, kind, reserved: 0 };
        ram.write_obj(base + MEMMAP_OFFSET + i as u64 * 24, &e).map_err(w)?;
    }
    let mut line = cmdline.as_bytes().to_vec();
    line.push(0);
    ram.write(base + CMDLINE_OFFSET, &line).map_err(w)?;
    let si = HvmStartInfo {
        magic: HVM_START_MAGIC,
        version: HVM_START_VERSION,
        cmdline_paddr: base + CMDLINE_OFFSET,
        memmap_paddr: base + MEMMAP_OFFSET,
        memmap_entries: map.len() as u32,
        ..Default::default()
    };
    ram.write_obj(base, &si).map_err(w)?;
    Ok(base)
}

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;

fn flat(selector: u16, type_: u8, s: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: 1,
        s,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Puts `sregs` in the PVH entry state: CR0 = PE|ET, CR4 = 0, EFER = 0,
/// flat 32-bit code and data, a 32-bit TSS (base 0, limit 0x67).
pub fn entry_sregs(sregs: &mut kvm_sregs) {
    sregs.cr0 = CR0_PE | CR0_ET;
    sregs.cr4 = 0;
    sregs.cr3 = 0;
    sregs.efer = 0;
    sregs.cs = flat(0x10, 0xb, 1);
    let data = flat(0x18, 0x3, 1);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment { limit: 0x67, g: 0, db: 0, ..flat(0x20, 0xb, 0) };
    sregs.ldt = kvm_segment { unusable: 1, present: 0, ..flat(0, 0x2, 0) };
    sregs.gdt.base = 0;
    sregs.gdt.limit = 0;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
}

/// Entry registers: `eip` = entry, `ebx` = start-info, interrupts off.
pub fn entry_regs(entry: u32, start_info: u64) -> kvm_regs {
    kvm_regs { rip: entry.into(), rbx: start_info, rflags: 0x2, ..Default::default() }
}

/// `IA32_TSC`.
const MSR_IA32_TSC: u32 = 0x10;

/// Prepares vCPU 0 of a PVH guest: the Xen CPUID leaves, the hypercall-page
/// MSR exit, the entry state, and sync'd system registers (the hypercall
/// convention follows the vCPU's mode). Returns the guest's pvclock.
pub fn prepare_vcpu(
    kvm: &kvm_ioctls::Kvm,
    vm: &kvm_ioctls::VmFd,
    vcpu: &mut kvm_ioctls::VcpuFd,
    entry: u32,
    start_info: u64,
) -> Result<xen_domain::time::PvClock, VmmError> {
    let supported =
        kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES).map_err(VmmError::kvm("get_supported_cpuid"))?;
    let khz = vcpu.get_tsc_khz().unwrap_or(1_000_000);
    let cpuid = crate::pvh::cpuid::install(&supported, 0, xen_domain::domid::GUEST_DOMID.into())
        .and_then(|c| crate::pvh::cpuid::with_time_leaves(c, khz))
        .map_err(|_| VmmError::MissingCap("CPUID entries"))?;
    vcpu.set_cpuid2(&cpuid).map_err(VmmError::kvm("set_cpuid2"))?;
    if !kvm.check_extension(kvm_ioctls::Cap::X86UserSpaceMsr) || !kvm.check_extension(kvm_ioctls::Cap::X86MsrFilter) {
        return Err(VmmError::MissingCap("KVM_CAP_X86_USER_SPACE_MSR / KVM_CAP_X86_MSR_FILTER"));
    }
    crate::pvh::hypercall_page::enable_msr_exit(vm).map_err(VmmError::kvm("KVM_X86_SET_MSR_FILTER"))?;
    let mut sregs = vcpu.get_sregs().map_err(VmmError::kvm("get_sregs"))?;
    entry_sregs(&mut sregs);
    vcpu.set_sregs(&sregs).map_err(VmmError::kvm("set_sregs"))?;
    vcpu.set_regs(&entry_regs(entry, start_info)).map_err(VmmError::kvm("set_regs"))?;
    vcpu.set_sync_valid_reg(kvm_ioctls::SyncReg::Register);
    vcpu.set_sync_valid_reg(kvm_ioctls::SyncReg::SystemRegister);
    crate::pvh::callback::virtual_wire(vcpu).map_err(VmmError::kvm("KVM_SET_LAPIC"))?;
    let mut msrs =
        kvm_bindings::Msrs::from_entries(&[kvm_bindings::kvm_msr_entry { index: MSR_IA32_TSC, ..Default::default() }])
            .map_err(|_| VmmError::MissingCap("MSR list"))?;
    let tsc = match vcpu.get_msrs(&mut msrs) {
        Ok(1) => msrs.as_slice()[0].data,
        _ => xen_domain::time::host_tsc(),
    };
    Ok(xen_domain::time::PvClock::new(khz, tsc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Slot;

    #[test]
    fn start_info_has_magic_memmap_and_cmdline() {
        let layout = PvhLayout::new(8 << 20);
        let ram = GuestRam::new(&[Slot { start: 0, len: 8 << 20, readonly: false }]).unwrap();
        let at = write_start_info(&ram, &layout, "console=hvc0").unwrap();
        let si: HvmStartInfo = ram.read_obj(at).unwrap();
        assert_eq!((si.magic, si.version, si.memmap_entries), (HVM_START_MAGIC, 1, 5));
        let e: HvmMemmapEntry = ram.read_obj(si.memmap_paddr + 2 * 24).unwrap();
        assert_eq!((e.addr, e.addr + e.size, e.kind), (0x10_0000, layout.vmm_base, 1));
        let e: HvmMemmapEntry = ram.read_obj(si.memmap_paddr + 3 * 24).unwrap();
        assert_eq!((e.addr + e.size, e.kind), (8 << 20, 2), "the VMM's pages are reserved");
        assert_eq!(ram.read_vec(si.cmdline_paddr, 13).unwrap(), b"console=hvc0\0");
        assert!(write_start_info(&ram, &layout, &"x".repeat(MAX_CMDLINE)).is_err());
    }
}
