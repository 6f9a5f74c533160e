//! Our guest on both event-channel ABIs through the `vmm` binary, under
//! the default seccomp filters: FIFO (the guest's default: it switches
//! with `EVTCHNOP_init_control`, `xen/common/event_fifo.c`) and 2-level
//! (`evtchn=2l` on the guest command line, `xen/common/event_2l.c`).

use std::process::{Command, Output};

fn vmm(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_vmm")).args(args).output().expect("run vmm");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    assert!(!stderr.contains("seccomp"), "{stderr}");
    out
}

const ABIS: [(&str, &str); 2] = [("", "fifo"), (" evtchn=2l", "2-level")];

/// The loopback scenario (`pvdev test=abi`): events both ways counted
/// once, masking, `set_priority` (`ENOSYS` on 2-level per
/// `xen/common/event_channel.h`), close (`evtchn_close()`: the peer
/// unbound, pending dropped); every check line says ok.
#[test]
fn loopback_events_masking_and_close_on_fifo_and_2_level() {
    for (force, abi) in ABIS {
        let out = vmm(&["run", "--image", "pvdev", "--cmdline", &format!("test=abi n=8{force}")]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(&format!("abi: evtchn={abi}\n")), "{stdout}");
        assert!(stdout.contains("abi: n=8 a-received=8 b-received=8 "), "{stdout}");
        assert_eq!(stdout.matches(": ok\n").count(), 15, "{abi}: {stdout}");
        assert!(!stdout.contains("FAILED"), "{abi}: {stdout}");
    }
}

/// Events both ways through a back end (the echo device on its own
/// thread; the guest notifies by doorbell, the back end by upcall),
/// counted on the guest side, on each ABI.
#[test]
fn echo_events_both_ways_on_fifo_and_2_level() {
    for (force, abi) in ABIS {
        let out = vmm(&["run", "--image", "pvdev", "--echo", "1", "--cmdline", &format!("test=events n=8{force}")]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("events: n=8 sent=8 received=8 "), "{abi}: {stdout}");
        assert!(stdout.contains(&format!(" bad=0 abi={abi}\n")), "{abi}: {stdout}");
        let out = vmm(&["run", "--image", "pvdev", "--echo", "1", "--cmdline", &format!("test=mask{force}")]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!(
                "answered=true silent-while-masked=true pending=true delivered-on-unmask=1 abi={abi}\n"
            )),
            "{abi}: {stdout}"
        );
    }
}
