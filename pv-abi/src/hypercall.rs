//! Hypercall numbers, sub-operations and the calling convention.
//!
//! # Calling convention
//!
//! The guest executes `out HYPERCALL_PORT, al` (an 8-bit immediate port, so
//! `dx` stays free for an argument). Registers follow Xen's x86-64 PV ABI:
//! the hypercall number in `rax`, arguments in `rdi, rsi, rdx, r10, r8`, and
//! the result back in `rax`: zero or a value on success, a negated
//! [`errno`](crate::errno) value on failure. The argument registers may be
//! changed (see "Continuations"); all other registers are preserved. Port I/O is used instead of `vmcall` because it exits to the
//! VMM on every KVM backend (including software ones where `vmcall` hangs),
//! and the VMM reads and writes the registers through `kvm_run` sync regs.
//!
//! # Continuations
//!
//! A hypercall whose cost the guest chooses (`mmu_update`, `mmuext_op`,
//! `multicall`, `GNTTABOP_copy`) does a bounded amount of work per exit.
//! When the bound is reached the VMM creates a continuation, as Xen's
//! `hypercall_create_continuation`: it moves `rip` back by
//! [`HYPERCALL_INSN_LEN`] onto the `out`, leaves the number in `rax` and
//! puts the remaining work's arguments in the argument registers, so the
//! guest re-executes the hypercall with them (interrupts and the VMM's
//! time limit get a chance in between). The guest therefore must use the
//! two-byte `out imm8, al` form and treat the argument registers as
//! clobbered. `mmu_update`/`mmuext_op` continue with
//! `count = remaining | MMU_UPDATE_PREEMPTED` and accumulate `*pdone`;
//! `multicall` continues at the first entry not finished (an entry that
//! was itself continued has its `args` rewritten in the guest's array).
//!
//! Pointer arguments are guest-physical addresses. (Xen PV guests pass
//! virtual addresses and Xen walks the guest page tables; our guests keep an
//! identity map of RAM, so the two coincide and the VMM needs no walk.)

/// The I/O port a guest writes to make a hypercall.
pub const HYPERCALL_PORT: u16 = 0xb2;

/// Length of the hypercall instruction (`out imm8, al`: `e6 b2`), by which
/// the VMM rewinds `rip` to continue a preempted hypercall.
pub const HYPERCALL_INSN_LEN: u64 = 2;

/// The I/O port of the guest-to-host event-channel doorbell: a 32-bit `out`
/// of an event-channel port number notifies that port without a userspace
/// exit when the VMM binds an ioeventfd to it.
pub const DOORBELL_PORT: u16 = 0xb4;

/// The emulated 16550 UART base port, kept only as the trap-and-emulate
/// baseline (one exit per byte).
pub const UART_COM1_PORT: u16 = 0x3f8;

/// Hypercall numbers (Xen's `__HYPERVISOR_*` values from `xen.h`).
pub mod nr {
    /// Update page-table entries (direct paging).
    pub const MMU_UPDATE: u64 = 1;
    /// Memory reservation and physmap operations (HVM/PVH guests).
    pub const MEMORY_OP: u64 = 12;
    /// Several hypercalls in one exit.
    pub const MULTICALL: u64 = 13;
    /// One-shot timer (absolute system time in ns).
    pub const SET_TIMER_OP: u64 = 15;
    /// Version and feature query.
    pub const XEN_VERSION: u64 = 17;
    /// Console read/write.
    pub const CONSOLE_IO: u64 = 18;
    /// Grant-table operations.
    pub const GRANT_TABLE_OP: u64 = 20;
    /// Extended MMU operations (pin, new baseptr, TLB flush).
    pub const MMUEXT_OP: u64 = 26;
    /// Scheduler operations (yield, block, shutdown).
    pub const SCHED_OP: u64 = 29;
    /// Per-vCPU operations (single-shot timer).
    pub const VCPU_OP: u64 = 24;
    /// Event-channel operations.
    pub const EVENT_CHANNEL_OP: u64 = 32;
    /// HVM operations (parameters, upcall vector).
    pub const HVM_OP: u64 = 34;
    /// System-wide control operations (the toolstack's; refused to guests).
    pub const SYSCTL: u64 = 35;
    /// Domain control operations (the toolstack's; refused to guests).
    pub const DOMCTL: u64 = 36;

    /// Human-readable name of a hypercall number, for statistics.
    pub const fn name(nr: u64) -> &'static str {
        match nr {
            MMU_UPDATE => "mmu_update",
            MEMORY_OP => "memory_op",
            MULTICALL => "multicall",
            SET_TIMER_OP => "set_timer_op",
            VCPU_OP => "vcpu_op",
            HVM_OP => "hvm_op",
            XEN_VERSION => "xen_version",
            CONSOLE_IO => "console_io",
            GRANT_TABLE_OP => "grant_table_op",
            MMUEXT_OP => "mmuext_op",
            SCHED_OP => "sched_op",
            EVENT_CHANNEL_OP => "event_channel_op",
            SYSCTL => "sysctl",
            DOMCTL => "domctl",
            _ => "unknown",
        }
    }
}

/// The interface versions of `sysctl` and `domctl` (`XEN_SYSCTL_INTERFACE_VERSION`
/// in `xen/include/public/sysctl.h`, `XEN_DOMCTL_INTERFACE_VERSION` in
/// `domctl.h`, both 0x15 in Xen 4.17). Xen answers a mismatch with
/// `-EACCES` before its permission check; these are tools-only headers, so
/// the layout test does not include them.
pub mod toolstack {
    /// `XEN_SYSCTL_INTERFACE_VERSION`.
    pub const SYSCTL_INTERFACE_VERSION: u32 = 0x15;
    /// `XEN_DOMCTL_INTERFACE_VERSION`.
    pub const DOMCTL_INTERFACE_VERSION: u32 = 0x15;
}

/// `console_io` commands (`CONSOLEIO_*`). Arguments: `rdi` = command,
/// `rsi` = byte count, `rdx` = guest-physical buffer address.
pub mod console_io {
    /// Write `count` bytes from the buffer to the VMM's console.
    pub const WRITE: u64 = 0;
    /// Read up to `count` bytes of console input (returns the count read).
    pub const READ: u64 = 1;
    /// Largest buffer accepted by one `console_io` call, in bytes.
    pub const MAX_COUNT: u64 = 64 * 1024;
}

/// `sched_op` commands (`SCHEDOP_*`). Arguments: `rdi` = command, `rsi` =
/// guest-physical address of the command's argument structure.
pub mod sched_op {
    /// Give up the CPU; no argument.
    pub const YIELD: u64 = 0;
    /// Block until an event is pending; no argument.
    pub const BLOCK: u64 = 1;
    /// Stop the domain; `rsi` points at a [`SchedShutdown`]. As an extension
    /// of Xen's ABI, `rdx` carries the exit status the VMM process returns.
    pub const SHUTDOWN: u64 = 2;
    /// Wait until one of a list of ports is pending or a timeout passes;
    /// `rsi` points at Xen's `struct sched_poll`.
    pub const POLL: u64 = 3;
    /// Shut another domain down; `rsi` points at a [`SchedRemoteShutdown`]
    /// (privileged: a domU gets `-EPERM`).
    pub const REMOTE_SHUTDOWN: u64 = 4;
    /// Record the reason a later shutdown reports; `rsi` points at a
    /// [`SchedShutdown`].
    pub const SHUTDOWN_CODE: u64 = 5;
    /// Create, re-arm or destroy a domain watchdog; `rsi` points at a
    /// [`SchedWatchdog`]; creation returns the watchdog's id.
    pub const WATCHDOG: u64 = 6;
    /// Pin the vCPU to a physical CPU; `rsi` points at a
    /// [`SchedPinOverride`] (hardware domain only).
    pub const PIN_OVERRIDE: u64 = 7;

    /// Argument of `SCHEDOP_shutdown` (Xen's `struct sched_shutdown`).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct SchedShutdown {
        /// One of the `SHUTDOWN_*` reasons.
        pub reason: u32,
    }
    crate::assert_layout!(SchedShutdown, size = 4, reason = 0);

    /// Argument of `SCHEDOP_remote_shutdown` (Xen's `struct
    /// sched_remote_shutdown`).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct SchedRemoteShutdown {
        /// The domain to shut down.
        pub domain_id: u16,
        /// Padding (the C struct's implicit hole).
        pub _pad: u16,
        /// One of the `SHUTDOWN_*` reasons.
        pub reason: u32,
    }
    crate::assert_layout!(SchedRemoteShutdown, size = 8, domain_id = 0, reason = 4);

    /// Argument of `SCHEDOP_watchdog` (Xen's `struct sched_watchdog`).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct SchedWatchdog {
        /// 0 creates a watchdog; otherwise the id creation returned.
        pub id: u32,
        /// Seconds until the watchdog fires; 0 destroys watchdog `id`.
        pub timeout: u32,
    }
    crate::assert_layout!(SchedWatchdog, size = 8, id = 0, timeout = 4);

    /// Argument of `SCHEDOP_pin_override` (Xen's `struct sched_pin_override`).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct SchedPinOverride {
        /// The physical CPU, negative to end the override.
        pub pcpu: i32,
    }
    crate::assert_layout!(SchedPinOverride, size = 4, pcpu = 0);

    /// Domain watchdogs per domain (Xen's `NR_DOMAIN_WATCHDOG_TIMERS`,
    /// `xen/include/xen/sched.h`).
    pub const NR_DOMAIN_WATCHDOG_TIMERS: u32 = 2;

    /// Clean power-off.
    pub const SHUTDOWN_POWEROFF: u32 = 0;
    /// Reboot requested (the VMM stops; it does not restart the guest).
    pub const SHUTDOWN_REBOOT: u32 = 1;
    /// Suspend (not supported: the VMM stops).
    pub const SHUTDOWN_SUSPEND: u32 = 2;
    /// The guest crashed (a panic); the VMM exits non-zero.
    pub const SHUTDOWN_CRASH: u32 = 3;
    /// A watchdog fired.
    pub const SHUTDOWN_WATCHDOG: u32 = 4;
}

/// `vcpu_op` commands (`VCPUOP_*`, Xen's `public/vcpu.h`). Arguments:
/// `rdi` = command, `rsi` = vCPU id, `rdx` = the command's argument.
pub mod vcpu_op {
    /// Give a stopped vCPU its first register state (PVH: a
    /// [`VcpuHvmContext`](crate::hvm::vcpu_hvm::VcpuHvmContext)).
    pub const INITIALISE: u64 = 0;
    /// Start an initialised vCPU (clear `_VPF_down`).
    pub const UP: u64 = 1;
    /// Stop a vCPU (set `_VPF_down`); the last one down powers off.
    pub const DOWN: u64 = 2;
    /// 1 if the vCPU is up, else 0.
    pub const IS_UP: u64 = 3;
    /// Start a periodic timer (`struct vcpu_set_periodic_timer`).
    pub const SET_PERIODIC_TIMER: u64 = 6;
    /// Stop the periodic timer.
    pub const STOP_PERIODIC_TIMER: u64 = 7;
    /// Arm the one-shot timer (`struct vcpu_set_singleshot_timer`).
    pub const SET_SINGLESHOT_TIMER: u64 = 8;
    /// Stop the one-shot timer.
    pub const STOP_SINGLESHOT_TIMER: u64 = 9;
    /// `VCPU_SSHOTTMR_future`: fail with `ETIME` if the deadline has passed.
    pub const SSHOTTMR_FUTURE: u32 = 1;
    /// Copy the vCPU's [`VcpuRunstateInfo`] to the argument.
    pub const GET_RUNSTATE_INFO: u64 = 4;
    /// Register a [`VcpuRegisterRunstateMemoryArea`] the hypervisor keeps
    /// the vCPU's runstate in.
    pub const REGISTER_RUNSTATE_MEMORY_AREA: u64 = 5;
    /// Move the vCPU's `vcpu_info` out of the shared-info page
    /// ([`VcpuRegisterVcpuInfo`]).
    pub const REGISTER_VCPU_INFO: u64 = 10;

    /// `RUNSTATE_running`: the vCPU runs on a physical CPU.
    pub const RUNSTATE_RUNNING: u32 = 0;
    /// `RUNSTATE_runnable`: runnable, not scheduled.
    pub const RUNSTATE_RUNNABLE: u32 = 1;
    /// `RUNSTATE_blocked`: blocked (idle), waiting for an event.
    pub const RUNSTATE_BLOCKED: u32 = 2;
    /// `RUNSTATE_offline`: neither runnable nor blocked (e.g. down).
    pub const RUNSTATE_OFFLINE: u32 = 3;

    /// `struct vcpu_runstate_info` (`public/vcpu.h`), x86-64 layout: the
    /// state, when it was entered and the time spent in each state (ns of
    /// system time).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct VcpuRunstateInfo {
        /// `RUNSTATE_*`.
        pub state: u32,
        /// Padding Xen's compiler inserts (always 0 here).
        pub pad: u32,
        /// System time the state was entered.
        pub state_entry_time: u64,
        /// Time spent in each `RUNSTATE_*`.
        pub time: [u64; 4],
    }
    crate::assert_layout!(VcpuRunstateInfo, size = 48, state = 0, state_entry_time = 8, time = 16);

    /// `struct vcpu_runstate_info` for 32-bit callers (i386 aligns
    /// `uint64_t` to 4 bytes: no padding, 44 bytes).
    #[repr(C, packed(4))]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct CompatVcpuRunstateInfo {
        /// `RUNSTATE_*`.
        pub state: u32,
        /// System time the state was entered.
        pub state_entry_time: u64,
        /// Time spent in each `RUNSTATE_*`.
        pub time: [u64; 4],
    }
    crate::assert_layout!(CompatVcpuRunstateInfo, size = 44, state = 0, state_entry_time = 4, time = 12);

    impl From<VcpuRunstateInfo> for CompatVcpuRunstateInfo {
        fn from(r: VcpuRunstateInfo) -> Self {
            CompatVcpuRunstateInfo { state: r.state, state_entry_time: r.state_entry_time, time: r.time }
        }
    }

    /// `struct vcpu_register_runstate_memory_area`: a guest handle (a
    /// guest address; 0 unregisters) in a 64-bit union, in both ABIs.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct VcpuRegisterRunstateMemoryArea {
        /// Where the hypervisor writes the [`VcpuRunstateInfo`].
        pub addr: u64,
    }
    crate::assert_layout!(VcpuRegisterRunstateMemoryArea, size = 8, addr = 0);

    /// `struct vcpu_register_vcpu_info`: the frame and offset of the new
    /// `vcpu_info` (64 bytes, within one page).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct VcpuRegisterVcpuInfo {
        /// Guest frame of the page (Xen's `mfn`: a gfn for HVM guests).
        pub mfn: u64,
        /// Byte offset in that page.
        pub offset: u32,
        /// Unused.
        pub rsvd: u32,
    }
    crate::assert_layout!(VcpuRegisterVcpuInfo, size = 16, mfn = 0, offset = 8, rsvd = 12);
}

/// `xen_version` commands (`XENVER_*`). Arguments: `rdi` = command, `rsi` =
/// guest-physical address of the command's argument (if any).
pub mod xen_version {
    /// Returns the ABI version as `(major << 16) | minor` in `rax`.
    pub const VERSION: u64 = 0;
    /// Fills a [`FeatureInfo`] at `rsi`.
    pub const GET_FEATURES: u64 = 6;

    /// Argument of `XENVER_get_features` (Xen's `xen_feature_info`).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct FeatureInfo {
        /// Which 32-bit word of the feature bitmap to return (only 0 exists).
        pub submap_idx: u32,
        /// Filled by the VMM: the `FEATURE_*` bits of that word.
        pub submap: u32,
    }
    crate::assert_layout!(FeatureInfo, size = 8, submap_idx = 0, submap = 4);

    /// The VMM implements the console hypercall.
    pub const FEATURE_CONSOLE_IO: u32 = 1 << 0;
    /// The VMM implements event channels and the shared-info page.
    pub const FEATURE_EVTCHN: u32 = 1 << 1;
    /// The VMM binds an ioeventfd doorbell to event-channel ports.
    pub const FEATURE_EVTCHN_DOORBELL: u32 = 1 << 2;
    /// The VMM implements grant tables.
    pub const FEATURE_GNTTAB: u32 = 1 << 3;
    /// The VMM implements direct paging (`mmu_update`, `mmuext_op`).
    pub const FEATURE_DIRECT_PAGING: u32 = 1 << 4;
    /// The VMM implements `multicall`.
    pub const FEATURE_MULTICALL: u32 = 1 << 5;
}

/// This ABI's version: bumped on any incompatible change to this crate.
pub const ABI_VERSION_MAJOR: u16 = 1;
/// Minor version: bumped on compatible additions.
pub const ABI_VERSION_MINOR: u16 = 0;
/// The value `XENVER_version` returns.
pub const ABI_VERSION: u32 = ((ABI_VERSION_MAJOR as u32) << 16) | ABI_VERSION_MINOR as u32;
