//! # agora-testnet
//!
//! A local Agora network on one machine: how users first meet Agora (the
//! demo), how the project proves its figures (the benchmarks) and how it
//! shows that faults are survived (the chaos scenarios).
//!
//! How the parts connect:
//!
//! * [`artifacts`] finds what the testnet runs — the `agora` binary and the
//!   example job modules — and builds them with cargo when they are missing
//!   or older than their sources.
//! * [`process`] runs a [`process::Testnet`] of real `agora node` processes
//!   on loopback: one data dir, port and identity each, the first node the
//!   bootstrap of the rest. It waits until every node sees the others,
//!   suspends, kills and restarts nodes for the chaos scenarios, checks that
//!   the ledgers balance, and stops every child when dropped.
//! * [`netns`] puts every node of a process testnet in its own network
//!   namespace (`--netns`): real delay between domains, real partitions.
//! * [`memory`] runs a [`memory::Testnet`] of many nodes inside this process
//!   over libp2p's memory transport, for scale: advert propagation and
//!   domain summaries across hundreds of nodes on one small machine.
//! * [`workload`] makes the task inputs (mandelbrot tiles, prime ranges,
//!   no-op inputs) exactly as `examples/README.md` specifies them, with fuel
//!   estimates, and computes the expected outputs natively where it can.
//! * [`job`] uploads a workload through a node's API, submits it, follows it
//!   to the end and summarises what happened (tasks per provider,
//!   verification, payments); [`progress`] draws it live.
//! * [`metrics`] reads a node's counters off its `/metrics` text.
//! * [`commands`] holds one module per subcommand of the `agora-testnet`
//!   binary (`up`, `demo`, `bench`, `chaos`, `scale`); [`report`] prints
//!   their tables.
//!
//! Everything talks to nodes through the node's own API client
//! ([`agora_node::api::client::Client`]), never through the `agora` CLI.

#![deny(missing_docs)]

pub mod artifacts;
pub mod cli;
pub mod commands;
pub mod job;
pub mod memory;
pub mod metrics;
pub mod netns;
pub mod process;
pub mod progress;
pub mod report;
pub mod signal;
pub mod workload;
