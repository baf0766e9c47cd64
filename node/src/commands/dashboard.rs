//! `agora dashboard`: a one-time link that logs a browser in to the node's
//! dashboard.

use std::process::ExitCode;
use std::time::Duration;

use agora_protocol::units::parse_duration;

use super::common::{NodeLocator, block_on, print_json};

/// Print (and with --open, open) a one-time link that logs a browser in to
/// the node's dashboard. The link works once, for a short while; the
/// browser then holds a session, and the API token never leaves this
/// machine's node.json.
#[derive(Debug, clap::Args)]
pub struct DashboardCommand {
    /// Open the link in the default browser.
    #[arg(long)]
    pub open: bool,
    /// How long the link stays valid (at most 15 minutes).
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub valid_for: Duration,
    /// Print the answer as JSON (`code`, `url`, `ttl_ms`).
    #[arg(long)]
    pub json: bool,
    /// The node whose dashboard to open.
    #[command(flatten)]
    pub node: NodeLocator,
}

impl DashboardCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let client = self.node.client()?;
        let ttl = self.valid_for;
        let code = block_on(async move { client.dashboard_code(Some(ttl)).await })??;
        if self.json {
            print_json(&code)?;
        } else {
            println!("{}", code.url);
            let capped = if u128::from(code.ttl_ms) < ttl.as_millis() {
                " (the most a node allows)"
            } else {
                ""
            };
            eprintln!(
                "one-time link, valid for {} s{capped}: open it in a browser on this machine",
                code.ttl_ms / 1000
            );
        }
        if self.open
            && let Err(e) = open_in_browser(&code.url)
        {
            eprintln!("could not open a browser ({e}); open the link above yourself");
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Hands `url` to the desktop's opener.
fn open_in_browser(url: &str) -> std::io::Result<()> {
    let mut cmd = if cfg!(target_os = "macos") {
        std::process::Command::new("open")
    } else if cfg!(windows) {
        let mut c = std::process::Command::new("cmd");
        c.args(["/C", "start", ""]);
        c
    } else {
        std::process::Command::new("xdg-open")
    };
    let status = cmd
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("the opener exited with {status}")))
    }
}
