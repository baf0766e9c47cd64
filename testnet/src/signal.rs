//! Signals: sending them to the node processes, and waiting for the ones
//! that stop this program.

use std::process::Child;

/// A signal the testnet sends to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Ask it to stop cleanly.
    Term,
    /// Kill it at once.
    Kill,
    /// Suspend it.
    Stop,
    /// Resume it.
    Cont,
}

/// Sends `sig` to the child. Signals to a child that has already exited
/// (but not been reaped) are harmless.
#[cfg(unix)]
pub fn send(child: &mut Child, sig: Signal) -> std::io::Result<()> {
    use rustix::process::{Pid, Signal as S, kill_process};
    let s = match sig {
        Signal::Term => S::TERM,
        Signal::Kill => S::KILL,
        Signal::Stop => S::STOP,
        Signal::Cont => S::CONT,
    };
    kill_process(Pid::from_child(child), s).map_err(std::io::Error::from)
}

/// Sends `sig` to the child (only killing is possible off Unix).
#[cfg(not(unix))]
pub fn send(child: &mut Child, sig: Signal) -> std::io::Result<()> {
    match sig {
        Signal::Term | Signal::Kill => child.kill(),
        Signal::Stop | Signal::Cont => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "suspending a process needs Unix",
        )),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs `work` until it ends or Ctrl-C/SIGTERM arrives, whichever is
/// first; an interruption is an error, so that the caller's guards (which
/// stop the nodes) run as the error unwinds.
pub async fn interruptible<T>(work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::select! {
        r = work => r,
        _ = shutdown() => Err(anyhow::anyhow!("interrupted; stopping the nodes")),
    }
}
