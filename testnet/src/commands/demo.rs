//! `agora-testnet demo`: the Mandelbrot set rendered across a heterogeneous
//! testnet, verified, paid for and written to a PNG.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::job::{self, Outcome, Params};
use crate::process::{NodeSpec, Testnet, domain_names};
use crate::progress::JobProgress;
use crate::report::{Table, credits};
use crate::workload::mandelbrot;
use crate::{artifacts, signal};

/// CPU shares of the demo's providers, in turn: different enough to see,
/// small enough that five of them fit on two cores.
const DEMO_SHARES: &[f64] = &[0.5, 0.25, 0.5, 0.25, 0.25];

/// Render the Mandelbrot set on a local testnet, verified and paid for.
///
/// Builds what it needs (the agora binary, the example modules), starts a
/// requester and several providers with different CPU shares in three
/// domains, submits the mandelbrot job through the requester's API (each
/// tile on two providers whose outputs must agree), shows its progress,
/// writes the assembled PNG to the output directory, and prints who did
/// what, how it was verified and what was paid. Prints each node's dashboard
/// link; the requester's shows the tiles filling in. Stops every node at the
/// end (with --keep, at Ctrl-C).
#[derive(Debug, clap::Args)]
pub struct DemoCommand {
    /// Nodes, the requester included (at least 5).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u16).range(5..=32))]
    pub nodes: u16,
    /// Output directory (nodes' data dirs, the PNG). Default: a new
    /// ./testnet-out/demo-TIME.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Image size, WIDTHxHEIGHT.
    #[arg(long, default_value = "1600x1200", value_parser = parse_size)]
    pub size: (u32, u32),
    /// Tiles (tasks).
    #[arg(long, default_value_t = 48)]
    pub tiles: u32,
    /// Iterations after which a point counts as inside the set.
    #[arg(long, default_value_t = 500)]
    pub max_iter: u32,
    /// Providers that run each tile; their outputs must agree.
    #[arg(long, default_value_t = 2)]
    pub replicas: u8,
    /// Fraction of tiles the requester re-executes itself, in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    pub spot_check: f64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Keep the nodes running after the job, until Ctrl-C, so that their
    /// dashboards stay open (the requester's shows the finished image).
    #[arg(long)]
    pub keep: bool,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X', '×'])
        .ok_or_else(|| format!("`{s}` is not WIDTHxHEIGHT"))?;
    let w: u32 = w.trim().parse().map_err(|_| format!("bad width in `{s}`"))?;
    let h: u32 = h.trim().parse().map_err(|_| format!("bad height in `{s}`"))?;
    if !(1..=16384).contains(&w) || !(1..=16384).contains(&h) {
        return Err("width and height must be 1 to 16384".into());
    }
    Ok((w, h))
}

/// One node in the summary.
#[derive(Debug, Serialize)]
pub struct NodeRow {
    /// `node-I`.
    pub node: String,
    /// Peer id.
    pub peer_id: String,
    /// `requester` or `provider`.
    pub role: String,
    /// Domain.
    pub domain: String,
    /// CPU share per task.
    pub cpu_share: f64,
    /// Measured per-slot capacity, CU.
    pub per_slot_cu: u64,
    /// Tile copies accepted from it.
    pub accepted: usize,
    /// Copies that failed or were wrong.
    pub failed: usize,
    /// Credits it was paid (micro-credits).
    pub paid_micros: u64,
    /// Balance before the job (micro-credits).
    #[serde(rename = "balance_before_micros")]
    pub balance_before: i64,
    /// Balance after (micro-credits).
    #[serde(rename = "balance_after_micros")]
    pub balance_after: i64,
}

/// The demo's summary (`--json`).
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Whether everything checked out.
    pub ok: bool,
    /// The PNG written.
    pub png: String,
    /// Its size in bytes.
    pub png_bytes: usize,
    /// Image width and height, pixels.
    #[serde(rename = "size_px")]
    pub size: (u32, u32),
    /// The job id.
    pub job: String,
    /// Per node.
    pub nodes: Vec<NodeRow>,
    /// Verification and placement.
    pub outcome: Outcome,
    /// Credits moved (sum of payments), micro-credits.
    pub credits_moved_micros: u64,
    /// Sum of balances before, micro-credits.
    #[serde(rename = "total_before_micros")]
    pub total_before: i64,
    /// Sum of balances after, micro-credits.
    #[serde(rename = "total_after_micros")]
    pub total_after: i64,
    /// Whether the sum is unchanged.
    pub conserved: bool,
    /// Every chain audited by a peer, and what it found.
    pub audit: String,
    /// Whether every audit equals the node's own ledger.
    pub audited: bool,
    /// Submit to done, ms (the requester's clock).
    pub job_wall_ms: u64,
    /// The whole demo, ms (start-up included).
    pub total_wall_ms: u64,
}

impl DemoCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        super::block_on(self.run())?
    }

    async fn run(self) -> anyhow::Result<ExitCode> {
        let started = Instant::now();
        let agora = artifacts::agora_binary()?;
        let modules = artifacts::example_modules()?;
        let out = match &self.dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                d.canonicalize()?
            }
            None => crate::report::fresh_dir("demo")?,
        };
        let mut net = Testnet::new(agora, &out.join("nodes"))?;
        let domains = domain_names(3);
        let mut specs = vec![NodeSpec::requester(&domains[0]).with_slots(1)];
        for j in 0..usize::from(self.nodes) - 1 {
            specs.push(
                NodeSpec::provider(&domains[j % domains.len()])
                    .with_cpu_share(DEMO_SHARES[j % DEMO_SHARES.len()])
                    .with_slots(1),
            );
        }
        eprintln!(
            "starting {} nodes in {} domains (node-0 is the requester); output in {}",
            specs.len(),
            domains.len(),
            out.display()
        );
        let summary = signal::interruptible(self.demo(&mut net, specs, &modules, &out, started)).await;
        if self.keep && summary.is_ok() {
            eprintln!("the nodes keep running for their dashboards; Ctrl-C stops them");
            signal::shutdown().await;
        }
        let stopped = net.stop();
        eprintln!("stopped {} nodes", stopped.clean + stopped.killed);
        let summary = summary?;
        if self.json {
            println!("{}", serde_json::to_string(&summary)?);
        }
        if summary.ok {
            Ok(ExitCode::SUCCESS)
        } else {
            Ok(ExitCode::FAILURE)
        }
    }

    async fn demo(
        &self,
        net: &mut Testnet,
        specs: Vec<NodeSpec>,
        modules: &artifacts::Modules,
        out: &std::path::Path,
        started: Instant,
    ) -> anyhow::Result<Summary> {
        net.start_all(specs).await?;
        let took = net.wait_converged(Duration::from_secs(60)).await?;
        eprintln!(
            "all nodes see each other ({} ms after the last one started)",
            took.as_millis()
        );
        net.print_links();
        if !self.json {
            let mut t =
                Table::new(&["node", "role", "domain", "cpu share", "measured CU/slot"]).with_right(&[3, 4]);
            for n in net.nodes() {
                t.row(vec![
                    n.name(),
                    n.spec.describe(),
                    n.spec.domain.clone(),
                    n.spec.cpu_share.to_string(),
                    n.per_slot_cu().to_string(),
                ]);
            }
            print!("{}", t.render());
        }
        for n in net.nodes() {
            let url = n.dashboard_url().await?;
            let role = if n.spec.provide {
                ""
            } else {
                " (the requester: watch the tiles fill in)"
            };
            eprintln!("dashboard of {}{role}: {url}", n.name());
        }
        let (width, height) = self.size;
        let inputs = mandelbrot::inputs(width, height, self.tiles, self.max_iter);
        let requester = net.node(0);
        let params = Params {
            fuel: 20_000_000_000,
            memory: agora_protocol::units::Bytes::mib(64),
            replicas: self.replicas,
            spot_check: self.spot_check,
            ..Params::default()
        };
        let before = net.balances().await?;
        let spec = job::prepare(
            &requester.client,
            &modules.read("mandelbrot")?,
            Some(&modules.read("mandelbrot-reduce")?),
            &inputs,
            &params,
        )
        .await?;
        let id = job::submit(&requester.client, &spec).await?;
        eprintln!(
            "submitted job {id}: a {width}×{height} Mandelbrot image in {} tiles, {} replicas each{}",
            inputs.len(),
            self.replicas,
            if self.spot_check > 0.0 {
                format!(", {:.0}% spot-checked", self.spot_check * 100.0)
            } else {
                String::new()
            }
        );
        let labels: HashMap<_, _> = net
            .nodes()
            .iter()
            .map(|n| {
                (
                    n.id(),
                    format!("{} {} ({})", n.name(), n.spec.domain, n.spec.cpu_share),
                )
            })
            .collect();
        let mut progress = JobProgress::new(inputs.len(), labels, self.json);
        let status = job::follow(
            &requester.client,
            &id,
            Duration::from_secs(600),
            Duration::from_millis(100),
            |s| progress.update(s),
        )
        .await;
        progress.finish();
        let status = status?;
        job::ensure_done(&status)?;
        let reduced = status
            .reduced
            .context("the job is done but has no reduced result")?;
        let png = requester
            .client
            .get_content(&reduced)
            .await
            .context("cannot download the PNG")?;
        let png_path = out.join("mandelbrot.png");
        std::fs::write(&png_path, &png).with_context(|| format!("cannot write {}", png_path.display()))?;
        if let Err(e) = mandelbrot::check_png(&png, width, height) {
            bail!("the reduced result is not the image asked for: {e}");
        }
        let after = net.settle(Duration::from_secs(30)).await?;
        let outcome = job::outcome(&status);
        let nodes: Vec<NodeRow> = net
            .nodes()
            .iter()
            .map(|n| {
                let w = outcome.providers.get(&n.id()).cloned().unwrap_or_default();
                NodeRow {
                    node: n.name(),
                    peer_id: n.id().to_string(),
                    role: if n.spec.provide { "provider" } else { "requester" }.into(),
                    domain: n.spec.domain.clone(),
                    cpu_share: n.spec.cpu_share,
                    per_slot_cu: n.per_slot_cu(),
                    accepted: w.accepted,
                    failed: w.failed,
                    paid_micros: w.paid_micros,
                    balance_before: before.of(n.index).unwrap_or(0),
                    balance_after: after.of(n.index).unwrap_or(0),
                }
            })
            .collect();
        let conserved = after.conserved() && before.total == after.total;
        let audits = net.audit().await?;
        let audited =
            audits.mismatches.is_empty() && audits.unbacked.is_empty() && audits.checked == net.nodes().len();
        let ok = conserved && audited && outcome.wrong_caught == 0 && outcome.verified == outcome.tasks;
        let summary = Summary {
            ok,
            png: png_path.display().to_string(),
            png_bytes: png.len(),
            size: (width, height),
            job: id.to_string(),
            nodes,
            credits_moved_micros: outcome.spent_micros,
            total_before: before.total,
            total_after: after.total,
            conserved,
            audit: audits.line(),
            audited,
            job_wall_ms: status.wall_ms,
            total_wall_ms: started.elapsed().as_millis() as u64,
            outcome,
        };
        if !self.json {
            print_summary(&summary, after.outbox);
        }
        Ok(summary)
    }
}

fn print_summary(s: &Summary, outbox: usize) {
    let o = &s.outcome;
    println!();
    println!("Tasks per node");
    let mut t = Table::new(&[
        "node",
        "role",
        "domain",
        "share",
        "CU/slot",
        "tiles",
        "failed",
        "paid",
        "balance before",
        "after",
    ])
    .with_right(&[3, 4, 5, 6, 7, 8, 9]);
    for n in &s.nodes {
        let provider = n.role == "provider";
        t.row(vec![
            n.node.clone(),
            n.role.clone(),
            n.domain.clone(),
            if provider {
                n.cpu_share.to_string()
            } else {
                "-".into()
            },
            n.per_slot_cu.to_string(),
            if provider {
                n.accepted.to_string()
            } else {
                "-".into()
            },
            if provider {
                n.failed.to_string()
            } else {
                "-".into()
            },
            if provider {
                credits(n.paid_micros as i64)
            } else {
                "-".into()
            },
            credits(n.balance_before),
            credits(n.balance_after),
        ]);
    }
    print!("{}", t.render());
    println!();
    println!("Verification");
    println!(
        "  tiles verified          {}/{} ({} replicas each: {} tiles with ≥2 agreeing copies, {} agreeing copies)",
        o.verified, o.tasks, o.replicas, o.agreed_by_replicas, o.agreeing_copies
    );
    println!("  spot checks             {}", o.spot_checked);
    println!("  wrong results caught    {}", o.wrong_caught);
    println!(
        "  failed copies           {}{}",
        o.failed_copies,
        if o.failure_reasons.is_empty() {
            String::new()
        } else {
            format!(
                " (re-placed; {})",
                o.failure_reasons
                    .iter()
                    .map(|(why, n)| format!("{n}× {why}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    println!("  backup copies           {}", o.backups);
    println!();
    println!("Credits");
    println!(
        "  moved (sum of payments) {}",
        credits(s.credits_moved_micros as i64)
    );
    println!(
        "  sum of balances         {} before, {} after: {}",
        credits(s.total_before),
        credits(s.total_after),
        if s.conserved {
            "conserved ✔".to_owned()
        } else if outbox > 0 {
            format!("NOT settled: {outbox} payments not countersigned ✘")
        } else {
            "NOT conserved ✘".to_owned()
        }
    );
    println!("  {} {}", s.audit, if s.audited { "✔" } else { "✘" });
    println!();
    println!(
        "Image     {} ({}×{}, {} bytes, PNG signature ✔)",
        s.png, s.size.0, s.size.1, s.png_bytes
    );
    println!(
        "Wall time {:.2} s for the job (submit to verified, reduced result), {:.1} s in all",
        s.job_wall_ms as f64 / 1000.0,
        s.total_wall_ms as f64 / 1000.0
    );
    println!("{}", if s.ok { "demo OK ✔" } else { "demo FAILED ✘" });
}
