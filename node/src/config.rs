//! Node configuration: a TOML file whose every field has a default, with
//! command-line flags on top. [`DEFAULT_CONFIG`] is the documented file;
//! a test checks that it parses to [`Config::default`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_protocol::units::{Bytes, Credits, EnergyRate, Price};
use agora_protocol::{Domain, NodeId};
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

/// The default configuration, documented. `agora node --print-config`
/// prints it.
pub const DEFAULT_CONFIG: &str = r#"# Agora node configuration. Every field shows its default; delete what you
# do not change. Command-line flags override this file.

# Hierarchical domain of this node, outermost first (e.g. "eu/de/berlin").
domain = "local"
# Addresses to listen on (TCP and QUIC; port 0 picks a free port).
listen = ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"]
# Peers to dial at start.
bootstrap = []
# Addresses others can dial this node at, when the owner knows them (a
# public address, a forwarded port): used without waiting for AutoNAT.
external = []
# Local HTTP API (JSON, bearer token). Keep it on loopback.
api = "127.0.0.1:0"
# Discover peers on the local network with mDNS.
mdns = false

[provider]
# Offer this machine's capacity to others.
enabled = true
# Asking price, in credits per CU-second (one million fuel).
price = "0.001"
# Tasks run at once (0: one per available core).
slots = 0
# Share of a core each running task may use, 0 < share <= 1.
cpu_share = 1.0
# Memory a single task may use.
memory = "256MiB"
# Energy cost in millijoules per CU-second, for machines whose CPU energy
# counters (RAPL, /sys/class/powercap) cannot be read: where they can, the
# node measures it during calibration and this is not used. 0: unknown
# (jobs with an energy budget then pass this node over).
energy = 0
# Largest module or input accepted.
max_content = "16MiB"
# The most fuel one task may use (its fuel limit); calls for more are
# declined. 20 trillion is about an hour of a fast core.
max_task_fuel = 20000000000000
# The longest one task may run; a run is cut there (and no requester pays
# for a run cut short).
max_task_time = "1h"
# The largest output one task may write.
max_output = "16MiB"
# The most disk stored content (modules, inputs, outputs) may take. Beyond
# it, content nothing needs goes first, least recently used; if what is
# needed alone exceeds it, the node takes no new work.
max_disk = "10GiB"
# Content nothing needs any more (another node's module or input, an
# output already delivered) is removed after this long unused.
content_retention = "1h"
# What jobs may select this provider by (`agora job submit --select
# key=value`), e.g. { zone = "rack-3", gpu = "none" }, besides `arch` and
# `os`, which the node sets itself. Keys: a-z, 0-9, `.`, `_`, `-`.
labels = {}

[provider.idle]
# Take work only while the machine's own load (other processes) is low.
enabled = true
# Stop taking work above this share of all cores busy with other processes.
busy_above = 0.5
# Resume below this share.
resume_below = 0.3
# How often to sample the load.
interval = "5s"

[provider.limits]
# While one of these holds, the node takes no work and suspends its running
# tasks where they are; they go on when it clears (`agora owner` shows which
# holds). Each is off unless set. Change them live with `agora owner set`.
# hours = "22:00-07:00"     # work only in this window of local time
# weekdays = "mon-fri"      # work only on these days
# stop_on_battery = true    # not while the machine runs on battery
# min_battery = 30          # not below this battery percentage
# max_temp = 85             # not above this temperature (°C, hottest zone)
# max_cpu = 1.5             # all tasks together use at most this many cores
# max_upload = "10mbit"     # serve content to other nodes at most this fast
stop_on_battery = false
# Where thermal zones and power supplies are read (a fake tree for tests).
sysfs = "/sys"
# How often they are read.
interval = "1s"

[adverts]
# How often the node publishes its capacity advert.
interval = "2s"
# How long an advert stays valid; the node drops out of views after this.
lifetime = "10s"
# How often domain summaries are published (by the elected members).
summary_interval = "3s"
# Members of a domain that publish its summary each election term.
summary_publishers = 2
# How long one election of those publishers holds (a publisher that leaves
# is replaced as soon as its advert expires, whatever the term).
election_term = "10m"

[calibration]
# How long one calibration run lasts.
budget = "300ms"
# How often capacity is measured again (while idle).
interval = "10m"

[requester]
# Providers asked for offers per placement.
fanout = 3
# How long to wait for offers and agreements.
negotiation_timeout = "3s"
# How long a job waits while no provider can take its tasks (none fits,
# or every one that does declined for a lasting reason) before it fails;
# `agora job submit --ttl` sets it per job.
unplaceable_after = "1h"
# Start backup copies of straggling tasks on idle providers.
backups = true
# How long a job's module, inputs and outputs are kept after it ends.
keep_results = "168h"

[credit]
# Peer ids of the issuers whose signed grants create credits. Nothing else
# does: a node starts at zero and earns by verified work or by a grant.
issuers = []
# Credit this node extends to any requester beyond its audited balance.
line = "0.1"
# Extra credit per credit a requester has already paid this node.
line_per_paid = 0.1
# Receipts a requester may leave unpaid past pay_within; beyond, it is
# refused until it pays.
max_unpaid = 3
# How long after a receipt is delivered it must be paid.
pay_within = "60s"
# Requesters (peer ids) this node never works for.
deny_requesters = []
# When not empty, the only requesters this node works for.
allow_requesters = []
# Blocks of this node's credit chain between two checkpoints (signed
# summaries its auditors attest, so that an audit need not start at block
# 1); 0 for none.
checkpoint_every = 1024
# Auditors (peer ids) whose attestation of another chain's checkpoint this
# node takes as its own, besides the issuers and itself: its audit of that
# chain may start there.
auditors = []

[relay]
# Relay connections for nodes behind NAT (circuit relay v2), within the
# limits below. Only a node others can dial is any use as a relay.
server = true
# Reservations held at once, and per peer.
max_reservations = 128
max_reservations_per_peer = 4
# How long a reservation lasts before the client must renew it.
reservation_duration = "1h"
# Relayed connections at once, and per peer.
max_circuits = 64
max_circuits_per_peer = 8
# A relayed connection is cut after this long or this many bytes (each
# way); the peers are expected to move to a direct connection.
max_circuit_duration = "10m"
max_circuit_bytes = "64MiB"
# Relays to reserve a slot on and listen through (multiaddrs ending in
# /p2p/<id>). Empty: once AutoNAT finds this node unreachable from
# outside, it reserves on up to two connected peers that serve as relays.
relays = []
# Upgrade relayed connections to direct ones by hole punching (DCUtR).
hole_punching = true
"#;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The node's domain.
    #[serde(with = "text")]
    pub domain: Domain,
    /// Listen addresses.
    #[serde(with = "text_vec")]
    pub listen: Vec<Multiaddr>,
    /// Bootstrap peers.
    #[serde(with = "text_vec")]
    pub bootstrap: Vec<Multiaddr>,
    /// Addresses known to reach this node from outside.
    #[serde(with = "text_vec")]
    pub external: Vec<Multiaddr>,
    /// API address.
    pub api: SocketAddr,
    /// mDNS.
    pub mdns: bool,
    /// Provider settings.
    pub provider: Provider,
    /// Advert settings.
    pub adverts: Adverts,
    /// Calibration settings.
    pub calibration: Calibration,
    /// Requester settings.
    pub requester: Requester,
    /// Credit settings.
    pub credit: Credit,
    /// Relay settings.
    pub relay: Relay,
}

/// `[relay]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Relay {
    /// Serve as a relay.
    pub server: bool,
    /// Reservations held at once.
    pub max_reservations: usize,
    /// Reservations per peer.
    pub max_reservations_per_peer: usize,
    /// Reservation lifetime.
    #[serde(with = "duration")]
    pub reservation_duration: Duration,
    /// Circuits at once.
    pub max_circuits: usize,
    /// Circuits per peer.
    pub max_circuits_per_peer: usize,
    /// Longest circuit.
    #[serde(with = "duration")]
    pub max_circuit_duration: Duration,
    /// Most bytes per circuit.
    #[serde(with = "text")]
    pub max_circuit_bytes: Bytes,
    /// Relays to reserve on.
    #[serde(with = "text_vec")]
    pub relays: Vec<Multiaddr>,
    /// Upgrade relayed connections to direct ones by hole punching
    /// (DCUtR). Off, a peer behind NAT stays reachable through its relay
    /// only: every byte to it takes two hops.
    pub hole_punching: bool,
}

impl Relay {
    /// The relay server's limits.
    pub fn limits(&self) -> crate::network::RelayLimits {
        crate::network::RelayLimits {
            max_reservations: self.max_reservations,
            max_reservations_per_peer: self.max_reservations_per_peer,
            reservation_duration: self.reservation_duration,
            max_circuits: self.max_circuits,
            max_circuits_per_peer: self.max_circuits_per_peer,
            max_circuit_duration: self.max_circuit_duration,
            max_circuit_bytes: self.max_circuit_bytes.0,
        }
    }
}

impl Default for Relay {
    /// The network's default limits (one place says what they are).
    fn default() -> Self {
        let l = crate::network::RelayLimits::default();
        Relay {
            server: true,
            max_reservations: l.max_reservations,
            max_reservations_per_peer: l.max_reservations_per_peer,
            reservation_duration: l.reservation_duration,
            max_circuits: l.max_circuits,
            max_circuits_per_peer: l.max_circuits_per_peer,
            max_circuit_duration: l.max_circuit_duration,
            max_circuit_bytes: Bytes(l.max_circuit_bytes),
            relays: vec![],
            hole_punching: true,
        }
    }
}

/// `[credit]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Credit {
    /// Keys whose grants create credits.
    #[serde(with = "text_vec")]
    pub issuers: Vec<NodeId>,
    /// Credit extended to any requester.
    #[serde(with = "text")]
    pub line: Credits,
    /// Extra credit per credit paid here.
    pub line_per_paid: f64,
    /// Receipts a requester may leave unpaid past `pay_within`.
    pub max_unpaid: usize,
    /// How long a delivered receipt may wait for payment.
    #[serde(with = "duration")]
    pub pay_within: Duration,
    /// Requesters never worked for.
    #[serde(with = "text_vec")]
    pub deny_requesters: Vec<NodeId>,
    /// When not empty, the only requesters worked for.
    #[serde(with = "text_vec")]
    pub allow_requesters: Vec<NodeId>,
    /// Blocks of the node's chain between two checkpoints (0: none).
    pub checkpoint_every: u64,
    /// Auditors whose checkpoint attestations this node trusts.
    #[serde(with = "text_vec")]
    pub auditors: Vec<NodeId>,
}

impl Default for Credit {
    fn default() -> Self {
        Credit {
            issuers: Vec::new(),
            line: Credits(100_000),
            line_per_paid: 0.1,
            max_unpaid: 3,
            pay_within: Duration::from_secs(60),
            deny_requesters: Vec::new(),
            allow_requesters: Vec::new(),
            checkpoint_every: 1024,
            auditors: Vec::new(),
        }
    }
}

impl Credit {
    /// The market's credit settings.
    pub fn to_market(&self) -> agora_market::credit::Config {
        agora_market::credit::Config {
            issuers: self.issuers.iter().copied().collect(),
            auditors: self.auditors.iter().copied().collect(),
            line: self.line,
            line_per_paid: self.line_per_paid,
            max_unpaid: self.max_unpaid,
            pay_within: self.pay_within,
            deny: self.deny_requesters.iter().copied().collect(),
            allow: self.allow_requesters.iter().copied().collect(),
            ..agora_market::credit::Config::default()
        }
    }
}

/// `[provider]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Provider {
    /// Offer capacity.
    pub enabled: bool,
    /// Asking price.
    #[serde(with = "text")]
    pub price: Price,
    /// Slots (0 = cores).
    pub slots: u32,
    /// CPU share per task.
    pub cpu_share: f64,
    /// Memory per task.
    #[serde(with = "text")]
    pub memory: Bytes,
    /// Energy cost.
    pub energy: u64,
    /// Largest module or input.
    #[serde(with = "text")]
    pub max_content: Bytes,
    /// Most fuel per task.
    pub max_task_fuel: u64,
    /// Longest run per task.
    #[serde(with = "duration")]
    pub max_task_time: Duration,
    /// Largest output per task.
    #[serde(with = "text")]
    pub max_output: Bytes,
    /// Most bytes of stored content.
    #[serde(with = "text")]
    pub max_disk: Bytes,
    /// Unused content kept this long.
    #[serde(with = "duration")]
    pub content_retention: Duration,
    /// The owner's labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Idle policy.
    pub idle: Idle,
    /// The owner's limits.
    pub limits: Limits,
}

impl Provider {
    /// The labels advertised: `arch` and `os` of this machine, then the
    /// owner's, sorted by key.
    pub fn labels(&self) -> Vec<agora_protocol::capacity::Label> {
        let mut all: std::collections::BTreeMap<&str, &str> = self
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        all.insert("arch", std::env::consts::ARCH);
        all.insert("os", std::env::consts::OS);
        all.into_iter()
            .filter_map(|(k, v)| agora_protocol::capacity::Label::new(k, v).ok())
            .collect()
    }
}

/// `[provider.idle]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Idle {
    /// On or off.
    pub enabled: bool,
    /// Stop above this load share.
    pub busy_above: f64,
    /// Resume below this load share.
    pub resume_below: f64,
    /// Sampling interval.
    #[serde(with = "duration")]
    pub interval: Duration,
}

/// `[provider.limits]`: when the machine is not the network's to use
/// (`agora_market::limits`). While one holds, the node takes no work and
/// suspends its running tasks in place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Work only inside this daily window of local time (`22:00-07:00`).
    pub hours: Option<agora_market::limits::Hours>,
    /// Work only on these days (`mon-fri`).
    pub weekdays: Option<agora_market::limits::Weekdays>,
    /// Hold while on battery.
    pub stop_on_battery: bool,
    /// Hold below this battery percentage.
    pub min_battery: Option<u8>,
    /// Hold above this temperature (°C, hottest thermal zone).
    pub max_temp: Option<f64>,
    /// Cores all tasks together may use (besides `cpu_share` per task).
    pub max_cpu: Option<f64>,
    /// Serve content to other nodes at most this fast (`10mbit`).
    pub max_upload: Option<agora_market::limits::Rate>,
    /// Where the thermal zones and power supplies are read.
    pub sysfs: PathBuf,
    /// How often they are read.
    #[serde(with = "duration")]
    pub interval: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            hours: None,
            weekdays: None,
            stop_on_battery: false,
            min_battery: None,
            max_temp: None,
            max_cpu: None,
            max_upload: None,
            sysfs: PathBuf::from("/sys"),
            interval: Duration::from_secs(1),
        }
    }
}

impl Limits {
    /// The limits proper, as the policy takes them.
    pub fn owner(&self) -> agora_market::limits::OwnerLimits {
        agora_market::limits::OwnerLimits {
            hours: self.hours,
            weekdays: self.weekdays,
            stop_on_battery: self.stop_on_battery,
            min_battery: self.min_battery,
            max_temp: self.max_temp,
            cpu_share: None,
            max_cpu: self.max_cpu,
            max_upload: self.max_upload,
        }
    }
}

/// `[adverts]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Adverts {
    /// Publication interval.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Advert lifetime.
    #[serde(with = "duration")]
    pub lifetime: Duration,
    /// Summary interval.
    #[serde(with = "duration")]
    pub summary_interval: Duration,
    /// Summary publishers per domain.
    pub summary_publishers: usize,
    /// How long one election of summary publishers holds.
    #[serde(with = "duration")]
    pub election_term: Duration,
}

/// `[calibration]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Calibration {
    /// Run length.
    #[serde(with = "duration")]
    pub budget: Duration,
    /// Re-measure interval.
    #[serde(with = "duration")]
    pub interval: Duration,
}

/// `[requester]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Requester {
    /// Fan-out.
    pub fanout: usize,
    /// Negotiation timeout.
    #[serde(with = "duration")]
    pub negotiation_timeout: Duration,
    /// Unplaceable timeout.
    #[serde(with = "duration")]
    pub unplaceable_after: Duration,
    /// Backups.
    pub backups: bool,
    /// How long an ended job's content is kept.
    #[serde(with = "duration")]
    pub keep_results: Duration,
}

fn addr(s: &str) -> Multiaddr {
    s.parse().expect("valid built-in multiaddr")
}

impl Default for Config {
    fn default() -> Self {
        Config {
            domain: "local".parse().expect("valid domain"),
            listen: vec![addr("/ip4/0.0.0.0/tcp/0"), addr("/ip4/0.0.0.0/udp/0/quic-v1")],
            bootstrap: vec![],
            external: vec![],
            api: SocketAddr::from(([127, 0, 0, 1], 0)),
            mdns: false,
            provider: Provider::default(),
            adverts: Adverts::default(),
            calibration: Calibration::default(),
            requester: Requester::default(),
            credit: Credit::default(),
            relay: Relay::default(),
        }
    }
}

impl Default for Provider {
    fn default() -> Self {
        Provider {
            enabled: true,
            price: Price(1_000),
            slots: 0,
            cpu_share: 1.0,
            memory: Bytes::mib(256),
            energy: 0,
            max_content: Bytes::mib(16),
            max_task_fuel: agora_market::provider::DEFAULT_MAX_TASK_FUEL.0,
            max_task_time: agora_market::provider::DEFAULT_MAX_TASK_TIME,
            max_output: agora_market::job::DEFAULT_MAX_OUTPUT,
            max_disk: Bytes::gib(10),
            content_retention: Duration::from_secs(3600),
            labels: std::collections::BTreeMap::new(),
            idle: Idle::default(),
            limits: Limits::default(),
        }
    }
}

impl Default for Idle {
    fn default() -> Self {
        Idle {
            enabled: true,
            busy_above: 0.5,
            resume_below: 0.3,
            interval: Duration::from_secs(5),
        }
    }
}

impl Default for Adverts {
    fn default() -> Self {
        Adverts {
            interval: Duration::from_secs(2),
            lifetime: Duration::from_secs(10),
            summary_interval: Duration::from_secs(3),
            summary_publishers: 2,
            election_term: Duration::from_secs(600),
        }
    }
}

impl Default for Calibration {
    fn default() -> Self {
        Calibration {
            budget: Duration::from_millis(300),
            interval: Duration::from_secs(600),
        }
    }
}

impl Default for Requester {
    fn default() -> Self {
        Requester {
            fanout: 3,
            negotiation_timeout: Duration::from_secs(3),
            unplaceable_after: Duration::from_secs(3600),
            backups: true,
            keep_results: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML file; missing fields take their defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<text>".into(),
            message: e.to_string(),
        })?;
        c.validate()?;
        Ok(c)
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.provider;
        p.limits
            .owner()
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("provider.limits: {e}")))?;
        if p.limits.interval.is_zero() {
            return Err(ConfigError::Invalid(
                "provider.limits.interval must be positive".into(),
            ));
        }
        if p.labels.len() + 2 > agora_protocol::limits::MAX_LABELS {
            return Err(ConfigError::Invalid(format!(
                "provider.labels: at most {} (besides arch and os)",
                agora_protocol::limits::MAX_LABELS - 2
            )));
        }
        for (k, v) in &p.labels {
            if k == "arch" || k == "os" {
                return Err(ConfigError::Invalid(format!(
                    "provider.labels: `{k}` is set by the node itself"
                )));
            }
            agora_protocol::capacity::Label::new(k, v)
                .map_err(|e| ConfigError::Invalid(format!("provider.labels: {e}")))?;
        }
        if !(p.cpu_share > 0.0 && p.cpu_share <= 1.0) {
            return Err(ConfigError::Invalid(format!(
                "provider.cpu_share must be in (0, 1], not {}",
                p.cpu_share
            )));
        }
        if !(0.0..=1.0).contains(&p.idle.busy_above) || !(0.0..=1.0).contains(&p.idle.resume_below) {
            return Err(ConfigError::Invalid(
                "provider.idle thresholds must be in [0, 1]".into(),
            ));
        }
        if p.idle.resume_below > p.idle.busy_above {
            return Err(ConfigError::Invalid(
                "provider.idle.resume_below must not exceed busy_above".into(),
            ));
        }
        if p.max_task_fuel == 0 || p.max_task_time.is_zero() {
            return Err(ConfigError::Invalid(
                "provider.max_task_fuel and provider.max_task_time must be positive".into(),
            ));
        }
        if self.adverts.lifetime <= self.adverts.interval {
            return Err(ConfigError::Invalid(
                "adverts.lifetime must be longer than adverts.interval".into(),
            ));
        }
        if !(self.credit.line_per_paid.is_finite() && self.credit.line_per_paid >= 0.0) {
            return Err(ConfigError::Invalid(format!(
                "credit.line_per_paid must be a number >= 0, not {}",
                self.credit.line_per_paid
            )));
        }
        if self.adverts.lifetime > Duration::from_secs(60) {
            return Err(ConfigError::Invalid("adverts.lifetime may not exceed 60s".into()));
        }
        Ok(())
    }

    /// The provider's energy rate.
    pub fn energy(&self) -> EnergyRate {
        EnergyRate(self.provider.energy)
    }
}

mod text {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }
    pub(super) fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

mod text_vec {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<T: Display, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| x.to_string()))
    }
    pub(super) fn deserialize<'de, T, D>(d: D) -> Result<Vec<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let v = Vec::<String>::deserialize(d)?;
        v.iter()
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .collect()
    }
}

mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", v.as_millis()))
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        agora_protocol::units::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_defaults_are_the_defaults() {
        assert_eq!(Config::parse(DEFAULT_CONFIG).unwrap(), Config::default());
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn bad_values_are_reported_clearly() {
        let e = Config::parse("[provider]\ncpu_share = 1.5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cpu_share"), "{e}");
        let e = Config::parse("domain = \"EU\"\n").unwrap_err().to_string();
        assert!(e.contains("domain"), "{e}");
        let e = Config::parse("nonsense = 1\n").unwrap_err().to_string();
        assert!(e.contains("nonsense"), "{e}");
        let e = Config::parse("[provider]\nmemory = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("size"), "{e}");
    }

    #[test]
    fn owner_labels_join_the_machines_own_and_bad_ones_are_refused() {
        let c = Config::parse("[provider]\nlabels = { zone = \"rack-3\", gpu = \"none\" }\n").unwrap();
        let labels: Vec<String> = c.provider.labels().iter().map(ToString::to_string).collect();
        assert_eq!(
            labels,
            [
                format!("arch={}", std::env::consts::ARCH),
                "gpu=none".to_owned(),
                format!("os={}", std::env::consts::OS),
                "zone=rack-3".to_owned(),
            ]
        );
        let e = Config::parse("[provider]\nlabels = { arch = \"sparc\" }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("set by the node itself"), "{e}");
        let e = Config::parse("[provider]\nlabels = { \"Zone\" = \"a\" }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a-z, 0-9"), "{e}");
    }

    #[test]
    fn fields_override() {
        let c = Config::parse("domain = \"eu/de\"\n[provider]\nslots = 4\nprice = \"0.5\"\n").unwrap();
        assert_eq!(c.domain.to_string(), "eu/de");
        assert_eq!(c.provider.slots, 4);
        assert_eq!(c.provider.price, Price(500_000));
    }
}
