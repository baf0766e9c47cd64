//! The `agora-testnet` command: parses the command line and hands over to
//! the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = agora_testnet::cli::Cli::parse();
    agora_node::cli::init_tracing(cli.verbose);
    match cli.command.execute() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
