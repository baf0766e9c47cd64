//! Separate hosts (`--netns`): every node in its own network namespace, and
//! a domain cut off by the router between the domains, for real. Skipped,
//! with a note, where the test cannot create namespaces (not root, no
//! iproute2).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use agora_testnet::netns::{self, Lab, Shaping};
use agora_testnet::process::{NodeSpec, Testnet};

#[test]
fn a_domain_cut_off_by_the_router_leaves_the_view_runs_its_own_jobs_and_comes_back_when_healed() {
    if !netns::available() {
        eprintln!("skipped: network namespaces need root and iproute2");
        return;
    }
    let _turn = crate::serial();
    crate::runtime().block_on(async {
        let agora = agora_testnet::artifacts::agora_binary().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let lab = Lab::new(Shaping::default()).unwrap();
        let mut net = Testnet::new(agora, dir.path()).unwrap().with_lab(lab);
        net.start_all(vec![
            NodeSpec::provider("eu/a"),
            NodeSpec::provider("eu/a"),
            NodeSpec::provider("eu/b"),
            NodeSpec::provider("eu/b"),
        ])
        .await
        .unwrap();
        net.wait_converged(Duration::from_secs(60)).await.unwrap();

        // Each node on its own address, none on loopback.
        let ips: HashSet<String> = net
            .nodes()
            .iter()
            .map(|n| n.info.api.rsplit_once(':').unwrap().0.to_owned())
            .collect();
        assert_eq!(ips.len(), 4, "{ips:?}");
        assert!(ips.iter().all(|ip| ip.starts_with("10.")), "{ips:?}");

        let a = net.node(0).client.clone();
        let b_ids: HashSet<_> = [net.node(2).id(), net.node(3).id()].into();
        let sees_b = |rows: &[agora_node::api::DomainRow]| {
            rows.iter()
                .any(|d| d.domain.to_string() == "eu/b" && d.nodes as usize == b_ids.len())
        };
        let t = Instant::now();
        while !sees_b(&a.domains().await.unwrap()) {
            assert!(t.elapsed() < Duration::from_secs(30), "eu/a never saw eu/b whole");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        net.cut_domain("eu/b").unwrap();
        let cut_at = Instant::now();
        let dropped = loop {
            let rows = a.domains().await.unwrap();
            if !rows.iter().any(|d| d.domain.to_string() == "eu/b" && d.nodes > 0) {
                break true;
            }
            if cut_at.elapsed() > Duration::from_secs(90) {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let dropped_after = cut_at.elapsed();
        // Inside eu/a nothing changed: its two nodes still see each other.
        let peers: HashSet<_> = a
            .peers(None)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.peer_id)
            .collect();
        let a_mate_seen = peers.contains(&net.node(1).id());

        // Autonomy: inside the cut-off domain, once it has noticed, a job is
        // placed and completed on its own providers.
        let b = net.node(2).client.clone();
        let t = Instant::now();
        while b
            .domains()
            .await
            .unwrap()
            .iter()
            .any(|d| d.domain.to_string() == "eu/a" && d.nodes > 0)
        {
            assert!(
                t.elapsed() < Duration::from_secs(90),
                "eu/b never noticed the cut"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let ranges = agora_testnet::workload::primes::even(6, 1, 20_000);
        let inputs = agora_testnet::workload::primes::inputs(&ranges);
        let modules = agora_testnet::artifacts::example_modules().unwrap();
        let submitted = Instant::now();
        let (id, status) = agora_testnet::job::run(
            &b,
            &modules.read("primes").unwrap(),
            None,
            &inputs,
            &agora_testnet::job::Params::default(),
        )
        .await
        .unwrap();
        let alone = submitted.elapsed();
        let ran: HashSet<_> = status.tasks.iter().flat_map(|t| t.providers.clone()).collect();
        let expected: Vec<Vec<u8>> = ranges
            .iter()
            .map(|(lo, hi)| agora_testnet::workload::primes::output(*lo, *hi))
            .collect();
        let got = agora_testnet::job::outputs(&b, &id).await.unwrap();
        let wrong = agora_testnet::job::compare(&got, &expected);
        eprintln!("cut off, eu/b ran a 6-task job on its own in {alone:?}");

        net.heal_domain("eu/b").unwrap();
        let healed_at = Instant::now();
        let healed = loop {
            if sees_b(&a.domains().await.unwrap()) {
                break true;
            }
            if healed_at.elapsed() > Duration::from_secs(90) {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        eprintln!(
            "eu/b left eu/a's view {dropped_after:?} into the cut and came back {:?} after the heal",
            healed_at.elapsed()
        );
        net.stop();
        assert!(dropped, "eu/b stayed in eu/a's view through the cut");
        assert!(a_mate_seen, "the cut broke eu/a inside");
        assert!(wrong.is_empty(), "the cut-off domain's job: {wrong:?}");
        assert!(
            ran.iter().all(|p| b_ids.contains(p)),
            "the cut-off domain's job ran only on its own providers: {ran:?}"
        );
        assert!(healed, "eu/b did not come back whole after the heal");
    });
}

/// Two providers, each behind its own NAT router (nftables masquerade),
/// find each other through the public nodes: each learns it is private,
/// reserves a place on a relay, and is placed work. One of them submits a
/// 20-task job with two replicas, run by the other and the public
/// providers: every output is right and the credits are conserved.
/// Skipped where namespaces cannot be made, or without the `nft` tool
/// (Debian's `nftables`).
#[test]
fn two_providers_behind_their_own_nat_do_a_replicated_job_with_public_ones() {
    if !nat_available() {
        return;
    }
    use agora_testnet::job::{self, Params};
    use agora_testnet::workload::primes;
    let _turn = crate::serial();
    crate::runtime().block_on(async {
        let agora = agora_testnet::artifacts::agora_binary().unwrap();
        let modules = agora_testnet::artifacts::example_modules().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let lab = Lab::new(Shaping::default()).unwrap().with_nat(2).unwrap();
        let mut net = Testnet::new(agora, dir.path()).unwrap().with_lab(lab);
        net.start_all(vec![
            NodeSpec::provider("eu/pub").with_slots(1),
            NodeSpec::provider("eu/pub").with_slots(1),
            NodeSpec::provider("eu/pub").with_slots(1),
            NodeSpec::provider("eu/home1").with_slots(1),
            NodeSpec::provider("eu/home2").with_slots(1),
        ])
        .await
        .unwrap();
        net.wait_converged(Duration::from_secs(90)).await.unwrap();
        let (home1, home2) = (net.node(3).client.clone(), net.node(4).client.clone());

        // Each home node finds out it is private and takes a relay.
        let t = Instant::now();
        let reach = loop {
            let (s1, s2) = (home1.status().await.unwrap(), home2.status().await.unwrap());
            let public = net.node(0).client.status().await.unwrap();
            if !s1.relays.is_empty() && !s2.relays.is_empty() {
                break (s1, s2, public);
            }
            assert!(
                t.elapsed() < Duration::from_secs(90),
                "the home nodes did not take relays: {:?} {:?} / {:?} {:?}",
                s1.reachability,
                s1.relays,
                s2.reachability,
                s2.relays
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let private = agora_node::network::Reachability::Private;
        assert_eq!((reach.0.reachability, reach.1.reachability), (private, private));
        eprintln!("public node 0: {}", reach.2.reachability);

        let ranges = primes::even(20, 1_000_000_000, 60_000);
        let inputs = primes::trial_inputs(&ranges);
        let expected: Vec<Vec<u8>> = ranges.iter().map(|&(lo, hi)| primes::output(lo, hi)).collect();
        let params = Params {
            replicas: 2,
            ..Params::default()
        };
        let spec = job::prepare(&home1, &modules.read("primes").unwrap(), None, &inputs, &params)
            .await
            .unwrap();
        let id = job::submit(&home1, &spec).await.unwrap();
        let status = job::wait_quietly(&home1, &id, Duration::from_secs(240), Duration::from_millis(200))
            .await
            .unwrap();
        job::ensure_done(&status).unwrap();
        let wrong = job::compare(&job::outputs(&home1, &id).await.unwrap(), &expected);
        assert!(wrong.is_empty(), "{wrong:?}");
        let ran: Vec<String> = status
            .providers
            .iter()
            .filter(|p| p.verified > 0)
            .map(|p| net.label(&p.peer_id))
            .collect();
        // The other home node, behind its own NAT, takes work from this
        // one: the main job may have had enough of the public nodes (the
        // placement's choice), so a job kept to its domain shows it.
        let mut ran = ran;
        if !ran.contains(&net.node(4).name()) {
            let ranges = primes::even(2, 1_000_000_000, 20_000);
            let inputs = primes::trial_inputs(&ranges);
            let mut spec = job::prepare(
                &home1,
                &modules.read("primes").unwrap(),
                None,
                &inputs,
                &Params::default(),
            )
            .await
            .unwrap();
            spec.domain = Some("eu/home2".parse().unwrap());
            let id = job::submit(&home1, &spec).await.unwrap();
            let status = job::wait_quietly(&home1, &id, Duration::from_secs(120), Duration::from_millis(200))
                .await
                .unwrap();
            job::ensure_done(&status).unwrap();
            ran.extend(
                status
                    .providers
                    .iter()
                    .filter(|p| p.verified > 0)
                    .map(|p| net.label(&p.peer_id)),
            );
        }
        let mut punched = Vec::new();
        for c in [&home1, &home2] {
            let m = c.metrics().await.unwrap();
            let count = |name: &str| {
                agora_testnet::metrics::value(&m, name).map_or_else(|| "?".to_owned(), |v| v.to_string())
            };
            punched.push(format!(
                "{} punched, {} failed",
                count("agora_holes_punched_total"),
                count("agora_holes_failed_total")
            ));
        }
        eprintln!(
            "the job ran on {ran:?}; hole punching at home1: {}; at home2: {}",
            punched[0], punched[1]
        );
        let balances = net.settle(Duration::from_secs(60)).await.unwrap();
        net.stop();
        assert!(
            ran.contains(&net.node(4).name()),
            "the other home node ran none of the job: {ran:?}"
        );
        assert_eq!(balances.outbox, 0, "vouchers still undelivered");
        assert!(balances.conserved(), "{balances:?}");
    });
}

/// Whether NAT routers can be made here; if not, says why the test skips.
fn nat_available() -> bool {
    if !netns::available() {
        eprintln!("skipped: network namespaces need root and iproute2");
        return false;
    }
    if !netns::nft_available() {
        eprintln!("skipped: NAT routers need the nft tool (apt-get install nftables)");
        return false;
    }
    true
}

/// `chaos relay-loss`: providers behind NAT, reached only through relays
/// (hole punching off), lose the relay they are reached through mid-job:
/// the job still finishes right, through the relay that is left.
#[test]
fn a_relay_killed_mid_job_leaves_its_providers_reached_through_the_other() {
    if !nat_available() {
        return;
    }
    let _turn = crate::serial();
    let out = crate::run_ok(crate::testnet().args([
        "chaos",
        "relay-loss",
        "--netns",
        "--nat",
        "2",
        "--delay",
        "0ms",
        "--tasks",
        "16",
        "--json",
    ]));
    let r = crate::last_json(&out);
    assert_eq!(r["ok"], true, "{r}");
    let held: Vec<String> = r["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["ok"] == true)
        .filter_map(|c| c["what"].as_str().map(str::to_owned))
        .collect();
    for must in [
        "the job is done with every output right",
        "tasks were verified after the relay died",
        "2 of the 2 providers hold a slot on the relay that is left",
        "the chains sum to the grants issued",
    ] {
        assert!(held.iter().any(|c| c.contains(must)), "{must}: {r}");
    }
}

/// Real delays without netem: the lab's own forwarder holds packets
/// between domains for the pair's delay, and a shaped domain's traffic to
/// and from the others goes at its rate, each way; measured by round trips
/// and bulk transfers between the hosts' namespaces (no nodes needed).
#[test]
fn the_labs_links_have_the_delay_and_rate_they_were_given() {
    if !netns::available() {
        eprintln!("skipped: network namespaces need root and iproute2");
        return;
    }
    let _turn = crate::serial();
    let mut shaping = Shaping::default();
    shaping.add_delay("eu/a:us/a=40ms").unwrap();
    shaping.add_bandwidth("eu/b=1mbit").unwrap();
    let lab = Lab::new(shaping).unwrap();
    for (i, d) in ["eu/a", "us/a", "eu/b"].iter().enumerate() {
        lab.host(i, d).unwrap();
    }
    let far = lab.probe("eu/a", "us/a").unwrap();
    let near = lab.probe("eu/a", "eu/b").unwrap();
    let up = lab.probe("eu/b", "eu/a").unwrap();
    let free = lab.probe("us/a", "eu/b").unwrap();
    for p in [&far, &near, &up, &free] {
        eprintln!("{p}");
    }
    // 40 ms each way.
    assert!((80.0..90.0).contains(&far.rtt_median_ms), "{far}");
    // Unshaped, undelayed: fast, and far more than the shaped link.
    assert!(near.rtt_median_ms < 10.0, "{near}");
    // 1 Mbit/s each way, within 15 %.
    for p in [&near, &up] {
        assert!((0.85..1.15).contains(&p.bulk_mbit_s), "{p}");
    }
    // The far pair is not shaped: the forwarder passes well over 1 Mbit/s
    // even at 80 ms.
    assert!(far.bulk_mbit_s > 5.0, "{far}");
    let (forwarded, lost, _) = lab.forwarded().unwrap();
    assert!(forwarded > 1000, "{forwarded} packets forwarded");
    assert_eq!(lost, 0);
}

/// The white paper's latency-aware placement on a network with real
/// delays: a requester with one domain 5 ms away (round trip) and one
/// 80 ms away, of equal capacity. Interactive tasks with a 20 ms deadline
/// run near; batch tasks, where the round trip does not count, go to both.
#[test]
fn tasks_with_a_tight_deadline_run_in_the_near_domain_and_batch_tasks_spread_over_both() {
    if !netns::available() {
        eprintln!("skipped: network namespaces need root and iproute2");
        return;
    }
    use agora_protocol::market::LatencyClass;
    use agora_testnet::job::{self, Params};
    use agora_testnet::workload::primes;
    let _turn = crate::serial();
    crate::runtime().block_on(async {
        let agora = agora_testnet::artifacts::agora_binary().unwrap();
        let modules = agora_testnet::artifacts::example_modules().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut shaping = Shaping::default();
        shaping.add_delay("eu/a:eu/b=2ms").unwrap();
        shaping.add_delay("eu/a:us/a=40ms").unwrap();
        let lab = Lab::new(shaping).unwrap();
        let mut net = Testnet::new(agora, dir.path()).unwrap().with_lab(lab);
        net.start_all(vec![
            NodeSpec::requester("eu/a"),
            NodeSpec::provider("eu/b").with_slots(1),
            NodeSpec::provider("eu/b").with_slots(1),
            NodeSpec::provider("us/a").with_slots(1),
            NodeSpec::provider("us/a").with_slots(1),
        ])
        .await
        .unwrap();
        net.wait_converged(Duration::from_secs(60)).await.unwrap();
        let links = net.print_links();
        assert_eq!(links.len(), 2, "{links:?}");
        let near: HashSet<_> = [net.node(1).id(), net.node(2).id()].into();
        let requester = net.node(0).client.clone();
        let noop = modules.read("noop").unwrap();

        // A first batch job connects the requester to every provider, so
        // that it has measured each round trip.
        let batch = Params::default();
        let (_, warm) = job::run(
            &requester,
            &noop,
            None,
            &agora_testnet::workload::noop::inputs(8),
            &batch,
        )
        .await
        .unwrap();
        assert_eq!(warm.counts.verified, 8);

        let interactive = Params {
            deadline: Duration::from_millis(20),
            class: LatencyClass::Interactive,
            ..Params::default()
        };
        let tasks = agora_testnet::workload::noop::inputs(40);
        let (_, status) = job::run(&requester, &noop, None, &tasks, &interactive)
            .await
            .unwrap();
        let (ran_near, verified) = job::verified_on(&status, &near);
        eprintln!(
            "interactive, 20 ms deadline: {ran_near} of {verified} verified copies ran in the near domain"
        );
        assert_eq!(status.counts.verified, 40, "{:?}", status.error);
        assert!(ran_near * 10 >= verified * 9, "{ran_near} of {verified} near");

        // Batch work of some 600 ms of CPU a task: the far domain's slots
        // are worth their round trips, and both domains run it, right.
        let ranges = primes::even(16, 1_000_000_000, 40_000);
        let primes_wasm = modules.read("primes").unwrap();
        let (id, status) = job::run(
            &requester,
            &primes_wasm,
            None,
            &primes::trial_inputs(&ranges),
            &batch,
        )
        .await
        .unwrap();
        let (ran_near, verified) = job::verified_on(&status, &near);
        eprintln!(
            "batch: {ran_near} of {verified} verified copies ran in the near domain ({} ms)",
            status.wall_ms
        );
        assert_eq!(status.counts.verified, 16);
        // Each domain runs at least an eighth of it (the far one's tasks
        // each take some 300 ms of round trips more).
        assert!(
            ran_near * 8 >= verified && ran_near * 8 <= verified * 7,
            "batch work goes to both domains: {ran_near} of {verified} near"
        );
        let outputs = job::outputs(&requester, &id).await.unwrap();
        for ((lo, hi), (_, got)) in ranges.iter().zip(&outputs) {
            assert_eq!(got, &primes::output(*lo, *hi), "[{lo}, {hi})");
        }
        net.stop();
    });
}

/// Placement by measured bandwidth: `eu/b`'s access link shaped to
/// 1 Mbit/s. Small inputs: the shaping makes no difference, both domains
/// run the work. 8 MiB inputs: the first transfer to `eu/b` shows the
/// link's rate within seconds, and the tasks run elsewhere.
#[test]
fn tasks_with_large_inputs_avoid_a_domain_behind_a_slow_link_and_small_ones_do_not() {
    if !netns::available() {
        eprintln!("skipped: network namespaces need root and iproute2");
        return;
    }
    use agora_testnet::job::{self, Params};
    use agora_testnet::workload::{TaskInput, primes};
    let _turn = crate::serial();
    crate::runtime().block_on(async {
        let agora = agora_testnet::artifacts::agora_binary().unwrap();
        let modules = agora_testnet::artifacts::example_modules().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut shaping = Shaping::default();
        shaping.add_bandwidth("eu/b=1mbit").unwrap();
        let lab = Lab::new(shaping).unwrap();
        let mut net = Testnet::new(agora, dir.path()).unwrap().with_lab(lab);
        net.start_all(vec![
            NodeSpec::requester("eu/a"),
            NodeSpec::provider("eu/b").with_slots(1),
            NodeSpec::provider("eu/b").with_slots(1),
            NodeSpec::provider("eu/c").with_slots(1),
            NodeSpec::provider("eu/c").with_slots(1),
        ])
        .await
        .unwrap();
        net.wait_converged(Duration::from_secs(60)).await.unwrap();
        net.print_links();
        let slow: HashSet<_> = [net.node(1).id(), net.node(2).id()].into();
        let requester = net.node(0).client.clone();

        // The module (110 KB, a second over the shaped link) reaches every
        // provider first: one task run by all four.
        let primes_wasm = modules.read("primes").unwrap();
        let warm = Params {
            replicas: 4,
            ..Params::default()
        };
        let one = primes::trial_inputs(&primes::even(1, 1_000_000, 1_000));
        job::run(&requester, &primes_wasm, None, &one, &warm)
            .await
            .unwrap();

        // Inputs of a few dozen bytes, some 500 ms of CPU each.
        let ranges = primes::even(24, 1_000_000_000, 100_000);
        let (small_id, small) = job::run(
            &requester,
            &primes_wasm,
            None,
            &primes::trial_inputs(&ranges),
            &Params::default(),
        )
        .await
        .unwrap();
        let (on_slow, all) = job::verified_on(&small, &slow);
        eprintln!("small inputs: {on_slow} of {all} copies behind the 1 Mbit/s link");
        if on_slow * 4 < all {
            let ex = requester.explain(&small_id).await.unwrap();
            eprintln!("{}", serde_json::to_string_pretty(&ex.tasks[6..8]).unwrap());
            eprintln!("slow: {slow:?}");
        }
        assert_eq!(small.counts.verified, 24);
        assert!(
            on_slow * 10 >= all * 3 && on_slow * 10 <= all * 7,
            "small inputs go to both domains alike: {on_slow} of {all}"
        );

        // 8 MiB inputs, each its own: 67 s each over the shaped link. The
        // deadline (10 s) ends the first copies sent there.
        let inputs: Vec<TaskInput> = (0..12u8)
            .map(|i| TaskInput {
                name: format!("big-{i:02}"),
                bytes: (0..8usize << 20).map(|j| (j as u8) ^ i).collect(),
                estimate: Some(10_000_000),
            })
            .collect();
        let params = Params {
            deadline: Duration::from_secs(10),
            ..Params::default()
        };
        let started = std::time::Instant::now();
        let (_, big) = job::run(&requester, &modules.read("noop").unwrap(), None, &inputs, &params)
            .await
            .unwrap();
        let (on_slow, all) = job::verified_on(&big, &slow);
        eprintln!(
            "8 MiB inputs: {on_slow} of {all} verified copies behind the 1 Mbit/s link; the job took {} ms",
            started.elapsed().as_millis()
        );
        assert_eq!(big.counts.verified, 12, "{:?}", big.error);
        assert!(on_slow * 10 <= all, "{on_slow} of {all} behind the slow link");
        net.stop();
    });
}
