//! `MarketRequest::from_bytes`, then every envelope it carries is opened.
#![no_main]

use agora_protocol::limits::{MAX_INLINE_BLOBS, MAX_INLINE_CONTENT};
use agora_protocol::rpc::MarketRequest;
use agora_protocol_fuzz::{check_domain, decode_canonical, open_every_type};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(req) = decode_canonical::<MarketRequest>(data) else {
        return;
    };
    match &req {
        MarketRequest::CallForOffers(e) | MarketRequest::Voucher(e) | MarketRequest::Cancel(e) => {
            open_every_type(e, e.issued_at())
        }
        MarketRequest::Accept { accept, content } => {
            assert!(content.len() <= MAX_INLINE_BLOBS);
            assert!(content.iter().all(|b| b.0.len() <= MAX_INLINE_CONTENT));
            open_every_type(accept, accept.issued_at());
        }
        MarketRequest::Receipt { receipt, output } => {
            assert!(output.as_ref().is_none_or(|b| b.0.len() <= MAX_INLINE_CONTENT));
            open_every_type(receipt, receipt.issued_at());
        }
        MarketRequest::Summaries(d) => check_domain(d),
    }
});
