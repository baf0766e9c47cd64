//! Part 5: a provider behind NAT, relayed and then direct.
//!
//! Needs network namespaces and nftables (root, `ip`, `nft`): without them
//! the part is skipped and says why. Three domains on the namespace
//! testnet, two of them behind their own NAT router (`Lab::with_nat`):
//!
//! * `eu/pub`: a public node, not providing: the bootstrap peer and the
//!   relay;
//! * `eu/home1`: the requester, behind the first router;
//! * `eu/home2`: the provider, behind the second router. Neither home can
//!   dial the other: every connection between them is first relayed by
//!   the public node.
//!
//! Figures, each from the requester's client clock:
//!
//! * `nat_join_ms`: from the moment the provider's process is started
//!   until a one-task job submitted at that moment is done. It covers the
//!   provider finding out it is private, reserving a relay slot, and its
//!   relayed address reaching the requester through the domain summaries.
//! * `e2e_relayed_p50_ms`: one-task no-op jobs, one after the other, to a
//!   provider with `hole_punching = false`: every byte takes two hops.
//! * `e2e_direct_p50_ms`: the same jobs to a second provider in the same
//!   home with hole punching on, once a hole has been punched to it (the
//!   relayed connection is then closed).
//! * Hole punching attempts: the requester is stopped and started again
//!   `rounds` times and runs one job each time, so each round opens a new
//!   relayed connection through new NAT mappings; the provider counts the
//!   upgrades that succeeded and failed (`agora_holes_punched_total`,
//!   `agora_holes_failed_total`).
//! * The same rounds (at most 5) again on a second lab whose routers are
//!   symmetric (a random port per connection, `Lab::with_symmetric_nat`):
//!   no hole can be punched there, and every job must still be done
//!   through the relay.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agora_node::api::client::Client;
use agora_node::market::job::JobSpec;
use anyhow::{Context, bail};

use crate::artifacts::Modules;
use crate::job::{self, Params};
use crate::netns::{self, Lab, Shaping};
use crate::process::{NodeSpec, Testnet};
use crate::report::percentile;
use crate::workload::noop;

/// Timed jobs of each path.
const JOBS: usize = 30;

/// What the NAT part measured.
#[derive(Debug, Clone)]
pub(super) struct NatSamples {
    /// Why the part was skipped or failed, if it was or did.
    pub skipped: Option<String>,
    /// Provider start to its first task done, ms.
    pub join_ms: f64,
    /// One-task jobs over the relay, ms, sorted.
    pub relayed_ms: Vec<f64>,
    /// The same once a hole was punched, ms, sorted.
    pub direct_ms: Vec<f64>,
    /// Relayed connections the provider upgraded to direct ones.
    pub punched: u64,
    /// Upgrades that failed.
    pub failed: u64,
    /// Behind symmetric NATs: upgrades that succeeded and failed, and the
    /// one-task jobs done (one per round).
    pub symmetric: (u64, u64, usize),
}

impl Default for NatSamples {
    /// Not run.
    fn default() -> NatSamples {
        NatSamples {
            skipped: None,
            join_ms: f64::NAN,
            relayed_ms: Vec::new(),
            direct_ms: Vec::new(),
            punched: 0,
            failed: 0,
            symmetric: (0, 0, 0),
        }
    }
}

impl NatSamples {
    fn skipped(why: &str) -> NatSamples {
        eprintln!("nodes behind NAT: skipped: {why}");
        NatSamples {
            skipped: Some(format!("skipped: {why}")),
            ..NatSamples::default()
        }
    }

    /// The part failed with `e`: no figures, and why.
    pub(super) fn failed(e: &anyhow::Error) -> NatSamples {
        eprintln!("nodes behind NAT: failed: {e:#}");
        NatSamples {
            skipped: Some(format!("failed: {e:#}")),
            ..NatSamples::default()
        }
    }
}

/// Runs the part in `dir` (see the module docs); `rounds` restarts of the
/// requester count hole punching attempts.
pub(super) async fn measure(
    agora: PathBuf,
    dir: &Path,
    modules: &Modules,
    rounds: usize,
) -> anyhow::Result<NatSamples> {
    if !netns::available() {
        return Ok(NatSamples::skipped("network namespaces need root and iproute2"));
    }
    if !netns::nft_available() {
        return Ok(NatSamples::skipped(
            "NAT routers need the nft tool (apt-get install nftables)",
        ));
    }
    let lab = Lab::new(Shaping::default())?.with_nat(2)?;
    let mut net = Testnet::new(agora.clone(), &dir.join("ports-kept"))?.with_lab(lab);
    let result = run(&mut net, modules, rounds).await;
    net.stop();
    drop(net);
    let mut samples = result?;
    let lab = Lab::new(Shaping::default())?.with_nat(2)?.with_symmetric_nat();
    let mut net = Testnet::new(agora, &dir.join("symmetric"))?.with_lab(lab);
    let result = symmetric(&mut net, modules, rounds.min(5)).await;
    net.stop();
    samples.symmetric = result?;
    Ok(samples)
}

/// Behind symmetric NATs: `rounds` restarts of the requester, one job
/// each; returns the provider's upgrades that succeeded and failed, and
/// the jobs done.
async fn symmetric(net: &mut Testnet, modules: &Modules, rounds: usize) -> anyhow::Result<(u64, u64, usize)> {
    eprintln!("nodes behind symmetric NAT (a random port per connection): {rounds} rounds");
    let spec = homes(net, modules, Some(NodeSpec::provider("eu/home2").with_slots(1))).await?;
    let provider = net.node(2).client.clone();
    let mut seed = 0;
    let mut done = 0;
    for r in 0..rounds {
        if r > 0 {
            net.stop_node(1);
            net.restart(1).await?;
        }
        let requester = net.node(1).client.clone();
        until_done(
            &requester,
            &spec,
            &mut seed,
            Instant::now() + Duration::from_secs(180),
        )
        .await
        .with_context(|| format!("round {r}: no task done through the relay"))?;
        done += 1;
        // Give an attempt the time it takes where it can succeed.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (punched, failed) = holes(&provider).await;
    eprintln!("  {done} of {rounds} jobs done; hole punching {punched} succeeded, {failed} failed");
    Ok((punched, failed, done))
}

async fn run(net: &mut Testnet, modules: &Modules, rounds: usize) -> anyhow::Result<NatSamples> {
    eprintln!("nodes behind NAT: a public relay, a requester and a provider each behind its own router");
    let spec = homes(net, modules, None).await?;

    // The relayed-only provider: its start to its first task.
    let t = Instant::now();
    let relayed = net
        .start(
            NodeSpec::provider("eu/home2")
                .with_slots(1)
                .with_config("[relay]\nhole_punching = false\n"),
        )
        .await?;
    let requester = net.node(1).client.clone();
    let mut seed = 0;
    until_done(&requester, &spec, &mut seed, t + Duration::from_secs(180))
        .await
        .context("the provider behind NAT got no task within 180 s of its start")?;
    let join_ms = ms(t);
    eprintln!("  the provider behind NAT ran its first task {join_ms:.0} ms after its start");
    let relayed_ms = timed_jobs(&requester, &spec, &mut seed).await?;
    let provider_punched = counter(&net.node(relayed).client, "agora_holes_punched_total").await;
    if provider_punched != 0 {
        bail!("a hole was punched to a provider with hole punching off");
    }
    net.stop_node(relayed);

    // A provider beside it with hole punching on: wait for a direct path.
    let direct = net.start(NodeSpec::provider("eu/home2").with_slots(1)).await?;
    let provider = net.node(direct).client.clone();
    let t = Instant::now();
    while counter(&provider, "agora_holes_punched_total").await == 0 {
        if t.elapsed() > Duration::from_secs(180) {
            bail!("no hole was punched to the second provider within 180 s");
        }
        seed += 1;
        let _ = one_job(&requester, &spec, seed).await;
    }
    let direct_ms = timed_jobs(&requester, &spec, &mut seed).await?;
    eprintln!(
        "  one-task jobs: relayed p50 {:.1} ms, direct p50 {:.1} ms",
        percentile(&relayed_ms, 50.0),
        percentile(&direct_ms, 50.0)
    );

    // Attempts: each restart of the requester opens a new relayed
    // connection through new NAT mappings.
    let (p0, f0) = holes(&provider).await;
    for r in 0..rounds {
        net.stop_node(1);
        net.restart(1).await?;
        let requester = net.node(1).client.clone();
        until_done(
            &requester,
            &spec,
            &mut seed,
            Instant::now() + Duration::from_secs(120),
        )
        .await
        .with_context(|| format!("round {r}: the restarted requester placed no task within 120 s"))?;
        // The upgrade follows the first relayed request within a round trip
        // or two; give it a moment to be counted.
        let t = Instant::now();
        while holes(&provider).await == (p0, f0) && t.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (p1, f1) = holes(&provider).await;
    let (punched, failed) = (p1 - p0, f1 - f0);
    eprintln!(
        "  hole punching over {rounds} restarts of the requester: {punched} succeeded, {failed} failed"
    );
    Ok(NatSamples {
        skipped: None,
        join_ms,
        relayed_ms,
        direct_ms,
        punched,
        failed,
        symmetric: (0, 0, 0),
    })
}

/// Starts the public relay and the requester behind the first router (and
/// `provider`, if given, behind the second), waits until they see each
/// other, and prepares the one-task job the requester submits.
async fn homes(net: &mut Testnet, modules: &Modules, provider: Option<NodeSpec>) -> anyhow::Result<JobSpec> {
    let mut specs = vec![NodeSpec::requester("eu/pub"), NodeSpec::requester("eu/home1")];
    specs.extend(provider);
    net.start_all(specs).await?;
    net.wait_converged(Duration::from_secs(60)).await?;
    let noop = modules.read("noop")?;
    job::prepare(
        &net.node(1).client,
        &noop,
        None,
        &noop::inputs(1),
        &Params::default(),
    )
    .await
}

/// One-task jobs from `client` until one is done (each a new `seed`);
/// an error once `deadline` passes without one.
async fn until_done(
    client: &Client,
    spec: &JobSpec,
    seed: &mut u64,
    deadline: Instant,
) -> anyhow::Result<()> {
    loop {
        *seed += 1;
        if one_job(client, spec, *seed).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no one-task job was done in time");
        }
    }
}

/// One one-task job from `client`; an error if it did not end `done`.
async fn one_job(client: &Client, spec: &JobSpec, seed: u64) -> anyhow::Result<()> {
    let mut spec = spec.clone();
    spec.seed = seed;
    let id = job::submit(client, &spec).await?;
    let status = job::wait_quietly(client, &id, Duration::from_secs(60), Duration::from_millis(5)).await?;
    job::ensure_done(&status)
}

/// [`JOBS`] one-task jobs one after the other, each timed; sorted, ms.
async fn timed_jobs(client: &Client, spec: &JobSpec, seed: &mut u64) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(JOBS);
    for _ in 0..JOBS {
        *seed += 1;
        let t = Instant::now();
        one_job(client, spec, *seed).await.context("a timed job failed")?;
        out.push(ms(t));
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// The provider's hole punching counters: succeeded, failed.
async fn holes(client: &Client) -> (u64, u64) {
    (
        counter(client, "agora_holes_punched_total").await,
        counter(client, "agora_holes_failed_total").await,
    )
}

/// One counter of a node's metrics (0 if it cannot be read).
async fn counter(client: &Client, name: &str) -> u64 {
    let Ok(text) = client.metrics().await else {
        return 0;
    };
    crate::metrics::value(&text, name).map_or(0, |v| v as u64)
}
