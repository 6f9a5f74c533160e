//! The API socket (`vmm run --api-socket <path>`): HTTP/1.1 with JSON
//! bodies on a Unix socket, in the style of Firecracker's and Cloud
//! Hypervisor's APIs (docs/api.md). One thread, under its own seccomp
//! filter, serves it ([`http`]) and acts on the VM through
//! [`vmm::control::VmControl`] (pause, resume, destroy, the vCPU's
//! counters) and the store (`control/shutdown`, `memory/target`, as Xen's
//! toolstack does).

mod hotplug;
pub mod http;
mod migrate;
mod suspend;

use crate::config::RunConfig;
use anyhow::{Context, Result};
use http::{Request, Response};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vmm::control::{ControlError, Destroy, VcpuStats, VmControl};
use xen_domain::domid::GUEST_DOMID;

/// How long pause and stats requests wait for the vCPU.
const VCPU_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the server looks at a pending shutdown's grace period.
const TICK: Duration = Duration::from_millis(50);

/// What the API can see of the VM booted now (set per boot).
pub struct VmView {
    /// The store (domain 0's handle).
    pub store: pv_store::SharedStore,
    /// Each split device's back-end path and counters.
    pub devices: Vec<(String, Arc<dyn pv_util::metrics::DeviceMetrics>)>,
    /// The virtio devices.
    pub virtio: Arc<vmm::virtio_mmio_bus::VirtioBus>,
    /// Disk hot-plug (`PUT /vm.add-disk`, `/vm.remove-device`).
    pub hotplug: Option<vmm::hotplug::Hotplug>,
    /// Live migration (`PUT /vm.migrate`).
    pub migrator: Option<vmm::migration::Migrator>,
    /// The VM state a migration sends at the switch-over.
    pub vm_state: VmStateFactory,
    /// Snapshots (`PUT /vm.snapshot`).
    pub snapshot: Option<vmm::snapshot::Snapshotter>,
}

/// Makes the [`vmm::migration::VmState`] of one migration.
pub type VmStateFactory = Arc<dyn Fn() -> Box<dyn vmm::migration::VmState> + Send + Sync>;

impl VmView {
    /// What the API needs of `vm`, taken before it runs.
    pub fn of(vm: &vmm::Vm) -> Self {
        VmView {
            store: vm.store.clone(),
            devices: vm.pv.iter().map(|d| (d.paths.back.clone(), d.metrics.clone())).collect(),
            virtio: vm.virtio.clone(),
            hotplug: vm.hotplug(),
            migrator: None,
            vm_state: Arc::new(|| Box::new(vmm::migration::NoVmState)),
            snapshot: Some(vm.snapshotter()),
        }
    }
}

/// What the server thread and the run loop share.
struct Shared {
    control: Arc<VmControl>,
    view: Mutex<Option<VmView>>,
    config: Value,
    grace: Duration,
    /// A shutdown was asked for: the run loop must not boot again.
    shutdown_asked: AtomicBool,
    stop: AtomicBool,
    boots: std::sync::atomic::AtomicU64,
    /// Where the VM went (and the migration's figures), once migrated.
    migrated_to: Mutex<Option<(String, vmm::migration::MigrationReport)>>,
}

/// The running API server; stops and removes its socket when dropped.
pub struct ApiServer {
    shared: Arc<Shared>,
    path: PathBuf,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ApiServer {
    /// Binds `path` (mode 0600) and serves it on a thread of its own.
    pub fn start(path: &Path, cfg: &RunConfig, control: Arc<VmControl>) -> Result<Self> {
        let listener = bind(path)?;
        let shared = Arc::new(Shared {
            control,
            view: Mutex::new(None),
            config: serde_json::to_value(cfg)?,
            grace: std::time::Duration::try_from_secs_f64(cfg.shutdown_grace).unwrap_or_default(),
            shutdown_asked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            boots: Default::default(),
            migrated_to: Mutex::new(None),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                vmm::seccomp::install_or_exit(vmm::seccomp::ThreadKind::Api);
                if let Err(e) = serve(&listener, &s) {
                    eprintln!("error: the API socket failed: {e}");
                }
            })
            .context("cannot start the API thread")?;
        Ok(ApiServer { shared, path: path.to_path_buf(), thread: Some(thread) })
    }

    /// Shows the API the VM about to run (`None` once it has ended).
    pub fn set_vm(&self, view: Option<VmView>) {
        if view.is_some() {
            self.shared.boots.fetch_add(1, Ordering::SeqCst);
        }
        *self.shared.view.lock().unwrap_or_else(|p| p.into_inner()) = view;
    }

    /// Where the VM was migrated to, if it was (this VMM then exits 0).
    pub fn migrated_to(&self) -> Option<(String, vmm::migration::MigrationReport)> {
        self.shared.migrated_to.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether a client asked for a shutdown or destroy (no reboot then).
    pub fn ended_by_request(&self) -> bool {
        self.shared.shutdown_asked.load(Ordering::SeqCst) || self.shared.control.destroy_requested()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The server loop: requests, and the grace period of a shutdown request.
fn serve(listener: &UnixListener, s: &Shared) -> std::io::Result<()> {
    let grace_end = std::cell::Cell::new(None::<Instant>);
    let tick = || {
        if grace_end.get().is_some_and(|g| Instant::now() >= g) {
            grace_end.set(None);
            if s.control.state() != vmm::control::RunState::NotRunning {
                eprintln!("vmm: the guest did not power off within the grace period: stopping it");
                s.control.destroy(Destroy::AfterGrace);
            }
        }
        s.stop.load(Ordering::SeqCst)
    };
    let handle = |req: &Request| {
        let (resp, asked) = endpoint(s, req);
        if asked {
            // As the watchdog announces a stop signal's request.
            eprintln!(
                "vmm: API shutdown request: asking the guest to power off (control/shutdown); stopping it in {:.1} s",
                s.grace.as_secs_f64()
            );
            grace_end.set(Some(Instant::now() + s.grace));
        }
        resp
    };
    http::serve(listener, TICK, tick, handle)
}

/// Binds the socket with mode 0600 from the start (umask), refusing a
/// path that is in use or is not a socket; a stale socket is replaced.
fn bind(path: &Path) -> Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            anyhow::bail!("--api-socket {}: the path exists and is not a socket: choose another path", path.display());
        }
        if UnixStream::connect(path).is_ok() {
            anyhow::bail!("--api-socket {}: another VMM serves this socket: choose another path", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    // SAFETY: umask only swaps the process's file-creation mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    // The cause goes into the one line (main prints only the outer
    // message): a missing directory is the usual one.
    let listener = bound.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound => "create its directory first or choose another path",
            _ => "choose another path",
        };
        anyhow::anyhow!("--api-socket {}: cannot create the socket: {e}: {hint}", path.display())
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Endpoints the issue names that are not built yet: 501.
const NOT_IMPLEMENTED: &[(&str, &str)] = &[("/vm.restore", "restore into a running VMM (use `vmm restore <dir>`)")];

/// One request's answer, and whether it asked for a graceful shutdown
/// (whose grace period the server then times).
fn endpoint(s: &Shared, req: &Request) -> (Response, bool) {
    tracing::info!(method = %req.method, path = %req.path, "API request");
    let method = req.method.as_str();
    let want = |m: &str| if method == m { None } else { Some(Response::error(405, format!("{} takes {m}", req.path))) };
    let no_body = || (!req.body.is_empty()).then(|| Response::error(400, format!("{} takes no body", req.path)));
    let resp = match req.path.as_str() {
        "/vm" => want("GET").or_else(no_body).unwrap_or_else(|| info(s)),
        "/vm.stats" => want("GET").or_else(no_body).unwrap_or_else(|| stats(s)),
        "/vm.pause" => want("PUT").or_else(no_body).unwrap_or_else(|| done(s.control.pause(VCPU_ANSWER_TIMEOUT))),
        "/vm.resume" => want("PUT").unwrap_or_else(|| suspend::resume(s, &req.body)),
        "/vm.suspend" => want("PUT").unwrap_or_else(|| suspend::suspend(s, &req.body)),
        "/vm.destroy" => want("PUT").or_else(no_body).unwrap_or_else(|| {
            s.control.destroy(Destroy::Now);
            Response::no_content()
        }),
        "/vm.shutdown" => {
            let r = want("PUT").or_else(no_body).unwrap_or_else(|| store_request(s, "poweroff"));
            let asked = r.status == 204;
            s.shutdown_asked.fetch_or(asked, Ordering::SeqCst);
            return (r, asked);
        }
        "/vm.reboot" => want("PUT").or_else(no_body).unwrap_or_else(|| store_request(s, "reboot")),
        "/vm.balloon" => want("PUT").unwrap_or_else(|| balloon(s, &req.body)),
        "/vm.add-disk" => want("PUT").unwrap_or_else(|| hotplug::add_disk(s, &req.body)),
        "/vm.add-net" => want("PUT").unwrap_or_else(|| hotplug::add_net(s, &req.body)),
        "/vm.remove-device" => want("PUT").unwrap_or_else(|| hotplug::remove_device(s, &req.body)),
        "/vm.migrate" => want("PUT").unwrap_or_else(|| migrate::migrate(s, &req.body)),
        "/vm.snapshot" => want("PUT").unwrap_or_else(|| snapshot(s, &req.body)),
        p => match NOT_IMPLEMENTED.iter().find(|(path, _)| *path == p) {
            Some((_, what)) => Response::error(501, format!("{what} is not implemented yet (issue 20)")),
            None => Response::error(404, format!("no endpoint {p}: see docs/api.md")),
        },
    };
    (resp, false)
}

/// `PUT /vm.snapshot` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotBody {
    /// The directory to write (created if missing; an earlier snapshot
    /// in it is replaced). Relative to the VMM's working directory.
    dir: PathBuf,
    /// Xen's cooperative suspend first (`xl save -c`): the guest suspends
    /// itself, is snapshotted suspended, and its suspend is cancelled; a
    /// restore resumes it as a new domain.
    #[serde(default)]
    cooperative: bool,
    /// With `cooperative`: how long the guest has to suspend (default and
    /// most 60 s, libxl's).
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// `PUT /vm.snapshot`: pauses (or, `cooperative`, suspends), snapshots
/// into `dir`, resumes (if it ran); answers 200 with what was written and
/// how long the guest was paused.
fn snapshot(s: &Shared, body: &[u8]) -> Response {
    let b: SnapshotBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => {
            return Response::error(
                400,
                format!(
                    "bad body: {e}: expected {{\"dir\": \"<path>\"}} or {{\"dir\": \"<path>\", \"cooperative\": true}}"
                ),
            )
        }
    };
    let snap = match with_view(s, |v| v.snapshot.clone().ok_or_else(|| control_error(ControlError::NotRunning))) {
        Ok(h) => h,
        Err(r) => return r,
    };
    use vmm::snapshot::SnapshotError as E;
    if b.timeout_ms.is_some() && !b.cooperative {
        return Response::error(
            400,
            "\"timeout_ms\" applies to a cooperative snapshot only: add \"cooperative\": true",
        );
    }
    let taken = match b.cooperative {
        true => {
            let limit = vmm::control::SUSPEND_TIMEOUT;
            let timeout = b.timeout_ms.map_or(limit, std::time::Duration::from_millis).min(limit);
            snap.snapshot_cooperatively(&s.control, &b.dir, timeout)
        }
        false => snap.snapshot(&s.control, &b.dir),
    };
    match taken {
        Ok(r) => Response::ok(json!({
            "dir": r.dir,
            "memory_bytes": r.memory_bytes,
            "state_bytes": r.state_bytes,
            "pause_ms": r.pause.as_secs_f64() * 1e3,
            "total_ms": r.total.as_secs_f64() * 1e3,
            "cooperative": b.cooperative,
        })),
        Err(E::Control(c)) => control_error(c),
        Err(E::Suspend(e)) => suspend::suspend_error(e),
        Err(e @ (E::Unsupported(_) | E::Drain(_))) => Response::error(409, e.to_string()),
        Err(e) => Response::error(500, e.to_string()),
    }
}

fn done(r: Result<(), ControlError>) -> Response {
    match r {
        Ok(()) => Response::no_content(),
        Err(e) => control_error(e),
    }
}

fn control_error(e: ControlError) -> Response {
    match e {
        ControlError::NotRunning => Response::error(409, format!("{e}: retry once it has booted")),
        ControlError::Timeout(_) => Response::error(503, e.to_string()),
        ControlError::AlreadySuspended | ControlError::NotSuspended => Response::error(409, e.to_string()),
    }
}

fn with_view<T>(s: &Shared, f: impl FnOnce(&VmView) -> Result<T, Response>) -> Result<T, Response> {
    let v = s.view.lock().unwrap_or_else(|p| p.into_inner());
    let v = v.as_ref().ok_or_else(|| control_error(ControlError::NotRunning))?;
    f(v)
}

/// The guest's store node `key` (a KiB count), if set and a number.
fn read_kib(v: &VmView, key: &str) -> Option<u64> {
    let bytes = v.store.read(&format!("/local/domain/{GUEST_DOMID}/{key}")).ok()?;
    String::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// `GET /vm`: the configuration and the state.
fn info(s: &Shared) -> Response {
    let memory = with_view(s, |v| {
        Ok(json!({ "target_kib": read_kib(v, "memory/target"), "static_max_kib": read_kib(v, "memory/static-max") }))
    })
    .unwrap_or(Value::Null);
    Response::ok(json!({
        "state": s.control.state().name(),
        "boots": s.boots.load(Ordering::SeqCst),
        "domid": GUEST_DOMID,
        "memory": memory,
        "config": s.config,
    }))
}

/// `GET /vm.stats`: the `--stats` counters as JSON.
fn stats(s: &Shared) -> Response {
    let vcpus = match s.control.vcpu_stats(VCPU_ANSWER_TIMEOUT) {
        Ok(v) => v,
        Err(e) => return control_error(e),
    };
    let devices = with_view(s, |v| Ok(device_stats(v))).unwrap_or_else(|_| json!([]));
    // The event-channel counters are the domain's: any vCPU's copy.
    let ev = vcpus.first().map_or([0; 3], |v| v.evtchn);
    Response::ok(json!({
        "state": s.control.state().name(),
        "vcpus": vcpus.iter().map(vcpu_json).collect::<Vec<_>>(),
        "event_channels": { "sends": ev[0], "notifies": ev[1], "upcalls": ev[2] },
        "devices": devices,
    }))
}

fn counters(c: Vec<(&str, u64)>) -> Value {
    Value::Object(c.into_iter().map(|(k, v)| (k.to_string(), json!(v))).collect())
}

/// One vCPU's exits and hypercalls, by the names `--stats` prints.
fn vcpu_json(v: &VcpuStats) -> Value {
    use vmm::stats::{ExitKind, HYPERCALL_BUCKETS};
    let exits: Map<String, Value> =
        ExitKind::ALL.iter().map(|k| (k.name().to_string(), json!(v.exits.exits(*k)))).collect();
    let mut hcalls: Map<String, Value> = (0..HYPERCALL_BUCKETS as u64)
        .filter(|&nr| v.exits.hypercalls(nr) > 0)
        .map(|nr| (pv_abi::hypercall::nr::name(nr).to_string(), json!(v.exits.hypercalls(nr))))
        .collect();
    if v.exits.other_hypercalls() > 0 {
        hcalls.insert("other".into(), json!(v.exits.other_hypercalls()));
    }
    json!({
        "id": v.id,
        "exits_total": v.exits.total_exits(),
        "exits": exits,
        "hypercalls": hcalls,
        "kvm_exits": v.exits.kvm_exits,
        "guest_instructions": v.exits.guest_instructions,
    })
}

/// Each split device's counters, then each virtio transport's and device's.
fn device_stats(v: &VmView) -> Value {
    // A cold-plugged disk detached since the boot is gone from the store.
    let mut out: Vec<Value> = v
        .devices
        .iter()
        .filter(|(name, _)| v.store.read(name).is_ok())
        .map(|(name, m)| json!({ "name": name, "counters": counters(m.counters()) }))
        .collect();
    // Hot-plugged split devices, with the id `remove-device` takes.
    for (id, name, m) in v.hotplug.iter().flat_map(vmm::hotplug::Hotplug::devices) {
        out.push(json!({ "name": name, "id": id, "hotplugged": true, "counters": counters(m.counters()) }));
    }
    for (i, e) in v.virtio.entries.iter().enumerate() {
        if let Some(c) = v.virtio.counters(i) {
            let name = format!("virtio-mmio@{:#x}", e.base);
            out.push(json!({ "name": name, "counters": counters(pv_util::metrics::DeviceMetrics::counters(&*c)) }));
        }
    }
    for (i, net) in v.virtio.net.iter().enumerate() {
        if let Ok(n) = net.lock() {
            let c = pv_util::metrics::DeviceMetrics::counters(&**n.device().metrics());
            out.push(json!({ "name": format!("virtio-net{i}"), "counters": counters(c) }));
        }
    }
    for (i, blk) in v.virtio.blk.iter().enumerate() {
        if let Ok(b) = blk.lock() {
            let c = pv_util::metrics::DeviceMetrics::counters(&**b.device().metrics());
            out.push(json!({ "name": format!("virtio-blk{i}"), "counters": counters(c) }));
        }
    }
    Value::Array(out)
}

/// Writes `control/shutdown = <action>`, as `xl shutdown` / `xl reboot`.
fn store_request(s: &Shared, action: &str) -> Response {
    let r = with_view(s, |v| {
        vmm::store_nodes::request_shutdown(&v.store, GUEST_DOMID, action)
            .map_err(|e| Response::error(500, format!("cannot write control/shutdown: {e}")))
    });
    match r {
        Ok(()) => Response::no_content(),
        Err(resp) => resp,
    }
}

/// `PUT /vm.balloon` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Balloon {
    target_kib: u64,
}

/// Writes `memory/target` (KiB), as `xl mem-set` does; refuses a target
/// above `memory/static-max` as libxl does (`libxl_set_memory_target()`
/// in tools/libs/light/libxl_mem.c: ERROR_INVAL). Unlike libxl, a guest
/// without `static-max` (our own guests) gets the target written anyway.
fn balloon(s: &Shared, body: &[u8]) -> Response {
    let b: Balloon = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => return Response::error(400, format!("bad body: {e}; send {{\"target_kib\": <KiB>}}")),
    };
    let r = with_view(s, |v| {
        if let Some(max) = read_kib(v, "memory/static-max").filter(|&m| b.target_kib > m) {
            return Err(Response::error(
                400,
                format!(
                    "target_kib {} is above memory/static-max {max} KiB: the target must not exceed the maximum",
                    b.target_kib
                ),
            ));
        }
        v.store
            .write(&format!("/local/domain/{GUEST_DOMID}/memory/target"), b.target_kib.to_string().as_bytes())
            .map_err(|e| Response::error(500, format!("cannot write memory/target: {e}")))
    });
    match r {
        Ok(()) => Response::no_content(),
        Err(resp) => resp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket path in a directory that does not exist is one line that
    /// names the path, the cause and what to do (it used to say only
    /// "cannot bind the API socket <path>").
    #[test]
    fn socket_in_a_missing_directory_says_what_to_do() {
        let dir = std::env::temp_dir().join(format!("vmm-api-missing-{}", std::process::id()));
        let path = dir.join("vm.sock");
        let e = bind(&path).expect_err("the directory does not exist").to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains("No such file or directory"), "{e}");
        assert!(e.contains("create its directory"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    fn shared(with_vm: bool) -> Shared {
        let store = pv_store::SharedStore::new();
        let home = format!("/local/domain/{GUEST_DOMID}");
        store.write(&format!("{home}/memory/static-max"), b"65536").unwrap();
        store.write(&format!("{home}/control/shutdown"), b"").unwrap();
        let view = VmView {
            store,
            devices: Vec::new(),
            virtio: Arc::default(),
            hotplug: None,
            migrator: None,
            vm_state: Arc::new(|| Box::new(vmm::migration::NoVmState)),
            snapshot: None,
        };
        Shared {
            control: Arc::default(),
            view: Mutex::new(with_vm.then_some(view)),
            config: json!({}),
            grace: Duration::from_secs(1),
            shutdown_asked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            boots: Default::default(),
            migrated_to: Mutex::new(None),
        }
    }

    fn call(s: &Shared, method: &str, path: &str, body: &str) -> (u16, bool) {
        let req = Request { method: method.into(), path: path.into(), body: body.as_bytes().to_vec() };
        let (r, asked) = endpoint(s, &req);
        if r.status >= 400 {
            assert!(r.body.as_ref().and_then(|b| b["error"].as_str()).is_some(), "{r:?}");
        }
        (r.status, asked)
    }

    fn node(s: &Shared, key: &str) -> String {
        let v = s.view.lock().unwrap();
        let bytes = v.as_ref().unwrap().store.read(&format!("/local/domain/{GUEST_DOMID}/{key}")).unwrap();
        String::from_utf8(bytes).unwrap()
    }

    /// `xl mem-set` writes `memory/target`; libxl refuses a target above
    /// `static-max` (`libxl_set_memory_target()`, tools/libs/light/libxl_mem.c).
    #[test]
    fn balloon_writes_memory_target_within_static_max() {
        let s = shared(true);
        assert_eq!(call(&s, "PUT", "/vm.balloon", r#"{"target_kib": 32768}"#).0, 204);
        assert_eq!(node(&s, "memory/target"), "32768");
        assert_eq!(call(&s, "PUT", "/vm.balloon", r#"{"target_kib": 65537}"#).0, 400);
        assert_eq!(node(&s, "memory/target"), "32768", "a refused target is not written");
        assert_eq!(call(&s, "PUT", "/vm.balloon", r#"{"target": 1}"#).0, 400);
        assert_eq!(call(&s, "PUT", "/vm.balloon", "").0, 400);
    }

    /// `xl shutdown` / `xl reboot` write `control/shutdown`
    /// (docs/misc/xenstore-paths.pandoc); only shutdown starts the grace.
    #[test]
    fn shutdown_and_reboot_write_control_shutdown() {
        let s = shared(true);
        assert_eq!(call(&s, "PUT", "/vm.reboot", ""), (204, false));
        assert_eq!(node(&s, "control/shutdown"), "reboot");
        assert!(!s.shutdown_asked.load(Ordering::SeqCst));
        assert_eq!(call(&s, "PUT", "/vm.shutdown", ""), (204, true));
        assert_eq!(node(&s, "control/shutdown"), "poweroff");
        assert!(s.shutdown_asked.load(Ordering::SeqCst));
    }

    #[test]
    fn refusals_have_their_status() {
        let s = shared(false);
        assert_eq!(call(&s, "PUT", "/vm.pause", "").0, 409, "no vCPU yet");
        assert_eq!(call(&s, "GET", "/vm.stats", "").0, 409);
        assert_eq!(call(&s, "PUT", "/vm.shutdown", ""), (409, false));
        assert_eq!(call(&s, "PUT", "/vm.balloon", r#"{"target_kib": 1}"#).0, 409);
        assert_eq!(call(&s, "GET", "/vm", "").0, 200, "info answers while not running");
        assert_eq!(call(&s, "POST", "/vm", "").0, 405);
        assert_eq!(call(&s, "PUT", "/vm.resume", "{\"nonsense\": 1}").0, 400);
        assert_eq!(call(&s, "PUT", "/vm.resume", "{\"fresh\": true}").0, 409, "not suspended");
        assert_eq!(call(&s, "PUT", "/vm.suspend", "").0, 409, "no vCPU yet");
        assert_eq!(call(&s, "PUT", "/vm.suspend", "{\"timeout\": 1}").0, 400);
        assert_eq!(call(&s, "GET", "/", "").0, 404);
        assert_eq!(call(&s, "PUT", "/vm.migrate", "{}").0, 400, "no url");
        assert_eq!(call(&s, "PUT", "/vm.migrate", r#"{"url": "ftp:x"}"#).0, 400);
        assert_eq!(call(&s, "PUT", "/vm.migrate", r#"{"url": "tcp:127.0.0.1:1"}"#).0, 409, "no VM");
    }
}
