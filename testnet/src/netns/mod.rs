//! Separate hosts on one machine: every node in its own Linux network
//! namespace, joined by veth pairs, with real delay between domains and
//! real partitions (`--netns`, needs root and iproute2).
//!
//! The topology, all of it created here and removed on drop:
//!
//! ```text
//!   root namespace ── veth agtnPIDc (10.B.0.1) ──┐
//!                                                 │ ctl (10.B.0.254)
//!   hub namespace (router, ip_forward=1):  bridge dK (10.B.K.254) per domain K
//!                                                 │ veth pair per node
//!   node namespace agtnPID-nI:  eth0 (10.B.K.H/24), default route via 10.B.K.254
//! ```
//!
//! * Nodes of one domain share a bridge: their traffic never leaves it.
//! * Traffic between domains is routed by the hub. When the lab shapes
//!   links ([`Shaping`]: `--delay`, `--jitter`, `--loss`, `--bandwidth`),
//!   the hub routes every packet between two domains through a TUN device
//!   (`agd`, policy table 200) to the [`forwarder`], which holds it for the
//!   pair's delay and the access links' rates and writes it back; what
//!   comes back in from the device is routed normally (rule `iif agd`).
//!   The kernel here has no `sch_netem`, and this needs none. A delay is
//!   one way, each way: round-trip time ≈ 2 × delay. Traffic inside a
//!   domain is bridged and never delayed, and the control link never is.
//! * A partition is two policy rules in the hub (`from` and `to` the
//!   domain's subnet: blackhole): packets are dropped silently, as on a cut
//!   link, while the control link to the root namespace — how the testnet
//!   reaches every node's API — keeps working.
//! * Domains behind NAT (`--nat N`, [`Lab::with_nat`]): the domain's
//!   bridge sits in its own router namespace instead of the hub, joined to
//!   the hub by a WAN link (router 10.B.(128+K).1, hub 10.B.(128+K).254).
//!   The router masquerades what its nodes send out (nftables), and lets in
//!   from the WAN only replies to what they opened, and the testnet's own
//!   control traffic (so that it can reach every node's API); anything else
//!   is dropped silently, as a home router does (no reset: a reset would
//!   kill a hole punch whose first SYN arrives before the other side's). A node behind
//!   it cannot be dialled by other nodes: only through a relay, or a hole
//!   its own traffic punched. The routers keep a connection's source port
//!   where they can; [`Lab::with_symmetric_nat`] makes them pick a random
//!   one per connection instead (symmetric NAT), where no hole can be
//!   punched.
//! * `B` is the first second octet from 100 up, after this process's id,
//!   that no address or route of the root namespace uses: only addresses
//!   the testnet creates itself are used.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, bail};

pub mod forwarder;
pub mod probe;
pub mod shaping;

pub use probe::Probe;
pub use shaping::Shaping;

use forwarder::Forwarder;

/// The TUN device of the forwarder, in the hub.
const TUN: &str = "agd";
/// The policy table that sends traffic between domains to [`TUN`].
const TUN_TABLE: &str = "200";

/// Prefix of everything a lab creates (namespaces, the root-side veth).
const PREFIX: &str = "agtn";

/// Where one node runs.
#[derive(Debug, Clone)]
pub struct Host {
    /// Its network namespace.
    pub netns: String,
    /// Its address.
    pub ip: String,
}

#[derive(Debug, Default)]
struct State {
    /// Domain name → subnet number (1..).
    domains: Vec<String>,
    /// Node index → host.
    hosts: HashMap<usize, Host>,
    /// Hosts per subnet so far.
    used: HashMap<usize, u8>,
    /// Domains cut off now.
    cut: Vec<String>,
    /// Subnets behind their own NAT router.
    natted: Vec<usize>,
}

/// A set of namespaces for one testnet.
#[derive(Debug)]
pub struct Lab {
    tag: String,
    octet: u8,
    shaping: Shaping,
    /// Running when `shaping` is not empty; dropped before the namespaces.
    forwarder: Option<Forwarder>,
    /// How many domains, after the first, go behind their own NAT.
    nat: usize,
    /// Whether the routers map each connection to a random port
    /// (symmetric NAT) instead of keeping the source port.
    symmetric: bool,
    state: Mutex<State>,
}

fn run(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (iproute2 is needed for --netns)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the namespaces of labs whose process is gone (a testnet killed
/// with SIGKILL cannot clean up after itself).
fn collect_stale() {
    let Ok(list) = run(&["netns", "list"]) else { return };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: Option<u32> = rest.split('-').next().and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| !pid_alive(p)) {
            let _ = run(&["netns", "del", name]);
        }
    }
}

impl Lab {
    /// Creates the hub and the control link, and the delay forwarder if
    /// `shaping` shapes anything.
    pub fn new(shaping: Shaping) -> anyhow::Result<Lab> {
        if !is_root() {
            bail!("--netns needs root (it creates network namespaces and veth pairs)");
        }
        run(&["-V"])?;
        collect_stale();
        let tag = format!("{PREFIX}{}", std::process::id());
        let octet = free_octet()?;
        let mut lab = Lab {
            tag,
            octet,
            shaping,
            forwarder: None,
            nat: 0,
            symmetric: false,
            state: Mutex::new(State::default()),
        };
        lab.create_hub()
            .with_context(|| format!("cannot create the namespaces of {}", lab.tag))?;
        if !lab.shaping.is_empty() {
            lab.forwarder = Some(
                lab.start_forwarder()
                    .context("cannot start the delay forwarder (it needs the kernel's TUN driver)")?,
            );
        }
        Ok(lab)
    }

    /// Creates the TUN device in the hub and routes every packet between
    /// two domains through it: after the control rules (50, 51) and the
    /// cuts (100 + 2k), so that control traffic is never delayed and a
    /// cut domain stays cut.
    fn start_forwarder(&self) -> anyhow::Result<Forwarder> {
        let hub = self.hub();
        // Packets come back in on the device with their original sources,
        // which the reverse-path filter would take for spoofed.
        for conf in ["all", "default"] {
            sysctl(&hub, &format!("net.ipv4.conf.{conf}.rp_filter=0"))?;
        }
        let scheduler = shaping::Scheduler::new(self.shaping.clone());
        let fwd = Forwarder::start(&hub, TUN, self.octet, scheduler)?;
        sysctl(&hub, &format!("net.ipv4.conf.{TUN}.rp_filter=0"))?;
        run(&["-n", &hub, "link", "set", TUN, "up"])?;
        run(&[
            "-n", &hub, "route", "add", "default", "dev", TUN, "table", TUN_TABLE,
        ])?;
        let lab_net = format!("10.{}.0.0/16", self.octet);
        run(&[
            "-n", &hub, "rule", "add", "iif", TUN, "lookup", "main", "priority", "900",
        ])?;
        run(&[
            "-n", &hub, "rule", "add", "from", &lab_net, "to", &lab_net, "lookup", TUN_TABLE, "priority",
            "901",
        ])?;
        Ok(fwd)
    }

    /// What the lab shapes.
    pub fn shaping(&self) -> &Shaping {
        &self.shaping
    }

    /// Packets the forwarder put back, lost and dropped for a full buffer
    /// so far.
    pub fn forwarded(&self) -> Option<(u64, u64, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        self.forwarder.as_ref().map(|f| {
            let c = &f.counters;
            (
                c.forwarded.load(Relaxed),
                c.lost.load(Relaxed),
                c.overflowed.load(Relaxed),
            )
        })
    }

    /// Measures round trips and bulk throughput from a host of domain
    /// `from` to one of domain `to` (each must have a node already).
    pub fn probe(&self, from: &str, to: &str) -> anyhow::Result<Probe> {
        let (a, b) = {
            let st = self.state();
            let first = |domain: &str| -> anyhow::Result<Host> {
                let k = subnet_index(&st, domain)?;
                let net = format!("10.{}.{k}.", self.octet);
                st.hosts
                    .iter()
                    .filter(|(_, h)| h.ip.starts_with(&net))
                    .min_by_key(|(i, _)| **i)
                    .map(|(_, h)| h.clone())
                    .with_context(|| format!("no node runs in domain {domain}"))
            };
            (first(from)?, first(to)?)
        };
        probe::probe((from, &a.netns), (to, &b.netns, &b.ip))
    }

    /// Probes every pair of domains in use that the shaping touches, both
    /// ways when a domain's bandwidth is shaped.
    pub fn check_links(&self) -> Vec<anyhow::Result<Probe>> {
        let domains = self.state().domains.clone();
        let mut out = Vec::new();
        for (i, x) in domains.iter().enumerate() {
            for y in &domains[i + 1..] {
                let link = self.shaping.link(x, y);
                let rated = self.shaping.rate(x).is_some() || self.shaping.rate(y).is_some();
                if link.is_none() && !rated {
                    continue;
                }
                out.push(self.probe(x, y));
                if rated {
                    out.push(self.probe(y, x));
                }
            }
        }
        out
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.tag)
    }

    /// Puts the next `n` domains to appear after the first (the bootstrap
    /// node's, which stays public) each behind its own NAT router. Needs
    /// the `nft` tool (Debian's `nftables`).
    pub fn with_nat(mut self, n: usize) -> anyhow::Result<Lab> {
        if n > 0 && !nft_available() {
            bail!("--nat needs the `nft` tool: apt-get install nftables");
        }
        if n > 100 {
            bail!("--nat supports at most 100 domains behind NAT");
        }
        self.nat = n;
        Ok(self)
    }

    /// Makes the NAT routers symmetric: each connection out gets a random
    /// source port (`masquerade random`), so the port a peer saw through
    /// one connection says nothing about the next, and hole punching
    /// cannot work; the home routers made otherwise keep the source port.
    pub fn with_symmetric_nat(mut self) -> Lab {
        self.symmetric = true;
        self
    }

    fn router(&self, subnet: usize) -> String {
        format!("{}-r{subnet}", self.tag)
    }

    /// The namespace holding subnet `k`'s bridge: its NAT router, or the hub.
    fn bridge_ns(&self, st: &State, k: usize) -> String {
        if st.natted.contains(&k) {
            self.router(k)
        } else {
            self.hub()
        }
    }

    /// Creates subnet `k`'s NAT router: a namespace with the domain's
    /// bridge, a WAN link to the hub, masquerading out and only replies in.
    fn create_nat(&self, k: usize) -> anyhow::Result<()> {
        let (hub, r) = (self.hub(), self.router(k));
        let wan_hub = format!("w{k}");
        let (wan_net, lan_net, ctl_net) = (self.net(128 + k, 0), self.net(k, 0), self.net(0, 0));
        run(&["netns", "add", &r])?;
        run(&["-n", &r, "link", "set", "lo", "up"])?;
        sysctl(&r, "net.ipv4.ip_forward=1")?;
        run(&[
            "-n", &hub, "link", "add", &wan_hub, "type", "veth", "peer", "name", "wan", "netns", &r,
        ])?;
        run(&[
            "-n",
            &hub,
            "addr",
            "add",
            &format!("{}/24", self.net(128 + k, 254)),
            "dev",
            &wan_hub,
        ])?;
        run(&["-n", &hub, "link", "set", &wan_hub, "up"])?;
        run(&[
            "-n",
            &r,
            "addr",
            "add",
            &format!("{}/24", self.net(128 + k, 1)),
            "dev",
            "wan",
        ])?;
        run(&["-n", &r, "link", "set", "wan", "up"])?;
        run(&[
            "-n",
            &r,
            "route",
            "add",
            "default",
            "via",
            &self.net(128 + k, 254),
        ])?;
        // The hub routes the LAN's subnet to the router only so that the
        // testnet's control traffic gets there; the router drops the rest.
        run(&[
            "-n",
            &hub,
            "route",
            "add",
            &format!("{lan_net}/24"),
            "via",
            &self.net(128 + k, 1),
        ])?;
        let mapping = if self.symmetric { " random" } else { "" };
        let rules = format!(
            "table ip agtn_nat {{
  chain masq {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname \"wan\" ip daddr != {ctl_net}/24 masquerade{mapping}
  }}
  chain inbound {{
    type filter hook forward priority filter; policy accept;
    iifname \"wan\" ct state established,related accept
    iifname \"wan\" ip saddr {ctl_net}/24 accept
    iifname \"wan\" drop
  }}
  chain to_router {{
    type filter hook input priority filter; policy accept;
    iifname \"wan\" ct state established,related accept
    iifname \"wan\" drop
  }}
}}
"
        );
        nft(&r, &rules).with_context(|| format!("cannot set up the NAT of {wan_net}/24"))?;
        Ok(())
    }

    fn root_veth(&self) -> String {
        format!("{}c", self.tag)
    }

    fn net(&self, subnet: usize, host: u8) -> String {
        format!("10.{}.{subnet}.{host}", self.octet)
    }

    fn create_hub(&self) -> anyhow::Result<()> {
        let hub = self.hub();
        let rv = self.root_veth();
        run(&["netns", "add", &hub])?;
        run(&["-n", &hub, "link", "set", "lo", "up"])?;
        sysctl(&hub, "net.ipv4.ip_forward=1")?;
        run(&[
            "link", "add", &rv, "type", "veth", "peer", "name", "ctl", "netns", &hub,
        ])?;
        run(&["addr", "add", &format!("{}/24", self.net(0, 1)), "dev", &rv])?;
        run(&["link", "set", &rv, "up"])?;
        run(&[
            "-n",
            &hub,
            "addr",
            "add",
            &format!("{}/24", self.net(0, 254)),
            "dev",
            "ctl",
        ])?;
        run(&["-n", &hub, "link", "set", "ctl", "up"])?;
        run(&[
            "route",
            "add",
            &format!("10.{}.0.0/16", self.octet),
            "via",
            &self.net(0, 254),
            "dev",
            &rv,
        ])?;
        // The control subnet is never cut.
        let ctl = format!("{}/24", self.net(0, 0));
        run(&[
            "-n", &hub, "rule", "add", "from", &ctl, "lookup", "main", "priority", "50",
        ])?;
        run(&[
            "-n", &hub, "rule", "add", "to", &ctl, "lookup", "main", "priority", "51",
        ])?;
        Ok(())
    }

    fn subnet_of(&self, st: &mut State, domain: &str) -> anyhow::Result<usize> {
        if let Some(i) = st.domains.iter().position(|d| d == domain) {
            return Ok(i + 1);
        }
        if st.domains.len() >= 250 {
            bail!("--netns supports at most 250 domains");
        }
        st.domains.push(domain.to_owned());
        let k = st.domains.len();
        if k >= 2 && st.natted.len() < self.nat {
            self.create_nat(k)?;
            st.natted.push(k);
        }
        let hub = self.bridge_ns(st, k);
        let br = format!("d{k}");
        run(&["-n", &hub, "link", "add", &br, "type", "bridge"])?;
        run(&[
            "-n",
            &hub,
            "addr",
            "add",
            &format!("{}/24", self.net(k, 254)),
            "dev",
            &br,
        ])?;
        run(&["-n", &hub, "link", "set", &br, "up"])?;
        if let Some(f) = &self.forwarder {
            f.scheduler
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .name(k, domain);
        }
        Ok(k)
    }

    /// The host of node `index` in `domain`: created on first use, the same
    /// afterwards (a restarted node keeps its address).
    pub fn host(&self, index: usize, domain: &str) -> anyhow::Result<Host> {
        let mut st = self.state();
        if let Some(h) = st.hosts.get(&index) {
            return Ok(h.clone());
        }
        let k = self.subnet_of(&mut st, domain)?;
        let n = st.used.entry(k).or_insert(0);
        if *n >= 253 {
            bail!("--netns supports at most 253 nodes per domain");
        }
        *n += 1;
        let ip = self.net(k, *n);
        let ns = format!("{}-n{index}", self.tag);
        let hub = self.bridge_ns(&st, k);
        let port = format!("n{index}");
        run(&["netns", "add", &ns])?;
        let wired = (|| {
            run(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            run(&["-n", &hub, "link", "set", &port, "master", &format!("d{k}"), "up"])?;
            run(&["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
            run(&["-n", &ns, "link", "set", "eth0", "up"])?;
            run(&["-n", &ns, "link", "set", "lo", "up"])?;
            run(&["-n", &ns, "route", "add", "default", "via", &self.net(k, 254)])
        })();
        if let Err(e) = wired {
            let _ = run(&["netns", "del", &ns]);
            return Err(e);
        }
        let host = Host { netns: ns, ip };
        st.hosts.insert(index, host.clone());
        Ok(host)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Cuts `domain` off from every other domain: packets to and from its
    /// subnet are dropped by the hub (the control link stays up).
    pub fn cut(&self, domain: &str) -> anyhow::Result<()> {
        let mut st = self.state();
        let k = subnet_index(&st, domain)?;
        if st.cut.iter().any(|d| d == domain) {
            return Ok(());
        }
        // A domain behind NAT reaches the hub from its router's WAN subnet.
        let outer = if st.natted.contains(&k) { 128 + k } else { k };
        let net = format!("{}/24", self.net(outer, 0));
        let hub = self.hub();
        let (p_from, p_to) = (format!("{}", 100 + 2 * k), format!("{}", 101 + 2 * k));
        run(&[
            "-n",
            &hub,
            "rule",
            "add",
            "from",
            &net,
            "blackhole",
            "priority",
            &p_from,
        ])?;
        run(&[
            "-n",
            &hub,
            "rule",
            "add",
            "to",
            &net,
            "blackhole",
            "priority",
            &p_to,
        ])?;
        st.cut.push(domain.to_owned());
        Ok(())
    }

    /// Undoes [`Lab::cut`].
    pub fn heal(&self, domain: &str) -> anyhow::Result<()> {
        let mut st = self.state();
        let k = subnet_index(&st, domain)?;
        if !st.cut.iter().any(|d| d == domain) {
            return Ok(());
        }
        let hub = self.hub();
        run(&["-n", &hub, "rule", "del", "priority", &format!("{}", 100 + 2 * k)])?;
        run(&["-n", &hub, "rule", "del", "priority", &format!("{}", 101 + 2 * k)])?;
        st.cut.retain(|d| d != domain);
        Ok(())
    }

    /// A command that runs `program` inside node `host`'s namespace.
    pub fn command(&self, host: &Host, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &host.netns]).arg(program);
        c
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.forwarder.take();
        let st = self.state();
        for h in st.hosts.values() {
            let _ = run(&["netns", "del", &h.netns]);
        }
        for k in &st.natted {
            let _ = run(&["netns", "del", &self.router(*k)]);
        }
        let _ = run(&["netns", "del", &self.hub()]);
        let _ = run(&["link", "del", &self.root_veth()]);
    }
}

/// The subnet number of a domain already in use.
fn subnet_index(st: &State, domain: &str) -> anyhow::Result<usize> {
    match st.domains.iter().position(|d| d == domain) {
        Some(i) => Ok(i + 1),
        None => bail!("no node runs in domain {domain}"),
    }
}

fn sysctl(ns: &str, setting: &str) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sysctl", "-qw", setting])
        .output()
        .context("cannot run sysctl")?;
    if !out.status.success() {
        bail!(
            "sysctl {setting} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Loads an nftables ruleset into namespace `ns`.
fn nft(ns: &str, rules: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot run nft")?;
    child
        .stdin
        .take()
        .context("nft's stdin")?
        .write_all(rules.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Whether the `nft` tool is installed.
pub fn nft_available() -> bool {
    Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Whether this machine can run `--netns` (root, iproute2, namespaces).
pub fn available() -> bool {
    is_root()
        && Command::new("ip")
            .args(["netns", "list"])
            .output()
            .is_ok_and(|o| o.status.success())
}

/// A second octet for 10.B.0.0/16 that nothing in the root namespace uses.
fn free_octet() -> anyhow::Result<u8> {
    let used = format!("{}\n{}", run(&["-4", "addr"])?, run(&["-4", "route"])?);
    let start = (std::process::id() % 100) as u8;
    for i in 0..100u8 {
        let b = 100 + (start + i) % 100;
        if !used.contains(&format!("10.{b}.")) {
            return Ok(b);
        }
    }
    bail!("no free 10.B.0.0/16 range for --netns (10.100–10.199 all in use)")
}
