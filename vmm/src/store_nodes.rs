//! The store nodes Xen's toolstack writes that Xen guests read: the
//! domain's `domid` and `name`, its `control` directory, and each disk's
//! `dev` name in the back-end directory (GRUB names the disk after it).

use pv_abi::event_channel::DomId;
use pv_store::{SharedStore, StoreError};

/// Writes `/local/domain/<domid>/{domid,name}` and `control/shutdown`
/// (empty: no request).
pub fn write_domain_nodes(store: &SharedStore, domid: DomId, name: &str) -> Result<(), StoreError> {
    let home = format!("/local/domain/{domid}");
    store.write(&format!("{home}/domid"), domid.to_string().as_bytes())?;
    store.write(&format!("{home}/name"), name.as_bytes())?;
    store.write(&format!("{home}/control/shutdown"), b"")
}

/// Writes `/local/domain/<domid>/memory/static-max` and `memory/target`
/// in KiB, as `libxl__build_post()` (`tools/libs/light/libxl_dom.c`) does:
/// the balloon driver's limit and target. For a PVH guest both are the
/// pages it owns at boot (`XENMEM_maximum_reservation`), since the VMM
/// cannot back more.
pub fn write_memory_nodes(
    store: &SharedStore,
    domid: DomId,
    static_max_kib: u64,
    target_kib: u64,
) -> Result<(), StoreError> {
    let home = format!("/local/domain/{domid}/memory");
    store.write(&format!("{home}/static-max"), static_max_kib.to_string().as_bytes())?;
    store.write(&format!("{home}/target"), target_kib.to_string().as_bytes())
}

/// Asks the guest to shut down as `xl shutdown` / `xl reboot` do: writes
/// `action` (`poweroff`, `reboot`, ...) into its `control/shutdown`, which
/// fires the guest's watch on that node (`docs/misc/xenstore-paths.pandoc`).
pub fn request_shutdown(store: &SharedStore, domid: DomId, action: &str) -> Result<(), StoreError> {
    store.write(&format!("/local/domain/{domid}/control/shutdown"), action.as_bytes())
}

/// Writes each disk's `dev` (`xvda`, ...) into its back-end directory
/// `/local/domain/0/backend/vbd/<domid>/<vdev>`: the name the number
/// encodes (`pv_abi::vdev::decode`), as Xen's toolstack writes it.
pub fn name_disks(store: &SharedStore, domid: DomId) -> Result<(), StoreError> {
    let dir = format!("/local/domain/0/backend/vbd/{domid}");
    let vdevs = match store.directory(&dir) {
        Ok(v) => v,
        Err(StoreError::NoEntry) => return Ok(()),
        Err(e) => return Err(e),
    };
    for v in vdevs {
        // Named as the number encodes it (`--disk ...,vdev=` may give any).
        let Some(name) = v.parse::<u32>().ok().and_then(pv_abi::vdev::decode) else { continue };
        store.write(&format!("{dir}/{v}/dev"), name.to_string().as_bytes())?;
    }
    Ok(())
}

/// Xen's name of the `i`-th virtual disk: `xvda`, `xvdb`, ... `xvdz`, `xvdaa`.
pub fn disk_name(i: usize) -> String {
    let mut s = String::new();
    let mut n = i + 1;
    while n > 0 {
        n -= 1;
        s.insert(0, (b'a' + (n % 26) as u8) as char);
        n /= 26;
    }
    format!("xvd{s}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_nodes() {
        assert_eq!(
            (disk_name(0), disk_name(1), disk_name(25), disk_name(26)),
            ("xvda".into(), "xvdb".into(), "xvdz".into(), "xvdaa".into())
        );
        let s = SharedStore::new();
        write_domain_nodes(&s, 1, "guest").unwrap();
        assert_eq!(s.read("/local/domain/1/domid").unwrap(), b"1");
        assert_eq!(s.read("/local/domain/1/name").unwrap(), b"guest");
        assert!(s.read("/local/domain/1/control/shutdown").unwrap().is_empty());
        // `libxl__build_post()`: decimal KiB.
        write_memory_nodes(&s, 1, 15_720, 15_720).unwrap();
        assert_eq!(s.read("/local/domain/1/memory/static-max").unwrap(), b"15720");
        assert_eq!(s.read("/local/domain/1/memory/target").unwrap(), b"15720");
        // `xl shutdown`: `poweroff` in the guest's own control/shutdown.
        request_shutdown(&s, 1, "poweroff").unwrap();
        assert_eq!(s.read("/local/domain/1/control/shutdown").unwrap(), b"poweroff");
    }

    /// xen-vbd-interface(7): 51712 is xvda, 768 hda, 1 << 28 | 16 << 8 xvdq.
    #[test]
    fn dev_nodes_name_each_disk_by_its_number() {
        let s = SharedStore::new();
        let dir = "/local/domain/0/backend/vbd/1";
        for n in ["51712", "768", "268439552", "2048", "999"] {
            s.write(&format!("{dir}/{n}/state"), b"1").unwrap();
        }
        name_disks(&s, 1).unwrap();
        let dev = |n: &str| s.read_string(&format!("{dir}/{n}/dev")).ok();
        assert_eq!(
            (dev("51712"), dev("768"), dev("268439552")),
            (Some("xvda".into()), Some("hda".into()), Some("xvdq".into()))
        );
        assert_eq!((dev("2048"), dev("999")), (Some("sda".into()), None), "999 is a deprecated number: no name");
    }
}
