//! `chaos disk-fill`: a requester whose tasks write as much output as they
//! can for next to no computation, against providers whose owners cap
//! output per task (`max_output`, 4 MiB here), stored content
//! (`max_disk`, 16 MiB) and how long unused content stays
//! (`content_retention`, 5 s).
//!
//! It first asks for 64 MiB of output per task (beyond every owner's cap:
//! its own node refuses the job, and no provider may take it), then for 4 MiB, with 32 tasks that write
//! exactly that: 128 MiB, twice what the four providers' caps hold. The content each provider holds is sampled throughout: it
//! may pass the cap by at most what its slot is writing (one task's
//! output) and the hash trees of what it holds, and once the retention
//! has passed, what nothing needs must be gone. The writes are paid for: host calls charge fuel by the byte. An
//! honest job afterwards must run as usual.

use std::path::Path;
use std::time::{Duration, Instant};

use agora_protocol::units::Bytes;

use super::{ChaosCommand, ChaosReport, Check, LO};
use crate::artifacts::Modules;
use crate::job::{self, Params};
use crate::process::Testnet;
use crate::workload::TaskInput;

/// The providers' configuration in this scenario.
pub(super) const CONFIG: &str =
    "[provider]\nmax_output = \"4MiB\"\nmax_disk = \"16MiB\"\ncontent_retention = \"5s\"\n";
/// `max_output` of [`CONFIG`].
pub(super) const MAX_OUTPUT: u64 = 4 << 20;
/// `max_disk` of [`CONFIG`].
const MAX_DISK: u64 = 16 << 20;

/// A WASI command that writes 4 MiB to stdout (the owners' cap), 64 KiB
/// at a time, each chunk starting with the (up to 64) bytes of its stdin so
/// that every task's output is its own.
const FLOOD: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    (local $i i32)
    (i32.store (i32.const 16) (i32.const 65536))
    (i32.store (i32.const 20) (i32.const 64))
    (drop (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
    (i32.store (i32.const 0) (i32.const 65536))
    (i32.store (i32.const 4) (i32.const 65536))
    (loop $l
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 64))))))"#;

/// Bytes of the blob files in a data dir's content store: the attacker's
/// outputs are far above `SMALL_BLOB_MAX`, so they are files, not records.
fn held(data_dir: &Path) -> u64 {
    std::fs::read_dir(data_dir.join("content"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

impl ChaosCommand {
    /// `disk-fill`: see the module docs.
    pub(super) async fn disk_fill(
        &self,
        net: &mut Testnet,
        modules: &Modules,
    ) -> anyhow::Result<ChaosReport> {
        self.start(net).await?;
        let mut run = self.fresh_run();
        let mut checks = Vec::new();
        let attacker_index = net.nodes().len() - 1;
        let attacker = net.node(attacker_index).client.clone();
        let providers: Vec<(String, std::path::PathBuf)> = net
            .nodes()
            .iter()
            .filter(|n| n.spec.provide)
            .map(|n| (n.name(), n.data_dir.clone()))
            .collect();
        let flood = wat::parse_str(FLOOD)?;
        let inputs: Vec<TaskInput> = (0..32)
            .map(|i| TaskInput {
                name: format!("fill-{i}"),
                bytes: format!("task {i} {:032x}", rand::random::<u128>()).into_bytes(),
                estimate: None,
            })
            .collect();

        // 1. Output beyond every owner's cap: nobody takes it.
        let beyond = Params {
            max_output: Some(Bytes::mib(64)),
            ..Params::default()
        };
        let spec = job::prepare(&attacker, &flood, None, &inputs[..4], &beyond).await?;
        // Its own node refuses it at submission (no provider it knows allows
        // that much); failing that, no provider may take it.
        let outcome = match job::submit(&attacker, &spec).await {
            Ok(id) => {
                tokio::time::sleep(Duration::from_secs(4)).await;
                let ran = super::fork::work_done(&attacker, &id).await?;
                let _ = attacker.cancel(&id).await;
                format!("{ran} copies ran in 4 s")
            }
            Err(e) => format!("refused at submission: {e:#}"),
        };
        run.event(format!("4 tasks asking for 64 MiB of output each: {outcome}"));
        checks.push(Check {
            what: format!("no provider takes a task whose output may exceed its owner's cap: {outcome}"),
            ok: outcome.starts_with("refused") || outcome.starts_with("0 copies"),
        });

        // 2. Within the cap: 32 tasks of 4 MiB each, twice what the four
        // providers' caps hold together.
        let before: Vec<u64> = providers.iter().map(|(_, d)| held(d)).collect();
        let within = Params {
            max_output: Some(Bytes(MAX_OUTPUT)),
            // 4 MiB written costs about 4.2 M fuel (1 per byte, 1,000 per
            // call).
            fuel: 100_000_000,
            deadline: Duration::from_secs(60),
            ..Params::default()
        };
        let spec = job::prepare(&attacker, &flood, None, &inputs, &within).await?;
        let id = job::submit(&attacker, &spec).await?;
        let started = Instant::now();
        let mut peak = vec![0u64; providers.len()];
        let status = loop {
            for (p, (_, d)) in peak.iter_mut().zip(&providers) {
                *p = (*p).max(held(d));
            }
            let s = attacker.job(&id).await?;
            if s.state.is_terminal() || started.elapsed() > Duration::from_secs(120) {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let detail = attacker.job_with_receipts(&id).await?;
        let copies: Vec<_> = detail.tasks.iter().flat_map(|t| &t.copies).collect();
        let ran = copies.iter().filter(|c| c.fuel.is_some()).count();
        let fuel: u64 = copies.iter().filter_map(|c| c.fuel).map(|f| f.0).sum();
        let exits: std::collections::BTreeMap<String, usize> =
            detail.tasks.iter().fold(Default::default(), |mut m, t| {
                *m.entry(t.exit.clone().or(t.error.clone()).unwrap_or_else(|| "-".into()))
                    .or_default() += 1;
                m
            });
        run.event(format!(
            "32 tasks writing 4 MiB each (the cap): {:?} after {} ms; {ran} copies ran, {fuel} fuel charged, {} spent; ends: {exits:?}",
            status.state,
            status.wall_ms,
            status.spent
        ));
        let line = |v: &[u64]| {
            providers
                .iter()
                .zip(v)
                .map(|((n, _), b)| format!("{n} {:.1} MiB", *b as f64 / 1048576.0))
                .collect::<Vec<_>>()
                .join(", ")
        };
        run.event(format!(
            "content held before {}; at its peak {}",
            line(&before),
            line(&peak)
        ));
        // A provider takes work while what it holds is within the cap, so
        // it may pass the cap by the output its slot writes. Besides, a
        // large blob's hash tree (1/16 of its size) is written beside it
        // when the blob is first asked for in slices, after the provider
        // last counted: the trees of all it holds come on top.
        let worst = peak.iter().copied().max().unwrap_or(0);
        let bound = (MAX_DISK + MAX_OUTPUT) + (MAX_DISK + MAX_OUTPUT) / 16;
        checks.push(Check {
            what: format!(
                "every provider's stored content stayed within its 16 MiB cap plus one task's output, and their hash trees ({:.2} MiB): at most {:.1} MiB",
                bound as f64 / 1048576.0,
                worst as f64 / 1048576.0
            ),
            ok: worst <= bound,
        });
        checks.push(Check {
            what: format!("the bytes written were charged: {fuel} fuel for {ran} copies"),
            ok: ran == 0 || fuel >= ran as u64 * MAX_OUTPUT,
        });

        // 3. After the retention, what nothing needs is gone.
        let wait = Instant::now();
        let mut after = providers.iter().map(|(_, d)| held(d)).collect::<Vec<_>>();
        while wait.elapsed() < Duration::from_secs(20) && after.iter().any(|&b| b >= 1 << 20) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            after = providers.iter().map(|(_, d)| held(d)).collect();
        }
        run.event(format!(
            "{:.1} s after the job ended, content held: {}",
            wait.elapsed().as_secs_f64(),
            line(&after)
        ));
        checks.push(Check {
            what: format!(
                "within 20 s of the job's end (retention 5 s) no provider holds 1 MiB of content any more (largest {:.2} MiB)",
                after.iter().copied().max().unwrap_or(0) as f64 / 1048576.0
            ),
            ok: after.iter().all(|&b| b < 1 << 20),
        });

        // 4. An honest job runs as usual.
        let honest = self.honest_job(net, modules, 0, LO).await?;
        run.event(honest.line("honest job after the attack"));
        checks.push(Check {
            what: honest.line("an honest job after the attack is done"),
            ok: honest.ok,
        });
        Ok(self.bare_report(run, checks, net).await)
    }
}
