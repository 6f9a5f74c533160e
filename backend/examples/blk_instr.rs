//! Runs a fixed number of 4 KiB random blkback requests through the
//! single-threaded harness, as `benches/blk.rs` does, for counting
//! user-space instructions per request (valgrind's callgrind, or
//! `perf stat -e instructions:u` where counters work):
//!
//! ```text
//! cargo build --release -p backend --example blk_instr
//! for n in 2000 12000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/blk_instr read $n 2>&1 | grep refs
//! done
//! ```
//!
//! (difference of the two totals / 10000 = instructions per request,
//! set-up cancelled out). Arguments: `read` or `write`, the number of
//! requests, and optionally the segments (4 KiB pages) per request, 1 to
//! 11 (default 1).

use backend::block::harness::Harness;
use backend::block::{Disk, DiskSpec};
use pv_abi::blkif::*;
use std::sync::Arc;

const DISK_BYTES: u64 = 8 << 20;
const BLOCKS: u64 = DISK_BYTES / 4096;
const DEPTH: u32 = 32;

fn main() {
    let mut args = std::env::args().skip(1);
    let op = match args.next().as_deref() {
        Some("write") => BLKIF_OP_WRITE,
        _ => BLKIF_OP_READ,
    };
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let segs: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1).clamp(1, 11);
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("instr.img");
    std::fs::write(&path, vec![0x5au8; DISK_BYTES as usize]).expect("disk image");
    let disk = Arc::new(Disk::open(&DiskSpec::new(path, false)).expect("open disk"));
    let mut h = Harness::new(disk, DEPTH * segs).expect("harness");
    let mut rng = 0x1234_5678_9abc_def1u64;
    let mut done = 0;
    while done < n {
        let batch = (n - done).min(u64::from(DEPTH));
        for slot in 0..batch as u32 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let block = rng % (BLOCKS - u64::from(segs));
            let mut r = BlkifRequest {
                operation: op,
                nr_segments: segs as u8,
                id: u64::from(slot),
                sector_number: block * 8,
                ..Default::default()
            };
            for i in 0..segs {
                let gref = h.front.page_gref(slot * segs + i);
                r.seg[i as usize] = BlkifRequestSegment { gref, first_sect: 0, last_sect: 7, _pad: 0 };
            }
            h.front.push(&r).expect("ring has room");
        }
        h.kick();
        let got = h.front.responses().expect("responses");
        assert!(got.len() as u64 == batch && got.iter().all(|r| r.status == BLKIF_RSP_OKAY));
        done += batch;
    }
    println!("{n} requests");
}
