//! # agora-node
//!
//! The Agora node (the `agora` binary) as a library.

#![deny(missing_docs)]

pub mod cli;
pub mod commands;
pub mod identity;
pub mod paths;
