//! Integration tests, as one binary (one module per area).

#![allow(clippy::unwrap_used)]

mod api;
mod cli;
mod common;
mod dashboard;
mod executor;
mod hostile;
mod network;
mod uploads;
mod vendored;
