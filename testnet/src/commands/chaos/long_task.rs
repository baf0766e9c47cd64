//! `chaos long-task`: one long task that checkpoints (the
//! `checkpointed-pi` example), run three times on two providers:
//!
//! 1. uninterrupted, for its output and wall time;
//! 2. its provider killed (SIGKILL) half way: the requester places the task
//!    again, on the other provider, from the last checkpoint the killed one
//!    reported;
//! 3. its provider (the other one, the first being dead) killed half way and
//!    restarted on its data dir: it goes on from its last acknowledged
//!    checkpoint.
//!
//! Each interrupted run must give the uninterrupted run's output, within
//! 1.3× its wall time (at the same pace of the machine), with a receipt
//! that names a checkpoint the requester holds a signed progress receipt
//! for.

use std::time::{Duration, Instant};

use agora_node::api::JobStatus;
use agora_protocol::ContentId;

use super::{ChaosCommand, ChaosReport, Check, Run};
use crate::job::{self, Params};
use crate::process::Testnet;
use crate::workload::TaskInput;

/// Checkpoints per second of the task (one per round).
const ROUNDS_PER_SEC: u64 = 2;

/// The most an interrupted run may take, as a multiple of an uninterrupted
/// one.
const MAX_RATIO: f64 = 1.3;

/// How one run went.
struct Outcome {
    wall_ms: u64,
    output: Vec<u8>,
    status: JobStatus,
}

impl ChaosCommand {
    /// `long-task`: see the module docs.
    pub(super) async fn long_task(
        &self,
        net: &mut Testnet,
        modules: &crate::artifacts::Modules,
    ) -> anyhow::Result<ChaosReport> {
        self.start(net).await?;
        let client = net.node(0).client.clone();
        let module = modules.read("checkpointed-pi")?;
        let mut run = Run::labelled(net, 1, self.json);
        let mut checks = Vec::new();

        // The time of a sample here, from a run of about a quarter of a
        // second (long enough that starting it is a small part), sizes the
        // task.
        let (probe_rounds, probe_samples) = (4, 12_500_000);
        let probe = params(probe_rounds, probe_samples, Duration::from_secs(60));
        let (_, s) = job::run(&client, &module, None, &input(&probe), &probe).await?;
        let exec_ms = s.tasks[0]
            .copies
            .iter()
            .find_map(|c| c.exec_ms)
            .unwrap_or(1)
            .max(1);
        let ns_per_sample = exec_ms as f64 * 1e6 / (probe_rounds * probe_samples) as f64;
        let rounds = (self.task_secs * ROUNDS_PER_SEC).max(8);
        let samples = ((self.task_secs as f64 * 1e9 / rounds as f64 / ns_per_sample) as u64).max(1000);
        let deadline = Duration::from_secs(self.task_secs * 4 + 60);
        let p = params(rounds, samples, deadline);
        run.event(format!(
            "a task of {rounds} rounds of {samples} samples (~{} s), a checkpoint per round",
            self.task_secs
        ));

        let whole = self.finish_run(&client, &module, &p, deadline).await?;
        run.event(format!("uninterrupted: {} ms", whole.wall_ms));

        for restart in [false, true] {
            let what = if restart {
                "restarted on its data dir"
            } else {
                "killed, the task moved"
            };
            let cut = self
                .interrupted(net, &client, &module, &p, rounds, restart, &mut run)
                .await?;
            // This machine's pace drifts between runs (a fifth, over
            // minutes, on a shared two-core host): the interrupted run is
            // compared with the uninterrupted one as it would have run at
            // the pace the resumed copy ran at.
            let pace = match (fuel_per_ms(&whole.status), fuel_per_ms(&cut.status)) {
                (Some(then), Some(now)) if then > 0.0 && now > 0.0 => now / then,
                _ => 1.0,
            };
            let measured = cut.wall_ms as f64 / whole.wall_ms.max(1) as f64;
            let ratio = measured * pace;
            run.event(format!(
                "provider {what}: {} ms, {ratio:.2}× the uninterrupted run at this run's pace ({measured:.2}× as measured, pace {pace:.2})",
                cut.wall_ms
            ));
            checks.push(Check {
                what: format!("provider {what}: the output equals the uninterrupted run's"),
                ok: cut.output == whole.output && !cut.output.is_empty(),
            });
            checks.push(Check {
                what: format!(
                    "provider {what}: {ratio:.2}× the uninterrupted wall time (at most {MAX_RATIO})"
                ),
                ok: ratio <= MAX_RATIO,
            });
            let (chained, detail) = chain(&cut.status);
            run.event(detail.clone());
            checks.push(Check {
                what: format!("provider {what}: {detail}"),
                ok: chained,
            });
        }
        // The provider killed for good comes back, to be paid for its
        // progress and counted in the audit.
        for i in 1..net.nodes().len() {
            if !net.node(i).is_running() {
                net.restart(i).await?;
                run.event(format!("node-{i} restarted"));
            }
        }
        Ok(self.bare_report(run, checks, net).await)
    }

    async fn finish_run(
        &self,
        client: &agora_node::api::client::Client,
        module: &[u8],
        p: &Params,
        deadline: Duration,
    ) -> anyhow::Result<Outcome> {
        let spec = job::prepare(client, module, None, &input(p), p).await?;
        let id = job::submit(client, &spec).await?;
        let status = finish(client, &id, deadline).await?;
        outcome(client, status).await
    }

    /// Submits the task, and once its requester holds a checkpoint half
    /// way, kills the provider running it (and restarts it, if asked).
    #[allow(clippy::too_many_arguments)] // one run and its settings
    async fn interrupted(
        &self,
        net: &mut Testnet,
        client: &agora_node::api::client::Client,
        module: &[u8],
        p: &Params,
        rounds: u64,
        restart: bool,
        run: &mut Run,
    ) -> anyhow::Result<Outcome> {
        let spec = job::prepare(client, module, None, &input(p), p).await?;
        let id = job::submit(client, &spec).await?;
        let until = Instant::now() + Duration::from_secs(self.task_secs * 3 + 60);
        let half = u32::try_from(rounds / 2).unwrap_or(u32::MAX);
        let (victim, index) = loop {
            let s = client.job(&id).await?;
            let t = &s.tasks[0];
            if let Some(k) = t.checkpoints.last().filter(|k| k.index >= half)
                && let Some(c) = t.copies.iter().find(|c| c.attempt == k.attempt)
            {
                break (c.provider, k.index);
            }
            anyhow::ensure!(
                !s.state.is_terminal(),
                "the job ended before its task was half way"
            );
            anyhow::ensure!(Instant::now() < until, "the task never reached half way");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let i =
            net.nodes().iter().position(|n| n.id() == victim).ok_or_else(|| {
                anyhow::anyhow!("the provider running the task is not a node of the testnet")
            })?;
        net.kill(i)?;
        run.event(format!(
            "node-{i} killed (SIGKILL) after checkpoint {index} of {rounds}"
        ));
        if restart {
            net.restart(i).await?;
            run.event(format!("node-{i} restarted on its data dir"));
        }
        let status = finish(client, &id, Duration::from_secs(self.task_secs * 4 + 60)).await?;
        outcome(client, status).await
    }
}

/// Follows the job to its end like [`job::finish`]; one that does not
/// end in time says what it was waiting for.
async fn finish(
    client: &agora_node::api::client::Client,
    id: &agora_protocol::JobId,
    timeout: Duration,
) -> anyhow::Result<JobStatus> {
    let mut last = None;
    let status = job::follow(client, id, timeout, Duration::from_millis(100), |s| {
        last = Some((
            s.waiting.clone(),
            s.tasks.first().map(|t| (t.phase, t.copies.len())),
        ));
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}; last seen (waiting, phase, copies): {last:?}"))?;
    job::ensure_done(&status)?;
    Ok(status)
}

/// Whether the paid copy's receipt names a checkpoint the requester holds
/// a progress receipt for, and the fuel billed over every copy is the
/// verified run's, once; with the figures of the chain.
fn chain(s: &JobStatus) -> (bool, String) {
    let t = &s.tasks[0];
    let Some(done) = t.copies.iter().find(|c| c.paid.is_some() && c.fuel.is_some()) else {
        return (false, "no copy was paid for a receipt".into());
    };
    let Some(from) = done.resumed else {
        return (false, "the paid copy did not resume from a checkpoint".into());
    };
    let Some(k) = t.checkpoints.iter().find(|k| k.id == from) else {
        return (
            false,
            format!(
                "the paid copy resumed from {}, which no progress receipt named",
                short(&from)
            ),
        );
    };
    let total = t.fuel.map_or(0, |f| f.0);
    let billed: Vec<String> = t
        .copies
        .iter()
        .filter_map(|c| c.billed_fuel.map(|f| format!("attempt {}: {}", c.attempt, f.0)))
        .collect();
    let sum: u64 = t.copies.iter().filter_map(|c| c.billed_fuel).map(|f| f.0).sum();
    (
        sum == total,
        format!(
            "the receipt resumed from checkpoint {} of attempt {} (fuel {} of {total}); fuel billed {} ({}), {}",
            k.index,
            k.attempt,
            k.fuel.0,
            sum,
            billed.join(", "),
            if sum == total { "once" } else { "NOT once" }
        ),
    )
}

/// Fuel per millisecond of the verified copy's run, from the checkpoint it
/// resumed from if any: how fast this machine ran the task then.
fn fuel_per_ms(s: &JobStatus) -> Option<f64> {
    let t = s.tasks.first()?;
    let c = t.copies.iter().find(|c| c.paid.is_some() && c.fuel.is_some())?;
    let from = match c.resumed {
        Some(id) => t.checkpoints.iter().find(|k| k.id == id)?.fuel.0,
        None => 0,
    };
    let ms = c.exec_ms.filter(|&ms| ms > 0)?;
    Some(c.fuel?.0.saturating_sub(from) as f64 / ms as f64)
}

fn short(id: &ContentId) -> String {
    id.to_string()[..12].to_owned()
}

async fn outcome(client: &agora_node::api::client::Client, status: JobStatus) -> anyhow::Result<Outcome> {
    let output = job::outputs(client, &status.id)
        .await?
        .into_iter()
        .next()
        .map(|(_, bytes)| bytes)
        .unwrap_or_default();
    Ok(Outcome {
        wall_ms: status.wall_ms,
        output,
        status,
    })
}

/// Fuel a sample takes, about (49 measured).
const FUEL_PER_SAMPLE: u64 = 50;

/// The one task's input (the example ignores it), with the fuel it is
/// expected to take.
fn input(p: &Params) -> Vec<TaskInput> {
    vec![TaskInput {
        name: "pi".into(),
        bytes: b"\n".to_vec(),
        estimate: Some(p.fuel / 2),
    }]
}

/// The job: `rounds` rounds of `samples`, fuel for twice what it takes,
/// one copy, a fixed seed.
fn params(rounds: u64, samples: u64, deadline: Duration) -> Params {
    Params {
        args: vec![rounds.to_string(), samples.to_string()],
        fuel: rounds
            .saturating_mul(samples)
            .saturating_mul(2 * FUEL_PER_SAMPLE)
            .max(1_000_000_000),
        deadline,
        seed: 7,
        ..Params::default()
    }
}
