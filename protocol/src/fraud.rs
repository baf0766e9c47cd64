//! Fraud proofs: two signed receipts of one task's computation that
//! disagree, each bound to the task its requester assigned.
//!
//! A receipt alone proves only what its signer claims. A proof counts when
//! both receipts belong to the same task *as its requester assigned it*:
//! the accused receipt comes with the provider's signed agreement and the
//! requester's signed acceptance that agreement answers (which carries the
//! assignment: module, input, arguments, seed and limits); the witness is
//! another provider's receipt bound the same way, or the requester's own
//! receipt of its own re-execution. So a stranger cannot pair an honest
//! provider's receipt with one it signed itself, and whoever checks a
//! proof re-executes under exactly the task's signed limits (SPEC.md §8.4).

use std::time::Duration;

use crate::envelope::{Envelope, OpenError, Payload, PayloadType, Verified};
use crate::execution::Receipt;
use crate::id::NodeId;
use crate::market::{Accept, Agreement, Assignment, args_digest};
use crate::wire_struct;

/// One side of a fraud proof: a signed receipt and what binds it to its
/// task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// The receipt.
    pub receipt: Envelope,
    /// The provider's agreement the receipt names (absent only for the
    /// requester's own re-execution).
    pub agreement: Option<Envelope>,
    /// The requester's acceptance the agreement answers (absent only for
    /// the requester's own re-execution).
    pub accept: Option<Envelope>,
}

wire_struct!(Evidence {
    receipt,
    agreement,
    accept
});

/// Evidence that a provider returned a wrong result: its receipt (the
/// accused) and a receipt of the same computation with another outcome
/// (the witness). The publisher re-executed and found the accused false;
/// every checker re-executes to see for itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FraudProof {
    /// The receipt found false, with its agreement and acceptance.
    pub accused: Evidence,
    /// The receipt it conflicts with.
    pub witness: Evidence,
}

wire_struct!(FraudProof { accused, witness });

impl Payload for FraudProof {
    const TYPE: PayloadType = PayloadType::FraudProof;
    const DOMAIN: &'static str = "agora/1/fraud/proof";
    const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
}

/// Why a fraud proof is not valid evidence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FraudProofError {
    /// A signature does not verify, or an envelope is not of its type.
    #[error("an envelope does not verify: {0}")]
    Envelope(#[from] OpenError),
    /// The accused receipt is not bound to its task by an agreement and an
    /// acceptance.
    #[error("the accused receipt comes without its agreement and acceptance")]
    Unbound,
    /// The agreement or acceptance does not belong to the receipt: another
    /// signer, another task, another requester or another assignment.
    #[error("the {0} does not belong to the receipt")]
    Mismatch(&'static str),
    /// The receipts are for different computations.
    #[error("the receipts are for different computations")]
    DifferentComputations,
    /// The receipts agree, or an outcome is not deterministic.
    #[error("the receipts do not conflict")]
    NoConflict,
}

/// A valid proof, opened: both receipts and the assignment the requester
/// signed, which a checker runs.
#[derive(Debug, Clone)]
pub struct Conflict {
    /// The receipt found false.
    pub accused: Verified<Receipt>,
    /// The receipt it conflicts with.
    pub witness: Verified<Receipt>,
    /// The task as its requester assigned it (limits included).
    pub assignment: Assignment,
    /// The requester.
    pub requester: NodeId,
}

impl Evidence {
    /// Opens the receipt and, if present, checks that the agreement and
    /// acceptance bind it to a task its requester assigned. Returns the
    /// receipt and that assignment.
    fn open(&self) -> Result<(Verified<Receipt>, Option<Assignment>), FraudProofError> {
        let receipt = self.receipt.open_ignoring_time::<Receipt>()?;
        let (Some(agreement), Some(accept)) = (&self.agreement, &self.accept) else {
            return Ok((receipt, None));
        };
        let r = receipt.payload();
        let agreement = agreement.open_ignoring_time::<Agreement>()?;
        let g = agreement.payload();
        if agreement.signer() != receipt.signer()
            || agreement.id() != r.agreement
            || g.task != r.task
            || g.requester != r.requester
        {
            return Err(FraudProofError::Mismatch("agreement"));
        }
        let accept = accept.open_ignoring_time::<Accept>()?;
        let a = &accept.payload().assignment;
        let matches = accept.signer() == r.requester
            && accept.id() == g.accept
            && a.task == r.task
            && a.module == r.module
            && a.input == r.input
            && args_digest(&a.args) == r.args
            && a.seed == r.seed
            && a.limits.fuel == r.fuel_limit;
        if !matches {
            return Err(FraudProofError::Mismatch("acceptance"));
        }
        Ok((receipt, Some(a.clone())))
    }
}

impl FraudProof {
    /// Checks that the proof is valid evidence: every envelope verifies;
    /// the accused receipt is bound to a task its requester assigned; the
    /// witness is bound to the same requester's task the same way, or is
    /// the requester's own receipt; both ran the same computation with
    /// deterministic outcomes, and the outcomes differ. Whose receipt is
    /// false still takes re-execution, under the returned assignment.
    pub fn check(&self) -> Result<Conflict, FraudProofError> {
        let (accused, assignment) = self.accused.open()?;
        let assignment = assignment.ok_or(FraudProofError::Unbound)?;
        let requester = accused.payload().requester;
        if accused.signer() == requester {
            return Err(FraudProofError::Mismatch("receipt"));
        }
        let (witness, witness_assignment) = self.witness.open()?;
        let w = witness.payload();
        let own_run = witness.signer() == requester && witness_assignment.is_none();
        if w.requester != requester || !(own_run || witness_assignment.is_some()) {
            return Err(FraudProofError::Mismatch("witness"));
        }
        let a = accused.payload();
        if !a.same_computation(w) || a.task != w.task {
            return Err(FraudProofError::DifferentComputations);
        }
        if a.outcome() == w.outcome() || !a.exit.is_deterministic() || !w.exit.is_deterministic() {
            return Err(FraudProofError::NoConflict);
        }
        Ok(Conflict {
            accused,
            witness,
            assignment,
            requester,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execution::ExitStatus;
    use crate::id::{ContentId, JobId, MessageId, Nonce, TaskId};
    use crate::identity::Keypair;
    use crate::market::{Arg, Limits};
    use crate::units::{Bytes, Fuel, Millis, Price, Timestamp};

    const T0: Timestamp = Timestamp(1_800_000_000_000);

    fn seal<T: Payload>(kp: &Keypair, p: &T, n: u8) -> Envelope {
        Envelope::seal(
            kp,
            p,
            T0,
            Duration::from_secs(30).min(T::MAX_LIFETIME),
            Nonce([n; 16]),
        )
        .unwrap()
    }

    fn kp(n: u8) -> Keypair {
        Keypair::from_secret([n; 32])
    }

    fn assignment() -> Assignment {
        Assignment {
            task: TaskId::new(JobId([1; 16]), 3),
            attempt: 0,
            module: ContentId([7; 32]),
            input: ContentId([8; 32]),
            args: vec![Arg("x".into())],
            limits: Limits {
                fuel: Fuel(1_000_000),
                memory: Bytes::mib(400),
                timeout: Millis(5_000),
                max_output: Bytes::mib(1),
            },
            seed: 9,
            resume: None,
        }
    }

    /// A copy of the task run by `provider` for `requester`, reporting `out`.
    fn copy(requester: &Keypair, provider: &Keypair, n: u8, out: &[u8]) -> Evidence {
        let accept = seal(
            requester,
            &Accept {
                offer: MessageId([n; 32]),
                price: Price(1),
                assignment: assignment(),
            },
            n,
        );
        let agreement = seal(
            provider,
            &Agreement {
                accept: accept.id(),
                task: assignment().task,
                requester: requester.node_id(),
                price: Price(1),
                due: T0,
            },
            n,
        );
        let receipt = seal(provider, &receipt(agreement.id(), requester.node_id(), out), n);
        Evidence {
            receipt,
            agreement: Some(agreement),
            accept: Some(accept),
        }
    }

    fn receipt(agreement: MessageId, requester: NodeId, out: &[u8]) -> Receipt {
        let a = assignment();
        Receipt {
            agreement,
            task: a.task,
            requester,
            module: a.module,
            input: a.input,
            args: args_digest(&a.args),
            seed: a.seed,
            fuel_limit: a.limits.fuel,
            output: ContentId::of(out),
            output_size: Bytes(out.len() as u64),
            fuel_used: Fuel(10),
            exit: ExitStatus::Success,
            started_at: T0,
            finished_at: T0,
            resumed: None,
        }
    }

    #[test]
    fn two_bound_copies_that_disagree_are_evidence_with_the_signed_limits() {
        let (r, p1, p2) = (kp(1), kp(2), kp(3));
        let proof = FraudProof {
            accused: copy(&r, &p1, 1, b"wrong"),
            witness: copy(&r, &p2, 2, b"right"),
        };
        let c = proof.check().unwrap();
        assert_eq!(c.accused.signer(), p1.node_id());
        assert_eq!(c.requester, r.node_id());
        assert_eq!(
            c.assignment.limits.memory,
            Bytes::mib(400),
            "the task's own limits"
        );
    }

    #[test]
    fn the_requesters_own_run_may_witness() {
        let (r, p1) = (kp(1), kp(2));
        let own = Evidence {
            receipt: seal(&r, &receipt(MessageId([0; 32]), r.node_id(), b"right"), 5),
            agreement: None,
            accept: None,
        };
        let proof = FraudProof {
            accused: copy(&r, &p1, 1, b"wrong"),
            witness: own,
        };
        assert!(proof.check().is_ok());
    }

    #[test]
    fn a_receipt_signed_by_a_throwaway_key_is_no_witness() {
        let (r, honest, stranger) = (kp(1), kp(2), kp(66));
        // The stranger signs a receipt of the same computation for the same
        // requester, bound to nothing the requester signed.
        let forged = Evidence {
            receipt: seal(&stranger, &receipt(MessageId([9; 32]), r.node_id(), b"other"), 7),
            agreement: None,
            accept: None,
        };
        let proof = FraudProof {
            accused: copy(&r, &honest, 1, b"honest output"),
            witness: forged,
        };
        assert_eq!(proof.check().unwrap_err(), FraudProofError::Mismatch("witness"));
        // Nor may the accused be unbound.
        let proof = FraudProof {
            accused: Evidence {
                agreement: None,
                accept: None,
                ..copy(&r, &honest, 1, b"x")
            },
            witness: copy(&r, &kp(3), 2, b"y"),
        };
        assert_eq!(proof.check().unwrap_err(), FraudProofError::Unbound);
    }

    #[test]
    fn an_acceptance_signed_by_anyone_but_the_requester_binds_nothing() {
        let (r, p1, p2, stranger) = (kp(1), kp(2), kp(3), kp(66));
        let mut accused = copy(&r, &p1, 1, b"wrong");
        // The stranger re-signs the acceptance (other limits could hide in it).
        let mut a = accused
            .accept
            .as_ref()
            .unwrap()
            .open_ignoring_time::<Accept>()
            .unwrap()
            .into_payload();
        a.assignment.limits.memory = Bytes::mib(1);
        accused.accept = Some(seal(&stranger, &a, 1));
        let proof = FraudProof {
            accused,
            witness: copy(&r, &p2, 2, b"right"),
        };
        assert!(matches!(proof.check(), Err(FraudProofError::Mismatch(_))));
    }

    #[test]
    fn agreeing_or_unrelated_receipts_are_no_conflict() {
        let (r, p1, p2) = (kp(1), kp(2), kp(3));
        let same = FraudProof {
            accused: copy(&r, &p1, 1, b"same"),
            witness: copy(&r, &p2, 2, b"same"),
        };
        assert_eq!(same.check().unwrap_err(), FraudProofError::NoConflict);
        // Another requester's task is not the same task.
        let other = FraudProof {
            accused: copy(&r, &p1, 1, b"a"),
            witness: copy(&kp(4), &p2, 2, b"b"),
        };
        assert!(other.check().is_err());
    }
}
