//! `agora ledger`: a node's credit balance and recent entries.

use std::process::ExitCode;

use super::common::{NodeLocator, Table, ago, block_on, emit, or_dash, print_json};
use crate::api::Ledger;

/// Show a running node's credit balance, totals and recent ledger entries.
///
/// Amounts are in credits; `+` entries are credit received (genesis grant,
/// payments for work done), `-` entries payments for work bought.
#[derive(Debug, clap::Args)]
pub struct LedgerCommand {
    /// Show at most this many recent entries.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub limit: usize,
    /// Print the API's JSON object instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// The node to ask.
    #[command(flatten)]
    pub node: NodeLocator,
}

impl LedgerCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let client = self.node.client()?;
        let limit = self.limit;
        let ledger = block_on(async move { client.ledger(limit).await })??;
        if self.json {
            print_json(&ledger)?;
        } else {
            emit(&render(&ledger))?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// `JOBID.INDEX` as the job id's first 8 digits and the index.
fn short_task(t: &str) -> String {
    match t.split_once('.') {
        Some((job, index)) if job.len() > 8 => format!("{}….{index}", &job[..8]),
        _ => t.to_owned(),
    }
}

fn render(l: &Ledger) -> String {
    let mut out = format!(
        "balance   {} credits\nreceived  {}\npaid      {}\noutbox    {} voucher(s) not yet acknowledged\n",
        l.balance, l.received, l.paid, l.outbox
    );
    if l.entries.is_empty() {
        out.push_str("\nno entries\n");
        return out;
    }
    let mut t =
        Table::new(&["SEQ", "WHEN", "KIND", "AMOUNT", "COUNTERPARTY", "TASK", "FUEL"]).with_right(&[0, 3, 6]);
    for e in &l.entries {
        let sign = if e.kind == "paid" { "-" } else { "+" };
        t.row(vec![
            e.seq.to_string(),
            ago(e.at),
            e.kind.clone(),
            format!("{sign}{}", e.amount),
            or_dash(e.counterparty.map(|c| c.short())),
            or_dash(e.task.as_deref().map(short_task)),
            or_dash(e.fuel),
        ]);
    }
    out.push('\n');
    out.push_str(&t.render());
    out
}
