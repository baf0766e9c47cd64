//! A running node: wires the network, the store, the executor and the API
//! to the market's decisions ([`agora_market::engine::Engine`]).
//!
//! [`Node::start`] opens the data dir (identity, store, compiled-module
//! cache), measures capacity, starts the network task and the API server,
//! builds the engine (which restores unfinished work from the store's
//! records, read through `host`), writes `node.json`, and spawns the
//! **driver** (`driver`): the one task that owns the engine. Everything
//! reaches the driver as an event: network events, API commands, finished
//! work, answers, clock ticks. It feeds them to the engine and carries out
//! what the engine says: writes in one batch per turn, outputs at once or
//! once that batch is durable, work in a bounded set of tasks (`work`).

pub mod address_book;
mod driver;
mod host;
mod pacer;
mod preempt;
pub(crate) mod records_view;
pub(crate) mod transfer;
mod work;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agora_protocol::NodeId;
use agora_protocol::units::{ComputeUnits, Timestamp};
use anyhow::Context;
use libp2p::Multiaddr;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use agora_market::engine::{Engine, Setup};
use agora_market::idle::IdlePolicy;

use crate::api::NodeInfo;
use crate::api::server::{self, ApiCommand};
use crate::config::Config;
use crate::executor::{self, CompileIsolation, Executor};
use crate::network::{self, Transport};
use crate::store::Store;

/// How the node measures its capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Capacity {
    /// Run the calibration kernel (every real node).
    Measure,
    /// Use a given per-slot figure without measuring. Only for in-process
    /// tests of many nodes, where 200 calibrations would measure nothing but
    /// each other.
    Assume(ComputeUnits),
}

/// Options beyond the configuration file.
#[derive(Debug, Clone)]
pub struct Options {
    /// The data dir.
    pub data_dir: PathBuf,
    /// Transports.
    pub transport: Transport,
    /// How modules are compiled.
    pub compile: CompileIsolation,
    /// How capacity is known.
    pub capacity: Capacity,
    /// Faults to inject (none unless built with `fault-injection`).
    pub faults: crate::faults::Faults,
    /// Seed of the node's random choices (placement ties, spot checks).
    pub seed: u64,
    /// Write `node.json` (off for in-process nodes sharing a directory).
    pub write_node_json: bool,
    /// How often the driver ticks.
    pub tick: Duration,
    /// Gossipsub heartbeat (hundreds of nodes in one process use a slower
    /// one than a real node's 200 ms).
    pub gossip_heartbeat: Duration,
    /// Most established connections (hundreds of nodes in one process
    /// use fewer than a real node's 512).
    pub max_connections: u32,
    /// Connections kept when nothing needs more (the rest of
    /// `max_connections` is room for newcomers; see the network's `trim`).
    pub target_connections: u32,
    /// How often each connection is pinged for its round-trip time (a real
    /// node: 5 s; in one process the time is meaningless and the pings
    /// are the largest share of idle work).
    pub ping_interval: Duration,
}

impl Options {
    /// Defaults for a real node in `data_dir`.
    pub fn new(data_dir: PathBuf) -> Options {
        Options {
            data_dir,
            transport: Transport::TcpQuic,
            compile: match std::env::current_exe() {
                Ok(exe) if exe.file_stem().is_some_and(|s| s == "agora") => {
                    CompileIsolation::Subprocess { exe }
                }
                _ => CompileIsolation::InProcess,
            },
            capacity: Capacity::Measure,
            faults: crate::faults::Faults::default(),
            seed: rand::random(),
            write_node_json: true,
            tick: Duration::from_millis(10),
            gossip_heartbeat: network::Config::default().gossip_heartbeat,
            max_connections: network::Config::default().max_connections,
            target_connections: network::Config::default().target_connections,
            ping_interval: network::Config::default().ping_interval,
        }
    }
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    /// Its id.
    pub id: NodeId,
    /// The API address.
    pub api: SocketAddr,
    /// The API token.
    pub token: String,
    /// Addresses it listens on.
    pub listen: Vec<Multiaddr>,
    /// Commands to its driver (what the API uses; in-process tests too).
    pub commands: mpsc::Sender<ApiCommand>,
    /// Its network task (for in-process tests: partitions).
    pub net: network::Client,
    cancel: CancellationToken,
    driver: tokio::task::JoinHandle<()>,
    address_book: tokio::task::JoinHandle<()>,
    network: tokio::task::JoinHandle<()>,
    api_task: tokio::task::JoinHandle<()>,
}

impl Node {
    /// Starts a node. Returns once it listens, its API serves and
    /// `node.json` is written.
    pub async fn start(config: Config, options: Options) -> anyhow::Result<Node> {
        config.validate()?;
        // libp2p's timeouts on this runtime's timer, not futures-timer's
        // own thread (vendor/README.md): the node runs on a runtime with
        // its time driver, as its own ticks need one.
        futures_timer::use_tokio_timer();
        let data_dir = options.data_dir.clone();
        crate::paths::create_private_dir(&data_dir)
            .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
        let keypair = crate::identity::load_or_create(&data_dir)?;
        let store = Store::open(&data_dir)?;
        let slots = if config.provider.slots == 0 {
            crate::capacity::cores()
        } else {
            config.provider.slots
        };
        let executor = Executor::new(executor::Config {
            cache_dir: Some(executor::cache_dir(&data_dir)),
            compile: options.compile.clone(),
            cpu_share: config.provider.cpu_share,
            max_memory: config.provider.memory.max(agora_protocol::units::Bytes::mib(64)),
            max_instances: (slots * 2 + 8).min(256),
            max_module_size: config.provider.max_content,
            ..executor::Config::default()
        })
        .context("cannot start the executor")?;
        // The energy counters around the calibration give the energy per
        // CU-second where the machine exposes them (RAPL); elsewhere the
        // owner's declaration stands.
        let sensors = crate::sensors::Sensors::new(&config.provider.limits.sysfs);
        let (per_slot, measured_energy) = match options.capacity {
            Capacity::Assume(cu) => (cu, None),
            Capacity::Measure => {
                let before = sensors.package_energy().ok();
                let c = crate::capacity::measure(&executor, config.calibration.budget)
                    .await
                    .context("calibration failed")?;
                let after = sensors.package_energy().ok();
                let burned = agora_protocol::units::Fuel(
                    c.fuel.0.saturating_mul(u64::from(executor::CALIBRATION_ROUNDS)),
                );
                let energy = before
                    .zip(after)
                    .and_then(|(b, a)| crate::sensors::energy_rate(b.until(&a), burned));
                tracing::info!(cu = c.cu.0, fuel = c.fuel.0, elapsed = ?c.elapsed, energy = ?energy, "capacity measured");
                (c.cu, energy)
            }
        };
        let (energy, energy_source) = match measured_energy {
            Some(e) => (e, EnergySource::Measured),
            None if config.energy().0 > 0 => (config.energy(), EnergySource::Declared),
            None => (config.energy(), EnergySource::Unknown),
        };
        if options.faults.slowdown() > 1.0 {
            // The advert keeps the measured figure while execution runs
            // slower than that.
            executor.set_cpu_share(config.provider.cpu_share / options.faults.slowdown());
        }
        let cancel = CancellationToken::new();
        let (events_tx, events_rx) = mpsc::channel(4096);
        let net_config = network::Config {
            listen: config.listen.clone(),
            bootstrap: config.bootstrap.clone(),
            remembered: address_book::load(&store),
            transport: options.transport,
            mdns: config.mdns,
            gossip_heartbeat: options.gossip_heartbeat,
            max_connections: options.max_connections,
            target_connections: options.target_connections,
            ping_interval: options.ping_interval,
            relay_server: config.relay.server.then(|| config.relay.limits()),
            relays: config.relay.relays.clone(),
            external: config.external.clone(),
            // Nodes of one process share no real network: nothing to probe.
            autonat: options.transport != Transport::Memory,
            hole_punching: config.relay.hole_punching,
            ..network::Config::default()
        };
        // The network outlives the driver's own shutdown (which withdraws
        // the tasks accepted here, over the network): it stops when the
        // driver is done, or when this setup fails.
        let net_cancel = CancellationToken::new();
        let (net, network_task) = network::spawn(&keypair, net_config, events_tx, net_cancel.clone())
            .await
            .context("cannot start the network")?;
        let stop_net = net_cancel.drop_guard();
        let token = hex::encode(rand::random::<[u8; 16]>());
        let (api_tx, api_rx) = mpsc::channel(256);
        let (api, api_task) = server::serve(
            config.api,
            token.clone(),
            api_tx.clone(),
            store.clone(),
            cancel.child_token(),
        )
        .await
        .with_context(|| format!("cannot serve the API on {}", config.api))?;
        // Wait briefly for the listeners to report their addresses.
        let mut listen = Vec::new();
        for _ in 0..50 {
            listen = net.listen_addrs().await.unwrap_or_default();
            if listen.len() >= config.listen.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let listen = expand_listen(listen, options.transport);
        let info = NodeInfo {
            peer_id: keypair.node_id(),
            listen: listen.iter().map(|a| a.to_string()).collect(),
            api: api.to_string(),
            token: token.clone(),
            data_dir: data_dir.display().to_string(),
            domain: config.domain.clone(),
            pid: std::process::id(),
            bootstrap: config.bootstrap.iter().map(ToString::to_string).collect(),
        };
        let net_handle = net.clone();
        let now = Timestamp::from_system(std::time::SystemTime::now());
        let book_store = store.clone();
        let sh = Shared {
            local: keypair.node_id(),
            store: store.clone(),
            executor: executor.clone(),
            net,
            faults: options.faults.clone(),
            exec_permits: Arc::new(tokio::sync::Semaphore::new(slots.max(1) as usize)),
            calibration_budget: config.calibration.budget,
            energy_source,
            disk: DiskPolicy {
                retention: config.provider.content_retention,
                cap: config.provider.max_disk,
            },
            upload: Arc::new(pacer::UploadPacer::default()),
            preempt: Arc::new(preempt::Preemption::default()),
        };
        let setup = Setup {
            keypair: keypair.clone(),
            config: engine_config(&config, &options, slots, energy),
            seed: options.seed,
            per_slot,
            listen: listen.iter().map(|a| a.to_string()).collect(),
            now,
        };
        let engine = Engine::new(setup, Box::new(host::NodeHost::new(store, executor)))
            .context("cannot restore the node's records")?;
        let driver = driver::Driver::new(engine, sh, &config, &options, cancel.clone());
        if options.write_node_json {
            write_node_json(&data_dir, &info)?;
        }
        let id = keypair.node_id();
        let driver_task = tokio::spawn(async move {
            Box::pin(driver.run(events_rx, api_rx)).await;
            drop(stop_net);
        });
        let book_task = tokio::spawn(address_book::keep(
            net_handle.clone(),
            book_store,
            cancel.child_token(),
        ));
        tracing::info!(peer = %id, api = %api, "node ready");
        Ok(Node {
            id,
            api,
            token,
            listen,
            commands: api_tx,
            net: net_handle,
            cancel,
            driver: driver_task,
            address_book: book_task,
            network: network_task,
            api_task,
        })
    }

    /// The node's id.
    pub fn keypair_id(&self) -> NodeId {
        self.id
    }

    /// An API client for this node.
    pub fn client(&self) -> crate::api::client::Client {
        crate::api::client::Client::new(crate::api::client::Endpoint {
            base: format!("http://{}", self.api),
            token: self.token.clone(),
        })
    }

    /// A token that stops the node when cancelled.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stops the node gracefully: no new work is taken, the store is flushed.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.wait().await;
    }

    /// Waits until the node has stopped.
    pub async fn wait(self) {
        let _ = self.driver.await;
        let _ = self.address_book.await;
        let _ = self.network.await;
        let _ = self.api_task.await;
    }
}

/// Listening on an unspecified address yields one address per interface;
/// the memory transport yields exactly what was asked.
fn expand_listen(listen: Vec<Multiaddr>, _transport: Transport) -> Vec<Multiaddr> {
    listen
}

fn write_node_json(dir: &std::path::Path, info: &NodeInfo) -> anyhow::Result<()> {
    let path = dir.join("node.json");
    let tmp = dir.join("node.json.tmp");
    let text = serde_json::to_string_pretty(info)?;
    {
        use std::io::Write;
        let mut f = crate::paths::create_private_file(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Removes `node.json` (at shutdown), so that the CLI says no node runs.
pub(crate) fn remove_node_json(dir: &std::path::Path) {
    let _ = std::fs::remove_file(dir.join("node.json"));
}

/// Shared by the driver and its work.
/// Where a node's energy per CU-second comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum EnergySource {
    /// Its CPU packages' energy counters (RAPL) during calibration.
    Measured,
    /// Its owner's `energy` setting.
    Declared,
    /// Neither: advertised as 0, which placement treats as unknown.
    #[default]
    Unknown,
}

#[derive(Clone)]
pub(crate) struct Shared {
    /// This node.
    pub(crate) local: NodeId,
    pub(crate) store: Store,
    pub(crate) executor: Executor,
    pub(crate) net: network::Client,
    pub(crate) faults: crate::faults::Faults,
    pub(crate) exec_permits: Arc<tokio::sync::Semaphore>,
    pub(crate) calibration_budget: Duration,
    /// Where the advertised energy rate comes from.
    pub(crate) energy_source: EnergySource,
    pub(crate) disk: DiskPolicy,
    /// Spaces the content served to others to the owner's `max_upload`.
    pub(crate) upload: Arc<pacer::UploadPacer>,
    /// Batch runs an interactive task may pause.
    pub(crate) preempt: Arc<preempt::Preemption>,
}

/// How stored content is kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DiskPolicy {
    /// Content nothing needs goes after this long unused.
    pub(crate) retention: Duration,
    /// The most bytes of content held.
    pub(crate) cap: agora_protocol::units::Bytes,
}

/// The engine's settings from the node's configuration.
fn engine_config(
    c: &Config,
    options: &Options,
    slots: u32,
    energy: agora_protocol::units::EnergyRate,
) -> agora_market::engine::Config {
    use agora_market::{engine, provider, requester};
    let p = &c.provider;
    engine::Config {
        domain: c.domain.clone(),
        provider: provider::Config {
            enabled: p.enabled,
            idle: IdlePolicy::new(p.idle.enabled, p.idle.busy_above, p.idle.resume_below),
            limits: p.limits.owner(),
            price: p.price,
            slots,
            backlog: slots * agora_market::placement::TINY_BACKLOG,
            memory: p.memory,
            energy,
            domain: c.domain.clone(),
            offer_ttl: Duration::from_secs(5),
            max_content: p.max_content,
            max_offers: 10_000,
            max_task_fuel: agora_protocol::units::Fuel(p.max_task_fuel),
            max_task_time: p.max_task_time,
            max_output: p.max_output,
            labels: p.labels(),
        },
        requester: requester::Config {
            fanout: c.requester.fanout,
            negotiation_timeout: c.requester.negotiation_timeout,
            unplaceable_after: c.requester.unplaceable_after,
            backups: c.requester.backups,
            // What this node's executor gives a task (see `Node::start`).
            local_memory: p.memory.max(agora_protocol::units::Bytes::mib(64)),
            ..requester::Config::default()
        },
        adverts: engine::Adverts {
            interval: c.adverts.interval,
            lifetime: c.adverts.lifetime,
            summary_interval: c.adverts.summary_interval,
            summary_publishers: c.adverts.summary_publishers,
            election_term: c.adverts.election_term,
        },
        recalibrate: (options.capacity == Capacity::Measure).then_some(c.calibration.interval),
        credit: c.credit.to_market(),
        pays: options.faults.pays(),
        fork_payments: options.faults.forks(),
        checkpoint_every: c.credit.checkpoint_every,
        keep_results: c.requester.keep_results,
        // Content unused for the retention period goes at the next
        // collection: at least every minute, as often as the period asks.
        collect_every: Some(
            c.provider
                .content_retention
                .clamp(Duration::from_secs(1), Duration::from_secs(60)),
        ),
        domain_peers: network::MESH_N_HIGH,
        ..engine::Config::default()
    }
}
