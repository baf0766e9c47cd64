//! The node's metrics in the Prometheus text format: the engine's
//! counters, the view's, the executor's and the network's.

use agora_protocol::units::Timestamp;

use super::Driver;
use crate::api::Metrics;
use crate::capacity::resident_memory;
use crate::network::Stats;

/// One metric: name, kind, help.
type Def = (&'static str, &'static str, &'static str);

fn add(m: &mut Metrics, (name, kind, help): Def, value: f64) {
    m.add(name, kind, help, &[], value);
}

/// One counter per value of `label` (a reason, a cause).
fn add_each<'a>(
    m: &mut Metrics,
    (name, kind, help): Def,
    label: &str,
    counts: impl IntoIterator<Item = (&'a &'static str, &'a u64)>,
) {
    for (value, n) in counts {
        m.add(name, kind, help, &[(label, value)], *n as f64);
    }
}

impl Driver {
    pub(super) fn metrics(&self, now: Timestamp) -> Metrics {
        let mut m = Metrics::default();
        let e = &self.engine;
        let c = e.counters();
        let vm = e.view().metrics();
        let counters: [(Def, u64); 39] = [
            (
                ("agora_peers", "gauge", "Peers with a fresh advert in the view"),
                e.view().len() as u64,
            ),
            (
                ("agora_adverts_accepted_total", "counter", "Adverts accepted"),
                vm.adverts_accepted,
            ),
            (
                (
                    "agora_summaries_accepted_total",
                    "counter",
                    "Domain summaries accepted",
                ),
                vm.summaries_accepted,
            ),
            (
                (
                    "agora_peers_expired_total",
                    "counter",
                    "Peers dropped at advert expiry",
                ),
                vm.peers_expired,
            ),
            (
                ("agora_calls_total", "counter", "Calls for offers received"),
                c.calls_in,
            ),
            (("agora_offers_total", "counter", "Offers made"), c.offers_made),
            (
                (
                    "agora_orders_total",
                    "counter",
                    "Orders taken: tasks agreed without an offer before",
                ),
                c.orders_taken,
            ),
            (
                ("agora_agreements_total", "counter", "Agreements signed"),
                c.agreements,
            ),
            (
                (
                    "agora_agreement_signatures_total",
                    "counter",
                    "Signatures the agreements took: those of one turn share one",
                ),
                c.agreement_signatures,
            ),
            (
                (
                    "agora_accepts_total",
                    "counter",
                    "Acceptances sent as a requester, orders' included",
                ),
                c.accepts_sent,
            ),
            (
                (
                    "agora_accept_signatures_total",
                    "counter",
                    "Signatures the acceptances took: those of one turn share one",
                ),
                c.accept_signatures,
            ),
            (
                (
                    "agora_receipt_signatures_total",
                    "counter",
                    "Signatures the receipts took: those of one turn share one",
                ),
                c.receipt_signatures,
            ),
            (
                (
                    "agora_tasks_executed_total",
                    "counter",
                    "Tasks executed as a provider",
                ),
                c.executed,
            ),
            (
                ("agora_receipts_sent_total", "counter", "Receipts sent"),
                c.receipts_sent,
            ),
            (
                (
                    "agora_receipts_answered_total",
                    "counter",
                    "Receipts sent in an order's answer, with its agreement",
                ),
                c.receipts_answered,
            ),
            (
                (
                    "agora_receipt_requests_total",
                    "counter",
                    "Receipt requests sent (first sendings and retries)",
                ),
                c.receipt_requests,
            ),
            (
                ("agora_vouchers_received_total", "counter", "Vouchers counted"),
                c.vouchers_in,
            ),
            (
                (
                    "agora_payments_received_total",
                    "counter",
                    "Payment blocks counted, each of one voucher or more",
                ),
                c.payments_in,
            ),
            (
                (
                    "agora_vouchers_duplicate_total",
                    "counter",
                    "Payment blocks already counted (not counted again)",
                ),
                c.vouchers_dup,
            ),
            (
                ("agora_vouchers_paid_total", "counter", "Vouchers issued"),
                c.vouchers_out,
            ),
            (
                (
                    "agora_chain_checkpoints_total",
                    "counter",
                    "Checkpoints appended to this node's credit chain",
                ),
                c.checkpoints,
            ),
            (
                (
                    "agora_audits_resumed_total",
                    "counter",
                    "Audits of other chains started at an attested checkpoint",
                ),
                c.audits_resumed,
            ),
            (
                (
                    "agora_payments_sent_total",
                    "counter",
                    "Payment blocks appended, each of one voucher or more",
                ),
                c.payments_out,
            ),
            (
                (
                    "agora_summaries_published_total",
                    "counter",
                    "Domain summaries this node published as an elected publisher",
                ),
                c.summaries_published,
            ),
            (
                (
                    "agora_vouch_questions_total",
                    "counter",
                    "Questions asked of summaries' contacts whether they are members",
                ),
                c.vouch_questions,
            ),
            (
                (
                    "agora_election_questions_total",
                    "counter",
                    "Questions asked of members that rank better in the summary election, to learn their standing",
                ),
                c.rival_questions,
            ),
            (
                (
                    "agora_chains_forked",
                    "gauge",
                    "Nodes proven to have forked their credit chains (refused here)",
                ),
                e.forked_known() as u64,
            ),
            (
                (
                    "agora_payments_unmade_total",
                    "counter",
                    "Payments owed for verified work but not made (the chain holds too little)",
                ),
                c.payments_unmade,
            ),
            (
                (
                    "agora_invalid_requests_total",
                    "counter",
                    "Malformed, forged or stale requests",
                ),
                c.invalid_requests,
            ),
            (
                ("agora_replays_total", "counter", "Replayed requests rejected"),
                c.replays,
            ),
            (
                ("agora_jobs_submitted_total", "counter", "Jobs submitted"),
                c.jobs_submitted,
            ),
            (("agora_jobs_done_total", "counter", "Jobs done"), c.jobs_done),
            (
                ("agora_jobs_failed_total", "counter", "Jobs failed"),
                c.jobs_failed,
            ),
            (
                ("agora_fraud_published_total", "counter", "Fraud proofs published"),
                c.fraud_published,
            ),
            (
                (
                    "agora_fraud_confirmed_total",
                    "counter",
                    "Fraud proofs confirmed by re-execution",
                ),
                c.fraud_confirmed,
            ),
            (
                (
                    "agora_fraud_checks_total",
                    "counter",
                    "Fraud proofs re-executed to check them",
                ),
                c.fraud_checks,
            ),
            (
                (
                    "agora_gossip_rejected_total",
                    "counter",
                    "Gossip messages rejected",
                ),
                c.gossip_rejected,
            ),
            (
                (
                    "agora_driver_ticks_total",
                    "counter",
                    "Driver ticks: one per tick interval while work is under way, four a second while quiet",
                ),
                self.ticks,
            ),
            (
                (
                    "agora_memory_trims_total",
                    "counter",
                    "Times this process, idle, gave back its allocator's free pages and its mappings of its binary",
                ),
                crate::memory::trims(),
            ),
        ];
        for (def, v) in counters {
            add(&mut m, def, v as f64);
        }
        add_each(
            &mut m,
            (
                "agora_adverts_rejected_total",
                "counter",
                "Adverts rejected, by reason",
            ),
            "reason",
            &vm.adverts_rejected,
        );
        add_each(
            &mut m,
            (
                "agora_summaries_rejected_total",
                "counter",
                "Domain summaries rejected, by reason",
            ),
            "reason",
            &vm.summaries_rejected,
        );
        add_each(
            &mut m,
            (
                "agora_adverts_published_total",
                "counter",
                "Adverts this node published, by what made each due",
            ),
            "cause",
            &c.adverts_published,
        );
        add_each(
            &mut m,
            ("agora_declined_total", "counter", "Requests declined, by reason"),
            "reason",
            &c.declined,
        );
        let p = e.provider();
        let gauges: [(Def, f64); 7] = [
            (
                (
                    "agora_receipts_superseded_total",
                    "counter",
                    "Receipts of withdrawn copies acknowledged",
                ),
                c.receipts_superseded as f64,
            ),
            (
                ("agora_capacity_cu", "gauge", "Advertised capacity"),
                p.capacity().0 as f64,
            ),
            (
                ("agora_free_slots", "gauge", "Free task slots"),
                f64::from(p.free_slots()),
            ),
            (
                ("agora_balance_credits", "gauge", "Credit balance"),
                e.ledger().state().balance() as f64 / 1e6,
            ),
            (
                ("agora_resident_memory_bytes", "gauge", "Resident memory"),
                resident_memory().unwrap_or(0) as f64,
            ),
            (
                (
                    "agora_content_bytes",
                    "gauge",
                    "Bytes of stored content (modules, inputs, outputs)",
                ),
                self.sh.store.content().held() as f64,
            ),
            (
                ("agora_uptime_seconds", "gauge", "Uptime"),
                now.since(e.started()).as_secs_f64(),
            ),
        ];
        for (def, v) in gauges {
            add(&mut m, def, v);
        }
        let (requests, deliveries) = e.in_flight();
        add(
            &mut m,
            (
                "agora_requests_in_flight",
                "gauge",
                "Market requests awaiting an answer",
            ),
            requests as f64,
        );
        add(
            &mut m,
            (
                "agora_deliveries_pending",
                "gauge",
                "Receipts and vouchers awaiting acknowledgement, and vouchers awaiting their payment block",
            ),
            deliveries as f64,
        );
        add(
            &mut m,
            ("agora_work_tasks", "gauge", "Work running or queued"),
            self.tasks.len() as f64,
        );
        let ex = self.sh.executor.stats();
        add(
            &mut m,
            ("agora_modules_compiled_total", "counter", "Modules compiled"),
            ex.compiled as f64,
        );
        let hits = "Compiled-module cache hits";
        m.add(
            "agora_module_cache_hits_total",
            "counter",
            hits,
            &[("cache", "memory")],
            ex.memory_hits as f64,
        );
        m.add(
            "agora_module_cache_hits_total",
            "counter",
            hits,
            &[("cache", "disk")],
            ex.disk_hits as f64,
        );
        m
    }
}

/// Adds the network's counters (when the network answered).
pub(super) fn with_network(mut m: Metrics, s: Option<Stats>) -> Metrics {
    let Some(s) = s else { return m };
    let plain: [(Def, u64); 17] = [
        (
            (
                "agora_content_sent_bytes_total",
                "counter",
                "Content bytes sent to other nodes (served and inline)",
            ),
            s.content_sent_bytes,
        ),
        (
            ("agora_connected_peers", "gauge", "Connected peers"),
            s.connected as u64,
        ),
        (
            (
                "agora_relayed_connections",
                "gauge",
                "Open connections that go through a relay (closed a second after a direct one to the same peer exists)",
            ),
            s.relayed_connections as u64,
        ),
        (
            (
                "agora_gossip_mesh_peers",
                "gauge",
                "Connected peers in at least one gossip mesh of this node",
            ),
            s.mesh_peers as u64,
        ),
        (
            (
                "agora_gossip_mesh_links",
                "gauge",
                "Gossip mesh memberships summed over this node's topics",
            ),
            s.mesh_links as u64,
        ),
        (
            (
                "agora_gossip_dropped_total",
                "counter",
                "Gossip messages dropped while busy",
            ),
            s.gossip_dropped,
        ),
        (
            (
                "agora_market_overload_total",
                "counter",
                "Market requests refused while busy",
            ),
            s.market_overload,
        ),
        (
            (
                "agora_inbound_failures_total",
                "counter",
                "Malformed or failed inbound requests",
            ),
            s.inbound_failures,
        ),
        (
            (
                "agora_connections_opened_total",
                "counter",
                "Connections established, inbound and outbound",
            ),
            s.connections_opened,
        ),
        (
            (
                "agora_holes_punched_total",
                "counter",
                "Relayed connections upgraded to direct ones by hole punching",
            ),
            s.holes_punched,
        ),
        (
            (
                "agora_holes_failed_total",
                "counter",
                "Hole punching attempts that failed",
            ),
            s.holes_failed,
        ),
        (
            (
                "agora_dials_total",
                "counter",
                "Dials the node asked for itself (bootstrap, address book, domain peers)",
            ),
            s.dials,
        ),
        (
            (
                "agora_kad_liveness_checks_total",
                "counter",
                "Dials Kademlia made to check that a full bucket's oldest entry is alive",
            ),
            s.liveness_checks,
        ),
        (
            (
                "agora_connections_refused_total",
                "counter",
                "Connections refused by limits",
            ),
            s.connections_refused,
        ),
        (
            (
                "agora_connections_trimmed_total",
                "counter",
                "Idle connections closed to stay at the target",
            ),
            s.connections_trimmed,
        ),
        (
            (
                "agora_flooders_cut_total",
                "counter",
                "Gossip neighbours cut off for flooding useless messages",
            ),
            s.flooders_cut,
        ),
        (
            (
                "agora_flooders_refused",
                "gauge",
                "Gossip neighbours refused now for flooding",
            ),
            s.flooders_refused as u64,
        ),
    ];
    for (def, v) in plain {
        add(&mut m, def, v as f64);
    }
    let frames = "Market frames sent, by kind";
    m.add(
        "agora_market_frames_sent_total",
        "counter",
        frames,
        &[("kind", "batch")],
        s.batches_sent as f64,
    );
    m.add(
        "agora_market_frames_sent_total",
        "counter",
        frames,
        &[("kind", "single")],
        s.single_requests as f64,
    );
    add(
        &mut m,
        (
            "agora_market_batched_requests_total",
            "counter",
            "Market requests sent inside batches",
        ),
        s.batched_requests as f64,
    );
    m
}
