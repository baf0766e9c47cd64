//! `agora-testnet bench`: the benchmark suite against fresh testnets.
//!
//! Run it from a release build — `cargo run --release -p agora-testnet --
//! bench` — which also builds a release `agora`. Three testnets, one after
//! the other, each stopped before the next starts:
//!
//! 1. **Latency and throughput**: a requester and `--nodes` providers
//!    (default 4) in one domain. `e2e_*`: sequential one-task no-op jobs,
//!    each timed by the client from `POST /v1/jobs` until `GET
//!    /v1/jobs/{id}` says `done` (polled every ~0.25 ms). `tasks_per_s`: one
//!    job of `--tasks` no-op tasks (inputs uploaded beforehand, after a
//!    64-task warm-up job so that every provider has compiled the module),
//!    tasks / wall time from the same client clock. `rss_mb`: the median VmRSS of
//!    the providers after the jobs, once idle.
//! 2. **Advert propagation**: the same testnet grown to 9 processes, then a
//!    10th node started and stopped `--advert-rounds` times: from the moment
//!    its `node.json` appears (its driver starts right after) until every
//!    other node's `GET /v1/peers` lists it.
//! 3. **Placement quality**: a requester and three providers with CPU
//!    shares 1, 0.5 and 0.25 (one slot each: 1.75 cores in all) run the
//!    same 200-task job of prime ranges of log-uniform widths (estimates
//!    proportional to width) three times: scored placement (first, so it
//!    starts knowing only the adverts), then random, then round-robin.
//!    `makespan_ratio` = makespan / max(total fuel / total advertised
//!    capacity, largest task's fuel / fastest per-slot capacity), the
//!    makespan being the requester's submit-to-done time.
//! 4. **Scale** (`--scale-nodes`, default 200; 0 skips it): that many full
//!    nodes in this process over the memory transport (see
//!    `agora-testnet scale`): time until every view and every domain
//!    summary is complete, memory per node, advert propagation to every
//!    view of a new node's domain (`scale_advert_p95_ms`), and a 100-task
//!    job placed from one node across them (`scale_job_ms`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use agora_node::api::PeerRow;
use agora_node::market::job::Strategy;
use agora_protocol::units::FUEL_PER_CU_SECOND;
use anyhow::Context;
use serde::Serialize;

use crate::job::{self, Params};
use crate::process::{NodeSpec, Testnet};
use crate::report::{Table, loadavg, percentile};
use crate::workload::{noop, primes};
use crate::{artifacts, signal};

/// Run the benchmark suite and print one table (with `--json`, one JSON
/// object as the last line).
#[derive(Debug, clap::Args)]
pub struct BenchCommand {
    /// Providers for the latency and throughput runs.
    #[arg(long, default_value_t = 4)]
    pub nodes: usize,
    /// One-task jobs timed for the latency percentiles.
    #[arg(long, default_value_t = 300)]
    pub e2e_jobs: usize,
    /// Tasks of the throughput job.
    #[arg(long, default_value_t = 2000)]
    pub tasks: usize,
    /// New nodes whose advert propagation is timed.
    #[arg(long, default_value_t = 20)]
    pub advert_rounds: usize,
    /// Tasks of the placement-quality job.
    #[arg(long, default_value_t = 200)]
    pub makespan_tasks: usize,
    /// Nodes of the in-process scale run (0: skip it); 200 take about four
    /// minutes on two cores.
    #[arg(long, default_value_t = 200)]
    pub scale_nodes: usize,
    /// Run only the placement-quality part.
    #[arg(long, conflicts_with = "only_network")]
    pub only_placement: bool,
    /// Run only the first part: latency, throughput, memory and adverts.
    #[arg(long)]
    pub only_network: bool,
    /// Where the nodes' data dirs go. Default: a temporary directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print the figures as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

/// One placement run.
#[derive(Debug, Clone, Serialize)]
pub struct MakespanRun {
    /// The strategy.
    pub strategy: String,
    /// Submit to done, ms (the requester's clock).
    pub makespan_ms: u64,
    /// The lower bound, ms.
    pub lower_bound_ms: f64,
    /// makespan / lower bound.
    pub ratio: f64,
    /// The same against the speeds learnt from receipts instead of the
    /// adverts (what the providers really delivered on this kernel).
    pub ratio_learnt: Option<f64>,
    /// The same against the adverts corrected for this kernel: CU measure
    /// the calibration kernel, and the prime sieve runs `kernel_factor`
    /// times faster per CU (measured with `agora exec` on this machine).
    pub ratio_kernel: f64,
    /// The lower bound so corrected, ms.
    pub lower_bound_kernel_ms: f64,
    /// Per provider: tasks, fuel share, learnt CU, idle share of the makespan.
    pub providers: Vec<ProviderRun>,
}

/// One provider in a placement run.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderRun {
    /// `node-I`.
    pub node: String,
    /// CPU share.
    pub cpu_share: f64,
    /// Advertised capacity, CU.
    pub advertised_cu: u64,
    /// Speed learnt from its receipts (after the run), CU per slot.
    pub learnt_cu: Option<f64>,
    /// Tasks it ran.
    pub tasks: usize,
    /// Share of all fuel.
    pub fuel_share: f64,
    /// Share of the total advertised capacity.
    pub capacity_share: f64,
    /// Its busy time at its learnt speed divided by the makespan.
    pub busy: Option<f64>,
    /// The speed it must at least have had: its fuel over the makespan, CU.
    pub effective_cu: f64,
    /// Most tasks its `GET /v1/status` showed running at once.
    pub max_running: u32,
}

/// The suite's figures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// One-task job, submit to verified result, p50, ms.
    pub e2e_p50_ms: f64,
    /// The same, p99.
    pub e2e_p99_ms: f64,
    /// The same as the requester timed it (its ms clock), p50.
    pub e2e_node_p50_ms: f64,
    /// Tiny tasks per second, one requester.
    pub tasks_per_s: f64,
    /// New advert in every view, p95, ms.
    pub advert_p95_ms: f64,
    /// The same, p50.
    pub advert_p50_ms: f64,
    /// Scored placement: makespan / lower bound.
    pub makespan_ratio: f64,
    /// Random placement.
    pub makespan_ratio_random: f64,
    /// Round-robin placement.
    pub makespan_ratio_round_robin: f64,
    /// The three ratios against the kernel-corrected bound (scored, random,
    /// round-robin).
    pub makespan_ratio_kernel: [f64; 3],
    /// Idle node's resident memory, MB (median over the providers).
    pub rss_mb: f64,
    /// The largest, MB.
    pub rss_max_mb: f64,
    /// The placement runs in detail.
    pub makespan_runs: Vec<MakespanRun>,
    /// Build profile of the testnet and the nodes.
    pub profile: String,
    /// Nodes of the in-process scale run (0 if skipped).
    pub scale_nodes: usize,
    /// New node's advert in every view of its domain there, p95, ms.
    pub scale_advert_p95_ms: f64,
    /// Its 100-task job, submit to done, ms.
    pub scale_job_ms: f64,
    /// The scale run in detail.
    pub scale: Option<super::scale::ScaleReport>,
    /// Why the scale run failed, if it did.
    pub scale_error: Option<String>,
    /// Load averages before and after (other work on the machine skews
    /// every figure).
    pub load_before: String,
    /// After.
    pub load_after: String,
}

impl BenchCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        super::block_on(async {
            let r = signal::interruptible(self.run()).await?;
            self.print(&r)?;
            anyhow::Ok(ExitCode::SUCCESS)
        })?
    }

    fn say(&self, s: &str) {
        eprintln!("{s}");
    }

    async fn run(&self) -> anyhow::Result<BenchReport> {
        let agora = artifacts::agora_binary()?;
        let modules = artifacts::example_modules()?;
        if !artifacts::is_release() {
            self.say("warning: this is a debug build; run `cargo run --release -p agora-testnet -- bench` for real figures");
        }
        let load_before = loadavg().unwrap_or_default();
        let work = super::WorkDir::new(self.dir.as_deref(), "agora-bench-")?;
        let dir = work.path();
        let (e2e, e2e_node, tasks_per_s, rss, adverts) = if self.only_placement {
            (vec![], vec![], f64::NAN, vec![], vec![])
        } else {
            self.network(agora.clone(), &dir.join("latency"), &modules)
                .await?
        };
        let runs = if self.only_network {
            vec![]
        } else {
            self.placement(agora, &dir.join("placement"), &modules).await?
        };
        let scale = if self.scale_nodes > 0 && !self.only_placement && !self.only_network {
            self.say(&format!(
                "scale: {} nodes in this process over the memory transport",
                self.scale_nodes
            ));
            let cmd = super::scale::ScaleCommand {
                nodes: self.scale_nodes,
                domains: 4,
                dial: 3,
                rounds: 5,
                tasks: 100,
                advert_interval: Duration::from_secs(5),
                heartbeat: Duration::from_secs(1),
                max_connections: 64,
                target_connections: 48,
                ping_interval: Duration::from_secs(15),
                json: true,
            };
            match super::scale::measure(&cmd).await {
                Ok(r) => {
                    anyhow::ensure!(
                        r.job_outputs_ok,
                        "the scale run's job came back with wrong outputs"
                    );
                    Ok(r)
                }
                // Reported, not fatal: the other figures stand.
                Err(e) => {
                    self.say(&format!("scale: {e:#}"));
                    Err(format!("{e:#}"))
                }
            }
            .map_or_else(|e| (None, Some(e)), |r| (Some(r), None))
        } else {
            (None, None)
        };
        let (scale, scale_error) = scale;
        let kernel = |s: &str| {
            runs.iter()
                .find(|r| r.strategy == s)
                .map_or(f64::NAN, |r| r.ratio_kernel)
        };
        let makespan_ratio_kernel = [kernel("scored"), kernel("random"), kernel("round_robin")];
        let ratio = |s: &str| {
            runs.iter()
                .find(|r| r.strategy == s)
                .map_or(f64::NAN, |r| r.ratio)
        };
        Ok(BenchReport {
            e2e_p50_ms: percentile(&e2e, 50.0),
            e2e_p99_ms: percentile(&e2e, 99.0),
            e2e_node_p50_ms: percentile(&e2e_node, 50.0),
            tasks_per_s,
            advert_p95_ms: percentile(&adverts, 95.0),
            advert_p50_ms: percentile(&adverts, 50.0),
            makespan_ratio: ratio("scored"),
            makespan_ratio_random: ratio("random"),
            makespan_ratio_round_robin: ratio("round_robin"),
            rss_mb: percentile(&rss, 50.0),
            rss_max_mb: rss.last().copied().unwrap_or(f64::NAN),
            makespan_ratio_kernel,
            makespan_runs: runs,
            scale_nodes: scale.as_ref().map_or(0, |s| s.nodes),
            scale_advert_p95_ms: scale.as_ref().map_or(f64::NAN, |s| s.advert_p95_ms),
            scale_job_ms: scale.as_ref().map_or(f64::NAN, |s| s.job_ms as f64),
            scale,
            scale_error,
            profile: if artifacts::is_release() {
                "release"
            } else {
                "debug"
            }
            .into(),
            load_before,
            load_after: loadavg().unwrap_or_default(),
        })
    }

    /// Latency, throughput, memory and advert propagation on one testnet.
    #[allow(clippy::type_complexity)]
    async fn network(
        &self,
        agora: PathBuf,
        dir: &std::path::Path,
        modules: &artifacts::Modules,
    ) -> anyhow::Result<(Vec<f64>, Vec<f64>, f64, Vec<f64>, Vec<f64>)> {
        let mut net = Testnet::new(agora, dir)?;
        let mut specs = vec![NodeSpec::requester("bench")];
        specs.extend((0..self.nodes).map(|_| NodeSpec::provider("bench")));
        self.say(&format!(
            "latency and throughput: a requester and {} providers",
            self.nodes
        ));
        net.start_all(specs).await?;
        net.wait_converged(Duration::from_secs(60)).await?;
        let noop_module = modules.read("noop")?;
        let (e2e, e2e_node) = self.latency(&net, &noop_module).await?;
        let tasks_per_s = self.throughput(&net, &noop_module).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut rss: Vec<f64> = net
            .nodes()
            .iter()
            .filter(|n| n.spec.provide)
            .filter_map(|n| n.rss_bytes())
            .map(|b| b as f64 / 1e6)
            .collect();
        rss.sort_by(f64::total_cmp);
        let adverts = self.adverts(&mut net).await?;
        net.stop();
        Ok((e2e, e2e_node, tasks_per_s, rss, adverts))
    }

    /// Sequential one-task no-op jobs: client-timed and node-timed
    /// latencies, sorted, in ms.
    async fn latency(&self, net: &Testnet, module: &[u8]) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
        let client = &net.node(0).client;
        let input = noop::inputs(1);
        let spec = job::prepare(client, module, None, &input, &Params::default()).await?;
        let warmup = 10;
        let mut client_ms = Vec::new();
        let mut node_ms = Vec::new();
        for i in 0..warmup + self.e2e_jobs {
            let mut spec = spec.clone();
            spec.seed = i as u64;
            let t = Instant::now();
            let id = job::submit(client, &spec).await?;
            let status = loop {
                let s = client.job(&id).await?;
                if s.state.is_terminal() {
                    break s;
                }
                // A short blocking pause, finer than the async timer's 1 ms:
                // this loop is the only work of the bench client.
                std::thread::sleep(Duration::from_micros(250));
            };
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            job::ensure_done(&status)?;
            if i >= warmup {
                client_ms.push(ms);
                node_ms.push(status.wall_ms as f64);
            }
        }
        client_ms.sort_by(f64::total_cmp);
        node_ms.sort_by(f64::total_cmp);
        self.say(&format!(
            "  e2e one-task job over {} jobs: p50 {:.2} ms, p99 {:.2} ms (the node's own clock: p50 {:.0} ms)",
            client_ms.len(),
            percentile(&client_ms, 50.0),
            percentile(&client_ms, 99.0),
            percentile(&node_ms, 50.0)
        ));
        Ok((client_ms, node_ms))
    }

    /// One job of many no-op tasks: tasks per second.
    async fn throughput(&self, net: &Testnet, module: &[u8]) -> anyhow::Result<f64> {
        let client = &net.node(0).client;
        let inputs = noop::inputs(self.tasks);
        let spec = job::prepare(client, module, None, &inputs, &Params::default()).await?;
        // A short warm-up job first, so that every provider holds the module
        // and has compiled it (as in the latency runs, compilation is not
        // what is measured here).
        let warm = job::prepare(client, module, None, &noop::inputs(64), &Params::default()).await?;
        let warm = job::submit(client, &warm).await?;
        job::ensure_done(
            &job::wait_quietly(client, &warm, Duration::from_secs(60), Duration::from_millis(10)).await?,
        )?;
        let t = Instant::now();
        let id = job::submit(client, &spec).await?;
        let submitted = t.elapsed();
        // Progress, to show the ramp and the tail: when each quarter of the
        // tasks was verified.
        let mut quarters = Vec::new();
        loop {
            let jobs = client.jobs().await?;
            let j = jobs
                .iter()
                .find(|j| j.id == id)
                .context("the job is not listed")?;
            while quarters.len() < 4 && j.verified * 4 >= self.tasks * (quarters.len() + 1) {
                quarters.push(t.elapsed().as_millis());
            }
            if j.state.is_terminal() {
                break;
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(600),
                "the throughput job did not finish in 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let secs = t.elapsed().as_secs_f64();
        let status = client.job(&id).await?;
        job::ensure_done(&status)?;
        let o = job::outcome(&status);
        let per: Vec<String> = o
            .providers
            .iter()
            .map(|(p, w)| format!("{} {}", net.label(p), w.accepted))
            .collect();
        let rate = self.tasks as f64 / secs;
        self.say(&format!(
            "  throughput: {} no-op tasks in {:.2} s = {rate:.0} tasks/s (submitted after {} ms, quarters verified at {quarters:?} ms; {})",
            self.tasks,
            secs,
            submitted.as_millis(),
            per.join(", ")
        ));
        let mut declined = std::collections::BTreeMap::<String, f64>::new();
        for n in net.nodes().iter().filter(|n| n.spec.provide) {
            if let Ok(text) = n.client.metrics().await {
                for l in text.lines().filter(|l| l.starts_with("agora_declined_total{")) {
                    if let Some((k, v)) = l.rsplit_once(' ') {
                        *declined.entry(k.to_owned()).or_default() += v.parse::<f64>().unwrap_or(0.0);
                    }
                }
            }
        }
        if !declined.is_empty() {
            self.say(&format!("  providers declined: {declined:?}"));
        }
        if let Ok(text) = client.metrics().await {
            let batches = metric(&text, "agora_market_frames_sent_total{kind=\"batch\"}");
            let single = metric(&text, "agora_market_frames_sent_total{kind=\"single\"}");
            let batched = metric(&text, "agora_market_batched_requests_total");
            self.say(&format!(
                "  the requester sent {batched:.0} market requests in {batches:.0} batches ({:.1} per batch) and {single:.0} alone",
                batched / batches.max(1.0)
            ));
        }
        Ok(rate)
    }

    /// Grows the testnet to 9 processes, then times a 10th node's advert
    /// reaching every view, `advert_rounds` times. Sorted ms.
    async fn adverts(&self, net: &mut Testnet) -> anyhow::Result<Vec<f64>> {
        while net.nodes().iter().filter(|n| n.is_running()).count() < 9 {
            net.start(NodeSpec::provider("bench")).await?;
        }
        net.wait_converged(Duration::from_secs(60)).await?;
        let mut samples = Vec::new();
        for _ in 0..self.advert_rounds {
            let i = net.start(NodeSpec::provider("bench")).await?;
            let id = net.node(i).id();
            let t0 = net.node(i).ready_at;
            let others: Vec<usize> = net
                .nodes()
                .iter()
                .filter(|n| n.is_running() && n.index != i)
                .map(|n| n.index)
                .collect();
            let mut pending = others.clone();
            while !pending.is_empty() {
                if t0.elapsed() > Duration::from_secs(30) {
                    anyhow::bail!(
                        "node-{i}'s advert had not reached {} nodes after 30 s",
                        pending.len()
                    );
                }
                let mut still = Vec::new();
                for &j in &pending {
                    let rows = net.node(j).client.peers(None).await?;
                    if !rows.iter().any(|r| r.peer_id == id) {
                        still.push(j);
                    }
                }
                pending = still;
                if !pending.is_empty() {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            samples.push(t0.elapsed().as_secs_f64() * 1000.0);
            net.stop_node(i);
        }
        samples.sort_by(f64::total_cmp);
        self.say(&format!(
            "  advert propagation to all {} other nodes over {} new nodes: p50 {:.0} ms, p95 {:.0} ms",
            9,
            samples.len(),
            percentile(&samples, 50.0),
            percentile(&samples, 95.0)
        ));
        Ok(samples)
    }

    /// The same uneven job under each strategy on a heterogeneous testnet.
    async fn placement(
        &self,
        agora: PathBuf,
        dir: &std::path::Path,
        modules: &artifacts::Modules,
    ) -> anyhow::Result<Vec<MakespanRun>> {
        let sieve_cu = sieve_speed(&agora, modules, dir)?;
        let mut net = Testnet::new(agora, dir)?;
        let specs = vec![
            NodeSpec::requester("bench").with_slots(1),
            NodeSpec::provider("bench").with_cpu_share(1.0).with_slots(1),
            NodeSpec::provider("bench").with_cpu_share(0.5).with_slots(1),
            NodeSpec::provider("bench").with_cpu_share(0.25).with_slots(1),
        ];
        self.say("placement quality: providers with CPU shares 1, 0.5 and 0.25, one slot each");
        net.start_all(specs).await?;
        net.wait_converged(Duration::from_secs(60)).await?;
        let client = net.node(0).client.clone();
        // The requester calibrated one whole core, like `agora exec` runs.
        let kernel_factor = sieve_cu / net.node(0).per_slot_cu().max(1) as f64;
        self.say(&format!(
            "  the sieve runs at {sieve_cu:.0} fuel/µs on one core, the calibration kernel at {} CU: kernel factor {kernel_factor:.2}",
            net.node(0).per_slot_cu()
        ));
        let ranges = primes::uneven(self.makespan_tasks, 10_000_000_000, 2_000_000, 40_000_000, 42);
        let inputs = primes::inputs(&ranges);
        let spec = job::prepare(
            &client,
            &modules.read("primes")?,
            None,
            &inputs,
            &Params::default(),
        )
        .await?;
        let mut runs = Vec::new();
        for strategy in [Strategy::Scored, Strategy::Random, Strategy::RoundRobin] {
            let name = match strategy {
                Strategy::Scored => "scored",
                Strategy::Random => "random",
                Strategy::RoundRobin => "round_robin",
            };
            // Capacity as the requester sees it when the job starts.
            let peers = client.peers(None).await?;
            let mut spec = spec.clone();
            spec.strategy = strategy;
            // Sample how many tasks each provider runs at once.
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let sampler = {
                let stop = stop.clone();
                let providers: Vec<_> = net
                    .nodes()
                    .iter()
                    .filter(|n| n.spec.provide)
                    .map(|n| (n.id(), n.client.clone()))
                    .collect();
                tokio::spawn(async move {
                    let mut max = std::collections::HashMap::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        for (id, c) in &providers {
                            if let Ok(st) = c.status().await {
                                let m = max.entry(*id).or_insert(0u32);
                                *m = (*m).max(st.running);
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    max
                })
            };
            let id = job::submit(&client, &spec).await?;
            let status =
                job::wait_quietly(&client, &id, Duration::from_secs(900), Duration::from_millis(20)).await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let max_running = sampler.await.unwrap_or_default();
            let status = status?;
            job::ensure_done(&status).with_context(|| format!("the {name} run failed"))?;
            let after = client.peers(None).await?;
            let mut run = makespan_run(name, &net, &status, &peers, &after);
            run.lower_bound_kernel_ms = run.lower_bound_ms / kernel_factor;
            run.ratio_kernel = run.makespan_ms as f64 / run.lower_bound_kernel_ms;
            for p in &mut run.providers {
                if let Some(n) = net.nodes().iter().find(|n| n.name() == p.node) {
                    p.max_running = max_running.get(&n.id()).copied().unwrap_or(0);
                }
            }
            self.say(&format!(
                "  {name:<11}: makespan {:.2} s, lower bound {:.2} s, ratio {:.3} (kernel-corrected {:.3}, against learnt speeds {}); tasks {}",
                run.makespan_ms as f64 / 1000.0,
                run.lower_bound_ms / 1000.0,
                run.ratio,
                run.ratio_kernel,
                run.ratio_learnt.map_or("-".into(), |r| format!("{r:.3}")),
                run.providers
                    .iter()
                    .map(|p| format!("{} (share {}) {}", p.node, p.cpu_share, p.tasks))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            runs.push(run);
            // Let stragglers' backups and vouchers finish before the next run.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        net.stop();
        Ok(runs)
    }

    fn print(&self, r: &BenchReport) -> anyhow::Result<()> {
        let mut t = Table::new(&["figure", "value", "goal"]).with_right(&[1]);
        let rows: Vec<(&str, String, &str)> = vec![
            ("e2e_p50_ms", format!("{:.2}", r.e2e_p50_ms), "≤ 5"),
            ("e2e_p99_ms", format!("{:.2}", r.e2e_p99_ms), "≤ 25"),
            ("tasks_per_s", format!("{:.0}", r.tasks_per_s), "≥ 1000"),
            ("advert_p95_ms", format!("{:.0}", r.advert_p95_ms), ""),
            (
                "makespan_ratio",
                format!("{:.3}", r.makespan_ratio),
                "≤ 1.25, below both baselines",
            ),
            (
                "makespan_ratio_random",
                format!("{:.3}", r.makespan_ratio_random),
                "",
            ),
            (
                "makespan_ratio_round_robin",
                format!("{:.3}", r.makespan_ratio_round_robin),
                "",
            ),
            (
                "makespan ratios, kernel-corrected",
                format!(
                    "{:.3} / {:.3} / {:.3}",
                    r.makespan_ratio_kernel[0], r.makespan_ratio_kernel[1], r.makespan_ratio_kernel[2]
                ),
                "scored / random / round-robin",
            ),
            ("rss_mb", format!("{:.1}", r.rss_mb), ""),
            ("scale_nodes (in process)", r.scale_nodes.to_string(), ""),
            ("scale_advert_p95_ms", format!("{:.0}", r.scale_advert_p95_ms), ""),
            ("scale_job_ms (100 tasks)", format!("{:.0}", r.scale_job_ms), ""),
        ];
        for (k, v, g) in rows {
            t.row(vec![k.to_owned(), v, g.to_owned()]);
        }
        println!();
        print!("{}", t.render());
        println!(
            "({} build; load average {} before, {} after)",
            r.profile, r.load_before, r.load_after
        );
        if let Some(e) = &r.scale_error {
            println!("the scale run failed: {e}");
        }
        for run in &r.makespan_runs {
            println!();
            println!(
                "{}: makespan {:.2} s; bound {:.2} s by the adverts (ratio {:.3}), {:.2} s corrected for the kernel (ratio {:.3})",
                run.strategy,
                run.makespan_ms as f64 / 1000.0,
                run.lower_bound_ms / 1000.0,
                run.ratio,
                run.lower_bound_kernel_ms / 1000.0,
                run.ratio_kernel
            );
            let mut t = Table::new(&[
                "provider",
                "share",
                "advert CU",
                "learnt CU",
                "tasks",
                "fuel %",
                "capacity %",
                "busy %",
                "≥ CU",
                "max running",
            ])
            .with_right(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
            for p in &run.providers {
                t.row(vec![
                    p.node.clone(),
                    p.cpu_share.to_string(),
                    p.advertised_cu.to_string(),
                    p.learnt_cu.map_or("-".into(), |c| format!("{c:.0}")),
                    p.tasks.to_string(),
                    format!("{:.1}", p.fuel_share * 100.0),
                    format!("{:.1}", p.capacity_share * 100.0),
                    p.busy.map_or("-".into(), |b| format!("{:.0}", b * 100.0)),
                    format!("{:.0}", p.effective_cu),
                    p.max_running.to_string(),
                ]);
            }
            print!("{}", t.render());
        }
        if self.json {
            println!("{}", serde_json::to_string(r)?);
        }
        Ok(())
    }
}

/// The prime sieve's speed on one core, in fuel per µs (CU), from `agora
/// exec` on a range of 4·10⁷ near 10¹⁰: the best of three runs.
/// A sample's value in Prometheus text (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn sieve_speed(
    agora: &std::path::Path,
    modules: &artifacts::Modules,
    dir: &std::path::Path,
) -> anyhow::Result<f64> {
    std::fs::create_dir_all(dir)?;
    let input = dir.join("sieve-probe.json");
    std::fs::write(&input, primes::input(10_000_000_000, 10_040_000_000))?;
    let mut best: f64 = 0.0;
    for _ in 0..3 {
        let out = std::process::Command::new(agora)
            .arg("exec")
            .arg(modules.path("primes"))
            .arg("--input")
            .arg(&input)
            .arg("--json")
            .arg("--data-dir")
            .arg(dir.join("exec"))
            .output()
            .context("cannot run agora exec")?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("agora exec said: {}", String::from_utf8_lossy(&out.stderr)))?;
        let fuel = v["fuel_used"].as_f64().unwrap_or(0.0);
        let ms = v["wall_ms"].as_f64().unwrap_or(0.0).max(1.0);
        best = best.max(fuel / ms / 1000.0);
    }
    Ok(best)
}

/// Makespan against the lower bound for one run.
fn makespan_run(
    name: &str,
    net: &Testnet,
    status: &agora_node::api::JobStatus,
    before: &[PeerRow],
    after: &[PeerRow],
) -> MakespanRun {
    let o = job::outcome(status);
    let total_cu: f64 = before.iter().filter(|p| p.accepting).map(|p| p.cu as f64).sum();
    let fastest = before
        .iter()
        .filter(|p| p.accepting)
        .map(|p| p.cu as f64 / f64::from(p.slots.max(1)))
        .fold(0.0, f64::max);
    let fuel_per_s = |cu: f64| cu * FUEL_PER_CU_SECOND as f64;
    let bound_ms =
        (o.fuel as f64 / fuel_per_s(total_cu)).max(o.max_task_fuel as f64 / fuel_per_s(fastest)) * 1000.0;
    let learnt: Vec<(f64, u32)> = after
        .iter()
        .filter_map(|p| p.learnt_cu.map(|c| (c, p.slots.max(1))))
        .collect();
    let ratio_learnt = (learnt.len() == after.len() && !learnt.is_empty()).then(|| {
        let total: f64 = learnt.iter().map(|(c, s)| c * f64::from(*s)).sum();
        let fastest = learnt.iter().map(|(c, _)| *c).fold(0.0, f64::max);
        let b =
            (o.fuel as f64 / fuel_per_s(total)).max(o.max_task_fuel as f64 / fuel_per_s(fastest)) * 1000.0;
        status.wall_ms as f64 / b
    });
    let providers = before
        .iter()
        .map(|p| {
            let w = o.providers.get(&p.peer_id).cloned().unwrap_or_default();
            let node = net.by_id(&p.peer_id);
            let learnt = after
                .iter()
                .find(|a| a.peer_id == p.peer_id)
                .and_then(|a| a.learnt_cu);
            ProviderRun {
                node: net.label(&p.peer_id),
                cpu_share: node.map_or(f64::NAN, |n| n.spec.cpu_share),
                advertised_cu: p.cu,
                learnt_cu: learnt,
                tasks: w.accepted,
                fuel_share: w.fuel as f64 / o.fuel.max(1) as f64,
                capacity_share: p.cu as f64 / total_cu.max(1.0),
                busy: learnt.map(|c| w.fuel as f64 / fuel_per_s(c) * 1000.0 / status.wall_ms.max(1) as f64),
                effective_cu: w.fuel as f64
                    / (status.wall_ms.max(1) as f64 / 1000.0)
                    / FUEL_PER_CU_SECOND as f64,
                max_running: 0,
            }
        })
        .collect();
    MakespanRun {
        strategy: name.to_owned(),
        makespan_ms: status.wall_ms,
        lower_bound_ms: bound_ms,
        ratio: status.wall_ms as f64 / bound_ms,
        ratio_learnt,
        ratio_kernel: f64::NAN,
        lower_bound_kernel_ms: f64::NAN,
        providers,
    }
}
