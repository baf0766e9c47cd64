//! Shared test harness: real `agora node` processes on loopback.

#![allow(unreachable_pub, dead_code)]

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agora_node::api::NodeInfo;
use agora_node::api::client::{Client, Endpoint, read_node_info};
use tempfile::TempDir;

/// The `agora` binary under test.
pub(crate) const AGORA: &str = env!("CARGO_BIN_EXE_agora");

/// The issuer every test node trusts; a node started in a fresh data dir
/// is granted [`GRANT`] by it.
pub(crate) fn issuer() -> agora_protocol::Keypair {
    agora_protocol::Keypair::from_secret([0x15; 32])
}

/// What a fresh test node is granted: 1000 credits.
pub(crate) const GRANT: u64 = 1_000_000_000;

/// A node process, killed when dropped (also when a test panics).
pub(crate) struct NodeProcess {
    pub child: Child,
    pub dir: TempDir,
    pub info: NodeInfo,
}

impl NodeProcess {
    /// Starts a node in a fresh data dir with `args` added, and waits until
    /// it wrote node.json.
    pub(crate) fn start(args: &[&str]) -> NodeProcess {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, args)
    }

    /// Starts a node again in the data dir of a node that was killed (the
    /// directory is kept by the caller's `TempDir`, or is not temporary).
    pub(crate) fn start_in_path(path: &Path, args: &[&str]) -> NodeProcess {
        let dir = tempfile::Builder::new()
            .prefix("agora-restart")
            .tempdir()
            .unwrap();
        // Symlink-free: copy nothing, point the node at the old directory.
        let log = File::create(path.join("node.log.2")).unwrap();
        let _ = std::fs::remove_file(path.join("node.json"));
        let child = Command::new(AGORA)
            .args(["node", "--data-dir"])
            .arg(path)
            .args([
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--idle-policy",
                "off",
                "--slots",
                "1",
            ])
            .args(["--issuer", &issuer().node_id().to_string()])
            .args(args)
            .env_remove("AGORA_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let info = wait_for_info(path);
        NodeProcess { child, dir, info }
    }

    /// Starts a node in `dir`.
    pub(crate) fn start_in(dir: TempDir, args: &[&str]) -> NodeProcess {
        let log = File::create(dir.path().join("node.log")).unwrap();
        let _ = std::fs::remove_file(dir.path().join("node.json"));
        let child = Command::new(AGORA)
            .args(["node", "--data-dir"])
            .arg(dir.path())
            .args([
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--idle-policy",
                "off",
                "--slots",
                "1",
            ])
            .args(["--issuer", &issuer().node_id().to_string()])
            .args(args)
            .env_remove("AGORA_DATA_DIR")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let info = wait_for_info(dir.path());
        let node = NodeProcess { child, dir, info };
        node.fund();
        node
    }

    /// Grants the node [`GRANT`] from the test issuer.
    pub(crate) fn fund(&self) {
        let now = agora_protocol::units::Timestamp::from_system(std::time::SystemTime::now());
        let grant = agora_node::commands::ledger::sign_grant(
            &issuer(),
            self.info.peer_id,
            agora_protocol::units::Credits(GRANT),
            now,
        )
        .unwrap();
        let client = self.client();
        rt().block_on(client.grant(&grant)).unwrap();
    }

    /// The address others bootstrap from.
    pub(crate) fn bootstrap_addr(&self) -> String {
        format!("{}/p2p/{}", self.info.listen[0], self.info.peer_id)
    }

    /// An API client.
    pub(crate) fn client(&self) -> Client {
        Client::new(Endpoint {
            base: format!("http://{}", self.info.api),
            token: self.info.token.clone(),
        })
    }

    /// The node's log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    /// Kills the process at once (SIGKILL).
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_for_info(dir: &Path) -> NodeInfo {
    let start = Instant::now();
    loop {
        if let Ok(info) = read_node_info(dir) {
            return info;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "node in {} did not start: {}",
            dir.display(),
            std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A small current-thread runtime for API calls.
/// Tests that measure resident memory, CPU time or latency under load run
/// one at a time: each would otherwise count the others' work as its own.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Held for the whole of such a test.
pub(crate) fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub(crate) fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
