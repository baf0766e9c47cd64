//! Part 3: how close each placement strategy comes to the best makespan.
//!
//! A requester and three providers with CPU shares 1, 0.5 and 0.25 (one
//! slot each) run the same job of uneven prime ranges under each strategy
//! in turn: scored first (so that it starts knowing only the adverts), then
//! random, then round-robin. Each run's makespan (the requester's
//! submit-to-done time) is divided by a lower bound no placement can beat:
//! max(total fuel / total advertised capacity, largest task's fuel /
//! fastest per-slot capacity). Two more bounds put the ratio in context:
//! one from the speeds the requester learnt from receipts during the run,
//! and one from the adverts corrected for this kernel — CU measure the
//! calibration kernel, and the prime sieve runs faster per CU; how much is
//! timed with `agora exec` before the testnet starts. While a run lasts,
//! every provider's `GET /v1/status` is sampled for the most tasks it ran
//! at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agora_node::api::client::Client;
use agora_node::api::{JobStatus, PeerRow};
use agora_node::market::job::{JobSpec, Strategy};
use agora_protocol::NodeId;
use agora_protocol::units::FUEL_PER_CU_SECOND;
use anyhow::Context;
use tokio::task::JoinHandle;

use super::figures::{MakespanRun, ProviderRun};
use crate::artifacts::Modules;
use crate::job::{self, Outcome, Params};
use crate::process::{NodeSpec, Testnet};
use crate::workload::primes;

/// The strategies in the order they run, with their names in the report.
const STRATEGIES: [(Strategy, &str); 3] = [
    (Strategy::Scored, "scored"),
    (Strategy::Random, "random"),
    (Strategy::RoundRobin, "round_robin"),
];

/// The same uneven job of `tasks` tasks under each strategy on a
/// heterogeneous testnet in `dir`.
pub(super) async fn measure(
    agora: PathBuf,
    dir: &Path,
    modules: &Modules,
    tasks: usize,
) -> anyhow::Result<Vec<MakespanRun>> {
    let sieve_cu = sieve_speed(&agora, modules, dir)?;
    let mut net = Testnet::new(agora, dir)?;
    let specs = vec![
        NodeSpec::requester("bench").with_slots(1),
        NodeSpec::provider("bench").with_cpu_share(1.0).with_slots(1),
        NodeSpec::provider("bench").with_cpu_share(0.5).with_slots(1),
        NodeSpec::provider("bench").with_cpu_share(0.25).with_slots(1),
    ];
    eprintln!("placement quality: providers with CPU shares 1, 0.5 and 0.25, one slot each");
    net.start_all(specs).await?;
    net.wait_converged(Duration::from_secs(60)).await?;
    // The requester calibrated one whole core, like `agora exec` runs.
    let kernel_factor = sieve_cu / net.node(0).per_slot_cu().max(1) as f64;
    eprintln!(
        "  the sieve runs at {sieve_cu:.0} fuel/µs on one core, the calibration kernel at {} CU: kernel factor {kernel_factor:.2}",
        net.node(0).per_slot_cu()
    );
    let ranges = primes::uneven(tasks, 10_000_000_000, 2_000_000, 40_000_000, 42);
    let inputs = primes::inputs(&ranges);
    let spec = job::prepare(
        &net.node(0).client,
        &modules.read("primes")?,
        None,
        &inputs,
        &Params::default(),
    )
    .await?;
    let mut runs = Vec::new();
    for (strategy, name) in STRATEGIES {
        let mut spec = spec.clone();
        spec.strategy = strategy;
        runs.push(run(&net, &spec, name, kernel_factor).await?);
        // Let stragglers' backups and vouchers finish before the next run.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    net.stop();
    Ok(runs)
}

/// One run of `spec` from node 0, called `name`, measured and printed.
async fn run(net: &Testnet, spec: &JobSpec, name: &str, kernel_factor: f64) -> anyhow::Result<MakespanRun> {
    let client = &net.node(0).client;
    // Capacity as the requester sees it when the job starts.
    let peers = client.peers(None).await?;
    let sampler = Sampler::start(net);
    let id = job::submit(client, spec).await?;
    let status = job::wait_quietly(client, &id, Duration::from_secs(900), Duration::from_millis(20)).await;
    let max_running = sampler.stop().await;
    let status = status?;
    job::ensure_done(&status).with_context(|| format!("the {name} run failed"))?;
    let after = client.peers(None).await?;
    let mut run = makespan_run(name, net, &status, &peers, &after);
    run.lower_bound_kernel_ms = run.lower_bound_ms / kernel_factor;
    run.ratio_kernel = run.makespan_ms as f64 / run.lower_bound_kernel_ms;
    for p in &mut run.providers {
        if let Some(n) = net.nodes().iter().find(|n| n.name() == p.node) {
            p.max_running = max_running.get(&n.id()).copied().unwrap_or(0);
        }
    }
    eprintln!(
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
    );
    Ok(run)
}

/// Samples how many tasks each provider runs at once, every 20 ms, until
/// stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    task: JoinHandle<HashMap<NodeId, u32>>,
}

impl Sampler {
    /// Starts sampling the providers of `net`.
    fn start(net: &Testnet) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let providers: Vec<(NodeId, Client)> = net
            .nodes()
            .iter()
            .filter(|n| n.spec.provide)
            .map(|n| (n.id(), n.client.clone()))
            .collect();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut max = HashMap::new();
                while !stop.load(Ordering::Relaxed) {
                    for (id, c) in &providers {
                        if let Ok(st) = c.status().await {
                            let m = max.entry(*id).or_insert(0u32);
                            *m = (*m).max(st.running);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                max
            }
        });
        Sampler { stop, task }
    }

    /// Stops sampling; the most tasks each provider ran at once.
    async fn stop(self) -> HashMap<NodeId, u32> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

/// The prime sieve's speed on one core, in fuel per µs (CU), from `agora
/// exec` on a range of 4·10⁷ near 10¹⁰: the best of three runs.
fn sieve_speed(agora: &Path, modules: &Modules, dir: &Path) -> anyhow::Result<f64> {
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

/// Fuel per second at `cu` CU.
fn fuel_per_s(cu: f64) -> f64 {
    cu * FUEL_PER_CU_SECOND as f64
}

/// The makespan no placement of the job can beat on providers of
/// `total_cu` in all and `fastest_cu` per slot at best, ms.
fn lower_bound_ms(o: &Outcome, total_cu: f64, fastest_cu: f64) -> f64 {
    (o.fuel as f64 / fuel_per_s(total_cu)).max(o.max_task_fuel as f64 / fuel_per_s(fastest_cu)) * 1000.0
}

/// Makespan against the lower bound for one run, from the requester's
/// view of the providers `before` and `after` it (the kernel-corrected
/// figures and `max_running` are left for the caller).
fn makespan_run(
    name: &str,
    net: &Testnet,
    status: &JobStatus,
    before: &[PeerRow],
    after: &[PeerRow],
) -> MakespanRun {
    let o = job::outcome(status);
    let accepting = || before.iter().filter(|p| p.accepting);
    let total_cu: f64 = accepting().map(|p| p.cu as f64).sum();
    let fastest = accepting()
        .map(|p| p.cu as f64 / f64::from(p.slots.max(1)))
        .fold(0.0, f64::max);
    let bound_ms = lower_bound_ms(&o, total_cu, fastest);
    let learnt: Vec<(f64, u32)> = after
        .iter()
        .filter_map(|p| p.learnt_cu.map(|c| (c, p.slots.max(1))))
        .collect();
    let ratio_learnt = (learnt.len() == after.len() && !learnt.is_empty()).then(|| {
        let total: f64 = learnt.iter().map(|(c, s)| c * f64::from(*s)).sum();
        let fastest = learnt.iter().map(|(c, _)| *c).fold(0.0, f64::max);
        status.wall_ms as f64 / lower_bound_ms(&o, total, fastest)
    });
    let providers = before
        .iter()
        .map(|p| provider_run(p, net, status, &o, total_cu, after))
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

/// Provider `p`'s share of a run (`max_running` left 0).
fn provider_run(
    p: &PeerRow,
    net: &Testnet,
    status: &JobStatus,
    o: &Outcome,
    total_cu: f64,
    after: &[PeerRow],
) -> ProviderRun {
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
        effective_cu: w.fuel as f64 / (status.wall_ms.max(1) as f64 / 1000.0) / FUEL_PER_CU_SECOND as f64,
        max_running: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(fuel: u64, max_task_fuel: u64) -> Outcome {
        Outcome {
            fuel,
            max_task_fuel,
            ..Outcome::default()
        }
    }

    #[test]
    fn the_bound_is_the_total_work_over_the_total_capacity_when_tasks_are_small() {
        // 10 CU-seconds of work on 5 CU: 2 s; the largest task alone, 0.5 s.
        let o = outcome(10 * FUEL_PER_CU_SECOND, FUEL_PER_CU_SECOND);
        assert_eq!(lower_bound_ms(&o, 5.0, 2.0), 2000.0);
    }

    #[test]
    fn the_bound_is_the_largest_task_on_the_fastest_slot_when_it_dominates() {
        // 10 CU-seconds on 10 CU: 1 s; the largest task of 8 on 2 CU: 4 s.
        let o = outcome(10 * FUEL_PER_CU_SECOND, 8 * FUEL_PER_CU_SECOND);
        assert_eq!(lower_bound_ms(&o, 10.0, 2.0), 4000.0);
    }
}
