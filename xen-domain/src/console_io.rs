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
