//! `agora-testnet up`: start N nodes on loopback and keep them running.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use crate::artifacts;
use crate::process::{NodeSpec, domain_names};
use crate::signal;

/// Start N `agora node` processes on 127.0.0.1, bootstrap them from the
/// first, wait until they see each other, print one line per node, and keep
/// them running until Ctrl-C or SIGTERM, then stop them cleanly.
///
/// Every node has its own data dir (identity, store, `node.json`, `node.log`)
/// under DIR, its own ports, and the idle policy off. With `--netns`, every
/// node runs in its own network namespace on its own address, with the
/// `--delay`, `--jitter`, `--loss` and `--bandwidth` asked between domains.
#[derive(Debug, clap::Args)]
pub struct UpCommand {
    /// Nodes to start.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub nodes: u16,
    /// Where the nodes' data dirs go. Default: a new ./testnet-out/up-TIME.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Spread the nodes over this many domains (eu/a, eu/b, us/a, …).
    #[arg(long, default_value_t = 1, value_name = "D")]
    pub domains: usize,
    /// Give the nodes different CPU shares (1, 0.5, 0.25, in turn) and, unless
    /// --domains says otherwise, two domains.
    #[arg(long)]
    pub heterogeneous: bool,
    /// Print one JSON object per node (keys peer_id, listen, api, token,
    /// data_dir, and domain, cpu_share, pid, dashboard).
    #[arg(long)]
    pub json: bool,
    /// Separate hosts.
    #[command(flatten)]
    pub net: super::NetnsArgs,
}

/// One line of `up --json`.
#[derive(Debug, Serialize)]
pub struct NodeLine {
    /// Peer id.
    pub peer_id: String,
    /// Addresses to dial it at, `/p2p/` included.
    pub listen: Vec<String>,
    /// API address.
    pub api: String,
    /// API token.
    pub token: String,
    /// Data dir.
    pub data_dir: String,
    /// Domain.
    pub domain: String,
    /// CPU share per task.
    pub cpu_share: f64,
    /// Process id.
    pub pid: u32,
    /// A one-time link to its dashboard (valid 15 minutes; `agora
    /// dashboard --data-dir DIR` makes new ones).
    pub dashboard: String,
}

/// The nodes `up` starts.
pub fn plan(nodes: usize, domains: usize, heterogeneous: bool) -> Vec<NodeSpec> {
    let domains = if heterogeneous && domains <= 1 {
        2
    } else {
        domains.max(1)
    };
    let names = domain_names(domains);
    (0..nodes)
        .map(|i| {
            let spec = NodeSpec::provider(&names[i % names.len()]);
            if heterogeneous {
                spec.with_cpu_share(super::SHARES[i % super::SHARES.len()])
            } else {
                spec
            }
        })
        .collect()
}

impl UpCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        super::block_on(self.run())?
    }

    async fn run(self) -> anyhow::Result<ExitCode> {
        let agora = artifacts::agora_binary()?;
        let dir = match &self.dir {
            Some(d) => d.clone(),
            None => crate::report::fresh_dir("up")?,
        };
        let specs = plan(usize::from(self.nodes), self.domains, self.heterogeneous);
        let mut net = self.net.testnet(agora, &dir, false)?;
        eprintln!(
            "starting {} nodes; data dirs under {}",
            specs.len(),
            net.dir().display()
        );
        signal::interruptible(async {
            net.start_all(specs).await?;
            net.wait_converged(Duration::from_secs(60)).await
        })
        .await?;
        net.print_links();
        for n in net.nodes() {
            let dashboard = n.dashboard_url().await?;
            if self.json {
                let line = NodeLine {
                    peer_id: n.info.peer_id.to_string(),
                    listen: n.dial_addrs(),
                    api: n.info.api.clone(),
                    token: n.info.token.clone(),
                    data_dir: n.data_dir.display().to_string(),
                    domain: n.spec.domain.clone(),
                    cpu_share: n.spec.cpu_share,
                    pid: n.pid().unwrap_or(0),
                    dashboard,
                };
                println!("{}", serde_json::to_string(&line)?);
            } else {
                println!(
                    "{}  {}  {:<6}  share {:<4}  {:>6} CU  api {}  token {}  data {}",
                    n.name(),
                    n.info.peer_id,
                    n.spec.domain,
                    n.spec.cpu_share,
                    n.cu(),
                    n.info.api,
                    n.info.token,
                    n.data_dir.display()
                );
                println!("        dashboard {dashboard}");
            }
        }
        eprintln!(
            "testnet up: {} nodes see each other. Talk to one with `--data-dir DIR` (AGORA_DATA_DIR=DIR); \
             each dashboard link works once, within 15 minutes (`agora dashboard --data-dir DIR` makes another). \
             Ctrl-C stops them.",
            net.nodes().len()
        );
        let shutdown = signal::shutdown();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    for e in net.exited() {
                        eprintln!("warning: node-{} exited by itself ({}); see {}", e.index, e.status,
                            net.node(e.index).log_path().display());
                    }
                }
            }
        }
        eprintln!("stopping the nodes…");
        let s = net.stop();
        eprintln!(
            "stopped: {} exited cleanly{}",
            s.clean,
            if s.killed > 0 {
                format!(", {} killed after {:?}", s.killed, crate::process::STOP_GRACE)
            } else {
                String::new()
            }
        );
        Ok(ExitCode::SUCCESS)
    }
}
