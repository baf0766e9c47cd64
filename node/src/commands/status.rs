//! `agora status`: what a running node is and does.

use std::process::ExitCode;

use super::common::{NodeLocator, block_on, emit, millis, print_json, size, yes_no};
use crate::api::Status;

/// Show a running node's status: identity, measured capacity, load, price,
/// balance and network.
#[derive(Debug, clap::Args)]
pub struct StatusCommand {
    /// Print the API's JSON object instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// The node to ask.
    #[command(flatten)]
    pub node: NodeLocator,
}

impl StatusCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let client = self.node.client()?;
        let status = block_on(async move { client.status().await })??;
        if self.json {
            print_json(&status)?;
        } else {
            emit(&render(&status))?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Reachability, the relays in use and the confirmed addresses.
fn reach_line(s: &Status) -> String {
    let mut line = s.reachability.to_string();
    if !s.relays.is_empty() {
        let relays: Vec<String> = s.relays.iter().map(|r| r.short()).collect();
        line.push_str(&format!(", through relays {}", relays.join(", ")));
    }
    if !s.external_addrs.is_empty() {
        line.push_str(&format!("; confirmed {}", s.external_addrs.join(", ")));
    }
    line
}

/// The readable summary.
fn render(s: &Status) -> String {
    let balance = crate::api::format_balance(s.balance_micros);
    let listen = if s.listen.is_empty() {
        "-".to_owned()
    } else {
        s.listen.join(", ")
    };
    let lines = [
        ("peer id", s.peer_id.to_string()),
        ("version", s.version.clone()),
        ("domain", s.domain.to_string()),
        ("listen", listen),
        ("reach", reach_line(s)),
        (
            "capacity",
            format!(
                "{} per slot, {} total (cpu share {:.2})",
                s.per_slot_cu, s.cu, s.cpu_share
            ),
        ),
        ("slots", format!("{} free of {}", s.free_slots, s.slots)),
        ("tasks", format!("{} running, {} queued", s.running, s.queued)),
        (
            "accepting",
            match &s.not_accepting {
                Some(why) if !s.accepting => format!(
                    "no: {why} (other processes' load {:.1}%)",
                    f64::from(s.load) / 10.0
                ),
                _ => format!(
                    "{} (other processes' load {:.1}%)",
                    yes_no(s.accepting),
                    f64::from(s.load) / 10.0
                ),
            },
        ),
        ("price", s.price.to_string()),
        ("energy", s.energy.to_string()),
        ("memory", format!("{} per task", size(s.memory.0))),
        ("balance", format!("{balance} credits")),
        (
            "network",
            format!(
                "{} peers in view, {} connected, {} domains",
                s.peers, s.connected, s.domains
            ),
        ),
        ("jobs", format!("{} active", s.jobs_active)),
        ("uptime", millis(s.uptime_ms)),
        ("rss", size(s.rss_bytes)),
    ];
    let mut out = String::new();
    for (k, v) in lines {
        out.push_str(&format!("{k:<10} {v}\n"));
    }
    out
}
