//! `agora compile-worker`: compiles one module in a resource-limited
//! process. The node starts it (see [`crate::executor::compile`]); it is not
//! meant to be run by hand.

use std::process::ExitCode;

/// Reads a wasm module on stdin and writes wasmtime's compiled artifact to
/// stdout, after limiting its own address space and CPU time.
#[derive(Debug, clap::Args)]
pub struct CompileWorkerCommand {
    /// The executor's `max_memory` in bytes (it shapes the compiled code).
    #[arg(long)]
    pub max_memory: u64,
    /// Address-space limit of this process in bytes (RLIMIT_AS).
    #[arg(long)]
    pub address_space: u64,
    /// CPU-time limit of this process in seconds (RLIMIT_CPU).
    #[arg(long)]
    pub cpu_seconds: u64,
    /// Largest module accepted on stdin, in bytes.
    #[arg(long)]
    pub max_module_size: u64,
}

impl CompileWorkerCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        Ok(crate::executor::compile::worker_main(
            self.max_memory,
            self.address_space,
            self.cpu_seconds,
            self.max_module_size,
        ))
    }
}
