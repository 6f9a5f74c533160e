//! Restoring a snapshot: read and check the state file, build the VM from
//! its configuration (as `vmm run` would), then load memory and state over
//! it before its first `KVM_RUN`.

use super::{format, memory, SnapshotError, SnapshotState, MEMORY_FILE, STATE_FILE};
use crate::vm::Vm;
use std::path::Path;

/// Reads `dir`'s state file and checks it is complete, of this format
/// version, untampered, and consistent (vCPU ids, memory size).
pub fn load_state(dir: &Path) -> Result<SnapshotState, SnapshotError> {
    let path = dir.join(STATE_FILE);
    let io = |e| SnapshotError::Io { path: path.clone(), source: e };
    let len = std::fs::metadata(&path).map_err(io)?.len();
    if len > format::MAX_PAYLOAD + format::HEADER_LEN as u64 {
        return Err(SnapshotError::Corrupt { path, why: format!("{len} bytes is too large for a state file") });
    }
    let bytes = std::fs::read(&path).map_err(io)?;
    let state: SnapshotState = format::decode(&path, &bytes)?;
    check(&path, &state)?;
    Ok(state)
}

/// What the header's checksum cannot vouch for: that the state is one a
/// VM can have (a state file written by hand still may not make the VMM
/// index out of bounds).
pub(crate) fn check(path: &Path, s: &SnapshotState) -> Result<(), SnapshotError> {
    let bad = |why: String| Err(SnapshotError::Corrupt { path: path.to_path_buf(), why });
    let n = s.config.vcpus;
    if !(1..=crate::vm::MAX_VCPUS).contains(&n) {
        return bad(format!("{n} vCPUs"));
    }
    if s.vcpus.len() != n as usize || s.vcpus.iter().enumerate().any(|(i, v)| v.id != i as u32) {
        return bad(format!("the vCPU states do not match the {n} vCPUs of its configuration"));
    }
    if let Err(e) = crate::builder::check_mem_size(&s.config.mem_bytes.to_string(), s.config.mem_bytes) {
        return bad(e.to_string());
    }
    if let Some(at) = s.suspended.filter(|at| at.vcpu >= n) {
        return bad(format!("suspended by vCPU {}, of {n} vCPUs", at.vcpu));
    }
    if s.vm.irqchips.len() > 3 || s.vm.irqchips.iter().any(|c| c.chip_id > 2) {
        return bad("bad irqchip state".into());
    }
    Ok(())
}

/// Loads memory and state from `dir` (whose state is `state`) into `vm`,
/// just built from `state.config`, before it first runs. Returns the bytes
/// of memory loaded. The order is xen_domain's: memory first (the paging
/// state is validated against it), then the domain, the store, and the
/// back ends re-attach to their ports and rings.
pub fn restore_into(vm: &mut Vm, state: &SnapshotState, dir: &Path) -> Result<u64, SnapshotError> {
    let path = dir.join(MEMORY_FILE);
    restore_with_memory(vm, state, |ram| memory::restore(ram, &path))
}

/// [`restore_into`] with guest memory loaded by `load` (from the memory
/// file, or by a migration from its stream) at the right moment: after the
/// console's pending input was taken back, before the domain state (whose
/// page tables are validated against it). `load` returns the bytes loaded.
///
/// A guest that was suspended (a cooperative snapshot) continues as a new
/// domain, as Xen restores one (`xen/include/public/sched.h`
/// SHUTDOWN_suspend): its back ends are reset to `InitWait` (rings
/// unmapped, event channels closed) before it first runs, and its suspend
/// hypercall returns 0, so its front ends reconnect.
pub fn restore_with_memory(
    vm: &mut Vm,
    state: &SnapshotState,
    load: impl FnOnce(&xen_domain::guest_memory::GuestRam) -> Result<u64, SnapshotError>,
) -> Result<u64, SnapshotError> {
    let loaded = restore_parts(vm, state, load)?;
    if let Some(at) = state.suspended {
        use crate::control::{reset_backends, SUSPEND_TIMEOUT};
        reset_backends(&vm.store, xen_domain::domid::GUEST_DOMID, SUSPEND_TIMEOUT)
            .map_err(|e| SnapshotError::State { what: "split devices", why: e.to_string() })?;
        tracing::info!(vcpu = at.vcpu, "restored a suspended guest: it resumes as a new domain");
    }
    Ok(loaded)
}

fn restore_parts(
    vm: &mut Vm,
    state: &SnapshotState,
    load: impl FnOnce(&xen_domain::guest_memory::GuestRam) -> Result<u64, SnapshotError>,
) -> Result<u64, SnapshotError> {
    super::devices::check_devices(&vm.pv, &state.devices)?;
    // Console input (a pipe) may already have been written into the
    // fresh ring: take it back, and hold the console until its ring is
    // the restored one.
    let console = vm.console.clone();
    let mut console = console.lock().unwrap_or_else(|p| p.into_inner());
    console.reclaim_input();
    let loaded = load(&vm.dom.ram)?;
    restore_kvm(vm, state)?;
    let bad = |what| move |e: String| SnapshotError::State { what, why: e };
    vm.dom.restore_state(&state.vm.domain).map_err(|e| bad("domain")(e.to_string()))?;
    pvclock_follows_the_restored_tsc(vm)?;
    vm.store.restore_state(&state.store).map_err(|e| bad("store")(e.to_string()))?;
    reattach_core(vm, state, &mut console)?;
    super::devices::restore_virtio(&vm.virtio, &state.virtio_blk, &state.virtio_net)?;
    super::devices::reconnect(&vm.store, &state.devices);
    Ok(loaded)
}

/// A PVH guest's pvclock maps the guest TSC to system time through the
/// offset between guest and host TSC; the restored `IA32_TSC` moved the
/// guest's TSC (on a KVM that offsets it), so the offset is measured again
/// (as the builder measured it at boot, `boot::pvh::prepare_vcpu`).
fn pvclock_follows_the_restored_tsc(vm: &mut Vm) -> Result<(), SnapshotError> {
    let Some(pvh) = vm.dom.pvh.as_mut() else { return Ok(()) };
    let entry = kvm_bindings::kvm_msr_entry { index: 0x10, ..Default::default() };
    let mut msrs =
        kvm_bindings::Msrs::from_entries(&[entry]).map_err(|e| SnapshotError::Encode(format!("MSR list: {e:?}")))?;
    vm.vcpu.fd_mut().get_msrs(&mut msrs).map_err(|e| SnapshotError::Kvm { what: "KVM_GET_MSRS", source: e })?;
    let guest_tsc = msrs.as_slice()[0].data;
    pvh.clock.tsc_offset = guest_tsc.wrapping_sub(xen_domain::time::host_tsc());
    Ok(())
}

/// The KVM clock, the irqchip and each vCPU.
fn restore_kvm(vm: &mut Vm, state: &SnapshotState) -> Result<(), SnapshotError> {
    let kvm = |what| move |e| SnapshotError::Kvm { what, source: e };
    let mut clock = state.vm.clock;
    // Only the time itself: KVM refuses flags it did not define for SET.
    clock.flags = 0;
    vm._vm.set_clock(&clock).map_err(kvm("KVM_SET_CLOCK"))?;
    for chip in &state.vm.irqchips {
        vm._vm.set_irqchip(chip).map_err(kvm("KVM_SET_IRQCHIP"))?;
    }
    let vcpus = std::iter::once(&mut vm.vcpu).chain(vm.aps.iter_mut());
    for (v, s) in vcpus.zip(&state.vcpus) {
        super::vcpu_state::apply(v.fd_mut(), s)?;
        if state.suspended.is_some_and(|at| at.vcpu == s.id) {
            // `SHUTDOWN_suspend` returns 0 in the restored domain
            // (`xen/include/public/sched.h`; 1 only when the suspend is
            // cancelled, `modify_returncode()` in xg_resume.c).
            let regs = kvm_bindings::kvm_regs { rax: 0, ..s.regs };
            v.fd_mut().set_regs(&regs).map_err(kvm("KVM_SET_REGS"))?;
        }
    }
    Ok(())
}

/// The console and the store: their ports (restored detached) back to
/// their handlers, their rings continued at the guest's indices, the
/// store connection's server side as saved.
fn reattach_core(
    vm: &mut Vm,
    state: &SnapshotState,
    console: &mut backend::console::Console,
) -> Result<(), SnapshotError> {
    let evtchn = vm.dom.evtchn.clone();
    let bad = |what| move |e: String| SnapshotError::State { what, why: e };
    for (port, wake) in &vm.core_ports {
        evtchn.reattach(*port, wake.clone()).map_err(|e| bad("console and store ports")(e.to_string()))?;
    }
    let notifier = |port| crate::devices::PortNotifier::new(evtchn.clone(), port);
    let (console_port, store_port) = (vm.core_ports[0].0, vm.core_ports[1].0);
    console.reattach(std::sync::Arc::new(notifier(console_port)));
    vm.store_handler
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .restore(vm.store.clone(), vm.dom.ram.mem(), vm.store_ring, &state.store, notifier(store_port))
        .map_err(bad("store ring"))
}
