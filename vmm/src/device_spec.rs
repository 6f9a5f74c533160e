//! The devices a VM is given: one list of [`DeviceSpec`]s, each a device
//! kind with its transport. The CLI parses `--echo`, `--disk`, `--net` and
//! `--device` into it; the builder wires the Xen ones through the device
//! table ([`crate::devices::device_table`]) and the virtio ones onto the
//! virtio-mmio bus, each in list order. The types derive serde so that a
//! configuration file can carry the same list.

use crate::error::VmmError;
use backend::block::{DiskError, DiskSpec};
use backend::net::NetSpec;
use backend::xenbus::DeviceArg;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::str::FromStr;

/// How a device reaches the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// A Xen split device: ring pages, grants, an event channel, xenbus.
    #[default]
    Xen,
    /// A virtio device on virtio-mmio, listed in start-info.
    Virtio,
}

/// One device of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum DeviceSpec {
    /// An `echo` sample device (`device/echo/<n>`; Xen transport).
    Echo,
    /// A disk (`--disk`).
    Disk(DiskConfig),
    /// A network interface on a TAP device (`--net`).
    Net(NetConfig),
    /// A Xen device of any type in `backend::DEVICE_TYPES`, by its type
    /// name and option text, as `--device <type>[,<options>]` gives it
    /// (the options are checked when the device table builds it).
    Split {
        /// The type name (`echo`, `vbd`, `vif`, ...).
        device_type: String,
        /// Its options (may be empty).
        #[serde(default)]
        options: String,
    },
}

impl From<DeviceArg> for DeviceSpec {
    fn from(arg: DeviceArg) -> Self {
        DeviceSpec::Split { device_type: arg.device_type, options: arg.options }
    }
}

impl DeviceSpec {
    /// For a Xen-transport device: the device table's argument and the
    /// store id it asks for (`None`: the type's next id).
    pub fn xen_device(&self) -> Option<(DeviceArg, Option<u32>)> {
        match self {
            DeviceSpec::Echo => Some((DeviceArg::new(pv_abi::echo::DEVICE_TYPE, ""), None)),
            DeviceSpec::Disk(d) if d.transport == Transport::Xen => {
                Some((DeviceArg::new(pv_abi::blkif::DEVICE_TYPE, &d.spec().to_string()), d.vdev))
            }
            DeviceSpec::Net(n) if n.transport == Transport::Xen => {
                Some((DeviceArg::new(pv_abi::netif::DEVICE_TYPE, &n.options()), None))
            }
            DeviceSpec::Split { device_type, options } => Some((DeviceArg::new(device_type, options), None)),
            DeviceSpec::Disk(_) | DeviceSpec::Net(_) => None,
        }
    }

    /// Whether this is a disk on either transport (`--disk` or `--device vbd,...`).
    pub fn is_disk(&self) -> bool {
        match self {
            DeviceSpec::Disk(_) => true,
            DeviceSpec::Split { device_type, .. } => device_type == pv_abi::blkif::DEVICE_TYPE,
            DeviceSpec::Echo | DeviceSpec::Net(_) => false,
        }
    }
}

/// The virtio-blk disks of `specs`, in order.
pub fn virtio_disks(specs: &[DeviceSpec]) -> Vec<DiskSpec> {
    specs
        .iter()
        .filter_map(|s| match s {
            DeviceSpec::Disk(d) if d.transport == Transport::Virtio => Some(d.spec()),
            _ => None,
        })
        .collect()
}

/// The virtio-net interfaces of `specs`, in order.
pub fn virtio_nets(specs: &[DeviceSpec]) -> Result<Vec<NetSpec>, VmmError> {
    specs
        .iter()
        .filter_map(|s| match s {
            DeviceSpec::Net(n) if n.transport == Transport::Virtio => Some(n.spec()),
            _ => None,
        })
        .collect()
}

/// A disk: `--disk <path>[,readonly][,lock=off][,transport=xen|virtio][,vdev=<name|number>]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// The raw image file.
    pub path: PathBuf,
    /// Whether the guest may only read.
    #[serde(default)]
    pub readonly: bool,
    /// Whether the image is OFD-locked while the VM runs (`false`:
    /// `,lock=off`, unsafe: a second writer can corrupt the image).
    #[serde(default = "lock_on", skip_serializing_if = "is_true")]
    pub lock: bool,
    /// How the guest reaches it.
    #[serde(default)]
    pub transport: Transport,
    /// The Xen device number (`device/vbd/<vdev>`, see
    /// [`pv_abi::vdev`]); `None`: the next of 51712 (`xvda`), 51728, ...
    /// A configuration file may name it as `--disk ...,vdev=` does
    /// (`"xvdc"`, `"hda"`) or give the number.
    #[serde(default, deserialize_with = "vdev_name_or_number", skip_serializing_if = "Option::is_none")]
    pub vdev: Option<u32>,
}

/// A `vdev` as a Xen name (`xvdc`, `hda`, `d1p2`) or a number.
fn vdev_name_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Vdev {
        Number(u32),
        Name(String),
    }
    match Vdev::deserialize(d)? {
        Vdev::Number(n) => Ok(Some(n)),
        Vdev::Name(name) => {
            pv_abi::vdev::parse(&name).map(Some).map_err(|e| serde::de::Error::custom(format!("vdev '{name}' is {e}")))
        }
    }
}

impl DiskConfig {
    /// A Xen disk at the next free `xvd` number.
    pub fn xen(path: impl Into<PathBuf>, readonly: bool) -> Self {
        DiskConfig { path: path.into(), readonly, lock: true, transport: Transport::Xen, vdev: None }
    }

    /// A virtio-blk disk.
    pub fn virtio(path: impl Into<PathBuf>, readonly: bool) -> Self {
        DiskConfig { transport: Transport::Virtio, ..DiskConfig::xen(path, readonly) }
    }

    /// What the block back end opens.
    pub fn spec(&self) -> DiskSpec {
        DiskSpec { path: self.path.clone(), readonly: self.readonly, lock: self.lock }
    }
}

fn lock_on() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl FromStr for DiskConfig {
    type Err = VmmError;

    fn from_str(s: &str) -> Result<Self, VmmError> {
        let bad = |why: String| VmmError::Device { what: "disk", why: format!("--disk {s:?}: {why}") };
        let (rest, transport) =
            split_transport(s).map_err(|why| VmmError::Disk(DiskError::BadSpec { given: s.to_string(), why }))?;
        let (rest, vdev) = split_option(&rest, "vdev=");
        let vdev = match vdev {
            None => None,
            Some(name) => Some(pv_abi::vdev::parse(&name).map_err(|e| bad(format!("vdev '{name}' is {e}")))?),
        };
        if vdev.is_some() && transport == Transport::Virtio {
            return Err(bad("vdev= numbers a Xen disk; drop it for transport=virtio".into()));
        }
        let spec: DiskSpec = rest.parse()?;
        Ok(DiskConfig { path: spec.path, readonly: spec.readonly, lock: spec.lock, transport, vdev })
    }
}

/// A network interface: `--net tap=<ifname>[,mac=<mac>][,transport=xen|virtio]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// The TAP device (created if it does not exist).
    pub tap: String,
    /// The guest's MAC address, `02:00:00:00:00:01` style (default: one
    /// per interface, see `backend::net::NetSpec::default_mac`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// How the guest reaches it.
    #[serde(default)]
    pub transport: Transport,
}

impl NetConfig {
    /// The options as `--device vif,<options>` takes them.
    pub fn options(&self) -> String {
        match &self.mac {
            Some(mac) => format!("tap={},mac={mac}", self.tap),
            None => format!("tap={}", self.tap),
        }
    }

    /// The checked interface.
    pub fn spec(&self) -> Result<NetSpec, VmmError> {
        self.options().parse::<NetSpec>().map_err(VmmError::device("net"))
    }
}

impl FromStr for NetConfig {
    type Err = VmmError;

    /// Checks the options for either transport.
    fn from_str(s: &str) -> Result<Self, VmmError> {
        let bad = |why: String| VmmError::Device { what: "net", why };
        let (rest, transport) = split_transport(s).map_err(|why| bad(format!("--net {s:?}: {why}")))?;
        let spec = rest.parse::<NetSpec>().map_err(|e| bad(e.to_string()))?;
        Ok(NetConfig { tap: spec.tap, mac: spec.mac.as_ref().map(backend::net::format_mac), transport })
    }
}

/// Splits `transport=xen|virtio` off a comma-separated option list:
/// (the other options, the transport), or why the transport is unknown.
fn split_transport(s: &str) -> Result<(String, Transport), String> {
    let (rest, given) = split_option(s, "transport=");
    let transport = match given.as_deref() {
        None | Some("xen") => Transport::Xen,
        Some("virtio") => Transport::Virtio,
        Some(other) => return Err(format!("unknown transport '{other}' (xen or virtio)")),
    };
    Ok((rest, transport))
}

/// Splits the last `<key><value>` option off a comma-separated list: (the
/// other options, the value).
fn split_option(s: &str, key: &str) -> (String, Option<String>) {
    let mut value = None;
    let mut rest = Vec::new();
    for part in s.split(',') {
        match part.strip_prefix(key) {
            Some(v) => value = Some(v.to_string()),
            None => rest.push(part),
        }
    }
    (rest.join(","), value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_args() {
        let d: DiskConfig = "a.img,readonly,transport=virtio".parse().unwrap();
        assert_eq!(d, DiskConfig::virtio("a.img", true));
        assert_eq!("b.img".parse::<DiskConfig>().unwrap(), DiskConfig::xen("b.img", false));
        assert_eq!("b.img,transport=xen".parse::<DiskConfig>().unwrap().transport, Transport::Xen);
        let e = "b.img,transport=pci".parse::<DiskConfig>().unwrap_err().to_string();
        assert!(e.contains("unknown transport 'pci'"), "{e}");
        assert!("b.img,rw".parse::<DiskConfig>().is_err());
    }

    /// Numbers from Xen's docs/man/xen-vbd-interface.7.pandoc.
    #[test]
    fn disk_vdev_names_and_numbers() {
        let vdev = |s: &str| s.parse::<DiskConfig>().map(|d| d.vdev);
        assert_eq!(vdev("a.img").unwrap(), None, "the next of 51712, 51728, ...");
        assert_eq!(vdev("a.img,vdev=xvdb").unwrap(), Some(51728));
        assert_eq!(vdev("a.img,readonly,vdev=hda").unwrap(), Some(768));
        assert_eq!(vdev("a.img,vdev=sda").unwrap(), Some(2048));
        assert_eq!(vdev("a.img,vdev=xvdq").unwrap(), Some(1 << 28 | 16 << 8));
        assert_eq!(vdev("a.img,vdev=51712").unwrap(), Some(51712));
        let d: DiskConfig = "a.img,vdev=xvdc,readonly".parse().unwrap();
        assert_eq!((d.readonly, d.spec().to_string()), (true, "a.img,readonly".to_string()));
        // `lock=off` reaches the back end's spec (a Xen disk gets it as text).
        let d: DiskConfig = "a.img,lock=off,transport=virtio".parse().unwrap();
        assert_eq!((d.lock, d.spec().lock, d.spec().to_string()), (false, false, "a.img,lock=off".to_string()));
        assert!("a.img".parse::<DiskConfig>().unwrap().spec().lock);
        for (bad, want) in [
            ("a.img,vdev=vda", "vdev 'vda' is not a disk name"),
            ("a.img,vdev=hde", "vdev 'hde' is out of range"),
            ("a.img,vdev=", "vdev '' is not a disk name"),
            ("a.img,vdev=xvdb,transport=virtio", "drop it for transport=virtio"),
        ] {
            let e = bad.parse::<DiskConfig>().unwrap_err().to_string();
            assert!(e.contains(want) && !e.contains('\n'), "{bad}: {e}");
        }
    }

    #[test]
    fn net_args() {
        let n: NetConfig = "tap=t0".parse().unwrap();
        assert_eq!((n.options().as_str(), n.transport), ("tap=t0", Transport::Xen));
        let n: NetConfig = "tap=t0,transport=virtio,mac=02:00:00:00:00:09".parse().unwrap();
        assert_eq!((n.options().as_str(), n.transport), ("tap=t0,mac=02:00:00:00:00:09", Transport::Virtio));
        assert_eq!(n.spec().unwrap().mac, Some([2, 0, 0, 0, 0, 9]));
        let e = "tap=t0,transport=pci".parse::<NetConfig>().unwrap_err().to_string();
        assert!(e.contains("unknown transport 'pci'"), "{e}");
        assert!("transport=virtio".parse::<NetConfig>().is_err(), "no tap=");
        assert!("tap=t0,mac=03:00:00:00:00:01,transport=virtio".parse::<NetConfig>().is_err(), "multicast MAC");
    }

    #[test]
    fn one_list_feeds_both_transports_in_order() {
        let specs = vec![
            DeviceSpec::Echo,
            DeviceSpec::Disk(DiskConfig::xen("x.img", false)),
            DeviceSpec::Disk(DiskConfig::virtio("v0.img", false)),
            DeviceSpec::Disk(DiskConfig { vdev: Some(768), ..DiskConfig::xen("h.img", true) }),
            DeviceSpec::Net("tap=t0,transport=virtio".parse().unwrap()),
            DeviceSpec::Net("tap=t1".parse().unwrap()),
            DeviceSpec::from("vbd,y.img".parse::<DeviceArg>().unwrap()),
            DeviceSpec::Disk(DiskConfig::virtio("v1.img", true)),
        ];
        let xen: Vec<_> = specs.iter().filter_map(DeviceSpec::xen_device).collect();
        let names: Vec<_> = xen.iter().map(|(a, v)| (a.device_type.as_str(), a.options.as_str(), *v)).collect();
        assert_eq!(
            names,
            [
                ("echo", "", None),
                ("vbd", "x.img", None),
                ("vbd", "h.img,readonly", Some(768)),
                ("vif", "tap=t1", None),
                ("vbd", "y.img", None)
            ]
        );
        let vd: Vec<_> = virtio_disks(&specs).into_iter().map(|d| d.to_string()).collect();
        assert_eq!(vd, ["v0.img", "v1.img,readonly"]);
        assert_eq!(virtio_nets(&specs).unwrap().iter().map(|n| n.tap.as_str()).collect::<Vec<_>>(), ["t0"]);
        assert_eq!(specs.iter().filter(|s| s.is_disk()).count(), 5);
    }
}
