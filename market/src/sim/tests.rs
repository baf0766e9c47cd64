//! The simulation's own checks: the market under hostile schedules.

use super::*;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

fn world(rng: &mut SmallRng) -> World {
    let providers = rng.random_range(3..6);
    World {
        providers,
        cheaters: 0,
        tasks: rng.random_range(1..8),
        replicas: rng.random_range(1..3),
        spot_check: if rng.random_bool(0.3) { 0.5 } else { 0.0 },
        drop: if rng.random_bool(0.5) { 0.05 } else { 0.0 },
        duplicate: 0.03,
        max_delay_ms: rng.random_range(1..200),
        requester_crashes: if rng.random_bool(0.2) { 1 } else { 0 },
        provider_crashes: if rng.random_bool(0.2) { 1 } else { 0 },
        kill_one: rng.random_bool(0.1),
        stop_when_caught: false,
    }
}

fn check(seed: u64, w: &World, rep: &Report) {
    assert!(rep.error.is_none(), "seed {seed} {w:?}: {:?}", rep.error);
    assert_eq!(
        rep.state,
        Some(JobState::Done),
        "seed {seed} {w:?}: job did not finish ({rep:?})"
    );
    assert_eq!(rep.wrong_accepted, 0, "seed {seed} {w:?}: wrong output accepted");
}

/// Dropped, delayed, reordered and duplicated messages, crashes and a
/// killed provider: every job finishes with correct outputs, nothing is
/// paid twice, and the ledger balances. `AGORA_SIM_SEEDS` sets the count
/// (10 000 in the reliability run) and `AGORA_SIM_FROM` the first (to split
/// a run across cores); `AGORA_SIM_SEED` replays one seed.
#[test]
fn market_survives_hostile_schedules() {
    let (from, count) = match std::env::var("AGORA_SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(s) => (s, 1),
        None => (
            std::env::var("AGORA_SIM_FROM")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            std::env::var("AGORA_SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(300),
        ),
    };
    for seed in from..from + count {
        let mut rng = SmallRng::seed_from_u64(seed ^ 0xa60a);
        let w = world(&mut rng);
        let rep = simulate(seed, w.clone());
        check(seed, &w, &rep);
    }
}

/// Copies raced hard (three replicas, long and uneven delays): a copy
/// withdrawn while its accept was in flight is cancelled once its
/// agreement arrives, and a receipt that comes anyway is acknowledged
/// as superseded. No receipt is refused.
#[test]
fn receipts_of_withdrawn_copies_are_never_refused() {
    let (mut superseded, mut refused) = (0, 0);
    for seed in 0..150u64 {
        let w = World::calm(6, 12, 3, 2500);
        let rep = simulate(seed, w.clone());
        check(seed, &w, &rep);
        superseded += rep.superseded;
        refused += rep.refused;
    }
    eprintln!("superseded {superseded}, refused {refused}");
    assert_eq!(refused, 0, "receipts refused for want of an agreement");
}

/// Replication 2 with cheaters among the providers: no wrong result is
/// accepted and every cheater that ran a task is identified.
#[test]
fn replication_catches_cheaters() {
    let mut banned = 0;
    for seed in 0..100u64 {
        let w = World {
            cheaters: 1,
            ..World::calm(5, 10, 2, 20)
        };
        let rep = simulate(seed, w.clone());
        check(seed, &w, &rep);
        assert!(rep.vouchers_issued >= 20, "seed {seed}: every task paid twice");
        banned += rep.cheaters_banned;
    }
    // The cheater is offered work until caught: it is caught in (nearly) every run.
    assert!(banned >= 95, "cheater identified in only {banned} of 100 runs");
}

/// Spot checks at 5 % without replication against a provider that always
/// cheats: caught within 90 tasks in every seeded trial (stratified
/// sampling catches it within its first 20 receipts).
#[test]
fn spot_checks_catch_a_constant_cheater() {
    let trials = 1000;
    let mut caught_within_90 = 0;
    let mut worst = 0;
    for seed in 0..trials {
        let w = World {
            cheaters: 1,
            spot_check: 0.05,
            stop_when_caught: true,
            ..World::calm(1, 90, 1, 5)
        };
        let rep = simulate(seed, w);
        if let Some(n) = rep.caught_after {
            worst = worst.max(n);
            if n <= 90 {
                caught_within_90 += 1;
            }
        }
    }
    assert!(
        caught_within_90 * 100 >= trials * 99,
        "caught within 90 tasks in {caught_within_90} of {trials}"
    );
    assert!(
        worst <= 20,
        "stratified sampling: at most one block of 20 before the check, got {worst}"
    );
}

/// Replication 2 with 20 % of providers independently returning wrong
/// results, over 1,000 tasks: no wrong result is accepted and every
/// cheater is identified.
#[test]
fn a_fifth_of_providers_cheating_never_gets_a_wrong_result_through() {
    let w = World {
        cheaters: 2,
        ..World::calm(10, 1000, 2, 10)
    };
    let rep = simulate(7, w.clone());
    check(7, &w, &rep);
    assert_eq!(rep.cheaters_banned, 2, "both cheaters identified");
}

/// The same seed gives the same run.
#[test]
fn a_seed_replays_exactly() {
    let w = World {
        providers: 4,
        cheaters: 1,
        tasks: 6,
        replicas: 2,
        spot_check: 0.2,
        drop: 0.05,
        duplicate: 0.05,
        max_delay_ms: 100,
        requester_crashes: 1,
        provider_crashes: 1,
        kill_one: false,
        stop_when_caught: false,
    };
    for seed in 0..20 {
        let a = simulate(seed, w.clone());
        let b = simulate(seed, w.clone());
        assert_eq!(a.trace, b.trace, "seed {seed} did not replay exactly");
        assert_eq!(a.virtual_ms, b.virtual_ms);
        assert_eq!(a.vouchers_issued, b.vouchers_issued);
        assert_eq!(a.state, b.state);
    }
    assert_ne!(
        simulate(1, w.clone()).trace,
        simulate(2, w).trace,
        "different seeds, different runs"
    );
}
