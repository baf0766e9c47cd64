//! `MarketRequest::from_bytes`, then every envelope it carries is opened;
//! `encoded_len` must count exactly the bytes decoded.
#![no_main]

use agora_protocol::NodeId;
use agora_protocol::limits::{MAX_BATCH, MAX_INLINE_BLOBS, MAX_INLINE_CONTENT};
use agora_protocol::rpc::MarketRequest;
use agora_protocol_fuzz::{check_domain, decode_canonical, open_every_type};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(req) = decode_canonical::<MarketRequest>(data) else {
        return;
    };
    assert_eq!(req.encoded_len(), data.len(), "{req:?}");
    check(&req, true);
});

/// Opens every envelope of a request; a batch's parts are requests too
/// (never batches themselves, never summaries requests).
fn check(req: &MarketRequest, top: bool) {
    match req {
        MarketRequest::CallForOffers(e) | MarketRequest::Pay(e) | MarketRequest::Cancel(e) => {
            open_every_type(e, e.issued_at())
        }
        MarketRequest::Accept { accept, content } => {
            assert!(content.len() <= MAX_INLINE_BLOBS);
            assert!(content.iter().all(|b| b.0.len() <= MAX_INLINE_CONTENT));
            open_every_type(accept, accept.issued_at());
        }
        MarketRequest::Receipt {
            receipt,
            output,
            stderr,
        } => {
            assert!(output.as_ref().is_none_or(|b| b.0.len() <= MAX_INLINE_CONTENT));
            assert!(stderr.0.len() <= agora_protocol::rpc::MAX_STDERR_TAIL);
            open_every_type(receipt, receipt.issued_at());
        }
        MarketRequest::Summaries(d) => {
            assert!(top, "a summaries request inside a batch was decoded");
            check_domain(d)
        }
        MarketRequest::Attest(e) => open_every_type(e, e.issued_at()),
        MarketRequest::Order { accept, content, .. } => {
            assert!(content.len() <= MAX_INLINE_BLOBS);
            assert!(content.iter().all(|b| b.0.len() <= MAX_INLINE_CONTENT));
            open_every_type(accept, accept.issued_at());
        }
        MarketRequest::Log { text, .. } => assert!(text.0.len() <= agora_protocol::rpc::MAX_LOG_CHUNK),
        MarketRequest::Progress { progress, checkpoint } => {
            assert!(checkpoint.0.len() <= MAX_INLINE_CONTENT);
            open_every_type(progress, progress.issued_at());
        }
        MarketRequest::ChainCheckpoint { owner } => {
            assert_eq!(owner.to_string().parse::<NodeId>().as_ref(), Ok(owner));
        }
        MarketRequest::Chain { owner, after: _ } => {
            assert_eq!(owner.to_string().parse::<NodeId>().as_ref(), Ok(owner));
        }
        MarketRequest::Batch(items) => {
            assert!(top, "a nested batch was decoded");
            assert!(items.len() <= MAX_BATCH);
            for r in items {
                check(r, false);
            }
        }
    }
}
