//! `agora ledger`: a node's credit chain (balance and recent blocks), an
//! audit of any peer's chain, and issuing grants.

use std::path::PathBuf;
use std::process::ExitCode;

use agora_protocol::chain::Grant;
use agora_protocol::units::{Credits, Timestamp};
use agora_protocol::{Decode, Encode, Envelope, Keypair, NodeId, Nonce, Payload};
use anyhow::Context;
use serde::Serialize;

use super::common::{NodeLocator, Table, ago, block_on, emit, emitln, or_dash, print_json};
use crate::api::{AuditReport, Ledger, format_balance};
use crate::commands::refs::PeerRef;

/// Show a running node's credit chain: balance, totals and recent blocks;
/// or audit a peer's chain; or issue and import grants.
///
/// Amounts are in credits; `+` entries are credits that arrived (an
/// issuer's grant, a payment for work done), `-` entries payments for work
/// bought.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LedgerCommand {
    /// Show at most this many recent entries.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub limit: usize,
    /// Fetch PEER's chain (through the node), check every link and
    /// signature, and print its audited balance. PEER is a whole peer id,
    /// or a unique part of one as `agora peers` prints it.
    #[arg(long, value_name = "PEER")]
    pub audit: Option<PeerRef>,
    /// Print the API's JSON object instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// The node to ask.
    #[command(flatten)]
    pub node: NodeLocator,
    /// Issue or import a grant.
    #[command(subcommand)]
    pub action: Option<LedgerAction>,
}

/// Grants: the only way credits are created.
#[derive(Debug, clap::Subcommand)]
pub enum LedgerAction {
    /// Sign a grant of credits to a node with an issuer's key (offline;
    /// prints the grant as hex).
    Grant(GrantCommand),
    /// Give a running node a grant signed by an issuer it trusts.
    Import(ImportCommand),
}

/// `agora ledger grant`.
#[derive(Debug, clap::Args)]
pub struct GrantCommand {
    /// The issuer's directory: its key is `DIR/identity.key`, created on
    /// first use. Nodes trust the issuer whose peer id their
    /// `credit.issuers` names.
    #[arg(long, value_name = "DIR")]
    pub issuer_dir: PathBuf,
    /// The node granted to.
    #[arg(long, value_name = "PEER")]
    pub to: NodeId,
    /// Credits granted, e.g. 1000 or 0.5.
    #[arg(long, value_name = "CREDITS")]
    pub amount: Credits,
    /// Print a JSON object (grant, issuer, to, amount_micros).
    #[arg(long)]
    pub json: bool,
}

/// `agora ledger import`.
#[derive(Debug, clap::Args)]
pub struct ImportCommand {
    /// The grant, as `agora ledger grant` printed it (hex).
    pub grant: String,
    /// Print the API's JSON answer.
    #[arg(long)]
    pub json: bool,
    /// The node to give it to.
    #[command(flatten)]
    pub node: NodeLocator,
}

#[derive(Serialize)]
struct IssuedGrant {
    grant: String,
    issuer: NodeId,
    to: NodeId,
    #[serde(rename = "amount_micros")]
    amount: Credits,
}

/// Signs a grant of `amount` to `to` with `issuer`'s key. Each grant has a
/// fresh random id: it counts once, whoever presents it.
pub fn sign_grant(issuer: &Keypair, to: NodeId, amount: Credits, now: Timestamp) -> anyhow::Result<Envelope> {
    let grant = Grant {
        to,
        amount,
        id: rand::random(),
    };
    Envelope::seal(issuer, &grant, now, Grant::MAX_LIFETIME, Nonce(rand::random()))
        .context("cannot sign the grant")
}

impl LedgerCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        match self.action {
            Some(LedgerAction::Grant(g)) => return g.execute(),
            Some(LedgerAction::Import(i)) => return i.execute(),
            None => {}
        }
        if self.audit.is_none() {
            let ledger = match self.node.client_or_records()? {
                super::common::Source::Node(client) => {
                    let limit = self.limit;
                    block_on(async move { client.ledger(limit).await })??
                }
                super::common::Source::Records(store) => {
                    crate::node::records_view::stored_ledger(&store, self.limit)?
                }
            };
            if self.json {
                print_json(&ledger)?;
            } else {
                emit(&render(&ledger))?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        let client = self.node.client()?;
        if let Some(peer) = self.audit {
            let report = block_on(async move {
                let peer = peer.resolve(&client).await?;
                anyhow::Ok(client.audit(&peer).await?)
            })??;
            if self.json {
                print_json(&report)?;
            } else {
                emit(&render_audit(&report))?;
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

impl GrantCommand {
    fn execute(self) -> anyhow::Result<ExitCode> {
        let issuer = crate::identity::load_or_create(&self.issuer_dir)?;
        let now = Timestamp::from_system(std::time::SystemTime::now());
        let env = sign_grant(&issuer, self.to, self.amount, now)?;
        let out = IssuedGrant {
            grant: hex::encode(env.to_bytes()),
            issuer: issuer.node_id(),
            to: self.to,
            amount: self.amount,
        };
        if self.json {
            print_json(&out)?;
        } else {
            eprintln!(
                "issuer {} grants {} credits to {}",
                out.issuer, out.amount, out.to
            );
            emitln(&out.grant)?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

impl ImportCommand {
    fn execute(self) -> anyhow::Result<ExitCode> {
        let bytes = hex::decode(self.grant.trim()).context("the grant is not hex")?;
        let env = Envelope::from_bytes(&bytes).context("the grant is not a signed envelope")?;
        let client = self.node.client()?;
        let answer = block_on(async move { client.grant(&env).await })??;
        if self.json {
            print_json(&answer)?;
        } else {
            emitln(&format!(
                "granted {} credits (block {}); balance {} credits",
                answer.amount,
                answer.seq,
                format_balance(answer.balance_micros)
            ))?;
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

fn render_audit(a: &AuditReport) -> String {
    let checked = if a.from_block <= 1 {
        format!("{} blocks, every link and signature checked", a.blocks)
    } else {
        format!(
            "blocks {} to {}, every link and signature checked, from a checkpoint an auditor this node trusts attested",
            a.from_block, a.blocks
        )
    };
    let mut out = format!(
        "audited   {} ({checked})\nbalance   {} credits\ngranted   {}\nreceived  {}\npaid      {}\nbacked    {} credits (received credits traced to payers that held them)\n",
        a.peer_id,
        format_balance(a.balance_micros),
        a.granted,
        a.received,
        a.paid,
        format_balance(a.backed_micros)
    );
    if a.unbacked.0 > 0 {
        out.push_str(&format!(
            "unbacked  {} received from payers that never held them: worth nothing\n",
            a.unbacked
        ));
    }
    if a.unsettled.0 > 0 {
        out.push_str(&format!(
            "unsettled {} received from payers whose chains could not be read yet\n",
            a.unsettled
        ));
    }
    out
}

fn render(l: &Ledger) -> String {
    let mut out = format!(
        "balance   {} credits\ngranted   {}\nreceived  {}\npaid      {}\nchain     {} blocks{}\noutbox    {} payment(s) not yet countersigned\n",
        format_balance(l.balance_micros),
        l.granted,
        l.received,
        l.paid,
        l.seq,
        match (l.checkpoint, l.attested_checkpoint) {
            (0, _) => String::new(),
            (c, 0) => format!(", last checkpoint at block {c}, not attested yet"),
            (c, a) => format!(
                ", last checkpoint at block {c}, block {a} attested by {} auditor{}",
                l.attested_by.len(),
                if l.attested_by.len() == 1 { "" } else { "s" }
            ),
        },
        l.outbox
    );
    if l.entries.is_empty() {
        out.push_str("\nno entries\n");
        return out;
    }
    let mut t =
        Table::new(&["SEQ", "WHEN", "KIND", "AMOUNT", "COUNTERPARTY", "TASK", "FUEL"]).with_right(&[0, 3, 6]);
    for e in &l.entries {
        let amount = match e.kind.as_str() {
            "paid" => format!("-{}", e.amount),
            "checkpoint" => "-".to_owned(),
            _ => format!("+{}", e.amount),
        };
        t.row(vec![
            e.seq.to_string(),
            ago(e.at),
            e.kind.clone(),
            amount,
            or_dash(e.counterparty.map(|c| c.short())),
            match e.receipts {
                0 | 1 => or_dash(e.task.as_deref().map(short_task)),
                n => format!("{n} tasks"),
            },
            or_dash(e.fuel),
        ]);
    }
    out.push('\n');
    out.push_str(&t.render());
    out
}
