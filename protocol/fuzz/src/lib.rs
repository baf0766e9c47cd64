//! Shared pieces of the `agora-protocol` fuzz targets: the checks every
//! decoded value must pass, a way to sign arbitrary payload bytes so that the
//! fuzzer reaches the payload decoders behind a valid signature, and the seed
//! inputs that `examples/seed_corpus.rs` writes.
//!
//! The targets in `fuzz_targets/` are thin: they split the input and call
//! into here. See README.md for the commands.

use std::fmt::Debug;
use std::time::Duration;

use agora_protocol::capacity::{Addr, Advert, ChildSummary, Contact, DomainStats, DomainSummary};
use agora_protocol::chain::{
    Audit, Block, Entry, ForkProof, Grant, Head, Heads, MAX_HEADS, block_hash, received,
};
use agora_protocol::envelope::ENVELOPE_VERSION;
use agora_protocol::execution::{ExitStatus, Receipt};
use agora_protocol::fraud::{Evidence, FraudProof};
use agora_protocol::limits::{MAX_CLOCK_SKEW, MAX_DOMAIN_DEPTH, MAX_DOMAIN_LEN};
use agora_protocol::market::{
    Accept, Agreement, Arg, Assignment, CallForOffers, Cancel, CancelReason, Limits, Offer, Requirements,
    args_digest,
};
use agora_protocol::rpc::{ContentRequest, ContentResponse, Decline, MarketRequest, MarketResponse};
use agora_protocol::settlement::Voucher;
use agora_protocol::units::{Bytes, ComputeUnits, Credits, EnergyRate, Fuel, Millis, Price, Timestamp};
use agora_protocol::wire::{Blob, Writer};
use agora_protocol::{
    ContentId, Decode, Domain, Encode, Envelope, JobId, Keypair, MessageId, NodeId, Nonce, OpenError,
    Payload, PayloadType, TaskId, Verified,
};

/// The time at which seeds are sealed and, in the signing targets, opened.
pub const T0: Timestamp = Timestamp(1_800_000_000_000);
/// The lifetime of seeded and fuzz-signed envelopes (within every type's maximum).
pub const LIFETIME: Duration = Duration::from_secs(10);

/// A fixed key pair; `n` picks one of several.
pub fn keypair(n: u8) -> Keypair {
    Keypair::from_secret([n; 32])
}

/// Decodes `data` as a `T`. The encoding is canonical, so a value that
/// decodes must re-encode to exactly `data`; it must also print.
pub fn decode_canonical<T: Decode + Encode + Debug>(data: &[u8]) -> Option<T> {
    let v = T::from_bytes(data).ok()?;
    assert_eq!(v.to_bytes(), data, "{v:?} re-encodes differently");
    let _ = format!("{v:?}");
    Some(v)
}

/// Checks a decoded envelope: canonical, printable, its id is the hash of its
/// bytes, and opening it as every payload type behaves.
pub fn check_envelope(env: &Envelope, data: &[u8]) {
    assert_eq!(env.encoded_len(), data.len());
    assert_eq!(env.id(), MessageId::of(data));
    let signer = env.claimed_signer();
    assert_eq!(signer.to_string().parse::<NodeId>(), Ok(signer));
    for now in [
        env.issued_at(),
        Timestamp(env.expires_at().0.saturating_sub(1)),
        T0,
    ] {
        open_every_type(env, now);
    }
}

/// Opens `env` as each payload type, timed at `now` and untimed.
pub fn open_every_type(env: &Envelope, now: Timestamp) {
    open_as::<Advert>(env, now);
    open_as::<DomainSummary>(env, now);
    open_as::<CallForOffers>(env, now);
    open_as::<Offer>(env, now);
    open_as::<Accept>(env, now);
    open_as::<Agreement>(env, now);
    open_as::<Cancel>(env, now);
    open_as::<Receipt>(env, now);
    open_as::<Voucher>(env, now);
    open_as::<Grant>(env, now);
    if let Some(v) = open_as::<Block>(env, now) {
        check_block(&v);
    }
    if let Some(v) = open_as::<FraudProof>(env, now) {
        check_fraud(v.payload());
    }
    if let Some(v) = open_as::<ForkProof>(env, now) {
        check_fork(v.payload());
    }
    if let Some(v) = open_as::<Heads>(env, now) {
        assert!(v.payload().heads.len() <= MAX_HEADS);
    }
}

/// Opens `env` as a `T` and checks what the envelope module promises: the
/// wrong type is always [`OpenError::WrongType`], a timed open succeeds only
/// inside the window, and a success hands back this very envelope.
pub fn open_as<T: Payload + Debug + PartialEq>(env: &Envelope, now: Timestamp) -> Option<Verified<T>> {
    let timed = env.open::<T>(now);
    let untimed = env.open_ignoring_time::<T>();
    if env.payload_type() != T::TYPE.code() {
        assert!(matches!(timed, Err(OpenError::WrongType { .. })), "{timed:?}");
        assert!(matches!(untimed, Err(OpenError::WrongType { .. })), "{untimed:?}");
        return None;
    }
    if let Ok(v) = &timed {
        assert_eq!(Some(v), untimed.as_ref().ok());
        assert!(now < env.expires_at());
        assert!(env.issued_at() < env.expires_at());
        assert!(env.issued_at() <= now.add(MAX_CLOCK_SKEW));
        assert!(env.expires_at().since(env.issued_at()) <= T::MAX_LIFETIME);
    }
    let v = untimed.ok()?;
    assert_eq!(v.envelope(), env);
    assert_eq!(v.signer(), env.claimed_signer());
    let _ = format!("{v:?}");
    Some(v)
}

/// Checks a fraud proof: when `check` accepts it, it really is evidence.
pub fn check_fraud(p: &FraudProof) {
    if let Ok(c) = p.check() {
        let (a, b) = (c.accused.payload(), c.witness.payload());
        assert!(a.same_computation(b));
        assert_ne!(a.outcome(), b.outcome());
        assert!(a.exit.is_deterministic() && b.exit.is_deterministic());
        assert_eq!(args_digest(&c.assignment.args), a.args);
        assert_eq!(a.requester, c.requester);
        assert_ne!(c.accused.signer(), c.requester);
    }
}

/// Checks a signed block: a received payment is worth what `chain::received`
/// says only when it really is another node's payment to this block's
/// signer, and an audit from the start of the signer's chain takes the
/// block only as a sound first block.
pub fn check_block(v: &Verified<Block>) {
    let b = v.payload();
    match &b.entry {
        Entry::Grant(g) => drop(open_as::<Grant>(g, g.issued_at())),
        // The audit below checks the vouchers and the summary.
        Entry::Pay(_) | Entry::PayMany(_) | Entry::Checkpoint(_) => {}
        Entry::Receive(pay) => {
            if let Ok(amount) = received(&v.signer(), pay) {
                let p = pay
                    .open_ignoring_time::<Block>()
                    .expect("a received payment opens");
                assert_ne!(p.signer(), v.signer());
                let Entry::Pay(voucher) = &p.payload().entry else {
                    panic!("received a block that is not a payment: {p:?}");
                };
                assert_eq!(voucher.provider, v.signer());
                assert!(voucher.amount_is_consistent());
                assert_eq!(amount, voucher.amount.0);
            }
        }
    }
    let mut audit = Audit::new(v.signer());
    if audit.apply(v.envelope(), &|_: &NodeId| true).is_ok() {
        assert_eq!((b.seq, b.prev), (1, ContentId([0; 32])));
        assert_eq!((audit.seq, audit.head), (1, block_hash(v.envelope())));
        assert!(audit.balance() >= 0);
    }
}

/// Audits `blocks` as a page of one chain from its start, the way an
/// auditor does: block after block, stopping at the first that fails (an
/// audit is not used after an error). What it took must be a sound chain.
pub fn check_chain(blocks: &[Envelope]) {
    let Some(first) = blocks.first() else {
        return;
    };
    let mut audit = Audit::new(first.claimed_signer());
    let mut head = ContentId([0; 32]);
    for (n, b) in (1..).zip(blocks) {
        if audit.apply(b, &|_: &NodeId| true).is_err() {
            return;
        }
        let v = b.open_ignoring_time::<Block>().expect("an audited block opens");
        assert_eq!(v.signer(), audit.owner);
        assert_eq!((v.payload().seq, v.payload().prev), (n, head));
        head = block_hash(b);
        assert_eq!((audit.seq, audit.head), (n, head));
        assert!(audit.balance() >= 0);
    }
}

/// Checks a fork proof: when `check` accepts it, it names the node that
/// signed two different blocks at one position.
pub fn check_fork(p: &ForkProof) {
    if let Ok(node) = p.check() {
        let a = p
            .first
            .open_ignoring_time::<Block>()
            .expect("a checked block opens");
        let b = p
            .second
            .open_ignoring_time::<Block>()
            .expect("a checked block opens");
        assert_eq!((a.signer(), b.signer()), (node, node));
        assert_eq!(a.payload().seq, b.payload().seq);
        assert_ne!(p.first, p.second);
    }
}

/// The bytes an envelope of type `T` signs (SPEC.md §5.2), rebuilt here from
/// the spec rather than taken from the crate, so that the `open` target also
/// checks the crate against its specification.
pub fn signing_input<T: Payload>(
    signer: &NodeId,
    issued_at: Timestamp,
    expires_at: Timestamp,
    nonce: Nonce,
    payload: &[u8],
) -> Vec<u8> {
    let mut w = Writer::new();
    w.bytes(T::DOMAIN.as_bytes());
    w.u16(T::TYPE.code());
    w.raw(signer.as_bytes());
    w.u64(issued_at.0);
    w.u64(expires_at.0);
    w.raw(&nonce.0);
    w.bytes(payload);
    w.into_bytes()
}

/// Seals arbitrary `payload` bytes as a `T` issued at [`T0`]: the encoded
/// envelope, with a valid signature whether or not the payload decodes.
pub fn seal_raw<T: Payload>(kp: &Keypair, payload: &[u8], nonce: Nonce) -> Vec<u8> {
    let signer = kp.node_id();
    let expires_at = T0.add(LIFETIME);
    let signature = kp.sign(&signing_input::<T>(&signer, T0, expires_at, nonce, payload));
    let mut w = Writer::new();
    w.u8(ENVELOPE_VERSION);
    w.u16(T::TYPE.code());
    w.raw(signer.as_bytes());
    w.u64(T0.0);
    w.u64(expires_at.0);
    w.raw(&nonce.0);
    w.bytes(payload);
    w.raw(&signature);
    w.into_bytes()
}

/// Seals `payload` with the crate's own [`Envelope::seal`].
pub fn seal<T: Payload>(kp: &Keypair, payload: &T, nonce: u8) -> Envelope {
    Envelope::seal(kp, payload, T0, LIFETIME, Nonce([nonce; 16])).expect("samples fit an envelope")
}

/// The message types the `messages` target decodes, by selector byte
/// (the first input byte, modulo the length). New types go at the end, so
/// that a saved input keeps its type.
pub const MESSAGES: [&str; 30] = [
    "advert",
    "domain_summary",
    "call_for_offers",
    "offer",
    "accept",
    "agreement",
    "cancel",
    "receipt",
    "voucher",
    "fraud_proof",
    "decline",
    "exit_status",
    "domain",
    "task_id",
    "node_id",
    "requirements",
    "assignment",
    "limits",
    "cancel_reason",
    "domain_stats",
    "contact",
    "child_summary",
    "addr",
    "arg",
    "grant",
    "block",
    "entry",
    "fork_proof",
    "heads",
    "head",
];

/// Decodes `data` as message type `selector` (see [`MESSAGES`]).
pub fn decode_message(selector: u8, data: &[u8]) {
    match selector as usize % MESSAGES.len() {
        0 => drop(decode_canonical::<Advert>(data)),
        1 => drop(decode_canonical::<DomainSummary>(data)),
        2 => drop(decode_canonical::<CallForOffers>(data)),
        3 => drop(decode_canonical::<Offer>(data)),
        4 => drop(decode_canonical::<Accept>(data)),
        5 => drop(decode_canonical::<Agreement>(data)),
        6 => drop(decode_canonical::<Cancel>(data)),
        7 => drop(decode_canonical::<Receipt>(data)),
        8 => drop(decode_canonical::<Voucher>(data)),
        9 => {
            if let Some(p) = decode_canonical::<FraudProof>(data) {
                check_fraud(&p);
            }
        }
        10 => {
            if let Some(d) = decode_canonical::<Decline>(data) {
                let _ = d.to_string();
            }
        }
        11 => {
            if let Some(e) = decode_canonical::<ExitStatus>(data) {
                let _ = e.to_string();
            }
        }
        12 => {
            if let Some(d) = decode_canonical::<Domain>(data) {
                check_domain(&d);
            }
        }
        13 => {
            if let Some(t) = decode_canonical::<TaskId>(data) {
                assert_eq!(t.to_string().parse::<TaskId>(), Ok(t));
            }
        }
        14 => {
            if let Some(n) = decode_canonical::<NodeId>(data) {
                assert_eq!(n.to_string().parse::<NodeId>(), Ok(n));
            }
        }
        15 => drop(decode_canonical::<Requirements>(data)),
        16 => {
            if let Some(a) = decode_canonical::<Assignment>(data) {
                let _ = a.args_digest();
            }
        }
        17 => drop(decode_canonical::<Limits>(data)),
        18 => drop(decode_canonical::<CancelReason>(data)),
        19 => drop(decode_canonical::<DomainStats>(data)),
        20 => drop(decode_canonical::<Contact>(data)),
        21 => drop(decode_canonical::<ChildSummary>(data)),
        22 => drop(decode_canonical::<Addr>(data)),
        23 => drop(decode_canonical::<Arg>(data)),
        24 => drop(decode_canonical::<Grant>(data)),
        25 => drop(decode_canonical::<Block>(data)),
        26 => drop(decode_canonical::<Entry>(data)),
        27 => {
            if let Some(p) = decode_canonical::<ForkProof>(data) {
                check_fork(&p);
            }
        }
        28 => {
            if let Some(h) = decode_canonical::<Heads>(data) {
                assert!(h.heads.len() <= MAX_HEADS);
            }
        }
        _ => drop(decode_canonical::<Head>(data)),
    }
}

/// Checks a valid domain against the module's rules and its own methods.
pub fn check_domain(d: &Domain) {
    assert!(d.as_str().len() <= MAX_DOMAIN_LEN);
    assert!(d.depth() <= MAX_DOMAIN_DEPTH);
    assert_eq!(d.to_string().parse::<Domain>().as_ref(), Ok(d));
    assert_eq!(Domain::from_bytes(&d.to_bytes()).as_ref(), Ok(d));
    let ancestry = d.ancestry();
    assert_eq!(ancestry.len(), d.depth() + 1);
    for a in &ancestry {
        assert!(d.is_within(a));
        match d.child_under(a) {
            Some(c) => {
                assert!(c.is_within(a) && d.is_within(&c));
                assert_eq!(c.depth(), a.depth() + 1);
            }
            None => assert_eq!(a, d),
        }
    }
    let _ = (d.advert_topic(), d.summary_topic(), d.provider_key());
}

fn task(i: u32) -> TaskId {
    TaskId::new(JobId([7; 16]), i)
}

/// An advert.
pub fn advert() -> Advert {
    Advert {
        seq: 1,
        domain: "eu/de/berlin".parse().expect("valid domain"),
        cu: ComputeUnits(1200),
        calibrated_at: T0,
        memory: Bytes::mib(256),
        slots: 2,
        free_slots: 1,
        queued: 1,
        load: 120,
        accepting: true,
        price: Price(1000),
        energy: EnergyRate(15),
        version: "agora/0.1.0".into(),
        addrs: vec![Addr("/ip4/127.0.0.1/tcp/4001".into())],
        max_task_fuel: Fuel(20_000_000_000_000),
        max_task_time: Millis(3_600_000),
        max_output: Bytes::mib(16),
        labels: vec![],
    }
}

/// A domain summary with a contact and a child.
pub fn domain_summary() -> DomainSummary {
    let stats = DomainStats {
        nodes: 3,
        total_cu: ComputeUnits(3000),
        free_cu: ComputeUnits(1000),
        free_slots: 2,
        price_min: Price(10),
        price_max: Price(20),
        best_rtt: Millis(4),
    };
    DomainSummary {
        domain: "eu".parse().expect("valid domain"),
        seq: 9,
        stats: stats.clone(),
        contacts: vec![Contact {
            node: keypair(3).node_id(),
            addrs: vec![Addr("/ip4/10.0.0.1/udp/4001/quic-v1".into())],
        }],
        children: vec![ChildSummary {
            domain: "eu/de".parse().expect("valid domain"),
            stats,
        }],
    }
}

/// A call for offers.
pub fn call_for_offers() -> CallForOffers {
    CallForOffers {
        task: task(0),
        attempt: 1,
        requirements: Requirements {
            fuel: Fuel(5_000_000),
            memory: Bytes::mib(64),
            deadline: Millis(30_000),
            max_price: Price(2000),
            replication: 2,
            domain: Some("eu".parse().expect("valid domain")),
            max_energy: Some(EnergyRate(50)),
            module: ContentId::of(b"module"),
            module_size: Bytes::kib(100),
            input: ContentId::of(b"input"),
            input_size: Bytes(12),
            fuel_limit: Fuel(10_000_000),
            max_output: Bytes::mib(1),
            class: Default::default(),
        },
    }
}

/// An offer (also the benchmark's payload).
pub fn offer() -> Offer {
    Offer {
        call: MessageId([1; 32]),
        task: task(0),
        price: Price(1500),
        expected_start: Millis(20),
        expected_run: Millis(1200),
        has_module: true,
        has_input: false,
        energy: EnergyRate::default(),
    }
}

/// An accept with two arguments.
pub fn accept() -> Accept {
    Accept {
        offer: MessageId([2; 32]),
        price: Price(1500),
        assignment: Assignment {
            task: task(0),
            attempt: 1,
            module: ContentId::of(b"module"),
            input: ContentId::of(b"input"),
            args: vec![Arg("--n".into()), Arg("1000".into())],
            limits: Limits {
                fuel: Fuel(10_000_000),
                memory: Bytes::mib(64),
                timeout: Millis(60_000),
                max_output: Bytes::mib(1),
            },
            seed: 42,
            resume: None,
        },
    }
}

/// An agreement.
pub fn agreement() -> Agreement {
    Agreement {
        accept: MessageId([3; 32]),
        task: task(0),
        requester: keypair(1).node_id(),
        price: Price(1500),
        due: T0.add(Duration::from_secs(60)),
    }
}

/// A cancel.
pub fn cancel() -> Cancel {
    Cancel {
        agreement: MessageId([4; 32]),
        task: task(0),
        reason: CancelReason::Superseded,
    }
}

/// A receipt for [`accept`]'s assignment, ending in `exit`.
pub fn receipt(exit: ExitStatus, output: &[u8]) -> Receipt {
    let a = accept().assignment;
    Receipt {
        agreement: MessageId([5; 32]),
        task: a.task,
        requester: keypair(1).node_id(),
        module: a.module,
        input: a.input,
        args: a.args_digest(),
        seed: a.seed,
        fuel_limit: a.limits.fuel,
        output: ContentId::of(output),
        output_size: Bytes(output.len() as u64),
        fuel_used: Fuel(123_456),
        exit,
        started_at: T0,
        finished_at: T0.add(Duration::from_millis(800)),
        resumed: None,
    }
}

/// A voucher.
pub fn voucher() -> Voucher {
    Voucher {
        receipt: MessageId([6; 32]),
        agreement: MessageId([5; 32]),
        task: task(0),
        provider: keypair(2).node_id(),
        fuel: Fuel(123_456),
        price: Price(1500),
        amount: Price(1500).cost(Fuel(123_456)),
    }
}

/// The issuer whose grants fund the sample chains.
pub const ISSUER: u8 = 9;

/// A grant from [`ISSUER`] to the requester, `keypair(1)`.
pub fn grant() -> Grant {
    Grant {
        to: keypair(1).node_id(),
        amount: Credits(10_000_000),
        id: [8; 16],
    }
}

/// The requester's first block: it takes [`grant`], signed by [`ISSUER`].
pub fn grant_block() -> Block {
    Block {
        seq: 1,
        prev: ContentId([0; 32]),
        entry: Entry::Grant(seal(&keypair(ISSUER), &grant(), 40)),
    }
}

/// The requester's second block: it pays [`voucher`] to `keypair(2)`.
pub fn pay_block() -> Block {
    Block {
        seq: 2,
        prev: block_hash(&seal(&keypair(1), &grant_block(), 41)),
        entry: Entry::Pay(voucher()),
    }
}

/// The requester's chain, signed: [`grant_block`] then [`pay_block`].
pub fn payer_chain() -> Vec<Envelope> {
    vec![
        seal(&keypair(1), &grant_block(), 41),
        seal(&keypair(1), &pay_block(), 42),
    ]
}

/// The provider's first block: it receives the requester's [`pay_block`].
pub fn receive_block() -> Block {
    Block {
        seq: 1,
        prev: ContentId([0; 32]),
        entry: Entry::Receive(payer_chain()[1].clone()),
    }
}

/// A valid fork proof: the requester's [`pay_block`] and another block at
/// the same position paying a third node.
pub fn fork_proof() -> ForkProof {
    let other = Block {
        entry: Entry::Pay(Voucher {
            provider: keypair(3).node_id(),
            ..voucher()
        }),
        ..pay_block()
    };
    ForkProof {
        first: payer_chain()[1].clone(),
        second: seal(&keypair(1), &other, 43),
    }
}

/// The heads of the requester's and the provider's chains.
pub fn heads() -> Heads {
    Heads {
        heads: vec![
            Head {
                owner: keypair(1).node_id(),
                seq: 2,
                hash: block_hash(&payer_chain()[1]),
            },
            Head {
                owner: keypair(2).node_id(),
                seq: 1,
                hash: block_hash(&seal(&keypair(2), &receive_block(), 44)),
            },
        ],
    }
}

/// One provider's copy of [`accept`]'s task, bound by the requester's
/// acceptance and the provider's agreement, reporting `output`.
fn bound_copy(provider: u8, output: &[u8]) -> Evidence {
    let accept = seal(&keypair(1), &accept(), provider * 10);
    let agreement = seal(
        &keypair(provider),
        &Agreement {
            accept: accept.id(),
            ..agreement()
        },
        provider * 10 + 1,
    );
    let receipt = seal(
        &keypair(provider),
        &Receipt {
            agreement: agreement.id(),
            ..receipt(ExitStatus::Success, output)
        },
        provider * 10 + 2,
    );
    Evidence {
        receipt,
        agreement: Some(agreement),
        accept: Some(accept),
    }
}

/// A valid fraud proof: two providers, same computation, different outputs.
pub fn fraud_proof() -> FraudProof {
    FraudProof {
        accused: bound_copy(2, b"42"),
        witness: bound_copy(3, b"43"),
    }
}

/// Seed inputs for every target, as `(target, input)`.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let kp = keypair(2);
    let receipt_ok = receipt(ExitStatus::Success, b"42");
    let receipt_trap = receipt(ExitStatus::Trap("unreachable".into()), b"");
    let payloads: Vec<(PayloadType, Vec<u8>)> = vec![
        (PayloadType::Advert, advert().to_bytes()),
        (PayloadType::DomainSummary, domain_summary().to_bytes()),
        (PayloadType::CallForOffers, call_for_offers().to_bytes()),
        (PayloadType::Offer, offer().to_bytes()),
        (PayloadType::Accept, accept().to_bytes()),
        (PayloadType::Agreement, agreement().to_bytes()),
        (PayloadType::Cancel, cancel().to_bytes()),
        (PayloadType::Receipt, receipt_ok.to_bytes()),
        (PayloadType::Voucher, voucher().to_bytes()),
        (PayloadType::Grant, grant().to_bytes()),
        (PayloadType::Block, grant_block().to_bytes()),
        (PayloadType::Block, pay_block().to_bytes()),
        (PayloadType::Block, receive_block().to_bytes()),
        (PayloadType::FraudProof, fraud_proof().to_bytes()),
        (PayloadType::ForkProof, fork_proof().to_bytes()),
        (PayloadType::Heads, heads().to_bytes()),
    ];
    let envelopes = vec![
        seal(&kp, &advert(), 1),
        seal(&kp, &domain_summary(), 2),
        seal(&kp, &call_for_offers(), 3),
        seal(&kp, &offer(), 4),
        seal(&kp, &accept(), 5),
        seal(&kp, &agreement(), 6),
        seal(&kp, &cancel(), 7),
        seal(&kp, &receipt_ok, 8),
        seal(&kp, &voucher(), 9),
        seal(&kp, &fraud_proof(), 10),
        seal(&keypair(ISSUER), &grant(), 11),
        seal(&kp, &fork_proof(), 12),
        seal(&kp, &heads(), 13),
    ];
    // The requester's chain (grant, pay) and the provider's (receive).
    let payer = payer_chain();
    let receive = seal(&kp, &receive_block(), 44);
    let chain_envelopes = payer.iter().chain([&receive]);

    let mut out = Vec::new();
    for e in envelopes.iter().chain(chain_envelopes) {
        out.push(("envelope", e.to_bytes()));
    }
    for (t, p) in &payloads {
        let selector = PayloadType::ALL.iter().position(|x| x == t).expect("listed") as u8;
        out.push(("open", [&[selector][..], p].concat()));
    }

    let messages: Vec<Vec<u8>> = vec![
        advert().to_bytes(),
        domain_summary().to_bytes(),
        call_for_offers().to_bytes(),
        offer().to_bytes(),
        accept().to_bytes(),
        agreement().to_bytes(),
        cancel().to_bytes(),
        receipt_trap.to_bytes(),
        voucher().to_bytes(),
        fraud_proof().to_bytes(),
        Decline::invalid("bad signature").to_bytes(),
        ExitStatus::InvalidModule("no _start".into()).to_bytes(),
        "eu/de/berlin".parse::<Domain>().expect("valid domain").to_bytes(),
        task(3).to_bytes(),
        kp.node_id().to_bytes(),
        call_for_offers().requirements.to_bytes(),
        accept().assignment.to_bytes(),
        accept().assignment.limits.to_bytes(),
        CancelReason::Overdue.to_bytes(),
        domain_summary().stats.to_bytes(),
        domain_summary().contacts[0].to_bytes(),
        domain_summary().children[0].to_bytes(),
        Addr("/ip6/::1/tcp/1".into()).to_bytes(),
        Arg("--verbose".into()).to_bytes(),
        grant().to_bytes(),
        pay_block().to_bytes(),
        receive_block().entry.to_bytes(),
        fork_proof().to_bytes(),
        heads().to_bytes(),
        heads().heads[0].to_bytes(),
    ];
    for (i, m) in messages.iter().enumerate() {
        out.push(("messages", [&[i as u8][..], m].concat()));
    }
    // The other blocks and entries.
    let selector = |name| MESSAGES.iter().position(|m| *m == name).expect("listed") as u8;
    for b in [grant_block(), receive_block()] {
        out.push(("messages", [&[selector("block")][..], &b.to_bytes()].concat()));
    }
    for b in [grant_block(), pay_block()] {
        out.push((
            "messages",
            [&[selector("entry")][..], &b.entry.to_bytes()].concat(),
        ));
    }

    let requests = vec![
        MarketRequest::CallForOffers(envelopes[2].clone()),
        MarketRequest::Accept {
            accept: envelopes[4].clone(),
            content: vec![Blob(b"\0asm".to_vec()), Blob(b"input".to_vec())],
        },
        MarketRequest::Receipt {
            receipt: envelopes[7].clone(),
            output: Some(Blob(b"42".to_vec())),
            stderr: Blob(b"oops".to_vec()),
        },
        MarketRequest::Pay(payer[1].clone()),
        MarketRequest::Cancel(envelopes[6].clone()),
        MarketRequest::Summaries("eu".parse().expect("valid domain")),
        MarketRequest::Chain {
            owner: keypair(1).node_id(),
            after: 0,
        },
        MarketRequest::Batch(vec![
            MarketRequest::CallForOffers(envelopes[2].clone()),
            MarketRequest::Pay(payer[1].clone()),
            MarketRequest::Chain {
                owner: keypair(2).node_id(),
                after: 1,
            },
        ]),
    ];
    for r in &requests {
        out.push(("market_request", r.to_bytes()));
    }
    let responses = vec![
        MarketResponse::Offer(envelopes[3].clone()),
        MarketResponse::Agreement(envelopes[5].clone()),
        MarketResponse::Declined(Decline::PriceTooLow { asking: Price(9) }),
        MarketResponse::Declined(Decline::invalid("replayed")),
        MarketResponse::Declined(Decline::NoCredit {
            available: Credits(1_500),
        }),
        MarketResponse::Declined(Decline::Unpaid { receipts: 2 }),
        MarketResponse::Declined(Decline::Refused),
        MarketResponse::Declined(Decline::Superseded),
        MarketResponse::Declined(Decline::Unavailable),
        MarketResponse::Ack,
        MarketResponse::Summaries(vec![envelopes[1].clone()]),
        MarketResponse::Received(receive.clone()),
        MarketResponse::Chain(payer.clone()),
        MarketResponse::Chain(vec![]),
        MarketResponse::Batch(vec![
            MarketResponse::Ack,
            MarketResponse::Offer(envelopes[3].clone()),
            MarketResponse::Received(receive.clone()),
            MarketResponse::Chain(vec![receive.clone()]),
        ]),
    ];
    for r in &responses {
        out.push(("market_response", r.to_bytes()));
    }

    out.push((
        "content",
        [
            &[0][..],
            &ContentRequest {
                id: ContentId::of(b"x"),
                slice: None,
            }
            .to_bytes(),
        ]
        .concat(),
    ));
    out.push((
        "content",
        [&[1][..], &ContentResponse::Found(Blob(b"x".to_vec())).to_bytes()].concat(),
    ));
    out.push((
        "content",
        [&[1][..], &ContentResponse::NotFound.to_bytes()].concat(),
    ));
    out.push(("content", vec![2, 16, 0, 0, 0, 0, 1, 0, 0, b'h', b'i']));

    out.push(("fraud", [&[0][..], &fraud_proof().to_bytes()].concat()));
    let mut w = Writer::new();
    w.u8(1);
    w.u8(0b11);
    receipt_ok.encode(&mut w);
    receipt_trap.encode(&mut w);
    accept().assignment.args.encode(&mut w);
    w.u8(0);
    out.push(("fraud", w.into_bytes()));

    for (sel, text) in [
        (0u8, "eu/de/berlin".to_owned()),
        (0, "/".to_owned()),
        (1, kp.node_id().to_string()),
        (2, "64MiB".to_owned()),
        (3, "0.25".to_owned()),
        (4, "12".to_owned()),
        (5, "1m30s".to_owned()),
        (6, ContentId::of(b"x").to_string()),
        (6, task(5).to_string()),
    ] {
        out.push(("text", [&[sel][..], text.as_bytes()].concat()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_chains_audit_and_the_fork_proof_holds() {
        let issuer = |n: &NodeId| *n == keypair(ISSUER).node_id();
        let mut payer = Audit::new(keypair(1).node_id());
        for b in &payer_chain() {
            payer.apply(b, &issuer).expect("the payer's chain audits");
        }
        let amount = voucher().amount.0;
        assert_eq!(payer.balance(), (grant().amount.0 - amount) as i64);
        let mut payee = Audit::new(keypair(2).node_id());
        payee
            .apply(&seal(&keypair(2), &receive_block(), 44), &issuer)
            .expect("the payee's chain audits");
        assert_eq!(payee.balance(), amount as i64);
        assert_eq!(fork_proof().check(), Ok(keypair(1).node_id()));
        check_chain(&payer_chain());
        check_fork(&fork_proof());
    }

    /// Whether `payload`, signed as a `t`, opens as one (as the `open`
    /// target does it).
    fn opens(t: PayloadType, payload: &[u8]) -> bool {
        fn open<T: Payload>(payload: &[u8]) -> bool {
            let bytes = seal_raw::<T>(&keypair(9), payload, Nonce([0x5a; 16]));
            let env = Envelope::from_bytes(&bytes).expect("a seed payload fits an envelope");
            open_every_type(&env, T0);
            env.open::<T>(T0).is_ok()
        }
        match t {
            PayloadType::Advert => open::<Advert>(payload),
            PayloadType::DomainSummary => open::<DomainSummary>(payload),
            PayloadType::CallForOffers => open::<CallForOffers>(payload),
            PayloadType::Offer => open::<Offer>(payload),
            PayloadType::Accept => open::<Accept>(payload),
            PayloadType::Agreement => open::<Agreement>(payload),
            PayloadType::Cancel => open::<Cancel>(payload),
            PayloadType::Receipt => open::<Receipt>(payload),
            PayloadType::Voucher => open::<Voucher>(payload),
            PayloadType::Grant => open::<Grant>(payload),
            PayloadType::Block => open::<Block>(payload),
            PayloadType::FraudProof => open::<FraudProof>(payload),
            PayloadType::ForkProof => open::<ForkProof>(payload),
            PayloadType::Heads => open::<Heads>(payload),
        }
    }

    #[test]
    fn every_seed_decodes_as_its_target_reads_it() {
        let seeds = seeds();
        for t in [
            "envelope",
            "open",
            "messages",
            "market_request",
            "market_response",
        ] {
            assert!(seeds.iter().any(|(s, _)| *s == t), "no seed for {t}");
        }
        for (target, input) in &seeds {
            match *target {
                "envelope" => {
                    let env = decode_canonical::<Envelope>(input).expect("a seed envelope decodes");
                    check_envelope(&env, input);
                }
                "open" => {
                    let t = PayloadType::ALL[input[0] as usize % PayloadType::ALL.len()];
                    assert!(opens(t, &input[1..]), "the {t} seed does not open");
                }
                "messages" => decode_message(input[0], &input[1..]),
                "market_request" => {
                    let r = decode_canonical::<MarketRequest>(input).expect("a seed request decodes");
                    assert_eq!(r.encoded_len(), input.len());
                }
                "market_response" => {
                    decode_canonical::<MarketResponse>(input).expect("a seed response decodes");
                }
                _ => {}
            }
        }
    }
}
