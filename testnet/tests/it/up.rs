//! `agora-testnet up`: the JSON lines contract, and a clean stop on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use agora_node::api::client::{Client, Endpoint};
use agora_testnet::signal::{self, Signal};

#[test]
fn up_prints_one_json_line_per_node_and_stops_cleanly_on_sigterm() {
    let _turn = crate::serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = crate::testnet()
        .args(["up", "--nodes", "3", "--json", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("agora-testnet runs");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::sync_channel(16);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut nodes = Vec::new();
    while nodes.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(Ok(l)) => l,
            other => {
                let _ = signal::send(&mut child, Signal::Kill);
                let out = child.wait_with_output().expect("waits");
                panic!(
                    "no line {} from `up` ({other:?}); stderr:\n{}",
                    nodes.len() + 1,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        };
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["peer_id", "listen", "api", "token", "data_dir", "dashboard"] {
            assert!(v.get(key).is_some(), "no {key} in {line}");
        }
        let link = format!("http://{}/login?code=", v["api"].as_str().unwrap_or_default());
        assert!(
            v["dashboard"].as_str().is_some_and(|d| d.starts_with(&link)),
            "the dashboard link is the node's: {line}"
        );
        nodes.push(v);
    }
    let peer_ids: std::collections::HashSet<&str> =
        nodes.iter().filter_map(|n| n["peer_id"].as_str()).collect();
    assert_eq!(peer_ids.len(), 3, "three distinct identities");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for n in &nodes {
        let listen = n["listen"].as_array().expect("listen is a list");
        assert!(
            listen
                .iter()
                .all(|a| a.as_str().is_some_and(|a| a.starts_with("/ip4/127.0.0.1/"))),
            "{listen:?}"
        );
        let client = Client::new(Endpoint {
            base: format!("http://{}", n["api"].as_str().expect("api")),
            token: n["token"].as_str().expect("token").to_owned(),
        });
        let peers = rt.block_on(client.peers(None)).expect("the node's API answers");
        assert_eq!(peers.len(), 2, "each node sees the two others");
        let data_dir = std::path::Path::new(n["data_dir"].as_str().expect("data_dir"));
        assert!(data_dir.join("node.json").is_file());
    }
    signal::send(&mut child, Signal::Term).expect("SIGTERM");
    let stopped = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("waits") {
            break s;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(60),
            "`up` did not stop within 60 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "`up` exits 0 after SIGTERM, not {status}");
    for n in &nodes {
        let pid = n["pid"].as_u64().expect("pid");
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "node pid {pid} still runs"
        );
        // A node removes its node.json only when it shuts down cleanly.
        let data_dir = std::path::Path::new(n["data_dir"].as_str().expect("data_dir"));
        assert!(
            !data_dir.join("node.json").exists(),
            "{} was not stopped cleanly",
            data_dir.display()
        );
    }
}
