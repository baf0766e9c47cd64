//! Sign, verify, encode and decode rates of a signed offer (issue 2: "verification
//! should be the floor, tens of thousands per second per core; encoding should
//! add under 10 %").
//!
//! Criterion measures each operation first; then a plain loop per operation
//! (one thread, so the rates are per core) gives the summary table and the
//! ratio of encode+decode to sign+verify.
//!
//! A process remembers the envelopes whose signatures it checked (or made)
//! lately, and opens one of those again without checking the signature, so
//! "verify" opens envelopes from a pool larger than that memory, each one
//! the first time it is seen there; "verify again" opens one it has seen.
//!
//! The batch lines sign and open envelopes signed 16 at a time under one
//! signature (SPEC.md §5.2), per envelope: a batch is opened from a pool of
//! more batches than the process remembers checked roots, so each batch's
//! signature is checked once, as a provider checks a frame of orders.
//!
//! The hex lines decode the envelope from hex, as the records keep signed
//! blocks (read back on every audit, chain request and payment), with the
//! protocol's table decoder and with the `hex` crate's `decode`.
//!
//! Run: `cargo bench -p agora-protocol --bench envelope`.

use std::cell::Cell;
use std::hint::black_box;
use std::time::{Duration, Instant};

use agora_protocol::market::Offer;
use agora_protocol::units::{EnergyRate, Millis, Price, Timestamp};
use agora_protocol::{Decode, Encode, Envelope, JobId, Keypair, MessageId, Nonce, TaskId};
use criterion::Criterion;

const T0: Timestamp = Timestamp(1_800_000_000_000);
const LIFETIME: Duration = Duration::from_secs(10);
/// How long each operation of the summary runs.
const SUMMARY_TIME: Duration = Duration::from_secs(2);
/// Distinct envelopes "verify" cycles through: more than the process
/// remembers as checked (two generations of 8,192), so that no open finds
/// its envelope remembered.
const POOL: usize = 40_000;
/// Envelopes in a batch of the batch lines.
const BATCH: usize = 16;
/// Distinct batches "verify, batch" cycles through: more than the process
/// remembers.
const BATCH_POOL: usize = 20_000;

fn offer() -> Offer {
    Offer {
        call: MessageId([1; 32]),
        task: TaskId::new(JobId([7; 16]), 3),
        price: Price(1500),
        expected_start: Millis(20),
        expected_run: Millis(1200),
        has_module: true,
        has_input: false,
        energy: EnergyRate(40),
    }
}

/// A batch of [`BATCH`] envelopes of `offer`, under nonces that `seed`
/// makes distinct from every other batch's.
fn seal_batch(kp: &Keypair, offer: &Offer, seed: u64) -> Vec<Envelope> {
    let items: Vec<_> = (0..BATCH as u64)
        .map(|i| {
            let mut nonce = [0u8; 16];
            nonce[..8].copy_from_slice(&seed.to_le_bytes());
            nonce[8..].copy_from_slice(&i.to_le_bytes());
            (offer, T0, LIFETIME, Nonce(nonce))
        })
        .collect();
    Envelope::seal_batch(kp, &items).expect("offers fit a batch")
}

fn seal(kp: &Keypair, offer: &Offer, nonce: Nonce) -> Envelope {
    Envelope::seal(kp, offer, T0, LIFETIME, nonce).expect("an offer fits an envelope")
}

/// The operations, each as a closure over prepared inputs, so that
/// criterion and the summary loop measure exactly the same work.
struct Ops {
    kp: Keypair,
    offer: Offer,
    env: Envelope,
    bytes: Vec<u8>,
    /// The envelope in hex, as the records keep signed blocks.
    hex: String,
    /// Envelopes of the same offer under distinct nonces.
    pool: Vec<Envelope>,
    next: Cell<usize>,
    batches: Vec<Vec<Envelope>>,
    next_batch: Cell<usize>,
}

impl Ops {
    fn new() -> Ops {
        let kp = Keypair::from_secret([1; 32]);
        let offer = offer();
        let env = seal(&kp, &offer, Nonce([9; 16]));
        let bytes = env.to_bytes();
        // The envelope must survive what the loops do to it.
        assert_eq!(Envelope::from_bytes(&bytes).as_ref(), Ok(&env));
        assert_eq!(env.open::<Offer>(T0).expect("opens").payload(), &offer);
        let pool = (0..POOL)
            .map(|i| {
                let mut nonce = [0u8; 16];
                nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
                seal(&kp, &offer, Nonce(nonce))
            })
            .collect();
        let batches = (0..BATCH_POOL)
            .map(|i| seal_batch(&kp, &offer, i as u64))
            .collect();
        let hex = agora_protocol::id::to_hex(&bytes);
        assert_eq!(agora_protocol::id::from_hex(&hex).as_ref(), Some(&bytes));
        Ops {
            kp,
            offer,
            env,
            hex,
            bytes,
            pool,
            next: Cell::new(0),
            batches,
            next_batch: Cell::new(0),
        }
    }
    fn sign_batch(&self) {
        black_box(seal_batch(black_box(&self.kp), black_box(&self.offer), 0));
    }
    fn verify_batch(&self) {
        let i = self.next_batch.get();
        self.next_batch.set((i + 1) % self.batches.len());
        for env in black_box(&self.batches[i]) {
            black_box(env.open::<Offer>(T0).expect("verifies"));
        }
    }
    fn sign(&self) {
        black_box(seal(black_box(&self.kp), black_box(&self.offer), Nonce([9; 16])));
    }
    fn verify(&self) {
        let i = self.next.get();
        self.next.set((i + 1) % self.pool.len());
        black_box(black_box(&self.pool[i]).open::<Offer>(T0).expect("verifies"));
    }
    fn verify_again(&self) {
        black_box(black_box(&self.env).open::<Offer>(T0).expect("verifies"));
    }
    fn encode(&self) {
        black_box(black_box(&self.env).to_bytes());
    }
    fn decode(&self) {
        black_box(Envelope::from_bytes(black_box(&self.bytes)).expect("decodes"));
    }
    fn hex_table_decode(&self) {
        black_box(agora_protocol::id::from_hex(black_box(&self.hex)).expect("hex"));
    }
    fn hex_crate_decode(&self) {
        black_box(hex::decode(black_box(&self.hex)).expect("hex"));
    }
}

type Op = fn(&Ops);

/// Each operation, and how many envelopes one call handles.
const OPS: [(&str, Op, u32); 9] = [
    ("sign (Envelope::seal)", Ops::sign, 1),
    ("verify (Envelope::open)", Ops::verify, 1),
    ("verify again (seen before)", Ops::verify_again, 1),
    ("encode (Envelope::to_bytes)", Ops::encode, 1),
    ("decode (Envelope::from_bytes)", Ops::decode, 1),
    ("sign, batch of 16, per envelope", Ops::sign_batch, BATCH as u32),
    (
        "verify, batch of 16, per envelope",
        Ops::verify_batch,
        BATCH as u32,
    ),
    ("hex to bytes, table (id::from_hex)", Ops::hex_table_decode, 1),
    ("hex to bytes, hex crate (hex::decode)", Ops::hex_crate_decode, 1),
];

fn criterion_groups(c: &mut Criterion, ops: &Ops) {
    let mut g = c.benchmark_group("envelope/offer");
    for (name, op, _) in OPS {
        let short = name.split(" (").next().unwrap_or(name).replace(' ', "_");
        g.bench_function(short, |b| b.iter(|| op(ops)));
    }
    g.finish();
}

/// Mean time of one `op`, from a plain loop of at least [`SUMMARY_TIME`].
fn time_per_op(ops: &Ops, op: Op) -> Duration {
    // Warm up, and size batches so that reading the clock costs nothing.
    let start = Instant::now();
    let mut batch = 1u32;
    while start.elapsed() < Duration::from_millis(200) {
        for _ in 0..batch {
            op(ops);
        }
        batch = batch.saturating_mul(2);
    }
    let mut n: u64 = 0;
    let start = Instant::now();
    loop {
        for _ in 0..batch {
            op(ops);
        }
        n += u64::from(batch);
        let elapsed = start.elapsed();
        if elapsed >= SUMMARY_TIME {
            return elapsed / u32::try_from(n).unwrap_or(u32::MAX);
        }
    }
}

fn summary(ops: &Ops) {
    let times: Vec<(&str, Duration)> = OPS
        .iter()
        .map(|(name, op, per)| (*name, time_per_op(ops, *op) / *per))
        .collect();
    println!();
    println!(
        "Envelope<Offer>: payload {} bytes, envelope {} bytes; one thread (rates are per core)",
        ops.offer.to_bytes().len(),
        ops.bytes.len()
    );
    println!("{:<40} {:>12} {:>14}", "operation", "time/op", "ops/s/core");
    for (name, t) in &times {
        println!(
            "{:<40} {:>9.2} µs {:>14.0}",
            name,
            t.as_secs_f64() * 1e6,
            1.0 / t.as_secs_f64()
        );
    }
    let t = |i: usize| times[i].1.as_secs_f64();
    let crypto = t(0) + t(1);
    let codec = t(3) + t(4);
    println!(
        "sign+verify {:.2} µs, encode+decode {:.2} µs: encode+decode overhead relative to sign+verify = {:.1} %",
        crypto * 1e6,
        codec * 1e6,
        100.0 * codec / crypto
    );
    let batched = t(5) + t(6);
    println!(
        "sign+verify in batches of {BATCH}: {:.2} µs per envelope, {:.1}× less than alone",
        batched * 1e6,
        crypto / batched
    );
    println!(
        "the envelope's {} hex digits to bytes: {:.0} ns, {:.1}× faster than hex::decode ({:.0} ns)",
        ops.hex.len(),
        t(7) * 1e9,
        t(8) / t(7),
        t(8) * 1e9
    );
}

fn main() {
    let ops = Ops::new();
    let mut c = Criterion::default().configure_from_args();
    criterion_groups(&mut c, &ops);
    c.final_summary();
    summary(&ops);
}
