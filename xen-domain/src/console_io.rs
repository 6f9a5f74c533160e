//! `console_io` (Xen's `xen/drivers/char/console.c` `do_console_io`,
//! `xen/include/public/xen.h` `CONSOLEIO_*`): the guest writes to the
//! VMM's console; there is never anything to read.

use crate::domain::{Domain, HcResult};
use pv_abi::errno::{EINVAL, ENOSYS};
use pv_abi::hypercall::console_io;

/// `console_io(cmd, count, buf)`.
pub fn console_io(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
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

/// Against `xen/include/public/xen.h` (`CONSOLEIO_write` = 0,
/// `CONSOLEIO_read` = 1) and `xen/drivers/char/console.c`
/// (`do_console_io`: `-ENOSYS` for other commands, `-EFAULT` for a buffer
/// the guest cannot access).
#[cfg(test)]
mod tests {
    use crate::console::ConsoleOut;
    use crate::fake::{TestDomain, TEST_ARG, TEST_POOL};
    use pv_abi::errno::{EFAULT, EINVAL, ENOSYS};
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

    #[test]
    fn unknown_commands_are_enosys() {
        let (mut t, _) = domain();
        for cmd in [2, 3, u64::MAX] {
            assert_eq!(t.call(nr::CONSOLE_IO, [cmd, 1, TEST_ARG, 0, 0]), -ENOSYS, "cmd {cmd}");
        }
    }
}
