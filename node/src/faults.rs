//! Fault injection, for tests and the testnet's chaos scenarios: a
//! provider that returns wrong outputs, or runs slower than it advertises;
//! a requester that never pays, or forks its credit chain.
//!
//! Compiled in only with the `fault-injection` cargo feature, which the
//! testnet turns on when it builds the node. Without it, [`Faults`] is
//! empty, [`Faults::tamper`] does nothing and `agora node` has no such
//! flags: the shipped binary cannot be told to cheat.

use crate::executor::Outcome;

/// The faults a node injects (none by default).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// The share of tasks for which this provider returns a wrong output.
    #[cfg(feature = "fault-injection")]
    pub cheat_rate: f64,
    /// Run tasks this many times slower than measured (the advert keeps
    /// the measured figure).
    #[cfg(feature = "fault-injection")]
    pub slowdown: f64,
    /// Never pay for verified work (a freeloading requester).
    #[cfg(feature = "fault-injection")]
    pub never_pay: bool,
    /// Fork the credit chain: pay a second provider with another block at
    /// the position of the last payment.
    #[cfg(feature = "fault-injection")]
    pub fork_payments: bool,
}

impl Faults {
    /// Turns a run into a plausible but wrong one, at the cheat rate.
    pub fn tamper(&self, outcome: &mut Outcome) {
        #[cfg(feature = "fault-injection")]
        if self.cheat_rate > 0.0 && rand::random_bool(self.cheat_rate.min(1.0)) {
            outcome.output.extend_from_slice(b" (forged)");
            outcome.result = Ok(());
        }
        #[cfg(not(feature = "fault-injection"))]
        let _ = outcome;
    }

    /// Whether this node pays for verified work.
    pub fn pays(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        return !self.never_pay;
        #[cfg(not(feature = "fault-injection"))]
        true
    }

    /// Whether this node forks its credit chain when it pays.
    pub fn forks(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        return self.fork_payments;
        #[cfg(not(feature = "fault-injection"))]
        false
    }

    /// The factor by which runs are slowed (1: not at all).
    pub fn slowdown(&self) -> f64 {
        #[cfg(feature = "fault-injection")]
        return self.slowdown.max(1.0);
        #[cfg(not(feature = "fault-injection"))]
        1.0
    }
}
