//! `agora owner`: the device owner's controls over a running node — see
//! whether it takes work and why not, pause it (for a while, or until
//! resumed) and resume it, without a restart.

use std::process::ExitCode;
use std::time::Duration;

use agora_protocol::units::{Timestamp, parse_duration};

use super::common::{NodeLocator, block_on, emit, print_json, utc};
use crate::api::OwnerState;

/// Whether the node takes work and why not; pause or resume providing.
///
/// A pause stops new work at once (the node's adverts say it is not
/// accepting); tasks already accepted run to their end. It lasts until
/// `agora owner resume`, or for `--for` (a snooze), restarts of the node
/// included.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct OwnerCommand {
    /// Print the API's JSON object.
    #[arg(long)]
    pub json: bool,
    /// The node.
    #[command(flatten)]
    pub node: NodeLocator,
    /// Pause or resume.
    #[command(subcommand)]
    pub action: Option<OwnerAction>,
}

/// The owner's controls.
#[derive(Debug, clap::Subcommand)]
pub enum OwnerAction {
    /// Take no new work: until resumed, or for a while (`--for 30m`).
    Pause(PauseCommand),
    /// Take work again.
    Resume(ResumeCommand),
}

/// `agora owner pause`.
#[derive(Debug, clap::Args)]
pub struct PauseCommand {
    /// For how long, like `30m` or `2h` (a snooze); default: until resumed.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Print the API's JSON object.
    #[arg(long)]
    pub json: bool,
    /// The node.
    #[command(flatten)]
    pub node: NodeLocator,
}

/// `agora owner resume`.
#[derive(Debug, clap::Args)]
pub struct ResumeCommand {
    /// Print the API's JSON object.
    #[arg(long)]
    pub json: bool,
    /// The node.
    #[command(flatten)]
    pub node: NodeLocator,
}

impl OwnerCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let (state, json) = match self.action {
            Some(OwnerAction::Pause(p)) => {
                let client = p.node.client()?;
                (block_on(async { client.pause(p.duration).await })??, p.json)
            }
            Some(OwnerAction::Resume(r)) => {
                let client = r.node.client()?;
                (block_on(async { client.resume().await })??, r.json)
            }
            None => {
                let client = self.node.client()?;
                (block_on(async { client.owner().await })??, self.json)
            }
        };
        if json {
            print_json(&state)?;
        } else {
            emit(&render(&state))?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The state in a few lines.
fn render(s: &OwnerState) -> String {
    let taking = match (&s.not_accepting, s.accepting) {
        (_, true) => "taking work".to_owned(),
        (Some(why), false) => format!("taking no new work: {why}"),
        (None, false) => "taking no new work".to_owned(),
    };
    let paused = match (s.paused, s.paused_until) {
        (false, _) => "not paused".to_owned(),
        (true, Some(Timestamp(t))) => format!(
            "paused until {} (`agora owner resume` ends it sooner)",
            utc(Timestamp(t))
        ),
        (true, None) => "paused until `agora owner resume`".to_owned(),
    };
    format!(
        "provider  {taking}\nowner     {paused}\ntasks     {} running, {} accepted and not finished\n",
        s.running, s.queued
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_says_why_no_work_is_taken_and_until_when() {
        let s = OwnerState {
            accepting: false,
            not_accepting: Some("paused by its owner".into()),
            paused: true,
            paused_until: None,
            running: 1,
            queued: 2,
        };
        let out = render(&s);
        assert!(out.contains("taking no new work: paused by its owner"), "{out}");
        assert!(out.contains("paused until `agora owner resume`"), "{out}");
        assert!(out.contains("1 running, 2 accepted"), "{out}");
    }
}
