//! A short, bounded, deterministic run of every fuzz target (part of
//! `cargo test`): no input may panic. Long runs: see `fuzz/README.md`.

/// Each target runs on a thread under the VMM's device-thread seccomp
/// filter (`vmm::seccomp`), where the parsers it drives run in the VMM: a
/// system call the filter lacks stops the test binary with
/// `error: seccomp: the device thread made forbidden system call N`.
#[test]
fn every_target_survives_a_short_deterministic_run() {
    let iters: u64 = std::env::var("PV_FUZZ_SMOKE_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    for (name, target) in pv_fuzz::targets::ALL {
        // The seed corpus is read before confinement, as a VMM reads its
        // configuration before its device threads start.
        let seeds = pv_fuzz::runner::seeds(name);
        assert!(!seeds.is_empty(), "{name} has no seeds");
        let stats = vmm::seccomp::run_confined(vmm::seccomp::ThreadKind::Device, || {
            // Each seed is a well-formed input: it must run too.
            for s in &seeds {
                target(s);
            }
            pv_fuzz::runner::run(*target, &seeds, iters, 0x5eed)
        })
        .expect("device filter");
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
