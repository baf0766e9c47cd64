//! `chaos owner-returns`: device owners take their machines back mid-job.
//! Two providers whose owners limit the temperature (`max_temp = 80`) are
//! heated to 90 °C through a fake thermal zone (`[provider.limits] sysfs`)
//! while they run the job's tasks, held for [`HOLD`], then cooled.
//! Each must hold within 2 s, suspending its running task in place and
//! taking no new work; once cooled, each must take work again. Every task
//! suspended mid-run must be finished, by its provider once it goes on or
//! by a backup the requester started meanwhile on an idle provider, and
//! none charged to the held provider. The job must still finish with every
//! output right and the ledgers balanced.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agora_node::api::JobStatus;

use super::Check;
use crate::process::Testnet;

/// The providers' configuration: the limit, read from a tree in the data
/// dir every 200 ms.
pub(super) const CONFIG: &str =
    "[provider.limits]\nmax_temp = 80\nsysfs = \"{data_dir}/sys\"\ninterval = \"200ms\"\n";

/// How long the heated providers stay hot: less than the tasks' 5 s
/// deadline, so that what they suspended is theirs to finish.
pub(super) const HOLD: Duration = Duration::from_secs(2);

/// The fake thermal zone of a node started with [`CONFIG`].
fn zone(net: &Testnet, node: usize) -> PathBuf {
    net.node(node)
        .data_dir
        .join("sys/class/thermal/thermal_zone0/temp")
}

/// Sets a node's fake zone to `celsius`.
pub(super) fn set_temp(net: &Testnet, node: usize, celsius: u32) -> anyhow::Result<()> {
    let path = zone(net, node);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, format!("{}\n", celsius * 1000))?;
    Ok(())
}

/// What one heated provider did.
#[derive(Debug, Clone)]
pub(super) struct Heated {
    /// Its index.
    pub(super) node: usize,
    /// How long after heating it said a limit holds it (`None`: within 5 s
    /// it did not).
    pub(super) held_after: Option<Duration>,
    /// The most runs it had suspended at once while held.
    pub(super) suspended: u32,
    /// Tasks (by index) it was running when heated.
    pub(super) running: Vec<u32>,
}

/// Heats `nodes` (their running tasks read from `s`), waits (up to 5 s)
/// for each to hold, then watches their suspended runs for a second.
pub(super) async fn heat(net: &Testnet, nodes: &[usize], s: &JobStatus) -> anyhow::Result<Vec<Heated>> {
    let mut out: Vec<Heated> = nodes
        .iter()
        .map(|&node| {
            let id = net.node(node).id();
            Heated {
                node,
                held_after: None,
                suspended: 0,
                running: s
                    .tasks
                    .iter()
                    .filter(|t| t.copies.iter().any(|c| c.provider == id && c.state == "agreed"))
                    .map(|t| t.index)
                    .collect(),
            }
        })
        .collect();
    for &n in nodes {
        set_temp(net, n, 90)?;
    }
    let t0 = Instant::now();
    let mut all_held: Option<Instant> = None;
    while t0.elapsed() < Duration::from_secs(5)
        && all_held.is_none_or(|t| t.elapsed() < Duration::from_secs(1))
    {
        for h in out.iter_mut() {
            if let Ok(o) = net.node(h.node).client.owner().await
                && o.held_by.as_deref() == Some("max_temp")
            {
                h.held_after.get_or_insert(t0.elapsed());
                h.suspended = h.suspended.max(o.suspended);
            }
        }
        if all_held.is_none() && out.iter().all(|h| h.held_after.is_some()) {
            all_held = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(out)
}

/// Cools `nodes` back to 40 °C.
pub(super) fn cool(net: &Testnet, nodes: &[usize]) -> anyhow::Result<()> {
    for &n in nodes {
        set_temp(net, n, 40)?;
    }
    Ok(())
}

/// The scenario's own checks, once the job ended.
pub(super) async fn checks(net: &Testnet, heated: &[Heated], status: &JobStatus) -> Vec<Check> {
    let mut checks = Vec::new();
    let held: Vec<String> = heated
        .iter()
        .map(|h| match h.held_after {
            Some(d) => format!(
                "node-{} in {} ms, {} run(s) suspended",
                h.node,
                d.as_millis(),
                h.suspended
            ),
            None => format!("node-{} not within 5 s", h.node),
        })
        .collect();
    checks.push(Check {
        what: format!(
            "both heated providers held within 2 s and suspended their running tasks: {}",
            held.join(", ")
        ),
        // Both hold in time; a run is suspended on at least one (the other
        // may be between two tasks at that instant).
        ok: heated.len() == 2
            && heated
                .iter()
                .all(|h| h.held_after.is_some_and(|d| d < Duration::from_secs(2)))
            && heated.iter().any(|h| h.suspended >= 1),
    });
    // Every task suspended mid-run was finished: by its provider once it
    // went on, or by a backup the requester started on an idle provider
    // meanwhile (the first receipt wins); never charged to the held one.
    let (mut in_place, mut backup, mut lost) = (0, 0, Vec::new());
    for h in heated {
        let id = net.node(h.node).id();
        for &t in &h.running {
            let Some(task) = status.tasks.iter().find(|x| x.index == t) else {
                continue;
            };
            let here = task.copies.iter().any(|c| c.provider == id && c.paid.is_some());
            let elsewhere = task.copies.iter().any(|c| c.provider != id && c.paid.is_some());
            let blamed = task.copies.iter().any(|c| c.provider == id && c.wrong);
            match (here, elsewhere, blamed) {
                (true, _, false) => in_place += 1,
                (false, true, false) => backup += 1,
                _ => lost.push(format!("task {t} of node-{}", h.node)),
            }
        }
    }
    checks.push(Check {
        what: if lost.is_empty() {
            format!(
                "every task suspended mid-run was finished: {in_place} by its provider after the hold, {backup} by a backup while it was held"
            )
        } else {
            format!("suspended tasks lost or blamed: {}", lost.join(", "))
        },
        ok: lost.is_empty(),
    });
    // Cooled (below the limit less the hysteresis), each takes work again
    // at its next reading.
    let t0 = Instant::now();
    let mut again: HashSet<usize> = HashSet::new();
    while t0.elapsed() < Duration::from_secs(3) && again.len() < heated.len() {
        for h in heated {
            if let Ok(o) = net.node(h.node).client.owner().await
                && o.accepting
                && o.held_by.is_none()
            {
                again.insert(h.node);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    checks.push(Check {
        what: format!(
            "cooled, {} of {} take work again within 3 s",
            again.len(),
            heated.len()
        ),
        ok: !heated.is_empty() && again.len() == heated.len(),
    });
    checks
}
