//! Which peer addresses to pass on to the swarm.
//!
//! The market tells the network where each peer it hears of is: every
//! member's addresses at each advert it accepts, each summary's contacts.
//! Each address told reaches Kademlia's routing table and the address cache
//! of every behaviour (the swarm broadcasts it), and almost all of them are
//! the same addresses as a moment ago: at 200 nodes of one process, about
//! 3 % of the idle work went to telling the swarm what it knew.
//!
//! So an address is passed on again only after [`AGAIN`]. What the swarm
//! may have dropped in the meantime is covered: a peer's addresses are
//! forgotten here when a dial to it fails or its last connection closes
//! (the cases where Kademlia and the caches drop addresses), so a peer
//! that comes back, even at the same address, is told at once. The
//! decision is a pure function of what was told and the clock, here; the
//! network task asks before it tells the swarm.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// An address told again within this long is not passed on again.
pub(crate) const AGAIN: Duration = Duration::from_secs(120);
/// Most peers remembered (past it, addresses older than [`AGAIN`] are
/// forgotten, and if that leaves as many peers, all of them).
const MAX_PEERS: usize = 4_096;
/// Most addresses remembered per peer (an advert carries at most eight).
const MAX_ADDRS: usize = 16;

/// The addresses told to the swarm, per peer, and when.
#[derive(Debug)]
pub(crate) struct Told<P, A> {
    peers: HashMap<P, HashMap<A, Instant>>,
}

impl<P, A> Default for Told<P, A> {
    fn default() -> Self {
        Told {
            peers: HashMap::new(),
        }
    }
}

impl<P: Hash + Eq + Clone, A: Hash + Eq + Clone> Told<P, A> {
    /// Whether to pass `addr` of `peer` on now; if so, it counts as told.
    pub(crate) fn tell(&mut self, peer: &P, addr: &A, now: Instant) -> bool {
        let fresh = |t: &Instant| now.saturating_duration_since(*t) < AGAIN;
        if self.peers.get(peer).and_then(|a| a.get(addr)).is_some_and(fresh) {
            return false;
        }
        if self.peers.len() >= MAX_PEERS && !self.peers.contains_key(peer) {
            self.peers.retain(|_, a| {
                a.retain(|_, t| fresh(t));
                !a.is_empty()
            });
            if self.peers.len() >= MAX_PEERS {
                self.peers.clear();
            }
        }
        let addrs = self.peers.entry(peer.clone()).or_default();
        if addrs.len() >= MAX_ADDRS {
            addrs.clear();
        }
        addrs.insert(addr.clone(), now);
        true
    }

    /// A dial to `peer` failed or its last connection closed: its
    /// addresses are passed on again when next told.
    pub(crate) fn forget(&mut self, peer: &P) {
        self.peers.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_told_again_soon_is_not_passed_on() {
        let mut t = Told::default();
        let now = Instant::now();
        assert!(t.tell(&1, &"a", now));
        assert!(!t.tell(&1, &"a", now + Duration::from_secs(20)));
        assert!(t.tell(&1, &"b", now), "another address of the peer is new");
        assert!(t.tell(&2, &"a", now), "the same address of another peer is new");
    }

    #[test]
    fn an_address_is_passed_on_again_after_a_while() {
        let mut t = Told::default();
        let now = Instant::now();
        assert!(t.tell(&1, &"a", now));
        assert!(t.tell(&1, &"a", now + AGAIN));
        assert!(!t.tell(&1, &"a", now + AGAIN + Duration::from_secs(1)));
    }

    #[test]
    fn a_peer_that_failed_or_left_is_told_again_at_once() {
        let mut t = Told::default();
        let now = Instant::now();
        assert!(t.tell(&1, &"a", now));
        t.forget(&1);
        assert!(t.tell(&1, &"a", now + Duration::from_secs(1)));
    }

    #[test]
    fn the_memory_is_bounded_and_a_full_one_forgets_the_old_first() {
        let mut t = Told::default();
        let now = Instant::now();
        for p in 0..MAX_PEERS {
            assert!(t.tell(&p, &0, now));
        }
        let later = now + AGAIN;
        // Full of stale entries: they go, the newcomer is remembered.
        assert!(t.tell(&MAX_PEERS, &0, later));
        assert_eq!(t.peers.len(), 1);
        for a in 0..(MAX_ADDRS * 2) {
            assert!(t.tell(&0, &a, later));
        }
        assert!(t.peers[&0].len() <= MAX_ADDRS);
        // Full of fresh entries: all go rather than grow.
        for p in 0..MAX_PEERS {
            t.tell(&(p + 10_000), &0, later);
        }
        assert!(t.peers.len() <= MAX_PEERS);
    }
}
