//! `agora domains`: the domains a node knows, from their summaries.

use std::process::ExitCode;

use super::common::{NodeLocator, Table, block_on, emitln, print_json};
use agora_protocol::units::Credits;

use crate::api::DomainRow;

/// List the domains a running node knows, with their summarised capacity.
///
/// Columns: DOMAIN (`*` marks the node's own), NODES, TOTAL CU, FREE CU,
/// FREE SLOTS, PRICE (lowest–highest, credits per CU-second), BEST RTT MS.
#[derive(Debug, clap::Args)]
pub struct DomainsCommand {
    /// Print the API's JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The node to ask.
    #[command(flatten)]
    pub node: NodeLocator,
}

impl DomainsCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let client = self.node.client()?;
        let domains = block_on(async move { client.domains().await })??;
        if self.json {
            print_json(&domains)?;
        } else if domains.is_empty() {
            emitln("no domains known yet")?;
        } else {
            table(&domains).print()?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn table(domains: &[DomainRow]) -> Table {
    let mut t = Table::new(&[
        "DOMAIN",
        "NODES",
        "TOTAL CU",
        "FREE CU",
        "FREE SLOTS",
        "PRICE",
        "BEST RTT MS",
    ])
    .with_right(&[1, 2, 3, 4, 6]);
    for d in domains {
        let name = if d.local {
            format!("{} *", d.domain)
        } else {
            d.domain.to_string()
        };
        let price = if d.price_min == d.price_max {
            Credits(d.price_min.0).to_string()
        } else {
            format!("{}–{}", Credits(d.price_min.0), Credits(d.price_max.0))
        };
        t.row(vec![
            name,
            d.nodes.to_string(),
            d.total_cu.to_string(),
            d.free_cu.to_string(),
            d.free_slots.to_string(),
            price,
            d.best_rtt_ms.to_string(),
        ]);
    }
    t
}
