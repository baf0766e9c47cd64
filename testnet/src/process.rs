//! A testnet of real `agora node` processes on loopback.
//!
//! [`Testnet::start`] spawns one `agora node` per [`NodeSpec`], each with
//! its own data dir under the testnet's directory (so its own identity and
//! store), TCP on `127.0.0.1` port 0, the API on `127.0.0.1` port 0 and the
//! idle policy off (the other nodes on the same machine would otherwise
//! count as the owner's load). The first node is the bootstrap of every
//! later one. Nodes start one after the other, because each measures its
//! capacity at start and would otherwise measure the others' calibration.
//! A node is ready once its `node.json` names its own pid and its API
//! answers. Its stdout and stderr go to `node.log` in its data dir.
//!
//! With a [`crate::netns::Lab`] ([`Testnet::with_lab`], `--netns`) every
//! node runs in its own network namespace instead, listening and serving
//! its API on its own address there, and a domain can be cut off the
//! network for real ([`Testnet::cut_domain`]).
//!
//! The testnet owns its children: dropping it stops them (SIGTERM, a grace
//! period, then SIGKILL), so an error or Ctrl-C never leaves nodes behind.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agora_node::api::client::{Client, Endpoint, read_node_info};
use agora_node::api::{NodeInfo, Status};
use agora_protocol::NodeId;
use anyhow::{Context, bail};

use crate::netns::Lab;
use crate::signal::{self, Signal};

/// How long a node may take from spawn to a working API.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long stopping nodes waits for them to exit after SIGTERM.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// What the testnet's issuer grants each funded node it starts, in
/// micro-credits (1000 credits).
pub const GRANT_MICROS: i64 = 1_000_000_000;

/// Blocks between two checkpoints of each node's chain (the default of a
/// node is 1024).
pub const TESTNET_CHECKPOINT_EVERY: u64 = 64;

/// The testnet's issuer: its key lives in `DIR/issuer/identity.key`, every
/// node started trusts it (`--issuer`), and it funds the nodes it is asked
/// to with a signed grant.
#[derive(Debug)]
pub struct Issuer {
    key: agora_protocol::Keypair,
}

impl Issuer {
    /// The issuer kept under `dir` (created on first use).
    pub fn open(dir: &Path) -> anyhow::Result<Issuer> {
        let key = agora_node::identity::load_or_create(&dir.join("issuer"))?;
        Ok(Issuer { key })
    }

    /// Its public key: what nodes name in `credit.issuers`.
    pub fn id(&self) -> NodeId {
        self.key.node_id()
    }

    /// Grants `micros` to the node behind `client` and waits until the node
    /// has it on disk.
    pub async fn fund(&self, client: &Client, to: NodeId, micros: i64) -> anyhow::Result<()> {
        let amount = agora_protocol::units::Credits(u64::try_from(micros).unwrap_or(0));
        let now = agora_protocol::units::Timestamp::from_system(std::time::SystemTime::now());
        let grant = agora_node::commands::ledger::sign_grant(&self.key, to, amount, now)?;
        client
            .grant(&grant)
            .await
            .with_context(|| format!("cannot fund {}", to.short()))?;
        Ok(())
    }
}

/// How one node is run.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    /// Its domain, e.g. `eu/a`.
    pub domain: String,
    /// Whether it offers capacity (`--provide`).
    pub provide: bool,
    /// Its `--cpu-share`.
    pub cpu_share: f64,
    /// Its `--slots` (default: one per core).
    pub slots: Option<u32>,
    /// Test only: `--cheat-rate`.
    pub cheat_rate: f64,
    /// Test only: `--slowdown`.
    pub slowdown: f64,
    /// Whether the issuer funds it when it first starts.
    pub funded: bool,
    /// Test only: `--never-pay`.
    pub never_pay: bool,
    /// Test only: `--fork-payments`.
    pub fork_payments: bool,
    /// Configuration (TOML) written to its data dir and passed with
    /// `--config`.
    pub config: Option<String>,
}

impl NodeSpec {
    /// A provider in `domain` with a whole core per task.
    pub fn provider(domain: &str) -> NodeSpec {
        NodeSpec {
            domain: domain.to_owned(),
            provide: true,
            cpu_share: 1.0,
            slots: None,
            cheat_rate: 0.0,
            slowdown: 1.0,
            funded: true,
            never_pay: false,
            fork_payments: false,
            config: None,
        }
    }

    /// A node that only submits jobs (`--provide off`).
    pub fn requester(domain: &str) -> NodeSpec {
        NodeSpec {
            provide: false,
            ..NodeSpec::provider(domain)
        }
    }

    /// With `--cpu-share`.
    pub fn with_cpu_share(mut self, share: f64) -> NodeSpec {
        self.cpu_share = share;
        self
    }

    /// With `--slots`.
    pub fn with_slots(mut self, slots: u32) -> NodeSpec {
        self.slots = Some(slots);
        self
    }

    /// With `--cheat-rate`.
    pub fn with_cheat_rate(mut self, rate: f64) -> NodeSpec {
        self.cheat_rate = rate;
        self
    }

    /// With `--never-pay`: a requester that never pays for verified work.
    pub fn never_paying(mut self) -> NodeSpec {
        self.never_pay = true;
        self
    }

    /// With `--fork-payments`: a requester that spends the same credits
    /// twice by forking its chain.
    pub fn forking(mut self) -> NodeSpec {
        self.fork_payments = true;
        self
    }

    /// With this configuration file (TOML).
    pub fn with_config(mut self, toml: &str) -> NodeSpec {
        self.config = Some(toml.to_owned());
        self
    }

    /// Started without a grant: it has only what it earns, and its
    /// providers' credit lines.
    pub fn unfunded(mut self) -> NodeSpec {
        self.funded = false;
        self
    }

    /// With `--slowdown`.
    pub fn with_slowdown(mut self, factor: f64) -> NodeSpec {
        self.slowdown = factor;
        self
    }

    /// A short description: role, share, slots and test switches.
    pub fn describe(&self) -> String {
        let mut s = if self.provide {
            format!("provider, share {}", self.cpu_share)
        } else {
            "requester".to_owned()
        };
        if let Some(n) = self.slots
            && self.provide
        {
            s.push_str(&format!(", {n} slot{}", if n == 1 { "" } else { "s" }));
        }
        if self.cheat_rate > 0.0 {
            s.push_str(&format!(", cheats {:.0}%", self.cheat_rate * 100.0));
        }
        if self.slowdown > 1.0 {
            s.push_str(&format!(", {}× slower than advertised", self.slowdown));
        }
        if !self.funded {
            s.push_str(", no grant");
        }
        if self.never_pay {
            s.push_str(", never pays");
        }
        if self.fork_payments {
            s.push_str(", forks its chain");
        }
        s
    }

    fn args(&self) -> Vec<String> {
        let mut a = vec![
            "--domain".to_owned(),
            self.domain.clone(),
            "--cpu-share".to_owned(),
            self.cpu_share.to_string(),
        ];
        if let Some(n) = self.slots {
            a.extend(["--slots".to_owned(), n.to_string()]);
        }
        if !self.provide {
            a.extend(["--provide".to_owned(), "off".to_owned()]);
        }
        if self.cheat_rate > 0.0 {
            a.extend(["--cheat-rate".to_owned(), self.cheat_rate.to_string()]);
        }
        if self.slowdown > 1.0 {
            a.extend(["--slowdown".to_owned(), self.slowdown.to_string()]);
        }
        if self.never_pay {
            a.push("--never-pay".to_owned());
        }
        if self.fork_payments {
            a.push("--fork-payments".to_owned());
        }
        a
    }
}

/// One node process of a [`Testnet`].
#[derive(Debug)]
pub struct Node {
    /// Its position in the testnet (`node-INDEX`).
    pub index: usize,
    /// How it runs.
    pub spec: NodeSpec,
    /// What its `node.json` says.
    pub info: NodeInfo,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// A client of its API.
    pub client: Client,
    /// Its status when it became ready (measured capacity).
    pub status: Status,
    /// When it became ready (its `node.json` appeared).
    pub ready_at: Instant,
    /// What the issuer granted it, in micro-credits.
    pub granted: i64,
    child: Option<Child>,
    suspended: bool,
}

impl Node {
    /// `node-INDEX`.
    pub fn name(&self) -> String {
        format!("node-{}", self.index)
    }

    /// Its peer id.
    pub fn id(&self) -> agora_protocol::NodeId {
        self.info.peer_id
    }

    /// Whether its process runs (it was not killed or stopped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether it is suspended (SIGSTOP).
    pub fn is_suspended(&self) -> bool {
        self.suspended
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its log file.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("node.log")
    }

    /// Its listen addresses with `/p2p/PEER` appended: what another node
    /// dials.
    pub fn dial_addrs(&self) -> Vec<String> {
        self.info
            .listen
            .iter()
            .map(|a| format!("{a}/p2p/{}", self.info.peer_id))
            .collect()
    }

    /// Measured per-slot capacity, CU.
    pub fn per_slot_cu(&self) -> u64 {
        self.status.per_slot_cu.0
    }

    /// Advertised capacity (per slot × slots), CU.
    pub fn cu(&self) -> u64 {
        self.status.cu.0
    }

    /// CPU time it used so far (user + system), from `/proc/PID/stat`.
    pub fn cpu_time(&self) -> Option<Duration> {
        cpu_time_at(&format!("/proc/{}/stat", self.pid()?))
    }

    /// A one-time link that logs a browser in to its dashboard, valid for
    /// the longest a node allows (15 minutes).
    pub async fn dashboard_url(&self) -> anyhow::Result<String> {
        let code = self
            .client
            .dashboard_code(Some(agora_node::api::dashboard::session::MAX_CODE_TTL))
            .await
            .with_context(|| format!("{} gives no dashboard link", self.name()))?;
        Ok(code.url)
    }

    /// Its resident memory, from `/proc/PID/status`.
    pub fn rss_bytes(&self) -> Option<u64> {
        self.status_bytes("VmRSS:")
    }

    /// The part of its resident memory that is its own (heap, stacks,
    /// mappings of no file), not pages of the binary and libraries that
    /// every process running them shares and the kernel can drop.
    pub fn rss_anon_bytes(&self) -> Option<u64> {
        self.status_bytes("RssAnon:")
    }

    /// The most memory it has had resident since it started (VmHWM).
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        self.status_bytes("VmHWM:")
    }

    fn status_bytes(&self, field: &str) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = text.lines().find(|l| l.starts_with(field))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
}

/// CPU time (user + system) from a `/proc/…/stat` file.
pub fn cpu_time_at(path: &str) -> Option<Duration> {
    let text = std::fs::read_to_string(path).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // The kernel's USER_HZ is 100 on every Linux this runs on.
    Some(Duration::from_millis(ticks * 10))
}

/// The last lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The sum of balances over the nodes asked, once their outboxes are
/// delivered.
#[derive(Debug, Clone)]
pub struct Balances {
    /// Node index and balance in micro-credits.
    pub nodes: Vec<(usize, i64)>,
    /// Their sum.
    pub total: i64,
    /// Vouchers not yet acknowledged, over all nodes.
    pub outbox: usize,
    /// What the sum must be: the grants issued to the nodes asked.
    pub expected: i64,
}

impl Balances {
    /// Whether every payment is countersigned and the sum equals the grants.
    pub fn conserved(&self) -> bool {
        self.outbox == 0 && self.total == self.expected
    }

    /// The balance of node `index`.
    pub fn of(&self, index: usize) -> Option<i64> {
        self.nodes.iter().find(|(i, _)| *i == index).map(|(_, b)| *b)
    }
}

/// Chains audited by peers ([`Testnet::audit`]).
#[derive(Debug, Clone, Default)]
pub struct Audits {
    /// Chains checked.
    pub checked: usize,
    /// Blocks checked over all of them.
    pub blocks: u64,
    /// Where an audit disagreed with the node's own ledger.
    pub mismatches: Vec<String>,
    /// Checkpoints the chains hold at their last one, and the
    /// attestations their owners hold of it.
    pub checkpoints: (usize, usize),
    /// Chains whose received credits are not all backed (SPEC.md §8.6):
    /// paid by a chain that never held them, or whose payer's chain could
    /// not be read.
    pub unbacked: Vec<String>,
}

impl Audits {
    /// One line for a report.
    pub fn line(&self) -> String {
        if self.mismatches.is_empty() {
            format!(
                "audit: {} chains ({} blocks) fetched and checked by a peer, each equal to its own ledger; {} with a checkpoint, {} of them attested; {}",
                self.checked,
                self.blocks,
                self.checkpoints.0,
                self.checkpoints.1,
                if self.unbacked.is_empty() {
                    "every credit backed".to_owned()
                } else {
                    format!("{} with credits not backed", self.unbacked.len())
                }
            )
        } else {
            format!(
                "audit: {} of {} chains disagree: {}",
                self.mismatches.len(),
                self.checked,
                self.mismatches.join("; ")
            )
        }
    }
}

/// Nodes that exited on their own.
#[derive(Debug, Clone)]
pub struct Exited {
    /// The node.
    pub index: usize,
    /// How it exited.
    pub status: String,
}

/// How stopping went.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stopped {
    /// Nodes that exited after SIGTERM.
    pub clean: usize,
    /// Nodes that had to be killed.
    pub killed: usize,
}

/// Real `agora node` processes on loopback.
#[derive(Debug)]
pub struct Testnet {
    agora: PathBuf,
    dir: PathBuf,
    nodes: Vec<Node>,
    issuer: Issuer,
    /// Blocks between two checkpoints of each node's chain.
    checkpoint_every: u64,
    // Declared after `nodes` and dropped after them: the namespaces go once
    // the processes in them are stopped.
    lab: Option<Lab>,
}

impl Testnet {
    /// An empty testnet whose nodes keep their data under `dir` (created).
    pub fn new(agora: PathBuf, dir: &Path) -> anyhow::Result<Testnet> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", dir.display()))?;
        let issuer = Issuer::open(&dir)?;
        Ok(Testnet {
            agora,
            dir,
            issuer,
            nodes: Vec::new(),
            checkpoint_every: TESTNET_CHECKPOINT_EVERY,
            lab: None,
        })
    }

    /// Nodes started from now on checkpoint their chains every `blocks`
    /// blocks (by default [`TESTNET_CHECKPOINT_EVERY`]).
    pub fn with_checkpoint_every(mut self, blocks: u64) -> Testnet {
        self.checkpoint_every = blocks;
        self
    }

    /// Runs every node started from now on in its own network namespace
    /// of `lab`.
    pub fn with_lab(mut self, lab: Lab) -> Testnet {
        self.lab = Some(lab);
        self
    }

    /// The network namespaces, with `--netns`.
    pub fn lab(&self) -> Option<&Lab> {
        self.lab.as_ref()
    }

    /// With a lab that shapes its links: measures each shaped link (round
    /// trips and a bulk transfer, a few seconds each) and prints what it
    /// measured, so that a run says what network it really had.
    pub fn print_links(&self) -> Vec<crate::netns::Probe> {
        let Some(lab) = self.lab.as_ref().filter(|l| !l.shaping().is_empty()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for r in tokio::task::block_in_place(|| lab.check_links()) {
            match r {
                Ok(p) => {
                    eprintln!("link {p}");
                    out.push(p);
                }
                Err(e) => eprintln!("warning: cannot measure a link: {e:#}"),
            }
        }
        out
    }

    /// Cuts every node of `domain` off the other domains (needs a lab).
    pub fn cut_domain(&self, domain: &str) -> anyhow::Result<()> {
        match &self.lab {
            Some(lab) => lab.cut(domain),
            None => bail!("cutting a domain off needs --netns"),
        }
    }

    /// Reconnects `domain` after [`Testnet::cut_domain`].
    pub fn heal_domain(&self, domain: &str) -> anyhow::Result<()> {
        match &self.lab {
            Some(lab) => lab.heal(domain),
            None => bail!("healing a domain needs --netns"),
        }
    }

    /// Where the nodes' data dirs are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every node started, running or not.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Node `i`, to change what the testnet expects of it.
    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i]
    }

    /// The node with this peer id.
    pub fn by_id(&self, id: &NodeId) -> Option<&Node> {
        self.nodes.iter().find(|n| n.info.peer_id == *id)
    }

    /// A short label for a peer: `node-I` if it is one of ours.
    pub fn label(&self, id: &NodeId) -> String {
        self.by_id(id).map_or_else(|| id.short(), Node::name)
    }

    /// Starts the nodes one after the other.
    pub async fn start_all(&mut self, specs: Vec<NodeSpec>) -> anyhow::Result<()> {
        for s in specs {
            self.start(s).await?;
        }
        Ok(())
    }

    /// Starts one more node and waits until it is ready; returns its index.
    pub async fn start(&mut self, spec: NodeSpec) -> anyhow::Result<usize> {
        let index = self.nodes.len();
        let data_dir = self.dir.join(format!("node-{index}"));
        let mut node = self.spawn(index, spec, data_dir).await?;
        if node.spec.funded {
            self.issuer.fund(&node.client, node.id(), GRANT_MICROS).await?;
            node.granted = GRANT_MICROS;
        }
        self.nodes.push(node);
        Ok(index)
    }

    /// Puts `bytes` in the store of the node that [`Testnet::start`] will
    /// start next as node `index`, before it starts (content larger than
    /// the API takes in one upload); returns its id.
    pub fn preload(&self, index: usize, bytes: &[u8]) -> anyhow::Result<agora_protocol::ContentId> {
        let id = agora_protocol::ContentId::of(bytes);
        let dir = self
            .dir
            .join(format!("node-{index}"))
            .join(agora_node::store::CONTENT_DIR);
        agora_node::paths::create_private_dir(&dir)?;
        std::fs::write(dir.join(id.to_string()), bytes)?;
        Ok(id)
    }

    /// Starts node `i` again from its data dir (same identity and store),
    /// after it was killed or stopped.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        if self.nodes[i].is_running() {
            bail!("node-{i} is still running");
        }
        let spec = self.nodes[i].spec.clone();
        let data_dir = self.nodes[i].data_dir.clone();
        let mut node = self.spawn(i, spec, data_dir).await?;
        node.granted = self.nodes[i].granted;
        self.nodes[i] = node;
        Ok(())
    }

    fn bootstrap_for(&self, index: usize) -> Option<String> {
        self.nodes
            .iter()
            .filter(|n| n.index != index && n.is_running() && !n.suspended)
            .find_map(|n| n.dial_addrs().into_iter().next())
    }

    async fn spawn(&self, index: usize, spec: NodeSpec, data_dir: PathBuf) -> anyhow::Result<Node> {
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let log_path = data_dir.join("node.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let (mut cmd, ip) = match &self.lab {
            Some(lab) => {
                let host = lab.host(index, &spec.domain)?;
                (lab.command(&host, &self.agora), host.ip)
            }
            None => (Command::new(&self.agora), "127.0.0.1".to_owned()),
        };
        cmd.arg("node")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen", &format!("/ip4/{ip}/tcp/0")])
            .args(["--api", &format!("{ip}:0")])
            .args(["--idle-policy", "off"])
            .args(["--issuer", &self.issuer.id().to_string()])
            // A testnet's chains are short: checkpoints come often enough
            // that every run takes and attests some.
            .args(["--checkpoint-every", &self.checkpoint_every.to_string()])
            .args(spec.args())
            .env_remove("AGORA_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        if let Some(b) = self.bootstrap_for(index) {
            cmd.args(["--bootstrap", &b]);
        }
        if let Some(toml) = &spec.config {
            let path = data_dir.join("agora.toml");
            // `{data_dir}` stands for the node's own data dir.
            let toml = toml.replace("{data_dir}", &data_dir.display().to_string());
            std::fs::write(&path, toml).with_context(|| format!("cannot write {}", path.display()))?;
            cmd.arg("--config").arg(&path);
        }
        if let Ok(filter) = std::env::var("AGORA_TESTNET_NODE_LOG") {
            cmd.env("RUST_LOG", filter);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run {}", self.agora.display()))?;
        match wait_ready(&mut child, index, &data_dir, &log_path).await {
            Ok((info, client, status, ready_at)) => Ok(Node {
                index,
                spec,
                info,
                data_dir,
                client,
                status,
                ready_at,
                granted: 0,
                child: Some(child),
                suspended: false,
            }),
            Err(e) => {
                let _ = signal::send(&mut child, Signal::Kill);
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// Kills node `i` at once (SIGKILL), as a crash would.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        let n = &mut self.nodes[i];
        let Some(mut child) = n.child.take() else {
            bail!("node-{i} is not running");
        };
        signal::send(&mut child, Signal::Kill).with_context(|| format!("cannot kill node-{i}"))?;
        let _ = child.wait();
        n.suspended = false;
        Ok(())
    }

    /// Suspends node `i` (SIGSTOP): it neither computes nor answers.
    pub fn suspend(&mut self, i: usize) -> anyhow::Result<()> {
        let n = &mut self.nodes[i];
        let Some(child) = n.child.as_mut() else {
            bail!("node-{i} is not running");
        };
        signal::send(child, Signal::Stop).with_context(|| format!("cannot suspend node-{i}"))?;
        n.suspended = true;
        Ok(())
    }

    /// Resumes node `i` (SIGCONT).
    pub fn resume(&mut self, i: usize) -> anyhow::Result<()> {
        let n = &mut self.nodes[i];
        let Some(child) = n.child.as_mut() else {
            bail!("node-{i} is not running");
        };
        signal::send(child, Signal::Cont).with_context(|| format!("cannot resume node-{i}"))?;
        n.suspended = false;
        Ok(())
    }

    /// Nodes whose process exited without being asked to (reaped here).
    pub fn exited(&mut self) -> Vec<Exited> {
        let mut out = Vec::new();
        for n in &mut self.nodes {
            let Some(child) = n.child.as_mut() else { continue };
            if let Ok(Some(status)) = child.try_wait() {
                out.push(Exited {
                    index: n.index,
                    status: status.to_string(),
                });
                n.child = None;
            }
        }
        out
    }

    /// Stops node `i` cleanly (SIGTERM, then SIGKILL after the grace
    /// period). Returns whether it exited by itself.
    pub fn stop_node(&mut self, i: usize) -> bool {
        let s = stop_children(std::slice::from_mut(&mut self.nodes[i]), STOP_GRACE);
        s.killed == 0
    }

    /// Stops every node: SIGTERM to each (SIGCONT first, so that a
    /// suspended node can handle it), up to [`STOP_GRACE`] for them to
    /// exit, then SIGKILL. Blocks while it waits.
    pub fn stop(&mut self) -> Stopped {
        stop_children(&mut self.nodes, STOP_GRACE)
    }

    /// Waits until every running node's view lists every running provider
    /// of its own domain (nodes only hear adverts of their own domain), and,
    /// with several domains, until every node knows every provider's domain
    /// from the summaries. Returns how long it took.
    pub async fn wait_converged(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let live: Vec<&Node> = self.nodes.iter().filter(|n| n.is_running()).collect();
        let domains: BTreeSet<String> = live
            .iter()
            .filter(|n| n.spec.provide)
            .map(|n| n.spec.domain.clone())
            .collect();
        loop {
            let mut missing = Vec::new();
            for n in &live {
                let want: HashSet<NodeId> = live
                    .iter()
                    .filter(|m| m.index != n.index && m.spec.provide && m.spec.domain == n.spec.domain)
                    .map(|m| m.id())
                    .collect();
                let seen: HashSet<NodeId> = match n.client.peers(None).await {
                    Ok(rows) => rows.into_iter().map(|r| r.peer_id).collect(),
                    Err(e) => {
                        missing.push(format!("{}: {e}", n.name()));
                        continue;
                    }
                };
                let lacking: Vec<String> = want.difference(&seen).map(|id| self.label(id)).collect();
                if !lacking.is_empty() {
                    missing.push(format!("{} does not see {}", n.name(), lacking.join(", ")));
                }
                if domains.len() > 1 {
                    let known: BTreeSet<String> = match n.client.domains().await {
                        Ok(rows) => rows.into_iter().map(|r| r.domain.to_string()).collect(),
                        Err(e) => {
                            missing.push(format!("{}: {e}", n.name()));
                            continue;
                        }
                    };
                    let lacking: Vec<&String> = domains.difference(&known).collect();
                    if !lacking.is_empty() {
                        missing.push(format!(
                            "{} knows no summary of {}",
                            n.name(),
                            lacking.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                        ));
                    }
                }
            }
            if missing.is_empty() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                bail!(
                    "the nodes did not find each other within {:?}: {}",
                    timeout,
                    missing.join("; ")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The balances of the running nodes, as they are now.
    pub async fn balances(&self) -> anyhow::Result<Balances> {
        let mut nodes = Vec::new();
        let mut outbox = 0;
        let mut expected = 0;
        for n in self.nodes.iter().filter(|n| n.is_running()) {
            expected += n.granted;
            let l = n
                .client
                .ledger(0)
                .await
                .with_context(|| format!("cannot read the ledger of {}", n.name()))?;
            outbox += l.outbox;
            nodes.push((n.index, l.balance_micros));
        }
        let total = nodes.iter().map(|(_, b)| *b).sum();
        Ok(Balances {
            nodes,
            total,
            outbox,
            expected,
        })
    }

    /// Each running node's chain audited by another running node (the
    /// next one): the audited balance must equal the node's own ledger.
    pub async fn audit(&self) -> anyhow::Result<Audits> {
        let running: Vec<&Node> = self
            .nodes
            .iter()
            .filter(|n| n.is_running() && !n.suspended)
            .collect();
        let mut out = Audits::default();
        for (k, n) in running.iter().enumerate() {
            let auditor = running[(k + 1) % running.len()];
            let own = n
                .client
                .ledger(0)
                .await
                .with_context(|| format!("cannot read the ledger of {}", n.name()))?;
            // A node restarted on a new port is reached once its new
            // advert has arrived: a failed dial is tried again a few times.
            let mut tries = 0;
            let audited = loop {
                match auditor.client.audit(&n.id()).await {
                    Ok(a) => break a,
                    Err(_) if tries < 5 => {
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                    Err(e) => {
                        return Err(anyhow::Error::from(e))
                            .with_context(|| format!("{} cannot audit {}", auditor.name(), n.name()));
                    }
                }
            };
            out.checked += 1;
            out.blocks += audited.blocks;
            if own.checkpoint > 0 {
                out.checkpoints.0 += 1;
                out.checkpoints.1 += usize::from(own.attested_checkpoint > 0);
            }
            if audited.backed_micros != audited.balance_micros {
                out.unbacked.push(format!(
                    "{}: balance {}, backed {} ({} unbacked, {} unsettled)",
                    n.name(),
                    agora_node::api::format_balance(audited.balance_micros),
                    agora_node::api::format_balance(audited.backed_micros),
                    audited.unbacked,
                    audited.unsettled
                ));
            }
            if audited.balance_micros != own.balance_micros || audited.blocks != own.seq {
                out.mismatches.push(format!(
                    "{}: own ledger {} at block {}, audited by {} as {} at block {}",
                    n.name(),
                    agora_node::api::format_balance(own.balance_micros),
                    own.seq,
                    auditor.name(),
                    agora_node::api::format_balance(audited.balance_micros),
                    audited.blocks
                ));
            }
        }
        Ok(out)
    }

    /// Polls the balances until every outbox is delivered (or `timeout`),
    /// and returns the last reading.
    pub async fn settle(&self, timeout: Duration) -> anyhow::Result<Balances> {
        let started = Instant::now();
        loop {
            let b = self.balances().await?;
            if b.outbox == 0 || started.elapsed() > timeout {
                return Ok(b);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        if self.nodes.iter().any(Node::is_running) {
            self.stop();
        }
    }
}

fn stop_children(nodes: &mut [Node], grace: Duration) -> Stopped {
    let mut report = Stopped::default();
    for n in nodes.iter_mut() {
        if let Some(child) = n.child.as_mut() {
            if n.suspended {
                let _ = signal::send(child, Signal::Cont);
                n.suspended = false;
            }
            let _ = signal::send(child, Signal::Term);
        }
    }
    let deadline = Instant::now() + grace;
    loop {
        let mut waiting = false;
        for n in nodes.iter_mut() {
            let Some(child) = n.child.as_mut() else { continue };
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => {
                    n.child = None;
                    report.clean += 1;
                }
                Ok(None) => waiting = true,
            }
        }
        if !waiting || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for n in nodes.iter_mut() {
        if let Some(mut child) = n.child.take() {
            let _ = signal::send(&mut child, Signal::Kill);
            let _ = child.wait();
            report.killed += 1;
        }
    }
    report
}

async fn wait_ready(
    child: &mut Child,
    index: usize,
    data_dir: &Path,
    log: &Path,
) -> anyhow::Result<(NodeInfo, Client, Status, Instant)> {
    let started = Instant::now();
    let mut info: Option<(NodeInfo, Instant)> = None;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "node-{index} exited ({status}) before it was ready; the end of {}:\n{}",
                log.display(),
                log_tail(log, 20)
            );
        }
        if info.is_none()
            && let Ok(i) = read_node_info(data_dir)
            && i.pid == child.id()
        {
            info = Some((i, Instant::now()));
        }
        if let Some((i, at)) = &info {
            let client = Client::new(Endpoint {
                base: format!("http://{}", i.api),
                token: i.token.clone(),
            });
            if let Ok(status) = client.status().await {
                return Ok((i.clone(), client, status, *at));
            }
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!(
                "node-{index} was not ready after {:?}; the end of {}:\n{}",
                READY_TIMEOUT,
                log.display(),
                log_tail(log, 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The domain names used for `count` domains: two levels, two zones per
/// region (`eu/a`, `eu/b`, `us/a`, `us/b`, `ap/a`, …); one domain is
/// `local`, the node's default.
pub fn domain_names(count: usize) -> Vec<String> {
    const REGIONS: &[&str] = &["eu", "us", "ap", "sa", "af", "oc"];
    if count <= 1 {
        return vec!["local".to_owned()];
    }
    (0..count)
        .map(|k| {
            let region = REGIONS
                .get(k / 2)
                .map_or_else(|| format!("r{}", k / 2), |r| (*r).to_owned());
            let zone = if k % 2 == 0 { "a" } else { "b" };
            format!("{region}/{zone}")
        })
        .collect()
}

/// Runs `agora ARGS… --data-dir DIR --json` (the CLI a user runs against
/// that node) and returns what it printed, as JSON; an error carries its
/// stderr.
pub fn agora_json(agora: &Path, data_dir: &Path, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(agora)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--json")
        .output()
        .with_context(|| format!("cannot run {}", agora.display()))?;
    if !out.status.success() {
        bail!(
            "agora {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("agora printed no JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_names_use_two_levels() {
        assert_eq!(domain_names(1), vec!["local"]);
        assert_eq!(domain_names(3), vec!["eu/a", "eu/b", "us/a"]);
        for d in domain_names(20) {
            assert!(d.parse::<agora_protocol::Domain>().is_ok(), "{d}");
        }
    }

    #[test]
    fn specs_become_flags() {
        let a = NodeSpec::requester("eu/a").with_slots(1).args();
        assert!(a.windows(2).any(|w| w == ["--provide", "off"]));
        assert!(a.windows(2).any(|w| w == ["--domain", "eu/a"]));
        let a = NodeSpec::provider("eu/a")
            .with_cheat_rate(1.0)
            .with_slowdown(4.0)
            .args();
        assert!(a.windows(2).any(|w| w == ["--cheat-rate", "1"]));
        assert!(a.windows(2).any(|w| w == ["--slowdown", "4"]));
        assert!(!a.contains(&"--provide".to_owned()));
    }
}
