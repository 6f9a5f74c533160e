//! The block split driver end to end: blkfront in the guest, blkback on a
//! raw image file in the VMM, over a blkif ring with grants. The host
//! checks the image file's bytes itself.

use frontend_guest::blkfront::pattern_word;
use pv_abi::blkif::*;
use pv_abi::hypercall::sched_op::SHUTDOWN_POWEROFF;
use std::path::{Path, PathBuf};
use tests::{boot_vm, field};
use vmm::{DeviceSpec, DiskConfig, Outcome, VmConfig};

const OK: Outcome = Outcome::Shutdown { reason: SHUTDOWN_POWEROFF, code: 0 };
const DISK_BYTES: u64 = 2 << 20;

fn image(dir: &Path, name: &str, fill: u8) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, vec![fill; DISK_BYTES as usize]).unwrap();
    p
}

fn blk(cmdline: &str, disks: &[(&Path, bool)]) -> (tests::Run, tests::RanVm) {
    let devices = disks.iter().map(|&(p, readonly)| DeviceSpec::Disk(DiskConfig::xen(p, readonly))).collect();
    boot_vm(VmConfig { devices, ..VmConfig::bundled("blk", cmdline) })
}

fn counters(vm: &vmm::Vm, i: usize) -> &backend::block::BlockMetrics {
    vm.pv.metrics(pv_abi::blkif::DEVICE_TYPE, i).expect("disk i")
}

/// Checks `nr` sectors at `sector` of the file hold the pattern `seed`.
fn assert_pattern(file: &[u8], sector: u64, nr: u64, seed: u64) {
    let base = sector * SECTOR_SIZE;
    for w in (0..nr * SECTOR_SIZE).step_by(8) {
        let at = (base + w) as usize;
        let got = u64::from_le_bytes(file[at..at + 8].try_into().unwrap());
        assert_eq!(got, pattern_word(seed, base + w), "sector {sector}+{nr} seed {seed}: byte {} differs", base + w);
    }
}

#[test]
fn patterns_at_many_offsets_and_lengths_reach_the_image_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "disk.img", 0xee);
    let (run, vm) = blk("test=patterns seed=100", &[(&img, false)]);
    assert_eq!(run.outcome, OK, "{}", run.console);
    assert_eq!(field(&run.console, "patterns:", "bad"), Some(0), "{}", run.console);
    assert_eq!(field(&run.console, "patterns:", "leaked"), Some(0), "{}", run.console);
    let file = std::fs::read(&img).unwrap();
    let mut cases = 0;
    let mut max_nr = 0;
    for line in run.console.lines().filter(|l| l.starts_with("wrote ")) {
        let num = |k: &str| field(line, "wrote", k).unwrap();
        let (sector, nr, seed) = (num("sector"), num("nr"), num("seed"));
        assert_pattern(&file, sector, nr, seed);
        max_nr = max_nr.max(nr);
        cases += 1;
    }
    assert_eq!(cases, 12, "{}", run.console);
    assert!(max_nr.div_ceil(8) > BLKIF_MAX_SEGMENTS_PER_REQUEST as u64, "some requests were indirect");
    assert_eq!(file[1100 * 512 + 160 * 512], 0xee, "nothing written past the last case");
    let c = counters(&vm, 0);
    assert_eq!((c.errors.get(), c.unsupported.get()), (0, 0), "{c:?}");
    assert_eq!(c.flushes.get(), 1);
    assert_eq!(c.requests.get(), 12 + 1 + 12, "12 writes, a flush, 12 reads");
    assert!(c.notifies.get() < c.requests.get(), "notify avoidance on the response ring: {c:?}");
    assert_eq!(vm.dom.grants.mapped_refs(), 1, "only the ring stays mapped");
}

#[test]
fn discarded_ranges_read_back_as_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "disk.img", 0xee);
    let (run, vm) = blk("test=discard", &[(&img, false)]);
    assert!(run.console.contains("discard: feature=true zeros=true rest=true"), "{}", run.console);
    assert_eq!(run.outcome, OK);
    let file = std::fs::read(&img).unwrap();
    assert!(file[48 * 512..72 * 512].iter().all(|&b| b == 0), "discarded sectors are zeros in the file");
    assert_pattern(&file, 32, 16, 0xd15c);
    assert_pattern(&file, 72, 24, 0xd15c);
    assert_eq!(counters(&vm, 0).discards.get(), 1);
}

#[test]
fn hostile_requests_get_errors_and_the_second_disk_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let a = image(dir.path(), "a.img", 0x11);
    let b = image(dir.path(), "b.img", 0x22);
    let (run, vm) = blk("test=hostile", &[(&a, false), (&b, true)]);
    assert!(
        run.console
            .contains("hostile: refused=8/8 ro-write=Ok(-1) ro-read=Ok(0) corrupt-stopped=true second-disk=Ok(0)"),
        "{}",
        run.console
    );
    assert_eq!(run.outcome, OK);
    assert_eq!(counters(&vm, 0).ring_errors.get(), 1, "corrupt ring stopped disk 0");
    let (ca, cb) = (counters(&vm, 0), counters(&vm, 1));
    assert_eq!((ca.errors.get(), ca.unsupported.get()), (6, 1), "{ca:?}");
    assert_eq!(cb.errors.get(), 1, "the write to the read-only disk: {cb:?}");
    assert!(std::fs::read(&b).unwrap().iter().all(|&x| x == 0x22), "read-only image untouched");
    assert!(std::fs::read(&a).unwrap().iter().all(|&x| x == 0x11), "refused requests wrote nothing");
}

#[test]
fn no_disk_is_reported() {
    let (run, _vm) = blk("test=demo", &[]);
    assert!(run.console.contains("no disk"), "{}", run.console);
    assert_eq!(run.outcome, Outcome::Shutdown { reason: SHUTDOWN_POWEROFF, code: 72 });
}

#[test]
fn demo_writes_flushes_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "disk.img", 0);
    let (run, vm) = blk("", &[(&img, false)]);
    assert_eq!(run.outcome, OK, "{}", run.console);
    assert!(run.console.contains("read back: verified"), "{}", run.console);
    assert_pattern(&std::fs::read(&img).unwrap(), 8, 128, 0xb10c);
    assert_eq!(counters(&vm, 0).flushes.get(), 1);
}

/// Names of this process's threads (`/proc/self/task/*/comm`).
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|s| s.trim().to_string())
        .collect()
}

/// `queues=N ring-order=K`: the guest's blkfront connects N queues with
/// 2^K-page rings; each queue writes its own region with its requests all
/// in flight, then each region is read back through the next queue.
fn multi_queue(queues: u64, order: u32) {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "disk.img", 0xee);
    let threads = std::sync::Mutex::new(Vec::new());
    let devices = vec![DeviceSpec::Disk(DiskConfig::xen(&img, false))];
    let cfg = VmConfig { devices, ..VmConfig::bundled("blk", &format!("queues={queues} ring-order={order}")) };
    let (run, vm) = tests::boot_vm_with(cfg, |_| *threads.lock().unwrap() = thread_names());
    assert_eq!(run.outcome, OK, "{}", run.console);
    let pages = 1u64 << order;
    let want = format!("blk mq: queues={queues} ring-pages={pages} verified={queues}/{queues} bad=0");
    assert!(run.console.contains(&want), "wanted {want:?}:\n{}", run.console);
    // io/blkif.h: with a 2^K-page ring all 40 requests of a queue are in
    // flight at once; a one-page ring holds 32.
    let in_flight = run.console.lines().find_map(|l| l.split("in-flight=").nth(1)).unwrap();
    let in_flight: Vec<u64> =
        in_flight.split_whitespace().next().unwrap().split(',').map(|v| v.parse().unwrap()).collect();
    assert_eq!(in_flight, vec![if order == 0 { 32 } else { 40 }; queues as usize], "{}", run.console);
    let file = std::fs::read(&img).unwrap();
    for q in 0..queues {
        // The guest's MQ_REGION (512 sectors) and seed 0x3100 + q.
        assert_pattern(&file, q * 512, 320, 0x3100 + q);
        assert!(file[(q * 512 + 320) as usize * 512..(q + 1) as usize * 512 * 512].iter().all(|&b| b == 0xee));
    }
    // Every queue's ring stays mapped while connected: N rings of 2^K pages.
    assert_eq!(vm.dom.grants.mapped_refs(), (queues * pages) as usize);
    let c = counters(&vm, 0);
    assert_eq!((c.errors.get(), c.ring_errors.get()), (0, 0), "{c:?}");
    assert_eq!(c.requests.get(), queues * 40 + queues + queues * 10, "writes, a flush per queue, 32-sector reads");
    // Queue N >= 1 has a thread of its own (the device thread serves 0).
    let names = threads.lock().unwrap().clone();
    for q in 1..4 {
        assert!(names.iter().any(|n| *n == format!("pv-vbd0q{q}")), "thread pv-vbd0q{q} in {names:?}");
    }
}

#[test]
fn one_queue_through_the_multi_queue_path() {
    multi_queue(1, 0);
}

#[test]
fn two_queues_each_on_its_own_ring_and_thread() {
    multi_queue(2, 0);
}

#[test]
fn four_queues_with_four_page_rings() {
    multi_queue(4, 2);
}

#[test]
fn more_queues_than_offered_get_the_back_ends_maximum() {
    // Linux's blkfront takes min(its own, multi-queue-max-queues): 8 asked,
    // the back end offers 4; the order is capped at max-ring-page-order.
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "disk.img", 0xee);
    let (run, _vm) = blk("queues=8 ring-order=1", &[(&img, false)]);
    assert_eq!(run.outcome, OK, "{}", run.console);
    assert!(run.console.contains("blk mq: queues=4 ring-pages=2 verified=4/4 bad=0"), "{}", run.console);
}
