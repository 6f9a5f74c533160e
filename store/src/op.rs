//! A store request parsed once into an operation ([`Op`]), for the ring
//! server and for transactions alike, and the tree operations both run on
//! a [`Store`] (the live one, or a transaction's snapshot).
//!
//! The order in which a request is refused is xenstored's
//! (`process_message` in Xen's `tools/xenstored/core.c`): first its type
//! ([`admit`]: unknown types `ENOSYS`, privileged ones `EACCES` for a
//! guest), then its transaction id (`ENOENT` for one not open), then its
//! payload ([`Op::parse`]: `EINVAL`).

use pv_abi::event_channel::DomId;
use pv_abi::xs_wire::*;

use crate::{Store, StoreError};

/// The reply of an operation that has no other result.
pub(crate) const OK: &[u8] = b"OK\0";

/// How a request type treats the transaction id in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxRule {
    /// The id must name an open transaction, or be 0 for none.
    LookedUp,
    /// The id is ignored (`WATCH`, `UNWATCH`: xenstored's `XS_FLAG_NOTID`).
    Ignored,
}

/// What the type alone decides, before the transaction id or payload are
/// looked at: types xenstored has no handler for are `ENOSYS` (so are
/// `WATCH_EVENT` and `ERROR`, which only the store sends); types only a
/// privileged domain may send (`CONTROL`, alias `DEBUG`, `INTRODUCE`,
/// `RELEASE`, `IS_DOMAIN_INTRODUCED`, `RESUME`, `SET_TARGET`) are `EACCES`
/// for a guest; types xenstored has and this store lacks are `ENOSYS`.
pub(crate) fn admit(type_: u32) -> Result<TxRule, StoreError> {
    match type_ {
        XS_CONTROL | XS_INTRODUCE | XS_RELEASE | XS_IS_DOMAIN_INTRODUCED | XS_RESUME | XS_SET_TARGET => {
            Err(StoreError::Access)
        }
        XS_WATCH | XS_UNWATCH => Ok(TxRule::Ignored),
        XS_DIRECTORY | XS_READ | XS_TRANSACTION_START | XS_TRANSACTION_END | XS_GET_DOMAIN_PATH | XS_WRITE
        | XS_MKDIR | XS_RM | XS_RESET_WATCHES | XS_GET_PERMS | XS_SET_PERMS | XS_DIRECTORY_PART => Ok(TxRule::LookedUp),
        // GET_FEATURE..SET_QUOTA (optional): not offered.
        _ => Err(StoreError::NotImplemented),
    }
}

/// One request's operation, its arguments borrowed from the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op<'a> {
    /// `READ <path>|`.
    Read(&'a str),
    /// `WRITE <path>|<value|>`.
    Write {
        /// The node.
        path: &'a str,
        /// Its new value (any bytes).
        value: &'a [u8],
    },
    /// `MKDIR <path>|`.
    Mkdir(&'a str),
    /// `RM <path>|`.
    Rm(&'a str),
    /// `DIRECTORY <path>|`.
    Directory(&'a str),
    /// `WATCH <wpath>|<token>|`.
    Watch {
        /// The watched path.
        path: &'a str,
        /// The guest's token.
        token: &'a str,
    },
    /// `UNWATCH <wpath>|<token>|`.
    Unwatch {
        /// The watched path.
        path: &'a str,
        /// The guest's token.
        token: &'a str,
    },
    /// `RESET_WATCHES |`: drops the connection's watches and transactions.
    ResetWatches,
    /// `GET_DOMAIN_PATH <domid>|`.
    GetDomainPath(DomId),
    /// `TRANSACTION_START |`.
    TransactionStart,
    /// `DIRECTORY_PART <path>|<offset>|`.
    DirectoryPart {
        /// The node.
        path: &'a str,
        /// Byte offset into the complete child list.
        offset: usize,
    },
    /// `GET_PERMS <path>|`.
    GetPerms(&'a str),
    /// `SET_PERMS <path>|<perm-as-string>|+`.
    SetPerms {
        /// The node.
        path: &'a str,
        /// The permission strings, each NUL-terminated (checked by
        /// [`Op::parse`]).
        perms: &'a [u8],
    },
    /// `TRANSACTION_END T|` (commit) or `F|` (abort).
    TransactionEnd {
        /// Commit (`T`) rather than abort (`F`).
        commit: bool,
    },
}

impl<'a> Op<'a> {
    /// Parses the payload of a request of type `type_` (one [`admit`]
    /// accepted): `EINVAL` for a payload that is not what Xen's
    /// `docs/misc/xenstore.txt` specifies for the type.
    pub(crate) fn parse(type_: u32, payload: &'a [u8]) -> Result<Self, StoreError> {
        Ok(match type_ {
            XS_READ => Op::Read(one_arg(payload)?),
            XS_WRITE => {
                let nul = payload.iter().position(|&b| b == 0).ok_or(StoreError::Invalid)?;
                let path = std::str::from_utf8(&payload[..nul]).map_err(|_| StoreError::Invalid)?;
                Op::Write { path, value: &payload[nul + 1..] }
            }
            XS_MKDIR => Op::Mkdir(one_arg(payload)?),
            XS_RM => Op::Rm(one_arg(payload)?),
            XS_DIRECTORY => Op::Directory(one_arg(payload)?),
            XS_WATCH | XS_UNWATCH => {
                let (path, token) = two_args(payload)?;
                match type_ {
                    XS_WATCH => Op::Watch { path, token },
                    _ => Op::Unwatch { path, token },
                }
            }
            XS_RESET_WATCHES if payload.is_empty() || one_arg(payload).is_ok() => Op::ResetWatches,
            XS_GET_DOMAIN_PATH => {
                let d = pv_abi::xenbus::parse_u32(one_arg(payload)?.as_bytes());
                Op::GetDomainPath(d.and_then(|d| DomId::try_from(d).ok()).ok_or(StoreError::Invalid)?)
            }
            // xenstored's do_transaction_start never reads the payload
            // (a reserved, empty string by docs/misc/xenstore.txt).
            XS_TRANSACTION_START => Op::TransactionStart,
            XS_GET_PERMS => Op::GetPerms(one_arg(payload)?),
            XS_DIRECTORY_PART => {
                let (path, off) = two_args(payload)?;
                Op::DirectoryPart { path, offset: atoi_unsigned(off) }
            }
            XS_SET_PERMS => {
                let nul = payload.iter().position(|&b| b == 0).ok_or(StoreError::Invalid)?;
                let path = std::str::from_utf8(&payload[..nul]).map_err(|_| StoreError::Invalid)?;
                let perms = &payload[nul + 1..];
                perm_list(perms)?;
                Op::SetPerms { path, perms }
            }
            XS_TRANSACTION_END => match one_arg(payload)? {
                "T" => Op::TransactionEnd { commit: true },
                "F" => Op::TransactionEnd { commit: false },
                _ => return Err(StoreError::Invalid),
            },
            _ => return Err(StoreError::Invalid),
        })
    }

    /// Runs a tree operation (read, write, mkdir, rm, directory) on `s` as
    /// `domid` and returns its reply; `None` for the other operations.
    pub(crate) fn apply(&self, s: &mut Store, domid: DomId) -> Option<Result<Vec<u8>, StoreError>> {
        Some(match *self {
            Op::Read(path) => s.read(domid, path).map(<[u8]>::to_vec),
            Op::Write { path, value } => s.write(domid, path, value).map(|()| OK.to_vec()),
            Op::Mkdir(path) => s.mkdir(domid, path).map(|()| OK.to_vec()),
            Op::Rm(path) => s.rm(domid, path).map(|()| OK.to_vec()),
            Op::Directory(path) => s.directory(domid, path).and_then(directory_reply),
            Op::DirectoryPart { path, offset } => {
                let gen = s.generation;
                s.directory(domid, path).map(|names| directory_part(names, offset, gen))
            }
            Op::GetPerms(path) => s.get_perms(domid, path).map(|l| crate::perms::to_reply(&l)),
            Op::SetPerms { path, perms } => {
                perm_list(perms).and_then(|l| s.set_perms(domid, path, l)).map(|()| OK.to_vec())
            }
            _ => return None,
        })
    }
}

/// A `DIRECTORY_PART` reply (`send_directory_part()` in
/// `tools/xenstored/core.c`): the generation as a NUL-terminated decimal,
/// then the whole names of the child list (each NUL-terminated) from byte
/// `offset` on that fit `XENSTORE_PAYLOAD_MAX`, and one more NUL if that
/// reaches the end of the list (an offset at or past the end gives just
/// the generation and the NUL). The generation is the store's: it changes
/// whenever anything changes, so an unchanged one still proves the node
/// unchanged, as the protocol requires.
fn directory_part(names: Vec<String>, offset: usize, generation: u64) -> Vec<u8> {
    let mut list = Vec::new();
    for n in names {
        list.extend_from_slice(n.as_bytes());
        list.push(0);
    }
    let mut out = generation.to_string().into_bytes();
    out.push(0);
    if offset >= list.len() {
        out.push(0);
        return out;
    }
    let maxlen = XENSTORE_PAYLOAD_MAX as usize - out.len() - 1;
    let mut len = 0;
    for name in list[offset..].split_inclusive(|&b| b == 0) {
        if len + name.len() > maxlen {
            break;
        }
        len += name.len();
    }
    out.extend_from_slice(&list[offset..offset + len]);
    if offset + len == list.len() {
        out.push(0);
    }
    out
}

/// A `DIRECTORY` reply: each name NUL-terminated; `E2BIG` beyond
/// `XENSTORE_PAYLOAD_MAX`.
fn directory_reply(names: Vec<String>) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    for n in names {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
        if out.len() > XENSTORE_PAYLOAD_MAX as usize {
            return Err(StoreError::TooBig);
        }
    }
    Ok(out)
}

/// The permission strings of a `SET_PERMS` payload, parsed: the
/// NUL-terminated ones, as `xenstore_count_strings()`
/// (`tools/include/xen-tools/xenstore-common.h`) counts them; a trailing
/// fragment without its NUL is not a string and is ignored.
pub(crate) fn perm_list(strings: &[u8]) -> Result<Vec<crate::perms::Perm>, StoreError> {
    let mut parts: Vec<&[u8]> = strings.split(|&b| b == 0).collect();
    // What follows the last NUL (empty, or the uncounted fragment).
    parts.pop();
    let parts = parts.into_iter().map(std::str::from_utf8).collect::<Result<Vec<_>, _>>();
    crate::perms::parse(&parts.map_err(|_| StoreError::Invalid)?)
}

/// The `DIRECTORY_PART` offset as xenstored reads it: `off =
/// atoi(...)` into an `unsigned int` (glibc's `atoi()` is `(int)strtol(s,
/// NULL, 10)`: leading white space, a sign, the digits, saturating; no
/// digits is 0). So a negative offset lies past any child list.
fn atoi_unsigned(s: &str) -> usize {
    let s = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut v: i64 = 0;
    for d in digits.bytes().take_while(u8::is_ascii_digit).map(|d| i64::from(d - b'0')) {
        v = if neg { v.saturating_mul(10).saturating_sub(d) } else { v.saturating_mul(10).saturating_add(d) };
    }
    v as i32 as u32 as usize
}

/// A payload that is exactly one NUL-terminated string.
fn one_arg(payload: &[u8]) -> Result<&str, StoreError> {
    match payload.split_last() {
        Some((0, s)) if !s.contains(&0) => std::str::from_utf8(s).map_err(|_| StoreError::Invalid),
        _ => Err(StoreError::Invalid),
    }
}

/// A payload that is exactly two NUL-terminated strings.
fn two_args(payload: &[u8]) -> Result<(&str, &str), StoreError> {
    let nul = payload.iter().position(|&b| b == 0).ok_or(StoreError::Invalid)?;
    let a = std::str::from_utf8(&payload[..nul]).map_err(|_| StoreError::Invalid)?;
    let b = one_arg(&payload[nul + 1..])?;
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Xen's `tools/xenstored/core.c` (`wire_funcs`, `process_message`):
    /// no handler is `ENOSYS`, a privileged type from a guest `EACCES`,
    /// `WATCH`/`UNWATCH` ignore the transaction id.
    #[test]
    fn types_are_admitted_as_xenstored_does() {
        for t in [99, XS_INVALID, XS_WATCH_EVENT, XS_ERROR, 20, XS_TYPE_COUNT] {
            assert_eq!(admit(t), Err(StoreError::NotImplemented), "type {t}");
        }
        for t in [XS_CONTROL, XS_INTRODUCE, XS_RELEASE, XS_IS_DOMAIN_INTRODUCED, XS_RESUME, XS_SET_TARGET] {
            assert_eq!(admit(t), Err(StoreError::Access), "type {t}");
        }
        assert_eq!(admit(XS_WATCH), Ok(TxRule::Ignored));
        assert_eq!(admit(XS_UNWATCH), Ok(TxRule::Ignored));
        assert_eq!(admit(XS_READ), Ok(TxRule::LookedUp));
        assert_eq!(admit(XS_TRANSACTION_START), Ok(TxRule::LookedUp));
    }

    /// `send_directory_part()` (`tools/xenstored/core.c`): generation,
    /// names from the offset, a final empty string at the end of the list;
    /// a long list comes in pieces that fit `XENSTORE_PAYLOAD_MAX`.
    #[test]
    fn directory_parts_as_xenstored_sends_them() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(directory_part(names(&["ab", "c"]), 0, 7), b"7\0ab\0c\0\0");
        assert_eq!(directory_part(names(&["ab", "c"]), 3, 7), b"7\0c\0\0");
        assert_eq!(directory_part(names(&["ab", "c"]), 5, 7), b"7\0\0");
        assert_eq!(directory_part(names(&["ab", "c"]), 99, 7), b"7\0\0");
        let many: Vec<String> = (0..1000).map(|i| format!("child-{i:05}")).collect();
        let (mut off, mut got) = (0, Vec::new());
        loop {
            let r = directory_part(many.clone(), off, 1);
            assert!(r.len() <= XENSTORE_PAYLOAD_MAX as usize);
            let body = &r[2..];
            if body == b"\0" {
                break;
            }
            let done = body.ends_with(b"\0\0");
            let part = if done { &body[..body.len() - 1] } else { body };
            got.extend(
                part.split(|&b| b == 0).filter(|n| !n.is_empty()).map(|n| String::from_utf8(n.to_vec()).unwrap()),
            );
            off += part.len();
            if done {
                break;
            }
        }
        assert_eq!(got, many);
        assert_eq!(Op::parse(XS_DIRECTORY_PART, b"a\0x\0"), Ok(Op::DirectoryPart { path: "a", offset: 0 }), "atoi");
        assert_eq!(Op::parse(XS_DIRECTORY_PART, b"a\0 +3x\0"), Ok(Op::DirectoryPart { path: "a", offset: 3 }), "atoi");
        assert_eq!(
            Op::parse(XS_DIRECTORY_PART, b"a\0-1\0"),
            Ok(Op::DirectoryPart { path: "a", offset: u32::MAX as usize }),
            "(unsigned int)atoi(\"-1\")"
        );
        assert_eq!(Op::parse(XS_DIRECTORY_PART, b"a\0"), Err(StoreError::Invalid), "two strings");
    }

    /// `do_set_perms()` counts the strings with `xenstore_count_strings()`
    /// (`tools/include/xen-tools/xenstore-common.h`): only NUL-terminated
    /// ones, so a trailing fragment is not an entry.
    #[test]
    fn set_perms_counts_only_terminated_strings() {
        let list = |s: &[&str]| crate::perms::parse(s);
        assert_eq!(perm_list(b"n1\0r0\0"), list(&["n1", "r0"]));
        assert_eq!(perm_list(b"n1\0r0"), list(&["n1"]), "fragment ignored");
        assert_eq!(perm_list(b"n1\0\xff"), list(&["n1"]), "fragment ignored");
        assert_eq!(perm_list(b"n1"), Err(StoreError::Invalid), "no string");
        assert_eq!(perm_list(b""), Err(StoreError::Invalid));
    }

    /// Payloads as `docs/misc/xenstore.txt` writes them.
    #[test]
    fn payloads_parse_into_operations() {
        assert_eq!(Op::parse(XS_READ, b"a/b\0"), Ok(Op::Read("a/b")));
        assert_eq!(Op::parse(XS_WRITE, b"a\0v\0w"), Ok(Op::Write { path: "a", value: b"v\0w" }));
        assert_eq!(Op::parse(XS_WATCH, b"p\0t\0"), Ok(Op::Watch { path: "p", token: "t" }));
        assert_eq!(Op::parse(XS_GET_DOMAIN_PATH, b"7\0"), Ok(Op::GetDomainPath(7)));
        assert_eq!(Op::parse(XS_TRANSACTION_START, b"\0"), Ok(Op::TransactionStart));
        assert_eq!(Op::parse(XS_TRANSACTION_START, b""), Ok(Op::TransactionStart), "payload ignored, as xenstored");
        assert_eq!(Op::parse(XS_TRANSACTION_END, b"F\0"), Ok(Op::TransactionEnd { commit: false }));
        assert_eq!(Op::parse(XS_RESET_WATCHES, b""), Ok(Op::ResetWatches));
        for (t, p) in [
            (XS_READ, &b"a"[..]),
            (XS_WRITE, b"a"),
            (XS_UNWATCH, b"p\0"),
            (XS_TRANSACTION_END, b"X\0"),
            (XS_GET_DOMAIN_PATH, b"70000\0"),
        ] {
            assert_eq!(Op::parse(t, p), Err(StoreError::Invalid), "type {t} payload {p:?}");
        }
    }
}
