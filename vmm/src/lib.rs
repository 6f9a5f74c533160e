//! The host side of the PV framework.
//!
//! [`builder`] creates the KVM VM, lays out and loads the guest and attaches
//! its devices; [`vcpu`] enters it in 64-bit mode and runs the exit loop,
//! which only dispatches: hypercalls to `xen_domain`'s table (the
//! hypervisor side, which reaches KVM through [`kvm_platform`]), the UART
//! baseline to [`uart`]; device work belongs to the back-ends. Every
//! guest-supplied address goes through [`memory::GuestRam`]'s checked
//! copies.

pub mod boot;
pub mod builder;
pub mod console;
pub mod control;
pub mod device_spec;
pub mod devices;
pub mod error;
pub mod hotplug;
pub mod kvm_ioctl_nr;
pub mod kvm_platform;
pub mod kvm_stats;
pub mod memory;
pub mod migration;
pub mod pvh;
pub mod seccomp;
mod smp;
pub mod snapshot;
pub mod stats;
pub mod store_nodes;
pub mod uart;
pub mod vcpu;
pub mod virtio_mmio_bus;
pub mod vm;
pub mod watchdog;

pub use device_spec::{DeviceSpec, DiskConfig, NetConfig, Transport};
pub use error::VmmError;
pub use vm::{Kernel, Outcome, Vm, VmConfig};
