//! Errors of the VMM library. Each message is one line that says what went
//! wrong and what to do; the binary prints it as is.

use std::path::PathBuf;

/// Everything that can stop the VMM before or while running a guest.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// A snapshot could not be restored (`crate::snapshot`).
    #[error("{0}")]
    Snapshot(String),
    /// `/dev/kvm` does not exist.
    #[error("/dev/kvm not found: this host has no KVM; enable virtualization and load the kvm module (modprobe kvm_intel or kvm_amd)")]
    NoKvm,
    /// `/dev/kvm` exists but cannot be opened.
    #[error("permission denied opening /dev/kvm: add your user to the 'kvm' group (sudo usermod -aG kvm $USER) or run as root")]
    KvmPermission,
    /// Any other failure opening `/dev/kvm`.
    #[error("cannot open /dev/kvm: {0}")]
    KvmOpen(#[source] kvm_ioctls::Error),
    /// A KVM ioctl failed.
    #[error("KVM {what} failed: {source}")]
    Kvm {
        /// Which operation.
        what: &'static str,
        /// The errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The host KVM lacks a capability the VMM needs.
    #[error("the host KVM lacks {0}; a Linux 5.x or later KVM is needed")]
    MissingCap(&'static str),
    /// The kernel image file does not exist.
    #[error("kernel image '{}' not found: pass an existing guest ELF with --kernel", .0.display())]
    KernelNotFound(PathBuf),
    /// The kernel image cannot be read.
    #[error("cannot read kernel image '{}': {source}", path.display())]
    KernelRead {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kernel image is not a usable ELF.
    #[error(
        "'{name}' is not a usable guest image: {why}; pass an ELF built for x86_64-unknown-none, or a Xen PVH image"
    )]
    BadElf {
        /// The file (or bundled image name).
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// A segment of the image does not fit in guest RAM.
    #[error("'{name}' does not fit in guest RAM: segment {start:#x}..{end:#x} is outside the loadable range {lo:#x}..{hi:#x}; raise --mem or relink the image")]
    ElfDoesNotFit {
        /// The file (or bundled image name).
        name: String,
        /// Segment start.
        start: u64,
        /// Segment end (exclusive).
        end: u64,
        /// Lowest loadable address.
        lo: u64,
        /// End of loadable RAM.
        hi: u64,
    },
    /// The memory size is unusable.
    #[error("--mem {given} is {why}: use a size between {min} and {max} (for example --mem 64M)")]
    BadMemSize {
        /// What the user gave.
        given: String,
        /// What is wrong.
        why: &'static str,
        /// Smallest accepted.
        min: String,
        /// Largest accepted.
        max: String,
    },
    /// The command line does not fit in start-info.
    #[error("--cmdline is {0} bytes; at most 1023 fit in start-info")]
    CmdlineTooLong(usize),
    /// Guest memory could not be set up.
    #[error("cannot allocate {bytes} bytes of guest memory: {why}")]
    GuestMemory {
        /// Size requested.
        bytes: u64,
        /// Why.
        why: String,
    },
    /// A device (console, store, echo, vbd) could not be set up.
    #[error("cannot set up the {what}: {why}")]
    Device {
        /// Which device.
        what: &'static str,
        /// Why.
        why: String,
    },
    /// A benchmark's guest did not behave as the benchmark expects.
    #[error("benchmark: {0}")]
    Bench(String),
    /// A seccomp filter could not be installed.
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// Writing boot structures into guest memory failed.
    #[error("cannot write boot structures into guest memory: {0}")]
    BootWrite(String),
    /// A host resource (eventfd, thread) could not be created.
    #[error("cannot create {0}: {1}")]
    Io(&'static str, #[source] std::io::Error),
    /// The paging mode is not one of `paging_mode`.
    #[error("unknown paging mode {0}: use native, trapped or pv")]
    BadPagingMode(u32),
    /// The vCPU count is out of range.
    #[error("{0} vCPUs: give --vcpus between 1 and 32")]
    BadVcpus(u32),
    /// A `--disk` could not be used.
    #[error(transparent)]
    Disk(#[from] backend::block::DiskError),
    /// Opening or writing the console output failed.
    #[error("console output: {0}")]
    Console(#[source] std::io::Error),
}

impl From<xen_domain::guest_memory::GuestMemoryError> for VmmError {
    fn from(e: xen_domain::guest_memory::GuestMemoryError) -> Self {
        VmmError::GuestMemory { bytes: e.bytes, why: e.why }
    }
}

impl VmmError {
    /// Wraps a device set-up failure with the device's name.
    pub fn device<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> VmmError {
        move |e| VmmError::Device { what, why: e.to_string() }
    }

    /// Wraps a KVM ioctl failure with the operation's name.
    pub fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
        move |source| VmmError::Kvm { what, source }
    }
}
