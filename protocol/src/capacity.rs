//! Capacity messages: what a node can give, and what a domain holds.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::Domain;
use crate::envelope::{Payload, PayloadType};
use crate::id::NodeId;
use crate::limits::{
    MAX_ADDR_LEN, MAX_ADDRS, MAX_CHILDREN, MAX_CONTACTS, MAX_LABEL_KEY, MAX_LABEL_VALUE, MAX_LABELS,
    MAX_VERSION_LEN,
};
use crate::units::{Bytes, ComputeUnits, EnergyRate, Fuel, Millis, Price, Timestamp};
use crate::wire::{Decode, DecodeError, Encode, Limited, Reader, Writer};
use crate::wire_struct;

/// A multiaddr in text form (`/ip4/127.0.0.1/tcp/4001`), at most
/// [`MAX_ADDR_LEN`] bytes. Kept as text so that this crate needs no
/// multiaddr parser; the node parses it before dialling.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Addr(pub String);

impl Encode for Addr {
    fn encode(&self, w: &mut Writer) {
        self.0.encode(w)
    }
}
impl Decode for Addr {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Addr(String::decode_limited(r, MAX_ADDR_LEN, "addr")?))
    }
}

/// A `key=value` fact about a provider that jobs may select on
/// (`--select arch=x86_64`): `arch` and `os` set by the node itself, others
/// by its owner. A key is 1 to 32 bytes of `a-z`, `0-9`, `.`, `_` and `-`;
/// a value at most 64 bytes of UTF-8 without control characters. Both are
/// the provider's word, like the rest of its advert.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Label {
    /// The key, e.g. `arch`.
    pub key: String,
    /// The value, e.g. `x86_64`.
    pub value: String,
}

impl Label {
    /// A label, if `key` and `value` are well formed.
    pub fn new(key: &str, value: &str) -> Result<Label, String> {
        let key_ok = !key.is_empty()
            && key.len() <= MAX_LABEL_KEY
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if !key_ok {
            return Err(format!(
                "label key `{key}` must be 1 to {MAX_LABEL_KEY} bytes of a-z, 0-9, `.`, `_` and `-`"
            ));
        }
        if value.len() > MAX_LABEL_VALUE || value.chars().any(char::is_control) {
            return Err(format!(
                "label value `{}` must be at most {MAX_LABEL_VALUE} bytes without control characters",
                value.escape_default()
            ));
        }
        Ok(Label {
            key: key.to_owned(),
            value: value.to_owned(),
        })
    }
}

impl std::str::FromStr for Label {
    type Err = String;

    /// `key=value`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}` is not a label: write it as key=value, e.g. arch=x86_64"))?;
        Label::new(k.trim(), v.trim())
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

impl Encode for Label {
    fn encode(&self, w: &mut Writer) {
        self.key.encode(w);
        self.value.encode(w);
    }
}

impl Decode for Label {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let key = String::decode_limited(r, MAX_LABEL_KEY, "label key")?;
        let value = String::decode_limited(r, MAX_LABEL_VALUE, "label value")?;
        Label::new(&key, &value).map_err(|e| DecodeError::invalid("label", e))
    }
}

/// A signed statement of a node's measured capacity, published on its
/// domain's advert topic every few seconds and whenever its free capacity
/// changes materially.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advert {
    /// Strictly increasing per node; a view keeps only the highest. The
    /// advert's issue time in milliseconds is a good choice.
    pub seq: u64,
    /// The node's domain.
    pub domain: Domain,
    /// Capacity measured by the calibration kernel, scaled by the owner's
    /// CPU share.
    pub cu: ComputeUnits,
    /// When the capacity was last measured.
    pub calibrated_at: Timestamp,
    /// Memory available to a single task.
    pub memory: Bytes,
    /// Task slots (tasks that run at once).
    pub slots: u32,
    /// Slots free now.
    pub free_slots: u32,
    /// Tasks queued or running.
    pub queued: u32,
    /// Machine load from all processes, in permille of the machine's cores
    /// (1000 = every core busy).
    pub load: u32,
    /// Whether the node takes new tasks (false while the owner's idle policy
    /// holds it back).
    pub accepting: bool,
    /// Asking price.
    pub price: Price,
    /// Declared energy cost.
    pub energy: EnergyRate,
    /// Software version, e.g. `agora/0.1.0`.
    pub version: String,
    /// Addresses the node listens on.
    pub addrs: Vec<Addr>,
    /// The most fuel the owner lets one task use (its fuel limit).
    pub max_task_fuel: Fuel,
    /// The longest the owner lets one task run.
    pub max_task_time: Millis,
    /// The largest output the owner lets one task write.
    pub max_output: Bytes,
    /// What jobs may select it by, sorted by key, one value per key.
    pub labels: Vec<Label>,
}

wire_struct!(Advert {
    seq,
    domain,
    cu,
    calibrated_at,
    memory,
    slots,
    free_slots,
    queued,
    load,
    accepting,
    price,
    energy,
    version < MAX_VERSION_LEN,
    addrs < MAX_ADDRS,
    max_task_fuel,
    max_task_time,
    max_output,
    labels < MAX_LABELS,
});

impl Payload for Advert {
    const TYPE: PayloadType = PayloadType::Advert;
    const DOMAIN: &'static str = "agora/1/capacity/advert";
    const MAX_LIFETIME: Duration = Duration::from_secs(60);
}

/// Aggregate figures of a domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainStats {
    /// Nodes with a fresh advert.
    pub nodes: u32,
    /// Sum of their capacity.
    pub total_cu: ComputeUnits,
    /// Capacity of their free slots (`cu × free_slots / slots`, summed).
    pub free_cu: ComputeUnits,
    /// Sum of free slots.
    pub free_slots: u32,
    /// Lowest asking price.
    pub price_min: Price,
    /// Highest asking price.
    pub price_max: Price,
    /// Lowest round-trip time from the summarising node to a member.
    pub best_rtt: Millis,
}

wire_struct!(DomainStats {
    nodes,
    total_cu,
    free_cu,
    free_slots,
    price_min,
    price_max,
    best_rtt,
});

impl DomainStats {
    /// Folds another domain's figures into these.
    pub fn merge(&mut self, o: &DomainStats) {
        if o.nodes == 0 {
            return;
        }
        if self.nodes == 0 {
            *self = o.clone();
            return;
        }
        self.nodes = self.nodes.saturating_add(o.nodes);
        self.total_cu.0 = self.total_cu.0.saturating_add(o.total_cu.0);
        self.free_cu.0 = self.free_cu.0.saturating_add(o.free_cu.0);
        self.free_slots = self.free_slots.saturating_add(o.free_slots);
        self.price_min = self.price_min.min(o.price_min);
        self.price_max = self.price_max.max(o.price_max);
        self.best_rtt = self.best_rtt.min(o.best_rtt);
    }
}

/// A node to contact in a domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// The node.
    pub node: NodeId,
    /// Where to dial it.
    pub addrs: Vec<Addr>,
}

wire_struct!(Contact { node, addrs < MAX_ADDRS });

/// A child domain's figures, carried inside its parent's summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildSummary {
    /// The child domain.
    pub domain: Domain,
    /// Its figures.
    pub stats: DomainStats,
}

wire_struct!(ChildSummary { domain, stats });

/// A signed summary of one domain, published on its parent's summary topic
/// (SPEC.md §6.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainSummary {
    /// The domain summarised.
    pub domain: Domain,
    /// When the summary was computed (milliseconds since the epoch); the
    /// freshest wins.
    pub seq: u64,
    /// Figures of the whole domain, sub-domains included.
    pub stats: DomainStats,
    /// Some of the domain's best nodes, so that a node outside can ask them
    /// for offers without a view of the domain.
    pub contacts: Vec<Contact>,
    /// The figures of each direct sub-domain.
    pub children: Vec<ChildSummary>,
}

wire_struct!(DomainSummary {
    domain,
    seq,
    stats,
    contacts < MAX_CONTACTS,
    children < MAX_CHILDREN,
});

impl Payload for DomainSummary {
    const TYPE: PayloadType = PayloadType::DomainSummary;
    const DOMAIN: &'static str = "agora/1/capacity/summary";
    const MAX_LIFETIME: Duration = Duration::from_secs(60);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_advert() -> Advert {
        Advert {
            seq: 1,
            domain: "eu/de".parse().unwrap(),
            cu: ComputeUnits(1200),
            calibrated_at: Timestamp(1),
            memory: Bytes::mib(256),
            slots: 2,
            free_slots: 2,
            queued: 0,
            load: 120,
            accepting: true,
            price: Price(1000),
            energy: EnergyRate(15),
            version: "agora/0.1.0".into(),
            addrs: vec![Addr("/ip4/127.0.0.1/tcp/4001".into())],
            max_task_fuel: Fuel(20_000_000_000_000),
            max_task_time: Millis(3_600_000),
            max_output: Bytes::mib(16),
            labels: vec![],
        }
    }

    #[test]
    fn stats_merge() {
        let a = DomainStats {
            nodes: 2,
            total_cu: ComputeUnits(100),
            free_cu: ComputeUnits(50),
            free_slots: 1,
            price_min: Price(5),
            price_max: Price(9),
            best_rtt: Millis(3),
        };
        let mut s = DomainStats::default();
        s.merge(&a);
        s.merge(&DomainStats {
            nodes: 1,
            price_min: Price(2),
            best_rtt: Millis(7),
            ..a.clone()
        });
        assert_eq!(s.nodes, 3);
        assert_eq!(s.total_cu, ComputeUnits(200));
        assert_eq!(s.price_min, Price(2));
        assert_eq!(s.best_rtt, Millis(3));
    }
}
