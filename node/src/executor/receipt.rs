//! Signing a receipt for a run made outside the market's engine.
//!
//! What a receipt says is filled in one place, [`Ran::receipt`] in the
//! market crate, from the task's [`Assignment`] and the run as
//! [`Outcome::ran`] reports it. The market's engine seals that payload for
//! the tasks it schedules; `agora exec --receipt` (and tests) have no
//! engine, so this module seals the same payload with the node's key.
//!
//! [`Ran::receipt`]: agora_market::engine::Ran::receipt

use std::time::SystemTime;

use agora_protocol::envelope::Verified;
use agora_protocol::execution::Receipt;
use agora_protocol::id::{MessageId, NodeId, Nonce};
use agora_protocol::market::Assignment;
use agora_protocol::units::Timestamp;
use agora_protocol::{Envelope, Keypair, Payload};

use super::Outcome;

/// Signs the receipt of a run of `assignment`, under `agreement` for
/// `requester`, as `keypair` (the provider), valid for the receipt type's
/// maximum lifetime from now. Returns the verified receipt, whose
/// [`Verified::envelope`] is what travels.
pub fn receipt(
    keypair: &Keypair,
    assignment: &Assignment,
    agreement: MessageId,
    requester: NodeId,
    outcome: &Outcome,
) -> Verified<Receipt> {
    let payload = outcome.ran().receipt(assignment, agreement, requester);
    let envelope = Envelope::seal(
        keypair,
        &payload,
        Timestamp::from_system(SystemTime::now()),
        Receipt::MAX_LIFETIME,
        Nonce(rand::random()),
    )
    // Cannot fail: the lifetime is the type's maximum and a receipt is a few
    // hundred bytes (its messages are clipped to MAX_MESSAGE_LEN).
    .expect("a receipt always fits an envelope");
    envelope
        .open_ignoring_time::<Receipt>()
        .expect("an envelope we just signed verifies")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use agora_protocol::execution::ExitStatus;
    use agora_protocol::id::{ContentId, JobId, TaskId};
    use agora_protocol::market::{Arg, Limits, args_digest};
    use agora_protocol::units::{Bytes, Fuel, Millis};

    use super::*;
    use crate::executor::TaskError;

    #[test]
    fn a_local_receipt_names_the_assignment_and_the_run_and_is_signed_by_the_provider() {
        let keypair = Keypair::from_secret([7; 32]);
        let requester = Keypair::from_secret([8; 32]).node_id();
        let assignment = Assignment {
            task: TaskId::new(JobId([3; 16]), 2),
            attempt: 1,
            module: ContentId::of(b"module"),
            input: ContentId::of(b"input"),
            args: vec![Arg("a".into()), Arg("b c".into())],
            limits: Limits {
                fuel: Fuel(1_000),
                memory: Bytes::mib(1),
                timeout: Millis(10),
                max_output: Bytes(64),
            },
            seed: 9,
            resume: None,
        };
        let outcome = Outcome {
            result: Err(TaskError::ExitCode(4)),
            output: b"out".to_vec(),
            stderr: b"ignored".to_vec(),
            fuel_used: Fuel(600),
            started_at: Timestamp(10),
            finished_at: Timestamp(20),
            wall: Duration::from_millis(10),
            resumed: None,
        };
        let agreement = MessageId([5; 32]);
        let signed = receipt(&keypair, &assignment, agreement, requester, &outcome);
        assert_eq!(signed.signer(), keypair.node_id());
        assert_eq!(
            signed.payload(),
            &Receipt {
                agreement,
                task: assignment.task,
                requester,
                module: assignment.module,
                input: assignment.input,
                args: args_digest(&assignment.args),
                seed: 9,
                fuel_limit: Fuel(1_000),
                output: ContentId::of(b"out"),
                output_size: Bytes(3),
                fuel_used: Fuel(600),
                exit: ExitStatus::ExitCode(4),
                started_at: Timestamp(10),
                finished_at: Timestamp(20),
                resumed: None,
            }
        );
    }
}
