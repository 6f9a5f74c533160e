//! The store: a XenStore-like tree of nodes, its watches, and the server
//! that answers a guest over its store ring.
//!
//! * [`Store`]: the tree. Nodes are absolute paths (`/local/domain/1/...`)
//!   holding byte values; every node may also have children. Operations
//!   are Xen's: read, write (creating missing parents, as `xenstored`
//!   does), mkdir, rm (recursive), directory, watch and unwatch.
//! * [`SharedStore`]: the cloneable, thread-safe handle the VMM and its
//!   back-ends use (acting as domain 0); it runs host watch callbacks after
//!   releasing the lock, so a callback may call back into the store.
//! * [`StoreServer`]: one guest's store ring (`xenstore_domain_interface`).
//! * [`xenbus`]: the back-end's half of the xenbus device handshake.
//!
//! # Permissions
//!
//! Kept deliberately simple (Xen has per-node ACLs; here the rules are
//! fixed and path-based):
//!
//! * domain 0 (the VMM) may do anything;
//! * a guest domain may read and watch its home `/local/domain/<domid>` and
//!   everything below it, and write, mkdir and rm strictly below it;
//! * a guest may read and watch, but not modify,
//!   `/local/domain/0/backend/<type>/<domid>` and below (its back-ends'
//!   directories);
//! * anything else is `EACCES`.
//!
//! On top of these, `XS_GET_PERMS` reports each node's list as `xenstored`
//! would hold it, and `XS_SET_PERMS` lets the owner of a node (a guest owns
//! what it creates) replace its list, which is then enforced for the other
//! domains and inherited by nodes created below it ([`perms`]).
//!
//! # Resource bounds
//!
//! Per guest domain ([`Limits`]): nodes it created (`ENOSPC` beyond),
//! value size (`E2BIG`, for every caller), watches (`E2BIG`, as
//! `xenstored`), and undelivered watch events per connection (further
//! events are dropped and counted).
//!
//! # Watches
//!
//! As in `xenstored`, a watch on `P` fires once when registered (with the
//! path as registered), and then for every write, mkdir or rm of `P` or of
//! a path below `P` (with the changed path). Removing a subtree also fires
//! the watches registered strictly inside it (with their own path). A
//! guest that registered a relative path gets event paths relative to its
//! home. Special `@...` paths can be watched but never fire.

mod op;
mod path;
pub mod perms;
mod server;
pub mod snapshot;
mod transaction;
pub mod xenbus;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use pv_abi::errno;
use pv_abi::event_channel::DomId;
use pv_abi::xs_wire::XENSTORE_PAYLOAD_MAX;

pub use path::{can_read, can_write, home, resolve, valid_char, StorePath};
pub use server::{StoreMetrics, StoreServer, StoreServerError, MAX_QUEUED_REPLIES};

/// A store operation's failure, as named on the wire in an `XS_ERROR` reply
/// (Xen's `xsd_errors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// `ENOENT`: no such node (or no such watch or transaction).
    #[error("no such node (ENOENT)")]
    NoEntry,
    /// `EACCES`: the caller may not do this to this path.
    #[error("permission denied (EACCES)")]
    Access,
    /// `EINVAL`: a malformed path, argument or message.
    #[error("invalid argument (EINVAL)")]
    Invalid,
    /// `E2BIG`: a value, reply or message too large, or too many watches.
    #[error("too big (E2BIG)")]
    TooBig,
    /// `ENOSPC`: the domain's node quota is used up.
    #[error("node quota exceeded (ENOSPC)")]
    NoSpace,
    /// `EEXIST`: the watch is already registered.
    #[error("already exists (EEXIST)")]
    Exists,
    /// `ENOSYS`: a known operation this store does not implement.
    #[error("not implemented (ENOSYS)")]
    NotImplemented,
    /// `EAGAIN`: a transaction conflicted with a change made since it
    /// started; the caller retries it.
    #[error("transaction conflict (EAGAIN)")]
    Again,
    /// `EBUSY`: a transaction started inside a transaction (Xen has no
    /// nested transactions).
    #[error("busy (EBUSY)")]
    Busy,
    /// `EPERM`: a guest tried to give a node to another owner
    /// (`XS_SET_PERMS`).
    #[error("operation not permitted (EPERM)")]
    NotPermitted,
}

impl StoreError {
    /// The errno value.
    pub fn errno(self) -> i64 {
        match self {
            StoreError::NoEntry => errno::ENOENT,
            StoreError::Access => errno::EACCES,
            StoreError::Invalid => errno::EINVAL,
            StoreError::TooBig => errno::E2BIG,
            StoreError::NoSpace => errno::ENOSPC,
            StoreError::Exists => errno::EEXIST,
            StoreError::NotImplemented => errno::ENOSYS,
            StoreError::Again => errno::EAGAIN,
            StoreError::Busy => errno::EBUSY,
            StoreError::NotPermitted => errno::EPERM,
        }
    }

    /// The name sent in an `XS_ERROR` reply (`"ENOENT"`, ...).
    pub fn name(self) -> &'static str {
        pv_abi::xs_wire::xsd_error_name(self.errno()).unwrap_or("EINVAL")
    }
}

/// Per-guest-domain resource bounds (domain 0 is only bound by
/// `max_value`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Nodes a guest domain may own (create), `ENOSPC` beyond.
    pub max_nodes: usize,
    /// Largest value in bytes, `E2BIG` beyond.
    pub max_value: usize,
    /// Watches a guest domain may hold, `E2BIG` beyond.
    pub max_watches: usize,
    /// Undelivered watch events per guest connection; more are dropped.
    pub max_pending_events: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_nodes: 1024, max_value: XENSTORE_PAYLOAD_MAX as usize, max_watches: 128, max_pending_events: 256 }
    }
}

/// One fired watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The path that changed (or the watch's path, see the module docs).
    pub path: String,
    /// The token given when the watch was registered.
    pub token: String,
}

/// A host watch callback. It runs after the store lock is released, on the
/// thread whose operation fired the watch.
pub type WatchSink = Arc<dyn Fn(&WatchEvent) + Send + Sync>;

/// Called (after the store lock is released) when watch events were
/// queued for a guest connection, so whoever runs its [`StoreServer`] can
/// call `process` (for example by signalling the device thread).
pub type Kick = Arc<dyn Fn() + Send + Sync>;

/// Identifies one guest connection (one store ring) to the [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

#[derive(Debug, Clone)]
struct Node {
    value: Vec<u8>,
    owner: DomId,
    /// The list `XS_SET_PERMS` gave this node (or an ancestor, inherited
    /// at creation); `None`: the path rules ([`perms::implicit`]).
    perms: Option<Vec<perms::Perm>>,
}

#[derive(Clone)]
enum Watcher {
    Host(WatchSink),
    Conn(ConnId),
}

impl Watcher {
    fn same(&self, other: &Watcher) -> bool {
        match (self, other) {
            (Watcher::Host(_), Watcher::Host(_)) => true,
            (Watcher::Conn(a), Watcher::Conn(b)) => a == b,
            _ => false,
        }
    }
}

struct Watch {
    domid: DomId,
    /// Absolute node path, or the special `@` path.
    path: String,
    special: bool,
    /// Report event paths relative to the domain's home.
    relative: bool,
    token: String,
    watcher: Watcher,
}

struct Conn {
    domid: DomId,
    events: VecDeque<WatchEvent>,
    dropped: u64,
    /// Rate limit of this connection's guest-caused log lines.
    log: pv_util::ratelimit::LogLimiter,
    kick: Option<Kick>,
    /// Unique in the process ([`next_serial`]): whose connection this is
    /// when a restore gave its id to another ([`Store::disconnect_if`]).
    serial: u64,
}

/// A new connection serial (never reused, not reset by a restore).
fn next_serial() -> u64 {
    static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Host callbacks due after an operation, to run once the lock is released
/// ([`Dispatch::run`]).
#[derive(Default)]
#[must_use = "host watch callbacks are lost unless the dispatch is run"]
pub struct Dispatch {
    host: Vec<(WatchSink, WatchEvent)>,
    kicks: Vec<(ConnId, Kick)>,
}

impl Dispatch {
    /// Runs the host watch callbacks and connection kicks, skipping the
    /// kick of connection `skip` (the one being served right now).
    pub fn run(self, skip: Option<ConnId>) {
        for (sink, ev) in &self.host {
            sink(ev);
        }
        for (conn, kick) in &self.kicks {
            if Some(*conn) != skip {
                kick();
            }
        }
    }

    /// Whether there is nothing to run.
    pub fn is_empty(&self) -> bool {
        self.host.is_empty() && self.kicks.is_empty()
    }
}

/// The store tree with its watches and guest connections. Each operation
/// takes the calling domain (0 for the VMM) and checks it against the
/// permission rules in the module docs.
pub struct Store {
    nodes: BTreeMap<String, Node>,
    watches: Vec<Watch>,
    conns: BTreeMap<ConnId, Conn>,
    next_conn: u64,
    owned: BTreeMap<DomId, usize>,
    limits: Limits,
    pending: Dispatch,
    /// Bumped by every change to the tree (transactions compare it).
    generation: u64,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("nodes", &self.nodes.len())
            .field("watches", &self.watches.len())
            .field("conns", &self.conns.len())
            .finish()
    }
}

impl Store {
    /// An empty store (just `/`, `/local`, `/local/domain` and
    /// `/local/domain/0`) with the default [`Limits`].
    pub fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    /// An empty store with the given limits.
    pub fn with_limits(limits: Limits) -> Self {
        let mut s = Store {
            nodes: BTreeMap::new(),
            watches: Vec::new(),
            conns: BTreeMap::new(),
            next_conn: 1,
            owned: BTreeMap::new(),
            limits,
            pending: Dispatch::default(),
            generation: 0,
        };
        for p in ["/", "/local", "/local/domain", "/local/domain/0"] {
            s.nodes.insert(p.to_owned(), Node { value: Vec::new(), owner: 0, perms: None });
        }
        s
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Number of nodes owned (created) by `domid`.
    pub fn nodes_owned(&self, domid: DomId) -> usize {
        self.owned.get(&domid).copied().unwrap_or(0)
    }

    /// Whether the absolute path `abs` exists (no permission check).
    pub fn exists(&self, abs: &str) -> bool {
        self.nodes.contains_key(abs)
    }

    /// Reads the value of `path` as `caller`.
    pub fn read(&self, caller: DomId, path: &str) -> Result<&[u8], StoreError> {
        let abs = path::resolve_node(caller, path)?;
        if !self.may(caller, &abs, false) {
            return Err(StoreError::Access);
        }
        self.nodes.get(&abs).map(|n| n.value.as_slice()).ok_or(StoreError::NoEntry)
    }

    /// The names of the children of `path`, in order.
    pub fn directory(&self, caller: DomId, path: &str) -> Result<Vec<String>, StoreError> {
        let abs = path::resolve_node(caller, path)?;
        if !self.may(caller, &abs, false) {
            return Err(StoreError::Access);
        }
        if !self.nodes.contains_key(&abs) {
            return Err(StoreError::NoEntry);
        }
        let prefix = path::subtree_prefix(&abs);
        Ok(self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| &k[prefix.len()..])
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .map(str::to_owned)
            .collect())
    }

    /// Writes `value` to `path` as `caller`, creating the node and any
    /// missing parents (with empty values).
    pub fn write(&mut self, caller: DomId, path: &str, value: &[u8]) -> Result<(), StoreError> {
        let abs = path::resolve_node(caller, path)?;
        if value.len() > self.limits.max_value {
            return Err(StoreError::TooBig);
        }
        if !self.may(caller, &abs, true) {
            return Err(StoreError::Access);
        }
        self.create(caller, &abs)?;
        if let Some(node) = self.nodes.get_mut(&abs) {
            node.value = value.to_vec();
        }
        self.fire(&abs);
        Ok(())
    }

    /// Creates `path` (and missing parents) with an empty value; an
    /// existing node is left alone and fires nothing.
    pub fn mkdir(&mut self, caller: DomId, path: &str) -> Result<(), StoreError> {
        let abs = path::resolve_node(caller, path)?;
        if !self.may(caller, &abs, true) {
            return Err(StoreError::Access);
        }
        if self.nodes.contains_key(&abs) {
            return Ok(());
        }
        self.create(caller, &abs)?;
        self.fire(&abs);
        Ok(())
    }

    /// Removes `path` and everything below it. As in `xenstored`, removing
    /// a missing node whose parent exists succeeds (and fires nothing); a
    /// missing parent is `ENOENT`. The root cannot be removed (`EINVAL`).
    pub fn rm(&mut self, caller: DomId, path: &str) -> Result<(), StoreError> {
        let abs = path::resolve_node(caller, path)?;
        if abs == "/" {
            return Err(StoreError::Invalid);
        }
        if !self.may(caller, &abs, true) {
            return Err(StoreError::Access);
        }
        if !self.nodes.contains_key(&abs) {
            let parent_exists = path::parent(&abs).is_some_and(|p| self.nodes.contains_key(p));
            return if parent_exists { Ok(()) } else { Err(StoreError::NoEntry) };
        }
        let prefix = path::subtree_prefix(&abs);
        let mut doomed: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        doomed.push(abs.clone());
        for k in doomed {
            if let Some(node) = self.nodes.remove(&k) {
                if node.owner != 0 {
                    if let Some(c) = self.owned.get_mut(&node.owner) {
                        *c = c.saturating_sub(1);
                    }
                }
            }
        }
        self.fire_rm(&abs);
        Ok(())
    }

    /// Registers a host watch (as domain 0). `sink` is called for each
    /// event, after the store lock is released, starting with the initial
    /// event. `EEXIST` if a host watch with this path and token exists.
    pub fn watch_host(&mut self, path: &str, token: &str, sink: WatchSink) -> Result<(), StoreError> {
        self.add_watch(0, path, token, Watcher::Host(sink))
    }

    /// Removes a host watch (`ENOENT` if there is none).
    pub fn unwatch_host(&mut self, path: &str, token: &str) -> Result<(), StoreError> {
        self.remove_watch(0, path, token, &Watcher::Host(Arc::new(|_: &WatchEvent| {})))
    }

    /// Registers a watch for guest connection `conn` (events are queued on
    /// the connection; see [`pop_event`](Self::pop_event)).
    pub fn watch_conn(&mut self, conn: ConnId, path: &str, token: &str) -> Result<(), StoreError> {
        let domid = self.conn_domid(conn)?;
        self.add_watch(domid, path, token, Watcher::Conn(conn))
    }

    /// Removes a watch of guest connection `conn` (`ENOENT` if none).
    pub fn unwatch_conn(&mut self, conn: ConnId, path: &str, token: &str) -> Result<(), StoreError> {
        let domid = self.conn_domid(conn)?;
        self.remove_watch(domid, path, token, &Watcher::Conn(conn))
    }

    /// Removes every watch of `conn` and its undelivered events
    /// (`XS_RESET_WATCHES`).
    pub fn reset_watches(&mut self, conn: ConnId) {
        self.watches.retain(|w| !matches!(w.watcher, Watcher::Conn(c) if c == conn));
        if let Some(c) = self.conns.get_mut(&conn) {
            c.events.clear();
        }
    }

    /// Registers a guest connection for `domid` and creates its home
    /// directory if missing. `kick` is called when watch events are queued
    /// for it.
    pub fn connect(&mut self, domid: DomId, kick: Option<Kick>) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        let serial = next_serial();
        self.conns
            .insert(id, Conn { domid, events: VecDeque::new(), dropped: 0, log: Default::default(), kick, serial });
        // Domain 0 may always create a home directory.
        let _ = self.mkdir(0, &home(domid));
        id
    }

    /// Sets (or replaces) the kick of connection `conn`.
    pub fn set_kick(&mut self, conn: ConnId, kick: Option<Kick>) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.kick = kick;
        }
    }

    /// The serial of connection `conn` (see [`disconnect_if`](Self::disconnect_if)).
    pub fn conn_serial(&self, conn: ConnId) -> Option<u64> {
        self.conns.get(&conn).map(|c| c.serial)
    }

    /// [`disconnect`](Self::disconnect) if `conn` is still the connection
    /// with `serial`: a server made before a restore
    /// ([`snapshot`]) must not drop the restored connection that now has
    /// its id.
    pub fn disconnect_if(&mut self, conn: ConnId, serial: u64) {
        if self.conn_serial(conn) == Some(serial) {
            self.disconnect(conn);
        }
    }

    /// Forgets connection `conn`: its watches and undelivered events.
    pub fn disconnect(&mut self, conn: ConnId) {
        self.reset_watches(conn);
        self.conns.remove(&conn);
    }

    /// Takes the oldest undelivered watch event of `conn`.
    pub fn pop_event(&mut self, conn: ConnId) -> Option<WatchEvent> {
        self.conns.get_mut(&conn)?.events.pop_front()
    }

    /// Undelivered watch events queued for `conn`.
    pub fn pending_events(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, |c| c.events.len())
    }

    /// Events dropped for `conn` because its queue was full.
    pub fn dropped_events(&self, conn: ConnId) -> u64 {
        self.conns.get(&conn).map_or(0, |c| c.dropped)
    }

    /// Number of watches held by `domid` (host watches count as domain 0).
    pub fn watch_count(&self, domid: DomId) -> usize {
        self.watches.iter().filter(|w| w.domid == domid).count()
    }

    /// Takes the host callbacks and kicks due so far; run them with
    /// [`Dispatch::run`] after releasing any lock around the store.
    pub fn take_dispatch(&mut self) -> Dispatch {
        std::mem::take(&mut self.pending)
    }

    /// Whether `caller` may read (or write) `abs`: the path rules, and for
    /// a node with an explicit list (or a new node under one) that list as
    /// `perm_for_conn()` reads it.
    fn may(&self, caller: DomId, abs: &str, write: bool) -> bool {
        let path_rule = if write { can_write(caller, abs) } else { can_read(caller, abs) };
        if !path_rule || caller == 0 {
            return path_rule;
        }
        let mut p = Some(abs);
        while let Some(cur) = p {
            if let Some(n) = self.nodes.get(cur) {
                let Some(list) = &n.perms else { return true };
                let (r, w, _) = perms::access(caller, list);
                return if write { w } else { r };
            }
            p = path::parent(cur);
        }
        true
    }

    /// A node's permission list (explicit, or what the path rules amount to).
    fn node_perms(&self, abs: &str, node: &Node) -> Vec<perms::Perm> {
        node.perms.clone().unwrap_or_else(|| perms::implicit(abs, node.owner, perms::guest_of(abs)))
    }

    /// `XS_GET_PERMS` (`do_get_perms()`): the node's list; `EACCES` if the
    /// caller may not read it, `ENOENT` if it does not exist.
    pub fn get_perms(&self, caller: DomId, path: &str) -> Result<Vec<perms::Perm>, StoreError> {
        let abs = path::resolve_node(caller, path)?;
        if !self.may(caller, &abs, false) {
            return Err(StoreError::Access);
        }
        let node = self.nodes.get(&abs).ok_or(StoreError::NoEntry)?;
        Ok(self.node_perms(&abs, node))
    }

    /// `XS_SET_PERMS` (`do_set_perms()`): replaces the node's list. The
    /// caller must own it (or be domain 0): `ENOENT` for a missing node,
    /// `EACCES` for one it does not own, `EPERM` if a guest names another
    /// owner. Fires the node's watches.
    pub fn set_perms(&mut self, caller: DomId, path: &str, list: Vec<perms::Perm>) -> Result<(), StoreError> {
        let abs = path::resolve_node(caller, path)?;
        if list.is_empty() {
            return Err(StoreError::Invalid);
        }
        if !self.may(caller, &abs, false) {
            return Err(StoreError::Access);
        }
        let node = self.nodes.get(&abs).ok_or(StoreError::NoEntry)?;
        let current = self.node_perms(&abs, node);
        let (_, write, owner) = perms::access(caller, &current);
        if !(write && owner) {
            return Err(StoreError::Access);
        }
        if caller != 0 && list[0].domid != current[0].domid {
            return Err(StoreError::NotPermitted);
        }
        if let Some(n) = self.nodes.get_mut(&abs) {
            n.perms = Some(list);
        }
        self.fire(&abs);
        Ok(())
    }

    fn conn_domid(&self, conn: ConnId) -> Result<DomId, StoreError> {
        self.conns.get(&conn).map(|c| c.domid).ok_or(StoreError::Invalid)
    }

    /// Creates `abs` and its missing ancestors, owned by `caller`, after
    /// checking the caller's node quota.
    fn create(&mut self, caller: DomId, abs: &str) -> Result<(), StoreError> {
        let mut missing = Vec::new();
        let mut p = Some(abs);
        while let Some(cur) = p {
            if self.nodes.contains_key(cur) {
                break;
            }
            missing.push(cur.to_owned());
            p = path::parent(cur);
        }
        if missing.is_empty() {
            return Ok(());
        }
        if caller != 0 {
            let owned = self.nodes_owned(caller);
            if owned + missing.len() > self.limits.max_nodes {
                return Err(StoreError::NoSpace);
            }
            *self.owned.entry(caller).or_insert(0) += missing.len();
        }
        // Inherit an explicit list, the creator (a guest) its owner, as
        // xenstored's construct_node() does.
        let inherited = p.and_then(|p| self.nodes.get(p)).and_then(|n| n.perms.clone()).map(|mut l| {
            if caller != 0 {
                l[0].domid = caller;
            }
            l
        });
        for k in missing {
            self.nodes.insert(k, Node { value: Vec::new(), owner: caller, perms: inherited.clone() });
        }
        Ok(())
    }

    fn add_watch(&mut self, domid: DomId, path: &str, token: &str, watcher: Watcher) -> Result<(), StoreError> {
        let (abs, special, relative) = match path::resolve(domid, path)? {
            StorePath::Node { abs, relative } => {
                if !can_read(domid, &abs) {
                    return Err(StoreError::Access);
                }
                (abs, false, relative)
            }
            StorePath::Special(p) => (p, true, false),
        };
        if self.watches.iter().any(|w| w.watcher.same(&watcher) && w.path == abs && w.token == token) {
            return Err(StoreError::Exists);
        }
        if domid != 0 && self.watch_count(domid) >= self.limits.max_watches {
            return Err(StoreError::TooBig);
        }
        self.watches.push(Watch {
            domid,
            path: abs,
            special,
            relative,
            token: token.to_owned(),
            watcher: watcher.clone(),
        });
        // Fires once on registration, with the path as registered.
        self.deliver(&watcher, WatchEvent { path: path.to_owned(), token: token.to_owned() });
        Ok(())
    }

    fn remove_watch(&mut self, domid: DomId, path: &str, token: &str, watcher: &Watcher) -> Result<(), StoreError> {
        let abs = match path::resolve(domid, path)? {
            StorePath::Node { abs, .. } => abs,
            StorePath::Special(p) => p,
        };
        let pos = self
            .watches
            .iter()
            .position(|w| w.watcher.same(watcher) && w.path == abs && w.token == token)
            .ok_or(StoreError::NoEntry)?;
        self.watches.remove(pos);
        Ok(())
    }

    /// Fires the watches at or above `abs` (a write or mkdir of `abs`).
    fn fire(&mut self, abs: &str) {
        self.generation += 1;
        let due: Vec<(Watcher, WatchEvent)> = self
            .watches
            .iter()
            .filter(|w| !w.special && path::is_at_or_below(abs, &w.path))
            .map(|w| (w.watcher.clone(), Self::event_for(w, abs)))
            .collect();
        for (watcher, ev) in due {
            self.deliver(&watcher, ev);
        }
    }

    /// Fires for the removal of the subtree at `abs`: watches at or above
    /// it with `abs`, watches strictly inside it with their own path.
    fn fire_rm(&mut self, abs: &str) {
        self.generation += 1;
        let due: Vec<(Watcher, WatchEvent)> = self
            .watches
            .iter()
            .filter(|w| !w.special)
            .filter_map(|w| {
                if path::is_at_or_below(abs, &w.path) {
                    Some((w.watcher.clone(), Self::event_for(w, abs)))
                } else if path::is_strictly_below(&w.path, abs) {
                    Some((w.watcher.clone(), Self::event_for(w, &w.path)))
                } else {
                    None
                }
            })
            .collect();
        for (watcher, ev) in due {
            self.deliver(&watcher, ev);
        }
    }

    fn event_for(w: &Watch, abs: &str) -> WatchEvent {
        let mut path = abs.to_owned();
        if w.relative {
            let home = format!("{}/", home(w.domid));
            if let Some(rel) = abs.strip_prefix(&home) {
                path = rel.to_owned();
            }
        }
        WatchEvent { path, token: w.token.clone() }
    }

    fn deliver(&mut self, watcher: &Watcher, ev: WatchEvent) {
        match watcher {
            Watcher::Host(sink) => self.pending.host.push((sink.clone(), ev)),
            Watcher::Conn(id) => {
                let max = self.limits.max_pending_events;
                let Some(conn) = self.conns.get_mut(id) else {
                    return;
                };
                if conn.events.len() >= max {
                    conn.dropped += 1;
                    pv_util::limited_warn!(
                        conn.log,
                        domid = conn.domid,
                        path = %ev.path,
                        dropped = conn.dropped,
                        "store: watch event queue full, event dropped"
                    );
                    return;
                }
                conn.events.push_back(ev);
                if let Some(kick) = &conn.kick {
                    if !self.pending.kicks.iter().any(|(c, _)| c == id) {
                        self.pending.kicks.push((*id, kick.clone()));
                    }
                }
            }
        }
    }
}

/// A cloneable, thread-safe handle on one [`Store`], acting as domain 0.
/// Every method dispatches the host watch callbacks it fired after
/// releasing the lock.
#[derive(Clone, Default)]
pub struct SharedStore {
    inner: Arc<Mutex<Store>>,
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStore").finish_non_exhaustive()
    }
}

impl SharedStore {
    /// A new empty store with the default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new empty store with the given limits.
    pub fn with_limits(limits: Limits) -> Self {
        SharedStore { inner: Arc::new(Mutex::new(Store::with_limits(limits))) }
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock leaves the tree consistent (every
        // operation validates before it mutates), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the locked store, then (unlocked) the host callbacks and
    /// kicks it fired, skipping the kick of connection `skip`.
    pub fn with<R>(&self, skip: Option<ConnId>, f: impl FnOnce(&mut Store) -> R) -> R {
        let (r, dispatch) = {
            let mut store = self.lock();
            let r = f(&mut store);
            (r, store.take_dispatch())
        };
        dispatch.run(skip);
        r
    }

    /// Reads a node.
    pub fn read(&self, path: &str) -> Result<Vec<u8>, StoreError> {
        self.with(None, |s| s.read(0, path).map(<[u8]>::to_vec))
    }

    /// Reads a node as UTF-8 text (`EINVAL` if it is not).
    pub fn read_string(&self, path: &str) -> Result<String, StoreError> {
        String::from_utf8(self.read(path)?).map_err(|_| StoreError::Invalid)
    }

    /// Writes a node (creating missing parents).
    pub fn write(&self, path: &str, value: &[u8]) -> Result<(), StoreError> {
        self.with(None, |s| s.write(0, path, value))
    }

    /// Writes a node with a text value.
    pub fn write_str(&self, path: &str, value: &str) -> Result<(), StoreError> {
        self.write(path, value.as_bytes())
    }

    /// Creates a node (and missing parents) with an empty value.
    pub fn mkdir(&self, path: &str) -> Result<(), StoreError> {
        self.with(None, |s| s.mkdir(0, path))
    }

    /// Removes a node and everything below it.
    pub fn rm(&self, path: &str) -> Result<(), StoreError> {
        self.with(None, |s| s.rm(0, path))
    }

    /// Lists a node's children.
    pub fn directory(&self, path: &str) -> Result<Vec<String>, StoreError> {
        self.with(None, |s| s.directory(0, path))
    }

    /// Registers a host watch; `sink` is called (unlocked) for the initial
    /// event before this returns, then for every change at or below `path`.
    pub fn watch_host(&self, path: &str, token: &str, sink: WatchSink) -> Result<(), StoreError> {
        self.with(None, |s| s.watch_host(path, token, sink))
    }

    /// Removes a host watch.
    pub fn unwatch_host(&self, path: &str, token: &str) -> Result<(), StoreError> {
        self.with(None, |s| s.unwatch_host(path, token))
    }
}

#[cfg(test)]
mod tests;
