//! `agora-testnet bench`: the benchmark suite against fresh testnets.
//!
//! Run it from a release build — `cargo run --release -p agora-testnet --
//! bench` — which also builds a release `agora`. Five parts, one after the
//! other: the first two share a testnet of `agora node` processes, the
//! third starts its own once that one is stopped, the fourth runs its
//! nodes inside this process, and the fifth puts nodes behind NAT routers
//! on the namespace testnet. `--only-network` runs the first two parts
//! alone, `--only-placement` the third, `--only-nat` the fifth.
//!
//! 1. **Latency and throughput** (`network.rs`): a requester and `--nodes`
//!    providers (default 4) in one domain. `e2e_*`: sequential one-task
//!    no-op jobs (`--e2e-jobs`, default 300, after 10 untimed ones), each
//!    interactive (as a caller waiting on one result states it; its
//!    provider answers the order with the receipt, SPEC.md §8.1), each
//!    timed by the client from `POST /v1/jobs?wait_ms=` until its answer
//!    says `done` (the node answers as soon as the job is stored and has
//!    ended); `e2e_node_p50_ms` is the same
//!    jobs on the requester's own clock. `tasks_per_s`: one job of
//!    `--tasks` no-op tasks (default 2000; inputs uploaded beforehand,
//!    after a 64-task warm-up job so that every provider has compiled the
//!    module), tasks / wall time from the same client clock;
//!    `cpu_ms_per_task` the CPU time all node processes used over that job
//!    per task, and `steal_share` the share of the machine's CPU time the
//!    hypervisor stole meanwhile (on a shared host both figures worsen
//!    with it: compare runs of like steal). `rss_mb`: the
//!    median VmRSS of the providers after the jobs and the audit of their
//!    chains, once idle: once each has given back what it no longer uses
//!    (its `agora_memory_trims_total` counts up; at most 30 s)
//!    (`rss_max_mb` the largest); `rss_anon_mb` the median of its
//!    anonymous part (`RssAnon`: heap, stacks), the rest being pages of
//!    the binary, shared by every node process and dropped by the kernel
//!    under pressure.
//! 2. **Advert propagation** (`adverts.rs`): the same testnet grown to 9
//!    processes, then a 10th node started and stopped `--advert-rounds`
//!    times (default 20): from the moment its `node.json` appears (its
//!    driver starts right after) until every other node's `GET /v1/peers`
//!    lists it (`advert_p50_ms`, `advert_p95_ms`).
//! 3. **Placement quality** (`placement.rs`): a requester and three
//!    providers with CPU shares 1, 0.5 and 0.25 (one slot each: 1.75 cores
//!    in all) run the same job of `--makespan-tasks` (default 200) prime
//!    ranges of log-uniform widths (estimates proportional to width) three
//!    times: scored placement (first, so it starts knowing only the
//!    adverts), then random, then round-robin. `makespan_ratio` = makespan
//!    / max(total fuel / total advertised capacity, largest task's fuel /
//!    fastest per-slot capacity), the makespan being the requester's
//!    submit-to-done time; `makespan_ratio_random` and
//!    `makespan_ratio_round_robin` the same for the baselines, and
//!    `makespan_ratio_kernel` all three against that bound corrected for
//!    how much faster than the calibration kernel the prime sieve runs per
//!    CU (timed with `agora exec` first).
//! 4. **Scale** (`scale.rs`; `--scale-nodes`, default 200; 0 or either
//!    `--only-*` flag skips it): that many full nodes in this process over
//!    the memory transport (see `agora-testnet scale`): time until every
//!    view and every domain summary is complete, memory per node, advert
//!    propagation to every view of a new node's domain
//!    (`scale_advert_p95_ms`), and a 100-task job placed from one node
//!    across them (`scale_job_ms`). If it fails, the bench says why
//!    (`scale_error`) and keeps the other figures.
//! 5. **Nodes behind NAT** (`nat.rs`; `--nat-rounds`, default 20; 0 or
//!    either `--only-*` flag skips it; it needs root and nftables, and says
//!    so when it skips for want of them): a requester and a provider each
//!    behind its own NAT router on the namespace testnet, with a public
//!    relay. `nat_join_ms` (provider start to its first task done),
//!    `e2e_relayed_p50_ms` and `e2e_direct_p50_ms` (one-task jobs over the
//!    relay, and once a hole is punched), and hole punching successes over
//!    `--nat-rounds` new relayed connections. If it fails, `nat_error`
//!    says why.
//!
//! 6. **Compute routing** (`routing.rs`; skipped by every `--only-*` flag
//!    but `--only-routing`, and without root): on the namespace testnet
//!    with the lab's own delays, a requester with two providers 5 ms away
//!    (round trip) and two 80 ms away. `near_share`: the share of 40
//!    interactive tasks with a 20 ms deadline run near;
//!    `interactive_p99_ms`: one-task interactive jobs submitted while a
//!    batch job fills every provider, submit to done (deadline
//!    `interactive_deadline_ms`; the batch job must still finish right);
//!    `energy_j`: the joules of a job under an energy budget. If it fails,
//!    `routing_error` says why.
//!
//! 7. **Data** (`fetch.rs`; `--fetch-mib`, default 256, 0 skips it;
//!    `--only-fetch` runs it alone): four nodes; fetches by content id from
//!    one holder (`fetch_mib_s_1`) and from three (`fetch_mib_s_3`), beside
//!    plain loopback TCP (`fetch_tcp_mib_s`), and the peak memory of a node
//!    serving a `--serve-mib` (1 GiB) blob (`serve_rss_mb`).
//!
//! This module runs the parts the flags ask for and prints the figures:
//! one table, then one per placement run, and with `--json` one JSON
//! object as the last line, whose keys are the fields of [`BenchReport`]
//! (`figures.rs`, which also turns the parts' samples into figures). The
//! progress of each part goes to stderr as it runs.

mod adverts;
mod fetch;
mod figures;
mod layout;
mod nat;
mod network;
mod placement;
mod routing;
mod scale;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use figures::NetworkSamples;
pub use figures::{BenchReport, MakespanRun, ProviderRun};

use crate::artifacts::{self, Modules};
use crate::report::{Table, loadavg};
use crate::signal;

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
    /// New relayed connections to a provider behind NAT whose hole punching
    /// is counted (0: skip the NAT part, which needs root and nftables).
    #[arg(long, default_value_t = 20)]
    pub nat_rounds: usize,
    /// Run only the placement-quality part.
    #[arg(long, conflicts_with_all = ["only_network", "only_nat", "only_routing"])]
    pub only_placement: bool,
    /// Run only the first part: latency, throughput, memory and adverts.
    #[arg(long)]
    pub only_network: bool,
    /// Run only the NAT part.
    #[arg(long, conflicts_with = "only_network")]
    pub only_nat: bool,
    /// Run only the compute-routing part.
    #[arg(long, conflicts_with_all = ["only_network", "only_nat"])]
    pub only_routing: bool,
    /// Run only the data part: fetches by content from one and from three
    /// holders, and the memory of a node serving a large blob.
    #[arg(long, conflicts_with_all = ["only_network", "only_nat", "only_routing", "only_placement"])]
    pub only_fetch: bool,
    /// MiB fetched from one and from three holders (0: skip the data part).
    #[arg(long, default_value_t = 256)]
    pub fetch_mib: u64,
    /// MiB of the blob whose serving node's memory is measured.
    #[arg(long, default_value_t = 1024)]
    pub serve_mib: u64,
    /// Where the nodes' data dirs go. Default: a temporary directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print the figures as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
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

    /// Runs the parts the flags ask for, one after the other, and gathers
    /// their figures.
    async fn run(&self) -> anyhow::Result<BenchReport> {
        let agora = artifacts::agora_binary()?;
        let agora_path = agora.clone();
        let modules = artifacts::example_modules()?;
        if !artifacts::is_release() {
            eprintln!(
                "warning: this is a debug build; run `cargo run --release -p agora-testnet -- bench` for real figures"
            );
        }
        let load_before = loadavg().unwrap_or_default();
        let work = super::WorkDir::new(self.dir.as_deref(), "agora-bench-")?;
        let dir = work.path();
        let only_other = |mine: bool| {
            !mine
                && (self.only_placement
                    || self.only_network
                    || self.only_nat
                    || self.only_routing
                    || self.only_fetch)
        };
        let network = if self.only_placement || self.only_nat || self.only_routing || self.only_fetch {
            NetworkSamples::skipped()
        } else {
            self.network(agora.clone(), &dir.join("latency"), &modules)
                .await?
        };
        let runs = if self.only_network || self.only_nat || self.only_routing || self.only_fetch {
            vec![]
        } else {
            placement::measure(
                agora.clone(),
                &dir.join("placement"),
                &modules,
                self.makespan_tasks,
            )
            .await?
        };
        let scale = if self.scale_nodes > 0 && !only_other(false) {
            Some(scale::measure(self.scale_nodes).await?)
        } else {
            None
        };
        let nat = if self.nat_rounds > 0 && !only_other(self.only_nat) {
            nat::measure(agora.clone(), &dir.join("nat"), &modules, self.nat_rounds)
                .await
                .unwrap_or_else(|e| nat::NatSamples::failed(&e))
        } else {
            nat::NatSamples::default()
        };
        let routing = if only_other(self.only_routing) {
            routing::RoutingSamples::default()
        } else {
            routing::measure(agora, &dir.join("routing"), &modules)
                .await
                .unwrap_or_else(|e| routing::RoutingSamples::failed(&e))
        };
        let data = if self.fetch_mib > 0 && !only_other(self.only_fetch) {
            fetch::measure(
                agora_path.clone(),
                &dir.join("data"),
                self.fetch_mib,
                self.serve_mib,
            )
            .await
            .unwrap_or_else(|e| fetch::FetchSamples::failed(&format!("{e:#}")))
        } else {
            fetch::FetchSamples::failed("skipped")
        };
        let mut report = BenchReport::new(network, runs, nat, routing, scale, load_before);
        report.data = data;
        report.set_layout(layout::measure(&agora_path));
        Ok(report)
    }

    /// Parts 1 and 2 on one testnet: latency, throughput and memory, then
    /// advert propagation.
    async fn network(&self, agora: PathBuf, dir: &Path, modules: &Modules) -> anyhow::Result<NetworkSamples> {
        let mut net = network::start(agora, dir, self.nodes).await?;
        let noop = modules.read("noop")?;
        let (e2e_ms, e2e_node_ms) = network::latency(&net, &noop, self.e2e_jobs).await?;
        let blocks_before = network::chain_blocks(&net).await?;
        let throughput = network::throughput(&net, &noop, self.tasks).await?;
        let blocks_after = network::chain_blocks(&net).await?;
        let chain_blocks_per_task =
            blocks_after.saturating_sub(blocks_before) as f64 / self.tasks.max(1) as f64;
        let audits = net.audit().await?;
        if !audits.mismatches.is_empty() {
            anyhow::bail!("{}", audits.line());
        }
        let (rss_mb, rss_anon_mb) = network::idle_rss(&net).await;
        let advert_ms = adverts::propagation(&mut net, self.advert_rounds).await?;
        net.stop();
        Ok(NetworkSamples {
            e2e_ms,
            e2e_node_ms,
            tasks_per_s: throughput.rate,
            cpu_ms_per_task: throughput.cpu_ms_per_task,
            steal_share: throughput.steal,
            chain_blocks_per_task,
            audit: audits.line(),
            rss_mb,
            rss_anon_mb,
            advert_ms,
        })
    }

    /// Prints the figures, each placement run in detail, and with `--json`
    /// the JSON object.
    fn print(&self, r: &BenchReport) -> anyhow::Result<()> {
        print_figures(r);
        for run in &r.makespan_runs {
            print_run(run);
        }
        if self.json {
            println!("{}", serde_json::to_string(r)?);
        }
        Ok(())
    }
}

/// The main table, with each figure's goal, and the conditions of the run.
fn print_figures(r: &BenchReport) {
    let mut t = Table::new(&["figure", "value", "goal"]).with_right(&[1]);
    let rows: Vec<(&str, String, &str)> = vec![
        ("e2e_p50_ms", format!("{:.2}", r.e2e_p50_ms), "≤ 1.5"),
        ("e2e_p99_ms", format!("{:.2}", r.e2e_p99_ms), "≤ 4"),
        ("tasks_per_s", format!("{:.0}", r.tasks_per_s), "≥ 3000"),
        (
            "cpu_ms_per_task (all nodes)",
            format!("{:.2}", r.cpu_ms_per_task),
            "",
        ),
        (
            "steal_share (during the throughput job)",
            format!("{:.2}", r.steal_share),
            "≈ 0 for a fair figure",
        ),
        (
            "chain per task: blocks / signatures",
            format!("{:.2} / {:.2}", r.chain_blocks_per_task, r.chain_blocks_per_task),
            "≤ 2: a pay and a receive block per payment of 1 to 32 tasks",
        ),
        (
            "chain per task: bytes",
            format!("{:.0}", r.chain_bytes_per_task),
            "",
        ),
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
        ("rss_mb", format!("{:.1}", r.rss_mb), "≤ 25"),
        (
            "rss_anon_mb (the node's own part of it)",
            format!("{:.1}", r.rss_anon_mb),
            "",
        ),
        ("nat_join_ms", format!("{:.0}", r.nat_join_ms), ""),
        ("e2e_relayed_p50_ms", format!("{:.1}", r.e2e_relayed_p50_ms), ""),
        ("e2e_direct_p50_ms", format!("{:.1}", r.e2e_direct_p50_ms), ""),
        (
            "hole punching: punched / attempts",
            format!("{} / {}", r.holes_punched, r.hole_punch_attempts),
            "",
        ),
        (
            "symmetric NAT: punched / attempts; jobs done",
            format!(
                "{} / {}; {}",
                r.symmetric_nat[1], r.symmetric_nat[0], r.symmetric_nat[2]
            ),
            "0 punched; every job done (relayed)",
        ),
        (
            "near_share",
            format!("{:.2}", r.near_share),
            "≥ 0.90 (20 ms deadline; 5 vs 80 ms)",
        ),
        (
            "interactive_p99_ms",
            format!("{:.0}", r.interactive_p99_ms),
            "under batch load; within interactive_deadline_ms",
        ),
        ("energy_j", format!("{:.2}", r.energy_j), "within the 40 J budget"),
        ("scale_nodes (in process)", r.scale_nodes.to_string(), ""),
        ("scale_advert_p95_ms", format!("{:.0}", r.scale_advert_p95_ms), ""),
        ("scale_job_ms (100 tasks)", format!("{:.0}", r.scale_job_ms), ""),
        (
            "fetch_mib_s_1",
            format!("{:.0}", r.data.fetch_mib_s_1),
            "one holder",
        ),
        (
            "fetch_mib_s_3",
            format!("{:.0}", r.data.fetch_mib_s_3),
            "three holders, above one",
        ),
        (
            "fetch_tcp_mib_s",
            format!("{:.0}", r.data.fetch_tcp_mib_s),
            "plain loopback TCP, the naive ceiling",
        ),
        (
            "serve_rss_mb",
            format!("{:.1}", r.data.serve_rss_mb),
            "peak, serving the large blob",
        ),
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
    match &r.layout_error {
        None => {
            println!(
                "code layout: node/agora.order names {} functions, {} of them in this agora ({:.0} %){}",
                r.layout_listed,
                r.layout_present,
                r.layout_share * 100.0,
                if r.profile != "release" {
                    "; only a release agora is laid out by it"
                } else if r.layout_share < layout::STALE_BELOW {
                    "; stale: write it again with testnet/symbol-order.py (testnet/README.md)"
                } else {
                    ""
                }
            );
        }
        Some(e) => println!("code layout not read: {e}"),
    }
    if !r.audit.is_empty() {
        println!("{}", r.audit);
    }
    if let Some(e) = &r.nat_error {
        println!("the NAT part did not run or failed: {e}");
    }
    if let Some(e) = &r.routing_error {
        println!("the routing part did not run or failed: {e}");
    }
    if let Some(e) = &r.scale_error {
        println!("the scale run failed: {e}");
    }
}

/// One placement run: its makespan and bounds, and a table of its
/// providers.
fn print_run(run: &MakespanRun) {
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
