//! The view's rules, message by message.

use super::*;
use agora_protocol::capacity::{Contact, DomainSummary};
use agora_protocol::units::{Bytes, EnergyRate, Fuel, Price};
use agora_protocol::{Encode, Keypair, Nonce};

const T0: Timestamp = Timestamp(1_800_000_000_000);

fn advert(seq: u64, domain: &str) -> Advert {
    Advert {
        seq,
        domain: domain.parse().unwrap(),
        cu: ComputeUnits(1000),
        calibrated_at: T0,
        memory: Bytes::mib(256),
        slots: 2,
        free_slots: 1,
        queued: 0,
        load: 0,
        accepting: true,
        price: Price(10),
        energy: EnergyRate(1),
        version: "agora/test".into(),
        addrs: vec![],
        max_task_fuel: Fuel(u64::MAX),
        max_task_time: Millis(3_600_000),
        max_output: Bytes::mib(16),
        labels: vec![],
    }
}

fn signed(kp: &Keypair, a: &Advert, at: Timestamp) -> Vec<u8> {
    Envelope::seal(kp, a, at, Duration::from_secs(10), Nonce(rand::random()))
        .unwrap()
        .to_bytes()
}

fn view() -> View {
    View::new(
        Keypair::from_secret([0; 32]).node_id(),
        "eu/de".parse().unwrap(),
        100,
    )
}

#[test]
fn fresh_adverts_are_kept_and_expire() {
    let mut v = view();
    let kp = Keypair::from_secret([1; 32]);
    v.on_advert(&signed(&kp, &advert(1, "eu/de"), T0), Some(kp.node_id()), T0)
        .unwrap();
    assert_eq!(v.len(), 1);
    assert!(v.expire(T0.add(Duration::from_secs(9))).is_empty());
    assert_eq!(v.expire(T0.add(Duration::from_secs(10))), vec![kp.node_id()]);
    assert!(v.is_empty());
}

#[test]
fn forged_expired_replayed_and_oversized_adverts_are_rejected_and_counted() {
    let mut v = view();
    let kp = Keypair::from_secret([1; 32]);
    let good = signed(&kp, &advert(5, "eu/de"), T0);
    v.on_advert(&good, None, T0).unwrap();
    // Replayed: same bytes again, and an older seq.
    assert!(matches!(
        v.on_advert(&good, None, T0),
        Err(Rejected::Replayed { .. })
    ));
    let older = signed(&kp, &advert(4, "eu/de"), T0);
    assert!(matches!(
        v.on_advert(&older, None, T0),
        Err(Rejected::Replayed { .. })
    ));
    // Forged: flip a payload byte.
    let mut forged = signed(&kp, &advert(6, "eu/de"), T0);
    let n = forged.len();
    forged[n - 70] ^= 1;
    assert!(matches!(
        v.on_advert(&forged, None, T0),
        Err(Rejected::Forged | Rejected::Malformed(_))
    ));
    // Expired.
    let old = signed(&kp, &advert(7, "eu/de"), T0);
    assert!(matches!(
        v.on_advert(&old, None, T0.add(Duration::from_secs(11))),
        Err(Rejected::Expired(_))
    ));
    // Oversized.
    assert!(matches!(
        v.on_advert(&vec![0; MAX_ENVELOPE + 1], None, T0),
        Err(Rejected::Oversized(_))
    ));
    // Signed by someone other than the gossip author.
    let other = Keypair::from_secret([2; 32]).node_id();
    let next = signed(&kp, &advert(8, "eu/de"), T0);
    assert_eq!(v.on_advert(&next, Some(other), T0), Err(Rejected::WrongSigner));
    let m = v.metrics();
    assert_eq!(m.adverts_accepted, 1);
    assert_eq!(m.adverts_rejected.values().sum::<u64>(), 6);
    assert_eq!(m.adverts_rejected["replayed"], 2);
    assert_eq!(m.adverts_rejected["oversized"], 1);
}

#[test]
fn summaries_roll_up_the_hierarchy() {
    let mut v = view();
    v.set_local_advert(advert(1, "eu/de"));
    let kp = Keypair::from_secret([1; 32]);
    v.on_advert(&signed(&kp, &advert(1, "eu/de"), T0), None, T0)
        .unwrap();
    // A sibling domain's summary arrives on eu's summary topic.
    let fr = DomainSummary {
        domain: "eu/fr".parse().unwrap(),
        seq: 1,
        stats: DomainStats {
            nodes: 3,
            total_cu: ComputeUnits(3000),
            ..Default::default()
        },
        contacts: vec![],
        children: vec![],
    };
    let env = Envelope::seal(&kp, &fr, T0, Duration::from_secs(10), Nonce([1; 16])).unwrap();
    let got = v.on_summary(&env.to_bytes(), T0).unwrap();
    // Not counted until a member of eu/fr vouches for it.
    assert_eq!(v.build_summaries(T0)[1].stats.nodes, 2);
    v.vouch(&got.domain, &got.signer);
    let built = v.build_summaries(T0);
    assert_eq!(built.len(), 2);
    assert_eq!(built[0].domain.to_string(), "eu/de");
    assert_eq!(built[0].stats.nodes, 2);
    assert_eq!(built[1].domain.to_string(), "eu");
    assert_eq!(built[1].stats.nodes, 5);
    assert_eq!(built[1].stats.total_cu, ComputeUnits(5000));
    assert_eq!(built[1].children.len(), 2);
    let names: Vec<String> = v.domains().iter().map(|(d, _)| d.to_string()).collect();
    assert_eq!(names, vec!["eu/de", "eu/fr"]);
}

/// Free keys cannot win elections: members known only by their adverts
/// take no part in the ranking.
#[test]
fn only_members_with_standing_take_part_in_elections() {
    let me = Keypair::from_secret([0; 32]);
    let mut v = View::new(me.node_id(), "x".parse().unwrap(), 1000);
    for i in 0..200u32 {
        let mut secret = [0xCC; 32];
        secret[..4].copy_from_slice(&i.to_le_bytes());
        let at = T0.add(Duration::from_millis(u64::from(i) * 100));
        let _ = v.on_advert(
            &signed(&Keypair::from_secret(secret), &advert(1, "x"), at),
            None,
            at,
        );
    }
    assert!(v.len() > 16);
    assert!(v.is_summary_publisher(T0.add(Duration::from_secs(20)), Duration::from_secs(5), 2));
}

#[test]
fn exactly_the_elected_members_publish() {
    let kps: Vec<Keypair> = (1..=6u8).map(|i| Keypair::from_secret([i; 32])).collect();
    let mut views: Vec<View> = kps
        .iter()
        .map(|k| View::new(k.node_id(), "x".parse().unwrap(), 100))
        .collect();
    for v in &mut views {
        for k in &kps {
            if k.node_id() != v.local() {
                v.on_advert(&signed(k, &advert(1, "x"), T0), None, T0).unwrap();
                v.on_rtt(k.node_id(), Duration::from_millis(1));
            }
        }
    }
    let elected = views
        .iter()
        .filter(|v| v.is_summary_publisher(T0, Duration::from_secs(5), 2))
        .count();
    assert_eq!(elected, 2);
}

/// Ten thousand fresh keys announce themselves: a bounded number get in,
/// at a bounded rate, and none displaces a peer with standing.
#[test]
fn a_flood_of_unknown_keys_never_displaces_peers_with_standing() {
    let mut v = View::new(Keypair::from_secret([0; 32]).node_id(), "x".parse().unwrap(), 200);
    let honest: Vec<Keypair> = (1..=20u8).map(|i| Keypair::from_secret([i; 32])).collect();
    for k in &honest {
        v.on_advert(&signed(k, &advert(1, "x"), T0), None, T0).unwrap();
        v.on_rtt(k.node_id(), Duration::from_millis(2));
    }
    let mut flooded = 0;
    for i in 0..10_000u32 {
        let mut secret = [0xAA; 32];
        secret[..4].copy_from_slice(&i.to_le_bytes());
        let k = Keypair::from_secret(secret);
        // A hundred a second for 100 s.
        let at = T0.add(Duration::from_millis(u64::from(i) * 10));
        if let Err(e) = v.on_advert(&signed(&k, &advert(at.0, "x"), at), None, at) {
            assert!(matches!(e, Rejected::Flooded | Rejected::Full), "{e}");
            assert!(!e.is_invalid(), "not penalised, only not forwarded");
            flooded += 1;
        }
        assert!(v.len() <= 200);
    }
    assert!(
        flooded >= 4_000,
        "at most 50 unknown keys a second get in: {flooded} refused"
    );
    for k in &honest {
        assert!(v.peer(&k.node_id()).is_some(), "a peer with standing stays");
        assert_eq!(v.standing(&k.node_id()), Standing::Reachable);
    }
    let unknown = v
        .peers()
        .filter(|p| v.standing(&p.node) == Standing::Unknown)
        .count();
    assert!(
        unknown <= 25,
        "an eighth of the view (at least 16) for unknown keys: {unknown}"
    );
    // An honest newcomer still gets in, and once reachable it stays.
    let late = T0.add(Duration::from_secs(200));
    let newcomer = Keypair::from_secret([99; 32]);
    v.on_advert(&signed(&newcomer, &advert(late.0, "x"), late), None, late)
        .unwrap();
    v.on_rtt(newcomer.node_id(), Duration::from_millis(3));
    for i in 0..1_000u32 {
        let mut secret = [0xBB; 32];
        secret[..4].copy_from_slice(&i.to_le_bytes());
        let at = late.add(Duration::from_millis(u64::from(i) * 10));
        let _ = v.on_advert(
            &signed(&Keypair::from_secret(secret), &advert(at.0, "x"), at),
            None,
            at,
        );
    }
    assert!(v.peer(&newcomer.node_id()).is_some());
}

#[test]
fn sequence_numbers_from_the_future_are_refused() {
    let mut v = view();
    let kp = Keypair::from_secret([1; 32]);
    assert_eq!(
        v.on_advert(&signed(&kp, &advert(u64::MAX, "eu/de"), T0), None, T0),
        Err(Rejected::FutureSeq(u64::MAX))
    );
    // The next real advert is not shadowed.
    assert!(
        v.on_advert(&signed(&kp, &advert(T0.0, "eu/de"), T0), None, T0)
            .is_ok()
    );
}

fn summary_of(domain: &str, seq: u64, nodes: u32, contacts: Vec<Contact>) -> DomainSummary {
    DomainSummary {
        domain: domain.parse().unwrap(),
        seq,
        stats: DomainStats {
            nodes,
            total_cu: ComputeUnits(1000 * u64::from(nodes)),
            ..Default::default()
        },
        contacts,
        children: vec![],
    }
}

fn sealed_summary(kp: &Keypair, s: &DomainSummary) -> Vec<u8> {
    Envelope::seal(kp, s, T0, Duration::from_secs(10), Nonce(rand::random()))
        .unwrap()
        .to_bytes()
}

/// Any key can sign a summary of any domain: a stranger's summary of the
/// local domain is refused, one with a future seq too, and an invented
/// domain counts for nothing until a member vouches.
#[test]
fn poisoned_summaries_count_for_nothing() {
    let mut v = view();
    let member = Keypair::from_secret([1; 32]);
    v.on_advert(&signed(&member, &advert(1, "eu/de"), T0), None, T0)
        .unwrap();
    v.on_rtt(member.node_id(), Duration::from_millis(1));
    let stranger = Keypair::from_secret([66; 32]);
    // The local domain, from a stranger: refused.
    assert_eq!(
        v.on_summary(
            &sealed_summary(&stranger, &summary_of("eu/de", T0.0, 500, vec![])),
            T0
        ),
        Err(Rejected::Unvouched)
    );
    // From a member with standing: counts at once.
    let real = v
        .on_summary(
            &sealed_summary(&member, &summary_of("eu/de", T0.0, 2, vec![])),
            T0,
        )
        .unwrap();
    assert_eq!(real.ask, None);
    // A far future seq: refused.
    assert_eq!(
        v.on_summary(
            &sealed_summary(&member, &summary_of("eu/de", u64::MAX, 2, vec![])),
            T0
        ),
        Err(Rejected::FutureSeq(u64::MAX))
    );
    // An invented domain: held, but not ranked or listed until vouched.
    let contact = Contact {
        node: Keypair::from_secret([67; 32]).node_id(),
        addrs: vec![],
    };
    let fake = v
        .on_summary(
            &sealed_summary(&stranger, &summary_of("eu/zz", T0.0, 900, vec![contact.clone()])),
            T0,
        )
        .unwrap();
    assert_eq!(fake.ask, Some(contact.node), "the engine asks a listed member");
    assert!(!v.domains().iter().any(|(d, _)| d.as_str() == "eu/zz"));
    assert!(v.summary(&"eu/zz".parse().unwrap()).is_none());
    // A forged summary of a vouched domain does not displace the real one.
    let honest = Keypair::from_secret([2; 32]);
    let fr = v
        .on_summary(
            &sealed_summary(&honest, &summary_of("eu/fr", T0.0, 3, vec![])),
            T0,
        )
        .unwrap();
    v.vouch(&fr.domain, &fr.signer);
    let later = T0.add(Duration::from_secs(1));
    v.on_summary(
        &sealed_summary(&stranger, &summary_of("eu/fr", later.0, 999, vec![contact])),
        later,
    )
    .unwrap();
    assert_eq!(v.summary(&fr.domain).unwrap().summary.stats.nodes, 3);
}

/// Once a second's newcomers are admitted, adverts claiming unknown
/// signers are passed over before their signature is checked (a forged one
/// is reported as flooded, not forged: it was never verified), while known
/// peers' adverts are still verified and taken.
#[test]
fn a_flood_beyond_the_newcomer_budget_is_passed_over_unverified() {
    let mut v = View::new(
        Keypair::from_secret([0; 32]).node_id(),
        "x".parse().unwrap(),
        1000,
    );
    let known = Keypair::from_secret([1; 32]);
    let before = Timestamp(T0.0 - 1000);
    v.on_advert(&signed(&known, &advert(1, "x"), before), None, before)
        .unwrap();
    v.on_rtt(known.node_id(), Duration::from_millis(2));
    let mut admitted = 0;
    for i in 0..200u32 {
        let mut secret = [0xCC; 32];
        secret[..4].copy_from_slice(&i.to_le_bytes());
        let k = Keypair::from_secret(secret);
        if v.on_advert(&signed(&k, &advert(1, "x"), T0), None, T0).is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 50, "this second's budget of newcomers");
    let mut forged = signed(&Keypair::from_secret([77; 32]), &advert(1, "x"), T0);
    let n = forged.len();
    forged[n - 70] ^= 1;
    assert_eq!(v.on_advert(&forged, None, T0), Err(Rejected::Flooded));
    // A known peer is still heard, and still verified.
    let mut bad = signed(&known, &advert(2, "x"), T0);
    let n = bad.len();
    bad[n - 70] ^= 1;
    assert!(matches!(
        v.on_advert(&bad, None, T0),
        Err(Rejected::Forged | Rejected::Malformed(_))
    ));
    assert!(
        v.on_advert(&signed(&known, &advert(3, "x"), T0), None, T0)
            .is_ok()
    );
    // The next second, newcomers are verified and admitted again.
    let next = T0.add(Duration::from_secs(1));
    let late = Keypair::from_secret([78; 32]);
    assert!(
        v.on_advert(&signed(&late, &advert(1, "x"), next), None, next)
            .is_ok()
    );
}

/// Elected publishers change every period: a signer a member once vouched
/// for counts again at once when its turn comes back, after its earlier
/// summary expired; a signer never vouched for still needs a member.
#[test]
fn a_signer_once_vouched_counts_again_when_its_turn_comes_back() {
    let mut v = view();
    let publisher = Keypair::from_secret([3; 32]);
    let other = Keypair::from_secret([4; 32]);
    let member = Contact {
        node: Keypair::from_secret([5; 32]).node_id(),
        addrs: vec![],
    };
    let first = v
        .on_summary(
            &sealed_summary(&publisher, &summary_of("eu/fr", T0.0, 3, vec![member.clone()])),
            T0,
        )
        .unwrap();
    v.vouch(&first.domain, &first.signer);
    assert!(v.summary(&first.domain).is_some());
    // Its summary expires; the domain is gone until someone publishes.
    let later = T0.add(Duration::from_secs(30));
    v.expire(later);
    assert!(v.summary(&first.domain).is_none());
    let again = |kp: &Keypair, at: Timestamp| {
        Envelope::seal(
            kp,
            &summary_of("eu/fr", at.0, 3, vec![member.clone()]),
            at,
            Duration::from_secs(10),
            Nonce(rand::random()),
        )
        .unwrap()
        .to_bytes()
    };
    let back = v.on_summary(&again(&publisher, later), later).unwrap();
    assert_eq!(back.ask, None, "no need to ask again");
    assert!(v.summary(&first.domain).is_some(), "counts at once");
    let new = v.on_summary(&again(&other, later), later);
    assert_eq!(
        new.map(|s| s.ask),
        Ok(Some(member.node)),
        "a new signer is asked about"
    );
    assert_eq!(
        v.summary(&first.domain).map(|s| s.signer),
        Some(publisher.node_id()),
        "a signer never vouched for does not count yet"
    );
}

/// A domain's four places all held by vouched signers: a fifth vouched
/// signer's newer summary takes the place of the oldest figures, while an
/// unknown signer's waits beside them, counting for nothing.
#[test]
fn fresh_figures_of_a_vouched_signer_replace_the_oldest_held() {
    let mut v = view();
    let at = |ms: u64| T0.add(Duration::from_millis(ms));
    let seal_at = |kp: &Keypair, nodes: u32, t: Timestamp| {
        Envelope::seal(
            kp,
            &summary_of("eu/fr", t.0, nodes, vec![]),
            t,
            Duration::from_secs(10),
            Nonce(rand::random()),
        )
        .unwrap()
        .to_bytes()
    };
    let signers: Vec<Keypair> = (20..25u8).map(|i| Keypair::from_secret([i; 32])).collect();
    for (i, k) in signers[..4].iter().enumerate() {
        let s = v.on_summary(&seal_at(k, 1, at(i as u64)), at(i as u64)).unwrap();
        v.vouch(&s.domain, &s.signer);
    }
    // The fifth signer was vouched for once before (its summary is gone).
    let domain: Domain = "eu/fr".parse().unwrap();
    v.vouch(&domain, &signers[4].node_id());
    let stranger = Keypair::from_secret([66; 32]);
    assert!(v.on_summary(&seal_at(&stranger, 9, at(10)), at(10)).is_ok());
    assert_eq!(
        v.summary(&domain).map(|s| s.summary.stats.nodes),
        Some(1),
        "an unknown signer waits, counting for nothing"
    );
    assert!(v.on_summary(&seal_at(&signers[4], 7, at(20)), at(20)).is_ok());
    assert_eq!(
        v.summary(&domain).map(|s| s.summary.stats.nodes),
        Some(7),
        "the fresh figures count"
    );
}

/// A new term's publisher, unknown to a receiver that holds four vouched
/// signers of its domain (the last term's, whose summaries live on), is
/// held and asked about at once, and counts as soon as a member answers;
/// signers nobody vouches for take only each other's place, never a
/// vouched one's.
#[test]
fn a_new_publisher_is_heard_while_four_vouched_signers_are_held_and_strangers_displace_only_strangers() {
    let mut v = view();
    let at = |ms: u64| T0.add(Duration::from_millis(ms));
    let member = Contact {
        node: Keypair::from_secret([40; 32]).node_id(),
        addrs: vec![],
    };
    let seal_at = |kp: &Keypair, nodes: u32, t: Timestamp| {
        Envelope::seal(
            kp,
            &summary_of("eu/fr", t.0, nodes, vec![member.clone()]),
            t,
            Duration::from_secs(10),
            Nonce(rand::random()),
        )
        .unwrap()
        .to_bytes()
    };
    let domain: Domain = "eu/fr".parse().unwrap();
    let last_term: Vec<Keypair> = (20..24u8).map(|i| Keypair::from_secret([i; 32])).collect();
    for (i, k) in last_term.iter().enumerate() {
        let s = v.on_summary(&seal_at(k, 1, at(i as u64)), at(i as u64)).unwrap();
        v.vouch(&s.domain, &s.signer);
    }
    let count = |v: &View| v.summary(&domain).map(|s| s.summary.stats.nodes);
    assert_eq!(count(&v), Some(1));

    // Strangers come and go in the one place left, one at a time.
    for (i, byte) in (60..70u8).enumerate() {
        let t = at(100 + i as u64);
        let s = v.on_summary(&seal_at(&Keypair::from_secret([byte; 32]), 99, t), t);
        assert_eq!(
            s.map(|s| s.ask),
            Ok(Some(member.node)),
            "stranger {i} is asked about"
        );
    }
    assert_eq!(count(&v), Some(1), "no stranger counts");
    assert_eq!(
        v.signers_held(&domain),
        5,
        "four vouched signers and one stranger"
    );
    for k in &last_term {
        let again = v.on_summary(&seal_at(k, 1, at(150)), at(150));
        assert!(again.is_ok(), "every vouched signer is still held: {again:?}");
    }

    // The new publisher is held, asked about, and counts once vouched for.
    let publisher = Keypair::from_secret([30; 32]);
    let s = v.on_summary(&seal_at(&publisher, 2, at(200)), at(200)).unwrap();
    assert_eq!(s.ask, Some(member.node), "the new publisher is asked about");
    assert_eq!(count(&v), Some(1), "not before a member answers");
    v.vouch(&s.domain, &s.signer);
    assert_eq!(count(&v), Some(2), "its fresh figures count");
    assert_eq!(v.signers_held(&domain), 4, "the oldest figures made room");
}

/// A vouched summary of `domain` listing one contact (secret byte `c`),
/// `cu` per node.
fn held_summary(v: &mut View, signer: u8, domain: &str, cu: u64, c: u8) -> NodeId {
    let kp = Keypair::from_secret([signer; 32]);
    let contact = Keypair::from_secret([c; 32]).node_id();
    let mut s = summary_of(
        domain,
        T0.0,
        2,
        vec![Contact {
            node: contact,
            addrs: vec![],
        }],
    );
    s.stats.total_cu = ComputeUnits(2 * cu);
    let held = v.on_summary(&sealed_summary(&kp, &s), T0).unwrap();
    v.vouch(&held.domain, &held.signer);
    contact
}

/// The demo's requester asked `us` and `us/a`, the same nodes twice, and
/// never `eu/b`: a domain around or inside one already asked is passed
/// over, and what is left unasked is named.
#[test]
fn gathering_asks_different_parts_of_the_network_and_names_those_it_left() {
    let mut v = view();
    let us = held_summary(&mut v, 1, "us", 4000, 11);
    let us_a = held_summary(&mut v, 2, "us/a", 4000, 11);
    let fr = held_summary(&mut v, 3, "eu/fr", 2000, 13);
    held_summary(&mut v, 4, "ap/a", 1000, 14);
    assert_eq!(us, us_a);
    let need = crate::placement::example_need();
    let (infos, unasked) = crate::placement::gather_explained(&v, &need, 2);
    let asked: HashSet<NodeId> = infos.iter().map(|i| i.node).collect();
    assert_eq!(asked, HashSet::from([us, fr]));
    let unasked: Vec<String> = unasked.iter().map(ToString::to_string).collect();
    assert_eq!(unasked, ["ap/a"]);
}

/// Throughput measured to a peer is its own; a peer never measured gets
/// the median of its domain's, and nothing outside it.
#[test]
fn a_peer_never_measured_gets_its_domains_median_throughput() {
    let mut v = view();
    let peers: Vec<Keypair> = (1..=3).map(|i| Keypair::from_secret([i; 32])).collect();
    for (i, kp) in peers.iter().enumerate() {
        v.on_advert(&signed(kp, &advert(1, "eu/de"), T0), Some(kp.node_id()), T0)
            .unwrap();
        v.on_throughput(kp.node_id(), 1000.0 * (i + 1) as f64, false);
    }
    let de: Domain = "eu/de".parse().unwrap();
    assert_eq!(v.throughput(&peers[0].node_id(), Some(&de)), Some(1000.0));
    let stranger = Keypair::from_secret([9; 32]).node_id();
    assert_eq!(v.throughput(&stranger, Some(&de)), Some(2000.0));
    assert_eq!(v.throughput(&stranger, Some(&"us".parse().unwrap())), None);
    assert_eq!(v.throughput(&stranger, None), None);
    // Samples are smoothed, not replaced.
    v.on_throughput(peers[0].node_id(), 3000.0, false);
    assert_eq!(v.throughput(&peers[0].node_id(), None), Some(2000.0));
    // A bound lowers it to the bound, and never raises it.
    v.on_throughput(peers[0].node_id(), 500.0, true);
    assert_eq!(v.throughput(&peers[0].node_id(), None), Some(500.0));
    v.on_throughput(peers[0].node_id(), 9000.0, true);
    assert_eq!(v.throughput(&peers[0].node_id(), None), Some(500.0));
}
