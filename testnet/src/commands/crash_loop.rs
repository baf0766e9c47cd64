//! `agora-testnet crash-loop`: kill -9 a requester or a provider at a random
//! moment, restart it from its data dir, and again, many times, while jobs
//! keep being submitted. Afterwards every job the API acknowledged must
//! reach a terminal state with correct outputs, every store must have
//! opened again, the balances must be conserved, and no voucher may have
//! counted twice.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use agora_node::market::job::JobState;
use agora_protocol::JobId;
use anyhow::Context;
use serde::Serialize;

use crate::job::{self, Params};
use crate::process::{NodeSpec, Testnet};
use crate::workload::{SplitMix, primes};
use crate::{artifacts, signal};

/// Kill and restart nodes at random while jobs run, then check that
/// nothing acknowledged was lost and nothing was paid twice.
#[derive(Debug, clap::Args)]
pub struct CrashLoopCommand {
    /// Kills (each followed by a restart).
    #[arg(long, default_value_t = 200)]
    pub rounds: usize,
    /// Providers besides the requester.
    #[arg(long, default_value_t = 3)]
    pub providers: usize,
    /// Tasks per job.
    #[arg(long, default_value_t = 6)]
    pub tasks: usize,
    /// Seed of the kill schedule.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where the nodes' data dirs go (default: a temporary directory, kept
    /// on failure).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What the crash loop found.
#[derive(Debug, Default, Serialize)]
pub struct CrashReport {
    /// Whether every check held.
    pub ok: bool,
    /// Kills done.
    pub rounds: usize,
    /// Of which the requester.
    pub requester_kills: usize,
    /// Of which a provider.
    pub provider_kills: usize,
    /// Restarts that failed (the store did not open, the node did not come up).
    pub failed_restarts: usize,
    /// Jobs the API acknowledged.
    pub jobs_acknowledged: usize,
    /// Of which done with correct outputs.
    pub jobs_correct: usize,
    /// Jobs that ended otherwise, with why.
    pub jobs_bad: Vec<String>,
    /// Vouchers counted twice (by receipt paid for).
    pub duplicate_vouchers: usize,
    /// Sum of balances at the end, and what it must be.
    pub total_micros: i64,
    /// What the sum must be.
    pub expected_micros: i64,
    /// Every chain audited by a peer at the end.
    pub audit: String,
    /// Wall time, ms.
    pub wall_ms: u64,
}

struct Submitted {
    id: JobId,
    expected: Vec<Vec<u8>>,
}

impl CrashLoopCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        super::block_on(self.run())?
    }

    async fn run(self) -> anyhow::Result<ExitCode> {
        let agora = artifacts::agora_binary()?;
        let modules = artifacts::example_modules()?;
        let dir = super::WorkDir::new(self.dir.as_deref(), "agora-crash-")?;
        let mut net = Testnet::new(agora, dir.path())?;
        let result = signal::interruptible(self.crash_loop(&mut net, &modules)).await;
        net.stop();
        if !matches!(&result, Ok(r) if r.ok) {
            dir.keep();
        }
        let report = result?;
        if self.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!(
                "crash loop: {} kills ({} requester, {} provider), {} failed restarts",
                report.rounds, report.requester_kills, report.provider_kills, report.failed_restarts
            );
            println!(
                "jobs: {} acknowledged, {} done with correct outputs{}",
                report.jobs_acknowledged,
                report.jobs_correct,
                if report.jobs_bad.is_empty() {
                    String::new()
                } else {
                    format!("; bad: {:?}", report.jobs_bad)
                }
            );
            println!(
                "ledger: sum {} µcr (expected {}), vouchers counted twice: {}",
                report.total_micros, report.expected_micros, report.duplicate_vouchers
            );
            println!("{}", report.audit);
            println!(
                "{} in {:.0} s",
                if report.ok { "OK" } else { "FAILED" },
                report.wall_ms as f64 / 1e3
            );
        }
        Ok(if report.ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }

    async fn crash_loop(
        &self,
        net: &mut Testnet,
        modules: &artifacts::Modules,
    ) -> anyhow::Result<CrashReport> {
        let t0 = Instant::now();
        let mut specs = vec![NodeSpec::requester("local").with_slots(1)];
        specs.extend(
            (0..self.providers).map(|_| NodeSpec::provider("local").with_cpu_share(0.4).with_slots(1)),
        );
        net.start_all(specs).await?;
        net.wait_converged(Duration::from_secs(60)).await?;
        let module = modules.read("primes")?;
        let mut rng = SplitMix(self.seed);
        let mut report = CrashReport::default();
        let mut submitted: Vec<Submitted> = Vec::new();
        let mut next_lo = 1_000_000_000u64;
        let params = Params {
            deadline: Duration::from_secs(10),
            ..Params::default()
        };
        for round in 0..self.rounds {
            // Keep about two jobs in flight, submitted through the requester
            // whenever it is up.
            let active = {
                let mut n = 0;
                if net.node(0).is_running() {
                    for s in submitted.iter().rev().take(4) {
                        if let Ok(st) = net.node(0).client.job(&s.id).await {
                            n += usize::from(!st.state.is_terminal());
                        }
                    }
                }
                n
            };
            if active < 2 && net.node(0).is_running() {
                let ranges = primes::even(self.tasks, next_lo, 2_000);
                next_lo += 2_000 * self.tasks as u64;
                let inputs = primes::trial_inputs(&ranges);
                let client = net.node(0).client.clone();
                if let Ok(spec) = job::prepare(&client, &module, None, &inputs, &params).await {
                    // Only an id the API returned counts as acknowledged.
                    if let Ok(id) = job::submit(&client, &spec).await {
                        submitted.push(Submitted {
                            id,
                            expected: ranges.iter().map(|&(lo, hi)| primes::output(lo, hi)).collect(),
                        });
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100 + rng.next_u64() % 1400)).await;
            let victim = if rng.next_u64().is_multiple_of(3) {
                0
            } else {
                1 + (rng.next_u64() as usize % self.providers)
            };
            net.kill(victim)?;
            if victim == 0 {
                report.requester_kills += 1;
            } else {
                report.provider_kills += 1;
            }
            tokio::time::sleep(Duration::from_millis(rng.next_u64() % 500)).await;
            if let Err(e) = net.restart(victim).await {
                report.failed_restarts += 1;
                eprintln!("round {round}: node-{victim} did not come back: {e:#}");
                net.restart(victim).await.context("a second restart failed too")?;
            }
            report.rounds += 1;
            if !self.json && (round + 1) % 20 == 0 {
                eprintln!(
                    "  {} kills, {} jobs submitted, {:.0} s",
                    round + 1,
                    submitted.len(),
                    t0.elapsed().as_secs_f64()
                );
            }
        }
        // Every acknowledged job must end, and end right.
        let client = net.node(0).client.clone();
        report.jobs_acknowledged = submitted.len();
        for s in &submitted {
            match job::follow(
                &client,
                &s.id,
                Duration::from_secs(300),
                Duration::from_millis(200),
                |_| {},
            )
            .await
            {
                Ok(st) if st.state == JobState::Done => {
                    let got = job::outputs(&client, &s.id).await?;
                    let bad = job::compare(&got, &s.expected);
                    if bad.is_empty() {
                        report.jobs_correct += 1;
                    } else {
                        report.jobs_bad.push(format!("{}: {}", s.id, bad.join("; ")));
                    }
                }
                Ok(st) => report.jobs_bad.push(format!(
                    "{}: {:?}: {}",
                    s.id,
                    st.state,
                    st.error.unwrap_or_default()
                )),
                Err(e) => report.jobs_bad.push(format!("{}: {e:#}", s.id)),
            }
        }
        // No voucher counted twice: each provider is paid at most once per task.
        for n in net.nodes().iter().skip(1) {
            let ledger = n.client.ledger(100_000).await?;
            let mut seen: HashSet<String> = HashSet::new();
            let mut per_task: BTreeMap<String, usize> = BTreeMap::new();
            // A block may pay several receipts: each of its tasks counts.
            for e in ledger.entries.iter().filter(|e| e.kind == "received") {
                for task in &e.tasks {
                    let key = format!("{task}/{:?}", e.counterparty);
                    *per_task.entry(key.clone()).or_default() += 1;
                    if !seen.insert(key) {
                        report.duplicate_vouchers += 1;
                    }
                }
            }
        }
        let balances = net.settle(Duration::from_secs(120)).await?;
        report.total_micros = balances.total;
        report.expected_micros = balances.expected;
        let audits = net.audit().await?;
        report.audit = audits.line();
        report.wall_ms = t0.elapsed().as_millis() as u64;
        report.ok = report.failed_restarts == 0
            && report.jobs_bad.is_empty()
            && report.jobs_correct == report.jobs_acknowledged
            && report.duplicate_vouchers == 0
            && balances.outbox == 0
            && balances.conserved()
            && audits.mismatches.is_empty();
        Ok(report)
    }
}
