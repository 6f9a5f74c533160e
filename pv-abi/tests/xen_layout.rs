//! Layout check against Xen's real public headers (Debian's `libxen-dev`,
//! under `/usr/include/xen`).
//!
//! Builds a small C program that prints `sizeof`, `_Alignof`, `offsetof` and
//! constant values for every Xen-defined structure and constant we mirror,
//! and compares each with the Rust definition. Missing headers are a test
//! failure, not a skip.

use std::fmt::Write as _;
use std::mem::{align_of, offset_of, size_of};
use std::path::Path;
use std::process::Command;

use pv_abi::blkif::*;
use pv_abi::console::*;
use pv_abi::errno;
use pv_abi::event_channel::*;
use pv_abi::grant_table::*;
use pv_abi::hvm::{cpuid as xcpuid, hvm_op, memory_op, xen_version as xv};
use pv_abi::hypercall::{self, nr};
use pv_abi::mmu::*;
use pv_abi::multicall::*;
use pv_abi::netif::*;
use pv_abi::ring::*;
use pv_abi::shared_info::*;
use pv_abi::xenbus::XenbusState;
use pv_abi::xs_wire::*;

/// One check: a C expression and the value Rust says it has.
struct Check {
    c: String,
    rust: i128,
}

macro_rules! size {
    ($v:ident, $c:literal, $t:ty) => {
        $v.push(Check { c: format!("sizeof({})", $c), rust: size_of::<$t>() as i128 });
        $v.push(Check { c: format!("_Alignof({})", $c), rust: align_of::<$t>() as i128 });
    };
}
macro_rules! off {
    ($v:ident, $c:literal, $t:ty, $( $cf:literal => $rf:ident ),* $(,)?) => {
        $( $v.push(Check {
            c: format!("offsetof({}, {})", $c, $cf),
            rust: offset_of!($t, $rf) as i128,
        }); )*
    };
}
macro_rules! konst {
    ($v:ident, $( $c:literal => $r:expr ),* $(,)?) => {
        $( $v.push(Check { c: $c.to_string(), rust: ($r) as i128 }); )*
    };
}

fn checks() -> Vec<Check> {
    let mut v = Vec::new();

    // Hypercall numbers and sub-operations.
    konst!(v,
        "__HYPERVISOR_mmu_update" => nr::MMU_UPDATE,
        "__HYPERVISOR_multicall" => nr::MULTICALL,
        "__HYPERVISOR_xen_version" => nr::XEN_VERSION,
        "__HYPERVISOR_console_io" => nr::CONSOLE_IO,
        "__HYPERVISOR_grant_table_op" => nr::GRANT_TABLE_OP,
        "__HYPERVISOR_mmuext_op" => nr::MMUEXT_OP,
        "__HYPERVISOR_sched_op" => nr::SCHED_OP,
        "__HYPERVISOR_event_channel_op" => nr::EVENT_CHANNEL_OP,
        "__HYPERVISOR_sysctl" => nr::SYSCTL,
        "__HYPERVISOR_domctl" => nr::DOMCTL,
        "CONSOLEIO_write" => hypercall::console_io::WRITE,
        "CONSOLEIO_read" => hypercall::console_io::READ,
        "SCHEDOP_yield" => hypercall::sched_op::YIELD,
        "SCHEDOP_block" => hypercall::sched_op::BLOCK,
        "SCHEDOP_shutdown" => hypercall::sched_op::SHUTDOWN,
        "SCHEDOP_poll" => hypercall::sched_op::POLL,
        "SCHEDOP_remote_shutdown" => hypercall::sched_op::REMOTE_SHUTDOWN,
        "SCHEDOP_shutdown_code" => hypercall::sched_op::SHUTDOWN_CODE,
        "SCHEDOP_watchdog" => hypercall::sched_op::WATCHDOG,
        "SCHEDOP_pin_override" => hypercall::sched_op::PIN_OVERRIDE,
        "VCPUOP_set_periodic_timer" => hypercall::vcpu_op::SET_PERIODIC_TIMER,
        "VCPUOP_stop_periodic_timer" => hypercall::vcpu_op::STOP_PERIODIC_TIMER,
        "VCPUOP_set_singleshot_timer" => hypercall::vcpu_op::SET_SINGLESHOT_TIMER,
        "VCPUOP_stop_singleshot_timer" => hypercall::vcpu_op::STOP_SINGLESHOT_TIMER,
        "VCPU_SSHOTTMR_future" => hypercall::vcpu_op::SSHOTTMR_FUTURE,
        "VCPUOP_initialise" => hypercall::vcpu_op::INITIALISE,
        "VCPUOP_up" => hypercall::vcpu_op::UP,
        "VCPUOP_down" => hypercall::vcpu_op::DOWN,
        "VCPUOP_is_up" => hypercall::vcpu_op::IS_UP,
        "VCPUOP_get_runstate_info" => hypercall::vcpu_op::GET_RUNSTATE_INFO,
        "VCPUOP_register_runstate_memory_area" => hypercall::vcpu_op::REGISTER_RUNSTATE_MEMORY_AREA,
        "VCPUOP_register_vcpu_info" => hypercall::vcpu_op::REGISTER_VCPU_INFO,
        "RUNSTATE_running" => hypercall::vcpu_op::RUNSTATE_RUNNING,
        "RUNSTATE_runnable" => hypercall::vcpu_op::RUNSTATE_RUNNABLE,
        "RUNSTATE_blocked" => hypercall::vcpu_op::RUNSTATE_BLOCKED,
        "RUNSTATE_offline" => hypercall::vcpu_op::RUNSTATE_OFFLINE,
        "VCPU_HVM_MODE_32B" => pv_abi::hvm::vcpu_hvm::MODE_32B,
        "VCPU_HVM_MODE_64B" => pv_abi::hvm::vcpu_hvm::MODE_64B,
        "XEN_HVM_DEBUGCONS_IOPORT" => pv_abi::hvm::DEBUGCONS_PORT,
        "XEN_PVCLOCK_TSC_STABLE_BIT" => PVCLOCK_TSC_STABLE,
        "offsetof(struct shared_info, vcpu_info[0].time)" => offset_of!(VcpuInfo, time),
        "SHUTDOWN_poweroff" => hypercall::sched_op::SHUTDOWN_POWEROFF,
        "SHUTDOWN_reboot" => hypercall::sched_op::SHUTDOWN_REBOOT,
        "SHUTDOWN_suspend" => hypercall::sched_op::SHUTDOWN_SUSPEND,
        "SHUTDOWN_crash" => hypercall::sched_op::SHUTDOWN_CRASH,
        "SHUTDOWN_watchdog" => hypercall::sched_op::SHUTDOWN_WATCHDOG,
        "XENVER_version" => hypercall::xen_version::VERSION,
        "XENVER_get_features" => hypercall::xen_version::GET_FEATURES,
    );
    size!(v, "struct sched_shutdown", hypercall::sched_op::SchedShutdown);
    off!(v, "struct sched_shutdown", hypercall::sched_op::SchedShutdown, "reason" => reason);
    size!(v, "struct sched_remote_shutdown", hypercall::sched_op::SchedRemoteShutdown);
    off!(v, "struct sched_remote_shutdown", hypercall::sched_op::SchedRemoteShutdown,
        "domain_id" => domain_id, "reason" => reason);
    size!(v, "struct sched_watchdog", hypercall::sched_op::SchedWatchdog);
    off!(v, "struct sched_watchdog", hypercall::sched_op::SchedWatchdog, "id" => id, "timeout" => timeout);
    size!(v, "struct sched_pin_override", hypercall::sched_op::SchedPinOverride);
    off!(v, "struct sched_pin_override", hypercall::sched_op::SchedPinOverride, "pcpu" => pcpu);
    size!(v, "struct xen_feature_info", hypercall::xen_version::FeatureInfo);
    off!(v, "struct xen_feature_info", hypercall::xen_version::FeatureInfo,
        "submap_idx" => submap_idx, "submap" => submap);

    // Errno values.
    konst!(v,
        "XEN_EPERM" => errno::EPERM, "XEN_ENOENT" => errno::ENOENT, "XEN_EIO" => errno::EIO, "XEN_ENXIO" => errno::ENXIO,
        "XEN_E2BIG" => errno::E2BIG, "XEN_EBADF" => errno::EBADF, "XEN_EAGAIN" => errno::EAGAIN,
        "XEN_ENOMEM" => errno::ENOMEM, "XEN_EACCES" => errno::EACCES,
        "XEN_EFAULT" => errno::EFAULT, "XEN_EBUSY" => errno::EBUSY,
        "XEN_EEXIST" => errno::EEXIST, "XEN_ENODEV" => errno::ENODEV,
        "XEN_EINVAL" => errno::EINVAL, "XEN_ENOSPC" => errno::ENOSPC,
        "XEN_EROFS" => errno::EROFS, "XEN_ERANGE" => errno::ERANGE,
        "XEN_ENOSYS" => errno::ENOSYS, "XEN_EOPNOTSUPP" => errno::EOPNOTSUPP,
        "XEN_ETIME" => errno::ETIME, "XEN_ESRCH" => errno::ESRCH,
    );

    // Event channels.
    konst!(v,
        "EVTCHNOP_bind_interdomain" => EVTCHNOP_BIND_INTERDOMAIN,
        "EVTCHNOP_bind_virq" => EVTCHNOP_BIND_VIRQ,
        "EVTCHNOP_bind_pirq" => EVTCHNOP_BIND_PIRQ,
        "EVTCHNOP_close" => EVTCHNOP_CLOSE,
        "EVTCHNOP_send" => EVTCHNOP_SEND,
        "EVTCHNOP_status" => EVTCHNOP_STATUS,
        "EVTCHNOP_alloc_unbound" => EVTCHNOP_ALLOC_UNBOUND,
        "EVTCHNOP_bind_ipi" => EVTCHNOP_BIND_IPI,
        "EVTCHNOP_bind_vcpu" => EVTCHNOP_BIND_VCPU,
        "EVTCHNOP_unmask" => EVTCHNOP_UNMASK,
        "EVTCHNSTAT_closed" => EVTCHNSTAT_CLOSED,
        "EVTCHNSTAT_unbound" => EVTCHNSTAT_UNBOUND,
        "EVTCHNSTAT_interdomain" => EVTCHNSTAT_INTERDOMAIN,
        "EVTCHNSTAT_pirq" => EVTCHNSTAT_PIRQ,
        "EVTCHNSTAT_virq" => EVTCHNSTAT_VIRQ,
        "EVTCHNSTAT_ipi" => EVTCHNSTAT_IPI,
        "DOMID_SELF" => DOMID_SELF,
        "EVTCHN_2L_NR_CHANNELS" => EVTCHN_2L_NR_CHANNELS,
        "sizeof(evtchn_port_t)" => size_of::<EvtchnPort>(),
        "sizeof(domid_t)" => size_of::<DomId>(),
        "EVTCHNOP_reset" => EVTCHNOP_RESET,
        "EVTCHNOP_init_control" => EVTCHNOP_INIT_CONTROL,
        "EVTCHNOP_expand_array" => EVTCHNOP_EXPAND_ARRAY,
        "EVTCHNOP_set_priority" => EVTCHNOP_SET_PRIORITY,
        "EVTCHN_FIFO_PRIORITY_MAX" => EVTCHN_FIFO_PRIORITY_MAX,
        "EVTCHN_FIFO_PRIORITY_DEFAULT" => EVTCHN_FIFO_PRIORITY_DEFAULT,
        "EVTCHN_FIFO_PRIORITY_MIN" => EVTCHN_FIFO_PRIORITY_MIN,
        "EVTCHN_FIFO_MAX_QUEUES" => EVTCHN_FIFO_MAX_QUEUES,
        "EVTCHN_FIFO_PENDING" => EVTCHN_FIFO_PENDING,
        "EVTCHN_FIFO_MASKED" => EVTCHN_FIFO_MASKED,
        "EVTCHN_FIFO_LINKED" => EVTCHN_FIFO_LINKED,
        "EVTCHN_FIFO_BUSY" => EVTCHN_FIFO_BUSY,
        "EVTCHN_FIFO_LINK_BITS" => EVTCHN_FIFO_LINK_BITS,
        "EVTCHN_FIFO_LINK_MASK" => EVTCHN_FIFO_LINK_MASK,
        "EVTCHN_FIFO_NR_CHANNELS" => EVTCHN_FIFO_NR_CHANNELS,
        "4096 / sizeof(event_word_t)" => EVTCHN_FIFO_EVENT_WORDS_PER_PAGE,
    );
    size!(v, "struct evtchn_init_control", EvtchnInitControl);
    off!(v, "struct evtchn_init_control", EvtchnInitControl,
        "control_gfn" => control_gfn, "offset" => offset, "vcpu" => vcpu, "link_bits" => link_bits);
    size!(v, "struct evtchn_expand_array", EvtchnExpandArray);
    size!(v, "struct evtchn_set_priority", EvtchnSetPriority);
    off!(v, "struct evtchn_set_priority", EvtchnSetPriority, "port" => port, "priority" => priority);
    size!(v, "struct evtchn_fifo_control_block", EvtchnFifoControlBlock);
    off!(v, "struct evtchn_fifo_control_block", EvtchnFifoControlBlock,
        "ready" => ready, "head" => head);
    size!(v, "struct evtchn_alloc_unbound", EvtchnAllocUnbound);
    off!(v, "struct evtchn_alloc_unbound", EvtchnAllocUnbound,
        "dom" => dom, "remote_dom" => remote_dom, "port" => port);
    size!(v, "struct evtchn_bind_interdomain", EvtchnBindInterdomain);
    off!(v, "struct evtchn_bind_interdomain", EvtchnBindInterdomain,
        "remote_dom" => remote_dom, "remote_port" => remote_port, "local_port" => local_port);
    size!(v, "struct evtchn_bind_ipi", EvtchnBindIpi);
    off!(v, "struct evtchn_bind_ipi", EvtchnBindIpi, "vcpu" => vcpu, "port" => port);
    size!(v, "struct evtchn_bind_vcpu", EvtchnBindVcpu);
    off!(v, "struct evtchn_bind_vcpu", EvtchnBindVcpu, "port" => port, "vcpu" => vcpu);
    size!(v, "struct evtchn_close", EvtchnClose);
    size!(v, "struct evtchn_send", EvtchnSend);
    size!(v, "struct evtchn_unmask", EvtchnUnmask);
    size!(v, "struct evtchn_status", EvtchnStatus);
    off!(v, "struct evtchn_status", EvtchnStatus,
        "dom" => dom, "port" => port, "status" => status, "vcpu" => vcpu, "u" => u);
    v.push(Check {
        c: "offsetof(struct evtchn_status, u.interdomain.port) - offsetof(struct evtchn_status, u)".into(),
        rust: offset_of!(EvtchnStatusInterdomain, port) as i128,
    });

    // Shared info.
    size!(v, "struct vcpu_time_info", VcpuTimeInfo);
    off!(v, "struct vcpu_time_info", VcpuTimeInfo,
        "version" => version, "pad0" => pad0, "tsc_timestamp" => tsc_timestamp,
        "system_time" => system_time, "tsc_to_system_mul" => tsc_to_system_mul,
        "tsc_shift" => tsc_shift, "flags" => flags, "pad1" => pad1);
    size!(v, "struct arch_vcpu_info", ArchVcpuInfo);
    off!(v, "struct arch_vcpu_info", ArchVcpuInfo, "cr2" => cr2, "pad" => pad);
    size!(v, "struct vcpu_info", VcpuInfo);
    off!(v, "struct vcpu_info", VcpuInfo,
        "evtchn_upcall_pending" => upcall_pending, "evtchn_upcall_mask" => upcall_mask,
        "evtchn_pending_sel" => evtchn_pending_sel, "arch" => arch, "time" => time);
    size!(v, "struct arch_shared_info", ArchSharedInfo);
    off!(v, "struct arch_shared_info", ArchSharedInfo,
        "max_pfn" => max_pfn, "pfn_to_mfn_frame_list_list" => pfn_to_mfn_frame_list_list,
        "nmi_reason" => nmi_reason, "p2m_cr3" => p2m_cr3, "p2m_vaddr" => p2m_vaddr,
        "p2m_generation" => p2m_generation);
    size!(v, "struct shared_info", SharedInfo);
    off!(v, "struct shared_info", SharedInfo,
        "vcpu_info" => vcpu_info, "evtchn_pending" => evtchn_pending,
        "evtchn_mask" => evtchn_mask, "wc_version" => wc_version, "wc_sec" => wc_sec,
        "wc_nsec" => wc_nsec, "wc_sec_hi" => wc_sec_hi, "arch" => arch);
    konst!(v,
        "XEN_LEGACY_MAX_VCPUS" => MAX_LEGACY_VCPUS,
        "sizeof(((struct shared_info *)0)->evtchn_pending) / sizeof(xen_ulong_t)" => EVTCHN_WORDS,
        "sizeof(xen_ulong_t)" => LAYOUT_64.word_bytes,
        "sizeof(((struct shared_info *)0)->evtchn_pending) * 8" => LAYOUT_64.nr_channels,
        "offsetof(struct shared_info, evtchn_pending)" => LAYOUT_64.pending,
        "offsetof(struct shared_info, evtchn_mask)" => LAYOUT_64.mask,
        "offsetof(struct shared_info, vcpu_info[0].evtchn_pending_sel)" => LAYOUT_64.pending_sel,
        "offsetof(struct shared_info, wc_version)" => LAYOUT_64.wc_version,
        "offsetof(struct shared_info, wc_sec_hi)" => LAYOUT_64.wc_sec_hi,
    );

    // Grant tables.
    konst!(v,
        "GNTTABOP_map_grant_ref" => GNTTABOP_MAP_GRANT_REF,
        "GNTTABOP_unmap_grant_ref" => GNTTABOP_UNMAP_GRANT_REF,
        "GNTTABOP_setup_table" => GNTTABOP_SETUP_TABLE,
        "GNTTABOP_copy" => GNTTABOP_COPY,
        "GNTTABOP_query_size" => GNTTABOP_QUERY_SIZE,
        "GTF_invalid" => GTF_INVALID, "GTF_permit_access" => GTF_PERMIT_ACCESS,
        "GTF_accept_transfer" => GTF_ACCEPT_TRANSFER, "GTF_transitive" => GTF_TRANSITIVE,
        "GTF_type_mask" => GTF_TYPE_MASK, "GTF_readonly" => GTF_READONLY,
        "GTF_reading" => GTF_READING, "GTF_writing" => GTF_WRITING,
        "GTF_PWT" => GTF_PWT, "GTF_PCD" => GTF_PCD, "GTF_PAT" => GTF_PAT,
        "GTF_sub_page" => GTF_SUB_PAGE,
        "GNTCOPY_source_gref" => GNTCOPY_SOURCE_GREF, "GNTCOPY_dest_gref" => GNTCOPY_DEST_GREF,
        "GNTST_okay" => GNTST_OKAY, "GNTST_general_error" => GNTST_GENERAL_ERROR,
        "GNTST_bad_domain" => GNTST_BAD_DOMAIN, "GNTST_bad_gntref" => GNTST_BAD_GNTREF,
        "GNTST_bad_handle" => GNTST_BAD_HANDLE, "GNTST_bad_virt_addr" => GNTST_BAD_VIRT_ADDR,
        "GNTST_bad_dev_addr" => GNTST_BAD_DEV_ADDR,
        "GNTST_no_device_space" => GNTST_NO_DEVICE_SPACE,
        "GNTST_permission_denied" => GNTST_PERMISSION_DENIED,
        "GNTST_bad_page" => GNTST_BAD_PAGE, "GNTST_bad_copy_arg" => GNTST_BAD_COPY_ARG,
        "GNTST_address_too_big" => GNTST_ADDRESS_TOO_BIG, "GNTST_eagain" => GNTST_EAGAIN,
        "GNTST_no_space" => GNTST_NO_SPACE,
        "sizeof(grant_ref_t)" => size_of::<GrantRef>(),
    );
    size!(v, "struct grant_entry_v1", GrantEntryV1);
    off!(v, "struct grant_entry_v1", GrantEntryV1, "flags" => flags, "domid" => domid, "frame" => frame);
    size!(v, "struct gnttab_setup_table", GnttabSetupTable);
    off!(v, "struct gnttab_setup_table", GnttabSetupTable,
        "dom" => dom, "nr_frames" => nr_frames, "status" => status, "frame_list" => frame_list);
    size!(v, "struct gnttab_query_size", GnttabQuerySize);
    off!(v, "struct gnttab_query_size", GnttabQuerySize,
        "dom" => dom, "nr_frames" => nr_frames, "max_nr_frames" => max_nr_frames, "status" => status);
    size!(v, "struct gnttab_copy_ptr", GnttabCopyPtr);
    off!(v, "struct gnttab_copy_ptr", GnttabCopyPtr, "u" => u, "domid" => domid, "offset" => offset);
    size!(v, "struct gnttab_copy", GnttabCopy);
    off!(v, "struct gnttab_copy", GnttabCopy,
        "source" => source, "dest" => dest, "len" => len, "flags" => flags, "status" => status);

    // The shared-ring header.
    off!(v, "struct blkif_sring", SringHeader,
        "req_prod" => req_prod, "req_event" => req_event, "rsp_prod" => rsp_prod,
        "rsp_event" => rsp_event, "pvt" => pvt, "__pad" => pad);
    konst!(v,
        "offsetof(struct blkif_sring, ring)" => SRING_HEADER_SIZE,
        "sizeof(RING_IDX)" => size_of::<RingIdx>(),
        "sizeof(union blkif_sring_entry)" => slot_size::<BlkifRequest, BlkifResponse>(),
        "__CONST_RING_SIZE(blkif, 4096)" => BLKIF_RING_SIZE,
        "__CONST_RING_SIZE(blkif, 8192)" => ring_size(8192, slot_size::<BlkifRequest, BlkifResponse>()),
        "sizeof(union netif_tx_sring_entry)" => slot_size::<NetifTxRequest, NetifTxResponse>(),
        "__CONST_RING_SIZE(netif_tx, 4096)" => NET_TX_RING_SIZE,
        "sizeof(union netif_rx_sring_entry)" => slot_size::<NetifRxRequest, NetifRxResponse>(),
        "__CONST_RING_SIZE(netif_rx, 4096)" => NET_RX_RING_SIZE,
    );

    // blkif.
    konst!(v,
        "BLKIF_OP_READ" => BLKIF_OP_READ, "BLKIF_OP_WRITE" => BLKIF_OP_WRITE,
        "BLKIF_OP_WRITE_BARRIER" => BLKIF_OP_WRITE_BARRIER,
        "BLKIF_OP_FLUSH_DISKCACHE" => BLKIF_OP_FLUSH_DISKCACHE,
        "BLKIF_OP_RESERVED_1" => BLKIF_OP_RESERVED_1,
        "BLKIF_OP_DISCARD" => BLKIF_OP_DISCARD, "BLKIF_OP_INDIRECT" => BLKIF_OP_INDIRECT,
        "BLKIF_MAX_SEGMENTS_PER_REQUEST" => BLKIF_MAX_SEGMENTS_PER_REQUEST,
        "BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST" => BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST,
        "BLKIF_DISCARD_SECURE" => BLKIF_DISCARD_SECURE,
        "BLKIF_RSP_OKAY" => BLKIF_RSP_OKAY, "BLKIF_RSP_ERROR" => BLKIF_RSP_ERROR,
        "BLKIF_RSP_EOPNOTSUPP" => BLKIF_RSP_EOPNOTSUPP,
        "sizeof(blkif_vdev_t)" => size_of::<BlkifVdev>(),
        "sizeof(blkif_sector_t)" => size_of::<BlkifSector>(),
    );
    size!(v, "struct blkif_request_segment", BlkifRequestSegment);
    off!(v, "struct blkif_request_segment", BlkifRequestSegment,
        "gref" => gref, "first_sect" => first_sect, "last_sect" => last_sect);
    size!(v, "struct blkif_request", BlkifRequest);
    off!(v, "struct blkif_request", BlkifRequest,
        "operation" => operation, "nr_segments" => nr_segments, "handle" => handle,
        "id" => id, "sector_number" => sector_number, "seg" => seg);
    size!(v, "struct blkif_request_discard", BlkifRequestDiscard);
    off!(v, "struct blkif_request_discard", BlkifRequestDiscard,
        "operation" => operation, "flag" => flag, "handle" => handle, "id" => id,
        "sector_number" => sector_number, "nr_sectors" => nr_sectors);
    size!(v, "struct blkif_request_indirect", BlkifRequestIndirect);
    off!(v, "struct blkif_request_indirect", BlkifRequestIndirect,
        "operation" => operation, "indirect_op" => indirect_op, "nr_segments" => nr_segments,
        "id" => id, "sector_number" => sector_number, "handle" => handle,
        "indirect_grefs" => indirect_grefs);
    size!(v, "struct blkif_response", BlkifResponse);
    off!(v, "struct blkif_response", BlkifResponse,
        "id" => id, "operation" => operation, "status" => status);

    // netif.
    konst!(v,
        "NETTXF_csum_blank" => NETTXF_CSUM_BLANK, "NETTXF_data_validated" => NETTXF_DATA_VALIDATED,
        "NETTXF_more_data" => NETTXF_MORE_DATA, "NETTXF_extra_info" => NETTXF_EXTRA_INFO,
        "NETRXF_data_validated" => NETRXF_DATA_VALIDATED, "NETRXF_csum_blank" => NETRXF_CSUM_BLANK,
        "NETRXF_more_data" => NETRXF_MORE_DATA, "NETRXF_extra_info" => NETRXF_EXTRA_INFO,
        "NETRXF_gso_prefix" => NETRXF_GSO_PREFIX,
        "NETIF_RSP_DROPPED" => NETIF_RSP_DROPPED, "NETIF_RSP_ERROR" => NETIF_RSP_ERROR,
        "NETIF_RSP_OKAY" => NETIF_RSP_OKAY, "NETIF_RSP_NULL" => NETIF_RSP_NULL,
        "XEN_NETIF_EXTRA_TYPE_NONE" => XEN_NETIF_EXTRA_TYPE_NONE,
        "XEN_NETIF_EXTRA_TYPE_GSO" => XEN_NETIF_EXTRA_TYPE_GSO,
        "XEN_NETIF_EXTRA_TYPE_MCAST_ADD" => XEN_NETIF_EXTRA_TYPE_MCAST_ADD,
        "XEN_NETIF_EXTRA_TYPE_MCAST_DEL" => XEN_NETIF_EXTRA_TYPE_MCAST_DEL,
        "XEN_NETIF_EXTRA_TYPE_HASH" => XEN_NETIF_EXTRA_TYPE_HASH,
        "XEN_NETIF_EXTRA_FLAG_MORE" => XEN_NETIF_EXTRA_FLAG_MORE,
    );
    size!(v, "struct netif_tx_request", NetifTxRequest);
    off!(v, "struct netif_tx_request", NetifTxRequest,
        "gref" => gref, "offset" => offset, "flags" => flags, "id" => id, "size" => size);
    size!(v, "struct netif_tx_response", NetifTxResponse);
    off!(v, "struct netif_tx_response", NetifTxResponse, "id" => id, "status" => status);
    size!(v, "struct netif_rx_request", NetifRxRequest);
    off!(v, "struct netif_rx_request", NetifRxRequest, "id" => id, "pad" => pad, "gref" => gref);
    size!(v, "struct netif_rx_response", NetifRxResponse);
    off!(v, "struct netif_rx_response", NetifRxResponse,
        "id" => id, "offset" => offset, "flags" => flags, "status" => status);
    size!(v, "struct netif_extra_info", NetifExtraInfo);
    off!(v, "struct netif_extra_info", NetifExtraInfo, "type" => type_, "flags" => flags, "u" => u);

    // Console.
    size!(v, "struct xencons_interface", XenconsInterface);
    off!(v, "struct xencons_interface", XenconsInterface,
        "in" => in_, "out" => out, "in_cons" => in_cons, "in_prod" => in_prod,
        "out_cons" => out_cons, "out_prod" => out_prod);

    // Store.
    konst!(v,
        "XS_CONTROL" => XS_CONTROL, "XS_DIRECTORY" => XS_DIRECTORY, "XS_READ" => XS_READ,
        "XS_GET_PERMS" => XS_GET_PERMS, "XS_WATCH" => XS_WATCH, "XS_UNWATCH" => XS_UNWATCH,
        "XS_TRANSACTION_START" => XS_TRANSACTION_START,
        "XS_TRANSACTION_END" => XS_TRANSACTION_END, "XS_INTRODUCE" => XS_INTRODUCE,
        "XS_RELEASE" => XS_RELEASE, "XS_GET_DOMAIN_PATH" => XS_GET_DOMAIN_PATH,
        "XS_WRITE" => XS_WRITE, "XS_MKDIR" => XS_MKDIR, "XS_RM" => XS_RM,
        "XS_SET_PERMS" => XS_SET_PERMS, "XS_WATCH_EVENT" => XS_WATCH_EVENT,
        "XS_ERROR" => XS_ERROR, "XS_IS_DOMAIN_INTRODUCED" => XS_IS_DOMAIN_INTRODUCED,
        "XS_RESUME" => XS_RESUME, "XS_SET_TARGET" => XS_SET_TARGET,
        "XS_RESET_WATCHES" => XS_RESET_WATCHES, "XS_DIRECTORY_PART" => XS_DIRECTORY_PART,
        "XS_TYPE_COUNT" => XS_TYPE_COUNT, "XS_INVALID" => XS_INVALID,
        "XS_WATCH_PATH" => XS_WATCH_PATH, "XS_WATCH_TOKEN" => XS_WATCH_TOKEN,
        "XENSTORE_RING_SIZE" => XENSTORE_RING_SIZE,
        "XENSTORE_PAYLOAD_MAX" => XENSTORE_PAYLOAD_MAX,
        "XENSTORE_ABS_PATH_MAX" => XENSTORE_ABS_PATH_MAX,
        "XENSTORE_REL_PATH_MAX" => XENSTORE_REL_PATH_MAX,
        "XENSTORE_SERVER_FEATURE_RECONNECTION" => XENSTORE_SERVER_FEATURE_RECONNECTION,
        "XENSTORE_SERVER_FEATURE_ERROR" => XENSTORE_SERVER_FEATURE_ERROR,
        "XENSTORE_CONNECTED" => XENSTORE_CONNECTED, "XENSTORE_RECONNECT" => XENSTORE_RECONNECT,
        "XENSTORE_ERROR_NONE" => XENSTORE_ERROR_NONE, "XENSTORE_ERROR_COMM" => XENSTORE_ERROR_COMM,
        "XENSTORE_ERROR_RINGIDX" => XENSTORE_ERROR_RINGIDX,
        "XENSTORE_ERROR_PROTO" => XENSTORE_ERROR_PROTO,
    );
    size!(v, "struct xsd_sockmsg", XsdSockmsg);
    off!(v, "struct xsd_sockmsg", XsdSockmsg,
        "type" => type_, "req_id" => req_id, "tx_id" => tx_id, "len" => len);
    size!(v, "struct xenstore_domain_interface", XenstoreDomainInterface);
    off!(v, "struct xenstore_domain_interface", XenstoreDomainInterface,
        "req" => req, "rsp" => rsp, "req_cons" => req_cons, "req_prod" => req_prod,
        "rsp_cons" => rsp_cons, "rsp_prod" => rsp_prod, "server_features" => server_features,
        "connection" => connection, "error" => error);

    // Xenbus states.
    konst!(v,
        "XenbusStateUnknown" => XenbusState::Unknown.as_u32(),
        "XenbusStateInitialising" => XenbusState::Initialising.as_u32(),
        "XenbusStateInitWait" => XenbusState::InitWait.as_u32(),
        "XenbusStateInitialised" => XenbusState::Initialised.as_u32(),
        "XenbusStateConnected" => XenbusState::Connected.as_u32(),
        "XenbusStateClosing" => XenbusState::Closing.as_u32(),
        "XenbusStateClosed" => XenbusState::Closed.as_u32(),
        "XenbusStateReconfiguring" => XenbusState::Reconfiguring.as_u32(),
        "XenbusStateReconfigured" => XenbusState::Reconfigured.as_u32(),
    );

    // Direct paging and multicall.
    konst!(v,
        "MMU_NORMAL_PT_UPDATE" => MMU_NORMAL_PT_UPDATE,
        "MMU_MACHPHYS_UPDATE" => MMU_MACHPHYS_UPDATE,
        "MMU_PT_UPDATE_PRESERVE_AD" => MMU_PT_UPDATE_PRESERVE_AD,
        "MMU_PT_UPDATE_NO_TRANSLATE" => MMU_PT_UPDATE_NO_TRANSLATE,
        "MMUEXT_PIN_L1_TABLE" => MMUEXT_PIN_L1_TABLE, "MMUEXT_PIN_L2_TABLE" => MMUEXT_PIN_L2_TABLE,
        "MMUEXT_PIN_L3_TABLE" => MMUEXT_PIN_L3_TABLE, "MMUEXT_PIN_L4_TABLE" => MMUEXT_PIN_L4_TABLE,
        "MMUEXT_UNPIN_TABLE" => MMUEXT_UNPIN_TABLE, "MMUEXT_NEW_BASEPTR" => MMUEXT_NEW_BASEPTR,
        "MMUEXT_TLB_FLUSH_LOCAL" => MMUEXT_TLB_FLUSH_LOCAL,
        "MMUEXT_INVLPG_LOCAL" => MMUEXT_INVLPG_LOCAL,
        "MMUEXT_TLB_FLUSH_MULTI" => MMUEXT_TLB_FLUSH_MULTI,
        "MMUEXT_INVLPG_MULTI" => MMUEXT_INVLPG_MULTI,
        "MMUEXT_TLB_FLUSH_ALL" => MMUEXT_TLB_FLUSH_ALL, "MMUEXT_INVLPG_ALL" => MMUEXT_INVLPG_ALL,
        "MMUEXT_FLUSH_CACHE" => MMUEXT_FLUSH_CACHE, "MMUEXT_SET_LDT" => MMUEXT_SET_LDT,
        "MMUEXT_NEW_USER_BASEPTR" => MMUEXT_NEW_USER_BASEPTR,
        "MMUEXT_CLEAR_PAGE" => MMUEXT_CLEAR_PAGE, "MMUEXT_COPY_PAGE" => MMUEXT_COPY_PAGE,
        "MMUEXT_FLUSH_CACHE_GLOBAL" => MMUEXT_FLUSH_CACHE_GLOBAL,
        "MMUEXT_MARK_SUPER" => MMUEXT_MARK_SUPER, "MMUEXT_UNMARK_SUPER" => MMUEXT_UNMARK_SUPER,
    );
    size!(v, "struct mmu_update", MmuUpdate);
    off!(v, "struct mmu_update", MmuUpdate, "ptr" => ptr, "val" => val);
    size!(v, "struct mmuext_op", MmuextOp);
    off!(v, "struct mmuext_op", MmuextOp, "cmd" => cmd, "arg1" => arg1, "arg2" => arg2);
    size!(v, "struct multicall_entry", MulticallEntry);
    off!(v, "struct multicall_entry", MulticallEntry, "op" => op, "result" => result, "args" => args);
    hvm_checks(&mut v);
    v
}

/// The HVM/PVH interface (64-bit layouts and constants).
fn hvm_checks(v: &mut Vec<Check>) {
    konst!(v,
        "__HYPERVISOR_memory_op" => nr::MEMORY_OP,
        "__HYPERVISOR_set_timer_op" => nr::SET_TIMER_OP,
        "__HYPERVISOR_vcpu_op" => nr::VCPU_OP,
        "__HYPERVISOR_hvm_op" => nr::HVM_OP,
        "XENMEM_current_reservation" => memory_op::CURRENT_RESERVATION,
        "XENMEM_maximum_reservation" => memory_op::MAXIMUM_RESERVATION,
        "XENMEM_add_to_physmap" => memory_op::ADD_TO_PHYSMAP,
        "XENMEM_memory_map" => memory_op::MEMORY_MAP,
        "XENMEM_set_memory_map" => memory_op::SET_MEMORY_MAP,
        "XENMEM_remove_from_physmap" => memory_op::REMOVE_FROM_PHYSMAP,
        "XENMAPSPACE_shared_info" => memory_op::XENMAPSPACE_SHARED_INFO,
        "XENMAPSPACE_grant_table" => memory_op::XENMAPSPACE_GRANT_TABLE,
        "XENMAPIDX_grant_table_status" => memory_op::XENMAPIDX_GRANT_TABLE_STATUS,
        "HVMOP_set_param" => hvm_op::SET_PARAM,
        "HVMOP_get_param" => hvm_op::GET_PARAM,
        "HVMOP_set_evtchn_upcall_vector" => hvm_op::SET_EVTCHN_UPCALL_VECTOR,
        "HVM_PARAM_CALLBACK_IRQ" => hvm_op::PARAM_CALLBACK_IRQ,
        "HVM_PARAM_STORE_PFN" => hvm_op::PARAM_STORE_PFN,
        "HVM_PARAM_STORE_EVTCHN" => hvm_op::PARAM_STORE_EVTCHN,
        "HVM_PARAM_CONSOLE_PFN" => hvm_op::PARAM_CONSOLE_PFN,
        "HVM_PARAM_CONSOLE_EVTCHN" => hvm_op::PARAM_CONSOLE_EVTCHN,
        "HVM_NR_PARAMS" => hvm_op::NR_PARAMS,
        "HVM_PARAM_CALLBACK_TYPE_VECTOR" => hvm_op::CALLBACK_TYPE_VECTOR,
        "(HVM_PARAM_CALLBACK_IRQ_TYPE_MASK >> 56) & 0xff" => 0xff,
        "HVM_PARAM_CALLBACK_IRQ_TYPE_MASK & -HVM_PARAM_CALLBACK_IRQ_TYPE_MASK" => 1u64 << hvm_op::CALLBACK_TYPE_SHIFT,
        "XENVER_extraversion" => xv::EXTRAVERSION,
        "XENVER_compile_info" => xv::COMPILE_INFO,
        "XENVER_capabilities" => xv::CAPABILITIES,
        "XENVER_changeset" => xv::CHANGESET,
        "XENVER_pagesize" => xv::PAGESIZE,
        "sizeof(struct xen_compile_info)" => xv::COMPILE_INFO_SIZE,
        "XENFEAT_writable_page_tables" => xv::XENFEAT_WRITABLE_PAGE_TABLES,
        "XENFEAT_writable_descriptor_tables" => xv::XENFEAT_WRITABLE_DESCRIPTOR_TABLES,
        "XENFEAT_auto_translated_physmap" => xv::XENFEAT_AUTO_TRANSLATED_PHYSMAP,
        "XENFEAT_supervisor_mode_kernel" => xv::XENFEAT_SUPERVISOR_MODE_KERNEL,
        "XENFEAT_hvm_callback_vector" => xv::XENFEAT_HVM_CALLBACK_VECTOR,
        "XENFEAT_hvm_safe_pvclock" => xv::XENFEAT_HVM_SAFE_PVCLOCK,
        "XENFEAT_hvm_pirqs" => xv::XENFEAT_HVM_PIRQS,
        "XEN_CPUID_FIRST_LEAF" => xcpuid::XEN_CPUID_BASE,
        "XEN_CPUID_FIRST_LEAF + XEN_CPUID_MAX_NUM_LEAVES" => xcpuid::XEN_CPUID_MAX,
        "XEN_HVM_CPUID_VCPU_ID_PRESENT" => xcpuid::XEN_HVM_CPUID_VCPU_ID_PRESENT,
        "XEN_HVM_CPUID_DOMID_PRESENT" => xcpuid::XEN_HVM_CPUID_DOMID_PRESENT,
        "XEN_HVM_CPUID_UPCALL_VECTOR" => xcpuid::XEN_HVM_CPUID_UPCALL_VECTOR,
        "XEN_ELFNOTE_PHYS32_ENTRY" => pv_abi::hvm::XEN_ELFNOTE_PHYS32_ENTRY,
        "VIRQ_TIMER" => pv_abi::hvm::VIRQ_TIMER,
        "GNTTABOP_dump_table" => GNTTABOP_DUMP_TABLE,
        "GNTTABOP_set_version" => GNTTABOP_SET_VERSION,
        "GNTTABOP_get_version" => GNTTABOP_GET_VERSION,
    );
    size!(v, "struct xen_add_to_physmap", memory_op::AddToPhysmap);
    off!(v, "struct xen_add_to_physmap", memory_op::AddToPhysmap,
        "domid" => domid, "size" => size, "space" => space, "idx" => idx, "gpfn" => gpfn);
    size!(v, "struct xen_remove_from_physmap", memory_op::RemoveFromPhysmap);
    off!(v, "struct xen_remove_from_physmap", memory_op::RemoveFromPhysmap, "domid" => domid, "gpfn" => gpfn);
    size!(v, "struct xen_memory_map", memory_op::MemoryMap);
    off!(v, "struct xen_memory_map", memory_op::MemoryMap, "nr_entries" => nr_entries, "buffer" => buffer);
    size!(v, "struct xen_hvm_param", hvm_op::HvmParam);
    {
        use pv_abi::hypercall::vcpu_op::*;
        size!(v, "struct vcpu_runstate_info", VcpuRunstateInfo);
        off!(v, "struct vcpu_runstate_info", VcpuRunstateInfo, "state" => state,
            "state_entry_time" => state_entry_time, "time" => time);
        size!(v, "struct vcpu_register_runstate_memory_area", VcpuRegisterRunstateMemoryArea);
        off!(v, "struct vcpu_register_runstate_memory_area", VcpuRegisterRunstateMemoryArea, "addr" => addr);
        size!(v, "struct vcpu_register_vcpu_info", VcpuRegisterVcpuInfo);
        off!(v, "struct vcpu_register_vcpu_info", VcpuRegisterVcpuInfo, "mfn" => mfn, "offset" => offset,
            "rsvd" => rsvd);
    }
    {
        use pv_abi::hvm::vcpu_hvm::*;
        size!(v, "struct vcpu_hvm_x86_32", VcpuHvmX86_32);
        off!(v, "struct vcpu_hvm_x86_32", VcpuHvmX86_32, "eip" => eip, "cr0" => cr0, "efer" => efer,
            "cs_base" => cs_base, "tr_base" => tr_base, "cs_limit" => cs_limit, "tr_limit" => tr_limit,
            "cs_ar" => cs_ar, "tr_ar" => tr_ar, "pad2" => pad2);
        size!(v, "struct vcpu_hvm_x86_64", VcpuHvmX86_64);
        off!(v, "struct vcpu_hvm_x86_64", VcpuHvmX86_64, "rip" => rip, "rflags" => rflags, "cr0" => cr0,
            "cr3" => cr3, "cr4" => cr4, "efer" => efer);
        size!(v, "struct vcpu_hvm_context", VcpuHvmContext);
        off!(v, "struct vcpu_hvm_context", VcpuHvmContext, "mode" => mode, "pad" => pad, "cpu_regs" => cpu_regs);
    }
    off!(v, "struct xen_hvm_param", hvm_op::HvmParam, "domid" => domid, "index" => index, "value" => value);
    size!(v, "struct xen_hvm_evtchn_upcall_vector", hvm_op::EvtchnUpcallVector);
    off!(v, "struct xen_hvm_evtchn_upcall_vector", hvm_op::EvtchnUpcallVector, "vcpu" => vcpu, "vector" => vector);
    size!(v, "struct gnttab_set_version", GnttabSetVersion);
    size!(v, "struct gnttab_get_version", GnttabGetVersion);
    off!(v, "struct gnttab_get_version", GnttabGetVersion, "dom" => dom, "version" => version);
    size!(v, "struct gnttab_dump_table", GnttabDumpTable);
    off!(v, "struct gnttab_dump_table", GnttabDumpTable, "dom" => dom, "status" => status);
}

const HEADERS: &[&str] = &[
    "xen/xen.h",
    "xen/errno.h",
    "xen/version.h",
    "xen/sched.h",
    "xen/vcpu.h",
    "xen/hvm/hvm_vcpu.h",
    "xen/event_channel.h",
    "xen/grant_table.h",
    "xen/io/ring.h",
    "xen/io/blkif.h",
    "xen/io/netif.h",
    "xen/io/console.h",
    "xen/io/xs_wire.h",
    "xen/io/xenbus.h",
    "xen/memory.h",
    "xen/features.h",
    "xen/elfnote.h",
    "xen/hvm/hvm_op.h",
    "xen/hvm/params.h",
    "xen/arch-x86/cpuid.h",
];

/// The 32-bit layouts (`x86_32-abi` blkif and the compat hypercall
/// arguments) against Xen's headers compiled for i386 (`cc -m32
/// -ffreestanding`, no 32-bit libc needed): each value is a
/// `_Static_assert`, so a mismatch fails the compile and names the field.
#[test]
fn layouts_32_bit_match_xen_headers_compiled_for_i386() {
    use pv_abi::blkif::x86_32;
    let mut v = Vec::new();
    size!(v, "struct blkif_request", x86_32::Request);
    off!(v, "struct blkif_request", x86_32::Request,
        "operation" => operation, "nr_segments" => nr_segments, "handle" => handle, "id" => id,
        "sector_number" => sector_number, "seg" => seg);
    size!(v, "struct blkif_response", x86_32::Response);
    off!(v, "struct blkif_response", x86_32::Response, "id" => id, "operation" => operation, "status" => status);
    konst!(v, "__CONST_RING_SIZE(blkif, 4096)" => x86_32::RING_SIZE);
    size!(v, "struct xen_add_to_physmap", memory_op::CompatAddToPhysmap);
    off!(v, "struct xen_add_to_physmap", memory_op::CompatAddToPhysmap,
        "domid" => domid, "size" => size, "space" => space, "idx" => idx, "gpfn" => gpfn);
    size!(v, "struct xen_remove_from_physmap", memory_op::CompatRemoveFromPhysmap);
    off!(v, "struct xen_remove_from_physmap", memory_op::CompatRemoveFromPhysmap, "domid" => domid, "gpfn" => gpfn);
    size!(v, "struct xen_memory_map", memory_op::CompatMemoryMap);
    off!(v, "struct xen_memory_map", memory_op::CompatMemoryMap, "nr_entries" => nr_entries, "buffer" => buffer);
    size!(v, "struct gnttab_setup_table", CompatGnttabSetupTable);
    off!(v, "struct gnttab_setup_table", CompatGnttabSetupTable,
        "dom" => dom, "nr_frames" => nr_frames, "status" => status, "frame_list" => frame_list);
    // Same offsets and size; only the alignment (4 on i386) differs.
    konst!(v, "sizeof(struct xen_hvm_param)" => size_of::<hvm_op::HvmParam>());
    off!(v, "struct xen_hvm_param", hvm_op::HvmParam, "domid" => domid, "index" => index, "value" => value);
    // The x86_32 shared-info page (alignment 4 on i386, 8 in Rust: sizes
    // and offsets only), and the event-channel layout derived from it.
    use pv_abi::shared_info::{x86_32 as si32, LAYOUT_X86_32 as l32};
    konst!(v, "sizeof(struct vcpu_info)" => size_of::<si32::VcpuInfo>(),
        "sizeof(struct arch_vcpu_info)" => size_of::<si32::ArchVcpuInfo>(),
        "sizeof(struct arch_shared_info)" => size_of::<si32::ArchSharedInfo>(),
        "sizeof(struct shared_info)" => size_of::<si32::SharedInfo>(),
        "sizeof(xen_ulong_t)" => l32.word_bytes,
        "sizeof(((struct shared_info *)0)->evtchn_pending) * 8" => l32.nr_channels,
        "offsetof(struct shared_info, evtchn_pending)" => l32.pending,
        "offsetof(struct shared_info, evtchn_mask)" => l32.mask,
        "offsetof(struct shared_info, vcpu_info[0].evtchn_pending_sel)" => l32.pending_sel,
        "offsetof(struct shared_info, wc_version)" => l32.wc_version,
        "offsetof(struct shared_info, arch.wc_sec_hi)" => l32.wc_sec_hi);
    off!(v, "struct vcpu_info", si32::VcpuInfo, "evtchn_upcall_pending" => upcall_pending,
        "evtchn_upcall_mask" => upcall_mask, "evtchn_pending_sel" => evtchn_pending_sel, "arch" => arch,
        "time" => time);
    off!(v, "struct arch_shared_info", si32::ArchSharedInfo, "max_pfn" => max_pfn,
        "pfn_to_mfn_frame_list_list" => pfn_to_mfn_frame_list_list, "nmi_reason" => nmi_reason,
        "p2m_cr3" => p2m_cr3, "p2m_vaddr" => p2m_vaddr, "p2m_generation" => p2m_generation,
        "wc_sec_hi" => wc_sec_hi);
    off!(v, "struct shared_info", si32::SharedInfo, "vcpu_info" => vcpu_info,
        "evtchn_pending" => evtchn_pending, "evtchn_mask" => evtchn_mask, "wc_version" => wc_version,
        "wc_sec" => wc_sec, "wc_nsec" => wc_nsec, "arch" => arch);

    // The FIFO event-channel structs: the same sizes and offsets for a
    // 32-bit guest (the 64-bit `control_gfn` is 4-aligned on i386 only).
    use pv_abi::event_channel::{EvtchnFifoControlBlock, EvtchnInitControl, EvtchnSetPriority};
    konst!(v, "sizeof(struct evtchn_init_control)" => size_of::<EvtchnInitControl>(),
        "sizeof(struct evtchn_expand_array)" => size_of::<pv_abi::event_channel::EvtchnExpandArray>(),
        "sizeof(struct evtchn_set_priority)" => size_of::<EvtchnSetPriority>(),
        "sizeof(struct evtchn_fifo_control_block)" => size_of::<EvtchnFifoControlBlock>());
    off!(v, "struct evtchn_init_control", EvtchnInitControl,
        "control_gfn" => control_gfn, "offset" => offset, "vcpu" => vcpu, "link_bits" => link_bits);
    off!(v, "struct evtchn_fifo_control_block", EvtchnFifoControlBlock, "ready" => ready, "head" => head);
    // `vcpu_op`'s runstate and vcpu_info arguments as a 32-bit guest
    // passes them (`compat_vcpu_op`'s translated layout).
    {
        use pv_abi::hypercall::vcpu_op::{
            CompatVcpuRunstateInfo, VcpuRegisterRunstateMemoryArea, VcpuRegisterVcpuInfo,
        };
        konst!(v, "sizeof(struct vcpu_runstate_info)" => size_of::<CompatVcpuRunstateInfo>(),
            "sizeof(struct vcpu_register_runstate_memory_area)" => size_of::<VcpuRegisterRunstateMemoryArea>(),
            "sizeof(struct vcpu_register_vcpu_info)" => size_of::<VcpuRegisterVcpuInfo>());
        off!(v, "struct vcpu_runstate_info", CompatVcpuRunstateInfo, "state" => state,
            "state_entry_time" => state_entry_time, "time" => time);
    }

    let mut src = String::from("#include <stddef.h>\n#include <stdint.h>\n");
    for h in [
        "xen/xen.h",
        "xen/memory.h",
        "xen/grant_table.h",
        "xen/hvm/hvm_op.h",
        "xen/io/blkif.h",
        "xen/event_channel.h",
        "xen/vcpu.h",
    ] {
        writeln!(src, "#include <{h}>").unwrap();
    }
    for (i, c) in v.iter().enumerate() {
        writeln!(src, "_Static_assert(({}) == {}, \"check {i}: {} is {} in ours\");", c.c, c.rust, c.c, c.rust)
            .unwrap();
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("xen_layout32");
    std::fs::create_dir_all(&dir).unwrap();
    let c_file = dir.join("xen_layout32.c");
    std::fs::write(&c_file, &src).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-m32", "-ffreestanding", "-fsyntax-only", "-std=gnu11", "-D__XEN_INTERFACE_VERSION__=0x00040d00"])
        .arg(&c_file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run C compiler `{cc}` ({e})"));
    assert!(out.status.success(), "32-bit layouts differ from Xen's:\n{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn layouts_match_xen_public_headers() {
    let include = Path::new("/usr/include");
    if let Some(missing) = HEADERS.iter().find(|h| !include.join(h).exists()) {
        panic!("Xen public header /usr/include/{missing} not found: run `apt-get install libxen-dev`");
    }
    let checks = checks();
    let mut src = String::from("#include <stddef.h>\n#include <stdint.h>\n#include <stdio.h>\n#include <string.h>\n");
    for h in HEADERS {
        writeln!(src, "#include <{h}>").unwrap();
    }
    src.push_str("int main(void) {\n");
    for c in &checks {
        writeln!(src, "    printf(\"%lld\\n\", (long long)({}));", c.c).unwrap();
    }
    src.push_str("    return 0;\n}\n");

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("xen_layout");
    std::fs::create_dir_all(&dir).unwrap();
    let c_file = dir.join("xen_layout.c");
    let exe = dir.join("xen_layout");
    std::fs::write(&c_file, &src).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=gnu11", "-D__XEN_INTERFACE_VERSION__=0x00040d00", "-o"])
        .arg(&exe)
        .arg(&c_file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run C compiler `{cc}` ({e}): install a C compiler (gcc)"));
    assert!(out.status.success(), "compiling the Xen layout check failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let run = Command::new(&exe).output().unwrap();
    assert!(run.status.success());
    let values: Vec<i128> = String::from_utf8(run.stdout).unwrap().lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(values.len(), checks.len());

    let mismatches: Vec<String> = checks
        .iter()
        .zip(&values)
        .filter(|(c, x)| c.rust != **x)
        .map(|(c, x)| format!("  {}: Xen {} / ours {}", c.c, x, c.rust))
        .collect();
    assert!(mismatches.is_empty(), "layouts differ from Xen's headers:\n{}", mismatches.join("\n"));
    eprintln!("{} Xen layout/constant checks passed", checks.len());
}
