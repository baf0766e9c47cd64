//! `chaos endless-tasks`: a requester that asks for tasks that never end
//! (see the scenario list in the parent module).

use std::time::{Duration, Instant};

use super::{ChaosCommand, ChaosReport, Check, Run};
use crate::job::{self, Params};
use crate::process::Testnet;
use crate::progress::JobProgress;
use crate::workload::{TaskInput, primes};

/// A WASI command that loops for ever.
const SPIN: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $l (br $l))))"#;

impl ChaosCommand {
    /// `endless-tasks`: see the module docs of the parent.
    pub(super) async fn endless(
        &self,
        net: &mut Testnet,
        modules: &crate::artifacts::Modules,
    ) -> anyhow::Result<ChaosReport> {
        self.start(net).await?;
        let attacker = net.node(net.nodes().len() - 1).client.clone();
        let honest = net.node(0).client.clone();
        let spin = wat::parse_str(SPIN)?;
        let inputs: Vec<TaskInput> = (0..8)
            .map(|i| TaskInput {
                name: format!("spin-{i}"),
                bytes: i.to_string().into_bytes(),
                estimate: None,
            })
            .collect();
        let mut run = Run {
            t0: Instant::now(),
            events: Vec::new(),
            progress: JobProgress::new(inputs.len(), Default::default(), true),
            quiet: self.json,
        };
        let mut checks = Vec::new();

        // 1. No fuel limit to speak of and a deadline 114 years away.
        let huge = Params {
            fuel: u64::MAX,
            deadline: Duration::from_secs(1_000_000 * 3600),
            ..Params::default()
        };
        let outcome = match job::prepare(&attacker, &spin, None, &inputs, &huge).await {
            Ok(spec) => match job::submit(&attacker, &spec).await {
                Ok(id) => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    let ran = super::fork::work_done(&attacker, &id).await?;
                    let _ = attacker.cancel(&id).await;
                    format!("accepted, and {ran} copies ran in 5 s")
                        .replace("and 0 copies ran", "but no provider took a copy")
                }
                Err(e) => format!("refused at submission: {e}"),
            },
            Err(e) => format!("refused at submission: {e}"),
        };
        run.event(format!(
            "8 spinning tasks with fuel 2^64 − 1 and a 1,000,000 h deadline: {outcome}"
        ));
        checks.push(Check {
            what: format!("unbounded tasks are not run: {outcome}"),
            ok: !outcome.contains("copies ran"),
        });

        // 2. Affordable spinning tasks take every slot; cancelling the job
        // frees them within a second.
        let affordable = Params {
            fuel: 100_000_000_000,
            deadline: Duration::from_secs(600),
            ..Params::default()
        };
        let spec = job::prepare(&attacker, &spin, None, &inputs[..4], &affordable).await?;
        let id = job::submit(&attacker, &spec).await?;
        let busy_until = Instant::now() + Duration::from_secs(30);
        let mut busy = 0;
        while Instant::now() < busy_until {
            busy = running(net).await;
            if busy >= 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        run.event(format!("4 spinning tasks of 100 G fuel each: {busy} running"));
        let cancelled = Instant::now();
        attacker.cancel(&id).await?;
        let mut freed = None;
        while cancelled.elapsed() < Duration::from_secs(5) {
            if running(net).await == 0 {
                freed = Some(cancelled.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        checks.push(Check {
            what: match freed {
                Some(t) => format!(
                    "cancelling the job stopped its {busy} running copies within {} ms",
                    t.as_millis()
                ),
                None => format!("cancelling the job did NOT stop its {busy} running copies within 5 s"),
            },
            ok: busy >= 1 && freed.is_some_and(|t| t <= Duration::from_secs(1)),
        });

        // 3. An honest job right after runs as usual.
        let ranges = primes::even(self.tasks, super::LO, self.width);
        let honest_inputs = primes::trial_inputs(&ranges);
        let expected: Vec<Vec<u8>> = ranges.iter().map(|&(lo, hi)| primes::output(lo, hi)).collect();
        let spec = job::prepare(
            &honest,
            &modules.read("primes")?,
            None,
            &honest_inputs,
            &Params::default(),
        )
        .await?;
        let hid = job::submit(&honest, &spec).await?;
        let status =
            job::wait_quietly(&honest, &hid, Duration::from_secs(180), Duration::from_millis(50)).await?;
        let good = job::ensure_done(&status).is_ok()
            && job::compare(&job::outputs(&honest, &hid).await?, &expected).is_empty();
        run.event(format!(
            "honest job of {} tasks: {:?} in {} ms",
            honest_inputs.len(),
            status.state,
            status.wall_ms
        ));
        checks.push(Check {
            what: format!(
                "an honest job right after is done with correct outputs ({} ms)",
                status.wall_ms
            ),
            ok: good,
        });
        Ok(self.bare_report(run, checks, net).await)
    }
}

/// Tasks running on all providers now.
async fn running(net: &Testnet) -> u32 {
    let mut n = 0;
    for p in net.nodes().iter().filter(|n| n.spec.provide) {
        if let Ok(s) = p.client.status().await {
            n += s.running;
        }
    }
    n
}
