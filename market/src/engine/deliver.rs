//! Receipts and payments are sent until their peer acknowledges (or
//! refuses) them: a provider is paid only if its receipt arrives, a payment
//! counts only if it arrives. Each is persisted before it is first sent
//! (a receipt as pending, a payment's block in the ledger's outbox), so a
//! restart resumes them; between attempts the wait doubles from 100 ms to
//! 30 s, and starts again when a connection to the peer opens. A delivered
//! receipt is owed to its provider until paid ([`crate::credit`]).
//!
//! A receipt that went back in an order's answer ([`MarketResponse::Ran`])
//! is already with its requester unless that answer was lost: its payment
//! is its acknowledgement, and only if none comes within [`PAID_WITHIN`]
//! is it sent as a request (answered with `Ack` like any other).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use agora_protocol::rpc::{MarketRequest, MarketResponse};
use agora_protocol::units::Timestamp;
use agora_protocol::{Decode, Envelope, MessageId, NodeId};

use super::{Engine, Pending, RequestId, serve};
use crate::ledger::Ledger;
use crate::records::{self, PendingReceipt, RecordError};
use crate::refusal::Refusal;

const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// How long a receipt sent in an order's answer waits for its payment
/// before it is sent again as a request. A requester pays a task as soon
/// as it is verified, within milliseconds for a tiny task without
/// replicas.
const PAID_WITHIN: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Keyed by its agreement.
    Receipt,
    /// Keyed by the payment block's envelope id.
    Payment,
}

#[derive(Debug)]
struct Delivery {
    kind: Kind,
    to: NodeId,
    request: MarketRequest,
    wait: Duration,
    next_at: Timestamp,
    in_flight: Option<RequestId>,
    /// The receipt's id, when it went in an order's answer.
    answered: Option<MessageId>,
}

/// Deliveries in progress, by key.
#[derive(Debug, Default)]
pub(super) struct Deliveries {
    by_key: BTreeMap<MessageId, Delivery>,
    /// Receipts sent in orders' answers, by receipt id: their keys.
    answered: HashMap<MessageId, MessageId>,
}

impl Deliveries {
    /// Receipts sent in orders' answers and not paid yet.
    pub(super) fn answered_len(&self) -> usize {
        self.answered.len()
    }

    pub(super) fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Starts a delivery, first due at `next_at`; `answered`: the receipt's
    /// id, when it went in an order's answer.
    fn insert(
        &mut self,
        key: MessageId,
        to: NodeId,
        request: MarketRequest,
        next_at: Timestamp,
        answered: Option<MessageId>,
    ) {
        let kind = match request {
            MarketRequest::Pay(_) => Kind::Payment,
            _ => Kind::Receipt,
        };
        if let Some(receipt) = answered {
            self.answered.insert(receipt, key);
        }
        let d = Delivery {
            kind,
            to,
            request,
            wait: FIRST_RETRY,
            next_at,
            in_flight: None,
            answered,
        };
        self.by_key.insert(key, d);
    }

    fn remove(&mut self, key: &MessageId) -> Option<Delivery> {
        let d = self.by_key.remove(key)?;
        if let Some(receipt) = &d.answered {
            self.answered.remove(receipt);
        }
        Some(d)
    }
}

impl Engine {
    /// Starts delivering a receipt (keyed by its agreement) or a voucher
    /// (keyed by its id). `durably`: its first sending waits for the turn's
    /// writes.
    pub(super) fn deliver(
        &mut self,
        key: MessageId,
        to: NodeId,
        request: MarketRequest,
        durably: bool,
        now: Timestamp,
    ) {
        self.deliveries.insert(key, to, request, now, None);
        self.send_delivery(key, durably);
    }

    /// A receipt (keyed by its agreement) that went to its requester in an
    /// order's answer: delivered once paid ([`Engine::paid_answered`]),
    /// sent again as a request if not paid within [`PAID_WITHIN`].
    pub(super) fn deliver_answered(
        &mut self,
        key: MessageId,
        to: NodeId,
        request: MarketRequest,
        receipt: MessageId,
        now: Timestamp,
    ) {
        self.deliveries
            .insert(key, to, request, now.add(PAID_WITHIN), Some(receipt));
    }

    /// A payment for `receipt` came: if the receipt went in an order's
    /// answer, the payment says it arrived, as an `Ack` would have.
    pub(super) fn paid_answered(&mut self, receipt: &MessageId, now: Timestamp) {
        if let Some(key) = self.deliveries.answered.get(receipt).copied() {
            self.on_delivered(key, Ok(MarketResponse::Ack), now);
        }
    }

    fn send_delivery(&mut self, key: MessageId, durably: bool) {
        let Some(d) = self.deliveries.by_key.get(&key) else {
            return;
        };
        let (to, request) = (d.to, d.request.clone());
        if d.kind == Kind::Receipt {
            self.counters.receipt_requests += 1;
        }
        let out = self.request(to, request, Vec::new(), Pending::Delivery { key });
        if let Output::Send { id, .. } = &out
            && let Some(d) = self.deliveries.by_key.get_mut(&key)
        {
            d.in_flight = Some(*id);
        }
        if durably {
            self.after.push(out);
        } else {
            self.out.push(out);
        }
    }

    /// Sends again what is due.
    pub(super) fn retry_deliveries(&mut self, now: Timestamp) {
        let due: Vec<MessageId> = self
            .deliveries
            .by_key
            .iter()
            .filter(|(_, d)| d.in_flight.is_none() && d.next_at <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            self.send_delivery(key, false);
        }
    }

    /// `peer` is connected again: what waits for it goes at the next tick,
    /// the wait between attempts counted from the start again. Without
    /// this, a provider back after a minute down waited up to
    /// [`MAX_RETRY`] more for its receipts' payments.
    pub(super) fn redeliver_to(&mut self, peer: NodeId) {
        for d in self
            .deliveries
            .by_key
            .values_mut()
            .filter(|d| d.to == peer && d.in_flight.is_none() && d.answered.is_none())
        {
            d.wait = FIRST_RETRY;
            d.next_at = Timestamp(0);
        }
    }

    /// The answer to a delivery.
    pub(super) fn on_delivered(
        &mut self,
        key: MessageId,
        answer: Result<MarketResponse, Refusal>,
        now: Timestamp,
    ) {
        let Some(d) = self.deliveries.by_key.get_mut(&key) else {
            return;
        };
        d.in_flight = None;
        let superseded = matches!(
            answer,
            Ok(MarketResponse::Declined(agora_protocol::rpc::Decline::Superseded))
        );
        let countersigned = match (&answer, &d.request) {
            (Ok(MarketResponse::Received(ours)), MarketRequest::Pay(pay)) => countersigns(ours, d.to, pay),
            _ => false,
        };
        let is_pay = matches!(d.request, MarketRequest::Pay(_));
        let refused = match answer {
            Ok(MarketResponse::Ack) if !is_pay => None,
            Ok(MarketResponse::Received(_)) if countersigned => None,
            Ok(MarketResponse::Received(_)) => {
                Some("the countersignature is not the payee's block receiving this payment".into())
            }
            Ok(MarketResponse::Declined(agora_protocol::rpc::Decline::Unavailable)) => {
                tracing::debug!(delivery = %key, "the peer cannot record it now; will retry");
                d.next_at = now.add(d.wait);
                d.wait = (d.wait * 2).min(MAX_RETRY);
                return;
            }
            // Withdrawn copy: nothing owed, nothing wrong.
            Ok(MarketResponse::Declined(agora_protocol::rpc::Decline::Superseded)) => None,
            Ok(MarketResponse::Declined(reason)) => Some(reason.to_string()),
            Ok(other) => Some(format!("unexpected answer {other:?}")),
            Err(e) => {
                // Unreachable: try again later.
                tracing::debug!(delivery = %key, error = %e, "not delivered yet; will retry");
                d.next_at = now.add(d.wait);
                d.wait = (d.wait * 2).min(MAX_RETRY);
                return;
            }
        };
        let Some(d) = self.deliveries.remove(&key) else {
            return;
        };
        match d.kind {
            Kind::Receipt => {
                match &refused {
                    Some(r) => tracing::warn!(agreement = %key, reason = %r, "requester refused the receipt"),
                    None if !superseded => self.owed_for(key, &d.request, now),
                    None => {}
                }
                if let Some(t) = self.provider.task(&key) {
                    let requester = t.requester;
                    self.credit.released(requester, &key);
                }
                self.provider.forget(&key);
                self.writes.delete(records::accepted_key(&key));
                self.writes.delete(records::pending_receipt_key(&key));
            }
            Kind::Payment => {
                // A refused payment will never count: it stays on the chain
                // (the debit stands) but is not sent again.
                if let Some(r) = &refused {
                    tracing::warn!(payment = %key, reason = %r, "payment refused");
                }
                Ledger::delivered(&mut self.writes, &key);
            }
        }
    }

    /// Resumes the deliveries a previous run left unfinished.
    pub(super) fn resume_deliveries(&mut self, now: Timestamp) -> Result<(), RecordError> {
        let host = self.host.as_ref();
        let receipts = records::scan::<PendingReceipt>(host, records::PENDING_RECEIPT)?;
        let vouchers = Ledger::outbox(host)?;
        for (k, p) in receipts {
            let Some(agreement) = records::id_after(&k, records::PENDING_RECEIPT) else {
                continue;
            };
            let Some(env) = decode_hex_envelope(&p.envelope) else {
                continue;
            };
            self.deliver(
                agreement,
                p.requester,
                serve::receipt_request(env, None, Vec::new()),
                false,
                now,
            );
        }
        for (key, o) in vouchers {
            let Some(env) = decode_hex_envelope(&o.envelope) else {
                continue;
            };
            self.deliver(key, o.to, MarketRequest::Pay(env), false, now);
        }
        Ok(())
    }
}

use super::Output;

impl Engine {
    /// A receipt was delivered: its cost is owed by its requester until
    /// paid, within the grace period after the task was due (a requester
    /// pays once the task is verified, which may take its replicas that
    /// long). A run cut short (a deadline) is owed nothing.
    fn owed_for(&mut self, agreement: MessageId, request: &MarketRequest, now: Timestamp) {
        let MarketRequest::Receipt { receipt, .. } = request else {
            return;
        };
        let Ok(r) = receipt.open_ignoring_time::<agora_protocol::execution::Receipt>() else {
            return;
        };
        let Some((price, due, from)) = self
            .provider
            .task(&agreement)
            .map(|t| (t.price, t.due, t.billed_from))
        else {
            return;
        };
        if !r.payload().exit.is_deterministic() {
            return;
        }
        let billed = agora_protocol::units::Fuel(r.payload().fuel_used.0.saturating_sub(from.0));
        let amount = price.cost(billed).0;
        self.credit.delivered(
            r.payload().requester,
            &agreement,
            receipt.id(),
            amount,
            due.max(now),
        );
    }
}

/// Whether `ours` is `payee`'s chain block receiving `pay`.
fn countersigns(ours: &Envelope, payee: NodeId, pay: &Envelope) -> bool {
    use agora_protocol::chain::{Block, Entry};
    ours.open_ignoring_time::<Block>()
        .is_ok_and(|b| b.signer() == payee && matches!(&b.payload().entry, Entry::Receive(p) if p == pay))
}

fn decode_hex_envelope(h: &str) -> Option<Envelope> {
    Envelope::from_bytes(&agora_protocol::id::from_hex(h)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{disk::Disk, node};
    use agora_protocol::Keypair;

    /// The first sending and every retry due by `now`: their request ids.
    fn sent(e: &mut Engine, to: NodeId, now: Timestamp) -> Vec<RequestId> {
        e.tick(now);
        e.end_turn(now)
            .now
            .into_iter()
            .filter_map(|o| match o {
                Output::Send { id, to: t, .. } if t == to => Some(id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_peer_that_connects_again_gets_what_waits_for_it_at_the_next_tick() {
        let t0 = 1_800_000_000_000;
        let disk = Disk::default();
        let mut e = node::engine(&Keypair::from_secret([0x51; 32]), None, 1, t0, &disk);
        let peer = Keypair::from_secret([0x52; 32]).node_id();
        let request = MarketRequest::Summaries("sim".parse().expect("a domain"));
        let mut now = Timestamp(t0);
        e.deliver(MessageId([9; 32]), peer, request, false, now);
        // Unreachable nine times: the next try is 25.6 s away.
        let mut id = sent(&mut e, peer, now);
        for _ in 0..8 {
            assert_eq!(id.len(), 1, "one sending at a time");
            e.on_answer(id[0], Err("unreachable".into()), now);
            now = now.add(Duration::from_secs(30));
            id = sent(&mut e, peer, now);
        }
        e.on_answer(id[0], Err("unreachable".into()), now);
        let soon = now.add(Duration::from_secs(1));
        assert!(sent(&mut e, peer, soon).is_empty(), "not due for a while yet");
        e.on_connected(peer);
        assert_eq!(sent(&mut e, peer, soon).len(), 1, "sent once the peer is back");
    }
}
