//! A short, bounded, deterministic run of every fuzz target (part of
//! `cargo test`): no input may panic. Long runs: see `fuzz/README.md`.

/// Each target runs on a thread under the seccomp filter of the VMM thread
/// that runs the code it drives ([`confinement`]): a system call the
/// filter lacks stops the test binary with
/// `error: seccomp: the <kind> thread made forbidden system call N`.
#[test]
fn every_target_survives_a_short_deterministic_run() {
    let iters: u64 = std::env::var("PV_FUZZ_SMOKE_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    vmm::seccomp::enable();
    for (name, target) in pv_fuzz::targets::ALL {
        // The seed corpus is read before confinement, as a VMM reads its
        // configuration before its device threads start.
        let seeds = pv_fuzz::runner::seeds(name);
        assert!(!seeds.is_empty(), "{name} has no seeds");
        let confined = || {
            // Each seed is a well-formed input: it must run too. The first
            // round, unconfined, makes the thread's fixtures (a scratch
            // image, the shared domain) as the VMM makes a device before
            // its thread starts.
            seeds.iter().for_each(|s| target(s));
            let (kind, extra) = confinement(name);
            vmm::seccomp::install_with(kind, extra).expect("seccomp filter");
            seeds.iter().for_each(|s| target(s));
            pv_fuzz::runner::run(*target, &seeds, iters, 0x5eed)
        };
        let stats = std::thread::scope(|s| s.spawn(confined).join()).expect("no panic outside catch_unwind");
        assert_eq!(stats.execs, iters, "{name}");
        assert_eq!(stats.crash, None, "{name} panicked");
    }
}

#[test]
fn the_runner_is_deterministic() {
    use pv_fuzz::runner::{mutate, Rng};
    let mk = || {
        let mut rng = Rng::new(42);
        let mut buf = b"seed".to_vec();
        for _ in 0..1000 {
            mutate(&mut rng, &mut buf, b"other");
        }
        buf
    };
    assert_eq!(mk(), mk());
}

#[test]
fn the_elf_seeds_reach_both_note_paths() {
    use vmm::boot::elf::{BootKind, Elf};
    let seeds = pv_fuzz::targets::elf_seeds();
    let kinds: Vec<_> = seeds.iter().map(|s| Elf::parse(s).and_then(|e| e.boot_kind())).collect();
    assert_eq!(kinds[0], Ok(BootKind::Own), "the bundled guest");
    // ELF32 and ELF64, the note in a PT_NOTE segment and only in a SHT_NOTE section.
    assert_eq!(kinds[1..], [Ok(BootKind::Pvh(0x10_0000)); 4]);
    for s in &seeds[1..] {
        assert!(Elf::parse(s).unwrap().check(0, 8 << 20).is_ok());
    }
}

/// The filter of the VMM thread that runs what target `name` drives, and
/// the system calls the target's own per-input fixture needs beyond it
/// (made, in the VMM, before that thread is confined).
fn confinement(name: &str) -> (vmm::seccomp::ThreadKind, &'static [i64]) {
    use vmm::seccomp::ThreadKind::{Device, Main, Vcpu};
    match name {
        // The store ring is served on the pv-core device thread.
        "store" => (Device, &[]),
        // blkback and netback run on their device threads; the harnesses
        // make a fresh ring's eventfds for every input.
        "netif" => (Device, &[libc::SYS_eventfd2]),
        // blkif's scratch image (a thread-local `TempDir`) is removed when
        // the thread ends, still confined.
        "blkif" => (Device, &[libc::SYS_eventfd2, libc::SYS_statx, libc::SYS_getdents64, libc::SYS_unlinkat]),
        // Hypercalls run on the vCPU thread; the evtchn target makes the
        // host side's wake eventfd per input.
        "paging" | "gnttab" => (Vcpu, &[]),
        "evtchn" => (Vcpu, &[libc::SYS_eventfd2]),
        // virtio-mmio register accesses are MMIO exits on the vCPU thread.
        "virtio" => (Vcpu, &[]),
        // The loader runs while the VM is built (`vmm bench`'s main filter).
        "elf" => (Main, &[]),
        other => panic!("no confinement for target {other}"),
    }
}
