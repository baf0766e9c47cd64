//! `FraudProof` decoding and `FraudProof::check`. The first byte picks a mode:
//!
//! * even: the rest is an encoded proof, decoded and checked;
//! * odd: the rest is `flags` and two receipts' outcomes (fuel, exit status,
//!   output bytes), which become copies of the sample task bound by the
//!   requester's acceptance and each provider's agreement, sealed validly
//!   into a proof and checked. Flag bit 0 makes the witness the requester's
//!   own run; bit 1 has a stranger sign the accused's acceptance; bit 2 has
//!   the accused receipt claim another seed. So the fuzzer gets past the
//!   signatures to the binding rules and the comparison of outcomes, and the
//!   target checks that real evidence is always accepted and nothing else.
#![no_main]

use agora_protocol::execution::ExitStatus;
use agora_protocol::fraud::{Evidence, FraudProof};
use agora_protocol::market::Agreement;
use agora_protocol::units::Fuel;
use agora_protocol::wire::{Blob, Limited, Reader};
use agora_protocol::{ContentId, Decode, MessageId};
use agora_protocol_fuzz::{accept, agreement, check_fraud, decode_canonical, keypair, receipt, seal};
use libfuzzer_sys::fuzz_target;

/// A receipt's outcome, from the fuzzer's bytes.
fn outcome(r: &mut Reader<'_>) -> Option<(Fuel, ExitStatus, Vec<u8>)> {
    let fuel = Fuel(r.u64().ok()?);
    let exit = ExitStatus::decode(r).ok()?;
    let output = Blob::decode_limited(r, 64, "output").ok()?.0;
    Some((fuel, exit, output))
}

/// A copy of the sample task run by provider `p` with `outcome`, bound by
/// the requester's acceptance (signed by `accept_signer`).
fn copy(
    p: u8,
    accept_signer: u8,
    seed_shift: u64,
    (fuel, exit, output): &(Fuel, ExitStatus, Vec<u8>),
) -> Evidence {
    let acc = seal(&keypair(accept_signer), &accept(), p * 10);
    let ag = seal(
        &keypair(p),
        &Agreement {
            accept: acc.id(),
            ..agreement()
        },
        p * 10 + 1,
    );
    let mut r = receipt(exit.clone(), output);
    r.agreement = ag.id();
    r.fuel_used = *fuel;
    r.seed ^= seed_shift;
    Evidence {
        receipt: seal(&keypair(p), &r, p * 10 + 2),
        agreement: Some(ag),
        accept: Some(acc),
    }
}

fn built(data: &[u8]) -> Option<(FraudProof, bool)> {
    let mut r = Reader::new(data);
    let flags = r.u8().ok()?;
    let a = outcome(&mut r)?;
    let b = outcome(&mut r)?;
    let own_run = flags & 1 != 0;
    let stranger = flags & 2 != 0;
    let reseeded = flags & 4 != 0;
    let accused = copy(2, if stranger { 66 } else { 1 }, u64::from(reseeded), &a);
    let witness = if own_run {
        let mut w = receipt(b.1.clone(), &b.2);
        w.agreement = MessageId([0; 32]);
        w.fuel_used = b.0;
        Evidence {
            receipt: seal(&keypair(1), &w, 5),
            agreement: None,
            accept: None,
        }
    } else {
        copy(3, 1, 0, &b)
    };
    let conflict = (ContentId::of(&a.2), a.0, &a.1) != (ContentId::of(&b.2), b.0, &b.1)
        && a.1.is_deterministic()
        && b.1.is_deterministic();
    let evidence = conflict && !stranger && !reseeded;
    Some((FraudProof { accused, witness }, evidence))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Some(p) = decode_canonical::<FraudProof>(rest) {
            check_fraud(&p);
        }
        return;
    }
    let Some((p, evidence)) = built(rest) else {
        return;
    };
    check_fraud(&p);
    // Complete as well as sound: real evidence is always accepted, and only it.
    assert_eq!(p.check().is_ok(), evidence, "{:?}", p.check());
    // The proof survives its own encoding.
    assert_eq!(
        decode_canonical::<FraudProof>(&agora_protocol::Encode::to_bytes(&p)),
        Some(p)
    );
});
