//! `smp`: every vCPU works and counts. vCPU 0 finds how many vCPUs the
//! domain has (`VCPUOP_is_up` until `-ENOENT`), brings the others up
//! (`smp::start`), and each vCPU then adds `work=<n>` (default 200) units
//! to a shared total under the spinlock, arms its own timer (`timer=<us>`,
//! default 1000) and waits for it. vCPU 0 plays `ipi=<n>` (default 10)
//! rounds of IPI ping-pong with each other vCPU over two event channels
//! (`EVTCHNOP_bind_ipi`), takes vCPU 1 down and up again and pings it once
//! more (`VCPUOP_down`/`up` resume where it stopped), then prints one line
//! per vCPU and checks every count: the total, each vCPU's work, IPIs and
//! upcalls (an IPI port's events reach only its vCPU), and its timer.
//! Exit status 0 when all hold, 1 otherwise.
//!
//! `test=ipi via=evtchn|lapic n=<n>` (for `vmm bench`, 2 vCPUs): `n` IPI
//! round trips between vCPU 0 and vCPU 1, over two event channels or
//! through the local APIC (x2APIC ICR writes).
//!
//! `hostile`: instead, offers the VMM bad `vcpu_op`/`bind_ipi` arguments
//! and prints one `hostile: <what>: <errno>` line each (vCPU ids out of
//! range, a 32-bit context, a CR3 outside RAM and, in the validated
//! paging modes, one that is not a pinned L4, `up` before `initialise`, a
//! second `initialise`), then exits 0.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use frontend_guest::cpu::{self, MAX_CPUS};
use frontend_guest::hypercall::{vcpu_op, Errno};
use frontend_guest::smp::{self, SpinLock};
use frontend_guest::{cmdline, evtchn, guest_main, println};
use pv_abi::hypercall::vcpu_op as cmd;
use pv_abi::start_info::StartInfo;

guest_main!(main);

/// The shared total every vCPU adds to.
static TOTAL: SpinLock<u64> = SpinLock::new(0);
/// Per vCPU: the IPI port vCPU 0 sends to it, and the one it answers on.
static IPI_TO: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static IPI_BACK: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static UNITS: AtomicU64 = AtomicU64::new(200);
static TIMER_US: AtomicU64 = AtomicU64::new(1000);

fn main(si: &'static StartInfo) -> i32 {
    let cmd = si.cmdline_bytes();
    UNITS.store(cmdline::get_u64(cmd, "work").unwrap_or(200), SeqCst);
    TIMER_US.store(cmdline::get_u64(cmd, "timer").unwrap_or(1000).max(1), SeqCst);
    let rounds = cmdline::get_u64(cmd, "ipi").unwrap_or(10) as u32;
    if cmdline::get(cmd, "test") == Some(b"ipi") {
        let lapic = cmdline::get(cmd, "via") == Some(b"lapic");
        return ipi_bench(lapic, cmdline::get_u64(cmd, "n").unwrap_or(0));
    }
    if cmdline::words(cmd).any(|(k, _)| k == b"hostile") {
        hostile(si);
        return 0;
    }
    match run(rounds) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            println!("smp: hypercall refused: {}", e.name());
            1
        }
    }
}

fn run(rounds: u32) -> Result<bool, Errno> {
    let n = smp::vcpus();
    for c in 1..n as usize {
        IPI_TO[c].store(evtchn::bind_ipi(c as u32)?, SeqCst);
        IPI_BACK[c].store(evtchn::bind_ipi(0)?, SeqCst);
    }
    let n = smp::start(n, work)?;
    println!("smp: {} vCPUs up ({} event channels)", n, evtchn::abi());
    work(0);
    for c in 1..n as usize {
        for r in 0..rounds {
            ping(c, r)?;
        }
    }
    let resumed = if n > 1 { down_and_up(rounds)? } else { true };
    for c in 0..n {
        while !cpu::get(c).done.load(SeqCst) {
            core::hint::spin_loop();
        }
    }
    Ok(report(n, rounds, resumed))
}

/// One IPI round trip to vCPU `c`: the `r`-th answer is awaited.
fn ping(c: usize, r: u32) -> Result<(), Errno> {
    let back = IPI_BACK[c].load(SeqCst);
    evtchn::send(IPI_TO[c].load(SeqCst))?;
    evtchn::wait_until(|| evtchn::events(back) > r);
    Ok(())
}

/// Takes vCPU 1 down, checks `VCPUOP_is_up` says so, sends it an IPI,
/// brings it up again and waits for its answer (it resumes where it
/// stopped and serves the IPI).
fn down_and_up(rounds: u32) -> Result<bool, Errno> {
    vcpu_op::<()>(cmd::DOWN, 1, None)?;
    let down = vcpu_op::<()>(cmd::IS_UP, 1, None)? == 0;
    evtchn::send(IPI_TO[1].load(SeqCst))?;
    vcpu_op::<()>(cmd::UP, 1, None)?;
    let back = IPI_BACK[1].load(SeqCst);
    evtchn::wait_until(|| evtchn::events(back) > rounds);
    Ok(down && vcpu_op::<()>(cmd::IS_UP, 1, None)? == 1)
}

/// Each vCPU's work: units added under the lock, its own timer, then (off
/// vCPU 0) answering IPIs for good.
fn work(id: u32) {
    let this = cpu::get(id);
    for _ in 0..UNITS.load(SeqCst) {
        *TOTAL.lock() += 1;
        this.work.fetch_add(1, SeqCst);
    }
    let before = this.timer_ticks.load(SeqCst);
    smp::arm_timer(TIMER_US.load(SeqCst));
    evtchn::wait_until(|| this.timer_ticks.load(SeqCst) > before);
    this.done.store(true, SeqCst);
    if id == 0 {
        return;
    }
    let (to, back) = (IPI_TO[id as usize].load(SeqCst), IPI_BACK[id as usize].load(SeqCst));
    let mut served = 0;
    loop {
        evtchn::wait_until(|| evtchn::events(to) > served);
        served += 1;
        this.ipis.fetch_add(1, SeqCst);
        if evtchn::send(back).is_err() {
            return;
        }
    }
}

/// Prints one line per vCPU and checks every count.
fn report(n: u32, rounds: u32, resumed: bool) -> bool {
    let units = UNITS.load(SeqCst);
    let mut ok = resumed;
    for c in 0..n {
        let p = cpu::get(c);
        let (work, ipis, upcalls, ticks) =
            (p.work.load(SeqCst), p.ipis.load(SeqCst), p.upcalls.load(SeqCst), p.timer_ticks.load(SeqCst));
        println!("cpu{}: work={} ipis={} upcalls={} timer_ticks={}", c, work, ipis, upcalls, ticks);
        // vCPU 1 answers one more IPI: the one sent while it was down.
        let want_ipis = if c == 0 { 0 } else { u64::from(rounds) + u64::from(c == 1) };
        // vCPU 0's upcalls: at least the answers on the back ports;
        // another vCPU's: exactly one per IPI it answered (its port's
        // events reach it alone, one at a time: each waits for the answer).
        let upcalls_ok = if c == 0 { upcalls >= u64::from(rounds) * u64::from(n - 1) } else { upcalls == want_ipis };
        ok &= work == units && ipis == want_ipis && upcalls_ok && ticks >= 1;
    }
    let total = *TOTAL.lock();
    let misrouted = evtchn::misrouted();
    ok &= total == units * u64::from(n) && misrouted == 0;
    println!(
        "smp: {} vCPUs, total {} of {}, misrouted {}, down/up resumed {}: {}",
        n,
        total,
        units * u64::from(n),
        misrouted,
        resumed,
        if ok { "verified" } else { "FAILED" }
    );
    ok
}

/// `VCPUOP_initialise` of `vcpu` with a 64-bit context on `cr3` (or the
/// 32-bit layout): the errno's name, or "ok".
fn initialise(vcpu: u32, cr3: u64, mode: u32) -> &'static str {
    use pv_abi::hvm::vcpu_hvm::{VcpuHvmContext, VcpuHvmX86_64};
    let regs = VcpuHvmX86_64 {
        rip: hostile as *const () as u64,
        rflags: 2,
        cr0: frontend_guest::arch::read_cr0(),
        cr3,
        cr4: frontend_guest::arch::read_cr4(),
        efer: frontend_guest::arch::rdmsr(frontend_guest::arch::MSR_EFER),
        ..Default::default()
    };
    let mut ctx = VcpuHvmContext { mode, pad: 0, cpu_regs: [0; 15] };
    for (i, chunk) in pv_abi::pod::as_bytes(&regs).chunks_exact(8).enumerate() {
        ctx.cpu_regs[i] = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
    }
    name(vcpu_op(cmd::INITIALISE, vcpu, Some(&mut ctx)))
}

fn name(r: Result<u64, Errno>) -> &'static str {
    r.map_or_else(|e| e.name(), |_| "ok")
}

/// The hostile mode (module docs). vCPU 1 is initialised last, with a
/// good state, and never brought up.
fn hostile(si: &'static StartInfo) {
    use pv_abi::hvm::vcpu_hvm::{MODE_32B, MODE_64B};
    let n = smp::vcpus();
    let cr3 = frontend_guest::arch::read_cr3();
    println!("hostile: vcpus: {}", n);
    println!("hostile: initialise vcpu {}: {}", n, initialise(n, cr3, MODE_64B));
    println!("hostile: is_up vcpu {}: {}", n, name(vcpu_op::<()>(cmd::IS_UP, n, None)));
    println!("hostile: bind_ipi vcpu {}: {}", n, name(evtchn::bind_ipi(n).map(u64::from)));
    println!("hostile: up before initialise: {}", name(vcpu_op::<()>(cmd::UP, 1, None)));
    println!("hostile: 32-bit context: {}", initialise(1, cr3, MODE_32B));
    println!("hostile: cr3 outside RAM: {}", initialise(1, si.mem_bytes, MODE_64B));
    // The first pool page: never pinned (validated modes), a RAM page.
    println!("hostile: cr3 not a pinned L4: {}", initialise(1, si.pt_pool_start, MODE_64B));
    println!("hostile: initialise: {}", initialise(1, cr3, MODE_64B));
    println!("hostile: initialise again: {}", initialise(1, cr3, MODE_64B));
}

/// The IPI bench's transport: local APIC (else event channels).
static BENCH_LAPIC: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// `test=ipi` (module docs): exit status.
fn ipi_bench(lapic: bool, n: u64) -> i32 {
    if smp::vcpus() < 2 {
        println!("smp: the IPI bench needs --vcpus 2");
        return 1;
    }
    BENCH_LAPIC.store(lapic, SeqCst);
    let ports = evtchn::bind_ipi(1).and_then(|to| Ok((to, evtchn::bind_ipi(0)?)));
    let Ok((to, back)) = ports else { return 1 };
    IPI_TO[1].store(to, SeqCst);
    IPI_BACK[1].store(back, SeqCst);
    if smp::start(2, responder).is_err() {
        return 1;
    }
    let this = cpu::get(0);
    for r in 0..n {
        if lapic {
            smp::send_lapic_ipi(1);
            evtchn::wait_until(|| this.lapic_ipis.load(SeqCst) > r);
        } else if evtchn::send(to).is_ok() {
            evtchn::wait_until(|| u64::from(evtchn::events(back)) > r);
        } else {
            return 1;
        }
    }
    0
}

/// vCPU 1 of the IPI bench: answers every IPI the way it came.
fn responder(id: u32) {
    let this = cpu::get(id);
    let (to, back) = (IPI_TO[1].load(SeqCst), IPI_BACK[1].load(SeqCst));
    let mut served = 0u64;
    loop {
        if BENCH_LAPIC.load(SeqCst) {
            evtchn::wait_until(|| this.lapic_ipis.load(SeqCst) > served);
            smp::send_lapic_ipi(0);
        } else {
            evtchn::wait_until(|| u64::from(evtchn::events(to)) > served);
            if evtchn::send(back).is_err() {
                return;
            }
        }
        served += 1;
    }
}
