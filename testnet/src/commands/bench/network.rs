//! Part 1: latency, throughput and memory of real node processes.
//!
//! A requester and `--nodes` providers in one domain, on loopback. The
//! bench client (this process) talks to the requester's API and keeps its
//! own clock:
//!
//! * **Latency**: one-task no-op jobs one after the other, each timed from
//!   `POST /v1/jobs?wait_ms=` until its answer, which the node sends as
//!   soon as the job is stored and has ended (a call, as a caller wanting
//!   one task's result makes it); the first ten are not counted. The
//!   requester's own
//!   `wall_ms` of each job is kept beside it.
//! * **Throughput**: after a 64-task warm-up job (so that every provider
//!   holds and has compiled the module), one job of `--tasks` no-op tasks
//!   whose inputs were uploaded beforehand: tasks over the wall time from
//!   submission to the end. Beside it, what the rate does not show on a
//!   shared machine: the CPU time all the nodes used per task, and the
//!   share of the machine's time the hypervisor stole meanwhile. Printed
//!   besides: when each quarter of the tasks was verified, what the
//!   providers declined, and how many of the requester's market requests
//!   travelled in batches.
//! * **Memory**: every provider's VmRSS after the jobs, once idle.
//!
//! The testnet is then handed on to the advert part.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agora_node::api::client::Client;
use agora_protocol::JobId;
use anyhow::Context;

use crate::job::{self, Params};
use crate::process::{NodeSpec, Testnet};
use crate::report::{cpu_ticks, percentile, steal_share};
use crate::workload::noop;

/// Latency jobs run before the timed ones.
const WARM_UP_JOBS: usize = 10;

/// Starts a requester and `providers` providers in `dir` and waits until
/// they see each other.
pub(super) async fn start(agora: PathBuf, dir: &Path, providers: usize) -> anyhow::Result<Testnet> {
    let mut net = Testnet::new(agora, dir)?;
    let mut specs = vec![NodeSpec::requester("bench")];
    specs.extend((0..providers).map(|_| NodeSpec::provider("bench")));
    eprintln!("latency and throughput: a requester and {providers} providers");
    net.start_all(specs).await?;
    net.wait_converged(Duration::from_secs(60)).await?;
    Ok(net)
}

/// `jobs` sequential one-task jobs of `module` from node 0 (after a few
/// untimed ones): client-timed and node-timed latencies, sorted, in ms.
/// Each is interactive, as a caller waiting on one task's result states
/// it: the provider answers its order with the receipt (one round trip).
///
/// The timed calls come from a client on a runtime of one thread of its
/// own, as the `agora` command's are: on the bench's shared runtime each
/// call's answer went from the connection's task to the caller's through
/// another thread, a wake-up that is the client's cost, not the node's.
pub(super) async fn latency(
    net: &Testnet,
    module: &[u8],
    jobs: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let input = noop::inputs(1);
    let params = Params {
        class: agora_protocol::market::LatencyClass::Interactive,
        ..Params::default()
    };
    let spec = job::prepare(&net.node(0).client, module, None, &input, &params).await?;
    let endpoint = net.node(0).client.endpoint().clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-latency".into())
        .spawn(move || {
            let run = || -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(timed_calls(Client::new(endpoint), spec, jobs))
            };
            let _ = tx.send(run());
        })
        .context("cannot start the latency client's thread")?;
    let (mut client_ms, mut node_ms) = rx.await.context("the latency client's thread stopped")??;
    client_ms.sort_by(f64::total_cmp);
    node_ms.sort_by(f64::total_cmp);
    eprintln!(
        "  e2e one-task job over {} jobs: p50 {:.2} ms, p99 {:.2} ms (the node's own clock: p50 {:.0} ms)",
        client_ms.len(),
        percentile(&client_ms, 50.0),
        percentile(&client_ms, 99.0),
        percentile(&node_ms, 50.0)
    );
    Ok((client_ms, node_ms))
}

/// The calls [`latency`] times, one after another, with their times.
async fn timed_calls(
    client: Client,
    spec: agora_node::market::job::JobSpec,
    jobs: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let mut client_ms = Vec::new();
    let mut node_ms = Vec::new();
    for i in 0..WARM_UP_JOBS + jobs {
        let mut spec = spec.clone();
        spec.seed = i as u64;
        let t = Instant::now();
        // One request, which the node answers as soon as the job ends.
        let (id, mut status) = job::call(&client, &spec, Duration::from_secs(10)).await?;
        while !status.state.is_terminal() {
            status = client.job_waiting(&id, Duration::from_secs(10), true).await?;
        }
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        job::ensure_done(&status)?;
        if i >= WARM_UP_JOBS {
            client_ms.push(ms);
            node_ms.push(status.wall_ms as f64);
        }
    }
    Ok((client_ms, node_ms))
}

/// What the throughput job measured.
#[derive(Debug, Clone, Copy)]
pub(super) struct Throughput {
    /// Tasks per second, client clock.
    pub rate: f64,
    /// CPU time (user + system) of every node process over the job, per
    /// task, ms.
    pub cpu_ms_per_task: f64,
    /// The share of the machine's CPU time stolen by the hypervisor over
    /// the job.
    pub steal: f64,
}

/// CPU time used so far by every running node process.
fn nodes_cpu(net: &Testnet) -> Duration {
    net.nodes().iter().filter_map(|n| n.cpu_time()).sum()
}

/// One job of `tasks` no-op tasks of `module` from node 0.
pub(super) async fn throughput(net: &Testnet, module: &[u8], tasks: usize) -> anyhow::Result<Throughput> {
    let client = &net.node(0).client;
    let inputs = noop::inputs(tasks);
    let spec = job::prepare(client, module, None, &inputs, &Params::default()).await?;
    warm_up(client, module).await?;
    let cpu = nodes_cpu(net);
    let ticks = cpu_ticks();
    let t = Instant::now();
    let id = job::submit(client, &spec).await?;
    let submitted = t.elapsed();
    let quarters = follow(client, &id, tasks, t).await?;
    let secs = t.elapsed().as_secs_f64();
    let cpu_ms_per_task = nodes_cpu(net).saturating_sub(cpu).as_secs_f64() * 1000.0 / tasks.max(1) as f64;
    let steal = match (ticks, cpu_ticks()) {
        (Some(a), Some(b)) => steal_share(a, b),
        _ => f64::NAN,
    };
    let status = client.job(&id).await?;
    job::ensure_done(&status)?;
    let o = job::outcome(&status);
    let per: Vec<String> = o
        .providers
        .iter()
        .map(|(p, w)| format!("{} {}", net.label(p), w.accepted))
        .collect();
    let rate = tasks as f64 / secs;
    eprintln!(
        "  throughput: {tasks} no-op tasks in {secs:.2} s = {rate:.0} tasks/s (submitted after {} ms, quarters verified at {quarters:?} ms; {})",
        submitted.as_millis(),
        per.join(", ")
    );
    eprintln!(
        "  the nodes used {cpu_ms_per_task:.2} ms of CPU per task; the hypervisor stole {:.0} % of the machine's time meanwhile",
        steal * 100.0
    );
    print_declined(net).await;
    print_batching(client).await;
    print_receipts(net).await;
    Ok(Throughput {
        rate,
        cpu_ms_per_task,
        steal,
    })
}

/// A short job first, so that every provider holds the module and has
/// compiled it (as in the latency runs, compilation is not what is
/// measured).
async fn warm_up(client: &Client, module: &[u8]) -> anyhow::Result<()> {
    let warm = job::prepare(client, module, None, &noop::inputs(64), &Params::default()).await?;
    let warm = job::submit(client, &warm).await?;
    job::ensure_done(
        &job::wait_quietly(client, &warm, Duration::from_secs(60), Duration::from_millis(10)).await?,
    )
}

/// Follows job `id` of `tasks` tasks, submitted at `t`, to its end; returns
/// when each quarter of the tasks was verified (ms after `t`), to show the
/// ramp and the tail.
async fn follow(client: &Client, id: &JobId, tasks: usize, t: Instant) -> anyhow::Result<Vec<u128>> {
    let mut quarters = Vec::new();
    loop {
        let jobs = client.jobs().await?;
        let j = jobs
            .iter()
            .find(|j| &j.id == id)
            .context("the job is not listed")?;
        while quarters.len() < 4 && j.verified * 4 >= tasks * (quarters.len() + 1) {
            quarters.push(t.elapsed().as_millis());
        }
        if j.state.is_terminal() {
            return Ok(quarters);
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(600),
            "the throughput job did not finish in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Prints the providers' declines summed by reason (their
/// `agora_declined_total`), if any.
async fn print_declined(net: &Testnet) {
    let mut declined = BTreeMap::<String, f64>::new();
    for n in net.nodes().iter().filter(|n| n.spec.provide) {
        if let Ok(text) = n.client.metrics().await {
            for (series, v) in crate::metrics::samples(&text) {
                if series.starts_with("agora_declined_total{") {
                    *declined.entry(series.to_owned()).or_default() += v;
                }
            }
        }
    }
    if !declined.is_empty() {
        eprintln!("  providers declined: {declined:?}");
    }
}

/// Prints how the requester sent its market requests: in batches or alone.
async fn print_batching(client: &Client) {
    if let Ok(text) = client.metrics().await {
        let batches = metric(&text, "agora_market_frames_sent_total{kind=\"batch\"}");
        let single = metric(&text, "agora_market_frames_sent_total{kind=\"single\"}");
        let batched = metric(&text, "agora_market_batched_requests_total");
        eprintln!(
            "  the requester sent {batched:.0} market requests in {batches:.0} batches ({:.1} per batch) and {single:.0} alone",
            batched / batches.max(1.0)
        );
        let accepts = metric(&text, "agora_accepts_total");
        let signatures = metric(&text, "agora_accept_signatures_total");
        eprintln!(
            "  its {accepts:.0} acceptances took {signatures:.0} signatures ({:.1} acceptances a signature)",
            accepts / signatures.max(1.0)
        );
    }
}

/// Prints how many signatures the providers' agreements and receipts took
/// (those of a turn, and the receipts of a frame, share one), and how the
/// receipts went: in their orders' answers (one round trip for the task)
/// or as requests of their own. The counters
/// cover the whole run, warm-up and latency jobs included.
async fn print_receipts(net: &Testnet) {
    let (mut sent, mut answered, mut signatures) = (0.0, 0.0, 0.0);
    let (mut agreements, mut agreement_signatures) = (0.0, 0.0);
    for n in net.nodes().iter().filter(|n| n.spec.provide) {
        if let Ok(text) = n.client.metrics().await {
            sent += metric(&text, "agora_receipts_sent_total");
            answered += metric(&text, "agora_receipts_answered_total");
            signatures += metric(&text, "agora_receipt_signatures_total");
            agreements += metric(&text, "agora_agreements_total");
            agreement_signatures += metric(&text, "agora_agreement_signatures_total");
        }
    }
    eprintln!(
        "  the providers signed {agreements:.0} agreements under {agreement_signatures:.0} signatures ({:.1} a signature)",
        agreements / agreement_signatures.max(1.0)
    );
    eprintln!(
        "  and sent {sent:.0} receipts, {answered:.0} of them in their orders' answers, under {signatures:.0} signatures ({:.1} a signature)",
        sent / signatures.max(1.0)
    );
}

/// A sample's value in Prometheus text (0 when absent).
fn metric(text: &str, series: &str) -> f64 {
    crate::metrics::value(text, series).unwrap_or(0.0)
}

/// Every provider's resident memory once idle, MB, sorted: all of it, and
/// its anonymous part. Idle is once each provider has given back what it
/// no longer uses (`agora_memory_trims_total` counts up, at most 30 s;
/// a node without that metric is given 3 s).
pub(super) async fn idle_rss(net: &Testnet) -> (Vec<f64>, Vec<f64>) {
    let providers = || net.nodes().iter().filter(|n| n.spec.provide);
    let trims = async |n: &crate::process::Node| {
        let text = n.client.metrics().await.ok()?;
        crate::metrics::value(&text, "agora_memory_trims_total")
    };
    let mut before = Vec::new();
    for n in providers() {
        before.push(trims(n).await);
    }
    if before.iter().all(Option::is_some) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for (n, b) in providers().zip(&before) {
            while trims(n).await <= *b && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    } else {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v
    };
    let mb = |b: u64| b as f64 / 1e6;
    (
        sorted(providers().filter_map(|n| n.rss_bytes()).map(mb).collect()),
        sorted(providers().filter_map(|n| n.rss_anon_bytes()).map(mb).collect()),
    )
}

/// Blocks on every running node's credit chain (payments settled first).
pub(super) async fn chain_blocks(net: &Testnet) -> anyhow::Result<u64> {
    let b = net.settle(Duration::from_secs(30)).await?;
    if b.outbox > 0 {
        anyhow::bail!("{} payments still not countersigned after 30 s", b.outbox);
    }
    let mut blocks = 0;
    for n in net.nodes().iter().filter(|n| n.is_running()) {
        blocks += n.client.ledger(0).await?.seq;
    }
    Ok(blocks)
}

/// The bytes of chain one paid task adds when each payment pays `per`
/// receipts (one block on each side: the requester's pay block and the
/// provider's receive block, which carries the pay block whole), both
/// signed envelopes, encoded as they are stored and sent, shared by the
/// `per` tasks. `per` is what the run showed: two blocks per payment.
pub(super) fn chain_bytes_per_task(blocks_per_task: f64) -> f64 {
    let per = (2.0 / blocks_per_task.max(1e-9))
        .round()
        .clamp(1.0, agora_protocol::chain::MAX_VOUCHERS as f64);
    chain_bytes_per_payment(per as usize) as f64 / per
}

/// The bytes of the two blocks of one payment of `n` receipts.
fn chain_bytes_per_payment(n: usize) -> usize {
    use agora_protocol::chain::{Block, Entry};
    use agora_protocol::settlement::Voucher;
    use agora_protocol::units::{Fuel, Price, Timestamp};
    use agora_protocol::{ContentId, Encode, Envelope, JobId, Keypair, MessageId, Nonce, Payload, TaskId};
    let requester = Keypair::from_secret([1; 32]);
    let provider = Keypair::from_secret([2; 32]);
    let now = Timestamp::from_system(std::time::SystemTime::now());
    let fuel = Fuel(1_000_000);
    let price = Price(1_000);
    let voucher = Voucher {
        receipt: MessageId([3; 32]),
        agreement: MessageId([4; 32]),
        task: TaskId::new(JobId([5; 16]), 12_345),
        provider: provider.node_id(),
        fuel,
        price,
        amount: price.cost(fuel),
    };
    let seal = |k: &Keypair, b: &Block| Envelope::seal(k, b, now, Block::MAX_LIFETIME, Nonce([6; 16]));
    let entry = match n {
        0 | 1 => Entry::Pay(voucher),
        _ => Entry::PayMany(
            (0..n)
                .map(|i| Voucher {
                    receipt: MessageId([i as u8; 32]),
                    ..voucher.clone()
                })
                .collect(),
        ),
    };
    let pay = Block {
        seq: 1_000,
        prev: ContentId([7; 32]),
        entry,
    };
    let Ok(pay) = seal(&requester, &pay) else { return 0 };
    let receive = Block {
        seq: 1_000,
        prev: ContentId([8; 32]),
        entry: Entry::Receive(pay.clone()),
    };
    let Ok(receive) = seal(&provider, &receive) else {
        return 0;
    };
    pay.to_bytes().len() + receive.to_bytes().len()
}
