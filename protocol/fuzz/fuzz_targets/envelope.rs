//! `Envelope::from_bytes` on arbitrary bytes; a decoded envelope must be
//! canonical and open (or fail to open) as every payload type without panic.
#![no_main]

use agora_protocol::Envelope;
use agora_protocol_fuzz::{check_envelope, decode_canonical};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(env) = decode_canonical::<Envelope>(data) {
        check_envelope(&env, data);
    }
});
