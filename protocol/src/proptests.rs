//! Property tests over every message and the envelope.

use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;

use crate::capacity::{Addr, Advert, ChildSummary, Contact, DomainStats, DomainSummary, Label};
use crate::domain::Domain;
use crate::envelope::{Envelope, OpenError, Payload, ReplayGuard};
use crate::execution::{Checkpoint, ExitStatus, Progress, Receipt};
use crate::fraud::{Evidence, FraudProof};
use crate::id::{ContentId, JobId, MessageId, NodeId, Nonce, TaskId};
use crate::identity::Keypair;
use crate::limits::*;
use crate::market::{
    Accept, Agreement, Arg, Assignment, CallForOffers, Cancel, CancelReason, LatencyClass, Limits, Offer,
    Requirements,
};
use crate::rpc::{ContentRequest, ContentResponse, Decline, MarketRequest, MarketResponse};
use crate::settlement::Voucher;
use crate::units::*;
use crate::wire::{Blob, Decode, Encode};

fn keypair() -> impl Strategy<Value = Keypair> {
    any::<[u8; 32]>().prop_map(Keypair::from_secret)
}
fn node_id() -> impl Strategy<Value = NodeId> {
    keypair().prop_map(|k| k.node_id())
}
fn content_id() -> impl Strategy<Value = ContentId> {
    any::<[u8; 32]>().prop_map(ContentId)
}
fn message_id() -> impl Strategy<Value = MessageId> {
    any::<[u8; 32]>().prop_map(MessageId)
}
fn task_id() -> impl Strategy<Value = TaskId> {
    (any::<[u8; 16]>(), any::<u32>()).prop_map(|(j, i)| TaskId::new(JobId(j), i))
}
fn domain() -> impl Strategy<Value = Domain> {
    vec("[a-z0-9_-]{1,12}", 0..=4).prop_map(|s| s.join("/").parse().expect("valid by construction"))
}
fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("\\PC{{0,{}}}", (max / 4).min(40))).expect("regex")
}
fn label() -> impl Strategy<Value = Label> {
    ("[a-z0-9._-]{1,32}", "[^\\p{Cc}]{0,16}").prop_map(|(k, v)| Label::new(&k, &v).expect("a valid label"))
}

fn addr() -> impl Strategy<Value = Addr> {
    "/ip4/[0-9.]{7,15}/tcp/[0-9]{1,5}".prop_map(Addr)
}
fn stats() -> impl Strategy<Value = DomainStats> {
    (
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(nodes, t, f, s, pmin, pmax, rtt)| DomainStats {
            nodes,
            total_cu: ComputeUnits(t),
            free_cu: ComputeUnits(f),
            free_slots: s,
            price_min: Price(pmin),
            price_max: Price(pmax),
            best_rtt: Millis(rtt),
        })
}

prop_compose! {
    fn advert()(seq in any::<u64>(), domain in domain(), cu in any::<u64>(), cal in any::<u64>(),
                mem in any::<u64>(), slots in any::<u32>(), free in any::<u32>(), queued in any::<u32>(),
                load in any::<u32>(), accepting in any::<bool>(), price in any::<u64>(), energy in any::<u64>(),
                version in text(MAX_VERSION_LEN), addrs in vec(addr(), 0..=MAX_ADDRS),
                max_fuel in any::<u64>(), max_time in any::<u64>(), max_out in any::<u64>(),
                labels in vec(label(), 0..=MAX_LABELS)) -> Advert {
        Advert { seq, domain, cu: ComputeUnits(cu), calibrated_at: Timestamp(cal), memory: Bytes(mem), slots,
                 free_slots: free, queued, load, accepting, price: Price(price), energy: EnergyRate(energy),
                 version, addrs, max_task_fuel: Fuel(max_fuel), max_task_time: Millis(max_time),
                 max_output: Bytes(max_out), labels }
    }
}

prop_compose! {
    fn summary()(domain in domain(), seq in any::<u64>(), stats in stats(),
                 contacts in vec((node_id(), vec(addr(), 0..3)).prop_map(|(node, addrs)| Contact { node, addrs }), 0..=3),
                 children in vec((domain(), stats()).prop_map(|(domain, stats)| ChildSummary { domain, stats }), 0..=4))
                 -> DomainSummary {
        DomainSummary { domain, seq, stats, contacts, children }
    }
}

prop_compose! {
    fn requirements()(fuel in any::<u64>(), memory in any::<u64>(), deadline in any::<u64>(), max_price in any::<u64>(),
                      replication in any::<u8>(), domain in proptest::option::of(domain()),
                      max_energy in proptest::option::of(any::<u64>()), module in content_id(),
                      module_size in any::<u64>(), input in content_id(), input_size in any::<u64>(),
                      fuel_limit in any::<u64>(), max_output in any::<u64>(), interactive in any::<bool>()) -> Requirements {
        Requirements { fuel: Fuel(fuel), memory: Bytes(memory), deadline: Millis(deadline), max_price: Price(max_price),
                       replication, domain, max_energy: max_energy.map(EnergyRate), module, module_size: Bytes(module_size),
                       input, input_size: Bytes(input_size), fuel_limit: Fuel(fuel_limit),
                       max_output: Bytes(max_output),
                       class: if interactive { LatencyClass::Interactive } else { LatencyClass::Batch } }
    }
}

fn cfo() -> impl Strategy<Value = CallForOffers> {
    (task_id(), any::<u16>(), requirements()).prop_map(|(task, attempt, requirements)| CallForOffers {
        task,
        attempt,
        requirements,
    })
}

prop_compose! {
    fn offer()(call in message_id(), task in task_id(), price in any::<u64>(), s in any::<u64>(), r in any::<u64>(),
               has_module in any::<bool>(), has_input in any::<bool>(), energy in any::<u64>()) -> Offer {
        Offer { call, task, price: Price(price), expected_start: Millis(s), expected_run: Millis(r), has_module, has_input, energy: EnergyRate(energy) }
    }
}

prop_compose! {
    fn assignment()(task in task_id(), attempt in any::<u16>(), module in content_id(), input in content_id(),
                    args in vec(text(MAX_ARG_LEN).prop_map(Arg), 0..6), fuel in any::<u64>(), memory in any::<u64>(),
                    timeout in any::<u64>(), max_output in any::<u64>(), seed in any::<u64>(),
                    resume in proptest::option::of(content_id())) -> Assignment {
        Assignment { task, attempt, module, input, args,
                     limits: Limits { fuel: Fuel(fuel), memory: Bytes(memory), timeout: Millis(timeout), max_output: Bytes(max_output) },
                     seed, resume }
    }
}

fn accept() -> impl Strategy<Value = Accept> {
    (message_id(), any::<u64>(), assignment()).prop_map(|(offer, p, assignment)| Accept {
        offer,
        price: Price(p),
        assignment,
    })
}

fn agreement() -> impl Strategy<Value = Agreement> {
    (message_id(), task_id(), node_id(), any::<u64>(), any::<u64>()).prop_map(
        |(accept, task, requester, p, due)| Agreement {
            accept,
            task,
            requester,
            price: Price(p),
            due: Timestamp(due),
        },
    )
}

fn cancel() -> impl Strategy<Value = Cancel> {
    (message_id(), task_id(), 0u8..4).prop_map(|(agreement, task, r)| Cancel {
        agreement,
        task,
        reason: [
            CancelReason::JobCancelled,
            CancelReason::Superseded,
            CancelReason::Overdue,
            CancelReason::Withdrawn,
        ][r as usize],
    })
}

fn exit_status() -> impl Strategy<Value = ExitStatus> {
    prop_oneof![
        Just(ExitStatus::Success),
        any::<u32>().prop_map(ExitStatus::ExitCode),
        Just(ExitStatus::OutOfFuel),
        Just(ExitStatus::Deadline),
        Just(ExitStatus::MemoryLimit),
        Just(ExitStatus::StackOverflow),
        text(MAX_MESSAGE_LEN).prop_map(ExitStatus::Trap),
        Just(ExitStatus::OutputTooLarge),
        text(MAX_MESSAGE_LEN).prop_map(ExitStatus::InvalidModule),
    ]
}

prop_compose! {
    fn receipt()(agreement in message_id(), task in task_id(), requester in node_id(), module in content_id(),
                 input in content_id(), args in content_id(), seed in any::<u64>(), fuel_limit in any::<u64>(),
                 output in content_id(), output_size in any::<u64>(), fuel_used in any::<u64>(),
                 exit in exit_status(), started in any::<u64>(), finished in any::<u64>(),
                 resumed in proptest::option::of(content_id())) -> Receipt {
        Receipt { agreement, task, requester, module, input, args, seed, fuel_limit: Fuel(fuel_limit), output,
                  output_size: Bytes(output_size), fuel_used: Fuel(fuel_used), exit, started_at: Timestamp(started),
                  finished_at: Timestamp(finished), resumed }
    }
}

prop_compose! {
    fn checkpoint()(module in content_id(), input in content_id(), args in content_id(), seed in any::<u64>(),
                    fuel_limit in any::<u64>(), index in any::<u32>(), from in proptest::option::of(content_id()),
                    fuel_used in any::<u64>(), time in any::<u64>(), random in any::<u64>(), input_read in any::<u64>(),
                    output in blob(512), state in blob(512)) -> Checkpoint {
        Checkpoint { module, input, args, seed, fuel_limit: Fuel(fuel_limit), index, from, fuel_used: Fuel(fuel_used),
                     time, random, input_read, output, state }
    }
}

prop_compose! {
    fn progress()(agreement in message_id(), task in task_id(), requester in node_id(),
                  from in proptest::option::of(content_id()), checkpoint in content_id(), index in any::<u32>(),
                  fuel_used in any::<u64>()) -> Progress {
        Progress { agreement, task, requester, from, checkpoint, index, fuel_used: Fuel(fuel_used) }
    }
}

prop_compose! {
    fn voucher()(receipt in message_id(), agreement in message_id(), task in task_id(), provider in node_id(),
                 fuel in any::<u64>(), price in any::<u64>(), amount in any::<u64>()) -> Voucher {
        Voucher { receipt, agreement, task, provider, fuel: Fuel(fuel), price: Price(price), amount: Credits(amount) }
    }
}

const T0: Timestamp = Timestamp(1_800_000_000_000);

fn sealed<T: Payload>(kp: &Keypair, p: &T, nonce: [u8; 16]) -> Envelope {
    Envelope::seal(kp, p, T0, Duration::from_secs(10), Nonce(nonce)).expect("seal")
}

fn evidence() -> impl Strategy<Value = Evidence> {
    (
        keypair(),
        receipt(),
        proptest::option::of(accept()),
        any::<bool>(),
    )
        .prop_map(|(kp, r, accept, bound)| {
            let receipt = sealed(&kp, &r, [1; 16]);
            let accept = accept.map(|a| sealed(&kp, &a, [2; 16]));
            let agreement = bound.then(|| {
                sealed(
                    &kp,
                    &crate::market::Agreement {
                        accept: accept.as_ref().map_or(crate::id::MessageId([0; 32]), |a| a.id()),
                        task: r.task,
                        requester: r.requester,
                        price: Price(1),
                        due: T0,
                    },
                    [3; 16],
                )
            });
            Evidence {
                receipt,
                agreement,
                accept,
            }
        })
}

fn fraud_proof() -> impl Strategy<Value = FraudProof> {
    (evidence(), evidence()).prop_map(|(accused, witness)| FraudProof { accused, witness })
}

fn decline() -> impl Strategy<Value = Decline> {
    prop_oneof![
        Just(Decline::NoFreeSlot),
        any::<u64>().prop_map(|m| Decline::MemoryTooLarge { max: Bytes(m) }),
        any::<u64>().prop_map(|p| Decline::PriceTooLow { asking: Price(p) }),
        Just(Decline::NotAccepting),
        any::<u64>().prop_map(|e| Decline::DeadlineInfeasible { earliest: Millis(e) }),
        any::<u64>().prop_map(|r| Decline::EnergyTooHigh { rate: EnergyRate(r) }),
        Just(Decline::OfferUnknown),
        Just(Decline::Unknown),
        text(MAX_MESSAGE_LEN).prop_map(|message| Decline::Invalid { message }),
        any::<u64>().prop_map(|m| Decline::TooLarge { max: Bytes(m) }),
        any::<u64>().prop_map(|m| Decline::FuelTooHigh { max: Fuel(m) }),
        any::<u64>().prop_map(|m| Decline::TimeTooLong { max: Millis(m) }),
        any::<u64>().prop_map(|a| Decline::NoCredit {
            available: Credits(a)
        }),
        any::<u32>().prop_map(|receipts| Decline::Unpaid { receipts }),
        Just(Decline::Refused),
        Just(Decline::Superseded),
        Just(Decline::Unavailable),
    ]
}

/// An envelope signed alone, or one of a batch signed together.
fn envelope() -> impl Strategy<Value = Envelope> {
    prop_oneof![
        (keypair(), advert(), any::<[u8; 16]>()).prop_map(|(kp, a, n)| sealed(&kp, &a, n)),
        (keypair(), advert(), 2..40usize, any::<prop::sample::Index>()).prop_map(|(kp, a, size, pick)| {
            let items: Vec<_> = (0..size)
                .map(|i| (&a, T0, Duration::from_secs(10), Nonce([i as u8; 16])))
                .collect();
            let mut batch = Envelope::seal_batch(&kp, &items).expect("seal");
            batch.swap_remove(pick.index(size))
        }),
    ]
}

fn blob(max: usize) -> impl Strategy<Value = Blob> {
    vec(any::<u8>(), 0..max.min(256)).prop_map(Blob)
}

fn market_request() -> impl Strategy<Value = MarketRequest> {
    prop_oneof![
        envelope().prop_map(MarketRequest::CallForOffers),
        (envelope(), vec(blob(MAX_INLINE_CONTENT), 0..=MAX_INLINE_BLOBS))
            .prop_map(|(accept, content)| MarketRequest::Accept { accept, content }),
        (
            requirements(),
            envelope(),
            vec(blob(MAX_INLINE_CONTENT), 0..=MAX_INLINE_BLOBS)
        )
            .prop_map(|(requirements, accept, content)| MarketRequest::Order {
                requirements: Box::new(requirements),
                accept,
                content
            }),
        (
            envelope(),
            proptest::option::of(blob(MAX_INLINE_CONTENT)),
            blob(crate::rpc::MAX_STDERR_TAIL)
        )
            .prop_map(|(receipt, output, stderr)| MarketRequest::Receipt {
                receipt,
                output,
                stderr
            }),
        envelope().prop_map(MarketRequest::Pay),
        envelope().prop_map(MarketRequest::Cancel),
        domain().prop_map(MarketRequest::Summaries),
        (keypair(), any::<u64>()).prop_map(|(kp, after)| MarketRequest::Chain {
            owner: kp.node_id(),
            after
        }),
        (
            any::<[u8; 32]>(),
            any::<u32>(),
            any::<u64>(),
            blob(crate::rpc::MAX_LOG_CHUNK)
        )
            .prop_map(|(a, index, offset, text)| MarketRequest::Log {
                agreement: crate::id::MessageId(a),
                task: crate::id::TaskId::new(crate::id::JobId([7; 16]), index),
                offset,
                text
            }),
        (envelope(), blob(MAX_INLINE_CONTENT))
            .prop_map(|(progress, checkpoint)| MarketRequest::Progress { progress, checkpoint }),
        envelope().prop_map(MarketRequest::Attest),
        keypair().prop_map(|kp| MarketRequest::ChainCheckpoint { owner: kp.node_id() }),
    ]
}

fn market_response() -> impl Strategy<Value = MarketResponse> {
    prop_oneof![
        envelope().prop_map(MarketResponse::Offer),
        envelope().prop_map(MarketResponse::Agreement),
        decline().prop_map(MarketResponse::Declined),
        Just(MarketResponse::Ack),
        vec(envelope(), 0..3).prop_map(MarketResponse::Summaries),
        envelope().prop_map(MarketResponse::Received),
        vec(envelope(), 0..3).prop_map(MarketResponse::Chain),
        (envelope(), vec(envelope(), 0..3))
            .prop_map(|(block, attestations)| MarketResponse::ChainCheckpoint { block, attestations }),
        (
            envelope(),
            envelope(),
            proptest::option::of(blob(16 * 1024)),
            blob(crate::rpc::MAX_STDERR_TAIL)
        )
            .prop_map(|(agreement, receipt, output, stderr)| MarketResponse::Ran {
                agreement,
                receipt,
                output,
                stderr
            }),
    ]
}

fn roundtrip<T: Encode + Decode + PartialEq + std::fmt::Debug>(v: &T) -> Result<(), TestCaseError> {
    let bytes = v.to_bytes();
    let back = T::from_bytes(&bytes).map_err(|e| TestCaseError::fail(format!("{e}")))?;
    prop_assert_eq!(&back, v);
    // Deterministic: re-encoding gives the same bytes.
    prop_assert_eq!(back.to_bytes(), bytes.clone());
    // Every strict prefix is an error, never a panic.
    for cut in [0, bytes.len() / 2, bytes.len().saturating_sub(1)] {
        if cut < bytes.len() {
            prop_assert!(T::from_bytes(&bytes[..cut]).is_err());
        }
    }
    // One extra byte is an error too.
    let mut long = bytes;
    long.push(0);
    prop_assert!(T::from_bytes(&long).is_err());
    Ok(())
}

/// A payload survives sealing and opening intact.
fn seal_roundtrip<T: Payload + PartialEq + std::fmt::Debug>(
    kp: &Keypair,
    v: &T,
) -> Result<(), TestCaseError> {
    let env = sealed(kp, v, [9; 16]);
    let env = Envelope::from_bytes(&env.to_bytes()).map_err(|e| TestCaseError::fail(format!("{e}")))?;
    let opened = env
        .open::<T>(T0)
        .map_err(|e| TestCaseError::fail(format!("{e}")))?;
    prop_assert_eq!(opened.payload(), v);
    prop_assert_eq!(opened.signer(), kp.node_id());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn every_message_roundtrips(kp in keypair(), a in advert(), s in summary(), c in cfo(), o in offer(), ac in accept(),
                                ag in agreement(), ca in cancel(), r in receipt(), v in voucher(), f in fraud_proof(),
                                cp in checkpoint(), pr in progress()) {
        roundtrip(&a)?; seal_roundtrip(&kp, &a)?;
        roundtrip(&s)?; seal_roundtrip(&kp, &s)?;
        roundtrip(&c)?; seal_roundtrip(&kp, &c)?;
        roundtrip(&o)?; seal_roundtrip(&kp, &o)?;
        roundtrip(&ac)?; seal_roundtrip(&kp, &ac)?;
        roundtrip(&ag)?; seal_roundtrip(&kp, &ag)?;
        roundtrip(&ca)?; seal_roundtrip(&kp, &ca)?;
        roundtrip(&r)?; seal_roundtrip(&kp, &r)?;
        roundtrip(&v)?; seal_roundtrip(&kp, &v)?;
        roundtrip(&f)?; seal_roundtrip(&kp, &f)?;
        roundtrip(&cp)?;
        roundtrip(&pr)?; seal_roundtrip(&kp, &pr)?;
    }

    #[test]
    fn rpc_frames_roundtrip(req in market_request(), resp in market_response(), d in decline(),
                            id in content_id(), b in blob(1024)) {
        roundtrip(&req)?;
        roundtrip(&resp)?;
        roundtrip(&d)?;
        roundtrip(&ContentRequest { id, slice: None })?;
        roundtrip(&ContentRequest { id, slice: Some(crate::rpc::Slice { start: 1024 * (b.0.len() as u64), len: 1 + b.0.len() as u64 }) })?;
        roundtrip(&ContentResponse::Slice(b.clone()))?;
        roundtrip(&ContentResponse::Found(b))?;
        roundtrip(&ContentResponse::NotFound)?;
    }

    #[test]
    fn batches_roundtrip_and_keep_their_order(reqs in vec(market_request(), 0..8), resps in vec(market_response(), 0..8)) {
        let reqs: Vec<MarketRequest> = reqs.into_iter().filter(MarketRequest::batchable).collect();
        let resps: Vec<MarketResponse> =
            resps.into_iter().filter(|r| !matches!(r, MarketResponse::Summaries(_))).collect();
        let batch = MarketRequest::Batch(reqs.clone());
        prop_assert_eq!(batch.encoded_len(), batch.to_bytes().len());
        roundtrip(&batch)?;
        roundtrip(&MarketResponse::Batch(resps))?;
        // Grouping keeps every request once, in order, and only batches
        // what may be batched.
        let groups = MarketRequest::group(reqs.clone());
        let mut seen = Vec::new();
        for (frame, idx) in groups {
            prop_assert!(frame.to_bytes().len() <= crate::limits::MAX_MARKET_FRAME);
            match frame {
                MarketRequest::Batch(items) => {
                    prop_assert!(items.len() > 1 && items.len() <= crate::limits::MAX_BATCH);
                    prop_assert_eq!(items.len(), idx.len());
                    for (item, i) in items.iter().zip(&idx) {
                        prop_assert_eq!(item, &reqs[*i]);
                    }
                }
                one => {
                    prop_assert_eq!(idx.len(), 1);
                    prop_assert_eq!(&one, &reqs[idx[0]]);
                }
            }
            seen.extend(idx);
        }
        prop_assert_eq!(seen, (0..reqs.len()).collect::<Vec<_>>());
    }

    #[test]
    fn every_request_size_is_known_without_encoding(req in market_request()) {
        prop_assert_eq!(req.encoded_len(), req.to_bytes().len());
    }

    #[test]
    fn a_flipped_bit_anywhere_is_rejected(env in envelope(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut bytes = env.to_bytes();
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        // Either it no longer decodes, or it decodes and fails to open.
        if let Ok(e) = Envelope::from_bytes(&bytes) {
            prop_assert!(e.open::<Advert>(T0).is_err(), "flipped bit {} of byte {} accepted", bit, i);
        }
    }

    #[test]
    fn a_signature_for_one_type_never_opens_as_another(kp in keypair(), c in cfo(), o in offer()) {
        let env = sealed(&kp, &c, [3; 16]);
        prop_assert!(env.open::<CallForOffers>(T0).is_ok());
        let wrong = matches!(env.open::<Offer>(T0), Err(OpenError::WrongType { .. }));
        prop_assert!(wrong);
        let wrong = matches!(env.open::<Accept>(T0), Err(OpenError::WrongType { .. }));
        prop_assert!(wrong);
        let env = sealed(&kp, &o, [4; 16]);
        let wrong = matches!(env.open::<CallForOffers>(T0), Err(OpenError::WrongType { .. }));
        prop_assert!(wrong);
    }

    #[test]
    fn expired_and_future_envelopes_are_rejected(env in envelope(), late in 10_000u64..1_000_000_000, early in 30_001u64..1_000_000_000) {
        let expired = matches!(env.open::<Advert>(Timestamp(T0.0 + late)), Err(OpenError::Expired { .. }));
        prop_assert!(expired);
        let future = matches!(env.open::<Advert>(Timestamp(T0.0 - early)), Err(OpenError::FutureDated { .. }));
        prop_assert!(future);
    }

    #[test]
    fn a_reused_nonce_is_rejected(env in envelope(), others in vec(envelope(), 0..8)) {
        let mut guard = ReplayGuard::new(1024, T0);
        let v = env.open::<Advert>(T0).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(guard.check(&v, T0), Ok(()));
        for o in &others {
            let ov = o.open::<Advert>(T0).map_err(|e| TestCaseError::fail(format!("{e}")))?;
            let _ = guard.check(&ov, T0);
        }
        prop_assert_eq!(guard.check(&v, T0), Err(OpenError::Replayed));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..2048)) {
        let _ = Envelope::from_bytes(&bytes);
        let _ = MarketRequest::from_bytes(&bytes);
        let _ = MarketResponse::from_bytes(&bytes);
        let _ = ContentResponse::from_bytes(&bytes);
        let _ = Advert::from_bytes(&bytes);
        let _ = DomainSummary::from_bytes(&bytes);
        let _ = Receipt::from_bytes(&bytes);
        let _ = FraudProof::from_bytes(&bytes);
    }
}

/// A batch may not nest, carry a summaries request or exceed its count.
#[test]
fn malformed_batches_are_rejected() {
    let kp = Keypair::from_secret([3; 32]);
    let cfo = || MarketRequest::CallForOffers(sealed(&kp, &crate::capacity::tests::sample_advert(), [1; 16]));
    let nested = MarketRequest::Batch(vec![cfo(), MarketRequest::Batch(vec![cfo(), cfo()])]);
    assert!(matches!(
        MarketRequest::from_bytes(&nested.to_bytes()),
        Err(crate::DecodeError::InvalidTag { .. })
    ));
    let with_summaries = MarketRequest::Batch(vec![cfo(), MarketRequest::Summaries(Domain::root())]);
    assert!(matches!(
        MarketRequest::from_bytes(&with_summaries.to_bytes()),
        Err(crate::DecodeError::InvalidValue { field: "batch", .. })
    ));
    let full = MarketRequest::Batch(vec![cfo(); MAX_BATCH]);
    assert!(MarketRequest::from_bytes(&full.to_bytes()).is_ok());
    let over = MarketRequest::Batch(vec![cfo(); MAX_BATCH + 1]);
    assert!(matches!(
        MarketRequest::from_bytes(&over.to_bytes()),
        Err(crate::DecodeError::TooLong { field: "batch", .. })
    ));
    let nested = MarketResponse::Batch(vec![MarketResponse::Ack, MarketResponse::Batch(vec![])]);
    assert!(MarketResponse::from_bytes(&nested.to_bytes()).is_err());
    let with_summaries = MarketResponse::Batch(vec![MarketResponse::Summaries(vec![])]);
    assert!(MarketResponse::from_bytes(&with_summaries.to_bytes()).is_err());
    // A summaries request is never grouped; 70 calls make three batches.
    let mut reqs = vec![cfo(); 70];
    reqs.insert(5, MarketRequest::Summaries(Domain::root()));
    let groups = MarketRequest::group(reqs);
    let sizes: Vec<usize> = groups.iter().map(|(_, i)| i.len()).collect();
    assert_eq!(sizes, vec![1, 32, 32, 6]);
    assert!(matches!(groups[0].0, MarketRequest::Summaries(_)));
}

/// One byte over each list and string limit is rejected.
#[test]
fn one_over_each_limit_is_rejected() {
    let mut a = crate::capacity::tests::sample_advert();
    a.addrs = vec![Addr("/ip4/1.2.3.4/tcp/1".into()); MAX_ADDRS + 1];
    assert!(matches!(
        Advert::from_bytes(&a.to_bytes()),
        Err(crate::DecodeError::TooLong { field: "addrs", .. })
    ));
    a.addrs = vec![Addr("x".repeat(MAX_ADDR_LEN + 1))];
    assert!(Advert::from_bytes(&a.to_bytes()).is_err());
    a.addrs = vec![Addr("x".repeat(MAX_ADDR_LEN))];
    assert!(Advert::from_bytes(&a.to_bytes()).is_ok());
    a.version = "v".repeat(MAX_VERSION_LEN + 1);
    assert!(Advert::from_bytes(&a.to_bytes()).is_err());

    let req = MarketRequest::Receipt {
        receipt: sealed(
            &Keypair::from_secret([1; 32]),
            &crate::capacity::tests::sample_advert(),
            [0; 16],
        ),
        output: Some(Blob(vec![0; MAX_INLINE_CONTENT + 1])),
        stderr: Blob(vec![]),
    };
    assert!(MarketRequest::from_bytes(&req.to_bytes()).is_err());
    let req = MarketRequest::Receipt {
        receipt: sealed(
            &Keypair::from_secret([1; 32]),
            &crate::capacity::tests::sample_advert(),
            [0; 16],
        ),
        output: None,
        stderr: Blob(vec![b'x'; crate::rpc::MAX_STDERR_TAIL + 1]),
    };
    assert!(
        MarketRequest::from_bytes(&req.to_bytes()).is_err(),
        "a longer stderr tail is refused"
    );

    // A ran answer is bounded as a whole, so that a batch of them fits a frame.
    let env = sealed(
        &Keypair::from_secret([1; 32]),
        &crate::capacity::tests::sample_advert(),
        [0; 16],
    );
    let ran = |n: usize| MarketResponse::Ran {
        agreement: env.clone(),
        receipt: env.clone(),
        output: Some(Blob(vec![7; n])),
        stderr: Blob(vec![]),
    };
    let exact = crate::rpc::MAX_RAN_ANSWER - ran(0).to_bytes().len();
    assert_eq!(ran(exact).to_bytes().len(), crate::rpc::MAX_RAN_ANSWER);
    assert!(MarketResponse::from_bytes(&ran(exact).to_bytes()).is_ok());
    let receipt = |n: usize| MarketRequest::Receipt {
        receipt: env.clone(),
        output: Some(Blob(vec![7; n])),
        stderr: Blob(vec![]),
    };
    assert_eq!(MarketResponse::ran(&env, &receipt(exact)), Some(ran(exact)));
    assert_eq!(
        MarketResponse::ran(&env, &receipt(exact + 1)),
        None,
        "too long to answer with"
    );
    assert!(
        MarketResponse::from_bytes(&ran(exact + 1).to_bytes()).is_err(),
        "a ran answer one byte over its limit is refused"
    );

    // A payload one byte over the limit cannot be sealed, nor decoded.
    let kp = Keypair::from_secret([1; 32]);
    let mut big = crate::capacity::tests::sample_advert();
    big.version = String::new();
    big.addrs = vec![];
    let base = big.to_bytes().len();
    let mut w = crate::wire::Writer::new();
    w.u8(1);
    w.u16(crate::PayloadType::Advert.code());
    w.raw(kp.node_id().as_bytes());
    w.u64(0);
    w.u64(1);
    w.raw(&[0; 16]);
    w.bytes(&vec![0; MAX_PAYLOAD + 1]);
    w.raw(&[0; 64]);
    assert!(matches!(
        Envelope::from_bytes(&w.into_bytes()),
        Err(crate::DecodeError::TooLong { field: "payload", .. })
    ));
    assert!(base < MAX_PAYLOAD);
}
