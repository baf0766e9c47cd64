//! Hostile peers against a real node process: forged, tampered, expired and
//! replayed market messages (also across a restart), and a flood of calls
//! for offers while the API must stay responsive.

use std::time::{Duration, Instant};

use agora_node::network::{self, Transport};
use agora_protocol::chain::{Block, Entry};
use agora_protocol::market::{CallForOffers, Requirements};
use agora_protocol::rpc::{Decline, MarketRequest, MarketResponse};
use agora_protocol::settlement::Voucher;
use agora_protocol::units::{Bytes, Fuel, Millis, Price, Timestamp};
use agora_protocol::{ContentId, Envelope, JobId, Keypair, MessageId, NodeId, Nonce, TaskId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::common::NodeProcess;

fn now() -> Timestamp {
    Timestamp::from_system(std::time::SystemTime::now())
}

fn cfo() -> CallForOffers {
    CallForOffers {
        task: TaskId::new(JobId(rand::random()), 0),
        attempt: 0,
        requirements: Requirements {
            fuel: Fuel(1_000),
            memory: Bytes::mib(16),
            deadline: Millis(60_000),
            max_price: Price(1_000_000_000),
            replication: 1,
            domain: None,
            max_energy: None,
            module: ContentId([1; 32]),
            module_size: Bytes(100),
            input: ContentId([2; 32]),
            input_size: Bytes(10),
            fuel_limit: Fuel(1_000),
            max_output: Bytes::mib(1),
            class: Default::default(),
        },
    }
}

fn seal(kp: &Keypair, at: Timestamp, life: Duration) -> Envelope {
    Envelope::seal(kp, &cfo(), at, life, Nonce(rand::random())).unwrap()
}

/// A bare libp2p peer speaking the market protocol, with no node behind it.
async fn peer(kp: &Keypair, node: &NodeProcess) -> (network::Client, CancellationToken) {
    let (client, cancel, mut rx) = network_peer(kp, node).await;
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    (client, cancel)
}

/// A peer like [`peer`] that leaves the node's requests to it unanswered
/// (it holds them until it stops): a task agreed with it waits for its
/// module from this peer, instead of failing at once and being forgotten.
async fn peer_holding_requests(kp: &Keypair, node: &NodeProcess) -> (network::Client, CancellationToken) {
    let (client, cancel, mut rx) = network_peer(kp, node).await;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(ev) = rx.recv().await {
            if held.len() < 1024 {
                held.push(ev);
            }
        }
    });
    (client, cancel)
}

/// A network of our own bootstrapped from `node`, and its events.
async fn network_peer(
    kp: &Keypair,
    node: &NodeProcess,
) -> (network::Client, CancellationToken, mpsc::Receiver<network::Event>) {
    let cancel = CancellationToken::new();
    let (tx, rx) = mpsc::channel(1024);
    let config = network::Config {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: vec![node.bootstrap_addr().parse().unwrap()],
        transport: Transport::TcpQuic,
        ..network::Config::default()
    };
    let (client, _) = network::spawn(kp, config, tx, cancel.clone()).await.unwrap();
    (client, cancel, rx)
}

fn invalid(r: &MarketResponse) -> Option<&str> {
    match r {
        MarketResponse::Declined(Decline::Invalid { message }) => Some(message.as_str()),
        _ => None,
    }
}

#[test]
fn forged_tampered_expired_and_replayed_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().to_owned();
    let mut node = NodeProcess::start_in(dir, &[]);
    let target: NodeId = node.info.peer_id;
    let me = Keypair::from_secret(rand::random());
    let other = Keypair::from_secret(rand::random());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let replay = rt.block_on(async {
        let (c, cancel) = peer(&me, &node).await;
        let ask = |env: Envelope| {
            let c = c.clone();
            async move { c.market(target, MarketRequest::CallForOffers(env)).await.unwrap() }
        };
        // A genuine call gets an offer.
        let good = seal(&me, now(), Duration::from_secs(20));
        let r = ask(good.clone()).await;
        assert!(matches!(r, MarketResponse::Offer(_)), "{r:?}");
        // The same envelope again: replayed.
        let r = ask(good.clone()).await;
        assert!(invalid(&r).is_some_and(|m| m.contains("replayed")), "{r:?}");
        // Signed by someone else than the sending peer.
        let r = ask(seal(&other, now(), Duration::from_secs(20))).await;
        assert!(
            invalid(&r).is_some_and(|m| m.contains("other than the sender")),
            "{r:?}"
        );
        // Tampered: one payload byte flipped after signing.
        let mut bytes = agora_protocol::Encode::to_bytes(&seal(&me, now(), Duration::from_secs(20)));
        let n = bytes.len();
        bytes[n - 80] ^= 0x01;
        let tampered = <Envelope as agora_protocol::Decode>::from_bytes(&bytes).unwrap();
        let r = ask(tampered).await;
        assert!(invalid(&r).is_some(), "{r:?}");
        // Expired, and issued too far in the future.
        let old = Timestamp(now().0 - 60_000);
        let r = ask(seal(&me, old, Duration::from_secs(20))).await;
        assert!(invalid(&r).is_some_and(|m| m.contains("expired")), "{r:?}");
        let future = Timestamp(now().0 + 120_000);
        let r = ask(seal(&me, future, Duration::from_secs(20))).await;
        assert!(invalid(&r).is_some_and(|m| m.contains("future")), "{r:?}");
        // An envelope signed now, kept for after the restart.
        let kept = seal(&me, now(), Duration::from_secs(25));
        cancel.cancel();
        kept
    });

    // Restart the node on the same data dir: the envelope from before the
    // restart is refused (the replay guard cannot vouch for it), a fresh one
    // is answered.
    node.kill();
    let dir = node.dir.path().to_owned();
    assert_eq!(dir, dir_path);
    std::thread::sleep(Duration::from_millis(300));
    let restarted = NodeProcess::start_in_path(&dir, &[]);
    rt.block_on(async {
        let (c, cancel) = peer(&me, &restarted).await;
        let r = c
            .market(target, MarketRequest::CallForOffers(replay))
            .await
            .unwrap();
        assert!(invalid(&r).is_some_and(|m| m.contains("too old")), "{r:?}");
        let r = c
            .market(
                target,
                MarketRequest::CallForOffers(seal(&me, now(), Duration::from_secs(20))),
            )
            .await
            .unwrap();
        assert!(matches!(r, MarketResponse::Offer(_)), "{r:?}");
        cancel.cancel();
    });
    drop(node);
}

#[test]
fn a_flood_of_calls_leaves_the_api_responsive() {
    let _heavy = crate::common::heavy();
    let node = NodeProcess::start(&[]);
    let target: NodeId = node.info.peer_id;
    let rss_before = rss(node.child.id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (answered, worst_api) = rt.block_on(async {
        let me = Keypair::from_secret(rand::random());
        let (c, cancel) = peer(&me, &node).await;
        let api = node.client();
        let flood = tokio::spawn(async move {
            let mut handles = Vec::new();
            for _ in 0..3000 {
                let c = c.clone();
                let env = seal(&me, now(), Duration::from_secs(20));
                handles.push(tokio::spawn(async move {
                    c.market(target, MarketRequest::CallForOffers(env)).await
                }));
            }
            let mut answered = 0;
            for h in handles {
                if let Ok(Ok(_)) = h.await {
                    answered += 1;
                }
            }
            answered
        });
        let mut worst = Duration::ZERO;
        while !flood.is_finished() {
            let t = Instant::now();
            api.status().await.unwrap();
            worst = worst.max(t.elapsed());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let answered = flood.await.unwrap();
        cancel.cancel();
        (answered, worst)
    });
    let rss_after = rss(node.child.id());
    eprintln!(
        "flood: {answered} of 3000 calls answered; slowest API answer {worst_api:?}; RSS {rss_before} -> {rss_after} KiB"
    );
    assert!(answered > 0);
    assert!(
        worst_api < Duration::from_millis(500),
        "API answered in {worst_api:?} during the flood"
    );
    assert!(
        rss_after < rss_before + 200 * 1024,
        "memory grew from {rss_before} to {rss_after} KiB"
    );
}

fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A payment counts once: replayed, and replayed after a restart, it gets
/// the same countersignature back and is not counted again; a payment
/// whose amount does not match its fuel and price is refused.
#[test]
fn a_payment_never_counts_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start_in(dir, &[]);
    let target: NodeId = node.info.peer_id;
    let me = Keypair::from_secret(rand::random());
    let v = Voucher {
        receipt: MessageId(rand::random()),
        agreement: MessageId(rand::random()),
        task: TaskId::new(JobId(rand::random()), 0),
        provider: target,
        fuel: Fuel(2_000_000),
        price: Price(500),
        amount: Price(500).cost(Fuel(2_000_000)),
    };
    let block = |v: &Voucher| Block {
        seq: 1,
        prev: ContentId([0; 32]),
        entry: Entry::Pay(v.clone()),
    };
    let env = Envelope::seal(
        &me,
        &block(&v),
        now(),
        Duration::from_secs(3600),
        Nonce(rand::random()),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let received = |node: &NodeProcess| rt.block_on(node.client().ledger(5)).unwrap().received.0;
    let countersigned = |r: &MarketResponse| match r {
        MarketResponse::Received(ours) => {
            let b = ours.open_ignoring_time::<Block>().unwrap();
            assert_eq!(b.signer(), target);
            assert!(
                matches!(&b.payload().entry, Entry::Receive(p) if *p == env),
                "{b:?}"
            );
            ours.clone()
        }
        other => panic!("not countersigned: {other:?}"),
    };
    let first = rt.block_on(async {
        let (c, cancel) = peer(&me, &node).await;
        let mut answers = Vec::new();
        for _ in 0..3 {
            let r = c.market(target, MarketRequest::Pay(env.clone())).await.unwrap();
            answers.push(countersigned(&r));
        }
        assert!(answers.windows(2).all(|w| w[0] == w[1]), "one countersignature");
        let mut bad = v.clone();
        bad.amount.0 += 1;
        bad.receipt = MessageId(rand::random());
        let benv = Envelope::seal(
            &me,
            &block(&bad),
            now(),
            Duration::from_secs(3600),
            Nonce(rand::random()),
        )
        .unwrap();
        let r = c.market(target, MarketRequest::Pay(benv)).await.unwrap();
        assert!(invalid(&r).is_some(), "{r:?}");
        cancel.cancel();
        answers.remove(0)
    });
    assert_eq!(received(&node), v.amount.0, "counted exactly once");
    node.kill();
    let restarted = NodeProcess::start_in_path(node.dir.path(), &[]);
    rt.block_on(async {
        let (c, cancel) = peer(&me, &restarted).await;
        let r = c.market(target, MarketRequest::Pay(env.clone())).await.unwrap();
        assert_eq!(
            countersigned(&r),
            first,
            "the same countersignature after a restart"
        );
        cancel.cancel();
    });
    assert_eq!(
        received(&restarted),
        v.amount.0,
        "not counted again after a restart"
    );
    drop(node);
}

/// Thousands of connection attempts: the node refuses what exceeds its
/// limits and its API keeps answering.
#[test]
fn a_flood_of_connections_leaves_the_api_responsive() {
    let _heavy = crate::common::heavy();
    let node = NodeProcess::start(&[]);
    let addr = node.info.listen[0].clone();
    // /ip4/127.0.0.1/tcp/PORT
    let port: u16 = addr.rsplit('/').next().unwrap().parse().unwrap();
    let rss_before = rss(node.child.id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (opened, worst) = rt.block_on(async {
        let flood = tokio::spawn(async move {
            let mut opened = 0;
            let mut held = Vec::new();
            for _ in 0..2000 {
                if let Ok(Ok(s)) = tokio::time::timeout(
                    Duration::from_secs(1),
                    tokio::net::TcpStream::connect(("127.0.0.1", port)),
                )
                .await
                {
                    opened += 1;
                    held.push(s);
                    if held.len() > 500 {
                        held.remove(0);
                    }
                }
            }
            opened
        });
        let api = node.client();
        let mut worst = Duration::ZERO;
        while !flood.is_finished() {
            let t = Instant::now();
            api.status().await.unwrap();
            worst = worst.max(t.elapsed());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (flood.await.unwrap(), worst)
    });
    let rss_after = rss(node.child.id());
    eprintln!(
        "connection flood: {opened} of 2000 TCP connections opened; slowest API answer {worst:?}; RSS {rss_before} -> {rss_after} KiB"
    );
    assert!(
        worst < Duration::from_millis(500),
        "API answered in {worst:?} during the flood"
    );
    assert!(rss_after < rss_before + 200 * 1024);
    assert!(rt.block_on(node.client().status()).is_ok());
}

/// An order (requirements and a signed acceptance in one request): a
/// genuine one is agreed at the acceptance's price, and the same order
/// again gets the same agreement; one whose acceptance names other
/// requirements, or pre-accepts less than the asking price, is declined.
#[test]
fn an_order_is_agreed_once_and_only_as_signed() {
    use agora_protocol::market::{Accept, Agreement, Assignment, Limits, order_id};
    let node = NodeProcess::start(&[]);
    let target: NodeId = node.info.peer_id;
    let me = Keypair::from_secret(rand::random());
    let order = |price: Price, offer: Option<MessageId>| {
        let call = cfo();
        let r = &call.requirements;
        let accept = Accept {
            offer: offer.unwrap_or_else(|| order_id(r)),
            price,
            assignment: Assignment {
                task: call.task,
                attempt: 0,
                module: r.module,
                input: r.input,
                args: vec![],
                limits: Limits {
                    fuel: r.fuel_limit,
                    memory: r.memory,
                    timeout: Millis(10_000),
                    max_output: r.max_output,
                },
                seed: 1,
                resume: None,
            },
        };
        let env = Envelope::seal(
            &me,
            &accept,
            now(),
            Duration::from_secs(20),
            Nonce(rand::random()),
        )
        .unwrap();
        MarketRequest::Order {
            requirements: Box::new(call.requirements),
            accept: env,
            content: vec![],
        }
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // The agreed task waits for its module from us: the node still holds
        // it when the order comes again (once it is done and forgotten, the
        // order's nonce is a replay).
        let (c, cancel) = peer_holding_requests(&me, &node).await;
        let genuine = order(Price(1_000_000), None);
        let MarketRequest::Order { accept, .. } = &genuine else {
            unreachable!()
        };
        let accept_id = accept.id();
        let r = c.market(target, genuine.clone()).await.unwrap();
        let MarketResponse::Agreement(first) = r else {
            panic!("not agreed: {r:?}")
        };
        let a = first.open_ignoring_time::<Agreement>().unwrap();
        assert_eq!((a.signer(), a.payload().accept), (target, accept_id));
        assert_eq!(
            a.payload().price,
            Price(1_000_000),
            "the price the order pre-accepted"
        );
        let again = c.market(target, genuine).await.unwrap();
        assert_eq!(again, MarketResponse::Agreement(first), "the same agreement");
        let r = c
            .market(target, order(Price(1_000_000), Some(MessageId(rand::random()))))
            .await
            .unwrap();
        assert!(
            invalid(&r).is_some_and(|m| m.contains("does not name the order")),
            "{r:?}"
        );
        let r = c.market(target, order(Price(1), None)).await.unwrap();
        assert!(
            matches!(r, MarketResponse::Declined(Decline::PriceTooLow { .. })),
            "{r:?}"
        );
        cancel.cancel();
    });
}

/// One block paying several receipts counts their sum once, and a receipt
/// it paid is not paid again by another block; a block paying two
/// providers is refused.
#[test]
fn a_payment_of_several_receipts_counts_each_once() {
    let node = NodeProcess::start(&[]);
    let target: NodeId = node.info.peer_id;
    let me = Keypair::from_secret(rand::random());
    let voucher = |to: NodeId| Voucher {
        receipt: MessageId(rand::random()),
        agreement: MessageId(rand::random()),
        task: TaskId::new(JobId(rand::random()), 0),
        provider: to,
        fuel: Fuel(2_000_000),
        price: Price(500),
        amount: Price(500).cost(Fuel(2_000_000)),
    };
    let pay = |seq: u64, vs: Vec<Voucher>| {
        let b = Block {
            seq,
            prev: ContentId([seq as u8; 32]),
            entry: Entry::PayMany(vs),
        };
        Envelope::seal(&me, &b, now(), Duration::from_secs(3600), Nonce(rand::random())).unwrap()
    };
    let vs: Vec<Voucher> = (0..3).map(|_| voucher(target)).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let received = || rt.block_on(node.client().ledger(5)).unwrap().received.0;
    let (first, second) = rt.block_on(async {
        let (c, cancel) = peer(&me, &node).await;
        let first = c
            .market(target, MarketRequest::Pay(pay(1, vs.clone())))
            .await
            .unwrap();
        assert!(matches!(first, MarketResponse::Received(_)), "{first:?}");
        // The second receipt again, with a new one.
        let second = c
            .market(
                target,
                MarketRequest::Pay(pay(2, vec![vs[1].clone(), voucher(target)])),
            )
            .await
            .unwrap();
        let other = Keypair::from_secret(rand::random()).node_id();
        let r = c
            .market(
                target,
                MarketRequest::Pay(pay(3, vec![voucher(target), voucher(other)])),
            )
            .await
            .unwrap();
        assert!(
            invalid(&r).is_some_and(|m| m.contains("more than one provider")),
            "{r:?}"
        );
        cancel.cancel();
        (first, second)
    });
    assert_eq!(
        second, first,
        "a receipt paid already gets the countersignature given then"
    );
    assert_eq!(received(), 3 * vs[0].amount.0, "the three receipts, counted once");
    let metrics = rt.block_on(node.client().metrics()).unwrap();
    let value = |name: &str| {
        metrics.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<u64>()
                .ok()
        })
    };
    assert_eq!(
        (
            value("agora_payments_received_total"),
            value("agora_vouchers_received_total")
        ),
        (Some(1), Some(3)),
        "one block counted, of three vouchers: the block repeating a receipt is not counted"
    );
}
