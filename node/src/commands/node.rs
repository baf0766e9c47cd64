//! `agora node`: run a node until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use agora_protocol::Domain;
use agora_protocol::units::{Bytes, Price};
use anyhow::Context;
use libp2p::Multiaddr;

use crate::config::{Config, DEFAULT_CONFIG};
use crate::node::{Node, Options};

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

/// Run a node: measure capacity, join the network, offer and buy compute.
#[derive(Debug, clap::Args)]
pub struct NodeCommand {
    /// Data dir (identity, store, caches). Default: $AGORA_DATA_DIR, else the platform's data dir.
    #[arg(long, env = "AGORA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on (repeatable), e.g. /ip4/0.0.0.0/tcp/4001.
    #[arg(long = "listen", value_name = "MULTIADDR", value_parser = multiaddr_arg)]
    pub listen: Vec<Multiaddr>,
    /// Peer to dial at start (repeatable), e.g. /ip4/1.2.3.4/tcp/4001/p2p/12D3KooW…
    #[arg(long = "bootstrap", value_name = "MULTIADDR", value_parser = multiaddr_arg)]
    pub bootstrap: Vec<Multiaddr>,
    /// Local API address (keep it on loopback).
    #[arg(long, value_name = "ADDR")]
    pub api: Option<SocketAddr>,
    /// Hierarchical domain, e.g. eu/de/berlin.
    #[arg(long, value_name = "PATH")]
    pub domain: Option<Domain>,
    /// Asking price in credits per CU-second.
    #[arg(long, value_name = "CREDITS")]
    pub price: Option<Price>,
    /// Tasks run at once (0: one per core).
    #[arg(long, value_name = "N")]
    pub slots: Option<u32>,
    /// Share of a core each task may use, in (0, 1].
    #[arg(long, value_name = "FRACTION")]
    pub cpu_share: Option<f64>,
    /// Memory a task may use, e.g. 256MiB.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<Bytes>,
    /// Declared energy cost, millijoules per CU-second.
    #[arg(long, value_name = "MJ")]
    pub energy: Option<u64>,
    /// Take work only while the machine is otherwise idle.
    #[arg(long, value_name = "on|off")]
    pub idle_policy: Option<Switch>,
    /// Offer capacity to others (off: only submit jobs).
    #[arg(long, value_name = "on|off")]
    pub provide: Option<Switch>,
    /// mDNS discovery on the local network.
    #[arg(long, value_name = "on|off")]
    pub mdns: Option<Switch>,
    /// Trust grants signed by this issuer (repeatable; adds to the
    /// config's `credit.issuers`).
    #[arg(long = "issuer", value_name = "PEER_ID")]
    pub issuers: Vec<agora_protocol::NodeId>,
    /// Blocks of this node's credit chain between two checkpoints (0:
    /// none; overrides the config's `credit.checkpoint_every`).
    #[arg(long, value_name = "BLOCKS")]
    pub checkpoint_every: Option<u64>,
    /// Take this auditor's attestations of other chains' checkpoints as
    /// this node's own (repeatable; adds to the config's
    /// `credit.auditors`).
    #[arg(long = "auditor", value_name = "PEER_ID")]
    pub auditors: Vec<agora_protocol::NodeId>,
    /// Configuration file (TOML); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the documented default configuration and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Fault injection: return wrong outputs for this share of tasks.
    #[cfg(feature = "fault-injection")]
    #[arg(long, default_value_t = 0.0)]
    pub cheat_rate: f64,
    /// Fault injection: run tasks this many times slower than measured.
    #[cfg(feature = "fault-injection")]
    #[arg(long, default_value_t = 1.0)]
    pub slowdown: f64,
    /// Fault injection: never pay for verified work.
    #[cfg(feature = "fault-injection")]
    #[arg(long)]
    pub never_pay: bool,
    /// Fault injection: fork the credit chain (spend the same credits
    /// twice).
    #[cfg(feature = "fault-injection")]
    #[arg(long)]
    pub fork_payments: bool,
}

impl NodeCommand {
    /// The configuration the flags describe.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if !self.listen.is_empty() {
            c.listen = self.listen.clone();
        }
        if !self.bootstrap.is_empty() {
            c.bootstrap = self.bootstrap.clone();
        }
        if let Some(a) = self.api {
            c.api = a;
        }
        if let Some(d) = &self.domain {
            c.domain = d.clone();
        }
        if let Some(p) = self.price {
            c.provider.price = p;
        }
        if let Some(s) = self.slots {
            c.provider.slots = s;
        }
        if let Some(s) = self.cpu_share {
            c.provider.cpu_share = s;
        }
        if let Some(m) = self.memory {
            c.provider.memory = m;
        }
        if let Some(e) = self.energy {
            c.provider.energy = e;
        }
        if let Some(s) = self.idle_policy {
            c.provider.idle.enabled = s == Switch::On;
        }
        if let Some(s) = self.provide {
            c.provider.enabled = s == Switch::On;
        }
        if let Some(s) = self.mdns {
            c.mdns = s == Switch::On;
        }
        for i in &self.issuers {
            if !c.credit.issuers.contains(i) {
                c.credit.issuers.push(*i);
            }
        }
        for a in &self.auditors {
            if !c.credit.auditors.contains(a) {
                c.credit.auditors.push(*a);
            }
        }
        if let Some(n) = self.checkpoint_every {
            c.credit.checkpoint_every = n;
        }
        c.validate()?;
        Ok(c)
    }

    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        if self.print_config {
            print!("{DEFAULT_CONFIG}");
            return Ok(ExitCode::SUCCESS);
        }
        let config = self.config()?;
        // Everything the node writes (the database's files included) is
        // its owner's only.
        crate::paths::private_umask();
        let data_dir = crate::paths::data_dir(self.data_dir.clone());
        #[allow(unused_mut)] // fault injection sets more
        let mut options = Options::new(data_dir.clone());
        #[cfg(feature = "fault-injection")]
        {
            options.faults.cheat_rate = self.cheat_rate.clamp(0.0, 1.0);
            options.faults.slowdown = self.slowdown.max(1.0);
            options.faults.never_pay = self.never_pay;
            options.faults.fork_payments = self.fork_payments;
        }
        if !crate::memory::limit_arenas() {
            tracing::debug!("the allocator's arenas are not capped here");
        }
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let result = rt.block_on(async move {
            if let Ok(info) = crate::api::client::read_node_info(&data_dir)
                && pid_alive(info.pid)
                && info.pid != std::process::id()
            {
                anyhow::bail!(
                    "a node (pid {}) already runs with data dir {}; stop it first or use another --data-dir",
                    info.pid,
                    data_dir.display()
                );
            }
            let node = Node::start(config, options)
                .await
                .context("cannot start the node")?;
            println!(
                "agora node {} ready: api {} (data dir {})",
                node.id,
                node.api,
                data_dir.display()
            );
            for a in &node.listen {
                println!("  listening on {a}/p2p/{}", node.id);
            }
            let cancel = node.cancel_token();
            let stopped = node.wait();
            tokio::pin!(stopped);
            tokio::select! {
                _ = &mut stopped => {}
                _ = wait_for_signal() => {
                    cancel.cancel();
                    // Running tasks are interrupted and the store flushed;
                    // whatever is still busy after the grace period is
                    // abandoned (nothing acknowledged is lost: it is on disk).
                    if tokio::time::timeout(SHUTDOWN_GRACE, &mut stopped).await.is_err() {
                        tracing::warn!(grace = ?SHUTDOWN_GRACE, "the node did not stop within its grace period; exiting anyway");
                    }
                }
            }
            Ok(())
        });
        rt.shutdown_timeout(SHUTDOWN_GRACE);
        result?;
        Ok(ExitCode::SUCCESS)
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// How long a stopping node may take before the process exits anyway.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(8);

/// Whether `pid` is a live `agora` process: a zombie left by a killed node
/// is not, nor is another program that was given the same pid.
fn pid_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state …`: the state follows the last parenthesis.
    let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
    if matches!(state, Some('Z' | 'X') | None) {
        return false;
    }
    let comm = stat
        .split_once(" (")
        .and_then(|(_, rest)| rest.rsplit_once(')'))
        .map(|(comm, _)| comm.to_owned())
        .unwrap_or_default();
    comm.starts_with("agora")
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::pid_alive;

    /// A node killed with `kill -9` stays a zombie until its parent reaps
    /// it; its pid, left in `node.json`, must not block a restart, and
    /// neither must another program that was given the same pid.
    #[test]
    fn a_zombie_or_another_program_is_no_running_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = dir.path().join("agora-sleep");
        std::fs::copy("/bin/sleep", &fake).expect("copy sleep");
        let mut other = std::process::Command::new("/bin/sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        assert!(!pid_alive(other.id()), "another program with the pid");
        let mut node = std::process::Command::new(&fake)
            .arg("30")
            .spawn()
            .expect("the stand-in runs");
        assert!(pid_alive(node.id()), "a live process named agora…");
        node.kill().expect("kill");
        // Killed and not yet reaped: a zombie.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while pid_alive(node.id()) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", node.id())).unwrap_or_default();
        assert!(stat.contains(") Z"), "still a zombie: {stat}");
        assert!(!pid_alive(node.id()), "a zombie is no running node");
        let _ = node.wait();
        assert!(!pid_alive(node.id()), "nor a reaped one");
        let _ = other.kill();
        let _ = other.wait();
    }
}

/// A multiaddr from the command line; `host:port` and other near misses get
/// the form they should take.
fn multiaddr_arg(s: &str) -> Result<Multiaddr, String> {
    if let Ok(a) = s.parse::<Multiaddr>() {
        return Ok(a);
    }
    let example = match s.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() && !host.contains('/') => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            match host.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(ip)) => format!("/ip4/{ip}/tcp/{port}"),
                Ok(std::net::IpAddr::V6(ip)) => format!("/ip6/{ip}/tcp/{port}"),
                Err(_) => format!("/dns/{host}/tcp/{port}"),
            }
        }
        _ => "/ip4/1.2.3.4/tcp/4001".to_owned(),
    };
    Err(format!(
        "`{s}` is not a multiaddr: write it like `{example}` (a peer's full address ends in /p2p/<its peer id>, as its node.json lists it)"
    ))
}

#[cfg(test)]
mod multiaddr_tests {
    use super::multiaddr_arg;

    #[test]
    fn a_host_and_port_is_refused_with_the_multiaddr_it_means() {
        let e = multiaddr_arg("127.0.0.1:35565").unwrap_err();
        assert!(e.contains("`/ip4/127.0.0.1/tcp/35565`"), "{e}");
        let e = multiaddr_arg("seed.example.org:4001").unwrap_err();
        assert!(e.contains("`/dns/seed.example.org/tcp/4001`"), "{e}");
        assert!(multiaddr_arg("/ip4/127.0.0.1/tcp/1").is_ok());
    }
}
