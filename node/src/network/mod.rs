//! The network: one task owns the libp2p swarm.
//!
//! [`spawn`] builds the swarm and starts its event loop on the tokio runtime.
//! The rest of the node talks to it through a cloneable [`Client`] (a bounded
//! command channel; every command that has an answer carries a `oneshot`) and
//! hears from it through a bounded channel of [`Event`]s. The loop keeps
//! `pending_*` maps of outstanding requests and queries keyed by their ids.
//! No lock is ever taken around the swarm.
//!
//! Inbound gossip is validated by the node (signature, freshness, size)
//! before gossipsub forwards it: the loop hands each message out as
//! [`Event::Gossip`] and the node answers with [`Client::report`].

mod behaviour;
mod codec;
mod event_loop;

use std::collections::HashSet;
use std::time::Duration;

use agora_protocol::rpc::{ContentRequest, ContentResponse, MarketRequest, MarketResponse};
use agora_protocol::{Keypair, NodeId};
use libp2p::request_response::ResponseChannel;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use libp2p::gossipsub::{MessageAcceptance, MessageId as GossipId};

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
    /// Most established connections.
    pub max_connections: u32,
    /// Most incoming connections being set up at once.
    pub max_pending_incoming: u32,
    /// Most concurrent request-response streams per connection.
    pub max_concurrent_streams: usize,
    /// Capacity of the command and event channels.
    pub channel_capacity: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: Vec::new(),
            bootstrap: Vec::new(),
            transport: Transport::TcpQuic,
            mdns: false,
            gossip_heartbeat: Duration::from_millis(200),
            ping_interval: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            content_timeout: Duration::from_secs(60),
            idle_connection_timeout: Duration::from_secs(60),
            max_connections: 512,
            max_pending_incoming: 64,
            max_concurrent_streams: 256,
            channel_capacity: 4096,
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
    /// A market request; answer with [`Client::respond_market`].
    Market {
        /// The requesting peer (authenticated by the connection).
        peer: NodeId,
        /// The request.
        request: MarketRequest,
        /// Where the answer goes.
        channel: ResponseChannel<MarketResponse>,
    },
    /// A content request; answer with [`Client::respond_content`].
    Content {
        /// The requesting peer.
        peer: NodeId,
        /// The request.
        request: ContentRequest,
        /// Where the answer goes.
        channel: ResponseChannel<ContentResponse>,
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
}

/// Counters the network keeps.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    /// Connected peers.
    pub connected: usize,
    /// Gossip messages dropped because the node was busy.
    pub gossip_dropped: u64,
    /// Market requests refused because the node was busy.
    pub market_overload: u64,
    /// Inbound request-response failures (malformed frames, resets).
    pub inbound_failures: u64,
    /// Connections refused by the connection limits.
    pub connections_refused: u64,
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
        channel: ResponseChannel<ContentResponse>,
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

/// A handle to the network task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    tx: mpsc::Sender<Command>,
    local: NodeId,
}

impl Client {
    /// This node's id.
    pub fn local_id(&self) -> NodeId {
        self.local
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

    /// Answers an inbound market request.
    pub async fn respond_market(&self, channel: ResponseChannel<MarketResponse>, response: MarketResponse) {
        let _ = self.send(Command::RespondMarket { channel, response }).await;
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
    pub async fn respond_content(
        &self,
        channel: ResponseChannel<ContentResponse>,
        response: ContentResponse,
    ) {
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
        Ok(peers
            .iter()
            .filter_map(|p| NodeId::from_peer_id(p).ok())
            .collect())
    }

    /// The addresses the node listens on.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetworkError> {
        self.ask(|reply| Command::ListenAddrs { reply }).await
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
    let mut swarm = behaviour::build_swarm(keypair.to_libp2p(), &config)?;
    for addr in &config.listen {
        swarm.listen_on(addr.clone()).map_err(|e| NetworkError::Listen {
            addr: addr.clone(),
            reason: e.to_string(),
        })?;
    }
    for addr in &config.bootstrap {
        if let Err(e) = swarm.dial(addr.clone()) {
            tracing::warn!(%addr, error = %e, "cannot dial bootstrap peer");
        }
    }
    let (tx, rx) = mpsc::channel(config.channel_capacity);
    let client = Client {
        tx,
        local: keypair.node_id(),
    };
    let event_loop = event_loop::EventLoop::new(swarm, rx, events, cancel, config.bootstrap.clone());
    let handle = tokio::spawn(event_loop.run());
    Ok((client, handle))
}
