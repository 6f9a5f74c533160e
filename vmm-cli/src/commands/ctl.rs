//! `vmm ctl --socket <path> <command>`: one request to a running VM's API
//! socket (docs/api.md). A 2xx answer prints its JSON body (if any) on
//! stdout and exits 0; anything else is one `error:` line and status 1.

use crate::args::{CtlArgs, CtlCommand};
use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

/// How long the answer may take (pause waits up to 2 s for the vCPU, a
/// device removal up to its timeout, 10 s by default, 60 s at most).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(65);
/// The largest answer read (stats of many devices stay far below).
const MAX_ANSWER: u64 = 1 << 20;

/// The method, path and body for `cmd`.
pub fn request(cmd: &CtlCommand) -> (&'static str, &'static str, Option<Value>) {
    match cmd {
        CtlCommand::Info => ("GET", "/vm", None),
        CtlCommand::Stats => ("GET", "/vm.stats", None),
        CtlCommand::Pause => ("PUT", "/vm.pause", None),
        CtlCommand::Resume { fresh: false } => ("PUT", "/vm.resume", None),
        CtlCommand::Resume { fresh: true } => ("PUT", "/vm.resume", Some(json!({ "fresh": true }))),
        CtlCommand::Suspend { timeout_ms: None } => ("PUT", "/vm.suspend", None),
        CtlCommand::Suspend { timeout_ms: Some(t) } => ("PUT", "/vm.suspend", Some(json!({ "timeout_ms": t }))),
        CtlCommand::Shutdown => ("PUT", "/vm.shutdown", None),
        CtlCommand::Reboot => ("PUT", "/vm.reboot", None),
        CtlCommand::Destroy => ("PUT", "/vm.destroy", None),
        CtlCommand::Balloon { target_kib } => ("PUT", "/vm.balloon", Some(json!({ "target_kib": target_kib }))),
        CtlCommand::AddDisk { disk } => ("PUT", "/vm.add-disk", Some(json!({ "disk": disk }))),
        CtlCommand::AddNet { net } => ("PUT", "/vm.add-net", Some(json!({ "net": net }))),
        CtlCommand::RemoveDevice { id, timeout_ms: None } => ("PUT", "/vm.remove-device", Some(json!({ "id": id }))),
        CtlCommand::RemoveDevice { id, timeout_ms: Some(t) } => {
            ("PUT", "/vm.remove-device", Some(json!({ "id": id, "timeout_ms": t })))
        }
        // The VMM's working directory may not be ours.
        CtlCommand::Snapshot { dir, cooperative, timeout_ms } => {
            let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
            let mut body = json!({ "dir": dir, "cooperative": cooperative });
            if let Some(t) = timeout_ms {
                body["timeout_ms"] = json!(t);
            }
            ("PUT", "/vm.snapshot", Some(body))
        }
        CtlCommand::Migrate { url } => ("PUT", "/vm.migrate", Some(json!({ "url": url }))),
    }
}

/// Sends one request and returns the status and body.
pub fn call(socket: &std::path::Path, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Vec<u8>)> {
    let mut s = UnixStream::connect(socket).with_context(|| {
        format!("cannot connect to {}: is `vmm run --api-socket {}` running?", socket.display(), socket.display())
    })?;
    s.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    s.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all([head.as_bytes(), body.as_bytes()].concat().as_slice())?;
    let mut answer = Vec::new();
    s.take(MAX_ANSWER).read_to_end(&mut answer).context("no answer from the VMM")?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(&answer) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(anyhow!("the VMM's answer is not HTTP")),
    };
    Ok((resp.code.unwrap_or(0), answer[n..].to_vec()))
}

/// `vmm ctl`.
pub fn ctl(args: CtlArgs) -> Result<ExitCode> {
    let (method, path, body) = request(&args.cmd);
    let (status, body) = call(&args.socket, method, path, body.as_ref())?;
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    if (200..300).contains(&status) {
        if let Some(v) = json {
            // A closed pipe (`| head`) is not an error of the request.
            let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&v)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let msg = json
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
    Err(anyhow!("{method} {path}: {status}: {msg}"))
}
