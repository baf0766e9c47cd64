//! `chaos relay-loss`: the relay that providers behind NAT are reached
//! through dies mid-job (see the scenario list in the parent module).
//!
//! Needs `--netns --nat 2`: two public nodes (`eu/pub`, neither
//! providing) relay for the others; the requester sits behind one NAT
//! router (`eu/home1`) and two providers behind another (`eu/home2`), with
//! hole punching off, so that every byte between the homes goes through a
//! relay. Once a quarter of the job is verified, the relay most of the
//! providers hold a slot on is killed (SIGKILL). The job must still finish
//! with every output right, each provider must then hold a slot on the
//! relay that is left, and (the killed relay restarted from its data dir)
//! the chains must sum to the grants issued.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use agora_protocol::NodeId;
use anyhow::{Context, bail};

use super::{ChaosCommand, ChaosReport, Check, LO, Run, SHARE};
use crate::artifacts::Modules;
use crate::job::{self, Params};
use crate::process::{NodeSpec, Testnet};
use crate::workload::primes;

/// What the providers behind NAT add to their config: no hole punching,
/// so that the relay carries all their traffic.
const RELAYED_ONLY: &str = "[relay]\nhole_punching = false\n";

/// The two relays' indices.
const RELAYS: [usize; 2] = [0, 1];
/// The requester's.
const REQUESTER: usize = 2;

impl ChaosCommand {
    /// `relay-loss`: see the module docs.
    pub(super) async fn relay_loss(
        &self,
        net: &mut Testnet,
        modules: &Modules,
    ) -> anyhow::Result<ChaosReport> {
        if net.lab().is_none() || self.net.nat < 2 {
            bail!(
                "relay-loss puts nodes behind NAT routers: run it with --netns --nat 2 (root and nftables)"
            );
        }
        let provider = || {
            NodeSpec::provider("eu/home2")
                .with_cpu_share(SHARE)
                .with_slots(1)
                .with_config(RELAYED_ONLY)
        };
        net.start_all(vec![
            NodeSpec::requester("eu/pub").with_slots(1),
            NodeSpec::requester("eu/pub").with_slots(1),
            NodeSpec::requester("eu/home1").with_slots(1),
            provider(),
            provider(),
        ])
        .await?;
        net.wait_converged(Duration::from_secs(90)).await?;
        let providers: Vec<usize> = net
            .nodes()
            .iter()
            .filter(|n| n.spec.provide)
            .map(|n| n.index)
            .collect();
        let t = Instant::now();
        while relays_held(net, &providers).await.len() < providers.len() {
            if t.elapsed() > Duration::from_secs(90) {
                bail!("the providers behind NAT took no relay slot within 90 s");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }

        let ranges = primes::even(self.tasks, LO, self.width);
        let inputs = primes::trial_inputs(&ranges);
        let expected: Vec<Vec<u8>> = ranges.iter().map(|&(lo, hi)| primes::output(lo, hi)).collect();
        let requester = net.node(REQUESTER).client.clone();
        let params = Params {
            deadline: Duration::from_secs(5),
            ..Params::default()
        };
        let spec = job::prepare(&requester, &modules.read("primes")?, None, &inputs, &params).await?;
        let id = job::submit(&requester, &spec).await?;
        let mut run = Run::labelled(net, inputs.len(), self.json);
        run.event(format!(
            "submitted job {id} from behind one NAT: {} prime-count tasks for the 2 providers behind another",
            inputs.len()
        ));
        let mut killed: Option<(usize, usize)> = None;
        let deadline = Instant::now() + Duration::from_secs(300);
        let status = loop {
            let s = requester.job(&id).await.context("cannot read the job's status")?;
            run.progress.update(&s);
            if killed.is_none() && s.counts.verified * 4 >= s.total && !s.state.is_terminal() {
                let held = relays_held(net, &providers).await;
                let victim = RELAYS
                    .into_iter()
                    .max_by_key(|&r| held.values().filter(|v| v.contains(&net.node(r).id())).count())
                    .unwrap_or(RELAYS[0]);
                let holders = held
                    .values()
                    .filter(|v| v.contains(&net.node(victim).id()))
                    .count();
                net.kill(victim)?;
                killed = Some((victim, s.counts.verified));
                run.event(format!(
                    "killed relay node-{victim} (SIGKILL) at {} of {} verified; {holders} of the {} providers held a slot on it",
                    s.counts.verified,
                    s.total,
                    providers.len()
                ));
            }
            if s.state.is_terminal() {
                break s;
            }
            if Instant::now() > deadline {
                bail!("the job did not end within 300 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        run.progress.finish();
        let outputs_right = job::ensure_done(&status).is_ok()
            && job::compare(&job::outputs(&requester, &id).await?, &expected).is_empty();
        run.event(format!("job {:?} in {} ms", status.state, status.wall_ms));
        let mut checks = vec![Check {
            what: format!(
                "the job is done with every output right ({} tasks, {} ms)",
                status.total, status.wall_ms
            ),
            ok: outputs_right,
        }];
        let Some((victim, at)) = killed else {
            checks.push(Check {
                what: "the relay was NOT killed: the job ended before a quarter was verified".into(),
                ok: false,
            });
            return Ok(self.bare_report(run, checks, net).await);
        };
        checks.push(Check {
            what: format!(
                "{} of {} tasks were verified after the relay died",
                status.counts.verified.saturating_sub(at),
                status.total
            ),
            ok: status.counts.verified > at,
        });
        let left = net.node(RELAYS[usize::from(victim == RELAYS[0])]).id();
        let t = Instant::now();
        let moved = loop {
            let held = relays_held(net, &providers).await;
            let on_left = held.values().filter(|v| v.contains(&left)).count();
            if on_left == providers.len() || t.elapsed() > Duration::from_secs(30) {
                break on_left;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        checks.push(Check {
            what: format!(
                "{moved} of the {} providers hold a slot on the relay that is left",
                providers.len()
            ),
            ok: moved == providers.len(),
        });
        // Its grant counts in the sum: start it again from its data dir.
        net.restart(victim).await?;
        let mut report = self.bare_report(run, checks, net).await;
        let outcome = job::outcome(&status);
        report.job_wall_ms = status.wall_ms;
        report.failed_copies = outcome.failed_copies;
        for line in &mut report.providers {
            let id = net.nodes().iter().find(|n| n.name() == line.node).map(|n| n.id());
            if let Some(w) = id.and_then(|id| outcome.providers.get(&id)) {
                (line.accepted, line.failed, line.paid_micros) = (w.accepted, w.failed, w.paid_micros);
            }
        }
        Ok(report)
    }
}

/// The relays each of `providers` holds a slot on (providers that do not
/// answer, or hold none, are left out).
async fn relays_held(net: &Testnet, providers: &[usize]) -> HashMap<usize, Vec<NodeId>> {
    let mut out = HashMap::new();
    for &i in providers {
        if let Ok(s) = net.node(i).client.status().await
            && !s.relays.is_empty()
        {
            out.insert(i, s.relays);
        }
    }
    out
}
