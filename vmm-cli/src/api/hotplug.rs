//! `PUT /vm.add-disk`, `PUT /vm.add-net` and `PUT /vm.remove-device`:
//! disk and network hot-plug through xenbus, as `xl block-attach` /
//! `network-attach` / `block-detach` / `network-detach`
//! ([`vmm::hotplug`]). The API thread only parses and forwards: the VM's
//! hot-plug thread opens the image or TAP device and starts the device
//! thread (the API thread's seccomp filter allows neither).

use super::{with_view, Response, Shared};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;
use vmm::hotplug::HotplugError;

/// `PUT /vm.add-disk` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddDisk {
    /// `--disk` syntax: `<path>[,readonly][,vdev=<name>]`.
    disk: String,
}

/// `PUT /vm.add-net` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddNet {
    /// `--net` syntax: `tap=<ifname>[,mac=<mac>]`.
    net: String,
}

/// `PUT /vm.remove-device` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveDevice {
    /// `vbd/<n>`, `<n>` or a disk name (`xvdb`), or `vif/<n>`.
    id: String,
    /// How long to wait for the front end to close before forcing
    /// (default `LIBXL_DESTROY_TIMEOUT`, 10 s).
    #[serde(default)]
    timeout_ms: Option<u64>,
}

fn hotplug_error(e: HotplugError) -> Response {
    let status = match e {
        HotplugError::BadDevice(_) => 400,
        HotplugError::NoDevice(_) => 404,
        HotplugError::Exists(..) | HotplugError::TooMany => 409,
        HotplugError::NotRunning => 409,
        HotplugError::Host(_) => 500,
    };
    Response::error(status, e.to_string())
}

fn handle(s: &Shared) -> Result<vmm::hotplug::Hotplug, Response> {
    with_view(s, |v| {
        v.hotplug.clone().ok_or_else(|| Response::error(409, "this VM has no hot-plug thread".to_string()))
    })
}

/// Attaches a disk; answers 200 `{"id", "frontend", "backend"}`.
pub(super) fn add_disk(s: &Shared, body: &[u8]) -> Response {
    let b: AddDisk = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => return Response::error(400, format!("bad body: {e}; send {{\"disk\": \"<path>[,vdev=xvdb]\"}}")),
    };
    let disk: vmm::DiskConfig = match b.disk.parse() {
        Ok(d) => d,
        Err(e) => return Response::error(400, e.to_string()),
    };
    let h = match handle(s) {
        Ok(h) => h,
        Err(r) => return r,
    };
    match h.add_disk(vmm::DeviceSpec::Disk(disk)) {
        Ok(p) => Response::ok(json!({ "id": p.id, "frontend": p.paths.front, "backend": p.paths.back })),
        Err(e) => hotplug_error(e),
    }
}

/// Attaches a network interface on a TAP device; answers 200 `{"id",
/// "frontend", "backend"}` (id `vif/<handle>`).
pub(super) fn add_net(s: &Shared, body: &[u8]) -> Response {
    let b: AddNet = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => {
            return Response::error(400, format!("bad body: {e}; send {{\"net\": \"tap=<ifname>[,mac=<mac>]\"}}"))
        }
    };
    let net: vmm::NetConfig = match b.net.parse() {
        Ok(n) => n,
        Err(e) => return Response::error(400, e.to_string()),
    };
    let h = match handle(s) {
        Ok(h) => h,
        Err(r) => return r,
    };
    match h.add_net(vmm::DeviceSpec::Net(net)) {
        Ok(p) => Response::ok(json!({ "id": p.id, "frontend": p.paths.front, "backend": p.paths.back })),
        Err(e) => hotplug_error(e),
    }
}

/// Detaches a hot-plugged device; answers 200 `{"id", "removal"}` with
/// `removal` `closed` or `forced`.
pub(super) fn remove_device(s: &Shared, body: &[u8]) -> Response {
    let b: RemoveDevice = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => {
            return Response::error(
                400,
                format!("bad body: {e}; send {{\"id\": \"vbd/<n>\" or \"vif/<n>\"[, \"timeout_ms\": <ms>]}}"),
            )
        }
    };
    let timeout = b.timeout_ms.map_or(vmm::hotplug::DESTROY_TIMEOUT, Duration::from_millis);
    let h = match handle(s) {
        Ok(h) => h,
        Err(r) => return r,
    };
    match h.remove(&b.id, timeout) {
        Ok(how) => Response::ok(json!({ "id": b.id, "removal": how.name() })),
        Err(e) => hotplug_error(e),
    }
}
