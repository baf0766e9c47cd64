//! Which connections to close when a node holds more than it needs.
//!
//! A node keeps at most `max_connections` (a hard cap: connections beyond
//! it are refused) and trims down to `target_connections` every few
//! seconds. The gap between the two is what lets a newcomer in: a node at
//! its target still accepts a new neighbour, and sheds an old, unused
//! connection instead. Without it, a network whose nodes are all at their
//! cap would refuse every newcomer.
//!
//! A connection is never trimmed while it carries something: a peer in a
//! gossipsub mesh (the paths adverts and summaries travel), a peer with a
//! request in flight either way, or a peer connected or used within the
//! grace period (a newcomer still joining the meshes, a provider between
//! an agreement and its receipt). Nor are the first `per_topic` peers
//! subscribed to each of the node's topics (mesh members first, then the
//! most recently used): they are what a mesh is rebuilt from, and
//! gossipsub never dials. Of the rest, the least recently used go first.
//! The decision is a pure function of those facts, here; the network task
//! gathers them and closes what it returns.

use std::collections::HashSet;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How long a connection is kept after it was opened or last used.
pub(crate) const GRACE: Duration = Duration::from_secs(30);

/// Most peers of a gossip mesh (gossipsub's `mesh_n_high`), and most
/// peers of its own domain a node dials by itself.
pub const MESH_N_HIGH: usize = 12;

/// Subscribers of each topic kept: room for the peers a node dials and as
/// many that dial it, so that one side's trimming does not undo the other
/// side's dialing.
pub(crate) const PER_TOPIC: usize = 2 * MESH_N_HIGH;

/// What the network task knows about its connections.
#[derive(Debug)]
pub(crate) struct Facts<P> {
    /// Each connected peer with the last time it was connected or used.
    pub connected: Vec<(P, Instant)>,
    /// Peers in any of the node's gossipsub meshes, or with a request in
    /// flight.
    pub protected: HashSet<P>,
    /// For each topic the node subscribes to, the connected peers
    /// subscribed to it.
    pub topics: Vec<Vec<P>>,
}

/// The peers to disconnect so that at most `target` remain, least recently
/// used first; fewer (or none) when too many are protected or recent.
pub(crate) fn victims<P: Copy + Eq + Hash + Ord>(
    facts: &Facts<P>,
    target: usize,
    per_topic: usize,
    grace: Duration,
    now: Instant,
) -> Vec<P> {
    let Some(excess) = facts.connected.len().checked_sub(target).filter(|&e| e > 0) else {
        return Vec::new();
    };
    let used: std::collections::HashMap<P, Instant> = facts.connected.iter().copied().collect();
    let mut keep = facts.protected.clone();
    for subscribers in &facts.topics {
        let mut rest: Vec<(Instant, P)> = subscribers
            .iter()
            .filter(|p| !facts.protected.contains(p))
            .filter_map(|p| used.get(p).map(|&t| (t, *p)))
            .collect();
        let room = per_topic.saturating_sub(subscribers.len() - rest.len());
        // Most recently used first.
        rest.sort_unstable_by(|a, b| b.cmp(a));
        keep.extend(rest.into_iter().take(room).map(|(_, p)| p));
    }
    let mut idle: Vec<(Instant, P)> = facts
        .connected
        .iter()
        .filter(|(p, used)| !keep.contains(p) && now.saturating_duration_since(*used) >= grace)
        .map(|&(p, used)| (used, p))
        .collect();
    idle.sort_unstable();
    idle.into_iter().take(excess).map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    fn facts(connected: Vec<(u32, Instant)>) -> Facts<u32> {
        Facts {
            connected,
            protected: HashSet::new(),
            topics: Vec::new(),
        }
    }

    #[test]
    fn nothing_is_trimmed_at_or_below_the_target() {
        let t0 = Instant::now();
        let now = at(t0, 1000);
        let f = facts((0..8).map(|i| (i, t0)).collect());
        assert!(victims(&f, 8, 0, GRACE, now).is_empty());
        assert!(victims(&f, 9, 0, GRACE, now).is_empty());
        assert!(victims(&facts(vec![]), 0, 0, GRACE, now).is_empty());
    }

    #[test]
    fn the_least_recently_used_go_first_down_to_the_target() {
        let t0 = Instant::now();
        let now = at(t0, 1000);
        // Peer i was last used at second 10·i.
        let f = facts((0..10).rev().map(|i| (i, at(t0, 10 * i as u64))).collect());
        let mut v = victims(&f, 6, 0, GRACE, now);
        assert_eq!(v.len(), 4);
        v.sort();
        assert_eq!(v, vec![0, 1, 2, 3]);
    }

    #[test]
    fn protected_and_recent_peers_are_kept_even_above_the_target() {
        let t0 = Instant::now();
        let now = at(t0, 100);
        // 0..4 old, 4..8 used within the grace period.
        let mut f = facts(
            (0..8)
                .map(|i| (i, if i < 4 { t0 } else { now - Duration::from_secs(5) }))
                .collect(),
        );
        f.protected = [0, 1].into();
        let mut v = victims(&f, 2, 0, GRACE, now);
        v.sort();
        // Six should go, but only 2 and 3 are neither protected nor recent.
        assert_eq!(v, vec![2, 3]);
        // Exactly at the grace period a peer may go.
        let f = facts(vec![
            (7u32, now - GRACE),
            (8, now - GRACE + Duration::from_millis(1)),
        ]);
        assert_eq!(victims(&f, 0, 0, GRACE, now), vec![7]);
    }

    #[test]
    fn each_topic_keeps_its_subscribers_up_to_the_quota_mesh_first() {
        let t0 = Instant::now();
        let now = at(t0, 1000);
        // Twelve old peers; peer i last used at second i.
        let mut f = facts((0..12).map(|i| (i, at(t0, i as u64))).collect());
        // Peer 0 is in the mesh; topic A has subscribers 0..6, topic B 10.
        f.protected = [0].into();
        f.topics = vec![vec![0, 1, 2, 3, 4, 5], vec![10]];
        // Quota 3 for A: the mesh peer 0, then the most recent 5 and 4.
        let mut v = victims(&f, 0, 3, GRACE, now);
        v.sort();
        assert_eq!(v, vec![1, 2, 3, 6, 7, 8, 9, 11]);
        // With a target, the least recently used of those go first.
        let v = victims(&f, 9, 3, GRACE, now);
        assert_eq!(v, vec![1, 2, 3]);
    }
}
