//! `T::from_bytes` for every message and sub-message type: the first byte
//! picks the type (see `MESSAGES` in the crate), the rest is decoded.
#![no_main]

use agora_protocol_fuzz::decode_message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&selector, rest)) = data.split_first() {
        decode_message(selector, rest);
    }
});
