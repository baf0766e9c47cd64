//! Part 6: compute routing on a network with real delays.
//!
//! Needs network namespaces (root, `ip`): without them the part is skipped
//! and says why. The namespace testnet with the lab's own delays (no
//! netem): a requester in `eu/a`; two providers in `eu/b`, 2 ms away each
//! way (a 5 ms round trip); two in `us/a`, 40 ms away (80 ms). One slot
//! each, equal capacity; one provider of each domain declares 5 mJ per
//! CU·s and the other 40.
//!
//! * `near_share`: one job of [`INTERACTIVE_TASKS`] interactive no-op tasks
//!   with a 20 ms deadline, after a warm-up job: the share of verified
//!   copies that ran in `eu/b`.
//! * `interactive_p99_ms`: a batch job of prime ranges (about a second of
//!   CPU a task) fills every provider; while it runs, [`PROBES`] one-task
//!   interactive jobs, one after the other, each timed from submit until
//!   `done` on the client's clock (deadline [`INTERACTIVE_DEADLINE`],
//!   `interactive_deadline_ms`). The batch job must then finish with every
//!   count right, or the part fails.
//! * `energy_j`: a job of 8 prime ranges (about 310 CU·s each) under an
//!   energy budget of 40 J (5 J a task): the joules its status reports. The
//!   budget keeps it off the 40 mJ/CU·s providers (12 J a task); their
//!   rates reach the requester only in their offers (it holds no advert
//!   of another domain's nodes).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agora_protocol::market::LatencyClass;
use anyhow::{Context, bail};

use crate::artifacts::Modules;
use crate::job::{self, Params};
use crate::netns::{self, Lab, Shaping};
use crate::process::{NodeSpec, Testnet};
use crate::workload::{noop, primes};

/// Tasks of the near-share job.
const INTERACTIVE_TASKS: usize = 40;
/// One-task interactive jobs timed while batch work fills the providers.
const PROBES: usize = 20;
/// Their deadline.
pub(super) const INTERACTIVE_DEADLINE: Duration = Duration::from_secs(3);
/// The energy budget of the last job, J.
pub(super) const ENERGY_BUDGET_J: f64 = 40.0;

/// What the routing part measured.
#[derive(Debug, Clone)]
pub(super) struct RoutingSamples {
    /// Why the part was skipped or failed, if it was or did.
    pub skipped: Option<String>,
    /// Share of the interactive copies run in the near domain.
    pub near_share: f64,
    /// One-task interactive jobs under batch load, submit to done, ms,
    /// sorted.
    pub interactive_ms: Vec<f64>,
    /// The budgeted job's joules.
    pub energy_j: f64,
}

impl Default for RoutingSamples {
    /// Not run.
    fn default() -> RoutingSamples {
        RoutingSamples {
            skipped: None,
            near_share: f64::NAN,
            interactive_ms: Vec::new(),
            energy_j: f64::NAN,
        }
    }
}

impl RoutingSamples {
    fn skipped(why: &str) -> RoutingSamples {
        eprintln!("routing: skipped: {why}");
        RoutingSamples {
            skipped: Some(format!("skipped: {why}")),
            ..RoutingSamples::default()
        }
    }

    /// The part failed with `e`: no figures, and why.
    pub(super) fn failed(e: &anyhow::Error) -> RoutingSamples {
        eprintln!("routing: failed: {e:#}");
        RoutingSamples {
            skipped: Some(format!("failed: {e:#}")),
            ..RoutingSamples::default()
        }
    }
}

/// Runs the part in `dir` (see the module docs).
pub(super) async fn measure(agora: PathBuf, dir: &Path, modules: &Modules) -> anyhow::Result<RoutingSamples> {
    if !netns::available() {
        return Ok(RoutingSamples::skipped(
            "network namespaces need root and iproute2",
        ));
    }
    let mut shaping = Shaping::default();
    shaping.add_delay("eu/a:eu/b=2ms")?;
    shaping.add_delay("eu/a:us/a=40ms")?;
    let lab = Lab::new(shaping)?;
    let mut net = Testnet::new(agora, dir)?.with_lab(lab);
    let result = run(&mut net, modules).await;
    net.stop();
    result
}

async fn run(net: &mut Testnet, modules: &Modules) -> anyhow::Result<RoutingSamples> {
    let energy = |rate: u64| format!("[provider]\nenergy = {rate}\n");
    net.start_all(vec![
        NodeSpec::requester("eu/a"),
        NodeSpec::provider("eu/b").with_slots(1).with_config(&energy(5)),
        NodeSpec::provider("eu/b").with_slots(1).with_config(&energy(40)),
        NodeSpec::provider("us/a").with_slots(1).with_config(&energy(5)),
        NodeSpec::provider("us/a").with_slots(1).with_config(&energy(40)),
    ])
    .await?;
    net.wait_converged(Duration::from_secs(60)).await?;
    net.print_links();
    let near: HashSet<_> = [net.node(1).id(), net.node(2).id()].into();
    let requester = net.node(0).client.clone();
    let noop_wasm = modules.read("noop")?;
    job::run(&requester, &noop_wasm, None, &noop::inputs(8), &Params::default()).await?;

    eprintln!("routing: {INTERACTIVE_TASKS} interactive tasks with a 20 ms deadline");
    let interactive = Params {
        deadline: Duration::from_millis(20),
        class: LatencyClass::Interactive,
        ..Params::default()
    };
    let (_, status) = job::run(
        &requester,
        &noop_wasm,
        None,
        &noop::inputs(INTERACTIVE_TASKS),
        &interactive,
    )
    .await?;
    let (on_near, all) = job::verified_on(&status, &near);
    let near_share = on_near as f64 / all.max(1) as f64;

    eprintln!("routing: {PROBES} one-task interactive jobs while batch work fills every provider");
    let primes_wasm = modules.read("primes")?;
    let ranges = primes::even(16, 1_000_000_000, 200_000);
    let batch = Params {
        fuel: 50_000_000_000,
        ..Params::default()
    };
    let spec = job::prepare(
        &requester,
        &primes_wasm,
        None,
        &primes::trial_inputs(&ranges),
        &batch,
    )
    .await?;
    let batch_id = job::submit(&requester, &spec).await?;
    let t = Instant::now();
    loop {
        let s = requester.job_summary(&batch_id).await?;
        if s.counts.running >= 4 {
            break;
        }
        if s.state.is_terminal() || t.elapsed() > Duration::from_secs(60) {
            bail!("the batch job never filled the four providers: {:?}", s.counts);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let probe = Params {
        deadline: INTERACTIVE_DEADLINE,
        class: LatencyClass::Interactive,
        ..Params::default()
    };
    let mut interactive_ms = Vec::with_capacity(PROBES);
    for i in 0..PROBES {
        let mut params = probe.clone();
        params.seed = 1000 + i as u64;
        let started = Instant::now();
        let (_, s) = job::run(&requester, &noop_wasm, None, &noop::inputs(1), &params).await?;
        if s.counts.verified != 1 {
            bail!("interactive job {i} ended {:?}", s.error);
        }
        interactive_ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    interactive_ms.sort_by(f64::total_cmp);
    job::finish(&requester, &batch_id, Duration::from_secs(300)).await?;
    let outputs = job::outputs(&requester, &batch_id).await?;
    for ((lo, hi), (_, got)) in ranges.iter().zip(&outputs) {
        if got != &primes::output(*lo, *hi) {
            bail!("the batch job's output for [{lo}, {hi}) is wrong");
        }
    }

    eprintln!("routing: a job under an energy budget");
    // About 310 CU·s a task: 1.6 J at 5 mJ/CU·s, 12 J at 40; 5 J a task.
    let inputs = primes::trial_inputs(&primes::even(8, 1_000_000_000, 20_000));
    let mut spec = job::prepare(&requester, &primes_wasm, None, &inputs, &Params::default()).await?;
    spec.energy_budget = Some(ENERGY_BUDGET_J);
    let id = job::submit(&requester, &spec).await?;
    let status = job::finish(&requester, &id, Duration::from_secs(120))
        .await
        .context("the budgeted job")?;
    if status.energy_unknown > 0 {
        bail!(
            "{} copies of the budgeted job ran at an unknown rate",
            status.energy_unknown
        );
    }
    Ok(RoutingSamples {
        skipped: None,
        near_share,
        interactive_ms,
        energy_j: status.energy_j,
    })
}
