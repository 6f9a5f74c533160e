//! Store transactions (`XS_TRANSACTION_START` / `XS_TRANSACTION_END`).
//!
//! A transaction works on a private snapshot of the tree taken at its
//! start, so it sees its own writes and nobody else's; its changes are
//! recorded and, on commit, replayed on the live store (firing watches
//! then) provided the store has not changed since the snapshot. Otherwise
//! the commit fails with `EAGAIN` and the guest retries, as with
//! `xenstored`. (Conflicts are detected per store, not per node: any change
//! made meanwhile fails the commit, as Xen's `docs/misc/xenstore.txt`
//! describes it; today's xenstored checks per node.)
//!
//! Errors as xenstored's (`tools/xenstored/transaction.c`): an id that
//! names no open transaction is `ENOENT`, a start inside a transaction
//! `EBUSY` (no nesting), too many open transactions or too many changes in
//! one `ENOSPC`.

use std::collections::BTreeMap;

use pv_abi::event_channel::DomId;

use crate::op::{Op, OK};
use crate::{ConnId, Dispatch, SharedStore, Store, StoreError};

/// Open transactions per connection.
pub(crate) const MAX_TRANSACTIONS: usize = 16;
/// Changes one transaction may record.
pub(crate) const MAX_TRANSACTION_OPS: usize = 1024;

/// A change to replay at commit.
enum Change {
    Write(String, Vec<u8>),
    Mkdir(String),
    Rm(String),
    SetPerms(String, Vec<crate::perms::Perm>),
}

struct Transaction {
    snapshot: Store,
    generation: u64,
    changes: Vec<Change>,
}

/// One connection's open transactions.
#[derive(Default)]
pub(crate) struct Transactions {
    open: BTreeMap<u32, Transaction>,
    next_id: u32,
}

impl Store {
    /// The tree alone (no watches, connections or pending callbacks).
    fn snapshot(&self) -> Store {
        Store {
            nodes: self.nodes.clone(),
            watches: Vec::new(),
            conns: BTreeMap::new(),
            next_conn: self.next_conn,
            owned: self.owned.clone(),
            limits: self.limits,
            pending: Dispatch::default(),
            generation: self.generation,
        }
    }
}

impl Transactions {
    /// Checks a request's transaction id: 0 (none) or an open transaction;
    /// `ENOENT` otherwise (xenstored's `transaction_lookup`).
    pub(crate) fn check(&self, tx_id: u32) -> Result<u32, StoreError> {
        if tx_id == 0 || self.open.contains_key(&tx_id) {
            Ok(tx_id)
        } else {
            Err(StoreError::NoEntry)
        }
    }

    /// `XS_TRANSACTION_START` sent with transaction id `tx_id`: the reply
    /// is the new id in decimal, never 0.
    pub(crate) fn start(&mut self, store: &SharedStore, tx_id: u32) -> Result<Vec<u8>, StoreError> {
        if tx_id != 0 {
            return Err(StoreError::Busy);
        }
        if self.open.len() >= MAX_TRANSACTIONS {
            return Err(StoreError::NoSpace);
        }
        let (snapshot, generation) = store.with(None, |s| (s.snapshot(), s.generation));
        let id = loop {
            self.next_id = self.next_id.wrapping_add(1);
            if self.next_id != 0 && !self.open.contains_key(&self.next_id) {
                break self.next_id;
            }
        };
        self.open.insert(id, Transaction { snapshot, generation, changes: Vec::new() });
        let mut reply = id.to_string().into_bytes();
        reply.push(0);
        Ok(reply)
    }

    /// `XS_TRANSACTION_END` of transaction `tx_id`: commit or abort.
    pub(crate) fn end(
        &mut self,
        store: &SharedStore,
        domid: DomId,
        conn: ConnId,
        tx_id: u32,
        commit: bool,
    ) -> Result<Vec<u8>, StoreError> {
        let tx = self.open.remove(&tx_id).ok_or(StoreError::NoEntry)?;
        if commit {
            store.with(Some(conn), |s| {
                if s.generation != tx.generation {
                    return Err(StoreError::Again);
                }
                tx.changes.iter().try_for_each(|c| match c {
                    Change::Write(p, v) => s.write(domid, p, v),
                    Change::Mkdir(p) => s.mkdir(domid, p),
                    Change::Rm(p) => s.rm(domid, p),
                    Change::SetPerms(p, l) => s.set_perms(domid, p, l.clone()),
                })
            })?;
        }
        Ok(OK.to_vec())
    }

    /// Drops every open transaction (`XS_RESET_WATCHES`).
    pub(crate) fn clear(&mut self) {
        self.open.clear();
    }

    /// A tree operation inside transaction `tx_id`; `None` for operations
    /// transactions do not change (watches, domain path), which run as usual.
    pub(crate) fn op(&mut self, domid: DomId, tx_id: u32, op: &Op<'_>) -> Option<Result<Vec<u8>, StoreError>> {
        let tx = match self.open.get_mut(&tx_id) {
            Some(tx) => tx,
            None => return Some(Err(StoreError::NoEntry)),
        };
        let change = match *op {
            Op::Write { path, value } => Some(Change::Write(path.to_owned(), value.to_vec())),
            Op::Mkdir(path) => Some(Change::Mkdir(path.to_owned())),
            Op::Rm(path) => Some(Change::Rm(path.to_owned())),
            Op::SetPerms { path, perms } => {
                crate::op::perm_list(perms).ok().map(|l| Change::SetPerms(path.to_owned(), l))
            }
            _ => None,
        };
        if change.is_some() && tx.changes.len() >= MAX_TRANSACTION_OPS {
            return Some(Err(StoreError::NoSpace));
        }
        let reply = op.apply(&mut tx.snapshot, domid)?;
        if let (Ok(_), Some(c)) = (&reply, change) {
            tx.changes.push(c);
        }
        Some(reply)
    }
}

impl Transactions {
    /// The open transactions as data, and the last id handed out.
    pub(crate) fn save_state(&self) -> (Vec<crate::snapshot::TransactionSave>, u32) {
        use crate::snapshot::{ChangeSave, TransactionSave};
        let list = (self.open.iter())
            .map(|(&id, tx)| TransactionSave {
                id,
                tree: tx.snapshot.save_tree(),
                generation: tx.generation,
                changes: (tx.changes.iter())
                    .map(|c| match c {
                        Change::Write(p, v) => ChangeSave::Write(p.clone(), v.clone()),
                        Change::Mkdir(p) => ChangeSave::Mkdir(p.clone()),
                        Change::Rm(p) => ChangeSave::Rm(p.clone()),
                        Change::SetPerms(p, l) => ChangeSave::SetPerms(p.clone(), l.clone()),
                    })
                    .collect(),
            })
            .collect();
        (list, self.next_id)
    }

    /// Transactions from `saved` (checked against `store`'s limits: at most
    /// [`MAX_TRANSACTIONS`], ids unique and not 0, at most
    /// [`MAX_TRANSACTION_OPS`] changes, each tree valid); `None` if not.
    pub(crate) fn load_state(
        store: &Store,
        saved: &[crate::snapshot::TransactionSave],
        next_id: u32,
    ) -> Option<Transactions> {
        use crate::snapshot::ChangeSave;
        if saved.len() > MAX_TRANSACTIONS {
            return None;
        }
        let mut open = BTreeMap::new();
        for t in saved {
            if t.id == 0 || t.changes.len() > MAX_TRANSACTION_OPS || open.contains_key(&t.id) {
                return None;
            }
            let (nodes, owned) = store.load_tree(&t.tree).ok()?;
            let mut snapshot = store.snapshot();
            snapshot.nodes = nodes;
            snapshot.owned = owned;
            snapshot.generation = t.tree.generation;
            let max = store.limits.max_value;
            let changes = (t.changes.iter())
                .map(|c| match c {
                    ChangeSave::Write(p, v) if v.len() <= max => Some(Change::Write(p.clone(), v.clone())),
                    ChangeSave::Mkdir(p) => Some(Change::Mkdir(p.clone())),
                    ChangeSave::Rm(p) => Some(Change::Rm(p.clone())),
                    ChangeSave::SetPerms(p, l) if !l.is_empty() => Some(Change::SetPerms(p.clone(), l.clone())),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            open.insert(t.id, Transaction { snapshot, generation: t.generation, changes });
        }
        Some(Transactions { open, next_id })
    }
}
