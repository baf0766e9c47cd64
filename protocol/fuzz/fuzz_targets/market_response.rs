//! `MarketResponse::from_bytes`, then every envelope it carries is opened;
//! a page of chain blocks is also audited in order.
#![no_main]

use agora_protocol::capacity::DomainSummary;
use agora_protocol::chain::Block;
use agora_protocol::limits::{MAX_BATCH, MAX_MESSAGE_LEN, MAX_SUMMARIES};
use agora_protocol::rpc::{Decline, MAX_CHAIN_PAGE, MarketResponse};
use agora_protocol_fuzz::{check_block, check_chain, decode_canonical, open_as, open_every_type};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(resp) = decode_canonical::<MarketResponse>(data) else {
        return;
    };
    check(&resp, true);
});

/// Opens every envelope of a response; a batch's parts are responses too
/// (never batches themselves, never summaries).
fn check(resp: &MarketResponse, top: bool) {
    match resp {
        MarketResponse::Offer(e) | MarketResponse::Agreement(e) | MarketResponse::Received(e) => {
            open_every_type(e, e.issued_at())
        }
        MarketResponse::Declined(d) => {
            if let Decline::Invalid { message } = d {
                assert!(message.len() <= MAX_MESSAGE_LEN);
            }
            let _ = d.to_string();
        }
        MarketResponse::Ack => {}
        MarketResponse::Summaries(s) => {
            assert!(top, "summaries inside a batch were decoded");
            assert!(s.len() <= MAX_SUMMARIES);
            for e in s {
                let _ = open_as::<DomainSummary>(e, e.issued_at());
            }
        }
        MarketResponse::Chain(blocks) => {
            assert!(blocks.len() <= MAX_CHAIN_PAGE);
            for e in blocks {
                if let Some(v) = open_as::<Block>(e, e.issued_at()) {
                    check_block(&v);
                }
            }
            check_chain(blocks);
        }
        MarketResponse::ChainCheckpoint { block, attestations } => {
            assert!(attestations.len() <= agora_protocol::chain::MAX_ATTESTATIONS);
            if let Some(v) = open_as::<Block>(block, block.issued_at()) {
                check_block(&v);
            }
            for e in attestations {
                let _ = open_as::<agora_protocol::chain::Attestation>(e, e.issued_at());
            }
        }
        MarketResponse::Batch(items) => {
            assert!(top, "a nested batch was decoded");
            assert!(items.len() <= MAX_BATCH);
            for r in items {
                check(r, false);
            }
        }
    }
}
