//! The market: the decisions of negotiation, placement, verification and
//! settlement, as sans-IO state machines.
//!
//! * [`requester::Requester`] owns the jobs this node submitted. Fed with
//!   events (offers, agreements, receipts, failures, the clock) and the
//!   node's [`crate::view::View`], it emits [`requester::Action`]s: calls for
//!   offers to send, offers to accept, outputs to fetch, tasks to spot-check,
//!   vouchers to pay, fraud to report.
//! * [`provider::Provider`] owns the tasks this node accepted: admission
//!   control, offers, agreements and its run queue.
//! * [`placement`] scores candidate providers (estimated completion time,
//!   price, reputation) and keeps what the requester learns about each
//!   provider from its receipts.
//!
//! Neither machine touches a socket, a disk or a clock: the node's driver
//! ([`crate::node`]) performs their actions and feeds back the results, so
//! the same code runs in the seeded simulation tests.

pub mod job;
pub mod placement;
pub mod provider;
pub mod requester;
#[cfg(test)]
pub(crate) mod sim;

pub use job::{InputSpec, JobSpec, JobState, Strategy, TaskPhase};
