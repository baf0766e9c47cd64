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
//! Only peers outside the node's own network count as witnesses: a
//! neighbour on the same subnet (two devices behind one home router) dials
//! the node back over the LAN and would call it public while nobody outside
//! can reach it.
//!
//! This file is the pure part: the verdict from the probes, and which
//! relays to reserve on. The network task feeds it AutoNAT's probe results
//! with the address of the peer that answered, and the peers that serve as
//! relays, and asks it whom to reserve on.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

use serde::{Deserialize, Serialize};

/// Relays a private node reserves on when none are configured.
pub(crate) const AUTO_RELAYS: usize = 2;
/// Failed dial-backs from outside, with no success, after which the node
/// counts as private.
pub(crate) const PRIVATE_AFTER: u32 = 2;

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

/// The node's reachability: public when its owner declared an address
/// others can dial; otherwise the verdict of the probes from outside
/// (`None`: AutoNAT is off).
pub(crate) fn reachability(probed: Option<Reachability>, declared: bool) -> Reachability {
    if declared {
        Reachability::Public
    } else {
        probed.unwrap_or_default()
    }
}

/// The verdict of the probes answered by peers outside the node's network.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    /// The latest answers from outside, oldest first, at most [`REMEMBERED`]:
    /// a laptop that moves from an open network to a home router is
    /// private again within a few probes.
    recent: std::collections::VecDeque<bool>,
}

/// Answers from outside the verdict weighs.
pub(crate) const REMEMBERED: usize = 4;

impl Verdict {
    /// A peer at `server` (the address the node reaches it at) answered a
    /// probe: it dialled one of the node's addresses back (`ok`) or could
    /// not. Peers on one of the node's own subnets (`listen`) are not
    /// counted.
    pub(crate) fn probed(&mut self, server: Option<&Multiaddr>, listen: &[Multiaddr], ok: bool) {
        if server.is_some_and(|s| same_subnet(s, listen)) {
            return;
        }
        if self.recent.len() == REMEMBERED {
            self.recent.pop_front();
        }
        self.recent.push_back(ok);
    }

    /// Public when one of the latest [`REMEMBERED`] answers from outside
    /// was a dial-back, private after [`PRIVATE_AFTER`] failures among
    /// them and no success.
    pub(crate) fn reachability(&self) -> Reachability {
        let failed = self.recent.iter().filter(|ok| !**ok).count() as u32;
        if self.recent.iter().any(|ok| *ok) {
            Reachability::Public
        } else if failed >= PRIVATE_AFTER {
            Reachability::Private
        } else {
            Reachability::Unknown
        }
    }
}

fn ip(a: &Multiaddr) -> Option<IpAddr> {
    a.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::from(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::from(ip)),
        _ => None,
    })
}

/// Whether `addr` is on one of the subnets of `listen` (the same /24 for
/// IPv4, /64 for IPv6), or is loopback while they are.
pub(crate) fn same_subnet(addr: &Multiaddr, listen: &[Multiaddr]) -> bool {
    let Some(a) = ip(addr) else { return false };
    listen.iter().filter_map(ip).any(|l| match (a, l) {
        (IpAddr::V4(a), IpAddr::V4(l)) => {
            a.octets()[..3] == l.octets()[..3] && !(a.is_loopback() && l.is_loopback())
        }
        (IpAddr::V6(a), IpAddr::V6(l)) => a.segments()[..4] == l.segments()[..4] && !a.is_loopback(),
        _ => false,
    })
}

/// Whether AutoNAT should dial back only global addresses: unless every
/// address the node listens on is local (a testnet on one machine or one
/// LAN, where only local ones exist).
pub(crate) fn only_global_ips(listen: &[Multiaddr]) -> bool {
    let local = !listen.is_empty()
        && listen.iter().all(|a| match ip(a) {
            Some(IpAddr::V4(ip)) => ip.is_loopback() || ip.is_private(),
            Some(IpAddr::V6(ip)) => ip.is_loopback(),
            None => false,
        });
    !local
}

/// Whether a peer reached directly at `remote` may answer this node's
/// reachability probes: it is outside the node's own subnet (`listen`),
/// and at a global address unless `only_global` is off.
pub(crate) fn witness(remote: &Multiaddr, listen: &[Multiaddr], only_global: bool) -> bool {
    !same_subnet(remote, listen) && (!only_global || ip(remote).is_some_and(is_global))
}

/// Whether `ip` is reachable across the internet: not private, loopback,
/// link-local, shared (CGNAT), documentation, unique-local or unspecified.
fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let [o0, o1, ..] = a.octets();
            !(a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_broadcast()
                || a.is_documentation()
                || a.is_unspecified()
                || a.is_multicast()
                || (o0 == 100 && (o1 & 0xc0) == 0x40)
                || o0 >= 240
                || o0 == 0)
        }
        IpAddr::V6(a) => {
            let s0 = a.segments()[0];
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s0 & 0xfe00) == 0xfc00
                || (s0 & 0xffc0) == 0xfe80
                || (s0 == 0x2001 && a.segments()[1] == 0x0db8))
        }
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
    fn an_address_the_owner_declared_makes_a_node_public_whatever_the_probes_say() {
        assert_eq!(
            reachability(Some(Reachability::Private), true),
            Reachability::Public
        );
        assert_eq!(
            reachability(Some(Reachability::Private), false),
            Reachability::Private
        );
        assert_eq!(reachability(None, false), Reachability::Unknown);
    }

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_neighbour_on_the_same_subnet_is_no_witness_of_reachability() {
        let listen = [addr("/ip4/10.1.2.7/tcp/4001")];
        let mut v = Verdict::default();
        v.probed(Some(&addr("/ip4/10.1.2.9/tcp/4001")), &listen, true);
        assert_eq!(v.reachability(), Reachability::Unknown);
        v.probed(Some(&addr("/ip4/10.1.9.1/tcp/4001")), &listen, false);
        assert_eq!(v.reachability(), Reachability::Unknown);
        v.probed(Some(&addr("/ip4/203.0.113.5/tcp/4001")), &listen, false);
        assert_eq!(v.reachability(), Reachability::Private);
        v.probed(Some(&addr("/ip4/203.0.113.6/tcp/4001")), &listen, true);
        assert_eq!(v.reachability(), Reachability::Public);
    }

    #[test]
    fn a_node_that_moved_behind_a_router_is_private_again_within_a_few_probes() {
        let listen = [addr("/ip4/10.1.2.7/tcp/4001")];
        let outside = addr("/ip4/203.0.113.5/tcp/4001");
        let mut v = Verdict::default();
        v.probed(Some(&outside), &listen, true);
        for _ in 0..REMEMBERED - 1 {
            v.probed(Some(&outside), &listen, false);
            assert_eq!(v.reachability(), Reachability::Public);
        }
        v.probed(Some(&outside), &listen, false);
        assert_eq!(v.reachability(), Reachability::Private);
    }

    #[test]
    fn nodes_on_one_machine_are_witnesses_for_each_other() {
        let listen = [addr("/ip4/127.0.0.1/tcp/4001")];
        assert!(!same_subnet(&addr("/ip4/127.0.0.1/tcp/4002"), &listen));
        let mut v = Verdict::default();
        v.probed(Some(&addr("/ip4/127.0.0.1/tcp/4002")), &listen, true);
        assert_eq!(v.reachability(), Reachability::Public);
    }

    #[test]
    fn only_peers_outside_the_subnet_at_an_address_fit_for_the_network_answer_probes() {
        let home = [addr("/ip4/192.168.1.7/tcp/4001")];
        assert!(!only_global_ips(&home));
        assert!(!witness(&addr("/ip4/192.168.1.9/tcp/4001"), &home, false));
        assert!(witness(&addr("/ip4/192.168.7.1/tcp/4001"), &home, false));
        let open = [
            addr("/ip4/203.0.113.7/tcp/4001"),
            addr("/ip4/192.168.1.7/tcp/4001"),
        ];
        assert!(only_global_ips(&open));
        assert!(witness(&addr("/ip4/198.51.99.1/tcp/4001"), &open, true));
        assert!(!witness(&addr("/ip4/10.0.0.1/tcp/4001"), &open, true));
        assert!(!witness(&addr("/ip4/100.64.3.3/tcp/4001"), &open, true));
        assert!(!witness(&addr("/ip6/fd00::1/tcp/4001"), &open, true));
        assert!(witness(&addr("/ip6/2a01:4f8::1/tcp/4001"), &open, true));
        assert!(!witness(&addr("/memory/7"), &open, true));
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
