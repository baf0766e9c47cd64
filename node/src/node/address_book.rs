//! The peers a node has seen, kept across restarts.
//!
//! A node joins through its bootstrap peers, but those are a few fixed
//! machines: when all of them are gone (moved, retired, down for the
//! night) a restarted node would be alone. So every [`EVERY`] the node
//! asks its network task for the peers of its routing table (connected
//! ones first, at most [`MOST`], one address each) and, when the list
//! changed, writes it to the store under [`KEY`]. At start the list is
//! read back and dialled beside the bootstrap peers, and again whenever
//! the node has lost most of its connections (see the network's `heal`).
//!
//! The list is only a set of places to try: a stale address costs one
//! failed dial, and the Kademlia walk that follows a successful one finds
//! the rest of the network.

use std::time::Duration;

use libp2p::Multiaddr;
use tokio_util::sync::CancellationToken;

use crate::network;
use crate::store::{Batch, Store};

/// The store key of the address book.
pub const KEY: &str = "net/addrbook";
/// Most peers kept.
pub const MOST: usize = 64;
/// How often the address book is brought up to date.
pub const EVERY: Duration = Duration::from_secs(10);

/// The remembered peers' addresses; none if there are none or the record
/// does not read (a bad address book must not stop a node from starting).
pub fn load(store: &Store) -> Vec<Multiaddr> {
    match store.get::<Vec<String>>(KEY.as_bytes()) {
        Ok(Some(list)) => list.iter().filter_map(|a| a.parse().ok()).take(MOST).collect(),
        Ok(None) => Vec::new(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the address book; starting without it");
            Vec::new()
        }
    }
}

/// Keeps the address book up to date until `cancel`.
pub async fn keep(net: network::Client, store: Store, cancel: CancellationToken) {
    let mut last: Vec<String> = load(&store).iter().map(ToString::to_string).collect();
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = every.tick() => {}
        }
        let Ok(book) = net.address_book(MOST).await else {
            return;
        };
        let book: Vec<String> = book.iter().map(ToString::to_string).collect();
        // An empty table says nothing new: keep what was known.
        if book.is_empty() || book == last {
            continue;
        }
        let mut batch = Batch::new();
        batch.put(KEY, &book);
        match store.write(batch).await {
            Ok(()) => last = book,
            Err(e) => tracing::warn!(error = %e, "cannot write the address book"),
        }
    }
}
