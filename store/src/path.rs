//! Store path syntax: validation, resolution of relative paths, and the
//! path relations watches and permissions are built on.

use pv_abi::event_channel::DomId;
use pv_abi::xs_wire::{XENSTORE_ABS_PATH_MAX, XENSTORE_REL_PATH_MAX};

use super::StoreError;

/// A path after validation and resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorePath {
    /// An absolute node path (`/...`), with whether the caller gave it
    /// relative to its home (`/local/domain/<domid>`).
    Node {
        /// The absolute path.
        abs: String,
        /// The caller wrote it relative to its home.
        relative: bool,
    },
    /// A special watch path (`@introduceDomain`, `@releaseDomain`, ...):
    /// valid only for WATCH and UNWATCH.
    Special(String),
}

/// Whether `c` may appear in a store path (Xen's set: letters, digits and
/// `/_@-`).
pub fn valid_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'/' | b'_' | b'@' | b'-')
}

/// The home directory of `domid`: `/local/domain/<domid>`.
pub fn home(domid: DomId) -> String {
    format!("/local/domain/{domid}")
}

/// Validates `path` as given by `domid` and resolves a relative path
/// against the caller's home. Rules: non-empty; only [`valid_char`]s; no
/// `//`; no trailing `/` except the root; at most
/// [`XENSTORE_REL_PATH_MAX`] bytes when relative and
/// [`XENSTORE_ABS_PATH_MAX`] bytes once absolute. Anything else is
/// `EINVAL`.
pub fn resolve(domid: DomId, path: &str) -> Result<StorePath, StoreError> {
    let b = path.as_bytes();
    if b.is_empty() || !b.iter().all(|&c| valid_char(c)) || path.contains("//") {
        return Err(StoreError::Invalid);
    }
    if path.len() > 1 && path.ends_with('/') {
        return Err(StoreError::Invalid);
    }
    match b[0] {
        b'@' => {
            if path.len() > XENSTORE_ABS_PATH_MAX {
                return Err(StoreError::Invalid);
            }
            Ok(StorePath::Special(path.to_owned()))
        }
        b'/' => {
            if path.len() > XENSTORE_ABS_PATH_MAX {
                return Err(StoreError::Invalid);
            }
            Ok(StorePath::Node { abs: path.to_owned(), relative: false })
        }
        _ => {
            if path.len() > XENSTORE_REL_PATH_MAX {
                return Err(StoreError::Invalid);
            }
            let abs = format!("{}/{path}", home(domid));
            if abs.len() > XENSTORE_ABS_PATH_MAX {
                return Err(StoreError::Invalid);
            }
            Ok(StorePath::Node { abs, relative: true })
        }
    }
}

/// Resolves a path that must name a node (not a special `@` path).
pub fn resolve_node(domid: DomId, path: &str) -> Result<String, StoreError> {
    match resolve(domid, path)? {
        StorePath::Node { abs, .. } => Ok(abs),
        StorePath::Special(_) => Err(StoreError::Invalid),
    }
}

/// Whether `path` is `ancestor` or lies below it.
pub fn is_at_or_below(path: &str, ancestor: &str) -> bool {
    if ancestor == "/" {
        return path.starts_with('/');
    }
    path == ancestor || is_strictly_below(path, ancestor)
}

/// Whether `path` lies strictly below `ancestor`.
pub fn is_strictly_below(path: &str, ancestor: &str) -> bool {
    if ancestor == "/" {
        return path.len() > 1 && path.starts_with('/');
    }
    path.len() > ancestor.len() && path.starts_with(ancestor) && path.as_bytes()[ancestor.len()] == b'/'
}

/// The prefix every strict descendant of `path` starts with.
pub fn subtree_prefix(path: &str) -> String {
    if path == "/" {
        "/".to_owned()
    } else {
        format!("{path}/")
    }
}

/// The parent of an absolute path (`None` for the root).
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

/// Whether `domid` may read and watch the absolute path `abs`: domain 0
/// everywhere; a guest at or below its home, and at or below
/// `/local/domain/0/backend/<type>/<domid>` (its back-ends' directories).
pub fn can_read(domid: DomId, abs: &str) -> bool {
    if domid == 0 || is_at_or_below(abs, &home(domid)) {
        return true;
    }
    let Some(rest) = abs.strip_prefix("/local/domain/0/backend/") else {
        return false;
    };
    let mut parts = rest.split('/');
    let (Some(ty), Some(d)) = (parts.next(), parts.next()) else {
        return false;
    };
    !ty.is_empty() && d == domid.to_string()
}

/// Whether `domid` may write, create or remove the absolute path `abs`:
/// domain 0 everywhere, a guest strictly below its home.
pub fn can_write(domid: DomId, abs: &str) -> bool {
    domid == 0 || is_strictly_below(abs, &home(domid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let ok = |p: &str| resolve(1, p).is_ok();
        assert!(ok("/"));
        assert!(ok("/local/domain/1/device/echo/0/state"));
        assert!(ok("device/echo-x_y@z"));
        assert!(ok("@introduceDomain"));
        for bad in ["", "//", "/a//b", "/a/", "a/", "/a b", "/a.b", "/a\0b", "/ü"] {
            assert!(!ok(bad), "{bad:?} accepted");
        }
        assert_eq!(
            resolve(7, "device/x"),
            Ok(StorePath::Node { abs: "/local/domain/7/device/x".into(), relative: true })
        );
        assert_eq!(resolve_node(1, "@x"), Err(StoreError::Invalid));
    }

    #[test]
    fn length_limits() {
        let abs = format!("/{}", "a".repeat(XENSTORE_ABS_PATH_MAX - 1));
        assert!(resolve(1, &abs).is_ok());
        let abs = format!("/{}", "a".repeat(XENSTORE_ABS_PATH_MAX));
        assert_eq!(resolve(1, &abs), Err(StoreError::Invalid));
        let rel = "a".repeat(XENSTORE_REL_PATH_MAX);
        assert!(resolve(1, &rel).is_ok());
        let rel = "a".repeat(XENSTORE_REL_PATH_MAX + 1);
        assert_eq!(resolve(1, &rel), Err(StoreError::Invalid));
    }

    #[test]
    fn relations() {
        assert!(is_at_or_below("/a/b", "/a"));
        assert!(is_at_or_below("/a", "/a"));
        assert!(!is_at_or_below("/ab", "/a"));
        assert!(is_at_or_below("/ab", "/"));
        assert!(!is_strictly_below("/a", "/a"));
        assert!(!is_strictly_below("/", "/"));
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/"), None);
    }

    #[test]
    fn permissions() {
        assert!(can_read(1, "/local/domain/1"));
        assert!(can_read(1, "/local/domain/1/x"));
        assert!(!can_read(1, "/local/domain/10/x"));
        assert!(!can_read(1, "/local/domain/2/x"));
        assert!(can_read(1, "/local/domain/0/backend/echo/1"));
        assert!(can_read(1, "/local/domain/0/backend/echo/1/0/state"));
        assert!(!can_read(1, "/local/domain/0/backend/echo/2/0/state"));
        assert!(!can_read(1, "/local/domain/0/backend/echo"));
        assert!(!can_read(1, "/local/domain/0/backend/echo/11"));
        assert!(!can_read(1, "/"));
        assert!(can_read(0, "/"));
        assert!(can_write(1, "/local/domain/1/x"));
        assert!(!can_write(1, "/local/domain/1"));
        assert!(!can_write(1, "/local/domain/0/backend/echo/1/0/state"));
        assert!(can_write(0, "/anything"));
    }
}
