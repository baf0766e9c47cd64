//! Part 4: many full nodes in this process, at the `scale` command's pace.
//!
//! `--scale-nodes` nodes in four domains over libp2p's memory transport,
//! measured by [`crate::commands::scale::measure`] with that command's
//! defaults: time until every view and every domain summary is complete,
//! memory per node and idle CPU, a new node's advert reaching every view
//! of its domain (five rounds), and a 100-task rot13 job placed from one
//! node across them. A failed run is reported rather than fatal, so that
//! the other parts' figures stand; a job with wrong outputs fails the
//! bench.

use std::time::Duration;

use crate::commands::scale::{self, ScaleCommand, ScaleReport};

/// Runs `nodes` nodes in this process: their report, or why the run
/// failed (printed too). Fails only if the run's job came back wrong.
pub(super) async fn measure(nodes: usize) -> anyhow::Result<Result<ScaleReport, String>> {
    eprintln!("scale: {nodes} nodes in this process over the memory transport");
    let cmd = ScaleCommand {
        nodes,
        domains: 4,
        dial: 3,
        rounds: 5,
        tasks: 100,
        advert_interval: Duration::from_secs(20),
        heartbeat: Duration::from_secs(1),
        max_connections: 64,
        target_connections: 48,
        ping_interval: Duration::from_secs(15),
        json: true,
    };
    match scale::measure(&cmd).await {
        Ok(r) => {
            anyhow::ensure!(
                r.job_outputs_ok,
                "the scale run's job came back with wrong outputs"
            );
            Ok(Ok(r))
        }
        Err(e) => {
            eprintln!("scale: {e:#}");
            Ok(Err(format!("{e:#}")))
        }
    }
}
