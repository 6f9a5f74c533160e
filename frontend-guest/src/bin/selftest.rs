//! `selftest`: the image the integration tests and benchmarks drive. The
//! command line picks a scenario with `test=<name>` and its parameters; the
//! result is printed and returned as the exit status (0 = as expected).
#![no_std]
#![no_main]

use frontend_guest::hypercall::{self, Errno};
use frontend_guest::{arch, cmdline, guest_main, println};
use pv_abi::errno::{EFAULT, ENOSYS};
use pv_abi::hypercall::{console_io, nr};
use pv_abi::start_info::StartInfo;

guest_main!(main);

fn main(si: &'static StartInfo) -> i32 {
    let cmd = si.cmdline_bytes();
    let n = cmdline::get_u64(cmd, "n").unwrap_or(1);
    match cmdline::get(cmd, "test").unwrap_or(b"") {
        b"uart" => {
            (0..n).for_each(|i| arch::uart_putc(b'a' + (i % 26) as u8));
            0
        }
        b"console" => {
            // `n` bytes through the console hypercall, `chunk` per call
            // (default: all in one call).
            let buf = [b'c'; 4096];
            let chunk = cmdline::get_u64(cmd, "chunk").unwrap_or(n).clamp(1, 4096) as usize;
            let mut left = n as usize;
            while left > 0 {
                let len = left.min(chunk);
                match hypercall::console_write(&buf[..len]) {
                    Ok(w) if w == len as u64 => left -= len,
                    other => {
                        println!("\nconsole_write returned {:?}", other);
                        return 1;
                    }
                }
            }
            0
        }
        b"ring" => {
            // `n` bytes through the PV console ring, `chunk` per notify.
            let buf = [b'r'; 2048];
            let chunk = cmdline::get_u64(cmd, "chunk").unwrap_or(64).clamp(1, 2048) as usize;
            let mut left = n as usize;
            while left > 0 {
                let len = left.min(chunk);
                frontend_guest::console::write_bytes(&buf[..len]);
                left -= len;
            }
            0
        }
        b"null" => {
            // The null hypercall, `n` times: the cost of one PV exit.
            for _ in 0..n {
                let _ = hypercall::version();
            }
            0
        }
        b"null-tight" => {
            arch::null_hypercall_loop(n);
            0
        }
        b"hostile" => hostile(si),
        b"triplefault" => arch::triple_fault(),
        b"hang" => arch::halt_forever(),
        b"panic" => panic!("requested by the command line"),
        other => {
            println!("unknown test {:?}", core::str::from_utf8(other).unwrap_or("?"));
            64
        }
    }
}

/// Bad hypercalls: each must fail with its errno, and the guest must keep
/// running afterwards.
fn hostile(si: &StartInfo) -> i32 {
    let mut failures = 0;
    let mut expect = |what: &str, got: i64, want: i64| {
        let ok = got == -want;
        println!("{what}: {} ({})", if ok { "ok" } else { "FAILED" }, got);
        if !ok {
            failures += 1;
        }
    };
    // Only calls the VMM must refuse: unknown numbers, and address
    // arguments outside RAM (console_io write only ever reads guest memory).
    let raw = |nr: u64, a1: u64, a2: u64, a3: u64| {
        // SAFETY: every call below names a hypercall the VMM rejects or an
        // address it refuses (outside RAM), or `console_io` write, which
        // reads guest memory and never writes it.
        unsafe { hypercall::raw(nr, a1, a2, a3) }
    };
    expect("unknown hypercall", raw(999, 1, 2, 3), ENOSYS);
    expect("unknown console_io cmd", raw(nr::CONSOLE_IO, 77, 1, 0x10_0000), ENOSYS);
    expect("console_io outside RAM", raw(nr::CONSOLE_IO, console_io::WRITE, 16, si.mem_bytes), EFAULT);
    expect("console_io straddling RAM end", raw(nr::CONSOLE_IO, console_io::WRITE, 64, si.mem_bytes - 8), EFAULT);
    expect("console_io overflowing", raw(nr::CONSOLE_IO, console_io::WRITE, 64, u64::MAX - 8), EFAULT);
    expect("console_io huge length", raw(nr::CONSOLE_IO, console_io::WRITE, u64::MAX, 0x10_0000), EFAULT);
    expect("sched_op shutdown arg outside RAM", raw(nr::SCHED_OP, 2, u64::MAX - 1, 0), EFAULT);
    // Still alive and the good path still works.
    let alive = hypercall::console_write(b"still running\n");
    if alive != Ok(14) {
        failures += 1;
    }
    let _: Option<Errno> = None;
    failures
}
