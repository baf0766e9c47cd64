//! `agora-testnet scale`: many nodes in this process over the memory
//! transport: how fast adverts and domain summaries spread, what a node
//! costs, and a job placed across them.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::job::{self, Params};
use crate::memory::{self, Options};
use crate::report::{Table, percentile};
use crate::signal;
use crate::workload::TaskInput;

/// The rot13 module (hand-written WAT from the examples): its outputs can
/// be checked here, and it needs no build.
const ROT13_WAT: &str = include_str!("../../../examples/wat/rot13.wat");

/// Run many nodes in this process over libp2p's memory transport and
/// measure advert and summary propagation, memory and CPU per node, and a
/// job placed across them.
#[derive(Debug, clap::Args)]
pub struct ScaleCommand {
    /// Nodes to start.
    #[arg(long, default_value_t = 200)]
    pub nodes: usize,
    /// Two-level domains to spread them over (eu/a, eu/b, us/a, us/b, …).
    #[arg(long, default_value_t = 4)]
    pub domains: usize,
    /// Earlier nodes each node dials at start.
    #[arg(long, default_value_t = 3)]
    pub dial: usize,
    /// New nodes whose propagation is measured.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Tasks of the job placed across the nodes (0: no job).
    #[arg(long, default_value_t = 100)]
    pub tasks: usize,
    /// How often each node refreshes its advert when nothing changed
    /// (lifetime: 5×, at most 60 s); a change (free slots, addresses,
    /// limits) is published at once whatever the pace. A real node's
    /// default is 2 s; hundreds of nodes sharing two cores need a calmer
    /// pace, as a real network of that size would choose: at 200 nodes a
    /// 5 s pace alone keeps both cores busy.
    #[arg(long, default_value = "20s", value_parser = super::parse_duration)]
    pub advert_interval: Duration,
    /// Gossipsub heartbeat of every node (a real node: 200 ms).
    #[arg(long, default_value = "1s", value_parser = super::parse_duration)]
    pub heartbeat: Duration,
    /// Most connections per node (a real node: 512); more are refused.
    #[arg(long, default_value_t = 64)]
    pub max_connections: u32,
    /// Connections each node keeps when nothing needs more (a real node:
    /// 96); idle ones above it are closed. Kademlia queries and on-demand
    /// market dials would otherwise grow every node towards a full mesh,
    /// whose per-connection upkeep alone fills two cores.
    #[arg(long, default_value_t = 48)]
    pub target_connections: u32,
    /// How often every connection is pinged (a real node: 5 s). Between
    /// nodes of one process the round-trip time says nothing, and 6,000
    /// connections pinged every 5 s are the largest share of idle work.
    #[arg(long, default_value = "15s", value_parser = super::parse_duration)]
    pub ping_interval: Duration,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What `scale` measured.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    /// Nodes started (before the propagation rounds).
    pub nodes: usize,
    /// Domains (leaves).
    pub domains: usize,
    /// Milliseconds to start them all.
    pub start_ms: u64,
    /// Milliseconds until every node saw every node of its domain.
    pub views_ms: u64,
    /// Milliseconds (after that) until every domain's summary reached every
    /// node.
    pub summaries_ms: u64,
    /// Resident memory of the process, MB.
    pub rss_mb: f64,
    /// Resident memory per node, MB.
    pub rss_per_node_mb: f64,
    /// Threads of the process.
    pub threads: usize,
    /// CPU used while idle, in cores (1.0 = one core busy): 30 s, after
    /// 15 s of settling once every summary has arrived.
    pub idle_cpu_cores: f64,
    /// Advert propagation to every view of the domain: p50, ms.
    pub advert_p50_ms: f64,
    /// The same, p95 (nearest rank over the rounds).
    pub advert_p95_ms: f64,
    /// Until every node's domain figures counted the new node: p50, ms.
    pub summary_p50_ms: f64,
    /// The same, worst round.
    pub summary_max_ms: f64,
    /// Tasks of the job.
    pub job_tasks: usize,
    /// Its wall time, submit to done, ms.
    pub job_ms: u64,
    /// Distinct providers that ran its tasks.
    pub job_providers: usize,
    /// Domains those providers are in.
    pub job_domains: usize,
    /// Whether every output equals rot13 of its input.
    pub job_outputs_ok: bool,
    /// Gossip and view counters summed over all nodes at the end.
    pub counters: std::collections::BTreeMap<String, f64>,
    /// The same counters' growth per second, summed over all nodes, while
    /// idle (those that moved): what the idle CPU was spent on.
    pub idle_rates: std::collections::BTreeMap<String, f64>,
}

/// Per-second growth of the reported counters between two sums (those that
/// grew).
fn rates(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
    secs: f64,
) -> std::collections::BTreeMap<String, f64> {
    after
        .iter()
        .filter(|(k, _)| COUNTERS.iter().any(|c| k.starts_with(c)) && k.contains("_total"))
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0.0);
            (d > 0.0).then(|| (k.clone(), d / secs))
        })
        .collect()
}

/// The counters `scale` reports: what gossip delivered, dropped and refused.
const COUNTERS: &[&str] = &[
    "agora_adverts_accepted_total",
    "agora_adverts_published_total",
    "agora_adverts_rejected_total",
    "agora_summaries_accepted_total",
    "agora_summaries_rejected_total",
    "agora_gossip_dropped_total",
    "agora_gossip_rejected_total",
    "agora_peers_expired_total",
    "agora_connected_peers",
    "agora_gossip_mesh_peers",
    "agora_gossip_mesh_links",
    "agora_connections_trimmed_total",
    "agora_connections_refused_total",
    "agora_connections_opened_total",
    "agora_dials_total",
    "agora_kad_liveness_checks_total",
    "agora_market_overload_total",
    "agora_summaries_published_total",
    "agora_vouch_questions_total",
    "agora_election_questions_total",
    "agora_flooders_cut_total",
];

/// How long the nodes idle before their idle cost is measured.
const IDLE_SETTLE: Duration = Duration::from_secs(15);

/// How long the idle cost is measured.
const IDLE_WINDOW: Duration = Duration::from_secs(30);

/// rot13 of ASCII letters.
pub fn rot13(input: &[u8]) -> Vec<u8> {
    input
        .iter()
        .map(|&c| match c {
            b'a'..=b'z' => (c - b'a' + 13) % 26 + b'a',
            b'A'..=b'Z' => (c - b'A' + 13) % 26 + b'A',
            _ => c,
        })
        .collect()
}

/// Starts the in-process testnet, measures it, and stops it.
pub async fn measure(cmd: &ScaleCommand) -> anyhow::Result<ScaleReport> {
    let options = Options {
        nodes: cmd.nodes,
        domains: crate::process::domain_names(cmd.domains.max(2)),
        dial: cmd.dial,
        advert_interval: cmd.advert_interval,
        advert_lifetime: (cmd.advert_interval * 5).min(Duration::from_secs(60)),
        gossip_heartbeat: cmd.heartbeat,
        max_connections: cmd.max_connections,
        target_connections: cmd.target_connections,
        ping_interval: cmd.ping_interval,
        ..Options::default()
    };
    let leaves = options.domains.len();
    let t0 = Instant::now();
    eprintln!("starting {} in-process nodes in {} domains…", cmd.nodes, leaves);
    let mut net = memory::Testnet::start(options.clone()).await?;
    let start_s = t0.elapsed().as_secs_f64();
    eprintln!("started in {start_s:.1} s; waiting for the views…");
    let result = async {
        let views = net.wait_views(Duration::from_secs(300)).await?;
        eprintln!("every node sees its domain after {:.1} s; waiting for the summaries…", views.as_secs_f64());
        let summaries = net.wait_summaries(Duration::from_secs(300)).await?;
        eprintln!("every domain's summary reached every node after {:.1} s more", summaries.as_secs_f64());
        // Idle cost: nothing but adverts, summaries and heartbeats. The
        // first seconds after the last summary lands are quieter than what
        // follows (one 200-node run: 1.32 cores over its first 10 s, then
        // 1.26-1.88 per 10 s for 80 s), so the window starts after
        // `IDLE_SETTLE` and lasts `IDLE_WINDOW` (200 nodes, the same build:
        // a 15 s window straight after the summaries gave 1.04-1.69 cores
        // over five runs, a settled 30 s window 1.58 and 1.62). The
        // counters are read node by node, which takes a while with hundreds
        // of them: each node's two readings lie as far apart as the ends of
        // the two collections, not only the sleep.
        tokio::time::sleep(IDLE_SETTLE).await;
        let before = net.metric_sums().await;
        let read0 = Instant::now();
        let c0 = memory::cpu_time().unwrap_or_default();
        let w0 = Instant::now();
        tokio::time::sleep(IDLE_WINDOW).await;
        let idle_secs = w0.elapsed().as_secs_f64();
        let idle_cpu_cores =
            (memory::cpu_time().unwrap_or_default().saturating_sub(c0)).as_secs_f64() / idle_secs;
        let after = net.metric_sums().await;
        let idle_rates = rates(&before, &after, read0.elapsed().as_secs_f64());
        for (k, v) in &idle_rates {
            eprintln!("  idle: {k} {v:.1}/s");
        }
        let rss = memory::rss_bytes().unwrap_or(0) as f64 / 1e6;
        let threads = memory::threads().unwrap_or(0);
        // A new node is counted once an elected publisher of its domain
        // signs its next summary (up to one summary interval later) and that
        // summary is taken everywhere (a receiver may first ask a member to
        // vouch for a new signer): two intervals and some margin.
        let round_limit = (options.summary_interval() * 2 + Duration::from_secs(30)).max(Duration::from_secs(60));
        let mut adverts = Vec::new();
        let mut summaries_ms = Vec::new();
        for r in 0..cmd.rounds {
            let domain = options.domains[r % leaves].clone();
            let p = net.propagation(&domain, round_limit).await?;
            eprintln!(
                "  new node {} in {domain}: in all {} views of its domain after {} ms, counted by every node after {} ms",
                p.node,
                p.views,
                p.advert.as_millis(),
                p.summary.as_millis()
            );
            adverts.push(p.advert.as_secs_f64() * 1000.0);
            summaries_ms.push(p.summary.as_secs_f64() * 1000.0);
        }
        adverts.sort_by(f64::total_cmp);
        summaries_ms.sort_by(f64::total_cmp);
        let (job_ms, job_providers, job_domains, job_outputs_ok) = if cmd.tasks > 0 {
            place_job(&net, cmd.tasks).await?
        } else {
            (0, 0, 0, true)
        };
        let counters = net
            .metric_sums()
            .await
            .into_iter()
            .filter(|(k, _)| COUNTERS.iter().any(|c| k.starts_with(c)))
            .collect();
        anyhow::Ok(ScaleReport {
            nodes: cmd.nodes,
            domains: leaves,
            start_ms: (start_s * 1e3) as u64,
            views_ms: views.as_millis() as u64,
            summaries_ms: summaries.as_millis() as u64,
            rss_mb: rss,
            rss_per_node_mb: rss / net.members().len() as f64,
            threads,
            idle_cpu_cores,
            advert_p50_ms: percentile(&adverts, 50.0),
            advert_p95_ms: percentile(&adverts, 95.0),
            summary_p50_ms: percentile(&summaries_ms, 50.0),
            summary_max_ms: summaries_ms.last().copied().unwrap_or(f64::NAN),
            job_tasks: cmd.tasks,
            job_ms,
            job_providers,
            job_domains,
            job_outputs_ok,
            counters,
            idle_rates,
        })
    }
    .await;
    eprintln!("stopping the nodes…");
    net.shutdown().await;
    result
}

/// A job of small rot13 tasks from node 0 (over its HTTP API); returns its
/// wall time, the providers and domains used, and whether the outputs are
/// right.
async fn place_job(net: &memory::Testnet, tasks: usize) -> anyhow::Result<(u64, usize, usize, bool)> {
    let module = wat::parse_str(ROT13_WAT)?;
    let inputs: Vec<TaskInput> = (0..tasks)
        .map(|i| TaskInput {
            name: format!("text-{i:04}"),
            bytes: format!("Hello, Agora! Task {i} of {tasks}.\n").into_bytes(),
            estimate: Some(100_000),
        })
        .collect();
    let client = net.members()[0].node.client();
    let spec = job::prepare(&client, &module, None, &inputs, &Params::default()).await?;
    let t = Instant::now();
    let id = job::submit(&client, &spec).await?;
    let n0 = &net.members()[0].node;
    eprintln!(
        "job {id} submitted to node 0 (follow it: agora job watch {id} --api {} --token {})",
        n0.api, n0.token
    );
    let status = job::wait_quietly(&client, &id, Duration::from_secs(300), Duration::from_millis(20)).await?;
    let ms = t.elapsed().as_millis() as u64;
    job::ensure_done(&status)?;
    let outputs = job::outputs(&client, &id).await?;
    let expected: Vec<Vec<u8>> = inputs.iter().map(|i| rot13(&i.bytes)).collect();
    let ok = job::compare(&outputs, &expected).is_empty();
    let o = job::outcome(&status);
    let used: Vec<_> = o
        .providers
        .iter()
        .filter(|(_, w)| w.accepted > 0)
        .map(|(p, _)| *p)
        .collect();
    let domains: std::collections::BTreeSet<String> = net
        .members()
        .iter()
        .filter(|m| used.contains(&m.id()))
        .map(|m| m.domain.clone())
        .collect();
    Ok((ms, used.len(), domains.len(), ok))
}

impl ScaleCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        super::block_on(async {
            let r = signal::interruptible(measure(&self)).await?;
            if self.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                let mut t = Table::new(&["figure", "value"]).with_right(&[1]);
                let rows: Vec<(&str, String)> = vec![
                    ("nodes", r.nodes.to_string()),
                    ("domains", r.domains.to_string()),
                    ("start, s", format!("{:.1}", r.start_ms as f64 / 1e3)),
                    ("views complete, s", format!("{:.1}", r.views_ms as f64 / 1e3)),
                    (
                        "summaries everywhere, s (after views)",
                        format!("{:.1}", r.summaries_ms as f64 / 1e3),
                    ),
                    ("RSS, MB", format!("{:.0}", r.rss_mb)),
                    ("RSS per node, MB", format!("{:.1}", r.rss_per_node_mb)),
                    ("threads", r.threads.to_string()),
                    ("idle CPU, cores", format!("{:.2}", r.idle_cpu_cores)),
                    ("advert p50, ms", format!("{:.0}", r.advert_p50_ms)),
                    ("advert p95, ms", format!("{:.0}", r.advert_p95_ms)),
                    ("summary p50, ms", format!("{:.0}", r.summary_p50_ms)),
                    ("summary max, ms", format!("{:.0}", r.summary_max_ms)),
                    ("job tasks", r.job_tasks.to_string()),
                    ("job wall, ms", r.job_ms.to_string()),
                    (
                        "job providers / domains",
                        format!("{} / {}", r.job_providers, r.job_domains),
                    ),
                    ("job outputs right", r.job_outputs_ok.to_string()),
                ];
                for (k, v) in rows {
                    t.row(vec![k.to_owned(), v]);
                }
                for (k, v) in &r.counters {
                    t.row(vec![format!("Σ {k}"), format!("{v:.0}")]);
                }
                print!("{}", t.render());
            }
            anyhow::Ok(if r.job_outputs_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        })?
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rot13_round_trips() {
        assert_eq!(super::rot13(b"Hello, Agora"), b"Uryyb, Ntben".to_vec());
        assert_eq!(
            super::rot13(&super::rot13(b"xyz ABC 123")),
            b"xyz ABC 123".to_vec()
        );
    }
}
