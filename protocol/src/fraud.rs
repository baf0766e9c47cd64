//! Fraud proofs: two signed receipts for the same computation that disagree.

use std::time::Duration;

use crate::envelope::{Envelope, OpenError, Payload, PayloadType, Verified};
use crate::execution::Receipt;
use crate::limits::MAX_ARGS;
use crate::market::{Arg, args_digest};
use crate::wire_struct;

/// Evidence that at least one of two providers returned a wrong result.
///
/// Both receipts name the same module, input, arguments, seed and fuel limit
/// but report different outcomes. Whoever holds the module and input can
/// re-execute (with `args`, which hash to the receipts' digest) and see whose
/// receipt is false. The publisher states whom it found guilty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FraudProof {
    /// The first receipt's envelope.
    pub first: Envelope,
    /// The second receipt's envelope.
    pub second: Envelope,
    /// The task's arguments (their digest is in both receipts).
    pub args: Vec<Arg>,
    /// Which receipt the publisher found false on re-execution: 0 first, 1
    /// second.
    pub guilty: u8,
}

wire_struct!(FraudProof { first, second, args < MAX_ARGS, guilty });

impl Payload for FraudProof {
    const TYPE: PayloadType = PayloadType::FraudProof;
    const DOMAIN: &'static str = "agora/1/fraud/proof";
    const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
}

/// Why a fraud proof is not valid evidence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FraudProofError {
    /// A receipt does not verify.
    #[error("receipt does not verify: {0}")]
    Receipt(#[from] OpenError),
    /// The receipts are for different computations.
    #[error("the receipts are for different computations")]
    DifferentComputations,
    /// The receipts agree.
    #[error("the receipts agree")]
    NoConflict,
    /// The arguments do not hash to the receipts' digest.
    #[error("the arguments do not match the receipts")]
    ArgsMismatch,
    /// `guilty` is not 0 or 1.
    #[error("guilty must be 0 or 1")]
    BadGuilty,
}

/// The two verified receipts of a valid proof.
#[derive(Debug, Clone)]
pub struct Conflict {
    /// The first receipt.
    pub first: Verified<Receipt>,
    /// The second receipt.
    pub second: Verified<Receipt>,
}

impl FraudProof {
    /// Checks that the proof is well formed: both receipts verify, are for
    /// the same computation with deterministic outcomes, and disagree.
    /// Whose receipt is false still takes re-execution to decide.
    pub fn check(&self) -> Result<Conflict, FraudProofError> {
        let first = self.first.open_ignoring_time::<Receipt>()?;
        let second = self.second.open_ignoring_time::<Receipt>()?;
        let (a, b) = (first.payload(), second.payload());
        if !a.same_computation(b) {
            return Err(FraudProofError::DifferentComputations);
        }
        if args_digest(&self.args) != a.args {
            return Err(FraudProofError::ArgsMismatch);
        }
        if self.guilty > 1 {
            return Err(FraudProofError::BadGuilty);
        }
        if a.outcome() == b.outcome() || !a.exit.is_deterministic() || !b.exit.is_deterministic() {
            return Err(FraudProofError::NoConflict);
        }
        Ok(Conflict { first, second })
    }
}
