//! One simulated node: its engine, its disk, and the reply channels of the
//! requests it is answering.

use std::collections::HashMap;
use std::time::Duration;

use agora_protocol::units::{ComputeUnits, Price, Timestamp};
use agora_protocol::{ContentId, JobId, Keypair, MessageId, NodeId, TaskId};

use super::disk::Disk;
use crate::engine::{Adverts, Config, Engine, Ran, ReplyId, RequestId, Setup};
use crate::provider;

/// The result of work, reported to the engine when it is due.
#[derive(Debug, Clone)]
pub(super) enum Done {
    Executed(MessageId, Result<Ran, String>),
    Stored(u64),
    Fetched(TaskId, u16),
    SpotChecked(TaskId, u16, Result<Ran, String>),
    Reduced(JobId),
    FraudChecked(MessageId, Result<Ran, String>),
    Probed(NodeId, bool),
}

/// Where the answer to an inbound request goes.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReplyTo {
    pub(super) from: usize,
    pub(super) from_epoch: u64,
    pub(super) id: RequestId,
    /// The request is a receipt.
    pub(super) receipt: bool,
}

pub(super) struct SimNode {
    pub(super) id: NodeId,
    keypair: Keypair,
    pub(super) engine: Engine,
    pub(super) disk: Disk,
    /// Content bytes this node can attach (the requester's module and inputs).
    pub(super) blobs: HashMap<ContentId, Vec<u8>>,
    pub(super) replies: HashMap<ReplyId, ReplyTo>,
    next_reply: u64,
    pub(super) cheat: bool,
    pub(super) alive: bool,
    /// Bumped at each crash: what was addressed to an earlier life is lost.
    pub(super) epoch: u64,
    /// Per-slot speed, CU (0 for the requester).
    pub(super) cu: u64,
    /// When its engine ticks next (virtual ms): soon while it has work
    /// under way, a [`crate::engine::QUIET_TICK`] later while quiet, as a
    /// node's driver does.
    pub(super) next_tick: u64,
    provider: Option<(u64, u32)>,
    seed: u64,
}

/// Credits the simulation's issuer grants the requester, in micro-credits.
pub(super) const GRANT: u64 = 1_000_000_000_000;

/// The simulation's issuer.
pub(super) fn issuer() -> Keypair {
    Keypair::from_secret([0x15; 32])
}

fn config(provider: Option<(u64, u32)>) -> Config {
    let mut c = Config {
        domain: "sim".parse().expect("a valid domain"),
        adverts: Adverts {
            interval: Duration::from_secs(2),
            ..Adverts::default()
        },
        version: "sim".into(),
        ..Config::default()
    };
    c.credit.issuers = [issuer().node_id()].into();
    // Checkpoints every few blocks: each run's chains take several, under
    // the same drops, duplicates and crashes as every other message.
    c.checkpoint_every = 2;
    c.provider = provider::Config {
        enabled: provider.is_some(),
        slots: provider.map_or(1, |(_, s)| s),
        price: Price(1_000),
        ..provider::Config::default()
    };
    c
}

pub(crate) fn engine(
    keypair: &Keypair,
    provider: Option<(u64, u32)>,
    seed: u64,
    now: u64,
    disk: &Disk,
) -> Engine {
    engine_in(config(provider).domain, keypair, provider, seed, now, disk)
}

/// An engine as [`engine`] makes, in `domain`.
pub(crate) fn engine_in(
    domain: agora_protocol::Domain,
    keypair: &Keypair,
    provider: Option<(u64, u32)>,
    seed: u64,
    now: u64,
    disk: &Disk,
) -> Engine {
    let setup = Setup {
        keypair: keypair.clone(),
        config: Config {
            domain,
            ..config(provider)
        },
        seed,
        per_slot: ComputeUnits(provider.map_or(0, |(cu, _)| cu)),
        listen: vec![],
        now: Timestamp(now),
    };
    // The simulated disk never fails to read, and its records are the
    // engine's own.
    Engine::new(setup, disk.host()).expect("a simulated disk reads")
}

impl SimNode {
    /// A requester (`provider: None`) or a provider of per-slot `cu` with
    /// `slots`.
    pub(super) fn new(
        keypair: Keypair,
        provider: Option<(u64, u32)>,
        cheat: bool,
        seed: u64,
        now: u64,
    ) -> SimNode {
        let disk = Disk::default();
        SimNode {
            id: keypair.node_id(),
            engine: engine(&keypair, provider, seed, now, &disk),
            keypair,
            disk,
            blobs: HashMap::new(),
            replies: HashMap::new(),
            next_reply: 0,
            cheat,
            alive: true,
            epoch: 0,
            next_tick: 0,
            cu: provider.map_or(0, |(cu, _)| cu),
            provider,
            seed,
        }
    }

    /// Takes a grant from the simulation's issuer.
    pub(super) fn fund(&mut self, now: u64) {
        let grant = agora_protocol::chain::Grant {
            to: self.id,
            amount: agora_protocol::units::Credits(GRANT),
            id: [1; 16],
        };
        let env = agora_protocol::Envelope::seal(
            &issuer(),
            &grant,
            Timestamp(now),
            Duration::from_secs(3600),
            agora_protocol::Nonce([7; 16]),
        )
        .expect("a grant seals");
        self.engine
            .grant(&env, Timestamp(now))
            .expect("the simulation's issuer is trusted");
    }

    /// Keeps where the answer to a request goes.
    pub(super) fn reply_to(
        &mut self,
        from: usize,
        from_epoch: u64,
        id: RequestId,
        _sent: u64,
        receipt: bool,
    ) -> ReplyId {
        let r = ReplyId(self.next_reply);
        self.next_reply += 1;
        self.replies.insert(
            r,
            ReplyTo {
                from,
                from_epoch,
                id,
                receipt,
            },
        );
        r
    }

    /// A crash and a restart: unflushed writes, requests in flight and
    /// reply channels are lost; the new engine restores from the disk.
    pub(super) fn crash(&mut self, now: u64) {
        self.disk.crash();
        self.epoch += 1;
        self.next_tick = now;
        self.replies.clear();
        self.engine = engine(
            &self.keypair,
            self.provider,
            self.seed ^ self.epoch,
            now,
            &self.disk,
        );
    }

    /// Reports finished work to the engine.
    pub(super) fn finish(&mut self, done: Done, now: Timestamp) {
        let e = &mut self.engine;
        match done {
            Done::Executed(agreement, r) => e.on_executed(agreement, r),
            Done::Stored(token) => e.on_output_stored(token, Ok(()), now),
            Done::Fetched(task, attempt) => e.on_fetched(task, attempt, true, now),
            Done::SpotChecked(task, attempt, r) => e.on_spot_checked(task, attempt, r, now),
            // The reduce step's own run is the executor's concern.
            Done::Reduced(job) => e.on_reduced(job, Ok(ContentId([0; 32])), now),
            Done::FraudChecked(proof, r) => e.on_fraud_checked(proof, r, now),
            Done::Probed(peer, alive) => e.on_probe(peer, alive, now),
        }
    }
}
