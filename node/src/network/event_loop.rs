//! The task that owns the swarm.

use std::collections::{HashMap, HashSet};

use agora_protocol::NodeId;
use agora_protocol::rpc::{ContentResponse, Decline, MarketResponse};
use futures::StreamExt;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::{PeerId, Swarm, gossipsub, identify, kad, mdns, ping};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::behaviour::{Behaviour, BehaviourEvent};
use super::{Command, Event, NetworkError, Stats};

/// Providers found so far by a DHT query, and who waits for them.
type PendingProviders = (
    HashSet<PeerId>,
    oneshot::Sender<Result<HashSet<PeerId>, NetworkError>>,
);

type Pending<T> = HashMap<OutboundRequestId, (PeerId, oneshot::Sender<Result<T, NetworkError>>)>;

pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    cancel: CancellationToken,
    pending_market: Pending<MarketResponse>,
    pending_content: Pending<ContentResponse>,
    pending_providers: HashMap<kad::QueryId, PendingProviders>,
    stats: Stats,
    bootstrapped: bool,
    /// Where to find the network again when the node has lost its peers.
    bootstrap: Vec<libp2p::Multiaddr>,
    /// Peers this node refuses to be connected to (a partition, in tests).
    blocked: HashSet<PeerId>,
}

/// Below this many connections the node dials its bootstrap peers again.
const MIN_PEERS: usize = 4;
/// How often it checks.
const REDIAL: std::time::Duration = std::time::Duration::from_secs(5);

fn node(peer: &PeerId) -> Option<NodeId> {
    NodeId::from_peer_id(peer).ok()
}

impl EventLoop {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        cancel: CancellationToken,
        bootstrap: Vec<libp2p::Multiaddr>,
    ) -> Self {
        EventLoop {
            swarm,
            commands,
            events,
            cancel,
            pending_market: HashMap::new(),
            pending_content: HashMap::new(),
            pending_providers: HashMap::new(),
            stats: Stats::default(),
            bootstrapped: bootstrap.is_empty(),
            bootstrap,
            blocked: HashSet::new(),
        }
    }

    pub(crate) async fn run(mut self) {
        let mut redial = tokio::time::interval(REDIAL);
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                cmd = self.commands.recv() => match cmd {
                    Some(c) => self.command(c),
                    None => break,
                },
                ev = self.swarm.select_next_some() => self.event(ev).await,
                _ = redial.tick() => self.heal(),
            }
        }
        tracing::debug!("network task stopped");
    }

    /// A node that lost most of its peers (a partition healed, a restart of
    /// its neighbours) finds the network again through its bootstrap peers
    /// and a fresh Kademlia walk, without anyone's help.
    fn heal(&mut self) {
        let connected = self.swarm.connected_peers().count();
        if connected >= MIN_PEERS || self.bootstrap.is_empty() {
            return;
        }
        for addr in self.bootstrap.clone() {
            let peer = addr.iter().find_map(|p| match p {
                libp2p::multiaddr::Protocol::P2p(id) => Some(id),
                _ => None,
            });
            let known = match peer {
                Some(p) => self.swarm.is_connected(&p) || self.blocked.contains(&p),
                None => connected > 0,
            };
            if !known {
                let _ = self.swarm.dial(addr);
            }
        }
        let _ = self.swarm.behaviour_mut().kad.bootstrap();
    }

    /// Hands an event to the node. Gossip is dropped when the node is busy
    /// (gossipsub retransmits and adverts are periodic); everything else
    /// waits for room, which applies back-pressure to the swarm.
    async fn emit(&mut self, ev: Event) {
        let _ = self.events.send(ev).await;
    }

    fn command(&mut self, cmd: Command) {
        let b = self.swarm.behaviour_mut();
        match cmd {
            Command::Publish { topic, data, reply } => {
                let r = b.gossipsub.publish(gossipsub::IdentTopic::new(topic), data);
                let r = match r {
                    Ok(_) | Err(gossipsub::PublishError::Duplicate) => Ok(()),
                    // Nobody to send to yet is not an error for periodic adverts.
                    Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => Ok(()),
                    Err(e) => Err(NetworkError::Publish(e.to_string())),
                };
                let _ = reply.send(r);
            }
            Command::Subscribe { topic } => {
                if let Err(e) = b.gossipsub.subscribe(&gossipsub::IdentTopic::new(&topic)) {
                    tracing::warn!(%topic, error = %e, "subscribe failed");
                }
            }
            Command::Unsubscribe { topic } => {
                b.gossipsub.unsubscribe(&gossipsub::IdentTopic::new(topic));
            }
            Command::Report {
                id,
                source,
                acceptance,
            } => {
                b.gossipsub
                    .report_message_validation_result(&id, &source, acceptance);
            }
            Command::Market { peer, request, reply } => {
                let id = b.market.send_request(&peer, request);
                self.pending_market.insert(id, (peer, reply));
            }
            Command::RespondMarket { channel, response } => {
                let _ = b.market.send_response(channel, response);
            }
            Command::Fetch { peer, request, reply } => {
                let id = b.content.send_request(&peer, request);
                self.pending_content.insert(id, (peer, reply));
            }
            Command::RespondContent { channel, response } => {
                let _ = b.content.send_response(channel, response);
            }
            Command::AddAddress { peer, addr } => {
                b.kad.add_address(&peer, addr.clone());
                self.swarm.add_peer_address(peer, addr);
            }
            Command::Dial { addr } => {
                if let Err(e) = self.swarm.dial(addr.clone()) {
                    tracing::debug!(%addr, error = %e, "dial failed");
                }
            }
            Command::StartProviding { key } => {
                if let Err(e) = b.kad.start_providing(kad::RecordKey::new(&key)) {
                    tracing::warn!(error = %e, "cannot register as DHT provider");
                }
            }
            Command::GetProviders { key, reply } => {
                let id = b.kad.get_providers(kad::RecordKey::new(&key));
                self.pending_providers.insert(id, (HashSet::new(), reply));
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Stats { reply } => {
                let mut s = self.stats.clone();
                s.connected = self.swarm.connected_peers().count();
                let _ = reply.send(s);
            }
            Command::Disconnect { peer } => {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Block { peers } => {
                for p in &peers {
                    let _ = self.swarm.disconnect_peer_id(*p);
                }
                self.blocked = peers;
            }
        }
    }

    async fn event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.emit(Event::Listening { addr: address }).await;
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                if self.blocked.contains(&peer_id) {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                if endpoint.is_dialer() {
                    let addr = endpoint.get_remote_address().clone();
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
                if !self.bootstrapped {
                    self.bootstrapped = self.swarm.behaviour_mut().kad.bootstrap().is_ok();
                }
                if num_established.get() == 1
                    && let Some(peer) = node(&peer_id)
                {
                    self.emit(Event::Connected { peer }).await;
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                if num_established == 0
                    && let Some(peer) = node(&peer_id)
                {
                    self.emit(Event::Disconnected { peer }).await;
                }
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                if matches!(error, libp2p::swarm::ListenError::Denied { .. }) {
                    self.stats.connections_refused += 1;
                }
            }
            SwarmEvent::Behaviour(ev) => self.behaviour_event(ev).await,
            _ => {}
        }
    }

    async fn behaviour_event(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let ev = Event::Gossip {
                    id: message_id.clone(),
                    source: propagation_source,
                    author: message.source.as_ref().and_then(node),
                    topic: message.topic.as_str().to_owned(),
                    data: message.data,
                };
                if self.events.try_send(ev).is_err() {
                    self.stats.gossip_dropped += 1;
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            gossipsub::MessageAcceptance::Ignore,
                        );
                }
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { peer_id, topic, .. }) => {
                if let Some(peer) = node(&peer_id) {
                    let _ = self.events.try_send(Event::Subscribed {
                        peer,
                        topic: topic.as_str().to_owned(),
                    });
                }
            }
            BehaviourEvent::Gossipsub(_) => {}
            BehaviourEvent::Market(ev) => self.market_event(ev).await,
            BehaviourEvent::Content(ev) => self.content_event(ev).await,
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                let b = self.swarm.behaviour_mut();
                for addr in info.listen_addrs {
                    b.kad.add_address(&peer_id, addr);
                }
            }
            BehaviourEvent::Identify(_) => {}
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                if let Some(peer) = node(&peer) {
                    let _ = self.events.try_send(Event::Rtt { peer, rtt });
                }
            }
            BehaviourEvent::Ping(_) => {}
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed { id, result, step, .. }) => {
                if let kad::QueryResult::GetProviders(r) = result {
                    self.providers_progress(id, r, step.last);
                }
            }
            BehaviourEvent::Kad(_) => {}
            BehaviourEvent::Mdns(mdns::Event::Discovered(list)) => {
                for (peer, addr) in list {
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                    let _ = self.swarm.dial(addr);
                }
            }
            BehaviourEvent::Mdns(_) => {}
            BehaviourEvent::Limits(_) => {}
        }
    }

    fn providers_progress(&mut self, id: kad::QueryId, r: kad::GetProvidersResult, last: bool) {
        let Some((found, _)) = self.pending_providers.get_mut(&id) else {
            return;
        };
        let mut done = last;
        match r {
            Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) => found.extend(providers),
            Ok(kad::GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) => done = true,
            Err(e) => {
                if let Some((found, reply)) = self.pending_providers.remove(&id) {
                    let _ = reply.send(if found.is_empty() {
                        Err(NetworkError::Dht(e.to_string()))
                    } else {
                        Ok(found)
                    });
                }
                return;
            }
        }
        if done && let Some((found, reply)) = self.pending_providers.remove(&id) {
            let _ = reply.send(Ok(found));
        }
    }

    async fn market_event(
        &mut self,
        ev: request_response::Event<agora_protocol::rpc::MarketRequest, MarketResponse>,
    ) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    let Some(from) = node(&peer) else {
                        let _ = self.swarm.behaviour_mut().market.send_response(
                            channel,
                            MarketResponse::Declined(Decline::invalid("not an ed25519 peer")),
                        );
                        return;
                    };
                    // Never block the swarm on a busy node: refuse instead.
                    match self.events.try_send(Event::Market {
                        peer: from,
                        request,
                        channel,
                    }) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(Event::Market { channel, .. }))
                        | Err(mpsc::error::TrySendError::Closed(Event::Market { channel, .. })) => {
                            self.stats.market_overload += 1;
                            let _ = self
                                .swarm
                                .behaviour_mut()
                                .market
                                .send_response(channel, MarketResponse::Declined(Decline::NotAccepting));
                        }
                        Err(_) => {}
                    }
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some((_, reply)) = self.pending_market.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id,
                error,
                peer,
                ..
            } => {
                if let Some((_, reply)) = self.pending_market.remove(&request_id) {
                    let _ = reply.send(Err(request_error(&peer, error)));
                }
            }
            request_response::Event::InboundFailure { .. } => self.stats.inbound_failures += 1,
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    async fn content_event(
        &mut self,
        ev: request_response::Event<agora_protocol::rpc::ContentRequest, ContentResponse>,
    ) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    let Some(from) = node(&peer) else { return };
                    match self.events.try_send(Event::Content {
                        peer: from,
                        request,
                        channel,
                    }) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(Event::Content { channel, .. }))
                        | Err(mpsc::error::TrySendError::Closed(Event::Content { channel, .. })) => {
                            let _ = self
                                .swarm
                                .behaviour_mut()
                                .content
                                .send_response(channel, ContentResponse::NotFound);
                        }
                        Err(_) => {}
                    }
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some((_, reply)) = self.pending_content.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id,
                error,
                peer,
                ..
            } => {
                if let Some((_, reply)) = self.pending_content.remove(&request_id) {
                    let _ = reply.send(Err(request_error(&peer, error)));
                }
            }
            request_response::Event::InboundFailure { .. } => self.stats.inbound_failures += 1,
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}

fn request_error(peer: &PeerId, error: request_response::OutboundFailure) -> NetworkError {
    NetworkError::Request {
        peer: peer.to_string(),
        reason: error.to_string(),
    }
}
