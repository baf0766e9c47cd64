//! # agora-node
//!
//! The Agora node — what the `agora` binary runs — as a library, so that
//! tests and the testnet can start nodes in-process.
//!
//! How the parts connect:
//!
//! * [`node`] starts a node and owns its **driver**, the one task that holds
//!   the node's [`market::engine::Engine`] — every decision the node makes,
//!   in the `agora-market` crate — and carries out what it says. It is fed
//!   by:
//!   * [`network`]: the task that owns the libp2p swarm (gossipsub adverts
//!     and summaries, Kademlia, ping, the market and content
//!     request-response protocols), reached through a cloneable client;
//!   * [`api`]: the local HTTP API (and its client, used by the CLI);
//!   * the work it spawns: requests to peers, executions, transfers.
//! * The decisions are sans-IO state machines in [`market`] (re-exported
//!   `agora-market`): the view of peers and domains, the requester
//!   (placement, verification, payment), the provider (admission control
//!   and the run queue), the ledger, and the engine that glues them.
//! * [`executor`] runs WASI modules in wasmtime under fuel, memory and
//!   deadline limits, deterministically; [`capacity`] measures CU with it
//!   and samples the machine's load for the owner's idle policy.
//! * [`store`] keeps records in sled (one writer thread, group commit) and
//!   content in a blob directory.
//! * [`faults`] injects test faults (only with the `fault-injection`
//!   feature).
//! * [`config`], [`identity`] and [`paths`] set a node up; [`cli`] and
//!   [`commands`] are the command line, one file per subcommand.

#![deny(missing_docs)]

pub mod api;
pub mod capacity;
pub mod cli;
pub mod commands;
pub mod config;
pub mod executor;
pub mod faults;
pub mod identity;
pub mod memory;
pub mod network;
pub mod node;
pub mod paths;
pub mod sensors;
pub mod store;

pub use agora_market as market;
pub use agora_market::view;
