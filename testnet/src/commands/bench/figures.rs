//! The figures the suite reports, in the shape `--json` prints them.
//!
//! The parts hand in raw samples (every latency, every advert round, every
//! provider's memory) and placement runs; [`BenchReport::new`] takes the
//! percentiles and ratios from them. A part that did not run leaves its
//! figures NaN (`null` in the JSON) and, for the scale run, `scale_nodes` 0.
//! The JSON keys are the fields' names, in their order here: scripts and
//! notes read them, so a rename is a change of interface.

use serde::Serialize;

use crate::commands::scale::ScaleReport;
use crate::report::{loadavg, percentile};

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
    /// CPU time of every node process over the throughput job, per task, ms.
    pub cpu_ms_per_task: f64,
    /// The share of the machine's CPU time the hypervisor stole during the
    /// throughput job (0 on a machine of one's own).
    pub steal_share: f64,
    /// Credit-chain blocks the throughput job added per task, over all
    /// nodes (each block is one signature).
    pub chain_blocks_per_task: f64,
    /// Bytes one paid task adds to the chains (pay and receive blocks).
    pub chain_bytes_per_task: f64,
    /// Every chain audited by a peer after the throughput job.
    pub audit: String,
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
    /// The anonymous part of an idle node's resident memory (heap,
    /// stacks; not the binary's pages), MB, median over the providers.
    pub rss_anon_mb: f64,
    /// The placement runs in detail.
    pub makespan_runs: Vec<MakespanRun>,
    /// Build profile of the testnet and the nodes.
    pub profile: String,
    /// Names in `node/agora.order`, and how many of them the `agora`
    /// binary defines as functions (see `layout.rs`); 0 and 0 if unread.
    pub layout_listed: usize,
    /// See `layout_listed`.
    pub layout_present: usize,
    /// `layout_present / layout_listed` (NaN if unread).
    pub layout_share: f64,
    /// Why the layout was not read, if it was not.
    pub layout_error: Option<String>,
    /// Nodes of the in-process scale run (0 if skipped).
    pub scale_nodes: usize,
    /// New node's advert in every view of its domain there, p95, ms.
    pub scale_advert_p95_ms: f64,
    /// Its 100-task job, submit to done, ms.
    pub scale_job_ms: f64,
    /// The scale run in detail.
    pub scale: Option<ScaleReport>,
    /// Why the scale run failed, if it did.
    pub scale_error: Option<String>,
    /// A provider behind NAT: its start to its first task done, ms.
    pub nat_join_ms: f64,
    /// One-task job to it over a relay, submit to done, p50, ms.
    pub e2e_relayed_p50_ms: f64,
    /// The same over a direct connection after hole punching, p50, ms.
    pub e2e_direct_p50_ms: f64,
    /// New relayed connections to it that tried hole punching.
    pub hole_punch_attempts: u64,
    /// Of those, upgraded to direct ones.
    pub holes_punched: u64,
    /// Behind symmetric NATs: attempts, successes, and one-task jobs done
    /// through the relay.
    pub symmetric_nat: [u64; 3],
    /// Why the NAT part was skipped or failed, if it was or did.
    pub nat_error: Option<String>,
    /// Interactive tasks with a 20 ms deadline run in the domain 5 ms
    /// away rather than the one 80 ms away (equal capacity), a share.
    pub near_share: f64,
    /// One-task interactive jobs while batch work fills every provider,
    /// submit to done, p99, ms.
    pub interactive_p99_ms: f64,
    /// Their deadline, ms.
    pub interactive_deadline_ms: f64,
    /// Joules a job under an energy budget reports.
    pub energy_j: f64,
    /// Why the routing part was skipped or failed, if it was or did.
    pub routing_error: Option<String>,
    /// The data part's figures (`fetch_mib_s_1`, `fetch_mib_s_3`,
    /// `serve_rss_mb`, …).
    #[serde(flatten)]
    pub data: super::fetch::FetchSamples,
    /// Load averages before and after (other work on the machine skews
    /// every figure).
    pub load_before: String,
    /// After.
    pub load_after: String,
}

/// What the first two parts sampled on their testnet; every list sorted.
#[derive(Debug, Clone, Default)]
pub(super) struct NetworkSamples {
    /// One-task jobs, submit to done, client clock, ms.
    pub e2e_ms: Vec<f64>,
    /// The same jobs on the requester's clock, ms.
    pub e2e_node_ms: Vec<f64>,
    /// Tasks per second of the throughput job (NaN if not run).
    pub tasks_per_s: f64,
    /// CPU ms per task over it.
    pub cpu_ms_per_task: f64,
    /// The share of CPU time stolen meanwhile.
    pub steal_share: f64,
    /// Chain blocks it added per task.
    pub chain_blocks_per_task: f64,
    /// The audit after it.
    pub audit: String,
    /// Each idle provider's resident memory, MB.
    pub rss_mb: Vec<f64>,
    /// Each idle provider's anonymous resident memory, MB.
    pub rss_anon_mb: Vec<f64>,
    /// Each new node's advert until every other view listed it, ms.
    pub advert_ms: Vec<f64>,
}

impl NetworkSamples {
    /// No samples: the parts were not run.
    pub(super) fn skipped() -> NetworkSamples {
        NetworkSamples {
            tasks_per_s: f64::NAN,
            cpu_ms_per_task: f64::NAN,
            steal_share: f64::NAN,
            chain_blocks_per_task: f64::NAN,
            ..NetworkSamples::default()
        }
    }
}

impl BenchReport {
    /// Records how much of `node/agora.order` the binary has, or why that
    /// was not read.
    pub(super) fn set_layout(&mut self, layout: Result<super::layout::Layout, String>) {
        match layout {
            Ok(l) => {
                self.layout_listed = l.listed;
                self.layout_present = l.present;
                self.layout_share = l.share();
                self.layout_error = None;
            }
            Err(e) => self.layout_error = Some(e),
        }
    }

    /// The figures from the parts' samples: `runs` holds the placement
    /// runs (none if skipped), `scale` the scale run's report or why it
    /// failed (`None` if skipped). The load average after is read now.
    pub(super) fn new(
        network: NetworkSamples,
        runs: Vec<MakespanRun>,
        nat: super::nat::NatSamples,
        routing: super::routing::RoutingSamples,
        scale: Option<Result<ScaleReport, String>>,
        load_before: String,
    ) -> BenchReport {
        let (scale, scale_error) = match scale {
            Some(Ok(r)) => (Some(r), None),
            Some(Err(e)) => (None, Some(e)),
            None => (None, None),
        };
        let run = |s: &str| runs.iter().find(|r| r.strategy == s);
        let ratio = |s: &str| run(s).map_or(f64::NAN, |r| r.ratio);
        let kernel = |s: &str| run(s).map_or(f64::NAN, |r| r.ratio_kernel);
        let rss = &network.rss_mb;
        BenchReport {
            e2e_p50_ms: percentile(&network.e2e_ms, 50.0),
            e2e_p99_ms: percentile(&network.e2e_ms, 99.0),
            e2e_node_p50_ms: percentile(&network.e2e_node_ms, 50.0),
            tasks_per_s: network.tasks_per_s,
            cpu_ms_per_task: network.cpu_ms_per_task,
            steal_share: network.steal_share,
            chain_blocks_per_task: network.chain_blocks_per_task,
            chain_bytes_per_task: super::network::chain_bytes_per_task(network.chain_blocks_per_task),
            audit: network.audit.clone(),
            advert_p95_ms: percentile(&network.advert_ms, 95.0),
            advert_p50_ms: percentile(&network.advert_ms, 50.0),
            makespan_ratio: ratio("scored"),
            makespan_ratio_random: ratio("random"),
            makespan_ratio_round_robin: ratio("round_robin"),
            makespan_ratio_kernel: [kernel("scored"), kernel("random"), kernel("round_robin")],
            rss_mb: percentile(rss, 50.0),
            rss_max_mb: rss.last().copied().unwrap_or(f64::NAN),
            rss_anon_mb: percentile(&network.rss_anon_mb, 50.0),
            scale_nodes: scale.as_ref().map_or(0, |s| s.nodes),
            scale_advert_p95_ms: scale.as_ref().map_or(f64::NAN, |s| s.advert_p95_ms),
            scale_job_ms: scale.as_ref().map_or(f64::NAN, |s| s.job_ms as f64),
            makespan_runs: runs,
            scale,
            scale_error,
            nat_join_ms: nat.join_ms,
            e2e_relayed_p50_ms: percentile(&nat.relayed_ms, 50.0),
            e2e_direct_p50_ms: percentile(&nat.direct_ms, 50.0),
            hole_punch_attempts: nat.punched + nat.failed,
            holes_punched: nat.punched,
            symmetric_nat: [
                nat.symmetric.0 + nat.symmetric.1,
                nat.symmetric.0,
                nat.symmetric.2 as u64,
            ],
            nat_error: nat.skipped,
            near_share: routing.near_share,
            interactive_p99_ms: percentile(&routing.interactive_ms, 99.0),
            interactive_deadline_ms: super::routing::INTERACTIVE_DEADLINE.as_secs_f64() * 1000.0,
            energy_j: routing.energy_j,
            routing_error: routing.skipped,
            data: super::fetch::FetchSamples::failed("skipped"),
            profile: if crate::artifacts::is_release() {
                "release"
            } else {
                "debug"
            }
            .into(),
            layout_listed: 0,
            layout_present: 0,
            layout_share: f64::NAN,
            layout_error: Some("not measured".into()),
            load_before,
            load_after: loadavg().unwrap_or_default(),
        }
    }
}
