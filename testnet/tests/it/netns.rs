//! Separate hosts (`--netns`): every node in its own network namespace, and
//! a domain cut off by the router between the domains, for real. Skipped,
//! with a note, where the test cannot create namespaces (not root, no
//! iproute2).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use agora_testnet::netns::{self, Lab};
use agora_testnet::process::{NodeSpec, Testnet};

#[test]
fn a_domain_cut_off_by_the_router_leaves_the_view_and_comes_back_when_healed() {
    if !netns::available() {
        eprintln!("skipped: network namespaces need root and iproute2");
        return;
    }
    let _turn = crate::serial();
    crate::runtime().block_on(async {
        let agora = agora_testnet::artifacts::agora_binary().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let lab = Lab::new(None).unwrap();
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
        assert!(healed, "eu/b did not come back whole after the heal");
    });
}
