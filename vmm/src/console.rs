//! Guest console plumbing on the host side: the output sink is
//! [`xen_domain::console::ConsoleOut`] (re-exported here for the CLI);
//! this module decides whether the VMM's stdin feeds the guest console.

pub use xen_domain::console::ConsoleOut;

/// Whether the VMM's standard input is a terminal or a pipe: then the
/// guest's console reads it (console input). Files and `/dev/null` are not
/// forwarded.
pub fn stdin_is_interactive() -> bool {
    // SAFETY: `fstat` on fd 0 writes only into the local `st`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; a closed fd 0 makes fstat fail, handled below.
    if unsafe { libc::fstat(0, &mut st) } != 0 {
        return false;
    }
    let kind = st.st_mode & libc::S_IFMT;
    kind == libc::S_IFIFO || kind == libc::S_IFCHR && is_a_tty()
}

fn is_a_tty() -> bool {
    // SAFETY: `isatty` only inspects fd 0.
    unsafe { libc::isatty(0) == 1 }
}
