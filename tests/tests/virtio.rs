//! virtio-blk end to end: the third-party `virtio-drivers` front end in the
//! guest, our virtio-mmio transport and virtio-blk in the VMM, a raw image
//! file behind it. The host checks the image file's bytes itself.

use frontend_guest::blkfront::pattern_word;
use pv_abi::hypercall::sched_op::SHUTDOWN_POWEROFF;
use std::path::{Path, PathBuf};
use tests::{boot_vm, field};
use vmm::{DeviceSpec, DiskConfig, Outcome, VmConfig};

const OK: Outcome = Outcome::Shutdown { reason: SHUTDOWN_POWEROFF, code: 0 };
const DISK_BYTES: usize = 1 << 20;

fn image(dir: &Path, name: &str, fill: u8) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, vec![fill; DISK_BYTES]).unwrap();
    p
}

fn virtio_disk(p: &Path, readonly: bool) -> DeviceSpec {
    DeviceSpec::Disk(DiskConfig::virtio(p, readonly))
}

fn pattern_ok(file: &[u8], sector: u64, nr: u64, seed: u64) -> bool {
    let base = sector * 512;
    (0..nr * 512).step_by(8).all(|w| {
        let at = (base + w) as usize;
        u64::from_le_bytes(file[at..at + 8].try_into().unwrap()) == pattern_word(seed, base + w)
    })
}

#[test]
fn virtio_drivers_patterns_reach_the_image_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "v.img", 0xee);
    let cfg =
        VmConfig { devices: vec![virtio_disk(&img, false)], ..VmConfig::bundled("virtio", "test=patterns seed=40") };
    let (run, vm) = boot_vm(cfg);
    assert_eq!(run.outcome, OK, "{}", run.console);
    assert_eq!(field(&run.console, "patterns:", "bad"), Some(0), "{}", run.console);
    assert!(run.console.contains("id=pv-kvm-vda"), "GET_ID: {}", run.console);
    let file = std::fs::read(&img).unwrap();
    let mut cases = 0;
    for line in run.console.lines().filter(|l| l.starts_with("wrote ")) {
        let num = |k: &str| field(line, "wrote", k).unwrap();
        assert!(pattern_ok(&file, num("sector"), num("nr"), num("seed")), "{line}");
        cases += 1;
    }
    assert_eq!(cases, 10, "{}", run.console);
    assert_eq!(file[434 * 512], 0xee, "nothing written past the last case");
    let c = vm.virtio.blk[0].lock().unwrap().device().metrics().clone();
    assert_eq!((c.errors.get(), c.unsupported.get(), c.flushes.get()), (0, 0, 1), "{c:?}");
    assert_eq!(c.sectors_written.get(), c.sectors_read.get(), "{c:?}");
    let t = vm.virtio.counters(0).unwrap();
    assert_eq!((t.bad_chains.get(), t.needs_reset.get()), (0, 0), "{t:?}");
    assert!(t.kicks.get() >= c.requests.get(), "one notification (ioeventfd) per synchronous request: {t:?}");
}

#[test]
fn readonly_virtio_disk_refuses_writes_with_ioerr() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "ro.img", 0x3c);
    let cfg = VmConfig { devices: vec![virtio_disk(&img, true)], ..VmConfig::bundled("virtio", "test=readonly") };
    let (run, vm) = boot_vm(cfg);
    assert_eq!(run.outcome, OK, "{}", run.console);
    assert!(run.console.contains("readonly: feature=true write=Err(IoError) read=Ok(())"), "{}", run.console);
    assert!(std::fs::read(&img).unwrap().iter().all(|&b| b == 0x3c), "image untouched");
    assert_eq!(vm.virtio.blk[0].lock().unwrap().device().metrics().errors.get(), 1);
}

#[test]
fn one_guest_uses_a_xen_disk_and_a_virtio_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (xen, vio) = (image(dir.path(), "x.img", 0), image(dir.path(), "v.img", 0));
    let cfg = VmConfig {
        devices: vec![DeviceSpec::Disk(DiskConfig::xen(&xen, false)), virtio_disk(&vio, false)],
        ..VmConfig::bundled("virtio", "test=both")
    };
    let (run, vm) = boot_vm(cfg);
    assert_eq!(run.outcome, OK, "{}", run.console);
    assert!(pattern_ok(&std::fs::read(&xen).unwrap(), 16, 8, 0xa1), "Xen disk: {}", run.console);
    assert!(pattern_ok(&std::fs::read(&vio).unwrap(), 16, 8, 0xb2), "virtio disk: {}", run.console);
    let xen = vm.pv.metrics::<backend::block::BlockMetrics>(pv_abi::blkif::DEVICE_TYPE, 0).unwrap();
    assert_eq!(xen.flushes.get(), 1);
    assert_eq!(vm.virtio.blk[0].lock().unwrap().device().metrics().flushes.get(), 1);
}
