//! `vmm run --incoming <url>`: the destination of a live migration
//! (docs/migration.md). It waits for the source, learns the VM's
//! configuration from the stream, builds the VM with its disk locks
//! deferred (the source holds them until the switch-over), receives the
//! memory and the state, takes the locks, tells the source and runs.

use crate::config::RunConfig;
use anyhow::{anyhow, Result};
use vmm::migration::receive::{zero_ram, Incoming};
use vmm::migration::{Listener, MigrationUrl};

/// An accepted stream whose configuration has been read.
pub struct Pending {
    inc: Incoming,
    url: String,
}

/// Waits on `url` for a source; returns the configuration to boot (the
/// source's, with this command line's local options) and the stream.
pub fn wait(local: &RunConfig, url: &str) -> Result<(RunConfig, Pending)> {
    let parsed: MigrationUrl = url.parse().map_err(|e: String| anyhow!("--incoming: {e}"))?;
    let listener =
        Listener::bind(&parsed).map_err(|e| anyhow!("--incoming {url}: cannot listen: {e}: choose another address"))?;
    eprintln!("vmm: waiting for a migration on {url}");
    let conn = listener.accept().map_err(|e| anyhow!("--incoming {url}: {e}"))?;
    drop(listener);
    let (inc, config) = Incoming::start(conn).map_err(|e| anyhow!("incoming migration refused: {e}"))?;
    let mut cfg: RunConfig = serde_json::from_slice(&config)
        .map_err(|e| anyhow!("incoming migration refused: its configuration is not one this VMM reads: {e}"))?;
    // What belongs to this host and this process, not to the VM.
    cfg.api_socket = local.api_socket.clone();
    cfg.stats = local.stats;
    cfg.console_file = local.console_file.clone();
    cfg.timeout = local.timeout;
    cfg.seccomp = local.seccomp;
    cfg.incoming = None;
    Ok((cfg, Pending { inc, url: url.to_string() }))
}

/// The configuration record a source sends: `cfg` with the devices the
/// VM really has (the demo's scratch disk included).
pub fn config_record(cfg: &RunConfig, vm_cfg: &vmm::VmConfig) -> Vec<u8> {
    let mut sent = cfg.clone();
    sent.devices = vm_cfg.devices.clone();
    serde_json::to_vec(&sent).unwrap_or_default()
}

/// Receives memory and state into `vm` (built from [`wait`]'s
/// configuration), takes the disk locks and tells the source; the VM is
/// then ready to run. Any failure is told to the source, which runs on.
pub fn receive(vm: &mut vmm::Vm, mut p: Pending) -> Result<()> {
    zero_ram(&vm.dom.ram);
    let got = p.inc.receive(&vm.dom.ram).map_err(|e| anyhow!("incoming migration refused: {e}"))?;
    let r = vmm::migration::vm_state::restore(vm, &got.state).and_then(|()| {
        backend::block::lock_handover::take().map(drop).map_err(|e| format!("cannot take the disk images over: {e}"))
    });
    if let Err(why) = &r {
        let _ = p.inc.answer(Err(why));
        return Err(anyhow!("incoming migration refused: {why}"));
    }
    p.inc.answer(Ok(())).map_err(|e| anyhow!("incoming migration: the source went away at the switch-over: {e}"))?;
    eprintln!(
        "vmm: migration from {} received ({} rounds, {} pages, {} bytes): running the VM",
        p.url, got.rounds, got.pages, got.bytes
    );
    Ok(())
}
