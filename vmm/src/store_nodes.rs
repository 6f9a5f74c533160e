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

/// Writes each disk's `dev` (`xvda`, ...) into its back-end directory
/// `/local/domain/0/backend/vbd/<domid>/<vdev>` (vdev 51712 + 16 i).
pub fn name_disks(store: &SharedStore, domid: DomId) -> Result<(), StoreError> {
    let dir = format!("/local/domain/0/backend/vbd/{domid}");
    let vdevs = match store.directory(&dir) {
        Ok(v) => v,
        Err(StoreError::NoEntry) => return Ok(()),
        Err(e) => return Err(e),
    };
    for v in vdevs {
        let Some(i) = v.parse::<u32>().ok().and_then(|n| n.checked_sub(202 << 8)).map(|n| n as usize / 16) else {
            continue;
        };
        store.write(&format!("{dir}/{v}/dev"), disk_name(i).as_bytes())?;
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
    }
}
