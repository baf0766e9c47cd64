//! One module per subcommand, each with an `execute` method.

pub mod bench;
pub mod chaos;
pub mod crash_loop;
pub mod demo;
pub mod scale;
pub mod up;

use std::future::Future;

use anyhow::Context;

/// Runs `f` on a multi-threaded runtime of two workers (the machines the
/// testnet targets have two cores; the nodes are other processes).
pub fn block_on<F: Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(rt.block_on(f))
}

/// CPU shares of a heterogeneous testnet, in turn.
pub const SHARES: &[f64] = &[1.0, 0.5, 0.25];
