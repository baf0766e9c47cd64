//! Reachability: whether other nodes can dial this one, and which relays
//! it listens through when they cannot.
//!
//! Most devices whose owners would contribute capacity sit behind a home
//! router: they can dial out, but nothing can dial in. Such a node learns
//! it from AutoNAT (other nodes try to dial the addresses identify saw it
//! use; a success confirms the address, which is then advertised), reserves
//! a slot on a relay (circuit relay v2), and listens on the circuit: its
//! adverts then carry the circuit address, and requests reach it through
//! the relay until DCUtR punches a direct connection.
//!
//! This file is the pure part: the node's reachability, and which relays
//! to reserve on. The network task feeds it AutoNAT's status and the peers
//! that serve as relays, and asks it whom to reserve on.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

/// Relays a private node reserves on when none are configured.
pub(crate) const AUTO_RELAYS: usize = 2;

/// Whether other nodes can dial this one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reachability {
    /// Not yet known: no probe has finished.
    #[default]
    Unknown,
    /// Another node dialled one of its addresses back.
    Public,
    /// Every probe failed: only connections it opens itself reach it.
    Private,
}

impl std::fmt::Display for Reachability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reachability::Unknown => "unknown",
            Reachability::Public => "public",
            Reachability::Private => "private",
        })
    }
}

/// The node's reachability: public when an address of its own (not a
/// circuit) is confirmed, by AutoNAT or by its owner; otherwise AutoNAT's
/// verdict (`None`: AutoNAT is off).
pub(crate) fn reachability(autonat: Option<Reachability>, confirmed_direct: usize) -> Reachability {
    if confirmed_direct > 0 {
        Reachability::Public
    } else {
        autonat.unwrap_or_default()
    }
}

/// Relays to ask for a reservation now: the configured ones first (always
/// reserved on), then, while the node is private, connected peers that
/// serve as relays, up to [`AUTO_RELAYS`] reservations in all. `held`: the
/// relays with a reservation or a request in flight; `candidates`: peers
/// that serve as relays, each with an address it was reached at, in a
/// stable order.
pub(crate) fn relays_to_ask<P: Ord + Copy + std::hash::Hash, A: Clone>(
    reachability: Reachability,
    configured: &[(P, A)],
    held: &BTreeSet<P>,
    candidates: &HashMap<P, A>,
) -> Vec<(P, A)> {
    let mut out: Vec<(P, A)> = configured
        .iter()
        .filter(|(p, _)| !held.contains(p))
        .cloned()
        .collect();
    if reachability != Reachability::Private || !configured.is_empty() {
        return out;
    }
    let mut room = AUTO_RELAYS.saturating_sub(held.len());
    let mut sorted: Vec<(&P, &A)> = candidates.iter().filter(|(p, _)| !held.contains(p)).collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    for (p, a) in sorted {
        if room == 0 {
            break;
        }
        out.push((*p, a.clone()));
        room -= 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confirmed_address_of_its_own_makes_a_node_public_whatever_autonat_says() {
        assert_eq!(reachability(Some(Reachability::Private), 1), Reachability::Public);
        assert_eq!(
            reachability(Some(Reachability::Private), 0),
            Reachability::Private
        );
        assert_eq!(reachability(None, 0), Reachability::Unknown);
    }

    #[test]
    fn a_public_node_reserves_only_on_the_relays_it_was_given() {
        let candidates: HashMap<u8, &str> = [(1, "a"), (2, "b")].into();
        let none = relays_to_ask(Reachability::Public, &[], &BTreeSet::new(), &candidates);
        assert!(none.is_empty());
        let given = relays_to_ask(Reachability::Public, &[(9, "z")], &BTreeSet::new(), &candidates);
        assert_eq!(given, vec![(9, "z")]);
        let held = relays_to_ask(Reachability::Public, &[(9, "z")], &[9].into(), &candidates);
        assert!(held.is_empty());
    }

    #[test]
    fn a_private_node_reserves_on_two_relays_it_is_connected_to() {
        let candidates: HashMap<u8, &str> = [(3, "c"), (1, "a"), (2, "b")].into();
        let ask = relays_to_ask(Reachability::Private, &[], &BTreeSet::new(), &candidates);
        assert_eq!(ask, vec![(1, "a"), (2, "b")]);
        let one_held = relays_to_ask(Reachability::Private, &[], &[1].into(), &candidates);
        assert_eq!(one_held, vec![(2, "b")]);
        let full = relays_to_ask(Reachability::Private, &[], &[1, 3].into(), &candidates);
        assert!(full.is_empty());
    }
}
