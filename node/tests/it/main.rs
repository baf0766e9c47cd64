//! Integration tests, as one binary (one module per area).

#![allow(clippy::unwrap_used)]

mod executor;
