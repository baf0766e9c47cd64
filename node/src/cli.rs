//! The command line: one subcommand per file in [`crate::commands`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands;

/// Agora: a peer-to-peer compute marketplace.
#[derive(Debug, Parser)]
#[command(name = "agora", version, about, long_about = None)]
pub struct Cli {
    /// Log more (-v info, -vv debug, -vvv trace). `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node.
    Node(commands::node::NodeCommand),
    /// Run a WASM module locally in the node's sandbox.
    Exec(commands::exec::ExecCommand),
    /// Re-execute a receipt's task and say whether the receipt holds.
    Verify(commands::verify::VerifyCommand),
    /// Build a Rust job for wasm32-wasip1.
    Build(commands::build::BuildCommand),
    /// Show a running node's status.
    Status(commands::status::StatusCommand),
    /// Check this machine's node and say what is wrong and what to do.
    Doctor(commands::doctor::DoctorCommand),
    /// List the peers in a running node's view.
    Peers(commands::peers::PeersCommand),
    /// List the domains a running node knows.
    Domains(commands::domains::DomainsCommand),
    /// Publish a directory's files as a dataset that jobs take as inputs.
    Publish(commands::publish::PublishCommand),
    /// Submit, follow, fetch, cancel and explain jobs.
    Job(commands::job::JobCommand),
    /// List the jobs submitted through a running node.
    Jobs(commands::jobs::JobsCommand),
    /// Show a running node's credit balance and ledger.
    Ledger(commands::ledger::LedgerCommand),
    /// Whether the node takes work and why not; pause or resume it.
    Owner(commands::owner::OwnerCommand),
    /// A one-time link that logs a browser in to the node's dashboard.
    Dashboard(commands::dashboard::DashboardCommand),
    /// Compile a module in an isolated process (used by the node itself).
    #[command(hide = true)]
    CompileWorker(commands::compile_worker::CompileWorkerCommand),
}

impl Command {
    /// Runs the subcommand; its `Ok` value is the process exit code.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        match self {
            Command::Node(c) => c.execute(),
            Command::Exec(c) => c.execute(),
            Command::Verify(c) => c.execute(),
            Command::Build(c) => c.execute(),
            Command::Status(c) => c.execute(),
            Command::Doctor(c) => c.execute(),
            Command::Peers(c) => c.execute(),
            Command::Domains(c) => c.execute(),
            Command::Publish(c) => c.execute(),
            Command::Job(c) => c.execute(),
            Command::Jobs(c) => c.execute(),
            Command::Ledger(c) => c.execute(),
            Command::Owner(c) => c.execute(),
            Command::Dashboard(c) => c.execute(),
            Command::CompileWorker(c) => c.execute(),
        }
    }
}

/// Sets up logging to stderr, once. `RUST_LOG` wins over `-v`.
pub fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        // Kademlia warns whenever a lone node has no peer to bootstrap from;
        // gossipsub warns of every mesh penalty it applies (counted in its
        // peer scores, and frequent among hundreds of in-process nodes);
        // yamux warns when closing a connection the other side closed
        // first (both sides trimming it at once).
        0 => "warn,libp2p_kad=error,libp2p_gossipsub=error,yamux=error",
        1 => "info,libp2p_kad=warn,agora_node=info",
        2 => "info,agora_node=debug",
        _ => "debug,agora_node=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
