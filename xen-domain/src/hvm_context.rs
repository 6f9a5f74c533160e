//! A PVH vCPU's first register state from `VCPUOP_initialise`: Xen's
//! `struct vcpu_hvm_context` (`xen/include/public/hvm/hvm_vcpu.h`)
//! checked as `arch_set_info_hvm_guest()` (`xen/arch/x86/hvm/domain.c`)
//! checks it, into a KVM-free [`VcpuContext`] the VMM loads.

use pv_abi::errno::EINVAL;
use pv_abi::hvm::vcpu_hvm::{VcpuHvmContext, MODE_32B, MODE_64B};

/// A segment as Xen's `struct segment_register` holds it: base, limit
/// and the packed attributes (type 0-3, s 4, dpl 5-6, p 7, avl 8, l 9,
/// db 10, g 11).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Segment {
    /// Base address.
    pub base: u64,
    /// Limit (bytes, or pages if `g`), as given.
    pub limit: u32,
    /// Packed attributes.
    pub ar: u16,
}

impl Segment {
    fn ty(self) -> u16 {
        self.ar & 0xf
    }
    fn s(self) -> bool {
        self.ar & (1 << 4) != 0
    }
    /// Descriptor privilege level.
    pub fn dpl(self) -> u16 {
        (self.ar >> 5) & 3
    }
    /// Present.
    pub fn p(self) -> bool {
        self.ar & (1 << 7) != 0
    }
    /// 64-bit code.
    pub fn l(self) -> bool {
        self.ar & (1 << 9) != 0
    }
    /// Default operand size 32 bits.
    pub fn db(self) -> bool {
        self.ar & (1 << 10) != 0
    }
    /// Limit in 4 KiB units.
    pub fn g(self) -> bool {
        self.ar & (1 << 11) != 0
    }
    /// Available to software.
    pub fn avl(self) -> bool {
        self.ar & (1 << 8) != 0
    }
    /// The type field (for the VMM's segment registers).
    pub fn type_(self) -> u8 {
        self.ty() as u8
    }
    /// Code or data (not a system segment).
    pub fn code_or_data(self) -> bool {
        self.s()
    }
}

/// Which segment [`check_segment`] looks at.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seg {
    Cs,
    Ds,
    Ss,
    Es,
    Tr,
}

/// The register state a vCPU starts from (general registers in Xen's
/// `cpu_user_regs` order `rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[allow(missing_docs)]
pub struct VcpuContext {
    pub gprs: [u64; 8],
    pub rip: u64,
    pub rflags: u64,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub cs: Segment,
    pub ds: Segment,
    pub ss: Segment,
    pub es: Segment,
    pub tr: Segment,
}

const CR0_PE: u64 = 1;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_SCE: u64 = 1;
const EFER_LME: u64 = 1 << 8;
pub(crate) const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;
const EFER_FFXSR: u64 = 1 << 14;
/// Xen's `X86_EFLAGS_ALL` (the architectural flags) and `X86_EFLAGS_MBS`.
const EFLAGS_ALL: u64 = 0x003f_7fd5;
const EFLAGS_MBS: u64 = 1 << 1;
/// CR4 bits a guest may set (`hvm_cr4_guest_valid_bits()` for a guest
/// offered the host's features less VMX/SMX and 5-level paging): VME
/// through UMIP, FSGSBASE, PCIDE, OSXSAVE, SMEP, SMAP, PKE.
const CR4_VALID: u64 = 0x7ff | (1 << 11) | (1 << 16) | (1 << 17) | (1 << 18) | (1 << 20) | (1 << 21) | (1 << 22);
/// `SYS_DESC_tss_busy`.
const TSS_BUSY: u16 = 11;

/// `check_segment()`: `-EINVAL` for attribute bits 12-15, a null CS, SS
/// or TR, a code/data TR or a TR that is not a busy 32-bit TSS, a system
/// segment as CS/DS/SS/ES, a non-present one, a non-code CS, a
/// non-writable SS, an execute-only DS/ES.
fn check_segment(s: Segment, which: Seg) -> Result<(), i64> {
    if s.ar & 0xf000 != 0 {
        return Err(EINVAL);
    }
    if s.ar == 0 {
        return if matches!(which, Seg::Ds | Seg::Es) { Ok(()) } else { Err(EINVAL) };
    }
    if which == Seg::Tr {
        if s.s() || s.ty() != TSS_BUSY {
            return Err(EINVAL);
        }
    } else if !s.s() {
        return Err(EINVAL);
    }
    if !s.p() {
        return Err(EINVAL);
    }
    let ok = match which {
        Seg::Cs => s.ty() & 0x8 != 0,
        Seg::Ss => s.ty() & 0x8 == 0 && s.ty() & 0x2 != 0,
        Seg::Ds | Seg::Es => !(s.ty() & 0x8 != 0 && s.ty() & 0x2 == 0),
        Seg::Tr => true,
    };
    ok.then_some(()).ok_or(EINVAL)
}

/// `arch_set_info_hvm_guest()`: the checked register state, or `-EINVAL`.
pub fn from_hvm_context(ctx: &VcpuHvmContext) -> Result<VcpuContext, i64> {
    if ctx.pad != 0 {
        return Err(EINVAL);
    }
    let mut c = match ctx.mode {
        MODE_32B => from_32(ctx)?,
        MODE_64B => from_64(ctx)?,
        _ => return Err(EINVAL),
    };
    if c.efer & EFER_LME != 0 {
        c.efer |= EFER_LMA;
    }
    if c.cr4 & !CR4_VALID != 0 {
        return Err(EINVAL);
    }
    // `hvm_efer_valid()`: reserved bits, and LMA needs LME and paging.
    if c.efer & !(EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE | EFER_FFXSR) != 0
        || (c.efer & EFER_LMA != 0 && c.cr0 & CR0_PG == 0)
    {
        return Err(EINVAL);
    }
    // `hvm_set_cr0()`'s rule (paging needs protection), which the
    // hardware enforces at the vCPU's first entry.
    if c.cr0 & CR0_PG != 0 && c.cr0 & CR0_PE == 0 {
        return Err(EINVAL);
    }
    Ok(c)
}

fn from_32(ctx: &VcpuHvmContext) -> Result<VcpuContext, i64> {
    let r = ctx.x86_32();
    if r.pad1 != 0 || r.pad2 != [0; 3] {
        return Err(EINVAL);
    }
    // Present segments get the accessed bit, as Xen's `SEG()` sets it.
    let seg = |base: u32, limit: u32, ar: u16| {
        let s = Segment { base: base.into(), limit, ar };
        if s.p() {
            Segment { ar: ar | 1, ..s }
        } else {
            s
        }
    };
    let cs = seg(r.cs_base, r.cs_limit, r.cs_ar);
    let ds = seg(r.ds_base, r.ds_limit, r.ds_ar);
    let ss = seg(r.ss_base, r.ss_limit, r.ss_ar);
    let es = seg(r.es_base, r.es_limit, r.es_ar);
    let tr = Segment { base: r.tr_base.into(), limit: r.tr_limit, ar: r.tr_ar | 2 };
    // Xen ORs the five results together, so any failure is -EINVAL.
    for (s, which) in [(cs, Seg::Cs), (ds, Seg::Ds), (ss, Seg::Ss), (es, Seg::Es), (tr, Seg::Tr)] {
        check_segment(s, which)?;
    }
    let limit = if cs.g() { (cs.limit << 12) | 0xfff } else { cs.limit };
    if r.eip > limit
        || ss.dpl() != cs.dpl()
        || (ds.p() && ds.dpl() > cs.dpl())
        || (es.p() && es.dpl() > cs.dpl())
        || (r.efer & EFER_LMA != 0 && r.efer & EFER_LME == 0)
    {
        return Err(EINVAL);
    }
    Ok(VcpuContext {
        gprs: [r.eax, r.ecx, r.edx, r.ebx, r.esp, r.ebp, r.esi, r.edi].map(u64::from),
        rip: r.eip.into(),
        rflags: (u64::from(r.eflags) & EFLAGS_ALL) | EFLAGS_MBS,
        cr0: r.cr0.into(),
        cr3: r.cr3.into(),
        cr4: r.cr4.into(),
        efer: r.efer,
        cs,
        ds,
        ss,
        es,
        tr,
    })
}

fn from_64(ctx: &VcpuHvmContext) -> Result<VcpuContext, i64> {
    let r = ctx.x86_64();
    // Canonical with 48-bit addresses: bits 63..47 all equal.
    let canonical = ((r.rip as i64) << 16 >> 16) as u64 == r.rip;
    if !canonical || r.cr0 & CR0_PG == 0 || r.cr4 & CR4_PAE == 0 || r.efer & EFER_LME == 0 {
        return Err(EINVAL);
    }
    let flat = |ar: u16| Segment { base: 0, limit: !0, ar };
    Ok(VcpuContext {
        gprs: [r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi],
        rip: r.rip,
        rflags: (r.rflags & EFLAGS_ALL) | EFLAGS_MBS,
        cr0: r.cr0,
        cr3: r.cr3,
        cr4: r.cr4,
        efer: r.efer,
        // Xen's fixed long-mode segments: 64-bit code, flat data, 64-bit
        // busy TSS.
        cs: flat(0xa9b),
        ds: flat(0xc93),
        ss: flat(0xc93),
        es: flat(0xc93),
        tr: Segment { base: 0, limit: 0x67, ar: 0x8b },
    })
}

/// Against `xen/arch/x86/hvm/domain.c` (`check_segment`,
/// `arch_set_info_hvm_guest`) and `xen/include/public/hvm/hvm_vcpu.h`.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pv_abi::hvm::vcpu_hvm::{VcpuHvmX86_32, VcpuHvmX86_64};
    use pv_abi::pod::{as_bytes, from_bytes};

    pub(crate) fn ctx32(r: VcpuHvmX86_32) -> VcpuHvmContext {
        VcpuHvmContext { mode: MODE_32B, pad: 0, cpu_regs: from_bytes(as_bytes(&r)).unwrap() }
    }

    fn ctx64(r: VcpuHvmX86_64) -> VcpuHvmContext {
        let mut regs = [0u64; 15];
        regs[..14].copy_from_slice(&from_bytes::<[u64; 14]>(as_bytes(&r)).unwrap());
        VcpuHvmContext { mode: MODE_64B, pad: 0, cpu_regs: regs }
    }

    /// A flat 32-bit protected-mode state, as a PVH AP starts.
    pub(crate) fn good32() -> VcpuHvmX86_32 {
        VcpuHvmX86_32 {
            eip: 0x10_0000,
            esp: 0x8000,
            cr0: 1,
            cs_limit: !0,
            ds_limit: !0,
            ss_limit: !0,
            es_limit: !0,
            cs_ar: 0xc9b,
            ds_ar: 0xc93,
            ss_ar: 0xc93,
            es_ar: 0xc93,
            tr_ar: 0x8b,
            tr_limit: 0x67,
            ..Default::default()
        }
    }

    pub(crate) fn good64() -> VcpuHvmX86_64 {
        VcpuHvmX86_64 {
            rip: 0x10_0000,
            cr0: CR0_PG | CR0_PE,
            cr3: 0x10_6000,
            cr4: CR4_PAE,
            efer: EFER_LME,
            ..Default::default()
        }
    }

    #[test]
    fn good_32_and_64_bit_states_load_with_xens_fixups() {
        let c = from_hvm_context(&ctx32(VcpuHvmX86_32 { eflags: !0, ..good32() })).unwrap();
        assert_eq!((c.rip, c.gprs[4]), (0x10_0000, 0x8000));
        assert_eq!(c.cs.ar, 0xc9b, "accessed bit already set");
        assert_eq!(c.tr.ar, 0x8b);
        assert_eq!(c.rflags, EFLAGS_ALL | EFLAGS_MBS, "eflags masked to X86_EFLAGS_ALL | MBS");
        let c = from_hvm_context(&ctx32(VcpuHvmX86_32 { ds_ar: 0xc92, tr_ar: 0x89, ..good32() })).unwrap();
        assert_eq!((c.ds.ar, c.tr.ar), (0xc93, 0x8b), "accessed and busy bits added");
        let c = from_hvm_context(&ctx64(good64())).unwrap();
        assert_eq!(c.efer, EFER_LME | EFER_LMA, "LME implies LMA");
        assert_eq!((c.cs.ar, c.ss.ar, c.tr.ar, c.tr.limit), (0xa9b, 0xc93, 0x8b, 0x67));
    }

    #[test]
    fn bad_modes_pads_and_64_bit_states_are_einval() {
        let mut c = ctx64(good64());
        c.pad = 1;
        assert_eq!(from_hvm_context(&c), Err(EINVAL));
        c.pad = 0;
        c.mode = 2;
        assert_eq!(from_hvm_context(&c), Err(EINVAL));
        for bad in [
            VcpuHvmX86_64 { rip: 0x8000_0000_0000, ..good64() },
            VcpuHvmX86_64 { cr0: CR0_PE, ..good64() },
            VcpuHvmX86_64 { cr4: 0, ..good64() },
            VcpuHvmX86_64 { efer: 0, ..good64() },
            VcpuHvmX86_64 { cr4: CR4_PAE | (1 << 13), ..good64() },
            VcpuHvmX86_64 { efer: EFER_LME | (1 << 20), ..good64() },
        ] {
            assert_eq!(from_hvm_context(&ctx64(bad)), Err(EINVAL), "{bad:?}");
        }
    }

    #[test]
    fn bad_32_bit_segments_and_limits_are_einval() {
        for bad in [
            VcpuHvmX86_32 { pad1: 1, ..good32() },
            VcpuHvmX86_32 { pad2: [0, 1, 0], ..good32() },
            VcpuHvmX86_32 { cs_ar: 0, ..good32() },
            VcpuHvmX86_32 { ss_ar: 0, ..good32() },
            VcpuHvmX86_32 { tr_ar: 0, ..good32() },
            VcpuHvmX86_32 { cs_ar: 0x1c9b, ..good32() },
            VcpuHvmX86_32 { cs_ar: 0xc93, ..good32() },
            VcpuHvmX86_32 { cs_ar: 0xc1b, ..good32() },
            VcpuHvmX86_32 { ss_ar: 0xc91, ..good32() },
            VcpuHvmX86_32 { ds_ar: 0xc99, ..good32() },
            VcpuHvmX86_32 { ds_ar: 0xc83, ..good32() },
            VcpuHvmX86_32 { tr_ar: 0x9b, ..good32() },
            VcpuHvmX86_32 { tr_ar: 0x83, ..good32() },
            VcpuHvmX86_32 { cs_limit: 0xffff, cs_ar: 0x49b, ..good32() },
            VcpuHvmX86_32 { ss_ar: 0xcf3, ..good32() },
            VcpuHvmX86_32 { ds_ar: 0xcf3, ..good32() },
            VcpuHvmX86_32 { efer: EFER_LMA, ..good32() },
            VcpuHvmX86_32 { efer: EFER_LME, ..good32() },
            VcpuHvmX86_32 { cr0: CR0_PG as u32, ..good32() },
        ] {
            assert_eq!(from_hvm_context(&ctx32(bad)), Err(EINVAL), "{bad:?}");
        }
        // A null DS or ES is allowed.
        assert!(from_hvm_context(&ctx32(VcpuHvmX86_32 { ds_ar: 0, es_ar: 0, ..good32() })).is_ok());
    }
}
