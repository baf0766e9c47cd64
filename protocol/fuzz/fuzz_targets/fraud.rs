//! `FraudProof` decoding and `FraudProof::check`. The first byte picks a mode:
//!
//! * even: the rest is an encoded proof, decoded and checked;
//! * odd: the rest is `flags`, two receipts, arguments and `guilty`, which
//!   are sealed (validly) into a proof and checked. Flag bit 0 copies the
//!   computation (module, input, seed, fuel limit) of the first receipt into
//!   the second, bit 1 sets both receipts' argument digest to the arguments'
//!   own, so that the fuzzer gets past the signature and hash checks to the
//!   comparison of outcomes.
#![no_main]

use agora_protocol::Decode;
use agora_protocol::execution::Receipt;
use agora_protocol::fraud::FraudProof;
use agora_protocol::limits::MAX_ARGS;
use agora_protocol::market::{Arg, args_digest};
use agora_protocol::wire::{Limited, Reader};
use agora_protocol_fuzz::{check_fraud, decode_canonical, keypair, seal};
use libfuzzer_sys::fuzz_target;

fn built(data: &[u8]) -> Option<FraudProof> {
    let mut r = Reader::new(data);
    let flags = r.u8().ok()?;
    let mut a = Receipt::decode(&mut r).ok()?;
    let mut b = Receipt::decode(&mut r).ok()?;
    let args = <Vec<Arg>>::decode_limited(&mut r, MAX_ARGS, "args").ok()?;
    let guilty = r.u8().ok()?;
    if flags & 1 != 0 {
        b.module = a.module;
        b.input = a.input;
        b.args = a.args;
        b.seed = a.seed;
        b.fuel_limit = a.fuel_limit;
    }
    if flags & 2 != 0 {
        a.args = args_digest(&args);
        b.args = a.args;
    }
    Some(FraudProof {
        first: seal(&keypair(2), &a, 1),
        second: seal(&keypair(3), &b, 2),
        args,
        guilty,
    })
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
    let Some(p) = built(rest) else {
        return;
    };
    check_fraud(&p);
    let (a, b) = (
        p.first
            .open_ignoring_time::<Receipt>()
            .expect("sealed here")
            .into_payload(),
        p.second
            .open_ignoring_time::<Receipt>()
            .expect("sealed here")
            .into_payload(),
    );
    // Complete as well as sound: real evidence is always accepted.
    let evidence = a.same_computation(&b)
        && args_digest(&p.args) == a.args
        && p.guilty <= 1
        && a.outcome() != b.outcome()
        && a.exit.is_deterministic()
        && b.exit.is_deterministic();
    assert_eq!(p.check().is_ok(), evidence, "{:?}", p.check());
    // The proof survives its own encoding.
    assert_eq!(
        decode_canonical::<FraudProof>(&agora_protocol::Encode::to_bytes(&p)),
        Some(p)
    );
});
