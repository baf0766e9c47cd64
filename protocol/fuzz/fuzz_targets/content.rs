//! The content protocol's decoders and `rpc::frame_len`. The first byte picks
//! one: 0 `ContentRequest`, 1 `ContentResponse`, 2 `frame_len` (a 4-byte
//! prefix, a 4-byte limit, then a body framed with `encode_frame`).
#![no_main]

use agora_protocol::limits::{MAX_BLOB, MAX_CONTENT_FRAME, MAX_MARKET_FRAME};
use agora_protocol::rpc::{ContentRequest, ContentResponse, encode_frame, frame_len};
use agora_protocol::wire::Blob;
use agora_protocol::{ContentId, Decode};
use agora_protocol_fuzz::decode_canonical;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => {
            if let Some(r) = decode_canonical::<ContentRequest>(rest) {
                assert_eq!(r.id.to_string().parse::<ContentId>(), Ok(r.id));
            }
        }
        1 => {
            if let Some(ContentResponse::Found(b)) = decode_canonical::<ContentResponse>(rest) {
                assert!(b.0.len() <= MAX_BLOB);
            }
        }
        _ => {
            let (Some(prefix), Some(max)) = (rest.get(..4), rest.get(4..8)) else {
                return;
            };
            let prefix: [u8; 4] = prefix.try_into().expect("4 bytes");
            let max = u32::from_le_bytes(max.try_into().expect("4 bytes")) as usize;
            let claimed = u32::from_le_bytes(prefix) as usize;
            for limit in [max, MAX_MARKET_FRAME, MAX_CONTENT_FRAME] {
                match frame_len(prefix, limit, "frame") {
                    Ok(len) => assert!(len == claimed && len <= limit),
                    Err(_) => assert!(claimed > limit),
                }
            }
            let msg = ContentResponse::Found(Blob(rest[8..].to_vec()));
            let frame = encode_frame(&msg);
            let len = frame_len(
                frame[..4].try_into().expect("4 bytes"),
                MAX_CONTENT_FRAME,
                "frame",
            )
            .expect("a small frame is within the limit");
            assert_eq!(len, frame.len() - 4);
            assert_eq!(ContentResponse::from_bytes(&frame[4..]), Ok(msg));
        }
    }
});
