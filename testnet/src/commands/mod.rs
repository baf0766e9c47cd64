//! One module per subcommand, each with an `execute` method.

pub mod bench;
pub mod chaos;
pub mod corpus;
pub mod crash_loop;
pub mod demo;
pub mod scale;
pub mod up;

use std::future::Future;

use std::time::Duration;

use anyhow::Context;

use crate::netns::Lab;
use crate::process::Testnet;

/// Runs `f` on a multi-threaded runtime of two workers (the machines the
/// testnet targets have two cores; the nodes are other processes).
pub fn block_on<F: Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(rt.block_on(f))
}

/// CPU shares of a heterogeneous testnet, in turn.
pub const SHARES: &[f64] = &[1.0, 0.5, 0.25];

/// `--netns` and the links between its domains, shared by the commands
/// that start processes.
#[derive(Debug, Clone, clap::Args)]
pub struct NetnsArgs {
    /// Run every node in its own network namespace, joined by veth pairs
    /// through a router namespace: real delay between domains and real
    /// partitions. Needs root and iproute2.
    #[arg(long)]
    pub netns: bool,
    /// One-way delay (each way) between domains with --netns: `20ms` for
    /// every pair, or `eu/a:us/a=80ms` for the domains within two prefixes
    /// (the most specific wins). Repeatable. Applied by the lab's own
    /// forwarder (no netem needed); the testnet prints what it measured.
    #[arg(long, value_name = "[A:B=]DURATION", requires = "netns")]
    pub delay: Vec<String>,
    /// Jitter added to the delay, uniformly within ± this, as --delay
    /// (`5ms` or `eu/a:us/a=5ms`). A flow is never reordered.
    #[arg(long, value_name = "[A:B=]DURATION", requires = "netns")]
    pub jitter: Vec<String>,
    /// Packet loss between domains, as --delay (`1%` or `eu/a:us/a=0.5%`).
    #[arg(long, value_name = "[A:B=]PERCENT", requires = "netns")]
    pub loss: Vec<String>,
    /// A domain's access link rate, each way, for traffic to and from
    /// other domains: `eu/b=1mbit` (kbit, mbit, gbit). Repeatable. A
    /// packet waits at most 200 ms for the link, then is dropped.
    #[arg(long, value_name = "DOMAIN=RATE", requires = "netns")]
    pub bandwidth: Vec<String>,
    /// With --netns, put this many domains (after the first, the bootstrap
    /// node's) each behind its own NAT router (nftables masquerade): their
    /// nodes can dial out but are reached only through relays or punched
    /// holes. Needs the `nft` tool (Debian's `nftables`).
    #[arg(long, default_value_t = 0, value_name = "N", requires = "netns")]
    pub nat: usize,
}

/// Where a command's nodes keep their data dirs and logs: the directory
/// the user gave, or a temporary one removed afterwards unless kept.
pub(crate) struct WorkDir {
    path: std::path::PathBuf,
    tmp: Option<tempfile::TempDir>,
}

impl WorkDir {
    /// `given`, or a new temporary directory named `prefix…`.
    pub(crate) fn new(given: Option<&std::path::Path>, prefix: &str) -> anyhow::Result<WorkDir> {
        Ok(match given {
            Some(p) => WorkDir {
                path: p.to_path_buf(),
                tmp: None,
            },
            None => {
                let t = tempfile::Builder::new().prefix(prefix).tempdir()?;
                WorkDir {
                    path: t.path().to_path_buf(),
                    tmp: Some(t),
                }
            }
        })
    }

    /// The directory.
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Keeps a temporary directory (after a failure, for its logs) and says
    /// where it is.
    pub(crate) fn keep(self) {
        if let Some(t) = self.tmp {
            eprintln!("node data dirs and logs kept in {}", t.keep().display());
        }
    }
}

/// A duration flag (`20ms`, `5s`), for clap.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    agora_protocol::units::parse_duration(s).map_err(|e| e.to_string())
}

impl NetnsArgs {
    /// The links asked for.
    pub fn shaping(&self) -> anyhow::Result<crate::netns::Shaping> {
        let mut s = crate::netns::Shaping::default();
        for d in &self.delay {
            s.add_delay(d).context("--delay")?;
        }
        for j in &self.jitter {
            s.add_jitter(j).context("--jitter")?;
        }
        for l in &self.loss {
            s.add_loss(l).context("--loss")?;
        }
        for b in &self.bandwidth {
            s.add_bandwidth(b).context("--bandwidth")?;
        }
        Ok(s)
    }

    /// A testnet in `dir` whose nodes run `agora`, in namespaces if asked.
    /// Prints what the lab could not do (a kernel without netem).
    pub fn testnet(
        &self,
        agora: std::path::PathBuf,
        dir: &std::path::Path,
        quiet: bool,
    ) -> anyhow::Result<Testnet> {
        let net = Testnet::new(agora, dir)?;
        if !self.netns {
            return Ok(net);
        }
        let lab = Lab::new(self.shaping()?)?.with_nat(self.nat)?;
        if !quiet && self.nat > 0 {
            eprintln!(
                "netns: {} domain(s) after the first each behind its own NAT router",
                self.nat
            );
        }
        if !quiet {
            let links = lab.shaping().describe();
            if links.is_empty() {
                eprintln!("netns: every node in its own namespace; no delay between domains");
            } else {
                eprintln!("netns: every node in its own namespace; links between domains:");
                for l in links {
                    eprintln!("  {l}");
                }
            }
        }
        Ok(net.with_lab(lab))
    }
}
