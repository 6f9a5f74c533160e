//! `PUT /vm.migrate`: live migration to a destination that waits with
//! `vmm run --incoming <url>` ([`vmm::migration`]). The API thread only
//! parses and forwards: the VM's migration thread connects and streams
//! (the API thread's seccomp filter allows no other socket). The request
//! is answered when the migration has ended: 200 with its figures (the
//! VM then runs on the destination and this VMM exits 0), or an error
//! (the VM runs on here).

use super::{with_view, Response, Shared};
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::Ordering;
use vmm::control::Destroy;
use vmm::migration::{MigrationError, MigrationUrl};

/// `PUT /vm.migrate` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Migrate {
    /// `tcp:<ip>:<port>` or `unix:<path>`.
    url: String,
}

fn status(e: &MigrationError) -> u16 {
    match e {
        MigrationError::BadUrl(_) => 400,
        MigrationError::Busy(_) => 409,
        MigrationError::Connect { .. } | MigrationError::Stream(_) | MigrationError::Refused(_) => 502,
        MigrationError::Source(_) | MigrationError::SourceStopped(_) => 500,
    }
}

/// Migrates the VM; on success ends it here.
pub(super) fn migrate(s: &Shared, body: &[u8]) -> Response {
    let m: Migrate = match serde_json::from_slice(body) {
        Ok(m) => m,
        Err(e) => return Response::error(400, format!("bad body: {e}; send {{\"url\": \"tcp:<ip>:<port>\"}}")),
    };
    let url: MigrationUrl = match m.url.parse() {
        Ok(u) => u,
        Err(e) => return Response::error(400, e),
    };
    let handles = with_view(s, |v| {
        let migrator = v.migrator.clone().ok_or_else(|| Response::error(409, "this VM cannot migrate"))?;
        Ok((migrator, (v.vm_state)()))
    });
    let (migrator, state) = match handles {
        Ok(h) => h,
        Err(resp) => return resp,
    };
    eprintln!("vmm: migrating to {url}");
    match migrator.migrate(url.clone(), state) {
        Ok(rep) => {
            *s.migrated_to.lock().unwrap_or_else(|p| p.into_inner()) = Some((url.to_string(), rep.clone()));
            s.shutdown_asked.store(true, Ordering::SeqCst);
            s.control.destroy(Destroy::Now);
            Response::ok(json!({
                "url": url.to_string(),
                "rounds": rep.rounds,
                "pages_per_round": rep.pages_per_round,
                "final_pages": rep.final_pages,
                "vmm_written_pages": rep.vmm_written_pages,
                "bytes": rep.bytes,
                "state_bytes": rep.state_bytes,
                "downtime_ms": rep.downtime.as_secs_f64() * 1e3,
                "total_ms": rep.total.as_secs_f64() * 1e3,
                "downtime_phases_ms": rep.phases.iter().map(|(k, d)| (k.to_string(), json!(d.as_secs_f64() * 1e3))).collect::<serde_json::Map<_, _>>(),
            }))
        }
        Err(e) => {
            if matches!(e, MigrationError::SourceStopped(_)) {
                s.control.destroy(Destroy::Now);
            }
            eprintln!("vmm: migration to {url} failed: {e}");
            Response::error(status(&e), e.to_string())
        }
    }
}
