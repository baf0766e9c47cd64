//! Many nodes in this process over libp2p's memory transport: the testnet
//! at scale.
//!
//! [`Testnet::start`] starts [`Options::nodes`] full [`agora_node`] nodes
//! (network, driver, store, executor and API each) on the caller's tokio
//! runtime, listening on `/memory/PORT` addresses, with an assumed capacity
//! instead of a calibration run (two hundred calibrations on two cores
//! would only measure each other), no `node.json`, and a data dir each
//! under one temporary directory. Node `i` dials a few earlier nodes
//! (its predecessor and some chosen at random), so no single node is
//! everyone's bootstrap. Nodes are spread over two-level domains in turn.
//!
//! Everything is observed through each node's command channel (the same
//! [`ApiCommand`]s the HTTP API sends): its view ([`ApiCommand::Peers`]) and
//! the domains it knows ([`ApiCommand::Domains`]).

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use agora_node::api::server::ApiCommand;
use agora_node::api::{DomainRow, PeerRow};
use agora_node::config::Config;
use agora_node::executor::CompileIsolation;
use agora_node::network::Transport;
use agora_node::node::{Capacity, Node};
use agora_protocol::NodeId;
use agora_protocol::units::ComputeUnits;
use anyhow::{Context, bail};
use tokio::sync::oneshot;

use crate::workload::SplitMix;

/// How long a node may take to answer a question about its view.
const ANSWER: Duration = Duration::from_secs(10);

/// How the in-process testnet is made.
#[derive(Debug, Clone)]
pub struct Options {
    /// Nodes to start.
    pub nodes: usize,
    /// Their domains, assigned in turn.
    pub domains: Vec<String>,
    /// Earlier nodes each new node dials.
    pub dial: usize,
    /// Per-slot capacity every node assumes, CU.
    pub cu: u64,
    /// How often each node's driver ticks while it has work under way (a
    /// real node: 10 ms, which would cost 20,000 wake-ups a second across
    /// 200 busy nodes); a quiet node ticks every 250 ms whatever this is.
    pub tick: Duration,
    /// Nodes started at once (after the first, which starts alone).
    pub parallel: usize,
    /// How often each node publishes its advert (a real node: 2 s).
    pub advert_interval: Duration,
    /// How long an advert stays valid (a real node: 10 s).
    pub advert_lifetime: Duration,
    /// Gossipsub heartbeat (a real node: 200 ms).
    pub gossip_heartbeat: Duration,
    /// Most connections per node (a real node: 512).
    pub max_connections: u32,
    /// Connections kept when nothing needs more (a real node: 96).
    pub target_connections: u32,
    /// How often each connection is pinged (a real node: 5 s).
    pub ping_interval: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            nodes: 30,
            domains: vec!["eu/a".into(), "eu/b".into(), "us/a".into(), "us/b".into()],
            dial: 3,
            cu: 1000,
            tick: Duration::from_millis(50),
            parallel: 8,
            advert_interval: Duration::from_secs(2),
            advert_lifetime: Duration::from_secs(10),
            gossip_heartbeat: Duration::from_millis(200),
            max_connections: 512,
            target_connections: 96,
            ping_interval: Duration::from_secs(5),
        }
    }
}

impl Options {
    /// How often elected publishers sign their domain summaries: half again
    /// the advert pace, at least every 3 s.
    pub fn summary_interval(&self) -> Duration {
        (self.advert_interval * 3 / 2).max(Duration::from_secs(3))
    }
}

/// One node of the in-process testnet.
#[derive(Debug)]
pub struct Member {
    /// Its position.
    pub index: usize,
    /// Its domain.
    pub domain: String,
    /// The node.
    pub node: Node,
    /// Its memory address with `/p2p/PEER`.
    pub addr: String,
}

impl Member {
    /// Its id.
    pub fn id(&self) -> NodeId {
        self.node.id
    }

    /// The peers in its view.
    pub async fn peers(&self) -> anyhow::Result<Vec<PeerRow>> {
        self.ask(|tx| ApiCommand::Peers(None, tx)).await
    }

    /// Its metrics (Prometheus text).
    pub async fn metrics(&self) -> anyhow::Result<String> {
        self.ask(ApiCommand::Metrics).await
    }

    /// The domains it knows.
    pub async fn domains(&self) -> anyhow::Result<Vec<DomainRow>> {
        self.ask(ApiCommand::Domains).await
    }

    /// Sends the node the command `question` makes around an answer
    /// channel, and waits up to [`ANSWER`] for the answer.
    async fn ask<T>(&self, question: impl FnOnce(oneshot::Sender<T>) -> ApiCommand) -> anyhow::Result<T> {
        let (tx, rx) = oneshot::channel();
        self.node
            .commands
            .send(question(tx))
            .await
            .map_err(|_| anyhow::anyhow!("node {} has stopped", self.index))?;
        tokio::time::timeout(ANSWER, rx)
            .await
            .map_err(|_| anyhow::anyhow!("node {} did not answer within {ANSWER:?}", self.index))?
            .context("the node dropped the question")
    }
}

/// Many nodes in this process.
#[derive(Debug)]
pub struct Testnet {
    members: Vec<Member>,
    options: Options,
    port_base: u64,
    rng: SplitMix,
    issuer: crate::process::Issuer,
    dir: tempfile::TempDir,
}

impl Testnet {
    /// Starts the nodes and returns once all of them run (not yet once they
    /// see each other: see [`Testnet::wait_views`]).
    pub async fn start(options: Options) -> anyhow::Result<Testnet> {
        if options.domains.is_empty() {
            bail!("at least one domain is needed");
        }
        let dir = tempfile::Builder::new()
            .prefix("agora-memory-testnet-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        // Memory ports are process-wide: keep separate testnets apart.
        let port_base = (rand_seed() % (1 << 40)) * 1024 + 1;
        let mut net = Testnet {
            members: Vec::with_capacity(options.nodes),
            rng: SplitMix(port_base),
            issuer: crate::process::Issuer::open(dir.path())?,
            options,
            port_base,
            dir,
        };
        for batch in batches(net.options.nodes, net.options.parallel) {
            let first = batch.start;
            // Bootstrap lists only name nodes already running.
            let configs: Vec<_> = batch
                .map(|i| {
                    let domain = net.options.domains[i % net.options.domains.len()].clone();
                    net.config_for(i, first, domain)
                })
                .collect::<anyhow::Result<_>>()?;
            let started = futures::future::join_all(configs.into_iter().map(
                |(i, domain, config, options)| async move {
                    Node::start(config, options)
                        .await
                        .map(|n| (i, domain, n))
                        .with_context(|| format!("cannot start in-process node {i}"))
                },
            ))
            .await;
            let started: Vec<_> = started.into_iter().collect::<anyhow::Result<_>>()?;
            // The batch's grants at once: each waits for its node's disk.
            let issuer = &net.issuer;
            futures::future::try_join_all(
                started
                    .iter()
                    .map(|(_, _, node)| (node.client(), node.id))
                    .collect::<Vec<_>>()
                    .iter()
                    .map(|(client, id)| issuer.fund(client, *id, crate::process::GRANT_MICROS)),
            )
            .await?;
            for (index, domain, node) in started {
                let addr = format!("/memory/{}/p2p/{}", net.port_base + index as u64, node.id);
                net.members.push(Member {
                    index,
                    domain,
                    node,
                    addr,
                });
            }
        }
        Ok(net)
    }

    fn config_for(
        &mut self,
        i: usize,
        running: usize,
        domain: String,
    ) -> anyhow::Result<(usize, String, Config, agora_node::node::Options)> {
        let mut c = Config {
            domain: domain.parse().with_context(|| format!("bad domain {domain}"))?,
            listen: vec![format!("/memory/{}", self.port_base + i as u64).parse()?],
            ..Config::default()
        };
        // The latest running node of its own domain (as a real node would
        // be given a bootstrap peer near it), then others at random.
        let mut dial: BTreeSet<usize> = BTreeSet::new();
        if let Some(j) = (0..running).rev().find(|&j| self.members[j].domain == domain) {
            dial.insert(j);
        }
        let want = self.options.dial.min(running);
        while dial.len() < want {
            dial.insert((self.rng.next_u64() % running as u64) as usize);
        }
        c.bootstrap = dial
            .into_iter()
            .map(|j| self.members[j].addr.parse())
            .collect::<Result<_, _>>()?;
        c.provider.slots = 1;
        c.provider.idle.enabled = false;
        c.credit.issuers = vec![self.issuer.id()];
        c.adverts.interval = self.options.advert_interval;
        c.adverts.lifetime = self.options.advert_lifetime;
        c.adverts.summary_interval = self.options.summary_interval();
        let mut o = agora_node::node::Options::new(self.dir.path().join(format!("node-{i}")));
        o.transport = Transport::Memory;
        o.compile = CompileIsolation::InProcess;
        o.capacity = Capacity::Assume(ComputeUnits(self.options.cu));
        o.write_node_json = false;
        o.seed = i as u64;
        o.tick = self.options.tick;
        o.gossip_heartbeat = self.options.gossip_heartbeat;
        o.max_connections = self.options.max_connections;
        o.target_connections = self.options.target_connections;
        o.ping_interval = self.options.ping_interval;
        Ok((i, domain, c, o))
    }

    /// Starts one more node in `domain`; returns its index.
    pub async fn add(&mut self, domain: &str) -> anyhow::Result<usize> {
        let i = self.members.len();
        let (_, _, c, o) = self.config_for(i, i, domain.to_owned())?;
        let node = Node::start(c, o).await.context("cannot start the new node")?;
        self.issuer
            .fund(&node.client(), node.id, crate::process::GRANT_MICROS)
            .await?;
        let addr = format!("/memory/{}/p2p/{}", self.port_base + i as u64, node.id);
        self.members.push(Member {
            index: i,
            domain: domain.to_owned(),
            node,
            addr,
        });
        Ok(i)
    }

    /// The nodes.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Every node's metric samples summed by name and labels (e.g.
    /// `agora_adverts_rejected_total{reason="stale"}`); nodes that do not
    /// answer are left out.
    pub async fn metric_sums(&self) -> std::collections::BTreeMap<String, f64> {
        let mut sums = std::collections::BTreeMap::new();
        for m in &self.members {
            let Ok(text) = m.metrics().await else { continue };
            for (series, v) in crate::metrics::samples(&text) {
                *sums.entry(series.to_owned()).or_insert(0.0) += v;
            }
        }
        sums
    }

    /// Every domain and its ancestors below the root.
    pub fn all_domains(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for m in &self.members {
            let mut d: Option<agora_protocol::Domain> = m.domain.parse().ok();
            while let Some(x) = d {
                if x.is_root() {
                    break;
                }
                out.insert(x.to_string());
                d = x.parent();
            }
        }
        out
    }

    /// Nodes whose view lacks a node of their own domain, with how many
    /// they lack.
    pub async fn incomplete_views(&self) -> anyhow::Result<Vec<(usize, usize)>> {
        let mut out = Vec::new();
        for m in &self.members {
            // A node too busy to answer counts as incomplete.
            let Ok(rows) = m.peers().await else {
                out.push((m.index, usize::MAX));
                continue;
            };
            let seen: HashSet<NodeId> = rows.into_iter().map(|r| r.peer_id).collect();
            let lacking = self
                .members
                .iter()
                .filter(|o| o.index != m.index && o.domain == m.domain && !seen.contains(&o.id()))
                .count();
            if lacking > 0 {
                out.push((m.index, lacking));
            }
        }
        Ok(out)
    }

    /// Nodes that do not know every domain (from the summaries), with how
    /// many they miss.
    pub async fn incomplete_domains(&self) -> anyhow::Result<Vec<(usize, usize)>> {
        let all = self.all_domains();
        let mut out = Vec::new();
        for m in &self.members {
            let Ok(rows) = m.domains().await else {
                out.push((m.index, usize::MAX));
                continue;
            };
            let known: BTreeSet<String> = rows.into_iter().map(|r| r.domain.to_string()).collect();
            let lacking = all.difference(&known).count();
            if lacking > 0 {
                out.push((m.index, lacking));
            }
        }
        Ok(out)
    }

    /// Waits until every node sees every other node of its domain.
    pub async fn wait_views(&self, timeout: Duration) -> anyhow::Result<Duration> {
        wait_until(timeout, "miss peers of their domain", || self.incomplete_views()).await
    }

    /// Waits until every domain's summary has reached every node.
    pub async fn wait_summaries(&self, timeout: Duration) -> anyhow::Result<Duration> {
        wait_until(timeout, "miss domain summaries", || self.incomplete_domains()).await
    }

    /// Starts a node in `domain` and measures how long until every other
    /// node of that domain has its advert, and until every node's domain
    /// figures count it (from the summaries).
    pub async fn propagation(&mut self, domain: &str, timeout: Duration) -> anyhow::Result<Propagation> {
        let before: Vec<u32> = {
            let mut v = Vec::new();
            for m in &self.members {
                let rows = m.domains().await?;
                v.push(
                    rows.iter()
                        .find(|r| r.domain.as_str() == domain)
                        .map_or(0, |r| r.nodes),
                );
            }
            v
        };
        let i = self.add(domain).await?;
        let t0 = Instant::now();
        let id = self.members[i].id();
        let peers: Vec<usize> = self
            .members
            .iter()
            .filter(|m| m.index != i && m.domain == domain)
            .map(|m| m.index)
            .collect();
        let mut advert = None;
        let mut summary = None;
        let mut pending_views: HashSet<usize> = peers.iter().copied().collect();
        let mut pending_counts: HashSet<usize> = (0..i).collect();
        let mut polls = 0u64;
        while advert.is_none() || summary.is_none() {
            if t0.elapsed() > timeout {
                bail!(
                    "node {i} was not in every view after {timeout:?} ({} views and {} domain counts still without it)",
                    pending_views.len(),
                    pending_counts.len()
                );
            }
            let mut still = HashSet::new();
            for &j in &pending_views {
                if !self.members[j].peers().await?.iter().any(|r| r.peer_id == id) {
                    still.insert(j);
                }
            }
            pending_views = still;
            if advert.is_none() && pending_views.is_empty() {
                advert = Some(t0.elapsed());
            }
            polls += 1;
            let mut still = HashSet::new();
            for &j in pending_counts.iter().filter(|_| polls.is_multiple_of(5)) {
                let n = self.members[j]
                    .domains()
                    .await?
                    .iter()
                    .find(|r| r.domain.as_str() == domain)
                    .map_or(0, |r| r.nodes);
                if n <= before[j] {
                    still.insert(j);
                }
            }
            if polls.is_multiple_of(5) {
                pending_counts = still;
            }
            if summary.is_none() && pending_counts.is_empty() {
                summary = Some(t0.elapsed());
            }
            // Every question costs the node it asks: poll gently (the
            // figures are of the order of a second or more).
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Propagation {
            node: i,
            advert: advert.unwrap_or_default(),
            summary: summary.unwrap_or_default(),
            views: peers.len(),
        })
    }

    /// Stops every node and waits for them.
    pub async fn shutdown(mut self) {
        let members = std::mem::take(&mut self.members);
        futures::future::join_all(members.into_iter().map(|m| m.node.shutdown())).await;
    }
}

impl Drop for Testnet {
    /// Nodes still running (an error or Ctrl-C skipped
    /// [`Testnet::shutdown`]) are told to stop.
    fn drop(&mut self) {
        for m in &self.members {
            m.node.cancel_token().cancel();
        }
    }
}

/// The nodes started together, in order: the first alone, then up to
/// `parallel` at a time. Each node dials only nodes already running, so
/// every node after the first has one to dial. (Eight nodes started at once
/// with no peer to dial each stayed alone for good when no later node
/// happened to pick it: once in about ten 30-node testnets.)
fn batches(nodes: usize, parallel: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let mut next = 0;
    std::iter::from_fn(move || {
        let first = next;
        let size = if first == 0 { 1 } else { parallel.max(1) };
        next = (first + size).min(nodes);
        (first < next).then_some(first..next)
    })
}

/// How long a new node took to reach the others.
#[derive(Debug, Clone, Copy)]
pub struct Propagation {
    /// The new node.
    pub node: usize,
    /// Until every node of its domain had its advert.
    pub advert: Duration,
    /// Until every node's figures for its domain counted it.
    pub summary: Duration,
    /// Views it had to reach.
    pub views: usize,
}

/// Polls `incomplete` every 100 ms until it lists no node; fails after
/// `timeout` naming the nodes that still `what`.
async fn wait_until<F, Fut>(timeout: Duration, what: &str, incomplete: F) -> anyhow::Result<Duration>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Vec<(usize, usize)>>>,
{
    let started = Instant::now();
    loop {
        let bad = incomplete().await?;
        if bad.is_empty() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!("after {timeout:?}, {} still {what}", describe(&bad));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// "N nodes (K of them too busy to answer; e.g. node I misses M)".
fn describe(bad: &[(usize, usize)]) -> String {
    let silent = bad.iter().filter(|(_, n)| *n == usize::MAX).count();
    let example = bad
        .iter()
        .find(|(_, n)| *n != usize::MAX)
        .map(|(i, n)| format!("; e.g. node {i} misses {n}"))
        .unwrap_or_default();
    format!(
        "{} nodes ({silent} of them did not answer within {ANSWER:?}{example})",
        bad.len()
    )
}

fn rand_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    SplitMix(t ^ u64::from(std::process::id()) << 32).next_u64()
}

/// This process's resident memory, bytes.
pub fn rss_bytes() -> Option<u64> {
    agora_node::capacity::resident_memory()
}

/// CPU time this process used so far (user + system).
pub fn cpu_time() -> Option<Duration> {
    crate::process::cpu_time_at("/proc/self/stat")
}

/// Threads of this process.
pub fn threads() -> Option<usize> {
    std::fs::read_dir("/proc/self/task").ok().map(|d| d.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_node_starts_alone_so_that_every_later_one_has_a_running_node_to_dial() {
        let all: Vec<_> = batches(30, 8).collect();
        assert_eq!(all, [0..1, 1..9, 9..17, 17..25, 25..30]);
        assert_eq!(batches(1, 8).collect::<Vec<_>>(), vec![(0..1)]);
        assert_eq!(batches(3, 0).collect::<Vec<_>>(), [0..1, 1..2, 2..3]);
        assert_eq!(batches(0, 8).count(), 0);
    }
}
