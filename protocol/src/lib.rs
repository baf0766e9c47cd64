//! # agora-protocol
//!
//! The Agora wire protocol, and nothing else: no I/O, no async runtime, no
//! network stack, no storage. Every other part of Agora depends on this crate;
//! a compatible node in another language implements what is here, as SPEC.md
//! describes it.
//!
//! How the parts connect:
//!
//! * [`identity`] and [`id`]: a node's ed25519 [`identity::Keypair`] is also its
//!   libp2p identity; its public key is its [`NodeId`]. Content is named by
//!   blake3 ([`ContentId`]); signed messages by the hash of their envelope
//!   ([`MessageId`]).
//! * [`units`]: fuel, compute units (the unified capacity measure), credits,
//!   prices and energy, with their conversions.
//! * [`wire`]: the deterministic binary encoding, with every length checked
//!   against a limit from [`limits`] before allocation.
//! * [`envelope`]: domain-separated ed25519 signatures over a payload type, an
//!   issue time, an expiry and a nonce; [`envelope::ReplayGuard`] enforces the
//!   replay rule.
//! * The messages, by concern: [`capacity`] (adverts, domain summaries),
//!   [`market`] (calls for offers, offers, accepts with task assignments,
//!   agreements, cancels), [`execution`] (receipts), [`settlement`]
//!   (vouchers: what a payment pays for), [`chain`] (credit chains: grants,
//!   the blocks that record payments, fork proofs, heads), [`fraud`] (fraud
//!   proofs), and [`rpc`], the request-response frames that carry them.
//! * [`dataset`]: published sets of files, and the DHT key under which
//!   holders of a piece of content announce it.
//! * [`domain`]: hierarchical domains and the gossip topics and DHT keys
//!   derived from them.

#![deny(missing_docs)]

pub mod capacity;
pub mod chain;
pub mod dataset;
pub mod domain;
pub mod envelope;
pub mod execution;
pub mod fraud;
pub mod id;
pub mod identity;
pub mod limits;
pub mod market;
pub mod rpc;
pub mod settlement;
pub mod units;
pub mod wire;

#[cfg(test)]
mod proptests;

pub use domain::Domain;
pub use envelope::{Envelope, OpenError, Payload, PayloadType, ReplayGuard, Verified};
pub use id::{ContentId, JobId, MessageId, NodeId, Nonce, TaskId};
pub use identity::Keypair;
pub use wire::{Decode, DecodeError, Encode};

/// Prefix of every gossip topic and DHT key of this protocol version.
pub const TOPIC_PREFIX: &str = "agora/1";
/// The gossip topic on which fraud proofs travel.
pub const FRAUD_TOPIC: &str = "agora/1/fraud";
/// The gossip topic of chain heads (fork detection, SPEC.md §8.6).
pub const HEADS_TOPIC: &str = "agora/1/heads";
/// The Kademlia protocol id (Agora's own DHT, apart from the public IPFS one).
pub const KAD_PROTOCOL: &str = "/agora/kad/1.0.0";
/// The identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/agora/1.0.0";
/// This implementation's software version as adverts carry it.
pub const SOFTWARE_VERSION: &str = concat!("agora/", env!("CARGO_PKG_VERSION"));
