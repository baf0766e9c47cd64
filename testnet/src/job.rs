//! A job through a node's API: upload the module and the inputs, submit,
//! follow to the end, fetch the outputs, and summarise what the job status
//! says about placement, verification and payment.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use agora_node::api::client::Client;
use agora_node::api::{JobStatus, SubmitRequest};
use agora_node::market::job::{InputSpec, JobSpec, JobState, Strategy};
use agora_protocol::units::{Bytes, Fuel, Price};
use agora_protocol::{ContentId, JobId, NodeId};
use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::workload::TaskInput;

/// Uploads in flight at once.
const UPLOADS: usize = 8;

/// A job's settings besides its module and inputs.
#[derive(Debug, Clone)]
pub struct Params {
    /// Arguments of every task.
    pub args: Vec<String>,
    /// Fuel limit per task.
    pub fuel: u64,
    /// Memory limit per task.
    pub memory: Bytes,
    /// Time a task may take from placement to receipt.
    pub deadline: Duration,
    /// Highest price, credits per CU-second.
    pub max_price: Price,
    /// Distinct providers per task.
    pub replicas: u8,
    /// Fraction of tasks the requester re-executes.
    pub spot_check: f64,
    /// The job's seed.
    pub seed: u64,
    /// How providers are chosen.
    pub strategy: Strategy,
    /// Largest output per task (default: the market's, 16 MiB).
    pub max_output: Option<Bytes>,
    /// Interactive or batch.
    pub class: agora_protocol::market::LatencyClass,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            args: Vec::new(),
            fuel: 10_000_000_000,
            memory: Bytes::mib(64),
            deadline: Duration::from_secs(60),
            max_price: Price(1_000_000),
            replicas: 1,
            spot_check: 0.0,
            seed: 1,
            strategy: Strategy::Scored,
            max_output: None,
            class: agora_protocol::market::LatencyClass::Batch,
        }
    }
}

/// Uploads `module` (and `reduce`) and every input to the node, and returns
/// the job spec that refers to them.
pub async fn prepare(
    client: &Client,
    module: &[u8],
    reduce: Option<&[u8]>,
    inputs: &[TaskInput],
    params: &Params,
) -> anyhow::Result<JobSpec> {
    let m = client
        .put_content(module.to_vec())
        .await
        .context("cannot upload the module")?;
    let r = match reduce {
        Some(bytes) => Some(
            client
                .put_content(bytes.to_vec())
                .await
                .context("cannot upload the reduce module")?
                .id,
        ),
        None => None,
    };
    let refs: Vec<_> = futures::stream::iter(inputs.iter().map(|i| client.put_content(i.bytes.clone())))
        .buffered(UPLOADS)
        .try_collect()
        .await
        .context("cannot upload the task inputs")?;
    Ok(JobSpec {
        module: m.id,
        module_size: Bytes(m.size),
        reduce: r,
        dataset: None,
        inputs_from: None,
        inputs: inputs
            .iter()
            .zip(refs)
            .map(|(i, c)| InputSpec {
                name: i.name.clone(),
                id: c.id,
                size: Bytes(c.size),
                estimate: i.estimate.map(Fuel),
            })
            .collect(),
        args: params.args.clone(),
        reduce_args: Vec::new(),
        fuel: Fuel(params.fuel),
        estimate: None,
        memory: params.memory,
        deadline: params.deadline,
        max_price: params.max_price,
        replicas: params.replicas,
        domain: None,
        spot_check: params.spot_check,
        max_energy: None,
        seed: params.seed,
        strategy: params.strategy,
        max_output: params.max_output,
        max_failures: 0,
        ttl: None,
        select: Vec::new(),
        class: params.class,
        energy_budget: None,
    })
}

/// Submits a prepared job; returns its id.
pub async fn submit(client: &Client, spec: &JobSpec) -> anyhow::Result<JobId> {
    let r = client
        .submit(&SubmitRequest {
            spec: spec.clone(),
            dry_run: false,
        })
        .await
        .context("the node refused the job")?;
    r.id.context("the node answered without a job id")
}

/// Submits a prepared job as one call (`POST /v1/jobs?wait_ms=`): its id
/// and its status once it has ended, or as it stands after `wait`.
pub async fn call(client: &Client, spec: &JobSpec, wait: Duration) -> anyhow::Result<(JobId, JobStatus)> {
    let r = client
        .submit_waiting(
            &SubmitRequest {
                spec: spec.clone(),
                dry_run: false,
            },
            wait,
            true,
        )
        .await
        .context("the node refused the job")?;
    let id = r.id.context("the node answered without a job id")?;
    let status = r.status.context("the node answered without the job's status")?;
    Ok((id, *status))
}

/// Polls the job every `poll` until it is done or failed, calling `seen`
/// with every status; fails after `timeout`.
pub async fn follow(
    client: &Client,
    id: &JobId,
    timeout: Duration,
    poll: Duration,
    mut seen: impl FnMut(&JobStatus),
) -> anyhow::Result<JobStatus> {
    let started = Instant::now();
    loop {
        let s = client.job(id).await.context("cannot read the job's status")?;
        seen(&s);
        if s.state.is_terminal() {
            return Ok(s);
        }
        if started.elapsed() > timeout {
            bail!(
                "job {id} did not finish within {timeout:?} ({} of {} tasks verified)",
                s.counts.verified,
                s.total
            );
        }
        tokio::time::sleep(poll).await;
    }
}

/// Follows the job (every 100 ms, for at most `timeout`) to its end, and
/// fails unless it is done.
pub async fn finish(client: &Client, id: &JobId, timeout: Duration) -> anyhow::Result<JobStatus> {
    let status = follow(client, id, timeout, Duration::from_millis(100), |_| {}).await?;
    ensure_done(&status)?;
    Ok(status)
}

/// Prepares, submits and [`finish`]es a job (within 180 s): its id and
/// its final status.
pub async fn run(
    client: &Client,
    module: &[u8],
    reduce: Option<&[u8]>,
    inputs: &[TaskInput],
    params: &Params,
) -> anyhow::Result<(JobId, JobStatus)> {
    let spec = prepare(client, module, reduce, inputs, params).await?;
    let id = submit(client, &spec).await?;
    let status = finish(client, &id, Duration::from_secs(180)).await?;
    Ok((id, status))
}

/// Waits for the job's end like [`follow`], but polls the cheap job list
/// (`GET /v1/jobs`) instead of the full status, whose size grows with the
/// tasks: a benchmark must not load the requester it measures. Returns the
/// full status once the job has ended.
pub async fn wait_quietly(
    client: &Client,
    id: &JobId,
    timeout: Duration,
    poll: Duration,
) -> anyhow::Result<JobStatus> {
    let started = Instant::now();
    loop {
        let jobs = client.jobs().await.context("cannot list the jobs")?;
        let j = jobs
            .iter()
            .find(|j| j.id == *id)
            .with_context(|| format!("job {id} is not in the node's list"))?;
        if j.state.is_terminal() {
            return client.job(id).await.context("cannot read the job's status");
        }
        if started.elapsed() > timeout {
            bail!(
                "job {id} did not finish within {timeout:?} ({} of {} tasks verified)",
                j.verified,
                j.tasks
            );
        }
        tokio::time::sleep(poll).await;
    }
}

/// Of a job's verified copies, how many ran on `nodes`, and how many
/// there are in all.
pub fn verified_on(s: &JobStatus, nodes: &std::collections::HashSet<NodeId>) -> (usize, usize) {
    let on: usize = s
        .providers
        .iter()
        .filter(|p| nodes.contains(&p.peer_id))
        .map(|p| p.verified)
        .sum();
    (on, s.providers.iter().map(|p| p.verified).sum())
}

/// Whether a finished job is done; otherwise an error with its reason.
pub fn ensure_done(s: &JobStatus) -> anyhow::Result<()> {
    match s.state {
        JobState::Done => Ok(()),
        _ => bail!(
            "job {} ended {:?}: {}",
            s.id,
            s.state,
            s.error.as_deref().unwrap_or("no reason given")
        ),
    }
}

/// Downloads every task's verified output, in task order.
pub async fn outputs(client: &Client, id: &JobId) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let r = client.result(id).await.context("cannot read the job's result")?;
    let fetches = r.outputs.iter().map(|o| async move {
        let Some(cid) = o.id else {
            bail!("task {} has no output", o.name);
        };
        let bytes = client
            .get_content(&cid)
            .await
            .with_context(|| format!("cannot download the output of {}", o.name))?;
        Ok((o.name.clone(), bytes))
    });
    futures::stream::iter(fetches)
        .buffered(UPLOADS)
        .try_collect()
        .await
}

/// Compares outputs with the expected ones; returns the mismatches.
pub fn compare(got: &[(String, Vec<u8>)], expected: &[Vec<u8>]) -> Vec<String> {
    let mut bad = Vec::new();
    if got.len() != expected.len() {
        bad.push(format!("{} outputs, expected {}", got.len(), expected.len()));
    }
    for ((name, g), e) in got.iter().zip(expected) {
        if g != e {
            bad.push(format!(
                "{name}: got {:?}, expected {:?}",
                String::from_utf8_lossy(&g[..g.len().min(80)]),
                String::from_utf8_lossy(&e[..e.len().min(80)])
            ));
        }
    }
    bad
}

/// What one provider did for a job.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProviderWork {
    /// Copies accepted (and paid).
    pub accepted: usize,
    /// Copies that failed or were found wrong.
    pub failed: usize,
    /// Copies found wrong.
    pub wrong: usize,
    /// Credits paid to it, micro-credits.
    pub paid_micros: u64,
    /// Fuel of its accepted copies.
    pub fuel: u64,
}

/// What a job's status says about verification and placement.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    /// Tasks.
    pub tasks: usize,
    /// Tasks verified.
    pub verified: usize,
    /// Tasks failed.
    pub failed: usize,
    /// Replication factor asked for.
    pub replicas: u8,
    /// Tasks whose accepted output at least two copies agree on.
    pub agreed_by_replicas: usize,
    /// Copies whose output equals the accepted one.
    pub agreeing_copies: usize,
    /// Tasks the requester re-executed itself.
    pub spot_checked: usize,
    /// Copies found wrong (wrong results caught).
    pub wrong_caught: usize,
    /// Backup copies started for stragglers.
    pub backups: usize,
    /// Copies that failed (declined, unreachable, overdue, wrong).
    pub failed_copies: usize,
    /// Why copies failed, with how many failed so.
    pub failure_reasons: std::collections::BTreeMap<String, usize>,
    /// Credits paid, micro-credits.
    pub spent_micros: u64,
    /// Fuel of the accepted outcomes, summed over tasks.
    pub fuel: u64,
    /// Fuel of the largest task.
    pub max_task_fuel: u64,
    /// Wall time the node recorded, ms.
    pub wall_ms: u64,
    /// Per provider.
    #[serde(skip)]
    pub providers: HashMap<NodeId, ProviderWork>,
}

/// Summarises a job status.
pub fn outcome(s: &JobStatus) -> Outcome {
    let mut o = Outcome {
        tasks: s.total,
        verified: s.counts.verified,
        failed: s.counts.failed,
        replicas: s.replicas,
        spent_micros: s.spent.0,
        wall_ms: s.wall_ms,
        ..Outcome::default()
    };
    for t in &s.tasks {
        let accepted: Option<ContentId> = t.output;
        let agreeing = t
            .copies
            .iter()
            .filter(|c| c.output.is_some() && c.output == accepted && !c.wrong)
            .count();
        o.agreeing_copies += agreeing;
        if agreeing >= 2 {
            o.agreed_by_replicas += 1;
        }
        if t.spot_checked {
            o.spot_checked += 1;
        }
        let f = t.fuel.map_or(0, |f| f.0);
        o.fuel += f;
        o.max_task_fuel = o.max_task_fuel.max(f);
        for c in &t.copies {
            let w = o.providers.entry(c.provider).or_default();
            if c.backup {
                o.backups += 1;
            }
            if c.wrong {
                o.wrong_caught += 1;
                w.wrong += 1;
            }
            if c.wrong || c.state.starts_with("failed") {
                o.failed_copies += 1;
                w.failed += 1;
                let why = if c.wrong {
                    "wrong result".to_owned()
                } else {
                    c.state
                        .trim_start_matches("failed")
                        .trim_start_matches(':')
                        .trim()
                        .to_owned()
                };
                *o.failure_reasons.entry(why).or_default() += 1;
            }
            if let Some(p) = c.paid {
                w.accepted += 1;
                w.paid_micros += p.0;
                w.fuel += c.fuel.map_or(0, |f| f.0);
            }
        }
    }
    o
}
