//! The conformance guest: a Xen PVH guest of our own, written from Xen's
//! public headers and sources (not from another project's tests), that
//! makes one check per semantic (return value, errno, side effect; the
//! refusals included) and prints one line per check on Xen's HVM debug
//! port 0xE9 (`hvm_print_line()`, `xen/arch/x86/hvm/hvm.c`, which every
//! HVM domain has):
//!
//! ```text
//! ok    26 xen_version(XENVER_pagesize, NULL) want 0x1000 got 0x00001000
//! ```
//!
//! The status is `ok` (Xen's value), `gap` (a known mismatch: the value we
//! return today, listed in docs/conformance.md) or `FAIL`. The guest ends
//! with `conformance guest: <n> checks` and `SCHEDOP_shutdown`: poweroff
//! when nothing failed, crash otherwise (so `vmm run` exits 1).
//!
//! Four variants: 32-bit (compat structure layouts, `ebx, ecx, ...`
//! convention) and 64-bit (long mode, `rdi, rsi, ...`), each with its
//! `XEN_ELFNOTE_PHYS32_ENTRY` note in a `PT_NOTE` program header or only in
//! a `SHT_NOTE` section. Hypercalls go through the hypercall page.
//!
//! Each check is table-driven: the code leaves the value in `eax` and calls
//! a report routine with the check's index; the routine compares it with
//! the table entry the host wrote ([`TABLE`]), fills in the status and the
//! value's hex digits in the check's pre-built line and prints it. The
//! comment beside each check names the Xen file that defines the value.

use crate::pvh_asm::{note_to_section, pvh_elf_with_data, Asm, DATA, GP_COUNT, HCALL_PAGE, RESULTS, SCRATCH};
use pv_abi::errno::*;
use pv_abi::shared_info::{EvtchnLayout, LAYOUT_64, LAYOUT_X86_32};

/// Guest RAM of every variant (the "hole" where shared info is placed is
/// right above it).
pub const MEM: u64 = 16 << 20;
/// Where the checks' code runs (loaded after the boot page).
const CODE: u32 = DATA;
/// The check table: one [`ENTRY`]-byte entry per check.
const TABLE: u32 = 0x11_0000;
/// Room for the code.
const CODE_MAX: u32 = TABLE - CODE;
const ENTRY: u32 = 32;
/// At most this many checks: the hypervisor console prints at most
/// `HvConsole::BURST` (200) lines a second (xen-domain/src/console.rs), and
/// the guest prints its lines in well under a second, with a summary line.
const MAX_CHECKS: u32 = 199;
/// "0123456789abcdef".
const HEX: u32 = TABLE + MAX_CHECKS * ENTRY;
/// Counters of ok, gap and FAIL lines (u32 each).
const COUNTS: u32 = HEX + 16;
/// The pre-built lines.
const LINES: u32 = HEX + 0x40;
/// Hypercall argument structures (guest RAM outside the image).
const ARGS: u32 = 0x12_0000;
/// Values kept for later checks.
const TMP: u32 = ARGS + 0xf00;
/// What the boot page saw: #GP count after its MSR writes, the MSR's value.
const BOOT_GP_AFTER_WRMSR: u32 = SCRATCH + 0xf00;
const BOOT_RDMSR: u32 = SCRATCH + 0xf04;
/// A guest RAM frame shared info is placed over (2 MiB, unused).
const RAM_GFN: u32 = 0x200;
/// A port no domain has (`port_is_valid()` fails).
const BAD_PORT: u32 = 100_000;
/// A domain that does not exist.
const NO_DOMAIN: u32 = 5;
const DOMID_SELF: u32 = 0x7ff0;

// Hypercall numbers (xen/include/public/xen.h).
const SET_TIMER_OP: u32 = 15;
const MEMORY_OP: u32 = 12;
const XEN_VERSION: u32 = 17;
const CONSOLE_IO: u32 = 18;
const GRANT_TABLE_OP: u32 = 20;
const VCPU_OP: u32 = 24;
const SCHED_OP: u32 = 29;
const EVENT_CHANNEL_OP: u32 = 32;
const HVM_OP: u32 = 34;

/// One guest build: 32- or 64-bit, note as `PT_NOTE` or section only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variant {
    /// ELF64 and long mode (else ELF32, protected mode, compat layouts).
    pub elf64: bool,
    /// The PVH entry note only in a `SHT_NOTE` section.
    pub note_in_section: bool,
}

impl Variant {
    /// Every variant.
    pub const ALL: [Variant; 4] = [
        Variant { elf64: false, note_in_section: false },
        Variant { elf64: false, note_in_section: true },
        Variant { elf64: true, note_in_section: false },
        Variant { elf64: true, note_in_section: true },
    ];

    /// A short name (`pvh32-ptnote`, ...).
    pub fn name(self) -> String {
        format!("pvh{}-{}", if self.elf64 { 64 } else { 32 }, if self.note_in_section { "shtnote" } else { "ptnote" })
    }
}

/// What a check expects of the value in `eax`.
#[derive(Clone, Copy, Debug)]
pub enum Expect {
    /// Equal.
    Eq(u32),
    /// Not equal.
    Ne(u32),
    /// Signed greater than.
    Gt(i32),
    /// `value & mask == want`.
    Bits(u32, u32),
}

impl Expect {
    fn encode(self) -> (u32, u32, u32) {
        match self {
            Expect::Eq(v) => (0, v, !0),
            Expect::Bits(m, v) => (0, v & m, m),
            Expect::Ne(v) => (1, v, !0),
            Expect::Gt(v) => (2, v as u32, !0),
        }
    }
    fn describe(self) -> String {
        match self {
            Expect::Eq(v) => errno_or_hex(v),
            Expect::Ne(v) => format!("!={}", errno_or_hex(v)),
            Expect::Gt(v) => format!(">{v}"),
            Expect::Bits(m, v) => format!("&{m:#x}=={v:#x}"),
        }
    }
}

fn errno_or_hex(v: u32) -> String {
    let e = -(v as i32);
    if (1..=200).contains(&e) {
        format!("-{}", pv_abi::errno::name(i64::from(e)))
    } else {
        format!("{v:#x}")
    }
}

/// `-errno` as the guest sees it in `eax`.
fn err(e: i64) -> u32 {
    (-(e as i32)) as u32
}

/// A check as the host knows it.
#[derive(Clone, Debug)]
pub struct Check {
    /// What is checked (the line's text).
    pub name: String,
    /// The expectation (Xen's value).
    pub expect: Expect,
    /// The value we return instead, for a known gap.
    pub gap: Option<u32>,
}

/// A built guest: the ELF image and its checks, in the order printed.
pub struct Guest {
    /// The ELF file.
    pub elf: Vec<u8>,
    /// The checks.
    pub checks: Vec<Check>,
}

fn line_text(i: usize, c: &Check) -> String {
    format!(" {i:3} {} want {} got 0x", c.name, c.expect.describe())
}

/// Builds variant `v`.
pub fn build(v: Variant) -> Guest {
    build_inner(v, None)
}

/// As [`build`], with check `wrong`'s expectation inverted in the guest's
/// table (equal becomes not equal): that check must print `FAIL` and the
/// guest must crash (tests that failures are seen).
pub fn build_with_wrong_expectation(v: Variant, wrong: usize) -> Guest {
    build_inner(v, Some(wrong))
}

fn build_inner(v: Variant, wrong: Option<usize>) -> Guest {
    let mut g = Gen { a: Asm::in_mode(v.elf64), long: v.elf64, checks: Vec::new(), report: 0, slot: 0 };
    g.a.raw(&[0xbc]).raw(&crate::pvh_asm::STACK_TOP.to_le_bytes()); // mov esp (rsp zero-extended)
    let skip = g.a.code.len();
    g.a.raw(&[0xe9, 0, 0, 0, 0]); // jmp over the report routine
    g.report = g.addr();
    emit_report(&mut g.a);
    let rel = (g.a.code.len() - skip - 5) as u32;
    g.a.code[skip + 1..skip + 5].copy_from_slice(&rel.to_le_bytes());
    checks_boot(&mut g);
    checks_cpuid(&mut g);
    checks_xen_version(&mut g);
    checks_console_io(&mut g);
    checks_hvm_op(&mut g);
    checks_sched_op(&mut g);
    checks_vcpu_op(&mut g);
    checks_memory_op(&mut g);
    checks_grant_table_op(&mut g);
    checks_event_channel_op(&mut g);
    checks_event_delivery(&mut g);
    g.finish();
    let data = g.data(wrong);
    let boot = boot_code(v.elf64);
    let mut elf = pvh_elf_with_data(&boot, v.elf64, &data);
    if v.note_in_section {
        elf = note_to_section(elf, v.elf64);
    }
    Guest { elf, checks: g.checks }
}

/// The boot page: descriptors, the hypercall-page MSR (two refused writes
/// first, counted by the #GP handler for [`checks_boot`]), long mode for
/// the 64-bit variant, then a jump to [`CODE`].
fn boot_code(long: bool) -> Asm {
    use pv_abi::hvm::cpuid::XEN_HYPERCALL_MSR as MSR;
    let mut a = Asm::default();
    a.setup_descriptors();
    // xen/arch/x86/msr.c guest_wrmsr_xen(): a non-zero page index, and a
    // gfn without RAM behind it (get_page_from_gfn fails): #GP.
    a.wrmsr(MSR, u64::from(HCALL_PAGE) + 1);
    a.wrmsr(MSR, MEM + 0x10_0000);
    a.wrmsr(MSR, u64::from(HCALL_PAGE));
    a.load_eax(GP_COUNT).store_eax(BOOT_GP_AFTER_WRMSR);
    // guest_rdmsr_xen(): the hypercall-page MSR reads as 0; the next MSR
    // of Xen's range raises #GP.
    a.raw(&[0xb9]).raw(&MSR.to_le_bytes()).eax(0x1234).raw(&[0x0f, 0x32]).store_eax(BOOT_RDMSR);
    a.raw(&[0xb9]).raw(&(MSR + 1).to_le_bytes()).raw(&[0x0f, 0x32]);
    if long {
        a.enter_long_mode();
    }
    a.eax(CODE).raw(&[0xff, 0xe0]); // jmp eax / rax
    a
}

/// Check emitter.
struct Gen {
    a: Asm,
    long: bool,
    checks: Vec<Check>,
    report: u32,
    slot: u32,
}

impl Gen {
    fn addr(&self) -> u32 {
        CODE + self.a.code.len() as u32
    }
    fn compat(&self) -> bool {
        !self.long
    }
    fn layout(&self) -> EvtchnLayout {
        if self.long {
            LAYOUT_64
        } else {
            LAYOUT_X86_32
        }
    }
    /// Hypercall `nr`; `eax` kept in a fresh result slot ([`Gen::last`]).
    fn hc(&mut self, nr: u32, args: &[u32]) -> &mut Self {
        self.slot += 1;
        assert!(self.slot < 1000, "result slots");
        self.a.hypercall(nr, args, self.slot);
        self
    }
    /// `eax` = the last hypercall's result.
    fn last(&mut self) -> &mut Self {
        self.a.load_eax(RESULTS + self.slot * 4);
        self
    }
    /// `eax` = the dword at `addr`.
    fn field(&mut self, addr: u32) -> &mut Self {
        self.a.load_eax(addr);
        self
    }
    fn save(&mut self, addr: u32) -> &mut Self {
        self.a.store_eax(addr);
        self
    }
    fn poke(&mut self, addr: u32, v: u32) -> &mut Self {
        self.a.poke(addr, v);
        self
    }
    /// Pokes a 64-bit value (two dwords).
    fn poke64(&mut self, addr: u32, v: u64) -> &mut Self {
        self.a.poke(addr, v as u32).poke(addr + 4, (v >> 32) as u32);
        self
    }
    /// `op reg, [addr]` (or `op [addr], reg`) with an absolute address in
    /// either mode (64-bit: SIB without base, not RIP-relative).
    fn mem(&mut self, op: &[u8], reg: u8, addr: u32) -> &mut Self {
        self.a.raw(op);
        if self.long {
            self.a.raw(&[(reg << 3) | 4, 0x25]);
        } else {
            self.a.raw(&[(reg << 3) | 5]);
        }
        self.a.raw(&addr.to_le_bytes());
        self
    }
    /// `eax -= [addr]`.
    fn sub_mem(&mut self, addr: u32) -> &mut Self {
        self.mem(&[0x2b], 0, addr)
    }
    /// `eax ^= [addr]`.
    fn xor_mem(&mut self, addr: u32) -> &mut Self {
        self.mem(&[0x33], 0, addr)
    }
    /// `eax` = bit `[port_at]` of the bitmap at `base` (0 or 1).
    fn bit(&mut self, base: u32, port_at: u32) -> &mut Self {
        self.field(port_at).mem(&[0x0f, 0xa3], 0, base); // bt [base], eax
        self.a.raw(&[0x0f, 0x92, 0xc0, 0x0f, 0xb6, 0xc0]); // setc al; movzx eax, al
        self
    }
    /// Sets bit `[port_at]` of the bitmap at `base`.
    fn set_bit(&mut self, base: u32, port_at: u32) -> &mut Self {
        self.field(port_at).mem(&[0x0f, 0xab], 0, base) // bts [base], eax
    }
    /// `eax` = register `reg` (0 eax, 1 ebx, 2 ecx, 3 edx) of CPUID `leaf`/`sub`.
    fn cpuid(&mut self, leaf: u32, sub: u32, reg: u8) -> &mut Self {
        self.a.eax(leaf).raw(&[0xb9]).raw(&sub.to_le_bytes()).raw(&[0x0f, 0xa2]);
        let mov: &[u8] = match reg {
            0 => &[],
            1 => &[0x89, 0xd8],
            2 => &[0x89, 0xc8],
            _ => &[0x89, 0xd0],
        };
        self.a.raw(mov);
        self
    }
    /// Reports `eax` as check `name`, expecting Xen's value `expect`.
    fn expect(&mut self, name: &str, expect: Expect) -> &mut Self {
        self.push(name, expect, None)
    }
    /// As [`Gen::expect`] for a known gap: we return `ours` today.
    fn gap(&mut self, name: &str, expect: Expect, ours: u32) -> &mut Self {
        self.push(name, expect, Some(ours))
    }
    fn push(&mut self, name: &str, expect: Expect, gap: Option<u32>) -> &mut Self {
        let idx = self.checks.len() as u32;
        assert!(idx < MAX_CHECKS);
        self.checks.push(Check { name: name.to_owned(), expect, gap });
        self.a.raw(&[0xb9]).raw(&idx.to_le_bytes()); // mov ecx, idx
        let rel = self.report.wrapping_sub(self.addr() + 5);
        self.a.raw(&[0xe8]).raw(&rel.to_le_bytes()); // call report
        self
    }
    /// The summary line and the shutdown: poweroff if nothing failed,
    /// else crash.
    fn finish(&mut self) {
        let text = format!("conformance guest: {} checks\n", self.checks.len());
        self.a.debugcon(text.as_bytes());
        self.field(COUNTS + 8);
        self.a.raw(&[0xf7, 0xd8, 0x19, 0xc0, 0x83, 0xe0, 0x03]); // neg; sbb eax, eax; and eax, 3 (SHUTDOWN_crash)
        self.save(SCRATCH + 0xff0);
        self.a.hypercall(SCHED_OP, &[2, SCRATCH + 0xff0], 1000).raw(&[0xf4]);
        assert!((self.a.code.len() as u32) <= CODE_MAX, "conformance code too long: {}", self.a.code.len());
    }
    /// The bytes loaded at [`DATA`]: code, table, hex digits, counters, lines.
    fn data(&self, wrong: Option<usize>) -> Vec<u8> {
        let mut d = self.a.code.clone();
        d.resize((TABLE - CODE) as usize, 0);
        let mut lines: Vec<u8> = Vec::new();
        let mut table = vec![0u8; (MAX_CHECKS * ENTRY) as usize];
        for (i, c) in self.checks.iter().enumerate() {
            let text = format!("FAIL{}00000000\n", line_text(i, c));
            assert!(text.len() <= 120, "line too long: {text}");
            let (mut kind, want, mask) = c.expect.encode();
            if wrong == Some(i) {
                kind ^= 1; // Eq <-> Ne
            }
            let at = LINES + lines.len() as u32;
            let words =
                [kind, want, mask, u32::from(c.gap.is_some()), c.gap.unwrap_or(0) & mask, at, text.len() as u32];
            for (j, w) in words.iter().enumerate() {
                table[i * ENTRY as usize + j * 4..][..4].copy_from_slice(&w.to_le_bytes());
            }
            lines.extend_from_slice(text.as_bytes());
        }
        d.extend_from_slice(&table);
        d.extend_from_slice(b"0123456789abcdef");
        d.resize((LINES - CODE) as usize, 0);
        d.extend_from_slice(&lines);
        assert!(CODE + (d.len() as u32) < ARGS, "data overlaps the argument area");
        d
    }
}

/// Rel8 jumps with labels, for the report routine.
#[derive(Default)]
struct Labels {
    at: Vec<(&'static str, usize)>,
    fix: Vec<(usize, &'static str)>,
}

impl Labels {
    fn here(&mut self, a: &Asm, name: &'static str) {
        self.at.push((name, a.code.len()));
    }
    fn jump(&mut self, a: &mut Asm, op: u8, to: &'static str) {
        a.raw(&[op, 0]);
        self.fix.push((a.code.len() - 1, to));
    }
    fn resolve(self, a: &mut Asm) {
        for (pos, to) in self.fix {
            let target = self.at.iter().find(|(n, _)| *n == to).expect("label").1;
            let rel = target as isize - (pos as isize + 1);
            a.code[pos] = i8::try_from(rel).expect("short jump") as u8;
        }
    }
}

/// The report routine (the same bytes in both modes: register-indirect
/// addressing only, no REX): `eax` the value, `ecx` the check index.
/// Compares, counts, writes the status and the hex value into the line,
/// prints it on port 0xE9.
fn emit_report(a: &mut Asm) {
    let mut l = Labels::default();
    a.raw(&[0x89, 0xcb, 0xc1, 0xe3, 0x05, 0x81, 0xc3]).raw(&TABLE.to_le_bytes()); // ebx = entry
    a.raw(&[0x89, 0xc6, 0x89, 0xc2, 0x23, 0x53, 0x08]); // esi = value; edx = value & mask
    a.raw(&[0x8b, 0x7b, 0x04, 0x8b, 0x0b]); // edi = want; ecx = kind
    a.raw(&[0x83, 0xf9, 0x01]);
    l.jump(a, 0x74, "ne");
    a.raw(&[0x83, 0xf9, 0x02]);
    l.jump(a, 0x74, "gt");
    a.raw(&[0x39, 0xfa]);
    l.jump(a, 0x74, "ok");
    l.jump(a, 0xeb, "notok");
    l.here(a, "ne");
    a.raw(&[0x39, 0xfa]);
    l.jump(a, 0x75, "ok");
    l.jump(a, 0xeb, "notok");
    l.here(a, "gt");
    a.raw(&[0x39, 0xfa]);
    l.jump(a, 0x7f, "ok");
    l.here(a, "notok");
    a.raw(&[0x83, 0x7b, 0x0c, 0x00]); // a known gap?
    l.jump(a, 0x74, "fail");
    a.raw(&[0x3b, 0x53, 0x10]); // our known value?
    l.jump(a, 0x74, "gap");
    l.here(a, "fail");
    a.raw(&[0xb8]).raw(b"FAIL").raw(&[0xb9, 2, 0, 0, 0]);
    l.jump(a, 0xeb, "write");
    l.here(a, "gap");
    a.raw(&[0xb8]).raw(b"gap ").raw(&[0xb9, 1, 0, 0, 0]);
    l.jump(a, 0xeb, "write");
    l.here(a, "ok");
    a.raw(&[0xb8]).raw(b"ok  ").raw(&[0x31, 0xc9]);
    l.here(a, "write");
    a.raw(&[0xff, 0x04, 0x8d]).raw(&COUNTS.to_le_bytes()); // inc dword [COUNTS + ecx*4]
    a.raw(&[0x8b, 0x7b, 0x14, 0x89, 0x07]); // edi = line; [edi] = status
    a.raw(&[0x8b, 0x4b, 0x18, 0x8d, 0x7c, 0x0f, 0xfe]); // edi = last hex digit
    a.raw(&[0x89, 0xf0, 0xb9, 8, 0, 0, 0]); // eax = value; ecx = 8
    l.here(a, "hex");
    a.raw(&[0x89, 0xc2, 0x83, 0xe2, 0x0f, 0x8a, 0x92]).raw(&HEX.to_le_bytes()); // dl = HEX[eax & 15]
    a.raw(&[0x88, 0x17, 0xc1, 0xe8, 0x04, 0xff, 0xcf, 0xff, 0xc9]); // [edi] = dl; eax >>= 4; edi--; ecx--
    l.jump(a, 0x75, "hex");
    a.raw(&[0x8b, 0x73, 0x14, 0x8b, 0x4b, 0x18, 0x66, 0xba, 0xe9, 0x00]); // esi = line; ecx = len; dx = 0xe9
    l.here(a, "out");
    a.raw(&[0x8a, 0x06, 0xee, 0xff, 0xc6, 0xff, 0xc9]); // al = [esi]; out dx, al; esi++; ecx--
    l.jump(a, 0x75, "out");
    a.raw(&[0xc3]);
    l.resolve(a);
}

/// The hypercall-page MSR (written by [`boot_code`]).
fn checks_boot(g: &mut Gen) {
    // xen/arch/x86/msr.c guest_wrmsr_xen(): page index != 0 and a gfn
    // that is not RAM both raise #GP; the good write does not.
    g.field(BOOT_GP_AFTER_WRMSR).expect("hypercall page MSR: bad index and non-RAM gfn take #GP", Expect::Eq(2));
    g.field(BOOT_RDMSR).expect("hypercall page MSR reads as 0", Expect::Eq(0));
    g.field(GP_COUNT).sub_mem(BOOT_GP_AFTER_WRMSR).expect("rdmsr 0x40000001 takes #GP", Expect::Eq(1));
    // xen/arch/x86/hvm/vmx/vmx.c (and svm.c) hypercall page: the
    // __HYPERVISOR_iret (23) stub is ud2 (HVM guests cannot use it).
    g.field(HCALL_PAGE + 23 * 32).expect("hypercall page: the iret stub is ud2", Expect::Bits(0xffff, 0x0b0f));
}

/// CPUID leaves 0x40000000.. (xen/arch/x86/cpuid.c cpuid_hypervisor_leaves()).
fn checks_cpuid(g: &mut Gen) {
    let base = 0x4000_0000;
    // cpuid.c: eax = base + XEN_CPUID_MAX_NUM_LEAVES (5, public/arch-x86/cpuid.h)
    // unless the toolstack clamps it (2..5); ours says 4.
    g.cpuid(base, 0, 0).expect("cpuid 0x40000000 eax (largest leaf)", Expect::Eq(base + 5));
    // public/arch-x86/cpuid.h XEN_CPUID_SIGNATURE_E[BCD]X: "XenVMMXenVMM".
    g.cpuid(base, 0, 1).expect("cpuid 0x40000000 ebx 'XenV'", Expect::Eq(0x566e_6558));
    g.cpuid(base, 0, 2).expect("cpuid 0x40000000 ecx 'MMXe'", Expect::Eq(0x6558_4d4d));
    g.cpuid(base, 0, 3).expect("cpuid 0x40000000 edx 'nVMM'", Expect::Eq(0x4d4d_566e));
    // cpuid.c leaf 1: (major << 16) | minor, as XENVER_version (common/kernel.c).
    g.cpuid(base + 1, 0, 0).save(TMP);
    g.hc(XEN_VERSION, &[0, 0]).xor_mem(TMP).expect("cpuid 0x40000001 eax == XENVER_version", Expect::Eq(0));
    // cpuid.c leaf 2: one hypercall page, MSR base 0x40000000.
    g.cpuid(base + 2, 0, 0).expect("cpuid 0x40000002 eax (hypercall pages)", Expect::Eq(1));
    g.cpuid(base + 2, 0, 1).expect("cpuid 0x40000002 ebx (hypercall MSR)", Expect::Eq(0x4000_0000));
    // cpuid.c leaf 3 subleaf 0: ecx = d->arch.tsc_khz.
    g.cpuid(base + 3, 0, 2).expect("cpuid 0x40000003.0 ecx (tsc_khz)", Expect::Ne(0));
    // cpuid.c leaf 4 subleaf 0: IOMMU_MAPPINGS | VCPU_ID | DOMID | UPCALL_VECTOR
    // (public/arch-x86/cpuid.h), ebx = vcpu_id.
    g.cpuid(base + 4, 0, 0).expect("cpuid 0x40000004 eax flags", Expect::Bits(0x5c, 0x5c));
    g.cpuid(base + 4, 0, 1).expect("cpuid 0x40000004 ebx (vcpu id)", Expect::Eq(0));
    // cpuid.c leaf 5: PV-only parameters, nothing for an HVM domain.
    g.cpuid(base + 5, 0, 0).expect("cpuid 0x40000005 eax (HVM: zero)", Expect::Eq(0));
}

/// `xen_version` (xen/common/kernel.c do_xen_version(); permissions from
/// xen/include/xsm/dummy.h xsm_xen_version()).
fn checks_xen_version(g: &mut Gen) {
    let buf = ARGS;
    g.hc(XEN_VERSION, &[0, 0]).expect("xen_version(XENVER_version) is a version", Expect::Gt(0));
    for (cmd, name) in
        [(1, "extraversion"), (2, "compile_info"), (3, "capabilities"), (4, "changeset"), (8, "guest_handle")]
    {
        g.hc(XEN_VERSION, &[cmd, buf]).expect(&format!("xen_version(XENVER_{name})"), Expect::Eq(0));
    }
    // platform_parameters: virt_start 0 for an HVM vCPU.
    g.poke(buf, !0).poke(buf + 4, !0).hc(XEN_VERSION, &[5, buf]);
    g.last().expect("xen_version(XENVER_platform_parameters)", Expect::Eq(0));
    g.field(buf).expect("XENVER_platform_parameters virt_start (HVM: 0)", Expect::Eq(0));
    // get_features submap 0: HVM domU bits; other submaps -EINVAL.
    let xen_features =
        (1 << 0) | (1 << 2) | (1 << 8) | (1 << 9) | (1 << 13) | (1 << 16) | (1 << 18) | (1 << 19) | (1 << 20);
    g.poke(buf, 0).hc(XEN_VERSION, &[6, buf]).last().expect("xen_version(XENVER_get_features, 0)", Expect::Eq(0));
    g.field(buf + 4).gap(
        "XENVER_get_features submap 0 (HVM domU)",
        Expect::Eq(xen_features),
        pv_abi::hvm::xen_version::PVH_FEATURES,
    );
    g.poke(buf, 1).hc(XEN_VERSION, &[6, buf]).expect("xen_version(XENVER_get_features, 1)", Expect::Eq(err(EINVAL)));
    // pagesize: PAGE_SIZE with a NULL argument, -EINVAL with one.
    g.hc(XEN_VERSION, &[7, 0]).expect("xen_version(XENVER_pagesize, NULL)", Expect::Eq(4096));
    g.hc(XEN_VERSION, &[7, buf]).expect("xen_version(XENVER_pagesize, buf)", Expect::Eq(err(EINVAL)));
    // commandline: XSM_PRIV denies a domU: 0, and the "<denied>" string.
    g.poke(buf, 0).hc(XEN_VERSION, &[9, buf]).expect("xen_version(XENVER_commandline)", Expect::Eq(0));
    g.field(buf).expect("XENVER_commandline for a domU is '<denied>'", Expect::Eq(u32::from_le_bytes(*b"<den")));
    // build_id and commandline2: XSM_PRIV, -EPERM for a domU.
    g.hc(XEN_VERSION, &[10, buf]).expect("xen_version(XENVER_build_id)", Expect::Eq(err(EPERM)));
    g.hc(XEN_VERSION, &[14, 0]).expect("xen_version(XENVER_commandline2)", Expect::Eq(err(EPERM)));
    // extraversion2, capabilities2, changeset2 are XSM_HOOK (any guest;
    // extraversion2 and a deprecated set_param are left to the unit tests:
    // the guest is at its 199-check limit):
    // xenver_varbuf_op() with a NULL handle returns the string's length.
    g.hc(XEN_VERSION, &[12, 0]).expect("xen_version(XENVER_capabilities2, NULL) length", Expect::Gt(0));
    g.hc(XEN_VERSION, &[13, 0]).expect("xen_version(XENVER_changeset2, NULL) length", Expect::Gt(-1));
    // struct xen_varbuf { uint32_t len; buf[] }: a len short of the text is -ENOBUFS.
    g.poke(buf, 1).hc(XEN_VERSION, &[12, buf]);
    g.expect("xen_version(XENVER_capabilities2, len 1)", Expect::Eq(err(ENOBUFS)));
    g.hc(XEN_VERSION, &[0x7f, buf]).expect("xen_version(unknown sub-op)", Expect::Eq(err(ENOSYS)));
}

/// `console_io` (xen/drivers/char/console.c do_console_io(), permissions
/// from xen/include/xsm/dummy.h xsm_console_io(): a domU's read and
/// unknown commands are XSM_PRIV; its write is allowed in debug builds).
fn checks_console_io(g: &mut Gen) {
    // The write is allowed to a domU in debug builds (CONFIG_VERBOSE_DEBUG),
    // which ours models (docs/conformance.md); a release build says -EPERM.
    g.hc(CONSOLE_IO, &[0, 0, ARGS]).expect("console_io(CONSOLEIO_write, 0 bytes)", Expect::Eq(0));
    g.hc(CONSOLE_IO, &[1, 16, ARGS]).expect("console_io(CONSOLEIO_read) from a domU", Expect::Eq(err(EPERM)));
    g.hc(CONSOLE_IO, &[7, 16, ARGS]).expect("console_io(unknown) from a domU", Expect::Eq(err(EPERM)));
}

/// `hvm_op` params (xen/arch/x86/hvm/hvm.c hvmop_get_param(),
/// hvm_allow_get_param(), hvm_allow_set_param(); indices from
/// public/hvm/params.h) and the upcall vector.
fn checks_hvm_op(g: &mut Gen) {
    let p = ARGS;
    let get = |g: &mut Gen, dom: u32, index: u32| {
        g.poke(p, dom).poke(p + 4, index).poke64(p + 8, 0).hc(HVM_OP, &[1, p]);
    };
    for (index, name) in [(1, "STORE_PFN"), (2, "STORE_EVTCHN"), (17, "CONSOLE_PFN"), (18, "CONSOLE_EVTCHN")] {
        get(g, DOMID_SELF, index);
        g.expect(&format!("hvm_op get_param({name})"), Expect::Eq(0));
        g.field(p + 8).expect(&format!("HVM_PARAM_{name} is set"), Expect::Gt(0));
    }
    get(g, DOMID_SELF, 0);
    g.expect("hvm_op get_param(CALLBACK_IRQ)", Expect::Eq(0));
    get(g, DOMID_SELF, 39);
    g.expect("hvm_op get_param(HVM_NR_PARAMS)", Expect::Eq(err(EINVAL)));
    get(g, DOMID_SELF, 4);
    g.expect("hvm_op get_param(PAE_ENABLED, deprecated)", Expect::Eq(err(EINVAL)));
    get(g, DOMID_SELF, 12);
    g.expect("hvm_op get_param(IDENT_PT)", Expect::Eq(err(EPERM)));
    get(g, NO_DOMAIN, 1);
    g.expect("hvm_op get_param(unknown domain)", Expect::Eq(err(ESRCH)));
    let set = |g: &mut Gen, index: u32| {
        g.poke(p, DOMID_SELF).poke(p + 4, index).poke64(p + 8, 0x1234).hc(HVM_OP, &[0, p]);
    };
    set(g, 1);
    g.expect("hvm_op set_param(STORE_PFN)", Expect::Eq(err(EPERM)));
    set(g, 17);
    g.expect("hvm_op set_param(CONSOLE_PFN)", Expect::Eq(err(EPERM)));
    set(g, 35);
    g.expect("hvm_op set_param(ALTP2M, read-only)", Expect::Eq(err(EEXIST)));
    // hvmop_set_evtchn_upcall_vector(): vector < 0x10 -EINVAL, no vCPU -ENOENT.
    g.poke(p, 0)
        .poke(p + 4, 5)
        .hc(HVM_OP, &[23, p])
        .expect("hvm_op set_evtchn_upcall_vector(5)", Expect::Eq(err(EINVAL)));
    g.poke(p, 99).poke(p + 4, 0xf3).hc(HVM_OP, &[23, p]);
    g.expect("hvm_op set_evtchn_upcall_vector(vcpu 99)", Expect::Eq(err(ENOENT)));
    // HVMOP_get_time (hvm.c do_hvm_op()): now, in ns of system time.
    g.poke64(p, 0).hc(HVM_OP, &[10, p]).expect("hvm_op(HVMOP_get_time)", Expect::Eq(0));
    g.field(p).mem(&[0x0b], 0, p + 4); // or eax, [p + 4]
    g.expect("HVMOP_get_time: now is not 0", Expect::Ne(0));
    g.hc(HVM_OP, &[99, p]).expect("hvm_op(unknown op)", Expect::Eq(err(ENOSYS)));
}

/// `sched_op` other than shutdown and block (xen/common/sched/core.c
/// do_sched_op(), do_poll(), domain_watchdog()).
fn checks_sched_op(g: &mut Gen) {
    let s = ARGS;
    g.hc(SCHED_OP, &[0, 0]).expect("sched_op(SCHEDOP_yield)", Expect::Eq(0));
    // struct sched_poll: ports, nr_ports, timeout (compat: packed).
    let poll = |g: &mut Gen, nr: u32, port: u32| {
        g.poke(s + 0x40, port);
        if g.compat() {
            g.poke(s, s + 0x40).poke(s + 4, nr).poke64(s + 8, 0);
        } else {
            g.poke64(s, u64::from(s + 0x40)).poke(s + 8, nr).poke(s + 12, 0).poke64(s + 16, 0);
        }
        g.hc(SCHED_OP, &[3, s]);
    };
    poll(g, 129, 1);
    g.expect("sched_op(SCHEDOP_poll, 129 ports)", Expect::Eq(err(EINVAL)));
    poll(g, 1, BAD_PORT);
    g.expect("sched_op(SCHEDOP_poll, invalid port)", Expect::Eq(err(EINVAL)));
    // shutdown_code with an unreadable argument: -EFAULT, nothing recorded
    // (do_sched_op(), xen/common/sched/core.c). A recorded code would be
    // what the final SCHEDOP_shutdown reports (domain_shutdown()), hiding a
    // crash after a failed check, so recording is tested in tests/tests/pvh.rs.
    let unreadable = (MEM + (64 << 20)) as u32;
    g.hc(SCHED_OP, &[5, unreadable]).expect("sched_op(SCHEDOP_shutdown_code, unreadable)", Expect::Eq(err(EFAULT)));
    // remote_shutdown of a domain that does not exist: -ESRCH.
    g.poke(s, NO_DOMAIN).poke(s + 4, 0).hc(SCHED_OP, &[4, s]);
    g.expect("sched_op(SCHEDOP_remote_shutdown, no domain)", Expect::Eq(err(ESRCH)));
    // watchdog: id 0 creates (returns id + 1), timeout 0 destroys, then the
    // id is unknown (-EINVAL); ids above NR_DOMAIN_WATCHDOG_TIMERS -EINVAL.
    g.poke(s, 0).poke(s + 4, 60).hc(SCHED_OP, &[6, s]).save(TMP + 0x10);
    g.expect("sched_op(SCHEDOP_watchdog) creates timer 1", Expect::Eq(1));
    g.field(TMP + 0x10).save(s).poke(s + 4, 0).hc(SCHED_OP, &[6, s]);
    g.expect("sched_op(SCHEDOP_watchdog) destroys it", Expect::Eq(0));
    g.hc(SCHED_OP, &[6, s]).expect("sched_op(SCHEDOP_watchdog) of a destroyed id", Expect::Eq(err(EINVAL)));
    g.poke(s, 3).hc(SCHED_OP, &[6, s]).expect("sched_op(SCHEDOP_watchdog, id 3)", Expect::Eq(err(EINVAL)));
    // pin_override: only the hardware domain.
    g.poke(s, 0).hc(SCHED_OP, &[7, s]).expect("sched_op(SCHEDOP_pin_override)", Expect::Eq(err(EPERM)));
    g.hc(SCHED_OP, &[99, s]).expect("sched_op(unknown op)", Expect::Eq(err(ENOSYS)));
}

/// `vcpu_op` (xen/arch/x86/domain.c do_vcpu_op(), xen/common/domain.c
/// common_vcpu_op(); public/vcpu.h).
fn checks_vcpu_op(g: &mut Gen) {
    let v = ARGS;
    g.hc(VCPU_OP, &[3, 0, 0]).expect("vcpu_op(VCPUOP_is_up, 0)", Expect::Eq(1));
    g.hc(VCPU_OP, &[3, 99, 0]).expect("vcpu_op(VCPUOP_is_up, vcpu 99)", Expect::Eq(err(ENOENT)));
    g.poke(v, !0).hc(VCPU_OP, &[4, 0, v]).expect("vcpu_op(VCPUOP_get_runstate_info)", Expect::Eq(0));
    g.field(v).expect("runstate of the running vCPU is RUNSTATE_running", Expect::Eq(0));
    // register_runstate_memory_area writes the area at once
    // (common_vcpu_op(), public/vcpu.h): one check (the table is nearly
    // full, MAX_CHECKS); a failed call would leave the !0 there. Address
    // 0 then unregisters it. register_vcpu_info's other refusals and its
    // success are checked by xen-domain's unit tests (vcpu_op.rs): a move
    // here would take vcpu_info[0] out of the page later checks read.
    let area = v + 0x40;
    g.poke(area, !0).poke64(v, u64::from(area)).hc(VCPU_OP, &[5, 0, v]);
    g.field(area).expect("register_runstate_memory_area: RUNSTATE_running written", Expect::Eq(0));
    g.poke64(v, 0).hc(VCPU_OP, &[5, 0, v]);
    // A vcpu_info crossing its page: -ENXIO (map_guest_area(),
    // xen/common/domain.c); aligned for both ABIs, so only the crossing
    // is refused.
    let gfn = u64::from(ARGS >> 12) + 1;
    g.poke64(v, gfn).poke(v + 8, 4096 - 56).poke(v + 12, 0).hc(VCPU_OP, &[10, 0, v]);
    g.expect("vcpu_op(register_vcpu_info) crossing a page", Expect::Eq(err(ENXIO)));
    g.poke64(v, 1).hc(VCPU_OP, &[6, 0, v]).expect("vcpu_op(set_periodic_timer, 1 ns)", Expect::Eq(err(EINVAL)));
    g.hc(VCPU_OP, &[7, 0, 0]).expect("vcpu_op(stop_periodic_timer)", Expect::Eq(0));
    // A past timeout is not refused: the timer event is sent at once
    // (VCPU_SSHOTTMR_future is ignored).
    g.poke64(v, 1).poke(v + 8, 1).poke(v + 12, 0).hc(VCPU_OP, &[8, 0, v]);
    // (public/vcpu.h lets a hypervisor honour the flag with -ETIME, as
    // older Xen did; current Xen's answer is 0.)
    g.expect("vcpu_op(set_singleshot_timer, past, FUTURE)", Expect::Eq(0));
    g.poke(v, !0).poke(v + 4, 0x3fff_ffff).poke(v + 8, 0).hc(VCPU_OP, &[8, 0, v]);
    g.expect("vcpu_op(set_singleshot_timer, far future)", Expect::Eq(0));
    g.hc(VCPU_OP, &[9, 0, 0]).expect("vcpu_op(stop_singleshot_timer)", Expect::Eq(0));
    g.hc(VCPU_OP, &[9, 99, 0]).expect("vcpu_op(stop_singleshot_timer, vcpu 99)", Expect::Eq(err(ENOENT)));
    g.hc(VCPU_OP, &[99, 0, 0]).expect("vcpu_op(unknown op)", Expect::Eq(err(ENOSYS)));
    g.hc(SET_TIMER_OP, &[0, 0]).expect("set_timer_op(0) (cancel)", Expect::Eq(0));
}

/// `XENMEM_add_to_physmap` (xen_add_to_physmap: domid, size, space, idx,
/// gpfn; compat: 32-bit idx and gpfn).
fn atp(g: &mut Gen, domid: u32, space: u32, idx: u32, gpfn: u32) {
    let m = ARGS;
    g.poke(m, domid).poke(m + 4, space);
    if g.compat() {
        g.poke(m + 8, idx).poke(m + 12, gpfn);
    } else {
        g.poke64(m + 8, u64::from(idx)).poke64(m + 16, u64::from(gpfn));
    }
    g.hc(MEMORY_OP, &[7, m]);
}

/// `XENMEM_remove_from_physmap` (xen_remove_from_physmap: domid, gpfn).
fn rfp(g: &mut Gen, gpfn: u32) {
    let m = ARGS;
    g.poke(m, DOMID_SELF);
    if g.compat() {
        g.poke(m + 4, gpfn);
    } else {
        g.poke64(m + 8, u64::from(gpfn));
    }
    g.hc(MEMORY_OP, &[15, m]);
}

/// `memory_op` (xen/common/memory.c do_memory_op(), xen/arch/x86/mm.c
/// arch_memory_op(), xen/arch/x86/mm/p2m.c xenmem_add_to_physmap_one(),
/// xen/arch/x86/hvm/hypercall.c hvm_memory_op(); public/memory.h).
fn checks_memory_op(g: &mut Gen) {
    let c = g.compat();
    let (m, dom) = (ARGS, ARGS + 0x80);
    let hole = (MEM >> 12) as u32;
    // xen_memory_map: nr_entries, buffer (compat: packed).
    let map = |g: &mut Gen, nr: u32| {
        g.poke(m, nr).poke(m + 4, if c { m + 0x100 } else { 0 }).poke64(m + 8, u64::from(m + 0x100));
        g.hc(MEMORY_OP, &[9, m]);
    };
    map(g, 16);
    g.expect("memory_op(XENMEM_memory_map)", Expect::Eq(0));
    g.field(m).expect("XENMEM_memory_map nr_entries", Expect::Gt(1));
    map(g, 1);
    g.field(m).expect("XENMEM_memory_map: nr_entries = min(asked, e820)", Expect::Eq(1));
    g.poke(dom, DOMID_SELF).hc(MEMORY_OP, &[3, dom]).save(TMP);
    g.expect("memory_op(XENMEM_current_reservation)", Expect::Gt(0));
    g.hc(MEMORY_OP, &[4, dom]).sub_mem(TMP).expect("maximum_reservation >= current", Expect::Gt(-1));
    g.poke(dom, NO_DOMAIN)
        .hc(MEMORY_OP, &[3, dom])
        .expect("memory_op(XENMEM_current_reservation, no domain)", Expect::Eq(err(ESRCH)));
    g.poke(dom, DOMID_SELF);
    // xen_add_to_physmap: domid, size, space, idx, gpfn (compat: 32-bit idx/gpfn).
    g.poke(RAM_GFN << 12, 0xdead_beef);
    atp(g, DOMID_SELF, 0, 0, RAM_GFN);
    g.expect("add_to_physmap(shared_info) over a RAM frame", Expect::Eq(0));
    g.hc(MEMORY_OP, &[3, dom]).save(TMP + 4).field(TMP).sub_mem(TMP + 4);
    g.expect("the RAM page under it was freed (reservation -1)", Expect::Eq(1));
    // vcpu_info[0].time.tsc_to_system_mul (public/xen.h vcpu_time_info).
    g.field((RAM_GFN << 12) + 32 + 24).expect("pvclock visible through the placed page", Expect::Ne(0));
    atp(g, DOMID_SELF, 0, 0, hole);
    g.expect("add_to_physmap(shared_info) moved into the hole", Expect::Eq(0));
    // xen_remove_from_physmap: domid, gpfn.
    rfp(g, RAM_GFN);
    g.expect("remove_from_physmap of the frame it left (empty)", Expect::Eq(err(ENOENT)));
    checks_reservations(g);
    checks_add_to_physmap_refusals(g);
}

/// Reservation ops on the frame shared info left (xen/common/memory.c).
fn checks_reservations(g: &mut Gen) {
    let c = g.compat();
    let (m, dom) = (ARGS, ARGS + 0x80);
    // xen_memory_reservation over one extent at m + 0x40.
    let reservation = |g: &mut Gen, cmd: u32, gfn: u32, domid: u32| {
        let (r, list) = (m + 0x80, m + 0x40);
        g.poke64(list, u64::from(gfn));
        if c {
            g.poke(r, list).poke(r + 4, 1).poke(r + 8, 0).poke(r + 12, 0).poke(r + 16, domid);
        } else {
            g.poke64(r, u64::from(list)).poke64(r + 8, 1).poke(r + 16, 0).poke(r + 20, 0).poke(r + 24, domid);
        }
        g.hc(MEMORY_OP, &[cmd, r]);
    };
    reservation(g, 6, RAM_GFN, DOMID_SELF);
    g.expect("populate_physmap of the empty frame: 1 extent", Expect::Eq(1));
    g.field(RAM_GFN << 12).expect("the populated page is new (not the old data)", Expect::Ne(0xdead_beef));
    reservation(g, 1, RAM_GFN, DOMID_SELF);
    g.expect("decrease_reservation: 1 extent", Expect::Eq(1));
    g.poke(dom, DOMID_SELF).hc(MEMORY_OP, &[3, dom]).sub_mem(TMP);
    g.expect("current_reservation back to start - 1", Expect::Eq(err(1)));
    // XENMAPSPACE_gmfn moves a RAM page to an empty gfn (p2m.c
    // xenmem_add_to_physmap_one(): the old gfn is unmapped).
    let next = RAM_GFN + 1;
    g.poke(next << 12, 0x5a5a_0001);
    atp(g, DOMID_SELF, 2, next, RAM_GFN);
    g.expect("add_to_physmap(gmfn) moves a RAM page", Expect::Eq(0));
    g.field(RAM_GFN << 12).expect("the moved page's data at its new gfn", Expect::Eq(0x5a5a_0001));
    rfp(g, next);
    g.expect("remove_from_physmap of the page's old gfn (empty)", Expect::Eq(err(ENOENT)));
    // Nothing left at the old gfn: the source is not p2m_ram_rw, -EACCES.
    atp(g, DOMID_SELF, 2, next, RAM_GFN);
    g.expect("add_to_physmap(gmfn) from an empty gfn", Expect::Eq(err(EACCES)));
    // No such domain: the extents done so far (start_extent, 0), no errno.
    reservation(g, 6, RAM_GFN, NO_DOMAIN);
    g.expect("populate_physmap for no domain: 0 extents", Expect::Eq(0));
}

/// `add_to_physmap` refusals, the grant frame, other `memory_op`s.
fn checks_add_to_physmap_refusals(g: &mut Gen) {
    let (m, dom) = (ARGS, ARGS + 0x80);
    let hole = (MEM >> 12) as u32;
    atp(g, DOMID_SELF, 0, 1, hole);
    g.expect("add_to_physmap(shared_info, idx 1)", Expect::Eq(err(EINVAL)));
    atp(g, DOMID_SELF, 4, 0, hole + 2);
    g.expect("add_to_physmap(gmfn_foreign)", Expect::Eq(err(ENOSYS)));
    atp(g, NO_DOMAIN, 0, 0, hole);
    g.expect("add_to_physmap for no domain", Expect::Eq(err(ESRCH)));
    atp(g, DOMID_SELF, 1, 0, hole + 1);
    g.expect("add_to_physmap(grant_table frame 0)", Expect::Eq(0));
    g.hc(MEMORY_OP, &[12, m]).expect("memory_op(XENMEM_machphys_mapping) (HVM)", Expect::Eq(err(ENOSYS)));
    // memory.c: maximum_ram_page is max_page (ours: one past the domain's
    // RAM block, see docs/conformance.md); maximum_gpfn the
    // domain's highest mapped gfn (p2m max_mapped_pfn; XSM_TARGET: self).
    g.hc(MEMORY_OP, &[2, 0]).expect("memory_op(XENMEM_maximum_ram_page)", Expect::Gt(0));
    g.poke(dom, DOMID_SELF).hc(MEMORY_OP, &[14, dom]);
    g.expect("XENMEM_maximum_gpfn: the grant frame at hole+1", Expect::Eq(hole + 1));
    g.hc(MEMORY_OP, &[60, m]).expect("memory_op(unknown op)", Expect::Eq(err(ENOSYS)));
}

/// `grant_table_op` (xen/common/grant_table.c; xen/arch/x86/hvm/hypercall.c
/// hvm_grant_table_op() lets HVM guests use only some ops; public/grant_table.h).
fn checks_grant_table_op(g: &mut Gen) {
    let c = g.compat();
    let q = ARGS;
    let hole = (MEM >> 12) as u32;
    // gnttab_query_size: dom, nr_frames, max_nr_frames, status (int16).
    let query = |g: &mut Gen, dom: u32, count: u32| {
        g.poke(q, dom).poke(q + 4, 0).poke(q + 8, 0).poke(q + 12, 0x7777).hc(GRANT_TABLE_OP, &[6, q, count]);
    };
    query(g, DOMID_SELF, 1);
    g.expect("grant_table_op(GNTTABOP_query_size)", Expect::Eq(0));
    g.field(q + 12).expect("query_size status GNTST_okay", Expect::Bits(0xffff, 0));
    g.field(q + 4).expect("query_size nr_frames", Expect::Gt(0));
    g.field(q + 8).sub_mem(q + 4).expect("query_size max_nr_frames >= nr_frames", Expect::Gt(-1));
    query(g, DOMID_SELF, 2);
    g.expect("query_size with count 2", Expect::Eq(err(EINVAL)));
    query(g, NO_DOMAIN, 1);
    g.field(q + 12).expect("query_size of no domain: GNTST_bad_domain", Expect::Bits(0xffff, 0xfffe));
    // gnttab_setup_table: dom, nr_frames, status, frame_list (64: at 16).
    let s = q + 0x40;
    let list = q + 0x80;
    let setup = |g: &mut Gen, dom: u32, nr: u32, count: u32| {
        g.poke(s, dom).poke(s + 4, nr).poke(s + 8, 0x7777).poke64(list, 0);
        if c {
            g.poke(s + 12, list);
        } else {
            g.poke(s + 12, 0).poke64(s + 16, u64::from(list));
        }
        g.hc(GRANT_TABLE_OP, &[2, s, count]);
    };
    setup(g, DOMID_SELF, 1, 1);
    g.expect("grant_table_op(GNTTABOP_setup_table, 1 frame)", Expect::Eq(0));
    g.field(s + 8).expect("setup_table status GNTST_okay", Expect::Bits(0xffff, 0));
    g.field(list).expect("setup_table names the frame placed at hole+1", Expect::Eq(hole + 1));
    setup(g, DOMID_SELF, 1, 2);
    g.expect("setup_table with count 2", Expect::Eq(err(EINVAL)));
    setup(g, DOMID_SELF, 0x10000, 1);
    g.field(s + 8).expect("setup_table beyond max: GNTST_general_error", Expect::Bits(0xffff, 0xffff));
    setup(g, NO_DOMAIN, 1, 1);
    g.field(s + 8).expect("setup_table of no domain: GNTST_bad_domain", Expect::Bits(0xffff, 0xfffe));
    // set_version / get_version (gnttab_set_version_t, gnttab_get_version_t).
    let v = q + 0xc0;
    g.poke(v, 1).hc(GRANT_TABLE_OP, &[8, v, 1]).expect("grant_table_op(set_version 1)", Expect::Eq(0));
    g.poke(v, 3).hc(GRANT_TABLE_OP, &[8, v, 1]).expect("grant_table_op(set_version 3)", Expect::Eq(err(EINVAL)));
    // Version 2 with grant v2 off (the configuration docs/conformance.md
    // assumes): "behave as before set_version was introduced".
    g.poke(v, 2).hc(GRANT_TABLE_OP, &[8, v, 1]).expect("set_version 2 (max version 1)", Expect::Eq(err(ENOSYS)));
    g.poke(v, DOMID_SELF).poke(v + 4, 0).hc(GRANT_TABLE_OP, &[10, v, 1]);
    g.expect("grant_table_op(get_version)", Expect::Eq(0));
    g.field(v + 4).expect("get_version: version 1", Expect::Eq(1));
    g.poke(v, NO_DOMAIN).hc(GRANT_TABLE_OP, &[10, v, 1]).expect("get_version of no domain", Expect::Eq(err(ESRCH)));
    // Ops an HVM guest may not use, and unknown ones: -ENOSYS.
    g.hc(GRANT_TABLE_OP, &[4, v, 1]).expect("grant_table_op(GNTTABOP_transfer) (HVM)", Expect::Eq(err(ENOSYS)));
    g.hc(GRANT_TABLE_OP, &[9, v, 1]).expect("grant_table_op(get_status_frames) (HVM)", Expect::Eq(err(ENOSYS)));
    g.hc(GRANT_TABLE_OP, &[99, v, 1]).expect("grant_table_op(unknown op)", Expect::Eq(err(ENOSYS)));
}

/// Event-channel helpers: the structure at [`ARGS`], ports kept at `TMP`
/// addresses (`None`: [`BAD_PORT`]).
impl Gen {
    /// `EVTCHNOP_status` (evtchn_status: dom, port, status, vcpu, union).
    fn evtchn_status(&mut self, dom: u32, port_at: Option<u32>) -> &mut Self {
        let e = ARGS;
        self.poke(e, dom).poke(e + 8, 0x77).poke(e + 16, 0x7777);
        match port_at {
            Some(at) => self.field(at).save(e + 4),
            None => self.poke(e + 4, BAD_PORT),
        };
        self.hc(EVENT_CHANNEL_OP, &[5, e])
    }
    /// An op on one port (close, send, unmask; bind_vcpu to vCPU 0).
    fn port_op(&mut self, cmd: u32, at: Option<u32>) -> &mut Self {
        let e = ARGS;
        match at {
            Some(at) => self.field(at).save(e),
            None => self.poke(e, BAD_PORT),
        };
        self.poke(e + 4, 0).hc(EVENT_CHANNEL_OP, &[cmd, e])
    }
}

/// `event_channel_op` (xen/common/event_channel.c; public/event_channel.h).
fn checks_event_channel_op(g: &mut Gen) {
    let e = ARGS;
    let (p1, p2, pt) = (TMP + 0x20, TMP + 0x24, TMP + 0x28);
    // evtchn_alloc_unbound: dom, remote_dom (u16 each), port.
    g.poke(e, DOMID_SELF | DOMID_SELF << 16).hc(EVENT_CHANNEL_OP, &[6, e]);
    g.expect("event_channel_op(alloc_unbound, DOMID_SELF)", Expect::Eq(0));
    g.field(e + 4).save(p1).expect("alloc_unbound port", Expect::Gt(0));
    g.poke(e, NO_DOMAIN | DOMID_SELF << 16).hc(EVENT_CHANNEL_OP, &[6, e]);
    g.expect("alloc_unbound for no domain", Expect::Eq(err(ESRCH)));
    g.evtchn_status(DOMID_SELF, Some(p1));
    g.expect("event_channel_op(status) of the unbound port", Expect::Eq(0));
    g.field(e + 8).expect("status EVTCHNSTAT_unbound", Expect::Eq(1));
    // The remote domain DOMID_SELF is recorded as the caller's own id.
    g.field(e + 16).a.raw(&[0x0f, 0xb7, 0xc0]); // movzx eax, ax (domid_t)
    g.expect("unbound remote dom resolved (not DOMID_SELF)", Expect::Ne(DOMID_SELF));
    g.evtchn_status(DOMID_SELF, None);
    g.expect("status of an invalid port", Expect::Eq(err(EINVAL)));
    g.evtchn_status(NO_DOMAIN, Some(p1));
    g.expect("status in no domain", Expect::Eq(err(ESRCH)));
    // send on an unbound port is dropped silently; bind_vcpu moves it.
    g.port_op(4, Some(p1));
    g.expect("send on an unbound port (dropped)", Expect::Eq(0));
    g.port_op(8, Some(p1));
    g.expect("bind_vcpu(unbound port, vcpu 0)", Expect::Eq(0));
    g.poke(e + 4, 99).hc(EVENT_CHANNEL_OP, &[8, e]).expect("bind_vcpu(vcpu 99)", Expect::Eq(err(ENOENT)));
    g.port_op(8, None);
    g.expect("bind_vcpu(invalid port)", Expect::Eq(err(EINVAL)));
    // bind_ipi: vcpu, port.
    g.poke(e, 0).hc(EVENT_CHANNEL_OP, &[7, e]).expect("event_channel_op(bind_ipi, vcpu 0)", Expect::Eq(0));
    g.field(e + 4).save(p2).expect("bind_ipi port", Expect::Gt(0));
    g.poke(e, 99).hc(EVENT_CHANNEL_OP, &[7, e]).expect("bind_ipi(vcpu 99)", Expect::Eq(err(ENOENT)));
    g.evtchn_status(DOMID_SELF, Some(p2));
    g.field(e + 8).expect("status EVTCHNSTAT_ipi", Expect::Eq(5));
    g.port_op(8, Some(p2));
    g.expect("bind_vcpu(IPI port)", Expect::Eq(err(EINVAL)));
    // bind_virq: virq, vcpu, port.
    let virq = |g: &mut Gen, virq: u32, vcpu: u32| {
        g.poke(e, virq).poke(e + 4, vcpu).poke(e + 8, 0).hc(EVENT_CHANNEL_OP, &[1, e]);
    };
    virq(g, 0, 0);
    g.expect("event_channel_op(bind_virq VIRQ_TIMER)", Expect::Eq(0));
    g.field(e + 8).save(pt);
    virq(g, 0, 0);
    g.expect("bind_virq VIRQ_TIMER again", Expect::Eq(err(EEXIST)));
    virq(g, 24, 0);
    g.expect("bind_virq(NR_VIRQS)", Expect::Eq(err(EINVAL)));
    virq(g, 0, 99);
    g.expect("bind_virq(VIRQ_TIMER, vcpu 99)", Expect::Eq(err(ENOENT)));
    virq(g, 3, 1);
    g.expect("bind_virq(global VIRQ_DOM_EXC, vcpu 1)", Expect::Eq(err(EINVAL)));
    // A global virq whose handler is another domain (the hardware domain).
    virq(g, 3, 0);
    g.expect("bind_virq(VIRQ_DOM_EXC) in a domU", Expect::Eq(err(EBUSY)));
    g.evtchn_status(DOMID_SELF, Some(pt));
    g.field(e + 8).expect("status EVTCHNSTAT_virq", Expect::Eq(4));
    g.field(e + 16).expect("status u.virq = VIRQ_TIMER", Expect::Eq(0));
    g.port_op(8, Some(pt));
    g.expect("bind_vcpu(per-vCPU virq port)", Expect::Eq(err(EINVAL)));
    checks_evtchn_close_and_refusals(g);
}

/// Closing, the refusals and the FIFO-only ops (xen/common/event_channel.c,
/// xen/common/event_fifo.c).
fn checks_evtchn_close_and_refusals(g: &mut Gen) {
    let e = ARGS;
    let (p1, p2) = (TMP + 0x20, TMP + 0x24);
    // close: the unbound port, then again; port 0 is reserved.
    g.port_op(3, Some(p1));
    g.expect("event_channel_op(close) of the unbound port", Expect::Eq(0));
    g.evtchn_status(DOMID_SELF, Some(p1));
    g.field(e + 8).expect("status after close: EVTCHNSTAT_closed", Expect::Eq(0));
    g.port_op(3, Some(p1));
    g.expect("close of a closed port", Expect::Eq(err(EINVAL)));
    g.poke(e, 0).hc(EVENT_CHANNEL_OP, &[3, e]).expect("close(port 0, reserved)", Expect::Eq(err(EINVAL)));
    g.port_op(3, None);
    g.expect("close(invalid port)", Expect::Eq(err(EINVAL)));
    g.port_op(4, None);
    g.expect("send(invalid port)", Expect::Eq(err(EINVAL)));
    g.port_op(4, Some(p1));
    g.expect("send(closed port)", Expect::Eq(err(EINVAL)));
    g.port_op(9, None);
    g.expect("unmask(invalid port)", Expect::Eq(err(EINVAL)));
    // bind_interdomain: the remote port must be unbound (here: the IPI port).
    g.poke(e, DOMID_SELF).field(p2).save(e + 4).hc(EVENT_CHANNEL_OP, &[0, e]);
    g.expect("bind_interdomain to a port not unbound", Expect::Eq(err(EINVAL)));
    g.poke(e, NO_DOMAIN).hc(EVENT_CHANNEL_OP, &[0, e]).expect("bind_interdomain to no domain", Expect::Eq(err(ESRCH)));
    // The FIFO ops on a 2-level domain: expand_array -EOPNOTSUPP
    // (event_fifo.c evtchn_fifo_expand_array()); set_priority -ENOSYS (no
    // set_priority in the 2-level port ops, xen/include/xen/event.h),
    // after the port check (-EINVAL).
    g.poke64(e, 0x300).hc(EVENT_CHANNEL_OP, &[12, e]);
    g.expect("expand_array on a 2-level domain", Expect::Eq(err(EOPNOTSUPP)));
    g.field(p2).save(e).poke(e + 4, 0).hc(EVENT_CHANNEL_OP, &[13, e]);
    g.expect("set_priority on a 2-level domain", Expect::Eq(err(ENOSYS)));
    g.poke(e, BAD_PORT).hc(EVENT_CHANNEL_OP, &[13, e]);
    g.expect("set_priority(invalid port)", Expect::Eq(err(EINVAL)));
    // EVTCHNOP_reset of a domain that does not exist.
    g.poke(e, NO_DOMAIN).hc(EVENT_CHANNEL_OP, &[10, e]).expect("reset(no domain)", Expect::Eq(err(ESRCH)));
    g.hc(EVENT_CHANNEL_OP, &[99, e]).expect("event_channel_op(unknown op)", Expect::Eq(err(ENOSYS)));
}

/// Event delivery on the 2-level ABI through shared info placed at the
/// hole (xen/common/event_2l.c evtchn_2l_set_pending(), evtchn_2l_unmask();
/// public/xen.h shared_info, vcpu_info; sched/core.c do_poll()).
fn checks_event_delivery(g: &mut Gen) {
    let e = ARGS;
    let si = MEM as u32;
    let l = g.layout();
    let (pending, mask) = (si + l.pending as u32, si + l.mask as u32);
    let (p2, p3) = (TMP + 0x24, TMP + 0x2c);
    let send = |g: &mut Gen, at: u32| {
        g.field(at).save(e).hc(EVENT_CHANNEL_OP, &[4, e]);
    };
    // public/xen.h vcpu_time_info: version odd while Xen updates it.
    g.field(si + 32).expect("pvclock version even (not mid-update)", Expect::Bits(1, 0));
    // shared_info wc_sec: the domain's wall clock (update_domain_wallclock_time()).
    g.field(si + l.wc_version as u32 + 4).expect("shared_info wc_sec set", Expect::Ne(0));
    g.poke(si, 0); // vcpu_info[0]: upcall_pending = 0, upcall_mask = 0
    send(g, p2);
    g.expect("send on the IPI port", Expect::Eq(0));
    g.bit(pending, p2).expect("IPI port pending in shared_info", Expect::Eq(1));
    g.field(si).expect("vcpu_info[0].evtchn_upcall_pending set", Expect::Bits(0xff, 1));
    // SCHEDOP_poll on a pending port returns at once.
    let s = ARGS + 0x100;
    g.field(p2).save(s + 0x40);
    if g.compat() {
        g.poke(s, s + 0x40).poke(s + 4, 1).poke64(s + 8, 0);
    } else {
        g.poke64(s, u64::from(s + 0x40)).poke(s + 8, 1).poke(s + 12, 0).poke64(s + 16, 0);
    }
    g.hc(SCHED_OP, &[3, s]).expect("SCHEDOP_poll on a pending port", Expect::Eq(0));
    // A second IPI port, masked: sending sets pending, no upcall; unmask
    // delivers it.
    g.poke(e, 0).hc(EVENT_CHANNEL_OP, &[7, e]).field(e + 4).save(p3);
    // Clear the upcall flag and the selector (set by the first send):
    // evtchn_2l_unmask() raises the upcall only when it sets the selector bit.
    g.set_bit(mask, p3);
    g.poke(si, 0).poke(si + l.pending_sel as u32, 0).poke(si + l.pending_sel as u32 + 4, 0);
    send(g, p3);
    g.expect("send on a masked port", Expect::Eq(0));
    g.bit(pending, p3).expect("masked port still pending", Expect::Eq(1));
    g.field(si).expect("masked port raises no upcall", Expect::Bits(0xff, 0));
    g.field(p3).save(e).hc(EVENT_CHANNEL_OP, &[9, e]).expect("event_channel_op(unmask)", Expect::Eq(0));
    g.bit(mask, p3).expect("unmask clears the mask bit", Expect::Eq(0));
    g.field(si).expect("unmask of a pending port raises the upcall", Expect::Bits(0xff, 1));
    checks_loopback(g);
    g.hc(60, &[]).expect("unknown hypercall 60", Expect::Eq(err(ENOSYS)));
    checks_multicall(g);
}

/// `multicall` (xen/common/multicall.c do_multicall(); public/xen.h
/// multicall_entry: 64-bit op, result, args[6]; compat: 32-bit fields):
/// each entry's result is written back, the call itself returns 0.
fn checks_multicall(g: &mut Gen) {
    let list = ARGS + 0x400;
    let w = if g.long { 8 } else { 4 };
    let size = 8 * w; // op, result, args[6]
    for (i, (op, arg0)) in [(XEN_VERSION, 7), (60, 0)].into_iter().enumerate() {
        let at = list + i as u32 * size;
        for off in (0..size).step_by(4) {
            g.poke(at + off, 0);
        }
        g.poke(at, op).poke(at + w, 0x7777).poke(at + 2 * w, arg0);
    }
    g.hc(13, &[list, 2]).expect("multicall of two entries", Expect::Eq(0));
    g.field(list + w).expect("entry 0 result: XENVER_pagesize", Expect::Eq(4096));
    g.field(list + size + w).expect("entry 1 result: unknown hypercall", Expect::Eq(err(ENOSYS)));
}

/// An interdomain channel to the domain itself (evtchn_bind_interdomain():
/// the remote port must be unbound and name the caller; evtchn_close():
/// the other end goes back to unbound, xen/common/event_channel.c).
fn checks_loopback(g: &mut Gen) {
    let e = ARGS;
    let si = MEM as u32;
    let pending = si + g.layout().pending as u32;
    let (pa, pb) = (TMP + 0x30, TMP + 0x34);
    g.poke(e, DOMID_SELF | DOMID_SELF << 16).hc(EVENT_CHANNEL_OP, &[6, e]).field(e + 4).save(pa);
    g.poke(e, DOMID_SELF).field(pa).save(e + 4).poke(e + 8, 0).hc(EVENT_CHANNEL_OP, &[0, e]);
    g.expect("bind_interdomain to our own unbound port", Expect::Eq(0));
    g.field(e + 8).save(pb);
    g.evtchn_status(DOMID_SELF, Some(pa)).field(e + 8).expect("status EVTCHNSTAT_interdomain", Expect::Eq(2));
    g.field(e + 20).xor_mem(pb).expect("status u.interdomain.port is the other end", Expect::Eq(0));
    g.port_op(4, Some(pb)).expect("send on one end", Expect::Eq(0));
    g.bit(pending, pa).expect("the other end is pending", Expect::Eq(1));
    g.port_op(4, Some(pa));
    g.bit(pending, pb).expect("and back: the first end is pending", Expect::Eq(1));
    g.port_op(3, Some(pb)).expect("close one end", Expect::Eq(0));
    g.evtchn_status(DOMID_SELF, Some(pa)).field(e + 8).expect("the other end is unbound again", Expect::Eq(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_share_one_table_and_lines_fit_the_console() {
        let names = |v: Variant| build(v).checks.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        let first = names(Variant::ALL[0]);
        assert!(first.len() > 100, "{} checks", first.len());
        for v in Variant::ALL {
            assert_eq!(names(v), first, "{}", v.name());
        }
        let mut sorted = first.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), first.len(), "check names are unique");
        assert!(first.len() < xen_domain::console::HvConsole::BURST as usize, "lines + summary fit one burst");
        // HvConsole prints lines up to 127 bytes whole.
        for (i, c) in build(Variant::ALL[0]).checks.iter().enumerate() {
            assert!(line_text(i, c).len() + 13 <= 127, "{}", c.name);
        }
    }

    #[test]
    fn code_fits_below_the_table() {
        let g = build(Variant::ALL[2]);
        let code = &g.elf[0x1000 + (CODE - crate::pvh_asm::BASE) as usize..][..CODE_MAX as usize];
        // The last 64 bytes below the table are still free (zero).
        assert!(code[code.len() - 64..].iter().all(|&b| b == 0), "code reaches the table");
    }

    #[test]
    fn the_section_variant_has_no_pt_note() {
        for v in Variant::ALL {
            let elf = build(v).elf;
            let (phoff, phsz, n) = if v.elf64 { (64, 56, 2) } else { (52, 32, 2) };
            let types: Vec<u32> =
                (0..n).map(|i| u32::from_le_bytes(elf[phoff + i * phsz..][..4].try_into().unwrap())).collect();
            assert_eq!(types.contains(&4), !v.note_in_section, "{}: {types:?}", v.name());
        }
    }
}
