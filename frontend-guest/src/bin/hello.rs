//! `hello`: prints a greeting and the command line through the console
//! hypercall, then shuts down with the status given as `exit=<n>`.
#![no_std]
#![no_main]

use frontend_guest::{cmdline, guest_main, println};
use pv_abi::start_info::StartInfo;

guest_main!(main);

fn main(si: &'static StartInfo) -> i32 {
    let cmd = si.cmdline_bytes();
    println!("Hello from the PV guest ({} MiB RAM)", si.mem_bytes >> 20);
    println!("cmdline: {}", core::str::from_utf8(cmd).unwrap_or("<not utf-8>"));
    cmdline::get_u64(cmd, "exit").unwrap_or(0) as i32
}
