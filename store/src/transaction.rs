//! Store transactions (`XS_TRANSACTION_START` / `XS_TRANSACTION_END`).
//!
//! A transaction works on a private snapshot of the tree taken at its
//! start, so it sees its own writes and nobody else's; its changes are
//! recorded and, on commit, replayed on the live store (firing watches
//! then) provided the store has not changed since the snapshot. Otherwise
//! the commit fails with `EAGAIN` and the guest retries, as with
//! `xenstored`. (Conflicts are detected per store, not per node: any change
//! made meanwhile fails the commit. Correct, if more eager than Xen's
//! per-node check.)

use std::collections::BTreeMap;

use pv_abi::event_channel::DomId;
use pv_abi::xs_wire::*;

use crate::server::one_arg;
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
    /// `XS_TRANSACTION_START`: the reply is the new id in decimal.
    pub(crate) fn start(&mut self, store: &SharedStore, payload: &[u8]) -> Result<Vec<u8>, StoreError> {
        if !one_arg(payload)?.is_empty() {
            return Err(StoreError::Invalid);
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

    /// `XS_TRANSACTION_END` with `"T"` (commit) or `"F"` (abort).
    pub(crate) fn end(
        &mut self,
        store: &SharedStore,
        domid: DomId,
        conn: ConnId,
        tx_id: u32,
        payload: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let commit = match one_arg(payload)? {
            "T" => true,
            "F" => false,
            _ => return Err(StoreError::Invalid),
        };
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
                })
            })?;
        }
        Ok(b"OK\0".to_vec())
    }

    /// A tree operation inside transaction `tx_id`; `None` for operations
    /// transactions do not change (watches, domain path), which run as usual.
    pub(crate) fn op(
        &mut self,
        domid: DomId,
        tx_id: u32,
        type_: u32,
        payload: &[u8],
    ) -> Option<Result<Vec<u8>, StoreError>> {
        if !matches!(type_, XS_READ | XS_WRITE | XS_MKDIR | XS_RM | XS_DIRECTORY) {
            return None;
        }
        let Some(tx) = self.open.get_mut(&tx_id) else { return Some(Err(StoreError::NoEntry)) };
        Some(tx.apply(domid, type_, payload))
    }
}

impl Transaction {
    fn record(&mut self, c: Change) -> Result<Vec<u8>, StoreError> {
        if self.changes.len() >= MAX_TRANSACTION_OPS {
            return Err(StoreError::TooBig);
        }
        self.changes.push(c);
        Ok(b"OK\0".to_vec())
    }

    fn apply(&mut self, domid: DomId, type_: u32, payload: &[u8]) -> Result<Vec<u8>, StoreError> {
        let s = &mut self.snapshot;
        match type_ {
            XS_READ => s.read(domid, one_arg(payload)?).map(<[u8]>::to_vec),
            XS_DIRECTORY => {
                let mut out = Vec::new();
                for n in s.directory(domid, one_arg(payload)?)? {
                    out.extend_from_slice(n.as_bytes());
                    out.push(0);
                }
                if out.len() > XENSTORE_PAYLOAD_MAX as usize {
                    return Err(StoreError::TooBig);
                }
                Ok(out)
            }
            XS_WRITE => {
                let nul = payload.iter().position(|&b| b == 0).ok_or(StoreError::Invalid)?;
                let path = std::str::from_utf8(&payload[..nul]).map_err(|_| StoreError::Invalid)?;
                let value = &payload[nul + 1..];
                s.write(domid, path, value)?;
                self.record(Change::Write(path.to_owned(), value.to_vec()))
            }
            XS_MKDIR => {
                let path = one_arg(payload)?;
                s.mkdir(domid, path)?;
                self.record(Change::Mkdir(path.to_owned()))
            }
            _ => {
                let path = one_arg(payload)?;
                s.rm(domid, path)?;
                self.record(Change::Rm(path.to_owned()))
            }
        }
    }
}
