//! Part 2: how fast a new node's advert reaches every view.
//!
//! On the testnet of the first part, grown to [`PROCESSES`] running nodes:
//! a new provider is started, and timed from the moment its `node.json`
//! appears (its driver starts right after) until every other running
//! node's `GET /v1/peers` lists it, polled every ~2 ms; then it is stopped
//! and the next round starts with a fresh one.

use std::time::{Duration, Instant};

use agora_protocol::NodeId;

use crate::process::{NodeSpec, Testnet};
use crate::report::percentile;

/// Running nodes before each new one starts.
const PROCESSES: usize = 9;

/// How long a new node's advert may take before the part fails.
const DEADLINE: Duration = Duration::from_secs(30);

/// Grows `net` to [`PROCESSES`] nodes, then times a new node's advert
/// reaching every view, `rounds` times. Sorted ms.
pub(super) async fn propagation(net: &mut Testnet, rounds: usize) -> anyhow::Result<Vec<f64>> {
    while net.nodes().iter().filter(|n| n.is_running()).count() < PROCESSES {
        net.start(NodeSpec::provider("bench")).await?;
    }
    net.wait_converged(Duration::from_secs(60)).await?;
    let mut samples = Vec::new();
    for _ in 0..rounds {
        let i = net.start(NodeSpec::provider("bench")).await?;
        let t0 = net.node(i).ready_at;
        wait_listed(net, i, t0).await?;
        samples.push(t0.elapsed().as_secs_f64() * 1000.0);
        net.stop_node(i);
    }
    samples.sort_by(f64::total_cmp);
    eprintln!(
        "  advert propagation to all {} other nodes over {} new nodes: p50 {:.0} ms, p95 {:.0} ms",
        PROCESSES,
        samples.len(),
        percentile(&samples, 50.0),
        percentile(&samples, 95.0)
    );
    Ok(samples)
}

/// Waits until every other running node lists node `i`, ready since `t0`.
async fn wait_listed(net: &Testnet, i: usize, t0: Instant) -> anyhow::Result<()> {
    let id: NodeId = net.node(i).id();
    let mut pending: Vec<usize> = net
        .nodes()
        .iter()
        .filter(|n| n.is_running() && n.index != i)
        .map(|n| n.index)
        .collect();
    while !pending.is_empty() {
        if t0.elapsed() > DEADLINE {
            anyhow::bail!(
                "node-{i}'s advert had not reached {} nodes after 30 s",
                pending.len()
            );
        }
        let mut still = Vec::new();
        for &j in &pending {
            let rows = net.node(j).client.peers(None).await?;
            if !rows.iter().any(|r| r.peer_id == id) {
                still.push(j);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    Ok(())
}
