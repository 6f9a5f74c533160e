//! Debian's GRUB (`grub-xen-host`: a 32-bit Xen PVH guest with its own Xen
//! block front end, console and store client) boots under `vmm run
//! --kernel`, finds `/boot/grub/grub.cfg` on our disk through its blkfront
//! talking to our blkback (`x86_32-abi` ring), runs it and powers off.
//! Each run is ~2.7e7 emulated guest instructions (about 30 s here); the two
//! cases run in parallel.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const GRUB: &str = "/usr/lib/grub-xen/grub-i386-xen_pvh.bin";

/// A whole-disk ext2 image holding `files` (path, contents) — GRUB's
/// embedded PvGrub2 config searches every disk for `/boot/grub/grub.cfg`.
fn ext2_image(dir: &Path, files: &[(&str, &str)]) -> std::path::PathBuf {
    let root = dir.join("root");
    for (path, text) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let img = dir.join("disk.img");
    let out = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext2", "-d"])
        .arg(&root)
        .arg(&img)
        .arg("4M")
        .output()
        .expect("mke2fs (e2fsprogs; run ./setup.sh)");
    assert!(out.status.success(), "mke2fs: {}", String::from_utf8_lossy(&out.stderr));
    img
}

/// Boots GRUB on `img`, with `input` on its standard input (a pipe, which
/// the VMM forwards to the guest's console); returns (exit status, stdout,
/// stderr).
fn boot_grub(img: &Path, input: &[u8]) -> (Option<i32>, String, String) {
    boot_grub_disk(&img.display().to_string(), input)
}

/// [`boot_grub`] with a whole `--disk` argument (options included).
fn boot_grub_disk(disk: &str, input: &[u8]) -> (Option<i32>, String, String) {
    assert!(Path::new(GRUB).exists(), "{GRUB} missing: run ./setup.sh (installs grub-xen-host)");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--kernel", GRUB, "--timeout", "300", "--disk", disk])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vmm");
    // Keep the pipe open until the guest is done: its end is not an EOF
    // the guest could see, but closing early would end console input.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    let out = child.wait_with_output().expect("vmm output");
    drop(stdin);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn grub_reads_a_file_from_our_blkback_and_powers_off() {
    let dir = tempfile::tempdir().unwrap();
    let text = "PV-KVM says hello through blkback 7f3a";
    let img = ext2_image(
        dir.path(),
        &[("boot/grub/grub.cfg", "echo cfg-from-disk\ncat /notes/hello.txt\nhalt\n"), ("notes/hello.txt", text)],
    );
    let (status, stdout, stderr) = boot_grub(&img, b"");
    assert!(stdout.contains("cfg-from-disk"), "GRUB did not run the disk's grub.cfg:\n{stdout}\n{stderr}");
    assert!(stdout.contains("(xen/xvda)"), "GRUB names the disk after the back end's `dev` node:\n{stdout}");
    assert!(stdout.contains(text), "the file's text is missing:\n{stdout}\n{stderr}");
    assert_eq!(status, Some(0), "halt powers off with status 0:\n{stdout}\n{stderr}");
}

/// No `grub.cfg` on the disk: GRUB ends at its prompt and reads the
/// commands typed on the VMM's standard input through the console ring.
#[test]
fn grub_prompt_takes_typed_commands_and_lists_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let img = ext2_image(dir.path(), &[("data/alpha-file.txt", "a"), ("data/beta-file.bin", "b")]);
    let (status, stdout, stderr) = boot_grub(&img, b"ls (xen/xvda)/\nls (xen/xvda)/data/\nhalt\n");
    assert!(stdout.contains("grub>"), "no prompt:\n{stdout}\n{stderr}");
    for name in ["lost+found/", "alpha-file.txt", "beta-file.bin"] {
        assert!(stdout.contains(name), "{name} not listed:\n{stdout}\n{stderr}");
    }
    assert_eq!(status, Some(0), "the typed halt powers off:\n{stdout}\n{stderr}");
}

/// `--disk <img>,vdev=hda`: the disk is `device/vbd/768`
/// (`docs/misc/vbd-interface.txt`: `hda` is 3 << 8), its back end's `dev`
/// node says `hda` (`libxl_disk.c` writes the vdev there) and the front
/// end has `virtual-device` = 768; GRUB's blkfront finds it under that name
/// and reads the file.
#[test]
fn grub_reads_its_disk_named_hda() {
    let dir = tempfile::tempdir().unwrap();
    let text = "read through device/vbd/768 5c1e";
    let img =
        ext2_image(dir.path(), &[("boot/grub/grub.cfg", "cat (xen/hda)/notes/t.txt\nhalt\n"), ("notes/t.txt", text)]);
    let (status, stdout, stderr) = boot_grub_disk(&format!("{},vdev=hda", img.display()), b"");
    assert!(stdout.contains(text), "GRUB did not read (xen/hda):\n{stdout}\n{stderr}");
    assert_eq!(status, Some(0), "halt powers off with status 0:\n{stdout}\n{stderr}");
}
