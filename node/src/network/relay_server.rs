//! The relay server, shielded from the node's own circuits.
//!
//! libp2p's relay server serves once the node has a confirmed external
//! address, and tells every connection it tracks when that changes. Two
//! things in that go wrong on a node that is itself behind a relay: the
//! circuit address its relay confirms would make it offer relaying
//! (through a relay, to others behind relays), and the status change is
//! sent to relayed connections too, whose handler is a placeholder: libp2p
//! panics there (rust-libp2p #5412). This wrapper hides relayed
//! connections and circuit addresses from the server; everything else
//! passes through unchanged.

use std::task::{Context, Poll};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::relay;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent,
    ToSwarm,
};

/// A relay server that sees only direct connections and addresses.
pub(crate) struct RelayServer(pub(crate) relay::Behaviour);

fn relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == libp2p::multiaddr::Protocol::P2pCircuit)
}

impl NetworkBehaviour for RelayServer {
    type ConnectionHandler = <relay::Behaviour as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = relay::Event;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.0.handle_pending_inbound_connection(id, local, remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.0
            .handle_established_inbound_connection(id, peer, local, remote)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.0
            .handle_pending_outbound_connection(id, peer, addresses, role)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.0
            .handle_established_outbound_connection(id, peer, addr, role, port_use)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        let hidden = match &event {
            FromSwarm::ConnectionEstablished(c) => c.endpoint.is_relayed(),
            FromSwarm::ConnectionClosed(c) => c.endpoint.is_relayed(),
            FromSwarm::ExternalAddrConfirmed(a) => relayed(a.addr),
            FromSwarm::ExternalAddrExpired(a) => relayed(a.addr),
            _ => false,
        };
        if !hidden {
            self.0.on_swarm_event(event);
        }
    }

    fn on_connection_handler_event(&mut self, peer: PeerId, id: ConnectionId, event: THandlerOutEvent<Self>) {
        self.0.on_connection_handler_event(peer, id, event);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.0.poll(cx)
    }
}
