//! The host side of the PV framework.
//!
//! [`builder`] creates the KVM VM, lays out and loads the guest and attaches
//! its devices; [`vcpu`] enters it in 64-bit mode and runs the exit loop,
//! which only dispatches: hypercalls to `xen_domain`'s table (the
//! hypervisor side, which reaches KVM through [`kvm_platform`]), the UART
//! baseline to [`uart`]; device work belongs to the back-ends. Every
//! guest-supplied address goes through [`memory::GuestRam`]'s checked
//! copies.

pub mod bench;
pub mod boot;
pub mod builder;
pub mod console;
pub mod devices;
pub mod error;
pub mod kvm_platform;
pub mod kvm_stats;
pub mod loader;
pub mod memory;
pub mod plot;
pub mod pvh;
pub mod seccomp;
pub mod stats;
pub mod store_nodes;
pub mod uart;
pub mod vcpu;
pub mod virtio;
pub mod vm;
pub mod watchdog;

pub use error::VmmError;
pub use vm::{Kernel, Outcome, Vm, VmConfig};
