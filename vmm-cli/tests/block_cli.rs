//! `vmm run --disk`: the block demo, its scratch image, one-line errors for
//! bad disks, and durability across a SIGKILL after the flush response.

mod common;
use common::pattern_ok;

use std::process::{Command, Output};

fn vmm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmm")).args(args).output().expect("run vmm")
}

fn assert_one_line_error(out: &Output, want: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.starts_with("error: ") && stderr.contains(want), "expected {want:?} in {stderr}");
}

#[test]
fn default_demo_uses_a_scratch_image_and_removes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--timeout", "60"])
        .env("TMPDIR", tmp.path())
        .output()
        .expect("run vmm");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("blk demo: disk vbd/51712 4096 KiB;"), "{stdout}");
    assert!(stdout.contains("flushed, read back: verified"), "{stdout}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "scratch image removed");
}

#[test]
fn demo_on_a_given_disk_leaves_the_data_in_it() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("d.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let out = vmm(&["run", "--timeout", "60", "--disk", img.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(pattern_ok(&std::fs::read(&img).unwrap(), 8, 128, 0xb10c));
}

#[test]
fn a_disk_given_as_a_generic_device_is_the_same_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("d.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let dev = format!("vbd,{}", img.display());
    let out = vmm(&["run", "--timeout", "60", "--stats", "--device", &dev]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(pattern_ok(&std::fs::read(&img).unwrap(), 8, 128, 0xb10c), "no scratch disk in front of it");
    assert!(stderr.contains("/backend/vbd/1/51712: kicks="), "device metrics in --stats: {stderr}");
    let tiny = tmp.path().join("tiny.img");
    std::fs::write(&tiny, [0u8; 10]).unwrap();
    let dev = format!("vbd,{}", tiny.display());
    assert_one_line_error(&vmm(&["run", "--device", &dev]), "less than one 512-byte sector");
}

#[test]
fn bad_disks_are_one_line_errors() {
    assert_one_line_error(
        &vmm(&["run", "--disk", "/nonexistent/disk.img"]),
        "cannot open disk image /nonexistent/disk.img",
    );
    assert_one_line_error(&vmm(&["run", "--disk", "x.img,rw"]), "unknown option 'rw'");
    let tmp = tempfile::tempdir().unwrap();
    let tiny = tmp.path().join("tiny.img");
    std::fs::write(&tiny, [0u8; 10]).unwrap();
    assert_one_line_error(&vmm(&["run", "--disk", tiny.to_str().unwrap()]), "less than one 512-byte sector");
}

#[test]
fn flushed_data_survives_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("crash.img");
    let disk = img.display().to_string();
    common::flushed_data_survives_sigkill("blk", &disk, &img);
}

/// `vdev=` takes Xen's disk names (docs/man/xen-vbd-interface.7.pandoc:
/// `xvdc` is 202 << 8 | 2 << 4 = 51744, `hda` is 3 << 8 = 768) or the
/// number itself, and the store node is `device/vbd/<that number>`.
#[test]
fn vdev_names_the_disk_as_xen_numbers_it() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("d.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    for (vdev, node) in [("xvdc", 51744), ("hda", 768), ("2048", 2048)] {
        let disk = format!("{},vdev={vdev}", img.display());
        let out = vmm(&["run", "--timeout", "60", "--image", "blk", "--stats", "--disk", &disk]);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{vdev}: {stdout}{stderr}");
        assert!(stdout.contains(&format!("blk demo: disk vbd/{node} ")), "{vdev}: {stdout}");
        assert!(stderr.contains(&format!("/backend/vbd/1/{node}: kicks=")), "{vdev}: {stderr}");
    }
}

#[test]
fn bad_or_clashing_vdevs_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("d.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let disk = |opts: &str| format!("{}{opts}", img.display());
    assert_one_line_error(&vmm(&["run", "--disk", &disk(",vdev=vda")]), "vdev 'vda' is not a disk name: use xvda");
    assert_one_line_error(&vmm(&["run", "--disk", &disk(",vdev=hde")]), "vdev 'hde' is out of range");
    assert_one_line_error(&vmm(&["run", "--disk", &disk(",vdev=999999999999")]), "vdev '999999999999'");
    assert_one_line_error(
        &vmm(&["run", "--disk", &disk(",vdev=xvdb,transport=virtio")]),
        "drop it for transport=virtio",
    );
    // The second disk's default number (xvdb, 51728) is the first's (two
    // images: one image twice is refused earlier, by its lock).
    let img2 = tmp.path().join("e.img");
    std::fs::write(&img2, vec![0u8; 1 << 20]).unwrap();
    let second = format!("{},readonly", img2.display());
    let out = vmm(&["run", "--disk", &disk(",vdev=xvdb"), "--disk", &second]);
    assert_one_line_error(&out, "two devices would be device/vbd/51728: give each disk its own vdev=");
}

#[test]
fn four_queues_with_multi_page_rings_through_the_cli() {
    // `vmm run --disk <img> --cmdline "queues=4 ring-order=2"`: the demo's
    // blkfront connects 4 queues of 4-page rings (io/blkif.h
    // multi-queue-num-queues, ring-page-order), under the default seccomp
    // filters; each queue's region reaches the image.
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("d.img");
    std::fs::write(&img, vec![0u8; 2 << 20]).unwrap();
    let out = vmm(&["run", "--timeout", "120", "--disk", img.to_str().unwrap(), "--cmdline", "queues=4 ring-order=2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("blk mq: queues=4 ring-pages=4 verified=4/4 bad=0 in-flight=40,40,40,40"), "{stdout}");
    let file = std::fs::read(&img).unwrap();
    for q in 0..4 {
        assert!(pattern_ok(&file, q * 512, 320, 0x3100 + q), "queue {q}'s region");
    }
}

/// `vmm bench --only blk` runs the block rows alone: the single-queue
/// ring, the multi-queue handshake with 1, 2 and 4 queues (the back end
/// offers 4, `multi-queue-max-queues`) and virtio; every Xen row's requests
/// reached blkback (its kicks counted; a guest whose requests failed makes
/// the bench fail). A prefix no row has is a one-line error.
#[test]
fn bench_only_blk_has_the_single_and_multi_queue_rows() {
    let out = vmm(&["bench", "--iters", "40", "--reps", "1", "--json", "--only", "blk"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let recs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("one JSON array");
    assert!(recs.iter().all(|r| r["op"].as_str().unwrap().starts_with("blk")), "{recs:?}");
    for (op, mode) in [
        ("blk 4k randread", "ring+doorbell"),
        ("blk 4k randwrite", "ring+doorbell"),
        ("blk 4k randread", "1 queue"),
        ("blk 4k randread", "2 queues"),
        ("blk 4k randread", "4 queues"),
        ("blk 4k randread", "virtio-mmio"),
    ] {
        let r = recs.iter().find(|r| r["op"] == op && r["mode"] == mode).unwrap_or_else(|| panic!("no {op} {mode}"));
        assert!(r["backend_kicks_per_op"].as_f64().unwrap() > 0.0, "{op} {mode}: {r}");
    }
    let out = vmm(&["bench", "--iters", "1", "--reps", "1", "--only", "nosuch"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.starts_with("error: ") && stderr.contains("\"nosuch\""), "{stderr}");
}
