//! The node on the network: real processes on loopback find each other,
//! advertise measured capacity, and drop out of views when they die.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::common::{NodeProcess, eventually, rt};

/// Five nodes: within 10 s each lists the four others with measured CU > 0;
/// a node killed drops out of the others' views within its advert's expiry.
#[test]
fn five_nodes_see_each_other_and_forget_the_dead() {
    let first = NodeProcess::start(&[]);
    let boot = first.bootstrap_addr();
    let mut nodes = vec![first];
    for _ in 0..4 {
        nodes.push(NodeProcess::start(&["--bootstrap", &boot]));
    }
    let rt = rt();
    let ids: Vec<String> = nodes.iter().map(|n| n.info.peer_id.to_string()).collect();
    let started = Instant::now();
    let converged = eventually(Duration::from_secs(10), || {
        for (i, n) in nodes.iter().enumerate() {
            let peers = rt.block_on(n.client().peers(None)).ok()?;
            let seen: HashSet<String> = peers
                .iter()
                .filter(|p| p.cu > 0)
                .map(|p| p.peer_id.to_string())
                .collect();
            let want: HashSet<String> = ids
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, s)| s.clone())
                .collect();
            if seen != want {
                return None;
            }
        }
        Some(())
    });
    assert!(
        converged.is_some(),
        "views did not converge within 10 s:\n{}",
        nodes[1].log()
    );
    eprintln!("five views converged in {:?}", started.elapsed());

    // Every peer row carries the contract fields.
    let peers = rt.block_on(nodes[0].client().peers(None)).unwrap();
    for p in &peers {
        assert!(p.cu > 0 && p.memory > 0 && p.slots == 1);
        assert!(p.advert_age_ms < 10_000);
        assert!(p.price.0 > 0, "every node asks a price");
    }

    // Kill one: it drops out within the advert lifetime (10 s) plus slack.
    let dead = nodes[4].info.peer_id.to_string();
    nodes[4].kill();
    let killed_at = Instant::now();
    let gone = eventually(Duration::from_secs(13), || {
        nodes[..4]
            .iter()
            .all(|n| {
                rt.block_on(n.client().peers(None))
                    .map(|ps| ps.iter().all(|p| p.peer_id.to_string() != dead))
                    .unwrap_or(false)
            })
            .then_some(())
    });
    assert!(gone.is_some(), "the killed node stayed in a view");
    eprintln!(
        "killed node dropped out of every view after {:?}",
        killed_at.elapsed()
    );
}

/// A node giving a quarter of a core measures roughly a quarter of the CU
/// of one giving a whole core.
#[test]
fn cpu_share_scales_measured_capacity() {
    // Calibration measures wall time: other tests loading this machine can
    // skew a measurement, so a figure out of range is measured again (up
    // to four pairs; on two cores beside the other tests, two pairs were
    // once both skewed, at 0.09 and 0.11).
    let rt = rt();
    let mut ratios = Vec::new();
    for _ in 0..4 {
        let full = NodeProcess::start(&["--cpu-share", "1.0"]);
        let a = rt.block_on(full.client().status()).unwrap().per_slot_cu.0 as f64;
        drop(full);
        let quarter = NodeProcess::start(&["--cpu-share", "0.25"]);
        let b = rt.block_on(quarter.client().status()).unwrap().per_slot_cu.0 as f64;
        assert!(a > 0.0 && b > 0.0);
        let ratio = b / a;
        eprintln!("per-slot CU: share 1.0 = {a}, share 0.25 = {b}, ratio {ratio:.3}");
        ratios.push(ratio);
        if (0.15..=0.4).contains(&ratio) {
            return;
        }
    }
    panic!("a quarter share measured {ratios:?} of a full one");
}

/// Nodes in two domains: each sees only its own domain's adverts, and both
/// domains' summaries reach every node.
#[test]
fn domains_partition_adverts_and_share_summaries() {
    let a1 = NodeProcess::start(&["--domain", "eu/de"]);
    let boot = a1.bootstrap_addr();
    let a2 = NodeProcess::start(&["--domain", "eu/de", "--bootstrap", &boot]);
    let b1 = NodeProcess::start(&["--domain", "eu/fr", "--bootstrap", &boot]);
    let b2 = NodeProcess::start(&["--domain", "us/ny", "--bootstrap", &boot]);
    let rt = rt();
    let nodes = [&a1, &a2, &b1, &b2];
    let all = eventually(Duration::from_secs(20), || {
        for n in nodes {
            let domains = rt.block_on(n.client().domains()).ok()?;
            let names: HashSet<String> = domains.iter().map(|d| d.domain.to_string()).collect();
            for want in ["eu", "us", "eu/de", "eu/fr", "us/ny"] {
                if !names.contains(want) && n.info.domain.to_string() != want {
                    return None;
                }
            }
        }
        Some(())
    });
    assert!(
        all.is_some(),
        "summaries did not reach every node: {:?}",
        rt.block_on(b2.client().domains()).ok()
    );
    // Adverts stay in their domain.
    let peers = rt.block_on(a1.client().peers(None)).unwrap();
    assert!(peers.iter().all(|p| p.domain.to_string() == "eu/de"), "{peers:?}");
    assert_eq!(peers.len(), 1);
}

/// A node remembers the peers it has seen: restarted after its only
/// bootstrap peer is gone, it rejoins the network from its address book.
#[test]
fn a_restarted_node_rejoins_from_its_address_book_when_its_bootstrap_peer_is_gone() {
    let mut boot_node = NodeProcess::start(&[]);
    let boot = boot_node.bootstrap_addr();
    let mut b = NodeProcess::start(&["--bootstrap", &boot]);
    let c = NodeProcess::start(&["--bootstrap", &boot]);
    let rt = rt();
    let c_id = c.info.peer_id.to_string();
    let sees_c = |n: &NodeProcess| {
        rt.block_on(n.client().peers(None))
            .ok()?
            .iter()
            .any(|p| p.peer_id.to_string() == c_id)
            .then_some(())
    };
    assert!(
        eventually(Duration::from_secs(15), || sees_c(&b)).is_some(),
        "b never saw c:\n{}",
        b.log()
    );
    // Past one update of the address book, then the bootstrap peer and b
    // go down; b comes back with only the dead bootstrap address.
    std::thread::sleep(agora_node::node::address_book::EVERY + Duration::from_secs(2));
    boot_node.kill();
    b.kill();
    let b_dir = b.dir.path().to_owned();
    let again = NodeProcess::start_in_path(&b_dir, &["--bootstrap", &boot]);
    let rejoined = Instant::now();
    assert!(
        eventually(Duration::from_secs(20), || sees_c(&again)).is_some(),
        "the restarted node did not find c again:\n{}",
        std::fs::read_to_string(b_dir.join("node.log.2")).unwrap_or_default()
    );
    eprintln!("rejoined from the address book in {:?}", rejoined.elapsed());
}

/// Runs `agora doctor --json` on `dir`; its exit status and report.
fn doctor(dir: &std::path::Path) -> (bool, serde_json::Value) {
    let out = std::process::Command::new(crate::common::AGORA)
        .args(["doctor", "--json", "--data-dir"])
        .arg(dir)
        .env_remove("AGORA_DATA_DIR")
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

/// The findings of `level` whose check is `check`, as messages.
fn findings(report: &serde_json::Value, check: &str, level: &str) -> Vec<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == check && f["level"] == level)
        .map(|f| f["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `agora doctor` names the cause when a node reaches nobody (its one
/// bootstrap peer is dead), finds nothing wrong with a connected node,
/// and says when the data dir is not a directory.
#[test]
fn doctor_names_why_a_node_reaches_nobody_and_passes_a_connected_one() {
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!(
        "/ip4/127.0.0.1/tcp/{dead_port}/p2p/{}",
        crate::common::issuer().node_id()
    );
    let alone = NodeProcess::start(&["--bootstrap", &dead]);
    let (ok, report) = doctor(alone.dir.path());
    assert!(!ok, "{report}");
    assert!(!findings(&report, "peers", "problem").is_empty(), "{report}");
    let bootstrap = findings(&report, "bootstrap", "problem");
    assert!(!bootstrap.is_empty(), "{report}");
    let named = findings(&report, "bootstrap", "warning");
    assert!(
        named.iter().any(|m| m.contains(&dead_port.to_string())),
        "{report}"
    );

    let first = NodeProcess::start(&[]);
    let second = NodeProcess::start(&["--bootstrap", &first.bootstrap_addr()]);
    let rt = rt();
    let joined = eventually(Duration::from_secs(15), || {
        let peers = rt.block_on(second.client().peers(None)).ok()?;
        (!peers.is_empty()).then_some(())
    });
    assert!(joined.is_some(), "{}", second.log());
    // The first node dials the second back (AutoNAT): it is public.
    let public = eventually(Duration::from_secs(20), || {
        let s = rt.block_on(second.client().status()).ok()?;
        (s.reachability == agora_node::network::Reachability::Public).then_some(())
    });
    assert!(public.is_some(), "{}", second.log());
    let (ok, report) = doctor(second.dir.path());
    assert_eq!(findings(&report, "reachability", "ok").len(), 1, "{report}");
    assert!(ok, "{report}");
    assert_eq!(findings(&report, "clock", "ok").len(), 1, "{report}");
    assert_eq!(findings(&report, "peers", "ok").len(), 1, "{report}");

    let file = tempfile::NamedTempFile::new().unwrap();
    let (ok, report) = doctor(file.path());
    assert!(!ok, "{report}");
    assert!(
        findings(&report, "data dir", "problem")
            .iter()
            .any(|m| m.contains("not a directory")),
        "{report}"
    );
}

/// A bootstrap peer may be named by DNS (`/dns4/localhost/…`).
#[test]
fn a_bootstrap_peer_named_by_dns_is_joined() {
    let first = NodeProcess::start(&[]);
    let port = first.info.listen[0]
        .rsplit('/')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .expect("a tcp listen address");
    let named = format!("/dns4/localhost/tcp/{port}/p2p/{}", first.info.peer_id);
    let second = NodeProcess::start(&["--bootstrap", &named]);
    let rt = rt();
    let first_id = first.info.peer_id.to_string();
    let joined = eventually(Duration::from_secs(15), || {
        let peers = rt.block_on(second.client().peers(None)).ok()?;
        peers
            .iter()
            .any(|p| p.peer_id.to_string() == first_id)
            .then_some(())
    });
    assert!(joined.is_some(), "{}", second.log());
}

/// Two connected nodes with no work wake seldom: once they see each
/// other and are calibrated, each driver ticks at the quiet pace (four a
/// second) while their adverts come and go, not at its busy pace (a
/// hundred a second).
#[test]
fn idle_nodes_tick_at_the_quiet_pace_while_adverts_flow() {
    let a = NodeProcess::start(&[]);
    let b = NodeProcess::start(&["--bootstrap", &a.bootstrap_addr()]);
    let rt = rt();
    let sees = |n: &NodeProcess, other: &NodeProcess| {
        rt.block_on(n.client().peers(None)).is_ok_and(|peers| {
            peers
                .iter()
                .any(|p| p.peer_id.to_string() == other.info.peer_id.to_string())
        })
    };
    let met = eventually(Duration::from_secs(20), || {
        (sees(&a, &b) && sees(&b, &a)).then_some(())
    });
    assert!(met.is_some(), "the two nodes never saw each other");
    let ticks = |n: &NodeProcess| -> Option<f64> {
        let text = rt.block_on(n.client().metrics()).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("agora_driver_ticks_total ")?.trim().parse().ok())
    };
    let window = Duration::from_secs(3);
    for n in [&a, &b] {
        // Calibration and start-up are work; the quiet follows them.
        let rate = eventually(Duration::from_secs(60), || {
            let t0 = ticks(n)?;
            std::thread::sleep(window);
            let per_s = (ticks(n)? - t0) / window.as_secs_f64();
            (per_s <= 6.0).then_some(per_s)
        });
        assert!(
            rate.is_some(),
            "node {} kept ticking faster than 6 a second for a minute",
            n.info.peer_id
        );
    }
    assert!(sees(&a, &b) && sees(&b, &a), "the nodes still see each other");
}
