//! `my-guest`: an out-of-tree PV guest. It greets, writes and reads back a
//! key in its store directory, and shuts down with the status given as
//! `exit=<n>` on its command line.
#![no_std]
#![no_main]

use frontend_guest::pv_abi::start_info::StartInfo;
use frontend_guest::{cmdline, guest_main, println, xenbus};

guest_main!(main);

fn main(si: &'static StartInfo) -> i32 {
    println!("my-guest: hello from an out-of-tree guest ({} MiB RAM)", si.mem_bytes >> 20);
    let mut store = match xenbus::open_store(si) {
        Ok(s) => s,
        Err(e) => {
            println!("my-guest: no store: {:?}", e);
            return 1;
        }
    };
    let mut buf = [0u8; 32];
    let n = store.write("data/my-guest", b"was here").and_then(|()| store.read("data/my-guest", &mut buf)).unwrap_or(0);
    println!("my-guest: store says {}", core::str::from_utf8(&buf[..n]).unwrap_or("?"));
    cmdline::get_u64(si.cmdline_bytes(), "exit").unwrap_or(0) as i32
}
