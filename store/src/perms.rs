//! Node permissions as `xenstored` keeps them (`docs/misc/xenstore.txt`
//! "Permissions", `tools/xenstored/core.c`): a list whose first entry
//! names the owner and the access of every domain not listed, each further
//! entry one domain's access. On the wire (`XS_GET_PERMS`,
//! `XS_SET_PERMS`) each entry is a string: a letter (`n` none, `r` read,
//! `w` write, `b` both) and a domain id, e.g. `n1` `r0`.
//!
//! The store keeps an explicit list only for nodes a `SET_PERMS` gave one
//! (and their descendants created later, which inherit it as `xenstored`'s
//! `construct_node()` does); the other nodes' list is derived from the
//! fixed path rules in the crate docs ([`implicit`]), so `GET_PERMS`
//! answers every node and the two views agree.

use pv_abi::event_channel::DomId;

use crate::path::{can_read, can_write, home};
use crate::StoreError;

/// Entries one node's list may hold (`xenstored`'s default
/// `quota-nperms`, `tools/xenstored/domain.c`: 5); more is `ENOSPC`.
pub const MAX_PERMS: usize = 5;

/// One entry: a domain and its access (`struct xs_permissions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Perm {
    /// The domain.
    pub domid: DomId,
    /// `XS_PERM_READ`.
    pub read: bool,
    /// `XS_PERM_WRITE`.
    pub write: bool,
}

impl Perm {
    /// An entry for `domid` with the access `letter` (`n`, `r`, `w`, `b`).
    fn new(domid: DomId, letter: u8) -> Option<Self> {
        let (read, write) = match letter {
            b'n' => (false, false),
            b'r' => (true, false),
            b'w' => (false, true),
            b'b' => (true, true),
            _ => return None,
        };
        Some(Perm { domid, read, write })
    }

    /// The wire form, e.g. `r1`.
    pub fn to_wire(self) -> String {
        let letter = match (self.read, self.write) {
            (false, false) => 'n',
            (true, false) => 'r',
            (false, true) => 'w',
            (true, true) => 'b',
        };
        format!("{letter}{}", self.domid)
    }
}

/// Parses the strings of a `SET_PERMS` payload (after the path):
/// `xenstore_strings_to_perms()` (`tools/include/xen-tools/xenstore-common.h`):
/// an unknown letter or a missing or non-numeric id is `EINVAL`; none at
/// all is `EINVAL` (`do_set_perms()` wants at least one); more than
/// [`MAX_PERMS`] is `ENOSPC`.
pub fn parse(strings: &[&str]) -> Result<Vec<Perm>, StoreError> {
    if strings.is_empty() {
        return Err(StoreError::Invalid);
    }
    if strings.len() > MAX_PERMS {
        return Err(StoreError::NoSpace);
    }
    strings
        .iter()
        .map(|s| {
            let (&letter, id) = s.as_bytes().split_first().ok_or(StoreError::Invalid)?;
            let id = pv_abi::xenbus::parse_u32(id).and_then(|d| DomId::try_from(d).ok()).ok_or(StoreError::Invalid)?;
            Perm::new(id, letter).ok_or(StoreError::Invalid)
        })
        .collect()
}

/// The `GET_PERMS` reply: each entry NUL-terminated.
pub fn to_reply(perms: &[Perm]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in perms {
        out.extend_from_slice(p.to_wire().as_bytes());
        out.push(0);
    }
    out
}

/// What `caller` may do to a node with list `perms`
/// (`perm_for_conn()`): domain 0 and the owner everything; else the first
/// entry naming the caller, else the first entry's access. Returns (read,
/// write, owner).
pub fn access(caller: DomId, perms: &[Perm]) -> (bool, bool, bool) {
    match perms.first() {
        None => (caller == 0, caller == 0, caller == 0),
        Some(owner) if caller == 0 || owner.domid == caller => (true, true, true),
        Some(owner) => {
            let p = perms[1..].iter().find(|p| p.domid == caller).unwrap_or(owner);
            (p.read, p.write, false)
        }
    }
}

/// The list the fixed path rules amount to for node `abs` created by
/// `creator`: a guest's own nodes are its (`n<d>`, as `construct_node()`
/// makes a domU the owner of what it creates); a node the VMM made where
/// guest `d` may write is `n0` `b<d>`; where it may only read, `n0` `r<d>`;
/// anything else `n0`. `guest` is the domain the path rules are asked
/// about (the node's home domain, if any).
pub fn implicit(abs: &str, creator: DomId, guest: Option<DomId>) -> Vec<Perm> {
    if creator != 0 {
        return vec![Perm { domid: creator, read: false, write: false }];
    }
    let none = Perm { domid: 0, read: false, write: false };
    match guest {
        Some(d) if can_write(d, abs) => vec![none, Perm { domid: d, read: true, write: true }],
        Some(d) if can_read(d, abs) => vec![none, Perm { domid: d, read: true, write: false }],
        _ => vec![none],
    }
}

/// The guest domain whose home or back-end directories hold `abs`
/// (`/local/domain/<d>/...` or `/local/domain/0/backend/<type>/<d>/...`).
pub fn guest_of(abs: &str) -> Option<DomId> {
    let rest = abs.strip_prefix("/local/domain/")?;
    let first = rest.split('/').next()?;
    let d: DomId = first.parse().ok()?;
    if d != 0 {
        return (abs.starts_with(&home(d))).then_some(d);
    }
    // /local/domain/0/backend/<type>/<d>
    let mut parts = rest.split('/').skip(1);
    match (parts.next(), parts.next(), parts.next()) {
        (Some("backend"), Some(_), Some(d)) => d.parse().ok().filter(|&d| d != 0),
        _ => None,
    }
}

/// Against `xenstore_strings_to_perms()` / `xenstore_perm_to_string()`
/// (`tools/include/xen-tools/xenstore-common.h`) and `perm_for_conn()`
/// (`tools/xenstored/core.c`).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_parse_and_print_as_xenstored_does() {
        let p = parse(&["n1", "r0", "b7", "w3"]).unwrap();
        assert_eq!(p.iter().map(|p| p.to_wire()).collect::<Vec<_>>(), ["n1", "r0", "b7", "w3"]);
        assert_eq!(to_reply(&p[..2]), b"n1\0r0\0");
        for bad in [&["x1"][..], &["r"], &["rx"], &["r-1"], &["r70000"], &[""], &[]] {
            assert_eq!(parse(bad), Err(StoreError::Invalid), "{bad:?}");
        }
        assert_eq!(parse(&["n1"; 6]), Err(StoreError::NoSpace));
    }

    #[test]
    fn owner_and_domain_0_get_everything_others_their_entry_or_the_default() {
        let p = parse(&["r1", "n2", "w3"]).unwrap();
        assert_eq!(access(1, &p), (true, true, true), "owner");
        assert_eq!(access(0, &p), (true, true, true), "tools");
        assert_eq!(access(2, &p), (false, false, false));
        assert_eq!(access(3, &p), (false, true, false));
        assert_eq!(access(4, &p), (true, false, false), "the first entry's access");
    }

    #[test]
    fn path_rules_read_as_lists() {
        assert_eq!(guest_of("/local/domain/1/data/x"), Some(1));
        assert_eq!(guest_of("/local/domain/0/backend/vbd/1/768"), Some(1));
        assert_eq!(guest_of("/local/domain/0/name"), None);
        assert_eq!(guest_of("/vm"), None);
        let wire = |v: Vec<Perm>| v.iter().map(|p| p.to_wire()).collect::<Vec<_>>();
        assert_eq!(wire(implicit("/local/domain/1/data/x", 1, Some(1))), ["n1"]);
        assert_eq!(wire(implicit("/local/domain/1/control/shutdown", 0, Some(1))), ["n0", "b1"]);
        assert_eq!(wire(implicit("/local/domain/1", 0, Some(1))), ["n0", "r1"]);
        assert_eq!(wire(implicit("/local/domain/0/backend/vbd/1/768", 0, Some(1))), ["n0", "r1"]);
        assert_eq!(wire(implicit("/local/domain/0", 0, None)), ["n0"]);
    }
}
