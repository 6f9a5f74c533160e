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

/// Everything `vmm run` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Guest ELF file; with neither this nor `image`, the bundled demo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<PathBuf>,
    /// A bundled guest image by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Guest RAM, e.g. `64M`.
    pub mem: String,
    /// Guest command line.
    #[serde(default)]
    pub cmdline: String,
    /// vCPUs (1..=32).
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
    pub paging: String,
    /// Whether the per-thread seccomp filters are installed.
    pub seccomp: bool,
    /// The devices, in the order they are wired.
    #[serde(default)]
    pub devices: Vec<DeviceSpec>,
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
            devices,
        })
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
}
