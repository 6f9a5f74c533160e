//! The run configuration: what `vmm run` boots, as plain data with one
//! list of devices ([`vmm::DeviceSpec`]). The command line fills it
//! ([`RunConfig::from_args`]); its types derive serde so that a
//! configuration file can fill it too. [`RunConfig::vm_config`] turns it
//! into the library's [`VmConfig`].

use crate::args::RunArgs;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use vmm::console::ConsoleOut;
use vmm::{DeviceSpec, DiskConfig, Kernel, NetConfig, VmConfig, VmmError};

/// Size of the demo's scratch disk.
const DEMO_DISK_BYTES: u64 = 4 << 20;

/// Everything `vmm run` needs. A configuration file (`--config`) holds
/// these keys, every one optional ([`RunConfig::from_toml`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Guest ELF file; with neither this nor `image`, the bundled demo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<PathBuf>,
    /// A bundled guest image by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Guest RAM, e.g. `64M`.
    #[serde(default = "default_mem")]
    pub mem: String,
    /// Guest command line.
    #[serde(default)]
    pub cmdline: String,
    /// vCPUs (1..=[`vmm::vm::MAX_VCPUS`]).
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    /// Print counters at shutdown.
    #[serde(default)]
    pub stats: bool,
    /// Stop the guest after this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Seconds a guest asked to power off has to do so.
    #[serde(default = "default_grace")]
    pub shutdown_grace: f64,
    /// A Xen guest's reboot: `restart` (boot it again) or `exit`.
    #[serde(default = "default_on_reboot")]
    pub on_reboot: String,
    /// Guest console output to this file instead of stdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_file: Option<PathBuf>,
    /// Page-table pool mode: `native`, `trapped` or `pv`.
    #[serde(default = "default_paging")]
    pub paging: String,
    /// Whether the per-thread seccomp filters are installed.
    #[serde(default = "default_true")]
    pub seccomp: bool,
    /// Serve the HTTP API on this Unix socket (docs/api.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_socket: Option<PathBuf>,
    /// The devices, in the order they are wired.
    #[serde(default)]
    pub devices: Vec<DeviceSpec>,
    /// `--incoming <url>`: wait for a live migration (command line only:
    /// the configuration then comes from the stream).
    #[serde(skip)]
    pub incoming: Option<String>,
}

impl RunConfig {
    /// The configuration the command line asks for. The device list holds
    /// the `--echo` devices, then `--disk`, `--device` and `--net` in
    /// their given order (so Xen ids are what they always were).
    pub fn from_args(args: RunArgs) -> Result<Self, VmmError> {
        let mut devices: Vec<DeviceSpec> = (0..args.echo).map(|_| DeviceSpec::Echo).collect();
        for d in &args.disk {
            devices.push(DeviceSpec::Disk(d.parse::<DiskConfig>()?));
        }
        devices.extend(args.device.into_iter().map(DeviceSpec::from));
        for n in &args.net {
            devices.push(DeviceSpec::Net(n.parse::<NetConfig>()?));
        }
        Ok(RunConfig {
            kernel: args.kernel,
            image: args.image,
            mem: args.mem,
            cmdline: args.cmdline,
            vcpus: args.vcpus,
            stats: args.stats,
            timeout: args.timeout,
            shutdown_grace: args.shutdown_grace,
            on_reboot: args.on_reboot,
            console_file: args.console_file,
            paging: args.paging,
            seccomp: !args.no_seccomp,
            api_socket: args.api_socket,
            devices,
            incoming: args.incoming,
        })
    }

    /// The configuration of `vmm run`: the `--config` file if given, with
    /// every option given on the command line (`matches`) overriding it;
    /// any device option replaces the file's device list.
    pub fn from_command_line(args: RunArgs, matches: &clap::ArgMatches) -> Result<Self> {
        let file = args.config.clone();
        let cli = RunConfig::from_args(args)?;
        let Some(path) = file else { return Ok(cli) };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("cannot read the config file {}: {e}", path.display()))?;
        let mut cfg = RunConfig::from_toml(&text).map_err(|e| anyhow::anyhow!("{}:{e}", path.display()))?;
        let given = |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
        if given("kernel") || given("image") {
            (cfg.kernel, cfg.image) = (cli.kernel, cli.image);
        }
        macro_rules! over {
            ($($id:literal => $field:ident),*) => { $(if given($id) { cfg.$field = cli.$field; })* };
        }
        over!("mem" => mem, "cmdline" => cmdline, "vcpus" => vcpus, "stats" => stats, "timeout" => timeout,
            "shutdown_grace" => shutdown_grace, "on_reboot" => on_reboot, "console_file" => console_file,
            "paging" => paging, "no_seccomp" => seccomp, "api_socket" => api_socket);
        if ["echo", "disk", "device", "net"].iter().any(|id| given(id)) {
            cfg.devices = cli.devices;
        }
        cfg.incoming = cli.incoming;
        Ok(cfg)
    }

    /// A configuration file's contents. Errors are one line: `<line>: key
    /// `<key>`: <what is wrong>` (the caller puts the file name first).
    pub fn from_toml(text: &str) -> Result<Self, ConfigFileError> {
        let cfg: RunConfig = toml::from_str(text).map_err(|e| ConfigFileError::at(text, e.span(), e.message()))?;
        cfg.check().map_err(|(key, why)| ConfigFileError::at(text, key_span(text, key, false), &why))?;
        Ok(cfg)
    }

    /// The values clap checks on the command line, checked for a file.
    fn check(&self) -> Result<(), (&'static str, String)> {
        if self.kernel.is_some() && self.image.is_some() {
            return Err(("image", "give either `kernel` or `image`, not both".into()));
        }
        vmm::builder::parse_mem_size(&self.mem).map_err(|e| ("mem", e.to_string()))?;
        if xen_domain::mmu::parse_mode(&self.paging).is_none() {
            return Err(("paging", format!("'{}' is not one of native, trapped, pv", self.paging)));
        }
        if !(1..=vmm::vm::MAX_VCPUS).contains(&self.vcpus) {
            return Err(("vcpus", format!("{} vCPUs: give between 1 and {}", self.vcpus, vmm::vm::MAX_VCPUS)));
        }
        if !["restart", "exit"].contains(&self.on_reboot.as_str()) {
            return Err(("on_reboot", format!("'{}' is not one of restart, exit", self.on_reboot)));
        }
        seconds(self.shutdown_grace).map_err(|e| ("shutdown_grace", e.to_string()))?;
        if let Some(t) = self.timeout {
            seconds(t).map_err(|e| ("timeout", e.to_string()))?;
        }
        Ok(())
    }

    /// The configuration as TOML (`--print-config`): what `--config`
    /// reads back to the same configuration.
    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string(self)?)
    }

    /// The library's configuration, and the scratch disk's directory
    /// (removed when dropped) if the demo got one.
    pub fn vm_config(&self) -> Result<(VmConfig, Option<tempfile::TempDir>)> {
        let mem_bytes = vmm::builder::parse_mem_size(&self.mem)?;
        let kernel = kernel(self.kernel.clone(), self.image.as_deref())?;
        let mut devices = self.devices.clone();
        let scratch = scratch_disk(&kernel, &mut devices)?;
        let console = match &self.console_file {
            Some(p) => ConsoleOut::File(std::sync::Arc::new(std::sync::Mutex::new(
                std::fs::File::create(p).map_err(VmmError::Console)?,
            ))),
            None => ConsoleOut::Stdout,
        };
        let cfg = VmConfig {
            kernel,
            mem_bytes,
            cmdline: self.cmdline.clone(),
            console,
            timeout: self.timeout.map(seconds).transpose()?,
            shutdown_grace: seconds(self.shutdown_grace)?,
            paging: xen_domain::mmu::parse_mode(&self.paging).unwrap_or_default(),
            devices,
            vcpus: self.vcpus,
        };
        Ok((cfg, scratch))
    }
}

/// A configuration file error, located.
#[derive(Debug, thiserror::Error)]
#[error("{line}: {key}{why}")]
pub struct ConfigFileError {
    /// The 1-based line.
    pub line: usize,
    /// `key `<key>`: ` when the line has one.
    key: String,
    why: String,
}

impl ConfigFileError {
    fn at(text: &str, span: Option<std::ops::Range<usize>>, why: &str) -> Self {
        let span = span.map(|s| s.start.min(text.len())..s.end.min(text.len()));
        // A device's table reaches serde whole (the list is tagged by
        // `kind`), so its errors point at the table's header: an unknown
        // key is found in the table by name.
        let unknown = why.strip_prefix("unknown field `").and_then(|w| w.split('`').next());
        let inside =
            span.clone().zip(unknown).and_then(|(s, k)| key_span(&text[s.start..], k, true).map(|r| s.start + r.start));
        let start = inside.or(span.map(|s| s.start)).unwrap_or(0);
        let line = text[..start].matches('\n').count() + 1;
        let this = text.lines().nth(line - 1).unwrap_or("");
        // The key the line sets (`[[devices]]` headers and values alone
        // have none to name).
        let key = this.split_once('=').map(|(k, _)| k.trim()).filter(|k| !k.is_empty() && !k.starts_with('['));
        ConfigFileError {
            line,
            key: key.map(|k| format!("key `{k}`: ")).unwrap_or_default(),
            // toml's messages can span lines; the error stays one.
            why: why.trim().replace('\n', " "),
        }
    }
}

/// Where the `key = ...` line is, if it is there: before the first table
/// header, or (`table`) in the table whose header is `text`'s first line.
fn key_span(text: &str, key: &str, table: bool) -> Option<std::ops::Range<usize>> {
    let mut at = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if line.split_once('=').is_some_and(|(k, _)| k.trim() == key) {
            return Some(at..at + line.len());
        }
        if line.trim_start().starts_with('[') && !(table && i == 0) {
            return None;
        }
        at += line.len();
    }
    None
}

fn default_mem() -> String {
    "64M".into()
}

fn default_paging() -> String {
    "native".into()
}

fn default_true() -> bool {
    true
}

fn default_vcpus() -> u32 {
    1
}

fn default_grace() -> f64 {
    vmm::vm::DEFAULT_SHUTDOWN_GRACE.as_secs_f64()
}

fn default_on_reboot() -> String {
    "restart".into()
}

/// A number of seconds from the command line or a configuration file.
fn seconds(s: f64) -> Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(s)
        .map_err(|_| anyhow::anyhow!("{s} is not a number of seconds: give a non-negative number, e.g. 5 or 0.5"))
}

/// The guest image the configuration names.
fn kernel(file: Option<PathBuf>, image: Option<&str>) -> Result<Kernel> {
    Ok(match (file, image) {
        (Some(p), _) => Kernel::File(p),
        // "demo" is what a snapshot or a migration stream calls the
        // default image (`--image` was not given).
        (None, Some("demo")) => Kernel::Bundled("demo", frontend_guest::images::DEMO),
        (None, Some(name)) => {
            let (name, img) = frontend_guest::images::ALL.iter().find(|(n, _)| *n == name).ok_or_else(|| {
                anyhow::anyhow!("no bundled image '{name}': run `vmm images` to list them, or pass --kernel <elf>")
            })?;
            Kernel::Bundled(name, img)
        }
        (None, None) => Kernel::Bundled("demo", frontend_guest::images::DEMO),
    })
}

/// The demo needs a disk: with none given, a scratch image in a temporary
/// directory, removed when the returned guard drops.
fn scratch_disk(kernel: &Kernel, devices: &mut Vec<DeviceSpec>) -> Result<Option<tempfile::TempDir>, VmmError> {
    if !matches!(kernel, Kernel::Bundled("demo", _)) || devices.iter().any(DeviceSpec::is_disk) {
        return Ok(None);
    }
    let dir = tempfile::Builder::new().prefix("vmm-demo-").tempdir().map_err(|e| VmmError::Io("scratch disk", e))?;
    let path = dir.path().join("scratch.img");
    let f = std::fs::File::create(&path).map_err(|e| VmmError::Io("scratch disk", e))?;
    f.set_len(DEMO_DISK_BYTES).map_err(|e| VmmError::Io("scratch disk", e))?;
    devices.push(DeviceSpec::Disk(DiskConfig::xen(path, false)));
    Ok(Some(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> RunConfig {
        let cli = crate::args::Cli::try_parse_from([&["vmm", "run"], args].concat()).unwrap();
        let crate::args::Command::Run(run) = cli.cmd else { panic!("not run") };
        RunConfig::from_args(*run).unwrap()
    }

    #[test]
    fn every_device_flag_lands_in_the_one_list_in_order() {
        let cfg = parse(&[
            "--net",
            "tap=t0,transport=virtio",
            "--disk",
            "a.img,vdev=xvdc",
            "--device",
            "vif,tap=t1",
            "--echo",
            "2",
            "--disk",
            "b.img,readonly,transport=virtio",
        ]);
        let want = vec![
            DeviceSpec::Echo,
            DeviceSpec::Echo,
            DeviceSpec::Disk(DiskConfig { vdev: Some(51744), ..DiskConfig::xen("a.img", false) }),
            DeviceSpec::Disk(DiskConfig::virtio("b.img", true)),
            DeviceSpec::Split { device_type: "vif".into(), options: "tap=t1".into() },
            DeviceSpec::Net(NetConfig { tap: "t0".into(), mac: None, transport: vmm::Transport::Virtio }),
        ];
        assert_eq!(cfg.devices, want);
    }

    #[test]
    fn the_default_image_is_found_again_by_its_saved_name() {
        // A snapshot or migration stream stores the config with the
        // default image named "demo" (vmm restore, vmm run --incoming).
        assert!(matches!(kernel(None, None).unwrap(), Kernel::Bundled("demo", _)));
        assert!(matches!(kernel(None, Some("demo")).unwrap(), Kernel::Bundled("demo", _)));
        assert!(kernel(None, Some("nosuch")).is_err());
    }

    #[test]
    fn the_config_round_trips_through_serde() {
        let cfg = parse(&["--image", "net", "--net", "tap=t0,mac=02:00:00:00:00:07", "--disk", "a.img,vdev=hda"]);
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains(r#""kind":"disk""#) && json.contains(r#""vdev":768"#), "{json}");
        assert!(json.contains(r#""mac":"02:00:00:00:00:07""#), "{json}");
        assert_eq!(serde_json::from_str::<RunConfig>(&json).unwrap(), cfg);
        let minimal: RunConfig = serde_json::from_str(
            r#"{"mem":"64M","paging":"native","seccomp":true,"devices":[{"kind":"echo"},{"kind":"disk","path":"x.img"}]}"#,
        )
        .unwrap();
        assert_eq!(minimal.devices, [DeviceSpec::Echo, DeviceSpec::Disk(DiskConfig::xen("x.img", false))]);
    }

    #[test]
    fn the_demo_gets_a_scratch_disk_only_without_one() {
        let (cfg, dir) = parse(&[]).vm_config().unwrap();
        assert!(dir.is_some());
        assert!(matches!(&cfg.devices[..], [DeviceSpec::Disk(d)] if d.path.starts_with(dir.unwrap().path())));
        let (cfg, dir) = parse(&["--disk", "a.img,transport=virtio"]).vm_config().unwrap();
        assert!(dir.is_none() && cfg.devices.len() == 1);
        let (_, dir) = parse(&["--device", "vbd,a.img"]).vm_config().unwrap();
        assert!(dir.is_none());
        let (_, dir) = parse(&["--image", "hello"]).vm_config().unwrap();
        assert!(dir.is_none());
    }

    #[test]
    fn a_toml_file_round_trips_and_defaults_what_it_leaves_out() {
        let cfg = parse(&["--image", "net", "--net", "tap=t0", "--disk", "a.img,vdev=hda", "--timeout", "3"]);
        let text = cfg.to_toml().unwrap();
        assert_eq!(RunConfig::from_toml(&text).unwrap(), cfg, "{text}");
        // Every key is optional: the command line's defaults.
        assert_eq!(RunConfig::from_toml("").unwrap(), parse(&[]));
        // A disk's vdev by name, as `--disk ...,vdev=` takes it, or number.
        let named = RunConfig::from_toml("[[devices]]\nkind = \"disk\"\npath = \"a.img\"\nvdev = \"xvdc\"\n").unwrap();
        assert_eq!(named.devices, parse(&["--disk", "a.img,vdev=xvdc"]).devices);
        let e = RunConfig::from_toml("[[devices]]\nkind = \"disk\"\npath = \"a.img\"\nvdev = \"floppy\"\n");
        assert!(e.unwrap_err().to_string().contains("vdev 'floppy'"));
    }

    #[test]
    fn toml_errors_say_line_and_key() {
        let e = RunConfig::from_toml("mem = \"64M\"\n\ntimeout = -1\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.to_string().starts_with("3: key `timeout`: "), "{e}");
        let e = RunConfig::from_toml("[[devices]]\nkind = \"net\"\ntap = \"t0\"\ncolour = 3\n").unwrap_err();
        assert!(e.to_string().starts_with("4: key `colour`: unknown field `colour`"), "{e}");
        let e = RunConfig::from_toml("kernel = \"k.elf\"\nimage = \"hello\"\n").unwrap_err();
        assert!(e.to_string().starts_with("2: key `image`: give either"), "{e}");
    }
}
