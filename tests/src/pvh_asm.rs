//! A tiny x86 machine-code writer and ELF32 builder for PVH test guests:
//! the VMM's PVH path is exercised by guests whose every instruction the
//! test chooses (no cross toolchain needed). Guests record hypercall
//! results in a table the test reads back from guest RAM after the run.

/// Where the guest image loads (code page).
pub const BASE: u32 = 0x10_0000;
/// The results table (u32 slots).
pub const RESULTS: u32 = 0x10_1000;
/// GDT, then IDT descriptor area.
pub const GDT: u32 = 0x10_2000;
/// The IDT (256 gates).
pub const IDT: u32 = 0x10_2100;
/// The hypercall page the guest asks for.
pub const HCALL_PAGE: u32 = 0x10_4000;
/// Scratch area for hypercall argument structures.
pub const SCRATCH: u32 = 0x10_5000;
/// Boot page tables for the 64-bit guest: PML4, PDPT, PD.
pub const PML4: u32 = 0x10_6000;
/// Counter of #GP faults the guest's handler skipped.
pub const GP_COUNT: u32 = RESULTS + 0xffc;
/// Top of the guest's stack (low RAM, which PVH guests may use).
pub const STACK_TOP: u32 = 0x9_0000;
/// Interrupts the 64-bit handler counted (see [`Asm::irq_handler_64`]).
pub const IRQ_COUNT: u32 = RESULTS + 0xff8;
/// The 64-bit IDT.
pub const IDT64: u32 = 0x10_3000;
/// The vector the 64-bit handler serves.
pub const IRQ_VECTOR: u8 = 0xf3;
/// Image size (code + data pages).
pub const IMAGE_BYTES: u32 = 0x9000;
/// Where [`pvh_elf_with_data`] loads the test's data.
pub const DATA: u32 = BASE + IMAGE_BYTES;

/// Machine code under construction, in 32- or 64-bit mode.
#[derive(Default)]
pub struct Asm {
    /// Bytes from [`BASE`].
    pub code: Vec<u8>,
    long: bool,
    gp_handler: u32,
    irq_handler: u32,
}

impl Asm {
    fn b(&mut self, bytes: &[u8]) -> &mut Self {
        self.code.extend_from_slice(bytes);
        self
    }
    fn imm(&mut self, v: u32) -> &mut Self {
        self.b(&v.to_le_bytes())
    }
    /// Emits raw instruction bytes (for code the helpers do not cover).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.b(bytes)
    }
    /// Current address.
    pub fn here(&self) -> u32 {
        BASE + self.code.len() as u32
    }
    /// Emits `body` behind a `jmp` over it (code another vCPU enters, or a
    /// routine called later); returns the body's address.
    pub fn behind_jump(&mut self, body: impl FnOnce(&mut Asm)) -> u32 {
        let jmp_at = self.code.len();
        self.b(&[0xe9, 0, 0, 0, 0]);
        let entry = self.here();
        body(self);
        let rel = (self.code.len() - jmp_at - 5) as u32;
        self.code[jmp_at + 1..jmp_at + 5].copy_from_slice(&rel.to_le_bytes());
        entry
    }
    /// `jmp target` (rel32).
    pub fn jmp(&mut self, target: u32) -> &mut Self {
        let rel = target.wrapping_sub(self.here() + 5);
        self.b(&[0xe9]).imm(rel)
    }
    /// `cli; hlt; jmp` back to the `hlt`: stops this vCPU for good.
    pub fn halt_forever(&mut self) -> &mut Self {
        self.b(&[0xfa, 0xf4, 0xeb, 0xfd])
    }
    /// An empty writer for code that runs in 64-bit mode when `long` (the
    /// mode switch itself emitted elsewhere): code placed outside the
    /// image's first page, which keeps its own addresses.
    pub fn in_mode(long: bool) -> Self {
        Asm { long, ..Asm::default() }
    }
    /// `mov eax, v`.
    pub fn eax(&mut self, v: u32) -> &mut Self {
        self.b(&[0xb8]).imm(v)
    }
    /// Loads `args` into the calling convention's argument registers (by
    /// the mode the code runs in): `ebx, ecx, edx, esi, edi` or `rdi, rsi,
    /// rdx, r10, r8` (zero-extended).
    pub fn args(&mut self, args: &[u32]) -> &mut Self {
        let ops32: [&[u8]; 5] = [&[0xbb], &[0xb9], &[0xba], &[0xbe], &[0xbf]];
        let ops64: [&[u8]; 5] = [&[0xbf], &[0xbe], &[0xba], &[0x41, 0xba], &[0x41, 0xb8]];
        for (i, &a) in args.iter().enumerate() {
            let op = if self.long { ops64[i] } else { ops32[i] };
            self.b(op).imm(a);
        }
        self
    }
    /// `mov [addr], eax`.
    pub fn store_eax(&mut self, addr: u32) -> &mut Self {
        if self.long {
            self.b(&[0xa3]).b(&u64::from(addr).to_le_bytes())
        } else {
            self.b(&[0xa3]).imm(addr)
        }
    }
    /// `mov eax, [addr]`.
    pub fn load_eax(&mut self, addr: u32) -> &mut Self {
        if self.long {
            self.b(&[0xa1]).b(&u64::from(addr).to_le_bytes())
        } else {
            self.b(&[0xa1]).imm(addr)
        }
    }
    /// Hypercall `nr` through the hypercall page; stores `eax` in result
    /// slot `slot`.
    pub fn hypercall(&mut self, nr: u32, args: &[u32], slot: u32) -> &mut Self {
        self.args(args).eax(HCALL_PAGE + nr * 32).b(&[0xff, 0xd0]).store_eax(RESULTS + slot * 4)
    }
    /// `wrmsr(msr, value)`.
    pub fn wrmsr(&mut self, msr: u32, value: u64) -> &mut Self {
        self.b(&[0xb9]).imm(msr).eax(value as u32).b(&[0xba]).imm((value >> 32) as u32).b(&[0x0f, 0x30])
    }
    /// Writes `v` at `addr` (`mov dword [addr], v`).
    pub fn poke(&mut self, addr: u32, v: u32) -> &mut Self {
        if self.long {
            // mov dword [abs32] via SIB without base: C7 04 25 addr imm
            self.b(&[0xc7, 0x04, 0x25]).imm(addr).imm(v)
        } else {
            self.b(&[0xc7, 0x05]).imm(addr).imm(v)
        }
    }
    /// Loads the test GDT and an IDT whose #GP gate skips a 2-byte
    /// faulting instruction (`wrmsr`) and counts it at [`GP_COUNT`].
    pub fn setup_descriptors(&mut self) -> &mut Self {
        self.b(&[0xbc]).imm(STACK_TOP); // mov esp, STACK_TOP (PVH leaves esp undefined)
        self.b(&[0x0f, 0x01, 0x15]).imm(GDT + 0x40); // lgdt [gdtr]
        self.b(&[0x0f, 0x01, 0x1d]).imm(GDT + 0x50); // lidt [idtr]
        let skip = self.here() + 5;
        self.b(&[0xe9]).imm(18); // jmp over the 18-byte handler
                                 // #GP handler without `iret` (which KVM's instruction emulator
                                 // cannot do in protected mode): drop the error code, pop eip, skip
                                 // the 2-byte instruction, drop cs and eflags, count, jump back.
        self.b(&[0x83, 0xc4, 0x04, 0x58, 0x83, 0xc0, 0x02, 0x83, 0xc4, 0x08, 0xff, 0x05])
            .imm(GP_COUNT)
            .b(&[0xff, 0xe0]);
        assert_eq!(self.here(), skip + 18);
        self.gp_handler = skip;
        self
    }
    /// Switches from the PVH entry state to 64-bit mode on the identity
    /// map at [`PML4`] (PAE, EFER.LME, paging, far jump to selector 0x08).
    pub fn enter_long_mode(&mut self) -> &mut Self {
        self.b(&[0x0f, 0x20, 0xe0, 0x0d, 0x20, 0, 0, 0, 0x0f, 0x22, 0xe0]); // cr4 |= PAE
        self.eax(PML4).b(&[0x0f, 0x22, 0xd8]); // cr3
        self.b(&[0xb9]).imm(0xc000_0080).b(&[0x0f, 0x32, 0x0d, 0, 1, 0, 0, 0x0f, 0x30]); // EFER.LME
        self.b(&[0x0f, 0x20, 0xc0, 0x0d, 1, 0, 0, 0x80, 0x0f, 0x22, 0xc0]); // cr0 |= PG|PE
        let target = self.here() + 7;
        self.b(&[0xea]).imm(target).b(&0x08u16.to_le_bytes());
        self.long = true;
        self
    }
    /// `sched_op(SCHEDOP_shutdown, {poweroff})` with status `code`, then `hlt`.
    pub fn poweroff(&mut self, code: u32) -> &mut Self {
        self.shutdown(0, code)
    }
    /// `sched_op(SCHEDOP_shutdown, {reason})` with `rdx` (the third
    /// argument register, which Xen does not read) set to `rdx`, then `hlt`.
    pub fn shutdown(&mut self, reason: u32, rdx: u32) -> &mut Self {
        self.poke(SCRATCH + 0xff0, reason);
        self.hypercall(29, &[2, SCRATCH + 0xff0, rdx], 1000).b(&[0xf4])
    }
    /// `console_io(CONSOLEIO_write, text)` from a copy of `text` at
    /// `SCRATCH + 0xe00` (at most 0x1f0 bytes); `eax` in result slot `slot`.
    pub fn console_write(&mut self, text: &[u8], slot: u32) -> &mut Self {
        assert!(text.len() <= 0x1f0);
        let at = SCRATCH + 0xe00;
        for (i, chunk) in text.chunks(4).enumerate() {
            let mut w = [0u8; 4];
            w[..chunk.len()].copy_from_slice(chunk);
            self.poke(at + 4 * i as u32, u32::from_le_bytes(w));
        }
        self.hypercall(18, &[0, text.len() as u32, at], slot)
    }
    /// Writes `text` to the debug console port 0xE9 a byte at a time.
    pub fn debugcon(&mut self, text: &[u8]) -> &mut Self {
        self.b(&[0x66, 0xba, 0xe9, 0x00]); // mov dx, 0xe9
        for &c in text {
            self.b(&[0xb0, c, 0xee]); // mov al, c; out dx, al
        }
        self
    }
}

impl Asm {
    /// (64-bit code) Emits a handler for [`IRQ_VECTOR`] that counts at
    /// [`IRQ_COUNT`] and returns (`iretq`, no EOI: Xen's callback vector),
    /// and loads the 64-bit IDT holding its gate.
    pub fn irq_handler_64(&mut self) -> &mut Self {
        assert!(self.long);
        let handler = self.here() + 5;
        self.b(&[0xe9]).imm(9); // jmp over the 9-byte handler
        self.b(&[0xff, 0x04, 0x25]).imm(IRQ_COUNT).b(&[0x48, 0xcf]); // inc dword [IRQ_COUNT]; iretq
        self.irq_handler = handler;
        self.b(&[0x0f, 0x01, 0x1c, 0x25]).imm(GDT + 0x60) // lidt [idtr64]
    }
    /// `sti`, then spin until [`IRQ_COUNT`] is non-zero, then `cli`.
    pub fn wait_for_irq(&mut self) -> &mut Self {
        self.b(&[0xfb]);
        self.b(&[0x83, 0x3c, 0x25]).imm(IRQ_COUNT).b(&[0x00]); // cmp dword [IRQ_COUNT], 0
        self.b(&[0x74, 0xf6]); // je back to the cmp (-10)
        self.b(&[0xfa])
    }
    /// `bts [addr], eax`: sets bit `eax` of the bitmap at `addr` (32-bit code).
    pub fn bts_eax(&mut self, addr: u32) -> &mut Self {
        assert!(!self.long);
        self.b(&[0x0f, 0xab, 0x05]).imm(addr)
    }
    /// Address of the #GP handler, once [`setup_descriptors`](Self::setup_descriptors) ran.
    pub fn gp_handler(&self) -> u32 {
        self.gp_handler
    }
}

/// The image's bytes from [`BASE`]: code, zeroed results, GDT and IDT,
/// identity page tables (first GiB, 2 MiB pages).
pub fn image_bytes(asm: &Asm) -> Vec<u8> {
    let mut img = vec![0u8; IMAGE_BYTES as usize];
    assert!(asm.code.len() < 0x1000, "guest code too long");
    img[..asm.code.len()].copy_from_slice(&asm.code);
    let put = |img: &mut Vec<u8>, at: u32, bytes: &[u8]| {
        let o = (at - BASE) as usize;
        img[o..o + bytes.len()].copy_from_slice(bytes);
    };
    for (i, d) in [0u64, 0x00af_9b00_0000_ffff, 0x00cf_9b00_0000_ffff, 0x00cf_9300_0000_ffff].iter().enumerate() {
        put(&mut img, GDT + i as u32 * 8, &d.to_le_bytes());
    }
    put(&mut img, GDT + 0x40, &31u16.to_le_bytes());
    put(&mut img, GDT + 0x42, &GDT.to_le_bytes());
    put(&mut img, GDT + 0x50, &(256u16 * 8 - 1).to_le_bytes());
    put(&mut img, GDT + 0x52, &IDT.to_le_bytes());
    let h = asm.gp_handler();
    let gate = (u64::from(h & 0xffff_0000 | 0x8e00) << 32) | (0x10 << 16) | u64::from(h & 0xffff);
    put(&mut img, IDT + 13 * 8, &gate.to_le_bytes());
    if asm.irq_handler != 0 {
        let h = u64::from(asm.irq_handler);
        let lo = (h & 0xffff) | (0x08 << 16) | (0x8e00 << 32) | ((h >> 16 & 0xffff) << 48);
        put(&mut img, IDT64 + u32::from(IRQ_VECTOR) * 16, &lo.to_le_bytes());
        put(&mut img, GDT + 0x60, &(256u16 * 16 - 1).to_le_bytes());
        put(&mut img, GDT + 0x62, &u64::from(IDT64).to_le_bytes());
    }
    put(&mut img, PML4, &u64::from(PML4 + 0x1003).to_le_bytes());
    put(&mut img, PML4 + 0x1000, &u64::from(PML4 + 0x2003).to_le_bytes());
    for i in 0..512u64 {
        put(&mut img, PML4 + 0x2000 + i as u32 * 8, &((i << 21) | 0x83).to_le_bytes());
    }
    img
}

/// An ELF executable (ELF32/EM_386 or ELF64/EM_X86_64) with one PT_LOAD
/// at [`BASE`] and Xen's `XEN_ELFNOTE_PHYS32_ENTRY` note naming `BASE`.
pub fn pvh_elf(asm: &Asm, elf64: bool) -> Vec<u8> {
    pvh_elf_with_data(asm, elf64, &[])
}

/// As [`pvh_elf`], with `data` loaded right after the image, at
/// [`DATA`] (tables the test generates for the guest to walk).
pub fn pvh_elf_with_data(asm: &Asm, elf64: bool, data: &[u8]) -> Vec<u8> {
    let mut body = image_bytes(asm);
    body.extend_from_slice(data);
    let (ehsz, phsz) = if elf64 { (64usize, 56usize) } else { (52, 32) };
    let note_off = ehsz + 2 * phsz;
    let note: Vec<u8> =
        [4u32, 4, 18].iter().flat_map(|v| v.to_le_bytes()).chain(*b"Xen\0").chain(BASE.to_le_bytes()).collect();
    let data_off = 0x1000usize;
    let mut f = vec![0u8; data_off];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = if elf64 { 2 } else { 1 };
    f[5] = 1;
    f[6] = 1;
    f[16..18].copy_from_slice(&2u16.to_le_bytes());
    f[18..20].copy_from_slice(&(if elf64 { 62u16 } else { 3 }).to_le_bytes());
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    let w = |f: &mut Vec<u8>, at: usize, v: u64, wide: bool| {
        if wide {
            f[at..at + 8].copy_from_slice(&v.to_le_bytes());
        } else {
            f[at..at + 4].copy_from_slice(&(v as u32).to_le_bytes());
        }
    };
    if elf64 {
        w(&mut f, 24, BASE.into(), true);
        w(&mut f, 32, ehsz as u64, true);
        f[52..54].copy_from_slice(&(ehsz as u16).to_le_bytes());
        f[54..56].copy_from_slice(&(phsz as u16).to_le_bytes());
        f[56..58].copy_from_slice(&2u16.to_le_bytes());
    } else {
        w(&mut f, 24, BASE.into(), false);
        w(&mut f, 28, ehsz as u64, false);
        f[40..42].copy_from_slice(&(ehsz as u16).to_le_bytes());
        f[42..44].copy_from_slice(&(phsz as u16).to_le_bytes());
        f[44..46].copy_from_slice(&2u16.to_le_bytes());
    }
    // (type, offset, addr, filesz, memsz)
    let phdrs =
        [(1u32, data_off as u64, u64::from(BASE), body.len() as u64), (4, note_off as u64, 0, note.len() as u64)];
    for (i, &(kind, off, addr, size)) in phdrs.iter().enumerate() {
        let at = ehsz + i * phsz;
        f[at..at + 4].copy_from_slice(&kind.to_le_bytes());
        if elf64 {
            f[at + 4..at + 8].copy_from_slice(&7u32.to_le_bytes());
            for (j, v) in [off, addr, addr, size, size, 0x1000].iter().enumerate() {
                w(&mut f, at + 8 + j * 8, *v, true);
            }
        } else {
            for (j, v) in [off, addr, addr, size, size, 7, 0x1000].iter().enumerate() {
                w(&mut f, at + 4 + j * 4, *v, false);
            }
        }
    }
    f[note_off..note_off + note.len()].copy_from_slice(&note);
    f.extend_from_slice(&body);
    f
}

/// As [`pvh_elf`], but the note is only in a `SHT_NOTE` section: the
/// `PT_NOTE` program header becomes `PT_NULL` and a section header table
/// (null section, then the note section) is appended. Xen's libelf falls
/// back to such sections (`xen/common/libelf/libelf-dominfo.c`,
/// `elf_xen_parse`).
pub fn pvh_elf_note_in_section(asm: &Asm, elf64: bool) -> Vec<u8> {
    note_to_section(pvh_elf(asm, elf64), elf64)
}

/// Turns an image from [`pvh_elf`] or [`pvh_elf_with_data`] into one whose
/// note is only in a `SHT_NOTE` section (see [`pvh_elf_note_in_section`]).
pub fn note_to_section(mut f: Vec<u8>, elf64: bool) -> Vec<u8> {
    let (ehsz, phsz, shsz) = if elf64 { (64usize, 56usize, 64usize) } else { (52, 32, 40) };
    let note_off = (ehsz + 2 * phsz) as u64;
    f[ehsz + phsz..ehsz + phsz + 4].copy_from_slice(&0u32.to_le_bytes());
    let shoff = f.len().next_multiple_of(8);
    f.resize(shoff + 2 * shsz, 0);
    let w = |f: &mut Vec<u8>, at: usize, v: u64| {
        if elf64 {
            f[at..at + 8].copy_from_slice(&v.to_le_bytes());
        } else {
            f[at..at + 4].copy_from_slice(&(v as u32).to_le_bytes());
        }
    };
    let sec = shoff + shsz;
    f[sec + 4..sec + 8].copy_from_slice(&7u32.to_le_bytes()); // SHT_NOTE
    let (shoff_at, shent_at, off_at, size_at) = if elf64 { (40, 58, 24, 32) } else { (32, 46, 16, 20) };
    w(&mut f, shoff_at, shoff as u64);
    f[shent_at..shent_at + 2].copy_from_slice(&(shsz as u16).to_le_bytes());
    f[shent_at + 2..shent_at + 4].copy_from_slice(&2u16.to_le_bytes());
    w(&mut f, sec + off_at, note_off);
    w(&mut f, sec + size_at, 20);
    f
}
