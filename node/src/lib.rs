//! # agora-node
//!
//! The Agora node — what the `agora` binary runs — as a library, so that
//! tests and the testnet can start nodes in-process.
//!
//! How the parts connect:
//!
//! * [`node`] starts a node and owns its **driver**, the one task that holds
//!   the node's state and decides. It is fed by:
//!   * [`network`]: the task that owns the libp2p swarm (gossipsub adverts
//!     and summaries, Kademlia, ping, the market and content
//!     request-response protocols), reached through a cloneable client;
//!   * [`api`]: the local HTTP API (and its client, used by the CLI);
//!   * the work it spawns: requests to peers, executions, transfers.
//! * The decisions are sans-IO state machines: [`view`] (what the node knows
//!   of peers and domains), [`market`] (requester: placement, verification,
//!   payment; provider: admission control and the run queue).
//! * [`executor`] runs WASI modules in wasmtime under fuel, memory and
//!   deadline limits, deterministically, and signs receipts; [`capacity`]
//!   measures CU with it and applies the owner's idle policy.
//! * [`store`] keeps records in sled (one writer thread, group commit) and
//!   content in a blob directory; [`ledger`] keeps credits in it.
//! * [`config`], [`identity`] and [`paths`] set a node up; [`cli`] and
//!   [`commands`] are the command line, one file per subcommand.

#![deny(missing_docs)]

pub mod api;
pub mod capacity;
pub mod cli;
pub mod commands;
pub mod config;
pub mod executor;
pub mod identity;
pub mod ledger;
pub mod market;
pub mod network;
pub mod node;
pub mod paths;
pub mod store;
pub mod view;
