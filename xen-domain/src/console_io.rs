//! `console_io` (Xen's `xen/drivers/char/console.c` `do_console_io`,
//! `xen/include/public/xen.h` `CONSOLEIO_*`): the guest writes to the
//! VMM's console; there is never anything to read.

use crate::domain::{Domain, HcResult};
use pv_abi::errno::{EFAULT, EINVAL, ENOSYS, EPERM};
use pv_abi::hypercall::console_io;

/// Bytes of a Xen guest's `CONSOLEIO_write` copied per step (Xen's
/// `guest_console_write()` copies 128-byte chunks; no total limit).
const XEN_CHUNK: u64 = 4096;
/// Bytes copied per work unit (`crate::preempt`): 1 MiB per exit.
const CHUNK_BYTES_PER_UNIT: u64 = 64;

/// `console_io(cmd, count, buf)`.
pub fn console_io(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    if dom.pvh.is_some() {
        return xen_console_io(dom, a);
    }
    let (cmd, count, buf) = (a[0], a[1], a[2]);
    match cmd {
        console_io::WRITE => {
            if count > console_io::MAX_COUNT {
                dom.ram.check(buf, count)?;
                return Err(EINVAL);
            }
            let bytes = dom.ram.read_vec(buf, count)?;
            dom.console.write(&bytes);
            Ok(count)
        }
        console_io::READ => {
            // An output buffer (nothing to read yet): checked as one.
            dom.ram.check_output(buf, count)?;
            Ok(0)
        }
        _ => Err(ENOSYS),
    }
}

/// A Xen guest's `console_io`, as a debug-build Xen answers a domU
/// (`do_console_io()` in `xen/drivers/char/console.c` behind
/// `xsm_console_io()`: with `CONFIG_VERBOSE_DEBUG` a domU may write, and
/// nothing else). A release Xen refuses every domU `console_io` with
/// `-EPERM`; we model the debug build so guests' early messages are seen.
/// Writes go to the hypervisor console ([`crate::console::HvConsole`]),
/// not the guest's console, and return 0.
fn xen_console_io(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    let (cmd, count, buf) = (a[0], a[1], a[2]);
    if cmd != console_io::WRITE {
        return Err(EPERM);
    }
    // Xen copies chunk by chunk and stops at the first unreadable one
    // (`-EFAULT`), having printed the chunks before it.
    let mut done = 0;
    while done < count {
        if dom.preempt_check(done) {
            // Bounded work per exit: the guest re-enters for the rest.
            dom.create_continuation([cmd, count - done, buf + done, a[3], a[4]]);
            return Ok(0);
        }
        let n = (count - done).min(XEN_CHUNK);
        let at = buf.checked_add(done).ok_or(EFAULT)?;
        let bytes = dom.ram.read_vec(at, n)?;
        dom.hv_console.write(&bytes);
        dom.charge(n / CHUNK_BYTES_PER_UNIT + 1);
        done += n;
    }
    Ok(0)
}

/// Against `xen/include/public/xen.h` (`CONSOLEIO_write` = 0,
/// `CONSOLEIO_read` = 1) and `xen/drivers/char/console.c`
/// (`do_console_io`: `-ENOSYS` for other commands, `-EFAULT` for a buffer
/// the guest cannot access).
#[cfg(test)]
mod tests {
    use crate::console::ConsoleOut;
    use crate::fake::{TestDomain, TEST_ARG, TEST_POOL};
    use pv_abi::errno::{EFAULT, EINVAL, ENOSYS, EPERM};
    use pv_abi::hypercall::{console_io, nr};
    use pv_abi::start_info::paging_mode;

    fn domain() -> (TestDomain, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
        let mut t = TestDomain::new(paging_mode::PV);
        let (out, buf) = ConsoleOut::capture();
        t.dom.console = out;
        (t, buf)
    }

    #[test]
    fn write_copies_the_guest_bytes_to_the_console() {
        let (mut t, buf) = domain();
        t.dom.ram.write(TEST_ARG, b"hello").unwrap();
        assert_eq!(t.call(nr::CONSOLE_IO, [console_io::WRITE, 5, TEST_ARG, 0, 0]), 5);
        assert_eq!(&buf.lock().unwrap()[..], b"hello");
        assert_eq!(t.call(nr::CONSOLE_IO, [console_io::WRITE, 0, TEST_ARG, 0, 0]), 0);
    }

    #[test]
    fn a_buffer_outside_ram_is_efault_and_writes_nothing() {
        let (mut t, buf) = domain();
        for (count, at) in [(8, crate::fake::TEST_RAM - 4), (2, u64::MAX), (1, crate::fake::TEST_RAM)] {
            assert_eq!(t.call(nr::CONSOLE_IO, [console_io::WRITE, count, at, 0, 0]), -EFAULT);
        }
        assert!(buf.lock().unwrap().is_empty());
    }

    #[test]
    fn an_oversized_write_is_refused_before_any_output() {
        let (mut t, buf) = domain();
        let big = console_io::MAX_COUNT + 1;
        assert_eq!(t.call(nr::CONSOLE_IO, [console_io::WRITE, big, 0x10_0000, 0, 0]), -EINVAL);
        // Beyond RAM as well: the range check comes first.
        assert_eq!(t.call(nr::CONSOLE_IO, [console_io::WRITE, big, crate::fake::TEST_RAM - 0x8000, 0, 0]), -EFAULT);
        assert!(buf.lock().unwrap().is_empty());
    }

    #[test]
    fn read_returns_nothing_and_checks_its_buffer_as_an_output() {
        let (mut t, _) = domain();
        assert_eq!(t.call(nr::CONSOLE_IO, [console_io::READ, 16, TEST_ARG, 0, 0]), 0);
        // The pool and the reserved low pages are not the guest's to receive output in.
        assert_eq!(t.call(nr::CONSOLE_IO, [console_io::READ, 16, TEST_POOL, 0, 0]), -EFAULT);
        assert_eq!(t.call(nr::CONSOLE_IO, [console_io::READ, 16, 0x1000, 0, 0]), -EFAULT);
    }

    /// Captured output.
    type Buf = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;

    /// A PVH domain with its guest console and hypervisor console captured.
    fn xen_domain() -> (TestDomain, Buf, Buf) {
        let mut t = TestDomain::pvh();
        let (out, guest) = ConsoleOut::capture();
        t.dom.console = out;
        let (hv, hv_buf) = ConsoleOut::capture();
        t.dom.hv_console = crate::console::HvConsole::new(hv, 1);
        (t, guest, hv_buf)
    }

    /// `xen/drivers/char/console.c`: `guest_console_write()` returns 0 and
    /// prints `(d1) <line>` on the hypervisor console; `xsm_console_io()`
    /// lets a domU write only (debug build), so read and every other
    /// command are `-EPERM`.
    #[test]
    fn xen_guests_write_to_the_hypervisor_console_and_get_0() {
        let (mut t, guest, hv) = xen_domain();
        t.dom.ram.write(TEST_ARG, b"boot\x07 ok\nnext").unwrap();
        assert_eq!(t.call(nr::CONSOLE_IO, [console_io::WRITE, 13, TEST_ARG, 0, 0]), 0);
        assert_eq!(&hv.lock().unwrap()[..], b"(d1) boot ok\n");
        assert!(guest.lock().unwrap().is_empty(), "never on the guest's console");
        for cmd in [console_io::READ, 2, u64::MAX] {
            assert_eq!(t.call(nr::CONSOLE_IO, [cmd, 1, TEST_ARG, 0, 0]), -EPERM, "cmd {cmd}");
        }
        assert_eq!(t.call(nr::CONSOLE_IO, [console_io::WRITE, 8, crate::fake::TEST_RAM - 4, 0, 0]), -EFAULT);
    }

    /// No length limit in Xen (continuations): a write beyond the old 64 KiB
    /// cap succeeds, re-entered until done.
    #[test]
    fn xen_guest_writes_have_no_length_cap() {
        let (mut t, _, hv) = xen_domain();
        let big = console_io::MAX_COUNT + 1;
        let line = vec![b'a'; big as usize];
        t.dom.ram.write(0x10_0000, &line).unwrap();
        assert_eq!(t.call(nr::CONSOLE_IO, [console_io::WRITE, big, 0x10_0000, 0, 0]), 0);
        // 127-byte lines, as many as the flood limit admits.
        let out = hv.lock().unwrap().clone();
        let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), crate::console::HvConsole::BURST as usize);
        assert_eq!(lines[0].len(), 5 + crate::console::HvConsole::MAX_LINE);
    }

    #[test]
    fn unknown_commands_are_enosys() {
        let (mut t, _) = domain();
        for cmd in [2, 3, u64::MAX] {
            assert_eq!(t.call(nr::CONSOLE_IO, [cmd, 1, TEST_ARG, 0, 0]), -ENOSYS, "cmd {cmd}");
        }
    }
}
