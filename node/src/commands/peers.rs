//! `agora peers`: the providers in a node's view.

use std::process::ExitCode;

use agora_protocol::Domain;

use super::common::{NodeLocator, Table, block_on, emitln, float_or_dash, number, print_json, size};
use crate::api::{Path, PeerRow};

/// List the peers in a running node's view, with their adverts and what this
/// node has learnt about them.
///
/// Columns: PEER (last 8 characters of the peer id), DOMAIN, CU (advertised
/// capacity), FREE/SLOTS, MEMORY (per task), PRICE (credits per CU-second),
/// RTT MS, AGE MS (of the advert), ACCEPTING, LEARNT CU (per-slot speed from
/// receipts), REPUTATION.
#[derive(Debug, clap::Args)]
pub struct PeersCommand {
    /// Only peers within this domain, e.g. eu/de.
    #[arg(long, value_name = "PATH")]
    pub domain: Option<Domain>,
    /// Print the API's JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The node to ask.
    #[command(flatten)]
    pub node: NodeLocator,
}

impl PeersCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let client = self.node.client()?;
        let domain = self.domain.as_ref().map(|d| d.as_str().to_owned());
        let peers = block_on(async move { client.peers(domain.as_deref()).await })??;
        if self.json {
            print_json(&peers)?;
        } else if peers.is_empty() {
            emitln("no peers in the view")?;
        } else {
            table(&peers).print()?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn table(peers: &[PeerRow]) -> Table {
    let mut t = Table::new(&[
        "PEER",
        "DOMAIN",
        "CU",
        "FREE/SLOTS",
        "MEMORY",
        "PRICE",
        "RTT MS",
        "PATH",
        "AGE MS",
        "ACCEPTING",
        "LEARNT CU",
        "REPUTATION",
        "LABELS",
    ])
    .with_right(&[2, 3, 5, 6, 8, 10, 11]);
    for p in peers {
        let accepting = match (p.banned, p.accepting) {
            (true, _) => "banned",
            (false, true) => "yes",
            (false, false) => "no",
        };
        t.row(vec![
            p.peer_id.short(),
            p.domain.to_string(),
            p.cu.to_string(),
            format!("{}/{}", p.free_slots, p.slots),
            size(p.memory),
            agora_protocol::units::Credits(p.price.0).to_string(),
            float_or_dash(p.rtt_ms, 1),
            match p.path {
                Some(Path::Direct) => "direct",
                Some(Path::Relayed) => "relayed",
                None => "-",
            }
            .to_owned(),
            p.advert_age_ms.to_string(),
            accepting.to_owned(),
            p.learnt_cu.map_or_else(|| "-".to_owned(), number),
            float_or_dash(p.reputation, 2),
            if p.labels.is_empty() {
                "-".to_owned()
            } else {
                p.labels.join(",")
            },
        ]);
    }
    t
}
