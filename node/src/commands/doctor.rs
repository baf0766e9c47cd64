//! `agora doctor`: a self-test that says in plain words what is wrong and
//! what to do.
//!
//! An owner whose node gets no work rarely knows why: the data dir may not
//! be writable, the port may be taken, no bootstrap peer may answer, or
//! the clock may be so far off that every signed message it sends is
//! refused as expired. Each check here looks at one of those from the
//! outside — the data dir and config on disk, the bootstrap addresses over
//! TCP, and, when a node runs on the data dir, its API (connections, and
//! the issue times of its peers' adverts against this machine's clock) —
//! and reports `ok`, `warning` or `problem` with the fix. The exit code is
//! 1 when any check found a problem.

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use serde::Serialize;

use super::common::{NodeLocator, block_on, emit, print_json};
use crate::config::Config;
use crate::network::Reachability;

/// How long a bootstrap peer has to accept a TCP connection.
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);
/// Clock offsets past this are a problem: envelopes live 30 s and may be
/// dated at most 30 s ahead, so beyond it peers refuse what the node signs.
const SKEW_PROBLEM_MS: i64 = 10_000;
/// Clock offsets past this are worth a warning.
const SKEW_WARNING_MS: i64 = 2_000;

/// Check this machine's node: data dir, ports, bootstrap peers, peers,
/// clock.
#[derive(Debug, clap::Args)]
pub struct DoctorCommand {
    /// The configuration file the node runs with (its listen addresses and
    /// bootstrap peers are checked); default: the built-in configuration.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Bootstrap peers to check (repeatable); default: those the running
    /// node was started with, else the configuration's.
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    pub bootstrap: Vec<Multiaddr>,
    /// Print the checks as JSON.
    #[arg(long)]
    pub json: bool,
    /// The node to check.
    #[command(flatten)]
    pub node: NodeLocator,
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Nothing to do.
    Ok,
    /// Works, but worth a look.
    Warning,
    /// Keeps the node from working.
    Problem,
}

/// One check's finding.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// What was checked.
    pub check: &'static str,
    /// How it came out.
    pub level: Level,
    /// What was found.
    pub message: String,
    /// What to do about it, when something is to be done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    fn ok(check: &'static str, message: impl Into<String>) -> Finding {
        Finding {
            check,
            level: Level::Ok,
            message: message.into(),
            fix: None,
        }
    }

    fn bad(check: &'static str, level: Level, message: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            check,
            level,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

/// The report `--json` prints.
#[derive(Debug, Serialize)]
struct Report {
    ok: bool,
    findings: Vec<Finding>,
}

impl DoctorCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let data_dir = crate::paths::data_dir(self.node.data_dir.clone());
        let mut findings = vec![check_data_dir(&data_dir)];
        let config = match &self.config {
            Some(path) => match Config::load(path) {
                Ok(c) => Some(c),
                Err(e) => {
                    findings.push(Finding::bad(
                        "config",
                        Level::Problem,
                        e.to_string(),
                        "fix the file, or print a documented one with `agora node --print-config`",
                    ));
                    None
                }
            },
            None => Some(Config::default()),
        };
        let running = self
            .node
            .client()
            .ok()
            .and_then(|client| block_on(async move { running(&client).await }).ok().flatten());
        match &running {
            Some(r) => findings.extend(check_running(r, config.as_ref())),
            None => {
                findings.push(Finding::bad(
                    "node",
                    Level::Warning,
                    format!("no node answers on the data dir {}", data_dir.display()),
                    "start one with `agora node` (with the same --data-dir), then run `agora doctor` again to check its peers and clock",
                ));
                if let Some(c) = &config {
                    findings.extend(c.listen.iter().filter_map(check_port));
                }
            }
        }
        if let Some(mut c) = config {
            let started_with = crate::api::client::read_node_info(&data_dir)
                .map(|i| {
                    i.bootstrap
                        .iter()
                        .filter_map(|a| a.parse().ok())
                        .collect::<Vec<Multiaddr>>()
                })
                .unwrap_or_default();
            if !self.bootstrap.is_empty() {
                c.bootstrap = self.bootstrap.clone();
            } else if running.is_some() && !started_with.is_empty() {
                c.bootstrap = started_with;
            }
            findings.extend(check_bootstrap(&c, running.as_ref().map(|r| r.connected)));
        }
        let ok = findings.iter().all(|f| f.level != Level::Problem);
        if self.json {
            print_json(&Report { ok, findings })?;
        } else {
            emit(&render(&findings))?;
        }
        Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
    }
}

/// What the running node says of itself.
struct Running {
    connected: usize,
    /// Whether other nodes can dial it.
    reachability: Reachability,
    /// Relays it is reached through.
    relays: usize,
    /// Each peer's advert issue time against this machine's clock at
    /// receipt, ms (positive: this clock is ahead).
    offsets: Vec<i64>,
}

async fn running(client: &crate::api::client::Client) -> Option<Running> {
    let status = tokio::time::timeout(Duration::from_secs(5), client.status())
        .await
        .ok()?
        .ok()?;
    let peers = client.peers(None).await.unwrap_or_default();
    Some(Running {
        connected: status.connected,
        reachability: status.reachability,
        relays: status.relays.len(),
        offsets: peers.iter().map(|p| p.clock_offset_ms).collect(),
    })
}

fn check_data_dir(dir: &Path) -> Finding {
    const CHECK: &str = "data dir";
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Finding::bad(
            CHECK,
            Level::Problem,
            format!("{shown} is not a directory"),
            "pass another --data-dir (or set AGORA_DATA_DIR), or move the file away",
        ),
        Ok(_) => {
            let probe = dir.join(".doctor-probe");
            match std::fs::write(&probe, b"probe").and_then(|()| std::fs::remove_file(&probe)) {
                Ok(()) => Finding::ok(CHECK, format!("{shown} is writable")),
                Err(e) => Finding::bad(
                    CHECK,
                    Level::Problem,
                    format!("cannot write in {shown}: {e}"),
                    "give the user running the node write access to it, or pass another --data-dir",
                ),
            }
        }
        Err(_) => {
            let parent = dir.ancestors().skip(1).find(|p| p.exists());
            let creatable = parent.is_some_and(|p| {
                let probe = p.join(".agora-doctor-probe");
                std::fs::write(&probe, b"probe")
                    .and_then(|()| std::fs::remove_file(&probe))
                    .is_ok()
            });
            if creatable {
                Finding::ok(
                    CHECK,
                    format!("{shown} does not exist yet; `agora node` creates it"),
                )
            } else {
                Finding::bad(
                    CHECK,
                    Level::Problem,
                    format!("{shown} does not exist and cannot be created"),
                    "create it for the user running the node, or pass another --data-dir",
                )
            }
        }
    }
}

/// With no node running, whether a fixed listen port is free.
fn check_port(addr: &Multiaddr) -> Option<Finding> {
    const CHECK: &str = "port";
    let mut ip = None;
    let mut tcp = None;
    let mut udp = None;
    for p in addr {
        match p {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::from(a)),
            Protocol::Ip6(a) => ip = Some(std::net::IpAddr::from(a)),
            Protocol::Tcp(port) => tcp = Some(port),
            Protocol::Udp(port) => udp = Some(port),
            _ => {}
        }
    }
    let ip = ip?;
    let taken = match (tcp, udp) {
        (Some(0), _) | (_, Some(0)) => return None,
        (Some(port), _) => TcpListener::bind(SocketAddr::new(ip, port))
            .err()
            .map(|e| (port, "TCP", e)),
        (None, Some(port)) => UdpSocket::bind(SocketAddr::new(ip, port))
            .err()
            .map(|e| (port, "UDP", e)),
        (None, None) => return None,
    };
    Some(match taken {
        None => Finding::ok(CHECK, format!("{addr} is free to listen on")),
        Some((port, proto, e)) => Finding::bad(
            CHECK,
            Level::Problem,
            format!("cannot listen on {addr}: {proto} port {port} is in use by another program ({e})"),
            "stop that program, or listen on another port (`--listen`, or `listen` in the config; port 0 picks a free one)",
        ),
    })
}

fn check_running(r: &Running, config: Option<&Config>) -> Vec<Finding> {
    let mut out = Vec::new();
    if r.connected == 0 {
        let mdns = config.is_some_and(|c| c.mdns);
        out.push(Finding::bad(
            "peers",
            Level::Problem,
            "the node runs but is connected to no peer",
            if mdns {
                "check the bootstrap peers below; on a LAN, mDNS finds peers only if another node runs there"
            } else {
                "check the bootstrap peers below, or pass a reachable one with --bootstrap"
            },
        ));
    } else {
        out.push(Finding::ok(
            "peers",
            format!("connected to {} peers", r.connected),
        ));
    }
    out.push(check_clock(&r.offsets));
    out.push(check_reachability(r.reachability, r.relays));
    out
}

fn check_reachability(reachability: Reachability, relays: usize) -> Finding {
    const CHECK: &str = "reachability";
    match (reachability, relays) {
        (Reachability::Public, _) => Finding::ok(CHECK, "public: other nodes dialled this node back"),
        (Reachability::Private, n) if n > 0 => Finding::ok(
            CHECK,
            format!("private, reached through {n} relay(s): peers reach it, and try to connect directly"),
        ),
        (Reachability::Private, _) => Finding::bad(
            CHECK,
            Level::Problem,
            "not reachable from outside, and no relay holds a place for it: peers cannot place work on it",
            "forward its listen port on the router to this machine, or name a public node in `[relay] relays` in the config (it also reserves on connected relays by itself once it finds them)",
        ),
        (Reachability::Unknown, _) => Finding::bad(
            CHECK,
            Level::Warning,
            "unknown: no peer has dialled this node back yet",
            "wait a minute after start; if it stays unknown, the node has too few peers to ask (check the bootstrap peers)",
        ),
    }
}

/// The median offset of peers' advert issue times against this clock.
fn check_clock(offsets: &[i64]) -> Finding {
    const CHECK: &str = "clock";
    if offsets.is_empty() {
        return Finding::ok(CHECK, "no peer's advert to compare this clock with yet");
    }
    let mut sorted = offsets.to_vec();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    let how = if median >= 0 { "ahead of" } else { "behind" };
    let text = format!(
        "this clock is {:.1} s {how} its peers' (median of {} adverts' issue times, delivery included)",
        median.unsigned_abs() as f64 / 1000.0,
        sorted.len()
    );
    let level = match median.abs() {
        m if m > SKEW_PROBLEM_MS => Level::Problem,
        m if m > SKEW_WARNING_MS => Level::Warning,
        _ => return Finding::ok(CHECK, text),
    };
    Finding::bad(
        CHECK,
        level,
        format!(
            "{text}: signed messages live 30 s, so peers refuse this node's as expired or from the future"
        ),
        "synchronise the clock (NTP: `timedatectl set-ntp true` on systemd machines)",
    )
}

/// Whether the configured bootstrap peers accept a TCP connection.
fn check_bootstrap(config: &Config, connected: Option<usize>) -> Vec<Finding> {
    const CHECK: &str = "bootstrap";
    if config.bootstrap.is_empty() {
        return vec![if connected.is_some_and(|c| c > 0) {
            Finding::ok(CHECK, "no bootstrap peers configured (peers found the node)")
        } else if config.mdns {
            Finding::ok(
                CHECK,
                "no bootstrap peers configured; mDNS looks for peers on the LAN",
            )
        } else {
            Finding::bad(
                CHECK,
                Level::Warning,
                "no bootstrap peers configured: the node finds peers only if they dial it",
                "pass --bootstrap /ip4/…/tcp/…/p2p/… (a node's address, as `agora status` shows it), or set `bootstrap` in the config",
            )
        }];
    }
    let mut out = Vec::new();
    let mut reachable = 0;
    for addr in &config.bootstrap {
        match dial(addr) {
            Ok(at) => {
                reachable += 1;
                out.push(Finding::ok(CHECK, format!("{addr} accepts connections (at {at})")));
            }
            Err(why) => out.push(Finding::bad(
                CHECK,
                Level::Warning,
                format!("{addr} cannot be reached: {why}"),
                "check the address, that the peer runs, and that no firewall between here and there drops the port",
            )),
        }
    }
    if reachable == 0 {
        out.push(Finding::bad(
            CHECK,
            Level::Problem,
            format!("none of the {} bootstrap peers can be reached", config.bootstrap.len()),
            "ask the network's operators for a live bootstrap address; a node that ran before also tries the peers it remembers",
        ));
    }
    out
}

/// Connects over TCP to the host and port of `addr`; QUIC-only addresses
/// are not checked.
fn dial(addr: &Multiaddr) -> Result<SocketAddr, String> {
    let mut host = None;
    let mut port = None;
    for p in addr {
        match p {
            Protocol::Ip4(a) => host = Some(a.to_string()),
            Protocol::Ip6(a) => host = Some(a.to_string()),
            Protocol::Dns(h) | Protocol::Dns4(h) | Protocol::Dns6(h) => host = Some(h.to_string()),
            Protocol::Tcp(p) => port = Some(p),
            Protocol::Udp(_) => return Err("only TCP addresses are checked here".into()),
            _ => {}
        }
    }
    let (Some(host), Some(port)) = (host, port) else {
        return Err("the address names no host and TCP port".into());
    };
    let targets: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut last = String::from("no address");
    for t in targets {
        match TcpStream::connect_timeout(&t, DIAL_TIMEOUT) {
            Ok(_) => return Ok(t),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let tag = match f.level {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Problem => "PROBLEM",
        };
        out.push_str(&format!("{tag:<8} {:<12} {}\n", f.check, f.message));
        if let Some(fix) = &f.fix
            && f.level != Level::Ok
        {
            out.push_str(&format!("{:<21} → {fix}\n", ""));
        }
    }
    let problems = findings.iter().filter(|f| f.level == Level::Problem).count();
    out.push_str(&match problems {
        0 => "no problem found\n".to_owned(),
        1 => "1 problem found\n".to_owned(),
        n => format!("{n} problems found\n"),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_node_without_a_relay_is_a_problem_and_with_one_is_not() {
        assert_eq!(check_reachability(Reachability::Private, 0).level, Level::Problem);
        assert_eq!(check_reachability(Reachability::Private, 1).level, Level::Ok);
        assert_eq!(check_reachability(Reachability::Public, 0).level, Level::Ok);
        assert_eq!(check_reachability(Reachability::Unknown, 0).level, Level::Warning);
    }

    #[test]
    fn a_clock_ten_seconds_off_is_a_problem_and_a_small_offset_is_not() {
        assert_eq!(check_clock(&[40, 60, 55]).level, Level::Ok);
        assert_eq!(check_clock(&[3_000, 3_100, 2_900]).level, Level::Warning);
        let f = check_clock(&[-12_000, -11_000, -13_000, 50]);
        assert_eq!(f.level, Level::Problem);
        assert!(f.message.contains("behind"), "{}", f.message);
        assert_eq!(check_clock(&[]).level, Level::Ok);
    }

    #[test]
    fn a_port_held_by_another_program_is_named() {
        let held = TcpListener::bind("127.0.0.1:0").expect("binds");
        let port = held.local_addr().expect("addr").port();
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().expect("addr");
        let f = check_port(&addr).expect("checked");
        assert_eq!(f.level, Level::Problem);
        assert!(f.message.contains(&port.to_string()), "{}", f.message);
        drop(held);
        assert_eq!(check_port(&addr).expect("checked").level, Level::Ok);
        assert!(check_port(&"/ip4/127.0.0.1/tcp/0".parse().expect("addr")).is_none());
    }

    #[test]
    fn a_dead_bootstrap_peer_is_named_with_why() {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("binds")
            .local_addr()
            .expect("addr")
            .port();
        let config = Config {
            bootstrap: vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().expect("addr")],
            ..Config::default()
        };
        let f = check_bootstrap(&config, Some(0));
        assert!(f.iter().any(|f| f.level == Level::Problem), "{f:?}");
        assert!(f.iter().any(|f| f.message.contains(&port.to_string())), "{f:?}");
    }
}
