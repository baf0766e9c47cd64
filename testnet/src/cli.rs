//! The command line: one subcommand per file in [`crate::commands`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands;

/// A local Agora testnet: the demo, the benchmark suite and fault scenarios.
#[derive(Debug, Parser)]
#[command(name = "agora-testnet", version, about, long_about = None)]
pub struct Cli {
    /// Log more (-v info, -vv debug). `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start N nodes on loopback and keep them running until Ctrl-C.
    Up(commands::up::UpCommand),
    /// Render the Mandelbrot set across a heterogeneous testnet, verified and paid.
    Demo(commands::demo::DemoCommand),
    /// Run the benchmark suite against a fresh testnet.
    Bench(commands::bench::BenchCommand),
    /// Run a fault scenario and check that the job still comes out right.
    Chaos(commands::chaos::ChaosCommand),
    /// Run many nodes in this process over the memory transport.
    Scale(commands::scale::ScaleCommand),
    /// Publish a text corpus from one provider and count its words from another node.
    Corpus(commands::corpus::CorpusCommand),
    /// Kill and restart nodes at random mid-job, then check nothing was lost.
    CrashLoop(commands::crash_loop::CrashLoopCommand),
}

impl Command {
    /// Runs the subcommand; its `Ok` value is the process exit code.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        match self {
            Command::Up(c) => c.execute(),
            Command::Demo(c) => c.execute(),
            Command::Bench(c) => c.execute(),
            Command::Chaos(c) => c.execute(),
            Command::Scale(c) => c.execute(),
            Command::Corpus(c) => c.execute(),
            Command::CrashLoop(c) => c.execute(),
        }
    }
}
