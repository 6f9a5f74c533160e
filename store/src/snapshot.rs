//! The store as data ([`StoreState`]), for snapshot/restore and
//! migration, as `xenstored`'s live-update state (`docs/designs/
//! xenstore-migration.md` in Xen: nodes with permissions, connections,
//! watches, transactions, quota accounting).
//!
//! [`Store::save_state`] takes the tree, every guest connection with its
//! watches and undelivered events, and the node quotas;
//! [`StoreServer::save_state`](crate::StoreServer::save_state) adds a
//! connection's server side (open transactions, a partly read request,
//! queued replies). [`Store::restore_state`] puts them back into a fresh
//! store and [`StoreServer::restore`](crate::StoreServer::restore) attaches
//! the guest's ring to its restored connection. Host watches (the back
//! ends' callbacks) are not saved: back ends register them again when
//! they re-attach, which fires their initial event as a new watch does.
//!
//! A state may come from a tampered file: [`Store::restore_state`] checks
//! every path, parent, size, quota and limit first and changes nothing on
//! error ([`StoreStateError`]).

use crate::path::{self, StorePath};
use crate::perms::Perm;
use crate::{Conn, ConnId, Node, Store, Watch, WatchEvent, Watcher};
use pv_abi::event_channel::DomId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// A checked tree: its nodes and per-domain node counts.
pub(crate) type LoadedTree = (BTreeMap<String, Node>, BTreeMap<DomId, usize>);

/// The version of [`StoreState`]'s layout.
pub const STORE_STATE_VERSION: u32 = 1;

/// One node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSave {
    /// Absolute path.
    pub path: String,
    /// Value.
    pub value: Vec<u8>,
    /// The domain that created it (quota owner).
    pub owner: DomId,
    /// An explicit permission list (`XS_SET_PERMS`), else the path rules.
    pub perms: Option<Vec<Perm>>,
}

/// A tree: nodes, per-domain node counts (quota), generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeSave {
    /// Every node, in path order.
    pub nodes: Vec<NodeSave>,
    /// Nodes owned per guest domain (the node quota's count).
    pub owned: Vec<(DomId, usize)>,
    /// Bumped by every change (transactions compare it).
    pub generation: u64,
}

/// One watch of a guest connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchSave {
    /// The absolute path watched, or a special `@` path.
    pub path: String,
    /// Whether `path` is special.
    pub special: bool,
    /// Events report paths relative to the domain's home.
    pub relative: bool,
    /// The guest's token.
    pub token: String,
}

/// A change a transaction replays at commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeSave {
    /// `XS_WRITE`.
    Write(String, Vec<u8>),
    /// `XS_MKDIR`.
    Mkdir(String),
    /// `XS_RM`.
    Rm(String),
    /// `XS_SET_PERMS`.
    SetPerms(String, Vec<Perm>),
}

/// One open transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionSave {
    /// Its id (never 0).
    pub id: u32,
    /// Its private copy of the tree.
    pub tree: TreeSave,
    /// The store's generation at its start (a commit after any other
    /// change fails with `EAGAIN`).
    pub generation: u64,
    /// Changes to replay.
    pub changes: Vec<ChangeSave>,
}

/// The server side of a guest connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerSave {
    /// A request read from the ring in part.
    pub inbuf: Vec<u8>,
    /// Replies and watch events not yet written to the ring (bytes,
    /// whether a reply).
    pub out: Vec<(Vec<u8>, bool)>,
    /// Bytes of the first of `out` already written.
    pub out_off: usize,
    /// Open transactions.
    pub transactions: Vec<TransactionSave>,
    /// The last transaction id handed out.
    pub next_tx_id: u32,
}

/// One guest connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnSave {
    /// Its id in the store.
    pub id: u64,
    /// The guest domain.
    pub domid: DomId,
    /// Watch events not yet delivered: (path, token).
    pub events: Vec<(String, String)>,
    /// Events dropped because the queue was full.
    pub dropped: u64,
    /// Its watches, in registration order.
    pub watches: Vec<WatchSave>,
    /// The ring server's side, if saved.
    pub server: Option<ServerSave>,
}

/// The whole store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreState {
    /// [`STORE_STATE_VERSION`] when saved.
    pub version: u32,
    /// The tree.
    pub tree: TreeSave,
    /// The next connection id.
    pub next_conn: u64,
    /// The guest connections.
    pub conns: Vec<ConnSave>,
}

/// Why a store state was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreStateError {
    /// Another layout version.
    #[error("store state version {0}, this build reads version {STORE_STATE_VERSION}")]
    Version(u32),
    /// A node path that is not a canonical absolute path, listed twice, or
    /// without its parent.
    #[error("store node {0:?}: bad path, duplicate or missing parent")]
    BadNode(String),
    /// A value or permission list beyond the limits.
    #[error("store node {0:?}: value or permissions out of range")]
    BadValue(String),
    /// Node counts that do not match the nodes, or beyond the quota.
    #[error("store quota of domain {0} does not match its nodes or exceeds the limit")]
    Quota(DomId),
    /// A connection inconsistent (id reused or beyond `next_conn`, too
    /// many events or watches, a bad watch path).
    #[error("store connection {0}: inconsistent")]
    BadConn(u64),
    /// A connection's server side out of range.
    #[error("store connection {0}: server state out of range")]
    BadServer(u64),
    /// The restored ring page is unusable.
    #[error("store ring page: {0}")]
    Ring(ring_buffers::RingError),
    /// No saved server side for the domain's connection.
    #[error("no saved store connection for domain {0}")]
    NoConn(DomId),
}

impl Store {
    /// The tree alone, as data.
    pub(crate) fn save_tree(&self) -> TreeSave {
        let nodes = (self.nodes.iter())
            .map(|(p, n)| NodeSave { path: p.clone(), value: n.value.clone(), owner: n.owner, perms: n.perms.clone() })
            .collect();
        TreeSave { nodes, owned: self.owned.iter().map(|(&d, &n)| (d, n)).collect(), generation: self.generation }
    }

    /// The store's state (connections without their server side).
    pub fn save_state(&self) -> StoreState {
        let conns = (self.conns.iter())
            .map(|(id, c)| ConnSave {
                id: id.0,
                domid: c.domid,
                events: c.events.iter().map(|e| (e.path.clone(), e.token.clone())).collect(),
                dropped: c.dropped,
                watches: (self.watches.iter())
                    .filter(|w| matches!(w.watcher, Watcher::Conn(x) if x == *id))
                    .map(|w| WatchSave {
                        path: w.path.clone(),
                        special: w.special,
                        relative: w.relative,
                        token: w.token.clone(),
                    })
                    .collect(),
                server: None,
            })
            .collect();
        StoreState { version: STORE_STATE_VERSION, tree: self.save_tree(), next_conn: self.next_conn, conns }
    }

    /// Checks a tree against `limits` and builds its nodes and quotas.
    pub(crate) fn load_tree(&self, t: &TreeSave) -> Result<LoadedTree, StoreStateError> {
        let mut nodes = BTreeMap::new();
        let mut owned: BTreeMap<DomId, usize> = BTreeMap::new();
        for n in &t.nodes {
            let bad = || StoreStateError::BadNode(n.path.clone());
            let canonical = n.path == "/" || path::resolve_node(0, &n.path).is_ok_and(|a| a == n.path);
            // `nodes` is filled in path order, so a parent comes first.
            let parent_ok = path::parent(&n.path).is_none_or(|p| nodes.contains_key(p));
            if !canonical || !parent_ok || nodes.contains_key(&n.path) || (n.path == "/") != nodes.is_empty() {
                return Err(bad());
            }
            let perms_ok = n.perms.as_ref().is_none_or(|l| !l.is_empty() && l.len() <= self.limits.max_value);
            if n.value.len() > self.limits.max_value || !perms_ok {
                return Err(StoreStateError::BadValue(n.path.clone()));
            }
            if n.owner != 0 {
                *owned.entry(n.owner).or_insert(0) += 1;
            }
            nodes.insert(n.path.clone(), Node { value: n.value.clone(), owner: n.owner, perms: n.perms.clone() });
        }
        if nodes.is_empty() {
            return Err(StoreStateError::BadNode("/".into()));
        }
        let saved: BTreeMap<DomId, usize> = t.owned.iter().copied().filter(|&(_, n)| n != 0).collect();
        let counted: BTreeMap<DomId, usize> = owned.into_iter().filter(|&(_, n)| n != 0).collect();
        if let Some((&d, _)) = saved.iter().chain(&counted).find(|(d, _)| saved.get(d) != counted.get(d)) {
            return Err(StoreStateError::Quota(d));
        }
        if let Some((&d, _)) = counted.iter().find(|(_, &n)| n > self.limits.max_nodes) {
            return Err(StoreStateError::Quota(d));
        }
        Ok((nodes, counted))
    }

    /// Checks a connection and builds it with its watches.
    fn load_conn(&self, c: &ConnSave, next_conn: u64) -> Result<(Conn, Vec<Watch>), StoreStateError> {
        let bad = || StoreStateError::BadConn(c.id);
        if c.id == 0 || c.id >= next_conn || c.events.len() > self.limits.max_pending_events {
            return Err(bad());
        }
        if c.domid != 0 && c.watches.len() > self.limits.max_watches {
            return Err(bad());
        }
        let mut watches = Vec::with_capacity(c.watches.len());
        for w in &c.watches {
            let ok = match path::resolve(c.domid, &w.path) {
                Ok(StorePath::Special(p)) => w.special && p == w.path,
                Ok(StorePath::Node { abs, .. }) => !w.special && abs == w.path && path::can_read(c.domid, &abs),
                Err(_) => false,
            };
            let dup = watches.iter().any(|x: &Watch| x.path == w.path && x.token == w.token);
            if !ok || dup || w.token.len() > self.limits.max_value {
                return Err(bad());
            }
            watches.push(Watch {
                domid: c.domid,
                path: w.path.clone(),
                special: w.special,
                relative: w.relative,
                token: w.token.clone(),
                watcher: Watcher::Conn(ConnId(c.id)),
            });
        }
        let events: VecDeque<WatchEvent> =
            c.events.iter().map(|(p, t)| WatchEvent { path: p.clone(), token: t.clone() }).collect();
        if events.iter().any(|e| e.path.len() + e.token.len() > self.limits.max_value) {
            return Err(bad());
        }
        let serial = crate::next_serial();
        let conn = Conn { domid: c.domid, events, dropped: c.dropped, log: Default::default(), kick: None, serial };
        Ok((conn, watches))
    }

    /// Replaces the tree, the guest connections and their watches with
    /// `s` (checked first; on error nothing changes). Host watches stay.
    /// Connections are replaced too: serve a restored guest with
    /// [`StoreServer::restore`](crate::StoreServer::restore). A server
    /// made before the restore is orphaned: its connection is gone, and
    /// dropping it leaves a restored connection that now has its id
    /// alone (each connection has a serial of its own).
    pub fn restore_state(&mut self, s: &StoreState) -> Result<(), StoreStateError> {
        if s.version != STORE_STATE_VERSION {
            return Err(StoreStateError::Version(s.version));
        }
        let (nodes, owned) = self.load_tree(&s.tree)?;
        let mut conns = BTreeMap::new();
        let mut conn_watches = Vec::new();
        for c in &s.conns {
            let (conn, w) = self.load_conn(c, s.next_conn)?;
            if conns.insert(ConnId(c.id), conn).is_some() {
                return Err(StoreStateError::BadConn(c.id));
            }
            conn_watches.extend(w);
        }
        self.watches.retain(|w| matches!(w.watcher, Watcher::Host(_)));
        self.watches.extend(conn_watches);
        self.nodes = nodes;
        self.owned = owned;
        self.generation = s.tree.generation;
        self.conns = conns;
        self.next_conn = s.next_conn;
        Ok(())
    }
}

impl crate::SharedStore {
    /// [`Store::save_state`] under the lock.
    pub fn save_state(&self) -> StoreState {
        self.with(None, |s| s.save_state())
    }

    /// [`Store::restore_state`] under the lock.
    pub fn restore_state(&self, s: &StoreState) -> Result<(), StoreStateError> {
        self.with(None, |st| st.restore_state(s))
    }
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
