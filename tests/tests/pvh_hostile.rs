//! Hostile PVH guests (issue 18, Deliver 5): hand-assembled 32- and 64-bit
//! guests (`tests::pvh_asm`) walk tables of hypercalls the test generates
//! (seeded, boundary arguments), write the hypercall-page MSR and its
//! neighbours, flood `add_to_physmap` and abuse the timers; a PVH guest
//! with a virtio disk changes its upcall vector and still gets the disk's
//! interrupt. Each checks the run ends by the guest's own poweroff (no VMM
//! error, no panic, no hang), results are Xen errnos, and the log stays
//! bounded. The specification is Xen's: `xen/include/public/xen.h`
//! (hypercall numbers, both conventions), `xen/include/public/errno.h`,
//! `xen/arch/x86/hvm/hvm.c` and `xen/arch/x86/msr.c` (the hypercall MSR).

use pv_abi::errno::*;
use pv_abi::hvm::cpuid::XEN_HYPERCALL_MSR;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tests::pvh_asm::*;
use tests::{boot_vm, Run};
use vmm::{Kernel, Outcome, Vm, VmConfig};
use xen_domain::pvh::PvhLayout;

const MEM: u64 = 16 << 20;
/// A Xen guest's clean poweroff (`SCHEDOP_shutdown`, reason only).
const POWEROFF_OK: Outcome = Outcome::XenShutdown { reason: 0 };
/// Where the test puts argument structures (after the call table).
const STRUCTS: u32 = 0x1a_0000;
/// The largest errno in `xen/include/public/errno.h` (`EISCONN`... are
/// below it; Xen's errnos are Linux's, all under 134).
const MAX_XEN_ERRNO: i32 = 133;
/// Warn-or-above lines a whole hostile run may log: the rate limiters
/// let a burst through, then one suppressed-count line per interval.
const LOG_BUDGET: usize = 200;

/// Counts warn-or-above `tracing` events from every thread of this test
/// process (the vCPU and device threads). Tests here hold [`SERIAL`] so
/// the count is theirs.
struct CountEvents;

static EVENTS: AtomicUsize = AtomicUsize::new(0);
static SERIAL: Mutex<()> = Mutex::new(());

impl tracing::Subscriber for CountEvents {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        *m.level() <= tracing::Level::WARN
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {
        EVENTS.fetch_add(1, Ordering::SeqCst);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Takes the serial lock, installs the counter once, zeroes it.
fn start_counting() -> std::sync::MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(CountEvents).expect("first subscriber of this test binary");
        // The counter sees other threads' warnings (the VMM's device threads).
        std::thread::spawn(|| tracing::warn!(probe = 1, "log counter probe")).join().unwrap();
        assert_eq!(EVENTS.load(Ordering::SeqCst), 1, "the log counter counts");
    });
    EVENTS.store(0, Ordering::SeqCst);
    guard
}

fn run_elf(dir: &Path, elf: Vec<u8>) -> (Run, tests::RanVm) {
    let path = dir.join("guest.elf");
    std::fs::write(&path, elf).unwrap();
    let mut cfg = VmConfig::bundled("hello", "");
    cfg.kernel = Kernel::File(path);
    cfg.mem_bytes = MEM;
    boot_vm(cfg)
}

fn result(vm: &Vm, slot: u32) -> i32 {
    vm.dom.ram.read_obj::<i32>(u64::from(RESULTS + slot * 4)).unwrap()
}

/// One hypercall of a table: number and up to five arguments (truncated
/// to 32 bits for the 32-bit convention).
#[derive(Clone, Copy, Debug)]
struct Call {
    nr: u32,
    args: [u64; 5],
}

fn entry_size(long: bool) -> u32 {
    if long {
        48
    } else {
        24
    }
}

/// The table the guest walks, at [`DATA`]: per entry the number, then the
/// arguments (u32 or u64 each); the guest overwrites the number with the
/// hypercall's `eax`.
fn table_bytes(calls: &[Call], long: bool) -> Vec<u8> {
    let mut t = Vec::new();
    for c in calls {
        if long {
            t.extend_from_slice(&u64::from(c.nr).to_le_bytes());
            c.args.iter().for_each(|a| t.extend_from_slice(&a.to_le_bytes()));
        } else {
            t.extend_from_slice(&c.nr.to_le_bytes());
            c.args.iter().for_each(|&a| t.extend_from_slice(&(a as u32).to_le_bytes()));
        }
    }
    t
}

/// The loop over the table: re-installs the hypercall page (a hostile call
/// may have written over it), loads the convention's argument registers
/// (`ebx, ecx, edx, esi, edi` / `rdi, rsi, rdx, r10, r8`), calls the page's
/// entry `nr`, stores `eax` over `nr`, next entry.
fn table_loop(a: &mut Asm, n: usize, long: bool) {
    let end = DATA + n as u32 * entry_size(long);
    if long {
        a.raw(&[0x41, 0xbc]).raw(&DATA.to_le_bytes()); // mov r12d, DATA
    } else {
        a.raw(&[0xbd]).raw(&DATA.to_le_bytes()); // mov ebp, DATA
    }
    let top = a.here();
    a.raw(&[0xb9]).raw(&XEN_HYPERCALL_MSR.to_le_bytes()).eax(HCALL_PAGE).raw(&[0x31, 0xd2, 0x0f, 0x30]);
    if long {
        a.raw(&[0x49, 0x8b, 0x7c, 0x24, 0x08, 0x49, 0x8b, 0x74, 0x24, 0x10, 0x49, 0x8b, 0x54, 0x24, 0x18]);
        a.raw(&[0x4d, 0x8b, 0x54, 0x24, 0x20, 0x4d, 0x8b, 0x44, 0x24, 0x28]);
        a.raw(&[0x41, 0x8b, 0x04, 0x24]); // mov eax, [r12]
    } else {
        a.raw(&[0x8b, 0x5d, 0x04, 0x8b, 0x4d, 0x08, 0x8b, 0x55, 0x0c, 0x8b, 0x75, 0x10, 0x8b, 0x7d, 0x14]);
        a.raw(&[0x8b, 0x45, 0x00]); // mov eax, [ebp]
    }
    a.raw(&[0xc1, 0xe0, 0x05, 0x05]).raw(&HCALL_PAGE.to_le_bytes()).raw(&[0xff, 0xd0]); // shl 5; add; call eax
    if long {
        a.raw(&[0x41, 0x89, 0x04, 0x24, 0x49, 0x83, 0xc4, 0x30]); // mov [r12], eax; add r12, 48
        a.raw(&[0x49, 0x81, 0xfc]).raw(&end.to_le_bytes()); // cmp r12, end
    } else {
        a.raw(&[0x89, 0x45, 0x00, 0x83, 0xc5, 0x18]); // mov [ebp], eax; add ebp, 24
        a.raw(&[0x81, 0xfd]).raw(&end.to_le_bytes()); // cmp ebp, end
    }
    let rel = top as i64 - (a.here() as i64 + 6);
    a.raw(&[0x0f, 0x85]).raw(&(rel as i32).to_le_bytes()); // jne top
}

/// Builds and runs a guest that walks `calls` (after `prologue`, in the
/// mode chosen), with `structs` loaded at their addresses (at or above
/// [`STRUCTS`]), then powers off. Returns the run, the VM and the `eax`
/// of each call.
fn run_table(
    calls: &[Call],
    structs: &[(u32, Vec<u8>)],
    long: bool,
    prologue: impl FnOnce(&mut Asm),
    epilogue: impl FnOnce(&mut Asm),
) -> (Run, tests::RanVm, Vec<i32>) {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Asm::default();
    a.setup_descriptors().wrmsr(XEN_HYPERCALL_MSR, u64::from(HCALL_PAGE));
    if long {
        a.enter_long_mode();
    }
    prologue(&mut a);
    table_loop(&mut a, calls.len(), long);
    epilogue(&mut a);
    a.poweroff(0);
    let mut data = table_bytes(calls, long);
    assert!(DATA as usize + data.len() <= STRUCTS as usize, "table too long");
    for (at, bytes) in structs {
        let o = (at - DATA) as usize;
        if data.len() < o + bytes.len() {
            data.resize(o + bytes.len(), 0);
        }
        data[o..o + bytes.len()].copy_from_slice(bytes);
    }
    let (run, vm) = run_elf(dir.path(), pvh_elf_with_data(&a, long, &data));
    let size = entry_size(long);
    let eax =
        (0..calls.len() as u32).map(|i| vm.dom.ram.read_obj::<i32>(u64::from(DATA + i * size)).unwrap()).collect();
    (run, vm, eax)
}

/// A seeded xorshift64 (deterministic: a failure reproduces).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[(self.next() % from.len() as u64) as usize]
    }
}

/// Boundary values: small commands, sizes, RAM's end, the VMM's reserved
/// pages, the hypercall page, the results table, `DOMID_SELF`.
fn boundary_values() -> Vec<u64> {
    let layout = PvhLayout::new(MEM);
    vec![
        0,
        1,
        2,
        3,
        7,
        0x7ff0,
        0x7fff_ffff,
        0xffff_ffff,
        u64::MAX,
        1 << 63,
        MEM - 8,
        MEM - 1,
        MEM,
        MEM + 0x1000,
        layout.vmm_base,
        layout.vmm_base + 0x1000,
        u64::from(HCALL_PAGE),
        u64::from(RESULTS),
        u64::from(SCRATCH),
    ]
}

/// `count` calls over every number 0..63 in turn, each argument a boundary
/// value or random. Calls that end or park the guest by its own choice
/// are made harmless: `sched_op`/`sched_op_compat` (29/6) always yield
/// (shutdown, block and poll are the guest's right to stop), `vcpu_op`
/// (24) never takes `VCPUOP_down` (2) of its only vCPU; counted arrays
/// (multicall, grant-table, mmu ops) stay short. Entry 23 (`iret`)
/// of an HVM hypercall page is `ud2` in Xen (`xen/arch/x86/hvm/vmx/vmx.c`,
/// `vmx_init_hypercall_page`) and ours: the guest's own #UD, so 23 is
/// called as 22 instead.
fn random_calls(seed: u64, count: usize) -> Vec<Call> {
    let mut rng = Rng(seed);
    let vals = boundary_values();
    (0..count)
        .map(|i| {
            let nr = match (i % 64) as u32 {
                23 => 22,
                n => n,
            };
            let mut args = [0u64; 5];
            for a in &mut args {
                *a = if rng.next() % 4 == 0 { rng.next() } else { rng.pick(&vals) };
            }
            match nr {
                6 | 29 => args[0] = 0,
                24 if args[0] == 2 => args[0] = 0,
                // A long array over the guest's own pages has Xen write
                // each element's result or status into its GDT and page
                // tables (xen/common/multicall.c, grant_table.c, mm.c):
                // the guest's own harm, so arrays stay short.
                1 | 13 | 26 => args[1] %= 8,
                20 => args[2] %= 8,
                _ => {}
            }
            Call { nr, args }
        })
        .collect()
}

/// Every `eax` is 0, positive, or `-errno` with a Xen errno.
fn assert_xen_results(eax: &[i32], calls: &[Call]) {
    for (r, c) in eax.iter().zip(calls) {
        assert!(*r >= 0 || (-MAX_XEN_ERRNO..=-1).contains(r), "{c:x?} returned {r}");
    }
}

fn assert_log_bounded(what: &str) {
    let lines = EVENTS.load(Ordering::SeqCst);
    assert!(lines < LOG_BUDGET, "{what}: {lines} warn lines");
}

#[test]
fn pvh_random_and_boundary_hypercalls_in_both_conventions() {
    let _serial = start_counting();
    for long in [false, true] {
        let calls = random_calls(0x5eed_0000 + u64::from(long), 3000);
        let (run, _vm, eax) = run_table(&calls, &[], long, |_| {}, |_| {});
        assert_eq!(run.outcome, POWEROFF_OK, "long {long}: {}", run.console);
        assert_xen_results(&eax, &calls);
        // Numbers with no handler: -ENOSYS, whatever the arguments
        // (xen/arch/x86/hypercall.c); 60 is unused in xen.h.
        let unused: Vec<_> = eax.iter().zip(&calls).filter(|(_, c)| c.nr == 60).map(|(r, _)| *r).collect();
        assert!(unused.iter().all(|&r| r == -(ENOSYS as i32)), "hypercall 60: {unused:?}");
        assert_log_bounded(if long { "64-bit" } else { "32-bit" });
    }
}

/// Writes to the hypercall-page MSR and its neighbours. Xen
/// (`xen/arch/x86/msr.c`, `guest_wrmsr` → `wrmsr_hypervisor_regs`): the
/// page index (low 12 bits) must be 0 and the frame a guest RAM page,
/// otherwise #GP; MSRs next to the base are not Xen's (#GP).
/// docs/xen-pvh-guests.md: out-of-RAM or VMM-page addresses get #GP too.
#[test]
fn pvh_hypercall_msr_boundary_and_random_writes() {
    let _serial = start_counting();
    let layout = PvhLayout::new(MEM);
    let mut rng = Rng(0x3a5_1234);
    let mut writes: Vec<(u32, u64)> = [
        0u64,
        1,
        u64::from(HCALL_PAGE) + 1,
        u64::from(HCALL_PAGE) | 0xfff,
        MEM,
        MEM - 0x1000,
        layout.vmm_base,
        layout.store(),
        u64::MAX,
        1 << 63,
        1 << 52,
        0xffff_f000,
        0x7fff_f000,
    ]
    .into_iter()
    .map(|v| (XEN_HYPERCALL_MSR, v))
    .collect();
    for msr in [XEN_HYPERCALL_MSR - 1, XEN_HYPERCALL_MSR + 1, XEN_HYPERCALL_MSR + 2, 0x4000_00ff, 0x4000_0200] {
        writes.push((msr, u64::from(HCALL_PAGE)));
    }
    // Random: page-aligned frames in free RAM (accepted; away from the
    // guest's code and tables), and unaligned or huge values.
    for _ in 0..120 {
        let v = match rng.next() % 3 {
            0 => 0x20_0000 + (rng.next() % 0x600) * 0x1000,
            1 => rng.next(),
            _ => (rng.next() % MEM) | 1,
        };
        writes.push((XEN_HYPERCALL_MSR, v));
    }
    let refused = |&(msr, v): &(u32, u64)| msr != XEN_HYPERCALL_MSR || v & 0xfff != 0 || v >= layout.vmm_base;
    let expected_gp = writes.iter().filter(|w| refused(w)).count() as u32;
    for long in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Asm::default();
        a.setup_descriptors();
        for &(msr, v) in &writes {
            a.wrmsr(msr, v);
        }
        // The last good write wins: the page works where it was put last.
        a.wrmsr(XEN_HYPERCALL_MSR, u64::from(HCALL_PAGE));
        if long {
            a.enter_long_mode();
        }
        a.hypercall(17, &[0, 0], 0); // xen_version(XENVER_version)
        a.poweroff(0);
        let (run, vm) = run_elf(dir.path(), pvh_elf(&a, long));
        assert_eq!(run.outcome, POWEROFF_OK, "long {long}: {}", run.console);
        let gp = vm.dom.ram.read_obj::<u32>(u64::from(GP_COUNT)).unwrap();
        assert_eq!(gp, expected_gp, "#GP for every refused write, none for a good one");
        assert_eq!(result(&vm, 0) as u32 >> 16, 4, "Xen 4.x through the re-installed page");
        assert_log_bounded("MSR writes");
    }
}

/// Timer abuse: `set_timer_op` (`xen/common/sched/core.c`,
/// `do_set_timer_op`: always 0; a negative or more-than-2^50-ns-away
/// deadline fires in 100 ms) and the `vcpu_op` single-shot and periodic
/// timers (`xen/common/domain.c`, `common_vcpu_op`: a period under 1 ms or
/// above `STIME_DELTA_MAX` is -EINVAL; `VCPU_SSHOTTMR_future` is ignored;
/// an unknown vCPU -ENOENT) with 0, past, far-future and
/// negative deadlines, thousands of times, `VIRQ_TIMER` bound.
#[test]
fn pvh_timer_abuse_ends_cleanly() {
    let _serial = start_counting();
    let deadlines = [0u64, 1, 2, 1 << 50, 1 << 62, u64::MAX, 1 << 63, i64::MAX as u64, 1_000_000];
    let periods = [0u64, 1, 999_999, 1_000_000, u64::MAX, 1 << 63];
    // Structures: single-shot {timeout_abs_ns, flags} per deadline and
    // flags 0/1, periodic {period_ns} per period, bind_virq at the end.
    let sshot = |i: usize, f: usize| STRUCTS + ((i * 2 + f) * 16) as u32;
    let period = |i: usize| STRUCTS + 0x400 + (i * 8) as u32;
    let bind = STRUCTS + 0x800;
    let mut structs = Vec::new();
    for (i, &d) in deadlines.iter().enumerate() {
        for f in 0..2u32 {
            let mut b = d.to_le_bytes().to_vec();
            b.extend_from_slice(&f.to_le_bytes());
            structs.push((sshot(i, f as usize), b));
        }
    }
    for (i, &p) in periods.iter().enumerate() {
        structs.push((period(i), p.to_le_bytes().to_vec()));
    }
    structs.push((bind, vec![0u8; 12]));
    for long in [false, true] {
        let mut rng = Rng(0x71e3 + u64::from(long));
        let mut calls = vec![Call { nr: 32, args: [1, u64::from(bind), 0, 0, 0] }];
        for _ in 0..2500 {
            let vcpu = if rng.next() % 8 == 0 { rng.pick(&[1, 0xffff_ffff]) } else { 0 };
            let d = rng.pick(&deadlines);
            let args = match rng.next() % 5 {
                0 if long => [15, d, 0, 0, 0],
                0 => [15, d & 0xffff_ffff, d >> 32, 0, 0],
                1 => [24, 8, vcpu, u64::from(sshot(rng.next() as usize % deadlines.len(), rng.next() as usize % 2)), 0],
                2 => [24, 6, vcpu, u64::from(period(rng.next() as usize % periods.len())), 0],
                3 => [24, 7, vcpu, 0, 0],
                _ => [24, 9, vcpu, 0, 0],
            };
            calls.push(Call { nr: args[0] as u32, args: [args[1], args[2], args[3], args[4], 0] });
        }
        let (run, _vm, eax) = run_table(&calls, &structs, long, |_| {}, |_| {});
        assert_eq!(run.outcome, POWEROFF_OK, "long {long}: {}", run.console);
        assert_eq!(eax[0], 0, "bind_virq(VIRQ_TIMER)");
        assert_xen_results(&eax, &calls);
        for (r, c) in eax.iter().zip(&calls) {
            match (c.nr, c.args[0], c.args[1]) {
                (15, ..) => assert_eq!(*r, 0, "set_timer_op always succeeds: {c:x?}"),
                (24, _, 1 | 0xffff_ffff) => assert_eq!(*r, -(ENOENT as i32), "unknown vCPU: {c:x?}"),
                (24, 6, 0) => {
                    let p = periods[((c.args[2] as u32 - period(0)) / 8) as usize];
                    let ok = (1_000_000..=i64::MAX as u64).contains(&p);
                    assert_eq!(*r, if ok { 0 } else { -(EINVAL as i32) }, "periodic {p}: {c:x?}");
                }
                (24, 7 | 9, 0) => assert_eq!(*r, 0, "stop: {c:x?}"),
                _ => {}
            }
        }
        assert_log_bounded("timer abuse");
    }
}

/// The virtio-mmio registers the test's driver touches (virtio 1.x,
/// "MMIO Device Register Layout").
mod mmio {
    pub const MAGIC: u32 = 0x000;
    pub const VERSION: u32 = 0x004;
    pub const DRIVER_FEATURES: u32 = 0x020;
    pub const DRIVER_FEATURES_SEL: u32 = 0x024;
    pub const QUEUE_SEL: u32 = 0x030;
    pub const QUEUE_NUM: u32 = 0x038;
    pub const QUEUE_READY: u32 = 0x044;
    pub const QUEUE_NOTIFY: u32 = 0x050;
    pub const INTERRUPT_STATUS: u32 = 0x060;
    pub const STATUS: u32 = 0x070;
    pub const QUEUE_DESC: u32 = 0x080;
    pub const QUEUE_DRIVER: u32 = 0x090;
    pub const QUEUE_DEVICE: u32 = 0x0a0;
}

/// Queue 0 of the test's virtio disk: descriptors, available ring, used
/// ring, the FLUSH request's header and status byte.
const VQ_DESC: u32 = STRUCTS;
const VQ_AVAIL: u32 = STRUCTS + 0x100;
const VQ_USED: u32 = STRUCTS + 0x200;
const REQ_HDR: u32 = STRUCTS + 0x400;
const REQ_STATUS: u32 = STRUCTS + 0x500;

/// One `VIRTIO_BLK_T_FLUSH` request (header, then a device-writable
/// status byte) made available in queue 0.
fn flush_request_bytes() -> Vec<u8> {
    let mut d = vec![0u8; 0x600];
    let desc = |d: &mut Vec<u8>, i: usize, addr: u32, len: u32, flags: u16, next: u16| {
        let o = i * 16;
        d[o..o + 8].copy_from_slice(&u64::from(addr).to_le_bytes());
        d[o + 8..o + 12].copy_from_slice(&len.to_le_bytes());
        d[o + 12..o + 14].copy_from_slice(&flags.to_le_bytes());
        d[o + 14..o + 16].copy_from_slice(&next.to_le_bytes());
    };
    desc(&mut d, 0, REQ_HDR, 16, 1, 1); // VIRTQ_DESC_F_NEXT
    desc(&mut d, 1, REQ_STATUS, 1, 2, 0); // VIRTQ_DESC_F_WRITE
    let avail = (VQ_AVAIL - STRUCTS) as usize;
    d[avail + 2..avail + 4].copy_from_slice(&1u16.to_le_bytes()); // idx 1, ring[0] = 0
    let hdr = (REQ_HDR - STRUCTS) as usize;
    d[hdr..hdr + 4].copy_from_slice(&4u32.to_le_bytes()); // VIRTIO_BLK_T_FLUSH
    d[(REQ_STATUS - STRUCTS) as usize] = 0xff;
    d
}

/// The 32-bit guest: walks `calls` hostile hypercalls (a table at
/// [`DATA`]), then sets its event-channel upcall vector, brings up the
/// virtio disk's queue 0, notifies it and waits with interrupts on; the
/// handler for the disk's MSI vector (which never returns: no 32-bit
/// `iret`) counts and records the used index, status and ISR.
fn virtio_after_upcall_vector_guest(handler: u32, calls: usize) -> (Asm, u32) {
    use mmio::*;
    let base = pv_abi::virtio::mmio_base(0) as u32;
    let vector = u32::from(pv_abi::virtio::VIRTIO_VECTOR_BASE);
    let mut a = Asm::default();
    a.setup_descriptors().wrmsr(XEN_HYPERCALL_MSR, u64::from(HCALL_PAGE));
    table_loop(&mut a, calls, false);
    a.poke(0xfee0_00f0, 0x1ff); // LAPIC SVR: software-enable the local APIC
    let u = SCRATCH;
    a.poke(u, 0).poke(u + 4, u32::from(IRQ_VECTOR)).hypercall(34, &[23, u], 0); // set_evtchn_upcall_vector
    a.load_eax(base + MAGIC).store_eax(RESULTS + 4).load_eax(base + VERSION).store_eax(RESULTS + 8);
    for s in [0, 1, 3] {
        a.poke(base + STATUS, s);
    }
    a.poke(base + DRIVER_FEATURES_SEL, 1).poke(base + DRIVER_FEATURES, 1); // VIRTIO_F_VERSION_1
    a.poke(base + DRIVER_FEATURES_SEL, 0).poke(base + DRIVER_FEATURES, 0);
    a.poke(base + STATUS, 0xb).poke(base + QUEUE_SEL, 0).poke(base + QUEUE_NUM, 8);
    for (reg, at) in [(QUEUE_DESC, VQ_DESC), (QUEUE_DRIVER, VQ_AVAIL), (QUEUE_DEVICE, VQ_USED)] {
        a.poke(base + reg, at).poke(base + reg + 4, 0);
    }
    a.poke(base + QUEUE_READY, 1).poke(base + STATUS, 0xf);
    a.load_eax(base + STATUS).store_eax(RESULTS + 12);
    // The disk's interrupt gate (32-bit interrupt gate, selector 0x10).
    a.poke(IDT + vector * 8, (0x10 << 16) | (handler & 0xffff))
        .poke(IDT + vector * 8 + 4, (handler & 0xffff_0000) | 0x8e00);
    a.poke(base + QUEUE_NOTIFY, 0);
    a.raw(&[0xfb, 0xeb, 0xfe]); // sti; jmp $
    let at = a.here();
    a.raw(&[0xfa, 0xff, 0x05]).raw(&IRQ_COUNT.to_le_bytes()); // cli; inc dword [IRQ_COUNT]
    a.raw(&[0xbc]).raw(&STACK_TOP.to_le_bytes()); // mov esp, STACK_TOP
    a.load_eax(VQ_USED).store_eax(RESULTS + 16); // used flags | idx << 16
    a.load_eax(REQ_STATUS).store_eax(RESULTS + 20);
    a.load_eax(base + INTERRUPT_STATUS).store_eax(RESULTS + 24);
    a.poweroff(0);
    (a, at)
}

/// Issue 18 item 6: a PVH guest with a virtio disk that calls
/// `HVMOP_set_evtchn_upcall_vector` (`xen/arch/x86/hvm/hvm.c`,
/// `hvmop_set_evtchn_upcall_vector`) still gets the disk's interrupt: the
/// upcall vector's route change keeps every other GSI route. The guest
/// drives the transport itself (virtio 1.x MMIO) with one FLUSH request
/// and takes the interrupt at the disk's MSI vector, after 1,000 hostile
/// hypercalls (the device still works; its image is untouched).
#[test]
fn pvh_virtio_interrupt_still_arrives_after_set_evtchn_upcall_vector() {
    use vmm::console::ConsoleOut;
    use vmm::{DeviceSpec, DiskConfig};
    let _serial = start_counting();
    let dir = tempfile::tempdir().unwrap();
    let calls = random_calls(0xb10c, 1000);
    let (_, handler) = virtio_after_upcall_vector_guest(0, calls.len());
    let (a, at) = virtio_after_upcall_vector_guest(handler, calls.len());
    assert_eq!(at, handler, "two passes, one layout");
    let mut data = table_bytes(&calls, false);
    data.resize((STRUCTS - DATA) as usize, 0);
    data.extend_from_slice(&flush_request_bytes());
    let path = dir.path().join("guest.elf");
    std::fs::write(&path, pvh_elf_with_data(&a, false, &data)).unwrap();
    let img = dir.path().join("v.img");
    std::fs::write(&img, vec![0x5a; 1 << 20]).unwrap();
    let (console, _buf) = ConsoleOut::capture();
    let mut cfg = VmConfig::bundled("hello", "");
    cfg.kernel = Kernel::File(path);
    cfg.mem_bytes = MEM;
    cfg.console = console;
    cfg.devices = vec![DeviceSpec::Disk(DiskConfig::virtio(&img, false))];
    cfg.timeout = Some(std::time::Duration::from_secs(20));
    // Under the default filters, on a thread of its own (`on_vm_thread`).
    let (outcome, vm) = tests::on_vm_thread(move || {
        let mut vm = Vm::new(&cfg).unwrap();
        (vm.run().unwrap(), vm)
    });
    let vm = tests::RanVm::from(vm);
    let r = |slot: u32| result(&vm, slot) as u32;
    assert_eq!(r(0), 0, "set_evtchn_upcall_vector");
    assert_eq!((r(1), r(2)), (0x7472_6976, 2), "virtio-mmio magic, version 2");
    assert_eq!(r(3), 0xf, "DRIVER_OK accepted");
    assert_eq!(outcome, POWEROFF_OK, "the disk's interrupt arrived (else the guest spins to the timeout)");
    assert_eq!(vm.dom.ram.read_obj::<u32>(u64::from(IRQ_COUNT)).unwrap(), 1, "one interrupt");
    assert_eq!(r(4) >> 16, 1, "used index advanced to 1");
    assert_eq!(r(5) & 0xff, 0, "VIRTIO_BLK_S_OK");
    assert_eq!(r(6) & 1, 1, "ISR: used buffer notification");
    assert_eq!(vm.virtio.blk[0].lock().unwrap().device().metrics().flushes.get(), 1);
    assert!(std::fs::read(&img).unwrap().iter().all(|&b| b == 0x5a), "image intact");
    let eax: Vec<i32> =
        (0..calls.len() as u32).map(|i| vm.dom.ram.read_obj(u64::from(DATA + i * 24)).unwrap()).collect();
    assert_xen_results(&eax, &calls);
    assert_log_bounded("virtio after upcall vector");
}

/// `add_to_physmap` flood (`xen/arch/x86/mm/p2m.c`,
/// `xenmem_add_to_physmap_one`): 10,000 placements of shared info and
/// grant frames (including bad indices and the status bit) at changing
/// frames: free RAM, the hole above RAM, the VMM's pages, the APIC page,
/// far out of range. Each is 0 or a Xen errno; afterwards the guest places
/// shared info in the hole once more and reads its pvclock through it,
/// and the run ends by its poweroff (slot changes never failed).
#[test]
fn pvh_add_to_physmap_flood_keeps_shared_info_readable() {
    let _serial = start_counting();
    let layout = PvhLayout::new(MEM);
    let hole = MEM >> 12;
    let gfns = [
        0x300,
        0x301,
        0x3ff,
        0,
        hole,
        hole + 1,
        hole + 15,
        hole + 16,
        layout.vmm_base >> 12,
        (MEM >> 12) - 1,
        0xfee00,
        0xfffff,
        0xffff_ffff,
        1 << 40,
    ];
    let spaces = [(0u32, 0u64), (1, 0), (1, 1), (1, 3), (1, 0xffff), (1, 1 << 31), (0, 5), (4, 0)];
    for long in [false, true] {
        let mut rng = Rng(0xadd_0000 + u64::from(long));
        let size = if long { 24 } else { 16 };
        let mut structs = Vec::new();
        let mut addrs = Vec::new();
        for (i, (&(space, idx), &gfn)) in spaces.iter().flat_map(|s| gfns.iter().map(move |g| (s, g))).enumerate() {
            let mut b = 0x7ff0u32.to_le_bytes().to_vec();
            b.extend_from_slice(&space.to_le_bytes());
            if long {
                b.extend_from_slice(&idx.to_le_bytes());
                b.extend_from_slice(&gfn.to_le_bytes());
            } else {
                b.extend_from_slice(&(idx as u32).to_le_bytes());
                b.extend_from_slice(&(gfn as u32).to_le_bytes());
            }
            let at = STRUCTS + i as u32 * size;
            structs.push((at, b));
            addrs.push(u64::from(at));
        }
        let calls: Vec<Call> = (0..10_000).map(|_| Call { nr: 12, args: [7, rng.pick(&addrs), 0, 0, 0] }).collect();
        // Finally: shared info into the hole (compat or native struct).
        let fin = STRUCTS + 0x2000;
        let (si, gfn) = (hole as u32, hole as u32);
        let (run, vm, eax) = run_table(
            &calls,
            &structs,
            long,
            |_| {},
            |a| {
                a.poke(fin, 0x7ff0).poke(fin + 4, 0).poke(fin + 8, 0).poke(fin + 12, 0);
                if long {
                    a.poke(fin + 16, gfn).poke(fin + 20, 0);
                } else {
                    a.poke(fin + 12, gfn);
                }
                a.hypercall(12, &[7, fin], 0);
                a.load_eax((si << 12) + 32 + 24).store_eax(RESULTS + 4); // tsc_to_system_mul
            },
        );
        assert_eq!(run.outcome, POWEROFF_OK, "long {long}: {}", run.console);
        assert_xen_results(&eax, &calls);
        let placed = eax.iter().filter(|&&r| r == 0).count();
        assert!(placed > 100, "some placements succeed: {placed}");
        assert!(eax.iter().any(|&r| r == -(EINVAL as i32)), "bad indices refused");
        assert_eq!(result(&vm, 0), 0, "shared info placed after the flood");
        assert_ne!(result(&vm, 1), 0, "pvclock readable through it");
        assert_log_bounded("add_to_physmap flood");
    }
}

/// A guest that places shared info in 32-bit mode and then enters long
/// mode keeps the x86_32 layout (docs/xen-pvh-guests.md, "shared_info
/// layout": fixed by the vCPU's mode at the last placement, callback
/// parameter or upcall-vector call; Xen re-derives it from the mode, a
/// documented difference): `VIRQ_TIMER` raised from 64-bit code sets the
/// 32-bit selector (offset 4). After `HVMOP_set_evtchn_upcall_vector` from
/// long mode the layout is x86-64: the selector is the 64-bit one
/// (offset 8). No panic, events delivered by the rule.
#[test]
fn pvh_mode_switch_after_placing_shared_info_keeps_the_layout_chosen_then() {
    use pv_abi::shared_info::{LAYOUT_64, LAYOUT_X86_32 as L32};
    let _serial = start_counting();
    let dir = tempfile::tempdir().unwrap();
    let (s, hole) = (SCRATCH, MEM as u32);
    let mut a = Asm::default();
    a.setup_descriptors().wrmsr(XEN_HYPERCALL_MSR, u64::from(HCALL_PAGE));
    a.poke(s, 0x7ff0).poke(s + 4, 0).poke(s + 8, 0).poke(s + 12, hole >> 12).hypercall(12, &[7, s], 0);
    let b = s + 0x100;
    a.poke(b, 0).poke(b + 4, 0).poke(b + 8, 0).hypercall(32, &[1, b], 1); // bind_virq(VIRQ_TIMER)
    a.enter_long_mode();
    let ps = s + 0x200;
    a.poke(ps, b + 8).poke(ps + 4, 0).poke(ps + 8, 1).poke(ps + 12, 0).poke(ps + 16, 0).poke(ps + 20, 0);
    let record = |a: &mut Asm, first: u32| {
        for (i, off) in [L32.pending_sel, LAYOUT_64.pending_sel, L32.pending].into_iter().enumerate() {
            a.load_eax(hole + off as u32).store_eax(RESULTS + (first + i as u32) * 4);
        }
        // The guest consumes the event: clear upcall_pending, both
        // selectors and the pending word.
        for off in [0, L32.pending_sel, LAYOUT_64.pending_sel, L32.pending] {
            a.poke(hole + off as u32, 0);
        }
    };
    a.hypercall(15, &[1], 2).hypercall(29, &[3, ps], 3);
    record(&mut a, 10);
    let u = s + 0x300;
    a.poke(u, 0).poke(u + 4, u32::from(IRQ_VECTOR)).hypercall(34, &[23, u], 4);
    a.hypercall(15, &[1], 5).hypercall(29, &[3, ps], 6);
    record(&mut a, 20);
    a.poweroff(0);
    let (run, vm) = run_elf(dir.path(), pvh_elf(&a, false));
    assert_eq!(run.outcome, POWEROFF_OK, "{}", run.console);
    let r = |slot: u32| result(&vm, slot) as u32;
    assert_eq!((0..7).map(|i| result(&vm, i)).collect::<Vec<_>>(), vec![0; 7], "hypercalls");
    let port = vm.dom.ram.read_obj::<u32>(u64::from(b + 8)).unwrap();
    assert!((1..32).contains(&port), "port {port} in word 0");
    assert_ne!(r(12) & (1 << port), 0, "pending (same bit in both layouts)");
    assert_eq!((r(10), r(11)), (1, 0), "x86_32 selector after the switch to long mode");
    assert_ne!(r(22) & (1 << port), 0, "pending again");
    assert_eq!((r(20), r(21)), (0, 1), "x86-64 selector after the upcall vector from long mode");
    assert_log_bounded("mode switch");
}
