//! # agora-node
//!
//! The Agora node (the `agora` binary) as a library.

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
