//! Arbitrary payload bytes behind a valid signature: the first byte picks a
//! payload type, the rest is signed as that type and opened with
//! `Envelope::open`. Opening must agree with `T::from_bytes` on the payload,
//! and a payload that decodes must seal to the very same envelope (which
//! checks the crate's signing input against SPEC.md §5.2).
#![no_main]

use std::fmt::Debug;

use agora_protocol::capacity::{Advert, DomainSummary};
use agora_protocol::chain::{Attestation, Block, ForkProof, Grant, Heads};
use agora_protocol::execution::{Progress, Receipt};
use agora_protocol::fraud::FraudProof;
use agora_protocol::market::{Accept, Agreement, CallForOffers, Cancel, Offer};
use agora_protocol::settlement::Voucher;
use agora_protocol::{Decode, Encode, Envelope, Nonce, OpenError, Payload, PayloadType, ReplayGuard};
use agora_protocol_fuzz::{T0, check_fork, check_fraud, keypair, open_every_type, seal_raw};
use libfuzzer_sys::fuzz_target;

fn run<T: Payload + Debug + PartialEq>(payload: &[u8]) -> Option<T> {
    let kp = keypair(9);
    let nonce = Nonce([0x5a; 16]);
    let bytes = seal_raw::<T>(&kp, payload, nonce);
    let env = match Envelope::from_bytes(&bytes) {
        Ok(env) => env,
        Err(e) => {
            // Only an over-long payload may stop a well-formed envelope.
            assert!(payload.len() > agora_protocol::limits::MAX_PAYLOAD, "{e}");
            return None;
        }
    };
    let direct = T::from_bytes(payload);
    let opened = env.open::<T>(T0);
    match (&direct, &opened) {
        (Ok(v), Ok(o)) => assert_eq!(v, o.payload()),
        (Err(d), Err(OpenError::Malformed(o))) => assert_eq!(d, o),
        _ => panic!("from_bytes {direct:?} but open {opened:?}"),
    }
    open_every_type(&env, T0);
    let v = opened.ok()?;
    let resealed = Envelope::seal(&kp, v.payload(), T0, agora_protocol_fuzz::LIFETIME, nonce)
        .expect("a payload that fits once fits again");
    assert_eq!(resealed.to_bytes(), bytes, "seal differs from SPEC.md §5.2");
    let mut guard = ReplayGuard::new(4, T0);
    assert_eq!(guard.check(&v, T0), Ok(()));
    assert_eq!(guard.check(&v, T0), Err(OpenError::Replayed));
    Some(v.into_payload())
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    match PayloadType::ALL[selector as usize % PayloadType::ALL.len()] {
        PayloadType::Advert => drop(run::<Advert>(payload)),
        PayloadType::DomainSummary => drop(run::<DomainSummary>(payload)),
        PayloadType::CallForOffers => drop(run::<CallForOffers>(payload)),
        PayloadType::Offer => drop(run::<Offer>(payload)),
        PayloadType::Accept => drop(run::<Accept>(payload)),
        PayloadType::Agreement => drop(run::<Agreement>(payload)),
        PayloadType::Cancel => drop(run::<Cancel>(payload)),
        PayloadType::Receipt => drop(run::<Receipt>(payload)),
        PayloadType::Progress => drop(run::<Progress>(payload)),
        PayloadType::Attestation => drop(run::<Attestation>(payload)),
        PayloadType::Voucher => drop(run::<Voucher>(payload)),
        PayloadType::Grant => drop(run::<Grant>(payload)),
        // `open_every_type` checks the block (`check_block`).
        PayloadType::Block => drop(run::<Block>(payload)),
        PayloadType::FraudProof => {
            if let Some(p) = run::<FraudProof>(payload) {
                check_fraud(&p);
            }
        }
        PayloadType::ForkProof => {
            if let Some(p) = run::<ForkProof>(payload) {
                check_fork(&p);
            }
        }
        PayloadType::Heads => drop(run::<Heads>(payload)),
    }
});
