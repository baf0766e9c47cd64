//! The composed libp2p behaviour and the swarm it runs in.

use std::time::Duration;

use agora_protocol::limits::MAX_GOSSIP_MESSAGE;
use agora_protocol::rpc::{CONTENT_PROTOCOL, MARKET_PROTOCOL};
use agora_protocol::{IDENTIFY_PROTOCOL, KAD_PROTOCOL, SOFTWARE_VERSION};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, autonat, connection_limits, dcutr, gossipsub, identify, kad,
    mdns, noise, ping, relay, request_response, tcp, yamux,
};

use super::codec::{Codec, Content, Market};
use super::{Config, NetworkError, Transport};

/// Everything a node speaks.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) market: request_response::Behaviour<Codec<Market>>,
    pub(crate) content: request_response::Behaviour<Codec<Content>>,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    /// Relays others' connections (when configured).
    pub(crate) relay: Toggle<super::relay_server::RelayServer>,
    /// Reserves on relays and listens through them.
    pub(crate) relay_client: relay::client::Behaviour,
    /// Upgrades a relayed connection to a direct one.
    pub(crate) dcutr: Toggle<dcutr::Behaviour>,
    /// Asks other nodes to dial this one back, and dials them back.
    pub(crate) autonat: Toggle<autonat::v1::Behaviour>,
}

fn relay_server(peer_id: libp2p::PeerId, limits: &super::RelayLimits) -> super::relay_server::RelayServer {
    let config = relay::Config {
        max_reservations: limits.max_reservations,
        max_reservations_per_peer: limits.max_reservations_per_peer,
        reservation_duration: limits.reservation_duration,
        max_circuits: limits.max_circuits,
        max_circuits_per_peer: limits.max_circuits_per_peer,
        max_circuit_duration: limits.max_circuit_duration,
        max_circuit_bytes: limits.max_circuit_bytes,
        ..relay::Config::default()
    };
    super::relay_server::RelayServer(relay::Behaviour::new(peer_id, config))
}

/// AutoNAT: peers dial this node's addresses back; a few agreeing answers
/// settle whether it is public or private. Dial-backs go to global
/// addresses only, unless every address the node listens on is local (a
/// testnet on one machine or one LAN), where only local ones exist.
///
/// The node picks who may answer its probes itself (`use_connected` off):
/// the network task adds each peer reached directly from outside the
/// node's subnet as a server ([`super::reach::witness`]). A neighbour
/// behind the same home router would dial the node back over the LAN and
/// call it public; AutoNAT would then confirm a LAN address as external
/// and, confident, probe again only minutes later, leaving a node behind
/// NAT without a relay all that time.
fn autonat_behaviour(peer_id: libp2p::PeerId, config: &Config) -> autonat::v1::Behaviour {
    let local = !super::reach::only_global_ips(&config.listen);
    autonat::v1::Behaviour::new(
        peer_id,
        autonat::v1::Config {
            boot_delay: Duration::from_secs(2),
            // The node judges reachability from its own count of answers
            // from outside its subnet (see `reach`): keep asking, whatever
            // AutoNAT's own confidence. Until the answers agree, ask again
            // soon: a node behind NAT is placed work only once it knows
            // it is private and has taken a relay.
            retry_interval: Duration::from_secs(5),
            refresh_interval: Duration::from_secs(60),
            throttle_server_period: Duration::from_secs(5),
            confidence_max: 2,
            only_global_ips: !local,
            use_connected: false,
            ..autonat::v1::Config::default()
        },
    )
}

fn behaviour(
    key: &libp2p::identity::Keypair,
    relay_client: relay::client::Behaviour,
    config: &Config,
) -> Result<Behaviour, NetworkError> {
    let peer_id = key.public().to_peer_id();

    let limits = connection_limits::Behaviour::new(
        connection_limits::ConnectionLimits::default()
            .with_max_pending_incoming(Some(config.max_pending_incoming))
            .with_max_established_incoming(Some(config.max_connections))
            .with_max_established(Some(config.max_connections))
            .with_max_established_per_peer(Some(4)),
    );

    let identify = identify::Behaviour::new(
        identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
            .with_agent_version(SOFTWARE_VERSION.to_owned())
            // A peer's addresses reach it at connection and with every
            // change (push); asking again every minute was 150 new streams a
            // second over the 4,500 connections of 200 idle nodes.
            .with_interval(Duration::from_secs(300))
            .with_push_listen_addr_updates(true),
    );

    let ping = ping::Behaviour::new(ping::Config::new().with_interval(config.ping_interval));

    let mut kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
    kad_config
        .set_query_timeout(Duration::from_secs(10))
        .set_provider_record_ttl(Some(Duration::from_secs(3600)))
        .set_provider_publication_interval(Some(Duration::from_secs(600)))
        .set_periodic_bootstrap_interval(Some(Duration::from_secs(300)))
        .set_max_packet_size(64 * 1024)
        // Peers the node connects to reach the routing table through
        // `learn_address` too (`RoutablePeer`), which paces the liveness
        // dials a full bucket costs.
        .set_kbucket_inserts(kad::BucketInserts::Manual);
    // Content is announced under its own key (SPEC §4.4): room for the
    // keys of a few thousand large blobs, here and from others.
    let store = kad::store::MemoryStore::with_config(
        peer_id,
        kad::store::MemoryStoreConfig {
            max_records: 4096,
            max_provided_keys: 4096,
            ..Default::default()
        },
    );
    let mut kad = kad::Behaviour::with_config(peer_id, store, kad_config);
    kad.set_mode(Some(kad::Mode::Server));

    // Adverts must reach every view in well under a second: a short
    // heartbeat forms meshes quickly, and flood publishing sends a node's
    // own messages to every subscribed peer at once.
    let gossip_config = gossipsub::ConfigBuilder::default()
        .protocol_id_prefix("/agora/gossip")
        .heartbeat_interval(config.gossip_heartbeat)
        .heartbeat_initial_delay(Duration::from_millis(100))
        // Every payload is a signed envelope the node checks before it is
        // forwarded: a second, gossipsub-level signature per message would
        // only double the signing and checking.
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .validate_messages()
        .max_transmit_size(MAX_GOSSIP_MESSAGE)
        .flood_publish(true)
        .mesh_n_low(4)
        .mesh_n(6)
        .mesh_n_high(super::trim::MESH_N_HIGH)
        // Gossip about recent ids (IHAVE) only repairs what the mesh lost
        // in the last few heartbeats, and adverts and summaries repair
        // themselves at their next refresh. At gossipsub's defaults (6
        // peers per topic and heartbeat, or a quarter of the topic's
        // non-mesh peers) an idle 200-node process sent about as many
        // messages at its heartbeats as it forwarded; with 3 peers or a
        // tenth it idled at 1.36-1.47 cores instead of 1.56-1.62 (four
        // alternated runs each; testnet README, `scale`).
        .gossip_lazy(3)
        .gossip_factor(0.1)
        .history_length(5)
        .history_gossip(3)
        .duplicate_cache_time(Duration::from_secs(120))
        // Content-addressed ids: the same advert relayed twice is one message.
        .message_id_fn(|m: &gossipsub::Message| {
            gossipsub::MessageId::from(blake3::hash(&m.data).as_bytes().to_vec())
        })
        .build()
        .map_err(|e| NetworkError::Config(format!("gossipsub: {e}")))?;
    let mut gossipsub = gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, gossip_config)
        .map_err(|e| NetworkError::Config(format!("gossipsub: {e}")))?;
    // Many peers behind one address lower each other's scores (a cheap
    // defence against one host posing as many nodes), except on loopback:
    // a local testnet's nodes all share 127.0.0.1, and past ten of them
    // the penalty would silence every one (their adverts ignored).
    let score = gossipsub::PeerScoreParams {
        ip_colocation_factor_whitelist: [
            std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST),
            std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ]
        .into(),
        ..gossipsub::PeerScoreParams::default()
    };
    gossipsub
        .with_peer_score(score, gossipsub::PeerScoreThresholds::default())
        .map_err(|e| NetworkError::Config(format!("gossipsub scoring: {e}")))?;

    let rr_config = |timeout| {
        request_response::Config::default()
            .with_request_timeout(timeout)
            .with_max_concurrent_streams(config.max_concurrent_streams)
    };
    let market = request_response::Behaviour::with_codec(
        Codec::<Market>::default(),
        [(
            StreamProtocol::new(MARKET_PROTOCOL),
            request_response::ProtocolSupport::Full,
        )],
        rr_config(config.request_timeout),
    );
    let content = request_response::Behaviour::with_codec(
        Codec::<Content>::default(),
        [(
            StreamProtocol::new(CONTENT_PROTOCOL),
            request_response::ProtocolSupport::Full,
        )],
        rr_config(config.content_timeout),
    );

    let mdns = if config.mdns {
        Some(
            mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
                .map_err(|e| NetworkError::Config(format!("mdns: {e}")))?,
        )
    } else {
        None
    };

    Ok(Behaviour {
        limits,
        identify,
        ping,
        kad,
        gossipsub,
        market,
        content,
        mdns: mdns.into(),
        relay: config
            .relay_server
            .as_ref()
            .map(|l| relay_server(peer_id, l))
            .into(),
        relay_client,
        dcutr: config
            .hole_punching
            .then(|| dcutr::Behaviour::new(peer_id))
            .into(),
        autonat: config.autonat.then(|| autonat_behaviour(peer_id, config)).into(),
    })
}

impl Behaviour {
    /// Tells Kademlia of a peer's address unless that would make it dial
    /// (or, with `check`, even so). Into a full bucket that does not hold
    /// the peer, Kademlia parks the newcomer and dials the bucket's least
    /// recently seen entry to check that it is alive. Adverts, summaries
    /// and identify name peers many times a second, and every connection
    /// (a market request, a vouch question) names one more, so at a few
    /// hundred nodes those checks were most of the connections opened while
    /// idle: each a handshake on both sides, trimmed unused half a minute
    /// later and opened again by the next name. So names never set off a
    /// check; a peer the node connected to may, at the pace the caller
    /// allows (see [`LIVENESS_CHECK_EVERY`]): that is how a bucket whose
    /// entries went away takes live peers in their place. The routing
    /// table still fills while a bucket has room, and keeps the addresses
    /// of the peers it holds up to date.
    pub(crate) fn learn_address(&mut self, peer: &PeerId, addr: Multiaddr, check: bool) -> Learned {
        let room = self.kad.kbucket(*peer).is_none_or(|bucket| {
            bucket.num_entries() < kad::K_VALUE.get() || bucket.iter().any(|e| e.node.key.preimage() == peer)
        });
        if room {
            self.kad.add_address(peer, addr);
            Learned::Told
        } else if check {
            match self.kad.add_address(peer, addr) {
                kad::RoutingUpdate::Pending => Learned::Checking,
                kad::RoutingUpdate::Success => Learned::Told,
                // A check is already under way in that bucket.
                kad::RoutingUpdate::Failed => Learned::Skipped,
            }
        } else {
            Learned::Skipped
        }
    }
}

/// What Kademlia was told of an address (see [`Behaviour::learn_address`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Learned {
    /// The bucket had room or holds the peer: the address is in the table.
    Told,
    /// The bucket was full: the peer waits while Kademlia dials the entry
    /// seen least recently, and takes its place if that one is gone.
    Checking,
    /// The bucket was full and no check was allowed: nothing changed.
    Skipped,
}

/// At most one liveness check of a full bucket this often, for peers the
/// node connected to (`kad::Event::RoutablePeer`).
pub(crate) const LIVENESS_CHECK_EVERY: Duration = Duration::from_secs(15);

/// The swarm's settings. Substreams open with multistream-select's
/// `V1Lazy`: a dialer proposing one protocol (every request-response
/// exchange here) sends its request with the proposal instead of waiting a
/// round trip for the listener's confirmation. A listener that lacks the
/// protocol fails the stream, as it would have failed the negotiation; a
/// dialer proposing several protocols still negotiates in full.
fn swarm_config(idle: Duration) -> impl FnOnce(libp2p::swarm::Config) -> libp2p::swarm::Config {
    move |c| {
        c.with_idle_connection_timeout(idle)
            .with_substream_upgrade_protocol_override(libp2p::core::upgrade::Version::V1Lazy)
    }
}

/// Builds the swarm for the configured transport.
pub(crate) fn build_swarm(
    key: libp2p::identity::Keypair,
    config: &Config,
) -> Result<Swarm<Behaviour>, NetworkError> {
    let idle = config.idle_connection_timeout;
    let swarm = match config.transport {
        Transport::TcpQuic => libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| NetworkError::Config(format!("tcp: {e}")))?
            .with_quic()
            // `/dns4/`, `/dns6/` and `/dns/` addresses (bootstrap peers by
            // name), resolved with the system's resolver configuration.
            .with_dns()
            .map_err(|e| {
                NetworkError::Config(format!(
                    "dns: cannot read the system's resolver configuration: {e}"
                ))
            })?
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| NetworkError::Config(format!("relay client: {e}")))?
            .with_behaviour(|key, relay| behaviour(key, relay, config).map_err(Box::from))
            .map_err(|e| NetworkError::Config(e.to_string()))?
            .with_swarm_config(swarm_config(idle))
            .build(),
        Transport::Memory => libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(|key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                use libp2p::Transport as _;
                Ok(libp2p::core::transport::MemoryTransport::default()
                    .upgrade(libp2p::core::upgrade::Version::V1Lazy)
                    .authenticate(noise::Config::new(key)?)
                    .multiplex(yamux::Config::default()))
            })
            .map_err(|e| NetworkError::Config(format!("memory transport: {e}")))?
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| NetworkError::Config(format!("relay client: {e}")))?
            .with_behaviour(|key, relay| behaviour(key, relay, config).map_err(Box::from))
            .map_err(|e| NetworkError::Config(e.to_string()))?
            .with_swarm_config(swarm_config(idle))
            .build(),
    };
    Ok(swarm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::Keypair;

    /// A behaviour as a node builds it, with its Kademlia routing table.
    fn node_behaviour() -> (PeerId, Behaviour) {
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let (_, relay_client) = relay::client::new(peer);
        let config = Config {
            autonat: false,
            ..Config::default()
        };
        (peer, behaviour(&key, relay_client, &config).expect("a behaviour"))
    }

    #[test]
    fn a_full_bucket_is_not_told_of_newcomers_so_kademlia_dials_no_one_unless_a_check_is_allowed() {
        let (local, mut b) = node_behaviour();
        let addr: Multiaddr = "/memory/7".parse().expect("an address");
        // Peers at the largest distance from this node: half of all keys,
        // so one bucket's worth and one more come quickly.
        let mut same_bucket = Vec::new();
        while same_bucket.len() <= kad::K_VALUE.get() {
            let p = PeerId::random();
            let d = kad::KBucketKey::from(local).distance(&kad::KBucketKey::from(p));
            if d.ilog2() == Some(255) {
                same_bucket.push(p);
            }
        }
        let (newcomer, members) = same_bucket.split_last().expect("peers");
        for p in members {
            assert_eq!(
                b.learn_address(p, addr.clone(), false),
                Learned::Told,
                "a bucket with room is told"
            );
        }
        assert_eq!(
            b.learn_address(newcomer, addr.clone(), false),
            Learned::Skipped,
            "a full bucket is not told of a newcomer"
        );
        let held: Vec<PeerId> = b
            .kad
            .kbucket(*newcomer)
            .expect("a bucket")
            .iter()
            .map(|e| *e.node.key.preimage())
            .collect();
        assert_eq!(held.len(), kad::K_VALUE.get());
        assert!(
            !held.contains(newcomer),
            "the newcomer is neither held nor pending"
        );
        assert!(
            !b.kad.kbucket(*newcomer).expect("a bucket").has_pending(),
            "no entry waits on a liveness dial"
        );
        // A peer the bucket holds still has its addresses kept up to date.
        let other: Multiaddr = "/memory/8".parse().expect("an address");
        assert_eq!(b.learn_address(&members[0], other, false), Learned::Told);
        // Even where a check is allowed, Kademlia parks only a peer it is
        // connected to (`RoutablePeer` names such peers): a name alone
        // changes nothing.
        assert_eq!(b.learn_address(newcomer, addr.clone(), true), Learned::Skipped);
        assert!(!b.kad.kbucket(*newcomer).expect("a bucket").has_pending());
    }
}
