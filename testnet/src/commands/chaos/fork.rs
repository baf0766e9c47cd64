//! `chaos fork`: a requester that forks its credit chain (see the
//! scenario list in the parent module).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{ChaosCommand, ChaosReport, Check, LO, ProviderLine, Run, metric};
use crate::artifacts;
use crate::job::{self, Params};
use crate::process::Testnet;
use crate::progress::JobProgress;
use crate::report::credits;
use crate::workload::primes;

impl ChaosCommand {
    /// `fork`: see the module docs.
    pub(super) async fn fork(
        &self,
        net: &mut Testnet,
        modules: &artifacts::Modules,
    ) -> anyhow::Result<ChaosReport> {
        self.start(net).await?;
        let ranges = primes::even(self.tasks, LO, self.width);
        let inputs = primes::trial_inputs(&ranges);
        let forker = net.node(0).client.clone();
        let forker_name = net.node(0).name();
        let spec = job::prepare(
            &forker,
            &modules.read("primes")?,
            None,
            &inputs,
            &Params::default(),
        )
        .await?;
        let id = job::submit(&forker, &spec).await?;
        let labels: HashMap<_, _> = net.nodes().iter().map(|n| (n.id(), n.name())).collect();
        let mut run = Run {
            t0: Instant::now(),
            events: Vec::new(),
            progress: JobProgress::new(inputs.len(), labels, true),
            quiet: self.json,
        };
        run.event(format!(
            "{forker_name} (forks its chain) submitted job {id}: {} tasks",
            inputs.len()
        ));
        let mut checks = Vec::new();
        // Until some node holds a fork proof.
        let deadline = Instant::now() + Duration::from_secs(60);
        let first = loop {
            let mut knowing = Vec::new();
            for n in net.nodes().iter().skip(1) {
                if metric(&n.client, "agora_chains_forked").await > 0 {
                    knowing.push(n.index);
                }
            }
            if !knowing.is_empty() {
                break Some(Instant::now());
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let Some(found_at) = first else {
            checks.push(Check {
                what: "the fork was detected".into(),
                ok: false,
            });
            return Ok(self.bare_report(run, checks, net).await);
        };
        run.event(format!(
            "a provider found the fork and published the proof (the job {})",
            if requester_done(&forker, &id).await {
                "had ended"
            } else {
                "was running"
            }
        ));
        checks.push(Check {
            what: "the fork was detected".into(),
            ok: true,
        });
        // Every other node must know it within 10 s.
        let mut all_at = None;
        while found_at.elapsed() < Duration::from_secs(10) {
            let mut all = true;
            for n in net.nodes().iter().skip(1) {
                all &= metric(&n.client, "agora_chains_forked").await > 0;
            }
            if all {
                all_at = Some(found_at.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        checks.push(Check {
            what: match all_at {
                Some(t) => format!(
                    "every provider knew the fork {} ms after it was found",
                    t.as_millis()
                ),
                None => "NOT every provider knew the fork within 10 s".into(),
            },
            ok: all_at.is_some(),
        });
        // Nothing more runs for the forker: a new job of its gets no copy
        // run anywhere.
        let _ = forker.cancel(&id).await;
        let few = &inputs[..inputs.len().min(8)];
        let spec = job::prepare(&forker, &modules.read("primes")?, None, few, &Params::default()).await?;
        let again = job::submit(&forker, &spec).await?;
        tokio::time::sleep(Duration::from_secs(8)).await;
        let ran = work_done(&forker, &again).await?;
        let _ = forker.cancel(&again).await;
        run.event(format!(
            "{forker_name} submitted another job: {ran} copies ran for it in 8 s"
        ));
        checks.push(Check {
            what: format!("no further work for {forker_name}: {ran} copies of its next job ran in 8 s"),
            ok: ran == 0,
        });
        Ok(self.bare_report(run, checks, net).await)
    }

    /// A report without a job outcome: the providers' balances and the
    /// audits.
    pub(super) async fn bare_report(
        &self,
        mut run: Run,
        mut checks: Vec<Check>,
        net: &Testnet,
    ) -> ChaosReport {
        let balances = net.settle(Duration::from_secs(30)).await.ok();
        if let Ok(a) = net.audit().await {
            run.event(a.line());
        }
        if let Some(b) = &balances {
            if b.conserved() {
                checks.push(Check {
                    what: format!("the chains sum to the grants issued ({})", credits(b.expected)),
                    ok: true,
                });
            } else if self.scenario != super::Scenario::Fork {
                checks.push(Check {
                    what: format!(
                        "the chains sum to {}, NOT to the grants issued ({})",
                        credits(b.total),
                        credits(b.expected)
                    ),
                    ok: false,
                });
            }
        }
        if let Some(b) = balances.as_ref().filter(|b| !b.conserved()) {
            // The forked payments are credits spent twice: the chains sum
            // to more than was granted, by what the proof exposes.
            run.event(format!(
                "chains sum to {}, grants issued {}: {} spent twice",
                credits(b.total),
                credits(b.expected),
                credits(b.total - b.expected)
            ));
        }
        let providers = net
            .nodes()
            .iter()
            .filter(|n| n.spec.provide)
            .map(|n| ProviderLine {
                node: n.name(),
                role: n.spec.describe(),
                domain: n.spec.domain.clone(),
                accepted: 0,
                failed: 0,
                wrong: 0,
                paid_micros: 0,
                balance_micros: balances.as_ref().and_then(|b| b.of(n.index)).unwrap_or(0),
                learnt_cu: None,
                advertised_cu: n.per_slot_cu(),
                banned: false,
            })
            .collect();
        if checks.is_empty() {
            checks.push(Check {
                what: "nothing checked".into(),
                ok: false,
            });
        }
        ChaosReport {
            scenario: self.scenario,
            ok: checks.iter().all(|c| c.ok),
            events: run.events,
            checks,
            providers,
            job_wall_ms: 0,
            failed_copies: 0,
            failure_reasons: Default::default(),
            wrong_caught: 0,
            total_micros: balances.as_ref().map_or(0, |b| b.total),
            expected_micros: balances.as_ref().map_or(0, |b| b.expected),
        }
    }
}

/// Whether the job has ended.
async fn requester_done(client: &agora_node::api::client::Client, id: &agora_protocol::JobId) -> bool {
    client.job(id).await.is_ok_and(|s| s.state.is_terminal())
}

/// Copies of the job that have a receipt or are running.
pub(super) async fn work_done(
    client: &agora_node::api::client::Client,
    id: &agora_protocol::JobId,
) -> anyhow::Result<usize> {
    let s = client
        .job_with_receipts(id)
        .await
        .context("cannot read the job")?;
    Ok(s.tasks
        .iter()
        .flat_map(|t| &t.copies)
        .filter(|c| c.receipt.is_some() || c.state == "running")
        .count())
}
