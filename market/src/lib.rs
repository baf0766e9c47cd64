//! # agora-market
//!
//! Every decision an Agora node makes, as sans-IO state machines: fed with
//! verified messages, the results of work they asked for, and the current
//! time; answering with messages to send, records to persist and work to
//! run. Nothing here touches a socket, a disk, a thread or a clock, so the
//! node and the seeded simulation ([`sim`]) run the very same code.
//!
//! How the parts connect:
//!
//! * [`engine::Engine`] is one node's decisions as a whole: it owns the
//!   state machines below, opens and checks signed envelopes, signs what it
//!   sends, and speaks in [`engine::Output`]s (send, respond, run, publish,
//!   dial) and record writes ([`records`]). The node's driver
//!   (`agora_node::node`) only carries them out.
//! * [`view::View`] is what the node knows of its peers and domains:
//!   adverts of its own domain, summaries of the others.
//! * [`requester::Requester`] owns the jobs this node submitted: placement
//!   ([`placement`] scores candidates and keeps what the requester learns
//!   about each provider), negotiation, verification, payment.
//! * [`provider::Provider`] owns the tasks this node accepted: admission
//!   control (with the owner's [`idle`] policy and [`limits`]), offers,
//!   agreements and the run queue.
//! * [`ledger::Ledger`] keeps the node's credit chain; [`credit::Credit`]
//!   decides whom a provider works for (audited balances, credit lines,
//!   unpaid receipts, forks), counting only credits [`backing`] traces to
//!   payers that held them; [`job`] holds the job and task records and
//!   the spec a user submits.
//! * [`refusal::Refusal`] is why a request got no useful answer, typed, so
//!   that behaviour never depends on message text.

#![deny(missing_docs)]

pub mod backing;
pub mod credit;
pub mod engine;
pub mod history;
pub mod idle;
pub mod job;
pub mod ledger;
pub mod limits;
pub mod placement;
pub mod provider;
pub mod records;
pub mod refusal;
pub mod requester;
pub mod sim;
pub mod view;

pub use job::{InputSpec, JobSpec, JobState, Strategy, TaskPhase};
pub use refusal::Refusal;
