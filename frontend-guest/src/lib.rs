//! The PV guest.
//!
//! A `no_std` library holding everything a cooperating guest needs to talk
//! to the VMM — boot stub, hypercall wrappers, console, command line, and
//! (as they land) event channels, grants, the store client, front-end
//! drivers and the direct-paging MMU — plus the guest images built from it
//! (`src/bin`). The library logic also compiles and unit-tests on the host;
//! only [`arch`] touches the CPU. On the host, [`images`] embeds the ELF
//! images that `build.rs` produced with a nested `x86_64-unknown-none` build.
#![no_std]

#[cfg(test)]
extern crate std;

pub mod arch;
pub mod blkfront;
pub mod clock;
pub mod cmdline;
pub mod console;
pub mod cpu;
pub mod echo;
pub mod evtchn;
pub mod evtchn_fifo;
pub mod grant;
pub mod hypercall;
pub mod interrupts;
pub mod mmu;
pub mod netfront;
pub mod pages;
#[cfg(feature = "guest-image")]
pub mod rt;
pub mod smp;
pub mod store;
pub mod virtio;
pub mod xenbus;

pub use pv_abi;

/// The guest ELF images built by `build.rs`, embedded for the VMM.
#[cfg(not(target_os = "none"))]
pub mod images {
    include!(concat!(env!("OUT_DIR"), "/images.rs"));

    /// The image `vmm run` boots when no `--kernel` is given.
    pub const DEMO: &[u8] = BLK;

    /// Looks an image up by name.
    pub fn by_name(name: &str) -> Option<&'static [u8]> {
        ALL.iter().find(|(n, _)| *n == name).map(|(_, img)| *img)
    }
}
