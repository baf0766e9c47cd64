//! The network: one task owns the libp2p swarm.
//!
//! [`spawn`] builds the swarm and starts its event loop on the tokio runtime.
//! The rest of the node talks to it through a cloneable [`Client`] (a bounded
//! command channel; every command that has an answer carries a `oneshot`) and
//! hears from it through a bounded channel of [`Event`]s. The loop keeps
//! `pending_*` maps of outstanding requests and queries keyed by their ids.
//! No lock is ever taken around the swarm.
//!
//! Market requests to one peer that are waiting at the same moment travel
//! together: the loop drains every queued command before it sends, and
//! groups each peer's requests into [`MarketRequest::Batch`] frames (one
//! substream for up to [`agora_protocol::limits::MAX_BATCH`] requests).
//! While two frames to a connected peer are unanswered, what is queued for
//! it waits and goes in one batch when either is answered: under load, the
//! requests of a round trip share one substream.
//! Inbound batches are unpacked: each request inside reaches the node as its
//! own [`Event::Market`], and the loop answers the batch once every part is
//! answered. Batching is invisible above this module.
//!
//! Inbound gossip is validated by the node (signature, freshness, size)
//! before gossipsub forwards it: the loop hands each message out as
//! [`Event::Gossip`] and the node answers with [`Client::report`].

mod behaviour;
mod codec;
mod event_loop;
mod flood;
pub mod peer;
mod reach;
mod relay_server;
mod told;
mod trim;

use std::collections::HashSet;
use std::time::Duration;

use agora_protocol::rpc::{ContentRequest, ContentResponse, MarketRequest, MarketResponse};
use agora_protocol::{Keypair, NodeId};
use libp2p::request_response::{InboundRequestId, ResponseChannel};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use libp2p::gossipsub::{MessageAcceptance, MessageId as GossipId};
pub use peer::ToPeerId;
pub use reach::Reachability;
pub use trim::MESH_N_HIGH;

/// Which transports the node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP (Noise + Yamux) and QUIC: real networks and loopback.
    TcpQuic,
    /// libp2p's in-process memory transport (Noise + Yamux): many nodes in
    /// one process, for tests and the in-process testnet.
    Memory,
}

/// Network settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start.
    pub bootstrap: Vec<Multiaddr>,
    /// Peers seen in earlier runs (the address book, each address ending
    /// in `/p2p/<id>`), dialled beside the bootstrap peers: a node rejoins
    /// from them when every bootstrap peer is gone.
    pub remembered: Vec<Multiaddr>,
    /// Transports.
    pub transport: Transport,
    /// mDNS discovery on the LAN.
    pub mdns: bool,
    /// Gossipsub heartbeat.
    pub gossip_heartbeat: Duration,
    /// How often to ping connected peers (round-trip times).
    pub ping_interval: Duration,
    /// Timeout of a market request.
    pub request_timeout: Duration,
    /// Timeout of a content transfer.
    pub content_timeout: Duration,
    /// Close connections idle this long.
    pub idle_connection_timeout: Duration,
    /// Most established connections: more are refused.
    pub max_connections: u32,
    /// Connections kept when nothing needs more: above this many, the
    /// least recently used idle ones are closed (below `max_connections`,
    /// so that a newcomer always finds room).
    pub target_connections: u32,
    /// Most incoming connections being set up at once.
    pub max_pending_incoming: u32,
    /// Most concurrent request-response streams per connection.
    pub max_concurrent_streams: usize,
    /// Capacity of the command and event channels.
    pub channel_capacity: usize,
    /// Relay others' connections within these limits (circuit relay v2);
    /// `None`: relay for nobody.
    pub relay_server: Option<RelayLimits>,
    /// Relays to reserve a slot on and listen through (multiaddrs ending
    /// in `/p2p/<id>`), whatever AutoNAT finds.
    pub relays: Vec<Multiaddr>,
    /// Probe this node's reachability with AutoNAT (and answer other
    /// nodes' probes); a node found private reserves on relays it meets.
    pub autonat: bool,
    /// Upgrade relayed connections to direct ones (DCUtR).
    pub hole_punching: bool,
    /// Addresses others can dial this node at, known to the owner (a
    /// public address, a forwarded port): confirmed without a probe. A
    /// relay serves only once it has a confirmed address.
    pub external: Vec<Multiaddr>,
}

/// What a relay serves, at most.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayLimits {
    /// Reservations held at once.
    pub max_reservations: usize,
    /// Reservations per peer.
    pub max_reservations_per_peer: usize,
    /// How long a reservation lasts.
    pub reservation_duration: Duration,
    /// Relayed connections at once.
    pub max_circuits: usize,
    /// Relayed connections per peer.
    pub max_circuits_per_peer: usize,
    /// Longest relayed connection.
    pub max_circuit_duration: Duration,
    /// Most bytes a relayed connection carries each way.
    pub max_circuit_bytes: u64,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            max_reservations: 128,
            max_reservations_per_peer: 4,
            reservation_duration: Duration::from_secs(3600),
            max_circuits: 64,
            max_circuits_per_peer: 8,
            max_circuit_duration: Duration::from_secs(600),
            max_circuit_bytes: 64 << 20,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: Vec::new(),
            bootstrap: Vec::new(),
            remembered: Vec::new(),
            transport: Transport::TcpQuic,
            mdns: false,
            gossip_heartbeat: Duration::from_millis(200),
            ping_interval: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            content_timeout: Duration::from_secs(60),
            idle_connection_timeout: Duration::from_secs(60),
            max_connections: 512,
            target_connections: 96,
            max_pending_incoming: 64,
            max_concurrent_streams: 256,
            channel_capacity: 4096,
            relay_server: Some(RelayLimits::default()),
            relays: Vec::new(),
            autonat: true,
            hole_punching: true,
            external: Vec::new(),
        }
    }
}

/// Errors of the network layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NetworkError {
    /// The swarm could not be built.
    #[error("network configuration: {0}")]
    Config(String),
    /// Listening failed.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// A request to a peer failed (unreachable, timed out, stream reset,
    /// malformed answer).
    #[error("request to {peer} failed: {reason}")]
    Request {
        /// The peer.
        peer: String,
        /// Why.
        reason: String,
    },
    /// Publishing on a gossip topic failed.
    #[error("publish failed: {0}")]
    Publish(String),
    /// The network task has stopped.
    #[error("the network task has stopped")]
    Stopped,
    /// A DHT query failed.
    #[error("DHT: {0}")]
    Dht(String),
}

/// Content responses smaller than this say too little about a link's
/// rate (the connection's buffers swallow them whole), so they are not
/// timed.
pub const MIN_THROUGHPUT_SAMPLE: usize = 256 * 1024;

/// Where the answer to a content request goes.
#[derive(Debug)]
pub struct ContentReply {
    id: InboundRequestId,
    peer: PeerId,
    channel: ResponseChannel<ContentResponse>,
}

/// What the network tells the node.
#[derive(Debug)]
pub enum Event {
    /// A gossip message to validate, then report with [`Client::report`].
    Gossip {
        /// Gossipsub's id, for the report.
        id: GossipId,
        /// The peer that forwarded it.
        source: PeerId,
        /// The author gossipsub authenticated (its signature), if any.
        author: Option<NodeId>,
        /// The topic.
        topic: String,
        /// The bytes.
        data: Vec<u8>,
    },
    /// A market request; answer with [`Client::respond_market`]. Never a
    /// [`MarketRequest::Batch`]: batches arrive unpacked.
    Market {
        /// The requesting peer (authenticated by the connection).
        peer: NodeId,
        /// The request.
        request: MarketRequest,
        /// Where the answer goes.
        channel: Reply,
    },
    /// A content request; answer with [`Client::respond_content`].
    Content {
        /// The requesting peer.
        peer: NodeId,
        /// The request.
        request: ContentRequest,
        /// Where the answer goes.
        channel: ContentReply,
    },
    /// How fast content sent to a peer went: measured from handing a
    /// response of at least [`MIN_THROUGHPUT_SAMPLE`] bytes to the swarm
    /// until it was flushed to the connection.
    Throughput {
        /// The peer.
        peer: NodeId,
        /// Bytes per second.
        bytes_per_s: f64,
        /// Whether this is only a bound: a response still unsent (or
        /// failed) after so long shows the rate is at most this.
        at_most: bool,
    },
    /// A round-trip time measured by ping.
    Rtt {
        /// The peer.
        peer: NodeId,
        /// The round-trip time.
        rtt: Duration,
    },
    /// A connection to a peer was established (first connection).
    Connected {
        /// The peer.
        peer: NodeId,
    },
    /// The last connection to a peer closed.
    Disconnected {
        /// The peer.
        peer: NodeId,
    },
    /// A peer subscribed to a topic.
    Subscribed {
        /// The peer.
        peer: NodeId,
        /// The topic.
        topic: String,
    },
    /// The node listens on a new address.
    Listening {
        /// The address.
        addr: Multiaddr,
    },
    /// The node stopped listening on an address.
    ListenClosed {
        /// The address.
        addr: Multiaddr,
    },
    /// Whether peers outside can dial the node changed.
    Reachability(Reachability),
}

/// Where the answer to an inbound market request goes. Dropping it
/// unanswered fails the request (the peer sees an error, or a decline
/// inside its batch).
#[derive(Debug)]
pub struct Reply(ReplyTo);

impl Reply {
    /// The batch the request came in, if it came in one: a number this
    /// node gives each batch it receives. The batch is answered once its
    /// every part is.
    pub fn frame(&self) -> Option<u64> {
        match self.0 {
            ReplyTo::Alone(_) => None,
            ReplyTo::Part(_, frame) => Some(frame),
        }
    }
}

#[derive(Debug)]
enum ReplyTo {
    /// The request came alone on its substream.
    Alone(ResponseChannel<MarketResponse>),
    /// The request was one part of a batch (the batch's number).
    Part(oneshot::Sender<MarketResponse>, u64),
}

/// Counters the network keeps.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    /// Connected peers.
    pub connected: usize,
    /// Open connections that go through a relay.
    pub relayed_connections: usize,
    /// Connected peers in at least one of the node's gossip meshes.
    pub mesh_peers: usize,
    /// Mesh memberships summed over the node's topics (a peer in the
    /// meshes of three topics counts three times).
    pub mesh_links: usize,
    /// Gossip messages dropped because the node was busy.
    pub gossip_dropped: u64,
    /// Market requests refused because the node was busy.
    pub market_overload: u64,
    /// Market frames sent again because a connection closed under them
    /// while the peer had a relayed one (closed a second after a direct
    /// one exists), or because their dial failed while the peer's direct
    /// connection was being made.
    pub market_resent: u64,
    /// Inbound request-response failures (malformed frames, resets).
    pub inbound_failures: u64,
    /// Connections established (either side; each cost a handshake).
    pub connections_opened: u64,
    /// Dials this node asked for itself (bootstrap, address book, its
    /// domain's peers); request and DHT dials are not counted.
    pub dials: u64,
    /// Kademlia liveness checks of a full bucket's oldest entry, each a
    /// dial (see `Behaviour::learn_address`).
    pub liveness_checks: u64,
    /// Connections refused by the connection limits.
    pub connections_refused: u64,
    /// Relayed connections upgraded to direct ones by hole punching.
    pub holes_punched: u64,
    /// Hole punching attempts that failed.
    pub holes_failed: u64,
    /// Idle connections closed to stay at the target.
    pub connections_trimmed: u64,
    /// Gossip neighbours cut off for flooding (see `flood`).
    pub flooders_cut: u64,
    /// Gossip neighbours refused for flooding now.
    pub flooders_refused: usize,
    /// Market batches sent.
    pub batches_sent: u64,
    /// Market requests sent inside those batches.
    pub batched_requests: u64,
    /// Market requests sent alone.
    pub single_requests: u64,
    /// Content bytes sent to other nodes: content responses (whole blobs
    /// and slices) and blobs inline in acceptances.
    pub content_sent_bytes: u64,
}

#[derive(Debug)]
pub(crate) enum Command {
    Publish {
        topic: String,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), NetworkError>>,
    },
    Subscribe {
        topic: String,
    },
    Unsubscribe {
        topic: String,
    },
    Report {
        id: GossipId,
        source: PeerId,
        acceptance: MessageAcceptance,
    },
    Market {
        peer: PeerId,
        request: MarketRequest,
        reply: oneshot::Sender<Result<MarketResponse, NetworkError>>,
    },
    Turn(Box<Outbox>),
    RespondMarket {
        channel: ResponseChannel<MarketResponse>,
        response: MarketResponse,
    },
    Fetch {
        peer: PeerId,
        request: ContentRequest,
        reply: oneshot::Sender<Result<ContentResponse, NetworkError>>,
    },
    RespondContent {
        channel: ContentReply,
        response: ContentResponse,
    },
    AddAddress {
        peer: PeerId,
        addr: Multiaddr,
    },
    Dial {
        addr: Multiaddr,
    },
    StartProviding {
        key: Vec<u8>,
    },
    GetProviders {
        key: Vec<u8>,
        reply: oneshot::Sender<Result<HashSet<PeerId>, NetworkError>>,
    },
    AddressBook {
        most: usize,
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Stats {
        reply: oneshot::Sender<Stats>,
    },
    Disconnect {
        peer: PeerId,
    },
    Block {
        peers: HashSet<PeerId>,
    },
}

/// A market request waiting to be sent, and who waits for its answer.
type Queued = (
    PeerId,
    MarketRequest,
    oneshot::Sender<Result<MarketResponse, NetworkError>>,
);

/// What the node hands the network at the end of one turn, in one
/// command: market requests (grouped per peer into as few frames as fit),
/// answers to inbound requests, gossip to publish, gossip verdicts, and
/// peers' addresses to learn or dial.
#[derive(Debug, Default)]
pub struct Outbox {
    pub(crate) requests: Vec<Queued>,
    pub(crate) responses: Vec<(ResponseChannel<MarketResponse>, MarketResponse)>,
    pub(crate) publish: Vec<(String, Vec<u8>)>,
    pub(crate) reports: Vec<(GossipId, PeerId, MessageAcceptance)>,
    pub(crate) addresses: Vec<(PeerId, Multiaddr)>,
    pub(crate) dials: Vec<Multiaddr>,
}

impl Outbox {
    /// Queues a request. Its answer comes through the returned handle once
    /// the outbox is sent; dropping the outbox unsent fails it.
    pub fn push(&mut self, peer: NodeId, request: MarketRequest) -> Answer {
        let (tx, rx) = oneshot::channel();
        self.requests.push((peer.to_peer_id(), request, tx));
        Answer(rx)
    }

    /// Answers an inbound market request (a part of a batch at once: the
    /// loop collects the batch's answers itself).
    pub fn respond(&mut self, channel: Reply, response: MarketResponse) {
        match channel.0 {
            ReplyTo::Alone(channel) => self.responses.push((channel, response)),
            ReplyTo::Part(tx, _) => {
                let _ = tx.send(response);
            }
        }
    }

    /// Publishes on a gossip topic.
    pub fn publish(&mut self, topic: String, data: Vec<u8>) {
        self.publish.push((topic, data));
    }

    /// Reports the validation result of a gossip message.
    pub fn report(&mut self, id: GossipId, source: PeerId, acceptance: MessageAcceptance) {
        self.reports.push((id, source, acceptance));
    }

    /// Tells the swarm where a peer can be reached.
    pub fn add_address(&mut self, peer: NodeId, addr: Multiaddr) {
        self.addresses.push((peer.to_peer_id(), addr));
    }

    /// Dials an address.
    pub fn dial(&mut self, addr: Multiaddr) {
        self.dials.push(addr);
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
            && self.responses.is_empty()
            && self.publish.is_empty()
            && self.reports.is_empty()
            && self.addresses.is_empty()
            && self.dials.is_empty()
    }
}

/// The answer to a request queued in an [`Outbox`].
#[derive(Debug)]
pub struct Answer(oneshot::Receiver<Result<MarketResponse, NetworkError>>);

impl Answer {
    /// Waits for it.
    pub async fn get(self) -> Result<MarketResponse, NetworkError> {
        self.0.await.map_err(|_| NetworkError::Stopped)?
    }
}

/// A handle to the network task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    tx: mpsc::Sender<Command>,
    local: NodeId,
    reach: tokio::sync::watch::Receiver<Reach>,
}

/// How this node is reached, as the network task last saw it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reach {
    /// Whether other nodes can dial it.
    pub reachability: Reachability,
    /// Relays holding a reservation for it.
    pub relays: Vec<NodeId>,
    /// Its external addresses, confirmed by AutoNAT or a relay.
    pub external: Vec<Multiaddr>,
    /// Connected peers reached only through a relay.
    pub relayed: HashSet<NodeId>,
}

impl Client {
    /// This node's id.
    pub fn local_id(&self) -> NodeId {
        self.local
    }

    /// How this node is reached now.
    pub fn reach(&self) -> Reach {
        self.reach.borrow().clone()
    }

    async fn send(&self, c: Command) -> Result<(), NetworkError> {
        self.tx.send(c).await.map_err(|_| NetworkError::Stopped)
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, NetworkError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx)).await?;
        rx.await.map_err(|_| NetworkError::Stopped)
    }

    /// Publishes on a gossip topic.
    pub async fn publish(&self, topic: String, data: Vec<u8>) -> Result<(), NetworkError> {
        self.ask(|reply| Command::Publish { topic, data, reply }).await?
    }

    /// Subscribes to a gossip topic.
    pub async fn subscribe(&self, topic: String) -> Result<(), NetworkError> {
        self.send(Command::Subscribe { topic }).await
    }

    /// Unsubscribes from a gossip topic.
    pub async fn unsubscribe(&self, topic: String) -> Result<(), NetworkError> {
        self.send(Command::Unsubscribe { topic }).await
    }

    /// Reports the validation result of a gossip message.
    pub async fn report(&self, id: GossipId, source: PeerId, acceptance: MessageAcceptance) {
        let _ = self
            .send(Command::Report {
                id,
                source,
                acceptance,
            })
            .await;
    }

    /// Sends a market request and waits for the answer.
    pub async fn market(&self, peer: NodeId, request: MarketRequest) -> Result<MarketResponse, NetworkError> {
        let pid = peer.to_peer_id();
        self.ask(|reply| Command::Market {
            peer: pid,
            request,
            reply,
        })
        .await?
    }

    /// Hands over everything in `outbox`.
    pub async fn send_all(&self, outbox: Outbox) {
        if !outbox.is_empty() {
            let _ = self.send(Command::Turn(Box::new(outbox))).await;
        }
    }

    /// Answers an inbound market request.
    pub async fn respond_market(&self, channel: Reply, response: MarketResponse) {
        match channel.0 {
            ReplyTo::Alone(channel) => {
                let _ = self.send(Command::RespondMarket { channel, response }).await;
            }
            // The loop collects the batch's answers itself.
            ReplyTo::Part(tx, _) => {
                let _ = tx.send(response);
            }
        }
    }

    /// Fetches content from a peer.
    pub async fn fetch(
        &self,
        peer: NodeId,
        request: ContentRequest,
    ) -> Result<ContentResponse, NetworkError> {
        let pid = peer.to_peer_id();
        self.ask(|reply| Command::Fetch {
            peer: pid,
            request,
            reply,
        })
        .await?
    }

    /// Answers an inbound content request.
    pub async fn respond_content(&self, channel: ContentReply, response: ContentResponse) {
        let _ = self.send(Command::RespondContent { channel, response }).await;
    }

    /// Tells the swarm where a peer can be reached.
    pub async fn add_address(&self, peer: NodeId, addr: Multiaddr) {
        let _ = self
            .send(Command::AddAddress {
                peer: peer.to_peer_id(),
                addr,
            })
            .await;
    }

    /// Dials an address.
    pub async fn dial(&self, addr: Multiaddr) {
        let _ = self.send(Command::Dial { addr }).await;
    }

    /// Registers as a provider of a DHT key.
    pub async fn start_providing(&self, key: Vec<u8>) {
        let _ = self.send(Command::StartProviding { key }).await;
    }

    /// Looks up providers of a DHT key.
    pub async fn get_providers(&self, key: Vec<u8>) -> Result<HashSet<NodeId>, NetworkError> {
        let peers = self.ask(|reply| Command::GetProviders { key, reply }).await??;
        Ok(peers.iter().filter_map(|p| peer::node_id(p).ok()).collect())
    }

    /// The addresses the node listens on.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetworkError> {
        self.ask(|reply| Command::ListenAddrs { reply }).await
    }

    /// At most `most` peers' addresses, each ending in `/p2p/<id>`, from
    /// the routing table: connected peers first. What a node keeps to
    /// rejoin from after a restart.
    pub async fn address_book(&self, most: usize) -> Result<Vec<Multiaddr>, NetworkError> {
        self.ask(|reply| Command::AddressBook { most, reply }).await
    }

    /// Network counters.
    pub async fn stats(&self) -> Result<Stats, NetworkError> {
        self.ask(|reply| Command::Stats { reply }).await
    }

    /// Cuts this node off from `peers` (closing and then refusing every
    /// connection with them) until called again with other peers; an empty
    /// set heals. For partition tests.
    pub async fn block(&self, peers: impl IntoIterator<Item = NodeId>) {
        let peers = peers.into_iter().map(|n| n.to_peer_id()).collect();
        let _ = self.send(Command::Block { peers }).await;
    }

    /// Closes all connections to a peer.
    pub async fn disconnect(&self, peer: NodeId) {
        let _ = self
            .send(Command::Disconnect {
                peer: peer.to_peer_id(),
            })
            .await;
    }
}

/// Builds the swarm, starts listening and dialling, and spawns the event
/// loop. Events go to `events`; the loop stops when `cancel` fires.
pub async fn spawn(
    keypair: &Keypair,
    config: Config,
    events: mpsc::Sender<Event>,
    cancel: CancellationToken,
) -> Result<(Client, tokio::task::JoinHandle<()>), NetworkError> {
    let mut swarm = behaviour::build_swarm(peer::libp2p_keypair(keypair), &config)?;
    for addr in &config.listen {
        swarm.listen_on(addr.clone()).map_err(|e| NetworkError::Listen {
            addr: addr.clone(),
            reason: e.to_string(),
        })?;
    }
    for addr in &config.external {
        swarm.add_external_address(addr.clone());
    }
    for addr in &config.bootstrap {
        if let Err(e) = swarm.dial(addr.clone()) {
            tracing::warn!(%addr, error = %e, "cannot dial bootstrap peer");
        }
    }
    for addr in &config.remembered {
        if let Err(e) = swarm.dial(addr.clone()) {
            tracing::debug!(%addr, error = %e, "cannot dial a remembered peer");
        }
    }
    let (tx, rx) = mpsc::channel(config.channel_capacity);
    let (reach_tx, reach_rx) = tokio::sync::watch::channel(Reach::default());
    let client = Client {
        tx,
        local: keypair.node_id(),
        reach: reach_rx,
    };
    let event_loop = event_loop::EventLoop::new(
        swarm,
        rx,
        events,
        cancel,
        event_loop::Setup {
            bootstrap: config
                .bootstrap
                .iter()
                .chain(&config.remembered)
                .cloned()
                .collect(),
            target_connections: config.target_connections.min(config.max_connections) as usize,
            reach_tx,
            relays: config.relays.clone(),
            declared_external: !config.external.is_empty(),
            only_global_ips: reach::only_global_ips(&config.listen),
        },
    );
    let handle = tokio::spawn(event_loop.run());
    Ok((client, handle))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use agora_protocol::market::{Cancel, CancelReason};
    use agora_protocol::rpc::Decline;
    use agora_protocol::units::Timestamp;
    use agora_protocol::{Envelope, JobId, MessageId, Nonce, TaskId};

    use super::*;

    fn memory_config(listen: Option<Multiaddr>, bootstrap: Vec<Multiaddr>) -> Config {
        Config {
            listen: listen.into_iter().collect(),
            bootstrap,
            transport: Transport::Memory,
            ..Config::default()
        }
    }

    fn cancel(kp: &Keypair, i: u32) -> MarketRequest {
        let c = Cancel {
            agreement: MessageId([i as u8; 32]),
            task: TaskId {
                job: JobId([1; 16]),
                index: i,
            },
            reason: CancelReason::Superseded,
        };
        let env = Envelope::seal(
            kp,
            &c,
            Timestamp::from_system(std::time::SystemTime::now()),
            Duration::from_secs(30),
            Nonce(rand::random()),
        )
        .unwrap();
        MarketRequest::Cancel(env)
    }

    /// Two nodes over the memory transport, `a` dialling `b`; `b`'s events
    /// come out of `brx`.
    struct Pair {
        a: Client,
        ka: Keypair,
        b: Client,
        kb: Keypair,
        brx: mpsc::Receiver<Event>,
        cancel_token: CancellationToken,
    }

    async fn pair() -> Pair {
        let port = rand::random::<u64>() >> 1;
        let addr: Multiaddr = format!("/memory/{port}").parse().unwrap();
        let cancel_token = CancellationToken::new();
        let (kb, ka) = (
            Keypair::from_secret(rand::random()),
            Keypair::from_secret(rand::random()),
        );
        let (btx, brx) = mpsc::channel(1024);
        let (b, _) = spawn(
            &kb,
            memory_config(Some(addr.clone()), vec![]),
            btx,
            cancel_token.clone(),
        )
        .await
        .unwrap();
        let (atx, _arx) = mpsc::channel(1024);
        let boot = addr.with(libp2p::multiaddr::Protocol::P2p(kb.node_id().to_peer_id()));
        let (a, _) = spawn(&ka, memory_config(None, vec![boot]), atx, cancel_token.clone())
            .await
            .unwrap();
        Pair {
            a,
            ka,
            b,
            kb,
            brx,
            cancel_token,
        }
    }

    /// The next market request `b` hears of, within `within`.
    async fn next_market(
        brx: &mut mpsc::Receiver<Event>,
        within: Duration,
    ) -> Option<(MarketRequest, Reply)> {
        tokio::time::timeout(within, async {
            while let Some(ev) = brx.recv().await {
                if let Event::Market { request, channel, .. } = ev {
                    return Some((request, channel));
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }

    /// The answer to a queued request: it must come within 10 s and be
    /// the peer's.
    async fn delivered(answer: Answer) -> MarketResponse {
        tokio::time::timeout(Duration::from_secs(10), answer.get())
            .await
            .expect("an answer within the timeout")
            .expect("delivered")
    }

    /// With two frames to a peer unanswered, further requests wait; once
    /// one is answered they all go in one batch, and every request gets
    /// its answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_behind_two_unanswered_frames_wait_and_then_go_as_one_batch() {
        let Pair {
            a,
            ka,
            b,
            kb,
            mut brx,
            cancel_token,
        } = pair().await;
        until_connected(&a, "the two nodes did not connect").await;
        let id = |r: &MarketRequest| match r {
            MarketRequest::Cancel(env) => env.peek::<Cancel>().unwrap().agreement.0[0],
            other => panic!("a batch reached the node: {other:?}"),
        };
        // One request per turn: the first two leave at once, alone.
        let mut answers = Vec::new();
        let mut heard = Vec::new();
        for i in 0..7 {
            let mut outbox = Outbox::default();
            answers.push(outbox.push(kb.node_id(), cancel(&ka, i)));
            a.send_all(outbox).await;
            if i < 2 {
                let (r, reply) = next_market(&mut brx, Duration::from_secs(10))
                    .await
                    .expect("a request with room in flight leaves at once");
                assert_eq!(id(&r), i as u8);
                heard.push(reply);
            }
        }
        // The other five wait while neither is answered.
        assert!(
            next_market(&mut brx, Duration::from_millis(300)).await.is_none(),
            "a third frame went out while two were unanswered"
        );
        let first = heard.remove(0);
        b.respond_market(first, MarketResponse::Declined(Decline::invalid(0)))
            .await;
        for i in 2..7u8 {
            let (r, reply) = next_market(&mut brx, Duration::from_secs(10))
                .await
                .expect("the waiting requests leave once a frame is answered");
            assert_eq!(id(&r), i, "in the order they were queued");
            b.respond_market(reply, MarketResponse::Declined(Decline::invalid(i)))
                .await;
        }
        b.respond_market(heard.remove(0), MarketResponse::Declined(Decline::invalid(1)))
            .await;
        for (i, answer) in answers.into_iter().enumerate() {
            let r = delivered(answer).await;
            assert_eq!(r, MarketResponse::Declined(Decline::invalid(i)), "answer {i}");
        }
        let s = a.stats().await.unwrap();
        assert_eq!((s.batches_sent, s.batched_requests, s.single_requests), (1, 5, 2));
        cancel_token.cancel();
    }

    /// Requests queued together reach the peer as one batch, each is handed
    /// to the node alone, and each gets its own answer back, in order; a
    /// part the node drops unanswered is declined, not lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_requests_travel_as_one_batch_and_each_gets_its_answer() {
        let Pair {
            a,
            ka,
            b,
            kb,
            mut brx,
            cancel_token,
        } = pair().await;
        // The receiving node: answers each cancel with its agreement's first
        // byte, and drops the seventh without answering.
        let responder = b.clone();
        let seen = tokio::spawn(async move {
            let mut n = 0;
            while let Some(ev) = brx.recv().await {
                if let Event::Market { request, channel, .. } = ev {
                    let MarketRequest::Cancel(env) = request else {
                        panic!("a batch reached the node: {request:?}")
                    };
                    let c = env
                        .open::<Cancel>(Timestamp::from_system(std::time::SystemTime::now()))
                        .unwrap();
                    n += 1;
                    let i = c.payload().agreement.0[0];
                    if i != 7 {
                        responder
                            .respond_market(channel, MarketResponse::Declined(Decline::invalid(i)))
                            .await;
                    }
                    if n == 20 {
                        return n;
                    }
                }
            }
            n
        });
        // Wait for the connection, then queue 20 requests at once.
        until_connected(&a, "the two nodes did not connect").await;
        let mut outbox = Outbox::default();
        let answers: Vec<Answer> = (0..20)
            .map(|i| outbox.push(kb.node_id(), cancel(&ka, i)))
            .collect();
        a.send_all(outbox).await;
        for (i, answer) in answers.into_iter().enumerate() {
            let r = delivered(answer).await;
            let want = if i == 7 {
                "not answered".to_owned()
            } else {
                i.to_string()
            };
            assert_eq!(r, MarketResponse::Declined(Decline::invalid(want)), "answer {i}");
        }
        assert_eq!(seen.await.unwrap(), 20);
        let s = a.stats().await.unwrap();
        assert_eq!(
            (s.batches_sent, s.batched_requests, s.single_requests),
            (1, 20, 0)
        );
        cancel_token.cancel();
    }

    /// Requests open their streams lazily (the request goes with the
    /// protocol's proposal): a peer that does not speak the market protocol
    /// still fails the request at once with an error, as the full
    /// negotiation did, not after the request timeout and never with an
    /// answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_to_a_peer_without_the_market_protocol_fails_at_once() {
        use libp2p::futures::StreamExt as _;
        let cancel_token = CancellationToken::new();
        // A bare libp2p node that speaks ping and nothing else.
        let stranger_key = Keypair::from_secret(rand::random());
        let mut stranger = libp2p::SwarmBuilder::with_existing_identity(peer::libp2p_keypair(&stranger_key))
            .with_tokio()
            .with_other_transport(|key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                use libp2p::Transport as _;
                Ok(libp2p::core::transport::MemoryTransport::default()
                    .upgrade(libp2p::core::upgrade::Version::V1)
                    .authenticate(libp2p::noise::Config::new(key)?)
                    .multiplex(libp2p::yamux::Config::default()))
            })
            .unwrap()
            .with_behaviour(|_| libp2p::ping::Behaviour::default())
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let addr = memory_addr();
        stranger.listen_on(addr.clone()).unwrap();
        tokio::spawn(async move {
            loop {
                stranger.select_next_some().await;
            }
        });
        let ka = Keypair::from_secret(rand::random());
        let (atx, _arx) = mpsc::channel(1024);
        let boot = addr.with(libp2p::multiaddr::Protocol::P2p(
            stranger_key.node_id().to_peer_id(),
        ));
        let (a, _) = spawn(&ka, memory_config(None, vec![boot]), atx, cancel_token.clone())
            .await
            .unwrap();
        until_connected(&a, "the node did not connect to the stranger").await;
        let mut outbox = Outbox::default();
        let answer = outbox.push(stranger_key.node_id(), cancel(&ka, 1));
        a.send_all(outbox).await;
        let t = std::time::Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(10), answer.get())
            .await
            .expect("an outcome well before the request timeout");
        assert!(r.is_err(), "a peer without the protocol answered: {r:?}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        cancel_token.cancel();
    }

    /// Waits up to 4 s for `c` to hold a connection; fails with `why`.
    async fn until_connected(c: &Client, why: &str) {
        for _ in 0..200 {
            if c.stats().await.unwrap().connected > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{why}");
    }

    /// Waits up to 10 s for `f` to hold.
    async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{what}: not within 10 s");
    }

    /// A fresh in-process address.
    fn memory_addr() -> Multiaddr {
        format!("/memory/{}", rand::random::<u64>() >> 1).parse().unwrap()
    }

    /// A relay, and node B that listens on nothing of its own: only through
    /// the relay, on which it holds a reservation. B answers every market
    /// request with `Decline::invalid("from B")`.
    struct BehindRelay {
        relay: Keypair,
        /// The relay's address, ending in its peer id.
        relay_addr: Multiaddr,
        b_key: Keypair,
        b: Client,
        /// The relay's handle and event channel: dropped, its task stops.
        _relay_alive: (Client, mpsc::Receiver<Event>),
    }

    impl BehindRelay {
        async fn start(cancel: &CancellationToken) -> BehindRelay {
            let (relay, b_key) = (
                Keypair::from_secret(rand::random()),
                Keypair::from_secret(rand::random()),
            );
            let listen = memory_addr();
            let relay_addr = listen
                .clone()
                .with(libp2p::multiaddr::Protocol::P2p(relay.node_id().to_peer_id()));
            let (rtx, rrx) = mpsc::channel(1024);
            let (r, _) = spawn(
                &relay,
                Config {
                    external: vec![listen.clone()],
                    ..memory_config(Some(listen), vec![])
                },
                rtx,
                cancel.clone(),
            )
            .await
            .unwrap();
            let (btx, mut brx) = mpsc::channel(1024);
            let (b, _) = spawn(
                &b_key,
                Config {
                    relays: vec![relay_addr.clone()],
                    ..memory_config(None, vec![])
                },
                btx,
                cancel.clone(),
            )
            .await
            .unwrap();
            eventually("B holds a reservation on the relay", || {
                b.reach().relays == vec![relay.node_id()]
            })
            .await;
            let responder = b.clone();
            tokio::spawn(async move {
                while let Some(ev) = brx.recv().await {
                    if let Event::Market { channel, .. } = ev {
                        responder
                            .respond_market(channel, MarketResponse::Declined(Decline::invalid("from B")))
                            .await;
                    }
                }
            });
            BehindRelay {
                relay,
                relay_addr,
                b_key,
                b,
                _relay_alive: (r, rrx),
            }
        }

        /// B's address through the relay.
        fn circuit(&self) -> Multiaddr {
            use libp2p::multiaddr::Protocol;
            self.relay_addr
                .clone()
                .with(Protocol::P2pCircuit)
                .with(Protocol::P2p(self.b_key.node_id().to_peer_id()))
        }

        /// Starts node C on `listen`, bootstrapped from the relay, told B's
        /// circuit address; returns once C is connected, with C's events.
        async fn newcomer(
            &self,
            kc: &Keypair,
            listen: Multiaddr,
            cancel: &CancellationToken,
        ) -> (Client, mpsc::Receiver<Event>) {
            let (ctx, crx) = mpsc::channel(1024);
            let (c, _) = spawn(
                kc,
                memory_config(Some(listen), vec![self.relay_addr.clone()]),
                ctx,
                cancel.clone(),
            )
            .await
            .unwrap();
            c.add_address(self.b_key.node_id(), self.circuit()).await;
            let mut connected = false;
            for _ in 0..500 {
                connected = c.stats().await.unwrap().connected > 0;
                if connected {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(connected, "C did not reach the relay");
            (c, crx)
        }

        /// C asks B once and gets B's answer within 10 s (`how`: the path).
        async fn ask(&self, c: &Client, kc: &Keypair, i: u32, how: &str) {
            let mut outbox = Outbox::default();
            let answer = outbox.push(self.b_key.node_id(), cancel(kc, i));
            c.send_all(outbox).await;
            match tokio::time::timeout(Duration::from_secs(10), answer.get()).await {
                Ok(Ok(r)) => assert_eq!(r, MarketResponse::Declined(Decline::invalid("from B"))),
                Ok(Err(e)) => panic!("no answer {how}: {e}"),
                Err(_) => panic!("no answer {how} within 10 s"),
            }
        }
    }

    /// A node nobody can dial (it listens on nothing) reserves a slot on
    /// its relay; another node reaches it through the relay's circuit
    /// address and gets its requests answered; once a direct connection
    /// exists, the relayed one is closed and requests go direct.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_nobody_can_dial_is_reached_through_its_relay_and_then_directly() {
        let cancel_token = CancellationToken::new();
        let net = BehindRelay::start(&cancel_token).await;
        let kc = Keypair::from_secret(rand::random());
        let c_listen = memory_addr();
        let (c, _c_events) = net.newcomer(&kc, c_listen.clone(), &cancel_token).await;
        let b_id = net.b_key.node_id();
        net.ask(&c, &kc, 1, "through the relay").await;
        eventually("C sees B as reached through the relay", || {
            c.reach().relayed.contains(&b_id)
        })
        .await;
        // A direct connection appears (here B dials C; on a real network,
        // hole punching makes it): the relayed one is closed, and requests
        // take the direct path.
        // Requests sent while the relayed connection gives way are all
        // answered: one it was carrying is sent again on the direct one.
        let direct = c_listen
            .clone()
            .with(libp2p::multiaddr::Protocol::P2p(kc.node_id().to_peer_id()));
        let asks = async {
            for i in 10..30 {
                net.ask(&c, &kc, i, "while the relayed connection closes").await;
                tokio::task::yield_now().await;
            }
        };
        tokio::join!(net.b.dial(direct), asks);
        eventually("C sees B directly", || !c.reach().relayed.contains(&b_id)).await;
        let mut s = c.stats().await.unwrap();
        for _ in 0..250 {
            if s.relayed_connections == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            s = c.stats().await.unwrap();
        }
        assert_eq!(
            s.relayed_connections, 0,
            "the relayed connection stays open: {s:?}"
        );
        assert!(s.connected >= 2, "C lost its connections: {s:?}");
        net.ask(&c, &kc, 2, "over the direct connection").await;
        cancel_token.cancel();
    }

    /// One peer floods a relay with 1,000 reservation requests and 1,000
    /// circuit requests; the relay grants it no more than its rate limits
    /// (30 reservations and 30 circuits per peer per 2 minutes), and
    /// an honest node behind the relay keeps its reservation and stays
    /// reachable through it. The relay's state is bounded by those limits;
    /// the test prints how much the process grew under the flood (other
    /// tests share the process, so the figure is reported, not judged).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_relay_flooded_by_one_peer_keeps_serving_its_honest_clients() {
        use futures::StreamExt;
        use libp2p::multiaddr::Protocol;
        use libp2p::swarm::SwarmEvent;
        let cancel_token = CancellationToken::new();
        let net = BehindRelay::start(&cancel_token).await;
        let (kc, km) = (
            Keypair::from_secret(rand::random()),
            Keypair::from_secret(rand::random()),
        );

        // The flood, from a bare swarm of the node's own make.
        let mut m = behaviour::build_swarm(peer::libp2p_keypair(&km), &memory_config(None, vec![])).unwrap();
        let via_relay = net.relay_addr.clone().with(Protocol::P2pCircuit);
        let to_b = net.circuit();
        m.dial(net.relay_addr.clone()).unwrap();
        let relay_peer = net.relay.node_id().to_peer_id();
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let SwarmEvent::ConnectionEstablished { peer_id, .. } = m.select_next_some().await
                    && peer_id == relay_peer
                {
                    break;
                }
            }
        })
        .await
        .expect("the flooder reaches the relay");
        let rss_before = crate::capacity::resident_memory().unwrap_or(0);
        for _ in 0..1000 {
            let _ = m.listen_on(via_relay.clone());
            let _ = m.dial(to_b.clone());
        }
        let b_peer = net.b_key.node_id().to_peer_id();
        let (mut reservations, mut circuits, mut denied) = (0u32, 0u32, 0u32);
        let flood_end = tokio::time::Instant::now() + Duration::from_secs(8);
        while let Ok(Some(ev)) = tokio::time::timeout_at(flood_end, m.next()).await {
            match ev {
                SwarmEvent::Behaviour(behaviour::BehaviourEvent::RelayClient(
                    libp2p::relay::client::Event::ReservationReqAccepted { renewal: false, .. },
                )) => reservations += 1,
                SwarmEvent::ConnectionEstablished {
                    peer_id, endpoint, ..
                } if peer_id == b_peer && endpoint.is_relayed() => circuits += 1,
                SwarmEvent::OutgoingConnectionError { .. } => denied += 1,
                _ => {}
            }
        }
        assert!(reservations <= 30, "the flooder got {reservations} reservations");
        assert!(circuits <= 30, "the flooder got {circuits} circuits to B");
        assert!(denied >= 900, "only {denied} of the flooder's dials failed");
        let grown = crate::capacity::resident_memory()
            .unwrap_or(0)
            .saturating_sub(rss_before);

        // B kept its place, and a newcomer reaches it through the relay.
        assert_eq!(net.b.reach().relays, vec![net.relay.node_id()]);
        let (c, _c_events) = net.newcomer(&kc, memory_addr(), &cancel_token).await;
        // Asked once: the circuit to B queues behind the flooder's circuits
        // to B, which hang in their handshake (the flooder's swarm is no
        // longer polled), and must not wait for them (the relay client patch
        // in vendor/README.md; unpatched, 4 of 20 runs failed and 8 more
        // waited ~500 ms).
        let asked = tokio::time::Instant::now();
        net.ask(&c, &kc, 1, "through the flooded relay").await;
        let answered = asked.elapsed();
        assert!(
            answered < Duration::from_secs(5),
            "the newcomer waited {answered:?}: behind the flooder's handshakes (10 s each)?"
        );
        eprintln!(
            "flooder: {reservations} reservations, {circuits} circuits ({denied} dials failed) of 1000 + 1000 asked; the process grew by {:.1} MiB; a newcomer was answered through the relay in {answered:?}",
            grown as f64 / (1 << 20) as f64
        );
        drop(m);
        cancel_token.cancel();
    }
}
