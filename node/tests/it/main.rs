//! Integration tests, as one binary (one module per area).

#![allow(clippy::unwrap_used)]

mod cli;
mod common;
mod network;
mod executor;
