//! `agora-testnet chaos SCENARIO`: a fault during a job, and the checks
//! that the job still came out right and the ledger still balances.
//!
//! Every scenario runs a requester and four providers (CPU share 0.4, one
//! slot each: 1.6 cores in all) and a job of prime counts by trial division
//! (heavy on fuel, light on numbers, so the expected counts are computed
//! here in an instant). It passes only if the job is done, every output
//! equals the expected one byte for byte, and, once every voucher is
//! delivered, the balances sum to the genesis grants.
//!
//! * `kill-provider`: SIGKILL the provider with the most running tasks once
//!   a quarter of the job is verified; afterwards restart it from its data
//!   dir so that its balance can be counted.
//! * `partition`: cut off the domain running the most tasks (`us/a` or
//!   `eu/b`; the requester is alone in `eu/a`) for some seconds, then heal
//!   it. With `--netns` this is a **real network partition**: the router
//!   between the domains drops every packet to and from the domain's
//!   subnet, and the cut-off nodes keep computing but cannot be reached.
//!   Without namespaces it is emulated by **process suspension**
//!   (SIGSTOP, then SIGCONT): the suspended nodes' connections stay open,
//!   their kernels still accept bytes, and they neither compute nor answer
//!   until resumed.
//! * `slow-node`: one provider runs 4× slower than it advertises
//!   (`--slowdown 4`); placement should learn this from its receipts and
//!   give it fewer tasks. Its share is reported, not required.
//! * `cheater`: one provider returns wrong outputs (`--cheat-rate 1`) and the
//!   job runs each task on two providers: a wrong result must never be
//!   accepted, the cheater must not be paid, and the requester must ban it.
//! * `freeloader`: a second requester, granted like the first, submits a
//!   long job and never pays (`--never-pay`). The providers give a receipt
//!   3 s after its task's due time (`credit.pay_within = "3s"`); once more
//!   than `credit.max_unpaid` (3) of its receipts are late at a provider,
//!   that provider refuses it: its job must stop making progress while the
//!   honest job finishes, and every provider's balance must be exactly its
//!   grant plus what the honest requester paid it.
//! * `sybil`: `--sybils` fresh keys (50) without grants each submit a job
//!   alongside the honest one. A provider works for such a key only within
//!   the credit line it extends to strangers (`credit.line`, 0.1 credits)
//!   (its work, at most its fuel limits' worth); a key with nothing on its
//!   chain cannot pay. One of them is first paid 1,000 credits by a stranger
//!   that never held any (see `mint.rs`): it must get no more than the
//!   others, and a provider's audit must count those credits as unbacked.
//!   The honest job must finish.
//! * `endless-tasks`: a second requester asks for spinning tasks with a fuel
//!   limit of 2^64 − 1 and a deadline 114 years away (no provider may take
//!   one), then for four it can afford, which take every slot: cancelling
//!   its job must stop them within a second, and an honest job right after
//!   must run as usual.
//! * `fork`: the requester forks its credit chain (`--fork-payments`): it
//!   pays a second provider with another block at the position of its last
//!   payment, spending the same credits twice. A provider finds the fork
//!   when it next reads the requester's chain, publishes the two signed
//!   blocks as a proof, and every node must know it within 10 s; after
//!   that no provider runs anything more for the forker.
//!
//! * `disk-fill`: a second requester's tasks write as much output as they
//!   can; the providers' owners cap output, stored content and retention
//!   (see `disk.rs`).
//! * `relay-loss` (`--netns --nat 2`): the relay that providers behind NAT
//!   are reached through is killed mid-job (see `relay.rs`).
//! * `long-task`: one long task that checkpoints, its provider killed half
//!   way, then restarted half way; it must go on from its last checkpoint
//!   with the output of an uninterrupted run (see `long_task.rs`).
//! * `holder-dies`: a node fetches a `--mib` blob from two holders; one is
//!   killed a third of the way; the fetch finishes from the other, asking
//!   again only the slices in flight on the dead one (see `holder.rs`).
//!
//! The hostile-peer scenarios (`forged-fraud`, `replay-flood`,
//! `sybil-flood`, `summary-poison`) add a stranger: a bare libp2p peer in
//! this process with its own key and no node behind it; see
//! `hostile.rs`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use agora_node::api::JobStatus;
use anyhow::Context;
use serde::Serialize;

use crate::job::{self, Params};
use crate::process::{GRANT_MICROS, Testnet};
use crate::progress::JobProgress;
use crate::report::{Table, credits};
use crate::workload::primes;
use crate::{artifacts, signal};

mod attacker;
mod disk;
mod endless;
mod fork;
mod holder;
mod hostile;
mod long_task;
mod mint;
mod owner;
mod relay;
mod specs;

/// CPU share of each provider.
const SHARE: f64 = 0.4;
/// Where the ranges start: trial division near 10⁹ costs ~15,500 fuel per
/// number.
const LO: u64 = 1_000_000_000;

/// A fault scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// A provider killed (SIGKILL) mid-job.
    KillProvider,
    /// A domain cut off mid-job (or, without --netns, suspended), then healed.
    Partition,
    /// A provider 4× slower than it advertises.
    SlowNode,
    /// A provider returning wrong results.
    Cheater,
    /// A second requester that never pays.
    Freeloader,
    /// Fresh keys without grants submitting jobs.
    Sybil,
    /// A requester that forks its credit chain to pay twice.
    Fork,
    /// A requester asking for tasks that never end.
    EndlessTasks,
    /// A stranger publishing forged fraud proofs against honest providers.
    ForgedFraud,
    /// A stranger flooding providers with signed calls to fill their replay
    /// guards.
    ReplayFlood,
    /// A stranger advertising thousands of fake identities.
    SybilFlood,
    /// A stranger signing summaries of domains it is not in, and of
    /// invented ones.
    SummaryPoison,
    /// A requester whose tasks write as much output as they can.
    DiskFill,
    /// The relay of providers behind NAT killed mid-job (--netns --nat 2).
    RelayLoss,
    /// Two providers' owners take their machines back mid-job (too hot),
    /// then let them go on.
    OwnerReturns,
    /// A long task that checkpoints: its provider killed half way (the
    /// task goes on elsewhere), then restarted half way (it goes on there).
    LongTask,
    /// A holder of a large blob killed while a node fetches it from two.
    HolderDies,
}

/// Run a fault scenario and check that the job still comes out right.
///
/// Exits 0 only if the job finished with outputs equal to the expected ones
/// and the ledger balanced (and, for `cheater`, the cheater was caught,
/// banned and unpaid).
#[derive(Debug, clap::Args)]
pub struct ChaosCommand {
    /// The scenario.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Tasks of the job.
    #[arg(long, default_value_t = 60)]
    pub tasks: usize,
    /// Numbers per task (trial division near 10⁹: ~150 ms of a whole core
    /// for 10,000).
    #[arg(long, default_value_t = 10_000)]
    pub width: u64,
    /// Fresh keys of `sybil`.
    #[arg(long, default_value_t = 50)]
    pub sybils: usize,
    /// Fake identities `sybil-flood` advertises.
    #[arg(long, default_value_t = 10_000)]
    pub fake_ids: usize,
    /// How long the task of `long-task` runs uninterrupted, seconds.
    #[arg(long, default_value_t = 60)]
    pub task_secs: u64,
    /// MiB of the blob `holder-dies` fetches.
    #[arg(long, default_value_t = 256)]
    pub mib: u64,
    /// How long `partition` keeps the domain cut off, seconds.
    #[arg(long, default_value_t = 6)]
    pub suspend_secs: u64,
    /// Where the nodes' data dirs go. Default: a temporary directory,
    /// removed on success and kept (with the node logs) on failure.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Separate hosts (a real partition for `partition`).
    #[command(flatten)]
    pub net: super::NetnsArgs,
}

/// A check and whether it held.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub what: String,
    /// Whether it held.
    pub ok: bool,
}

/// Tasks one provider ran.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderLine {
    /// `node-I`.
    pub node: String,
    /// How it ran.
    pub role: String,
    /// Domain.
    pub domain: String,
    /// Copies accepted from it.
    pub accepted: usize,
    /// Copies failed or wrong.
    pub failed: usize,
    /// Copies found wrong.
    pub wrong: usize,
    /// Paid for this job, micro-credits.
    pub paid_micros: u64,
    /// Its balance at the end, micro-credits.
    pub balance_micros: i64,
    /// Per-slot speed the requester learnt from its receipts, CU.
    pub learnt_cu: Option<f64>,
    /// Per-slot capacity it advertised, CU.
    #[serde(rename = "per_slot_cu")]
    pub advertised_cu: u64,
    /// Whether the requester banned it.
    pub banned: bool,
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    /// The scenario.
    pub scenario: Scenario,
    /// Whether every check held.
    pub ok: bool,
    /// What happened, in order, with milliseconds since submission.
    pub events: Vec<(u64, String)>,
    /// The checks.
    pub checks: Vec<Check>,
    /// Per provider.
    pub providers: Vec<ProviderLine>,
    /// Job wall time (submit to done), ms.
    pub job_wall_ms: u64,
    /// Copies that failed and were re-placed.
    pub failed_copies: usize,
    /// Why copies failed, with how many failed so.
    pub failure_reasons: std::collections::BTreeMap<String, usize>,
    /// Wrong results caught.
    pub wrong_caught: usize,
    /// Sum of balances at the end, micro-credits.
    pub total_micros: i64,
    /// What it must be.
    pub expected_micros: i64,
}

struct Run {
    t0: Instant,
    events: Vec<(u64, String)>,
    progress: JobProgress,
    quiet: bool,
}

impl Run {
    /// A run starting now whose progress names every node of `net` with
    /// its domain.
    fn labelled(net: &Testnet, tasks: usize, quiet: bool) -> Run {
        let labels: HashMap<_, _> = net
            .nodes()
            .iter()
            .map(|n| (n.id(), format!("{} {}", n.name(), n.spec.domain)))
            .collect();
        Run {
            t0: Instant::now(),
            events: Vec::new(),
            progress: JobProgress::new(tasks, labels, quiet),
            quiet,
        }
    }

    fn event(&mut self, what: String) {
        let t = self.t0.elapsed().as_secs_f64();
        if !self.quiet {
            self.progress.println(&format!("  [{t:6.2} s] {what}"));
        }
        self.events.push(((t * 1e3) as u64, what));
    }
}

impl ChaosCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        super::block_on(self.run())?
    }

    async fn run(self) -> anyhow::Result<ExitCode> {
        let stranger = matches!(
            self.scenario,
            Scenario::ForgedFraud | Scenario::ReplayFlood | Scenario::SybilFlood | Scenario::SummaryPoison
        );
        if stranger && self.net.netns {
            let name = clap::ValueEnum::to_possible_value(&self.scenario)
                .map(|v| v.get_name().to_owned())
                .unwrap_or_default();
            anyhow::bail!(
                "{name} runs its stranger inside this process, on loopback: run it without --netns"
            );
        }
        let agora = artifacts::agora_binary()?;
        let modules = artifacts::example_modules()?;
        let dir = super::WorkDir::new(self.dir.as_deref(), "agora-chaos-")?;
        let mut net = self.net.testnet(agora, dir.path(), self.json)?;
        let report = Box::pin(signal::interruptible(self.scenario(&mut net, &modules))).await;
        net.stop();
        if !matches!(&report, Ok(r) if r.ok) {
            dir.keep();
        }
        let report = report?;
        if self.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print_report(&report);
        }
        Ok(if report.ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }

    /// Starts the scenario's nodes and waits until they see each other.
    async fn start(&self, net: &mut Testnet) -> anyhow::Result<()> {
        let specs = self.specs();
        if !self.json {
            eprintln!(
                "chaos {:?}: starting {} nodes in {}",
                self.scenario,
                specs.len(),
                net.dir().display()
            );
        }
        net.start_all(specs).await?;
        net.wait_converged(Duration::from_secs(60)).await?;
        Ok(())
    }

    async fn scenario(&self, net: &mut Testnet, modules: &artifacts::Modules) -> anyhow::Result<ChaosReport> {
        match self.scenario {
            Scenario::Fork => return self.fork(net, modules).await,
            Scenario::EndlessTasks => return self.endless(net, modules).await,
            Scenario::ForgedFraud => return Box::pin(self.forged_fraud(net, modules)).await,
            Scenario::ReplayFlood => return Box::pin(self.replay_flood(net, modules)).await,
            Scenario::SybilFlood => return Box::pin(self.sybil_flood(net, modules)).await,
            Scenario::SummaryPoison => return Box::pin(self.summary_poison(net, modules)).await,
            Scenario::DiskFill => return Box::pin(self.disk_fill(net, modules)).await,
            Scenario::RelayLoss => return Box::pin(self.relay_loss(net, modules)).await,
            Scenario::LongTask => return Box::pin(self.long_task(net, modules)).await,
            Scenario::HolderDies => return Box::pin(self.holder_dies(net)).await,
            _ => {}
        }
        self.start(net).await?;
        if self.scenario == Scenario::OwnerReturns {
            for n in net.nodes().iter().filter(|n| n.spec.provide) {
                owner::set_temp(net, n.index, 40)?;
            }
        }
        // One fresh key of `sybil` is paid credits minted by an accomplice.
        let accomplice = net.nodes().iter().find(|n| !n.spec.funded).map(|n| n.index);
        let _minter = match accomplice {
            Some(a) if self.scenario == Scenario::Sybil => Some(mint::mint(net, a).await?),
            _ => None,
        };
        let ranges = primes::even(self.tasks, LO, self.width);
        let inputs = primes::trial_inputs(&ranges);
        let expected: Vec<Vec<u8>> = ranges.iter().map(|&(lo, hi)| primes::output(lo, hi)).collect();
        let params = Params {
            replicas: if self.scenario == Scenario::Cheater { 2 } else { 1 },
            deadline: Duration::from_secs(5),
            ..Params::default()
        };
        let requester = net.node(0).client.clone();
        let spec = job::prepare(&requester, &modules.read("primes")?, None, &inputs, &params).await?;
        let id = job::submit(&requester, &spec).await?;
        // The freeloader submits the same job at the same time.
        let freeloader = net
            .nodes()
            .iter()
            .find(|n| n.spec.never_pay)
            .map(|n| (n.index, n.client.clone()));
        let freeloaded = match &freeloader {
            Some((_, c)) => {
                // Long enough to still be running when its first receipts
                // fall due (8 s after they are placed), however fast the
                // providers: 1,200 tasks of ~150 M fuel, some 25 s of work
                // for all of them (400 were done in 9 s on 2 cores).
                let long = primes::trial_inputs(&primes::even(1_200, LO + 10_000_000, 10_000));
                let spec = job::prepare(c, &modules.read("primes")?, None, &long, &params).await?;
                Some(job::submit(c, &spec).await?)
            }
            None => None,
        };
        // Each fresh key submits 8 small tasks (~15 M fuel each, a fuel
        // limit of 50 M: 0.05 credits at the default price, within a
        // stranger's credit line of 0.1).
        let mut sybil_jobs = Vec::new();
        let small = primes::trial_inputs(&primes::even(8, LO, 1_000));
        let small_params = Params {
            fuel: 50_000_000,
            ..params.clone()
        };
        for n in net.nodes().iter().filter(|n| !n.spec.funded) {
            let spec = job::prepare(&n.client, &modules.read("primes")?, None, &small, &small_params).await?;
            sybil_jobs.push((n.index, n.client.clone(), job::submit(&n.client, &spec).await?));
        }
        let mut run = Run::labelled(net, inputs.len(), self.json);
        run.event(format!(
            "submitted job {id}: {} prime-count tasks{}",
            inputs.len(),
            if params.replicas > 1 {
                ", 2 replicas each"
            } else {
                ""
            }
        ));
        let mut fault_done = false;
        let mut resume_at: Option<Instant> = None;
        let mut suspended: Vec<usize> = Vec::new();
        let mut killed: Option<usize> = None;
        let mut heated: Vec<owner::Heated> = Vec::new();
        let mut cut = String::new();
        let mut ended = false;
        let deadline = Instant::now() + Duration::from_secs(300);
        let status: JobStatus = loop {
            let s = requester.job(&id).await.context("cannot read the job's status")?;
            run.progress.update(&s);
            if !fault_done && s.counts.verified * 4 >= s.total {
                fault_done = true;
                match self.scenario {
                    Scenario::KillProvider => {
                        // The provider with the most copies running now.
                        let running: HashMap<_, usize> =
                            s.providers.iter().map(|p| (p.peer_id, p.running)).collect();
                        let victim = net
                            .nodes()
                            .iter()
                            .filter(|n| n.spec.provide)
                            .max_by_key(|n| running.get(&n.id()).copied().unwrap_or(0))
                            .map(|n| (n.index, running.get(&n.id()).copied().unwrap_or(0)));
                        if let Some((v, r)) = victim {
                            net.kill(v)?;
                            killed = Some(v);
                            run.event(format!("killed node-{v} with SIGKILL ({r} of its tasks running)"));
                        }
                    }
                    Scenario::Partition => {
                        // Cut off the domain running the most tasks now.
                        let running_in = |d: &str| -> usize {
                            s.providers
                                .iter()
                                .filter(|p| net.by_id(&p.peer_id).is_some_and(|n| n.spec.domain == d))
                                .map(|p| p.running)
                                .sum()
                        };
                        let domain = if running_in("us/a") >= running_in("eu/b") {
                            "us/a"
                        } else {
                            "eu/b"
                        };
                        let running = running_in(domain);
                        let on: Vec<usize> = net
                            .nodes()
                            .iter()
                            .filter(|n| n.spec.domain == domain)
                            .map(|n| n.index)
                            .collect();
                        let names = on
                            .iter()
                            .map(|i| format!("node-{i}"))
                            .collect::<Vec<_>>()
                            .join(", ");
                        if net.lab().is_some() {
                            net.cut_domain(domain)?;
                            run.event(format!(
                                "cut domain {domain} off the network ({names}; {running} tasks running there) for {} s",
                                self.suspend_secs
                            ));
                        } else {
                            for &i in &on {
                                net.suspend(i)?;
                            }
                            suspended = on.clone();
                            run.event(format!(
                                "suspended domain {domain} (SIGSTOP to {names}; {running} tasks running there) for {} s",
                                self.suspend_secs
                            ));
                        }
                        cut = domain.to_owned();
                        resume_at = Some(Instant::now() + Duration::from_secs(self.suspend_secs));
                    }
                    Scenario::OwnerReturns => {
                        // The two providers with the most copies running now.
                        let running: HashMap<_, usize> =
                            s.providers.iter().map(|p| (p.peer_id, p.running)).collect();
                        let mut ps: Vec<(usize, usize)> = net
                            .nodes()
                            .iter()
                            .filter(|n| n.spec.provide)
                            .map(|n| (n.index, running.get(&n.id()).copied().unwrap_or(0)))
                            .collect();
                        ps.sort_by_key(|&(i, r)| (std::cmp::Reverse(r), i));
                        let two: Vec<usize> = ps.iter().take(2).map(|&(i, _)| i).collect();
                        heated = owner::heat(net, &two, &s).await?;
                        run.event(format!(
                            "heated node-{} and node-{} to 90 °C (their owners' limit: 80 °C) for {} s",
                            two[0],
                            two[1],
                            owner::HOLD.as_secs()
                        ));
                        cut = format!("node-{} and node-{}", two[0], two[1]);
                        resume_at = Some(Instant::now() + owner::HOLD);
                    }
                    Scenario::SlowNode
                    | Scenario::Cheater
                    | Scenario::Freeloader
                    | Scenario::Sybil
                    | Scenario::Fork
                    | Scenario::EndlessTasks
                    | Scenario::ForgedFraud
                    | Scenario::ReplayFlood
                    | Scenario::SybilFlood
                    | Scenario::SummaryPoison
                    | Scenario::DiskFill
                    | Scenario::RelayLoss
                    | Scenario::LongTask
                    | Scenario::HolderDies => {}
                }
            }
            if resume_at.is_some_and(|t| Instant::now() >= t) {
                let how = if self.scenario == Scenario::OwnerReturns {
                    let nodes: Vec<usize> = heated.iter().map(|h| h.node).collect();
                    owner::cool(net, &nodes)?;
                    "cooled to 40 °C"
                } else if net.lab().is_some() {
                    net.heal_domain(&cut)?;
                    "healed domain"
                } else {
                    for &i in &suspended {
                        net.resume(i)?;
                    }
                    "resumed domain (SIGCONT)"
                };
                resume_at = None;
                run.event(format!(
                    "{how} {cut}; {} of {} tasks verified",
                    s.counts.verified, s.total
                ));
            }
            if s.state.is_terminal() && !ended {
                ended = true;
                run.event(format!(
                    "job ended {:?} after {} ms: {} verified, {} failed",
                    s.state, s.wall_ms, s.counts.verified, s.counts.failed
                ));
            }
            if s.state.is_terminal() && resume_at.is_none() {
                break s;
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "job {id} did not finish within 300 s ({} of {} verified)",
                    s.counts.verified,
                    s.total
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        run.progress.finish();
        let mut checks = Vec::new();
        checks.push(Check {
            what: format!(
                "job done ({:?}{})",
                status.state,
                status
                    .error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
            ok: job::ensure_done(&status).is_ok(),
        });
        if status.state.is_terminal() && job::ensure_done(&status).is_ok() {
            let got = job::outputs(&requester, &id).await?;
            let bad = job::compare(&got, &expected);
            checks.push(Check {
                what: if bad.is_empty() {
                    format!("all {} outputs equal the expected prime counts", got.len())
                } else {
                    format!(
                        "{} outputs differ from the expected: {}",
                        bad.len(),
                        bad[..bad.len().min(3)].join("; ")
                    )
                },
                ok: bad.is_empty(),
            });
        }
        if self.scenario == Scenario::OwnerReturns {
            checks.extend(owner::checks(net, &heated, &status).await);
        }
        if let Some(v) = killed {
            net.restart(v).await?;
            run.event(format!(
                "restarted node-{v} from its data dir, to count its balance"
            ));
        }
        let balances = net.settle(Duration::from_secs(60)).await?;
        run.event(format!(
            "ledgers settled: {} payments not countersigned, sum {} (grants issued {})",
            balances.outbox,
            credits(balances.total),
            credits(balances.expected),
        ));
        checks.push(Check {
            what: format!(
                "ledger balanced: sum of balances {} = grants issued {}, outboxes empty ({} left)",
                credits(balances.total),
                credits(balances.expected),
                balances.outbox
            ),
            ok: balances.conserved(),
        });
        let mut freeloaded_work: HashMap<agora_protocol::NodeId, usize> = HashMap::new();
        let mut stalled = None;
        if let (Some((f, client)), Some(fid)) = (&freeloader, freeloaded) {
            // Refused everywhere once its receipts are late: what it has
            // had run stops growing.
            let until = Instant::now() + Duration::from_secs(60);
            let mut last = (usize::MAX, Instant::now());
            let mut ended = false;
            while Instant::now() < until {
                let s = client
                    .job_with_receipts(&fid)
                    .await
                    .context("cannot read the freeloader's job")?;
                let ran: usize = ran_by_provider(&s).values().sum();
                if ran != last.0 {
                    last = (ran, Instant::now());
                } else if last.1.elapsed() >= Duration::from_secs(8) {
                    stalled = Some(ran);
                    break;
                }
                if s.state.is_terminal() {
                    ended = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            let s = client
                .job_with_receipts(&fid)
                .await
                .context("cannot read the freeloader's job")?;
            freeloaded_work = ran_by_provider(&s);
            let _ = client.cancel(&fid).await;
            let ran: usize = freeloaded_work.values().sum();
            run.event(format!(
                "node-{f} (never pays) had {ran} of its {} tasks run; {}",
                s.total,
                match stalled {
                    Some(_) => "then nothing for 8 s: refused by every provider".to_owned(),
                    None if ended => "its job ended before every provider refused it".to_owned(),
                    None => "and it was still getting work after 60 s".to_owned(),
                }
            ));
        }
        if let Some((f, _)) = &freeloader {
            // Its chain, read from the copies its providers keep once it is
            // gone.
            let (f, granted) = (*f, net.node(*f).granted);
            net.kill(f)?;
            let audit = net.node(0).client.audit(&net.node(f).id()).await;
            let (what, ok) = match audit {
                Ok(a) => (
                    format!(
                        "node-{f} killed, its chain audited by node-0 from the copies others keep: {} block(s), balance {}",
                        a.blocks,
                        agora_node::api::format_balance(a.balance_micros)
                    ),
                    a.blocks >= 1 && a.balance_micros == granted,
                ),
                Err(e) => (format!("node-{f} killed, node-0 cannot audit it: {e}"), false),
            };
            run.event(what.clone());
            checks.push(Check { what, ok });
        }
        // What each fresh key got from each provider.
        let mut sybil_work: Vec<HashMap<agora_protocol::NodeId, job::ProviderWork>> = Vec::new();
        let mut sybil_ran: Vec<HashMap<agora_protocol::NodeId, usize>> = Vec::new();
        for (_, client, sid) in &sybil_jobs {
            let s = client
                .job_with_receipts(sid)
                .await
                .context("cannot read a sybil's job")?;
            sybil_work.push(job::outcome(&s).providers);
            sybil_ran.push(ran_by_provider(&s));
            let _ = client.cancel(sid).await;
        }
        if !sybil_jobs.is_empty() {
            let ran: usize = sybil_ran.iter().flat_map(|w| w.values()).sum();
            run.event(format!(
                "{} fresh keys had {ran} tasks run in all, then their jobs were cancelled",
                sybil_jobs.len()
            ));
        }
        let audits = net.audit().await?;
        checks.push(Check {
            what: audits.line(),
            ok: audits.mismatches.is_empty() && audits.checked > 0,
        });
        if let (Some(a), Some(_)) = (accomplice, &_minter) {
            // A provider's audit of the accomplice: the minted credits
            // count nothing.
            let name = net.node(a).name();
            let audit = net.node(1).client.audit(&net.node(a).id()).await;
            let (what, ok) = match audit {
                Ok(r) => (
                    format!(
                        "{name}, paid {} minted credits, audited by node-1: balance {}, backed {}, unbacked {}",
                        mint::MINTED,
                        agora_node::api::format_balance(r.balance_micros),
                        agora_node::api::format_balance(r.backed_micros),
                        r.unbacked
                    ),
                    r.unbacked.0 == mint::MINTED * 1_000_000 && r.backed_micros <= 0,
                ),
                Err(e) => (format!("node-1 cannot audit {name}: {e}"), false),
            };
            run.event(what.clone());
            checks.push(Check { what, ok });
        } else if !audits.unbacked.is_empty() {
            checks.push(Check {
                what: format!("credits not backed: {}", audits.unbacked.join("; ")),
                ok: false,
            });
        }
        let outcome = job::outcome(&status);
        let mut peers = requester.peers(None).await.unwrap_or_default();
        if self.scenario == Scenario::Cheater {
            // The requester drops a provider it bans from its view, and the
            // provider's next advert brings it back (with its ban shown):
            // give that advert a few seconds.
            let cheater = net
                .nodes()
                .iter()
                .find(|n| n.spec.cheat_rate > 0.0)
                .map(|n| n.id());
            let until = Instant::now() + Duration::from_secs(5);
            while Instant::now() < until && !peers.iter().any(|r| Some(r.peer_id) == cheater) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                peers = requester.peers(None).await.unwrap_or_default();
            }
        }
        let providers: Vec<ProviderLine> = net
            .nodes()
            .iter()
            .filter(|n| n.spec.provide)
            .map(|n| {
                let w = outcome.providers.get(&n.id()).cloned().unwrap_or_default();
                let row = peers.iter().find(|r| r.peer_id == n.id());
                ProviderLine {
                    node: n.name(),
                    role: n.spec.describe(),
                    domain: n.spec.domain.clone(),
                    accepted: w.accepted,
                    failed: w.failed,
                    wrong: w.wrong,
                    paid_micros: w.paid_micros,
                    balance_micros: balances.of(n.index).unwrap_or(0),
                    learnt_cu: row.and_then(|r| r.learnt_cu),
                    advertised_cu: n.per_slot_cu(),
                    banned: row.is_some_and(|r| r.banned),
                }
            })
            .collect();
        match self.scenario {
            Scenario::Cheater => {
                let cheater = net
                    .nodes()
                    .iter()
                    .find(|n| n.spec.cheat_rate > 0.0)
                    .map(|n| n.name())
                    .unwrap_or_default();
                let c = providers.iter().find(|p| p.node == cheater);
                let wrong_elsewhere: usize = providers
                    .iter()
                    .filter(|p| p.node != cheater)
                    .map(|p| p.wrong)
                    .sum();
                checks.push(Check {
                    what: format!(
                        "wrong results caught: {} (all from {cheater}: {})",
                        outcome.wrong_caught,
                        wrong_elsewhere == 0
                    ),
                    ok: outcome.wrong_caught > 0 && wrong_elsewhere == 0,
                });
                checks.push(Check {
                    what: format!(
                        "{cheater} unpaid: paid {} for this job, balance {} (its grant {})",
                        credits(c.map_or(0, |c| c.paid_micros as i64)),
                        credits(c.map_or(0, |c| c.balance_micros)),
                        credits(GRANT_MICROS)
                    ),
                    ok: c.is_some_and(|c| c.paid_micros == 0 && c.balance_micros == GRANT_MICROS),
                });
                let in_view = net
                    .nodes()
                    .iter()
                    .find(|n| n.spec.cheat_rate > 0.0)
                    .is_some_and(|n| peers.iter().any(|r| r.peer_id == n.id()));
                let published = fraud_proofs(&requester).await;
                checks.push(if in_view {
                    Check {
                        what: format!(
                            "{cheater} identified: banned by the requester, which published {published} fraud proofs"
                        ),
                        ok: c.is_some_and(|c| c.banned),
                    }
                } else {
                    Check {
                        what: format!(
                            "{cheater} identified: dropped from the requester's view, which published {published} fraud proofs against it"
                        ),
                        ok: published > 0,
                    }
                });
                let mut others = 0;
                for n in net.nodes().iter().skip(1).filter(|n| n.spec.cheat_rate == 0.0) {
                    let cid = net
                        .nodes()
                        .iter()
                        .find(|m| m.spec.cheat_rate > 0.0)
                        .map(|m| m.id());
                    if let Ok(rows) = n.client.peers(None).await
                        && rows.iter().any(|r| Some(r.peer_id) == cid && r.banned)
                    {
                        others += 1;
                    }
                }
                run.event(format!("{others} of the other providers also list {cheater} as banned (from the gossiped fraud proof)"));
            }
            Scenario::SlowNode => {
                if let Some(slow) = providers.iter().find(|p| p.role.contains("slower")) {
                    let total: usize = providers.iter().map(|p| p.accepted).sum();
                    let share = slow.accepted as f64 / total.max(1) as f64;
                    run.event(format!(
                        "the slow {} ran {} of {} tasks ({:.0}%; fair share by adverts 25%, by real speed {:.0}%); learnt speed {} CU vs {} advertised",
                        slow.node,
                        slow.accepted,
                        total,
                        share * 100.0,
                        100.0 / 13.0,
                        slow.learnt_cu.map_or("-".to_owned(), |c| format!("{c:.0}")),
                        slow.advertised_cu
                    ));
                }
            }
            Scenario::Freeloader => {
                checks.push(Check {
                    what: match stalled {
                        Some(ran) => format!(
                            "the freeloader got nothing more after {ran} tasks: every provider refused it"
                        ),
                        None => "the freeloader was NOT refused within 60 s".into(),
                    },
                    ok: stalled.is_some(),
                });
                for p in &providers {
                    let n = net.nodes().iter().find(|n| n.name() == p.node).map(|n| n.id());
                    let ran = n.and_then(|n| freeloaded_work.get(&n)).copied().unwrap_or(0);
                    checks.push(Check {
                        what: format!(
                            "{} ran {ran} tasks for the freeloader, unpaid; its balance {} is its grant plus what the honest requester paid it ({})",
                            p.node,
                            credits(p.balance_micros),
                            credits(p.paid_micros as i64)
                        ),
                        ok: p.balance_micros == GRANT_MICROS + p.paid_micros as i64,
                    });
                }
            }
            Scenario::Sybil => {
                let c = agora_node::config::Config::default();
                let (line, price) = (c.credit.line, c.provider.price);
                for p in &providers {
                    let id = net.nodes().iter().find(|n| n.name() == p.node).map(|n| n.id());
                    let per_key: Vec<(usize, u64)> = sybil_work
                        .iter()
                        .zip(&sybil_ran)
                        .map(|(w, r)| {
                            let fuel = id.and_then(|id| w.get(&id)).map_or(0, |w| w.fuel);
                            let ran = id.and_then(|id| r.get(&id)).copied().unwrap_or(0);
                            (ran, price.cost(agora_protocol::units::Fuel(fuel)).0)
                        })
                        .collect();
                    let most = per_key.iter().map(|(n, _)| *n).max().unwrap_or(0);
                    let dearest = per_key.iter().map(|(_, c)| *c).max().unwrap_or(0);
                    let total: usize = per_key.iter().map(|(n, _)| *n).sum();
                    checks.push(Check {
                        what: format!(
                            "{} ran {total} tasks for {} fresh keys: at most {most} and {} credits of work (≤ the line of {line}) for any one",
                            p.node,
                            per_key.len(),
                            credits(dearest as i64),
                        ),
                        ok: dearest <= line.0,
                    });
                }
            }
            Scenario::KillProvider
            | Scenario::Partition
            | Scenario::Fork
            | Scenario::EndlessTasks
            | Scenario::ForgedFraud
            | Scenario::ReplayFlood
            | Scenario::SybilFlood
            | Scenario::SummaryPoison
            | Scenario::DiskFill
            | Scenario::RelayLoss
            | Scenario::LongTask
            | Scenario::HolderDies
            | Scenario::OwnerReturns => {}
        }
        let ok = checks.iter().all(|c| c.ok);
        Ok(ChaosReport {
            scenario: self.scenario,
            ok,
            events: run.events,
            checks,
            providers,
            job_wall_ms: status.wall_ms,
            failed_copies: outcome.failed_copies,
            wrong_caught: outcome.wrong_caught,
            failure_reasons: outcome.failure_reasons.clone(),
            total_micros: balances.total,
            expected_micros: balances.expected,
        })
    }
}

/// Copies of a job that ran (have a receipt), by provider.
fn ran_by_provider(s: &JobStatus) -> HashMap<agora_protocol::NodeId, usize> {
    let mut ran = HashMap::new();
    for c in s
        .tasks
        .iter()
        .flat_map(|t| &t.copies)
        .filter(|c| c.receipt.is_some())
    {
        *ran.entry(c.provider).or_insert(0) += 1;
    }
    ran
}

/// Fraud proofs the node has published (its `agora_fraud_published_total`).
async fn fraud_proofs(client: &agora_node::api::client::Client) -> u64 {
    metric(client, "agora_fraud_published_total").await
}

/// A metric's value summed over its labels (0 if absent).
async fn metric(client: &agora_node::api::client::Client, name: &str) -> u64 {
    let Ok(text) = client.metrics().await else {
        return 0;
    };
    crate::metrics::sum(&text, name) as u64
}

fn print_report(r: &ChaosReport) {
    println!();
    let mut t = Table::new(&[
        "node",
        "role",
        "domain",
        "accepted",
        "failed",
        "wrong",
        "paid",
        "balance",
        "learnt CU",
        "advert CU",
        "banned",
    ])
    .with_right(&[3, 4, 5, 6, 7, 8, 9]);
    for p in &r.providers {
        t.row(vec![
            p.node.clone(),
            p.role.clone(),
            p.domain.clone(),
            p.accepted.to_string(),
            p.failed.to_string(),
            p.wrong.to_string(),
            credits(p.paid_micros as i64),
            credits(p.balance_micros),
            p.learnt_cu.map_or("-".into(), |c| format!("{c:.0}")),
            p.advertised_cu.to_string(),
            if p.banned { "yes".into() } else { "no".into() },
        ]);
    }
    print!("{}", t.render());
    println!();
    println!(
        "  job took {:.2} s; {} copies failed and were re-placed{}",
        r.job_wall_ms as f64 / 1000.0,
        r.failed_copies,
        if r.failure_reasons.is_empty() {
            String::new()
        } else {
            format!(
                ": {}",
                r.failure_reasons
                    .iter()
                    .map(|(why, n)| format!("{n}× {why}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    for c in &r.checks {
        println!("  {} {}", if c.ok { "✔" } else { "✘" }, c.what);
    }
    println!(
        "chaos {}: {}",
        serde_json::to_value(r.scenario)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        if r.ok { "OK" } else { "FAILED" }
    );
}
