//! `hello`: prints a greeting and the command line through the console
//! hypercall, then shuts down with the status given as `exit=<n>`. With
//! `wait` it then idles until the VMM asks it to shut down through
//! `control/shutdown` (a SIGTERM to the VMM, or its `--timeout`), and
//! powers off cleanly.
#![no_std]
#![no_main]

use frontend_guest::{cmdline, guest_main, println, rt, xenbus};
use pv_abi::start_info::StartInfo;

guest_main!(main);

fn main(si: &'static StartInfo) -> i32 {
    let cmd = si.cmdline_bytes();
    println!("Hello from the PV guest ({} MiB RAM)", si.mem_bytes >> 20);
    println!("cmdline: {}", core::str::from_utf8(cmd).unwrap_or("<not utf-8>"));
    if cmdline::words(cmd).any(|(k, _)| k == b"wait") {
        wait_for_shutdown(si);
    }
    cmdline::get_u64(cmd, "exit").unwrap_or(0) as i32
}

/// Idles until the VMM writes `control/shutdown`, then powers off.
fn wait_for_shutdown(si: &'static StartInfo) {
    let mut store = match xenbus::open_store(si) {
        Ok(s) => s,
        Err(e) => {
            println!("hello: no store: {}", e);
            return;
        }
    };
    if let Err(e) = xenbus::watch_shutdown(&mut store) {
        println!("hello: cannot watch control/shutdown: {}", e);
        return;
    }
    println!("hello: waiting for control/shutdown");
    match xenbus::wait_shutdown_request(&mut store) {
        Ok(req) => rt::obey_shutdown_request(req),
        Err(e) => println!("hello: store failed while waiting: {}", e),
    }
}
