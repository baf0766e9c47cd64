//! A stranger on the network: a bare libp2p peer in this process that
//! speaks the wire protocol with its own key and no node behind it, as a
//! second implementation written from SPEC.md would. The hostile scenarios
//! mount their attacks through it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agora_node::network::{self, Event, Transport};
use agora_protocol::rpc::MarketRequest;
use agora_protocol::{Keypair, NodeId};
use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::process::Testnet;

/// What reached the stranger: requests it never answers.
#[derive(Debug, Default)]
pub(super) struct Heard {
    /// Calls for offers (work it was asked to bid for).
    pub calls: AtomicU64,
    /// Other market requests (questions about summaries, chains, …).
    pub other: AtomicU64,
}

/// A bare peer joined to a testnet.
pub(super) struct Attacker {
    /// Its key: the one it signs with and the one its peer id is of.
    pub keypair: Keypair,
    /// Its swarm.
    pub client: network::Client,
    /// What it was asked.
    pub heard: Arc<Heard>,
    /// Its listen address, with its peer id.
    pub addr: String,
    cancel: CancellationToken,
}

impl Attacker {
    /// A fresh key joined through `via`'s listen addresses, subscribed to
    /// `topics` (so that it has a mesh to publish to). Gossip it receives
    /// is ignored; requests are counted and left unanswered.
    pub(super) async fn join(net: &Testnet, via: usize, topics: &[String]) -> anyhow::Result<Attacker> {
        let keypair = Keypair::from_secret(rand::random());
        let cancel = CancellationToken::new();
        let (tx, mut rx) = mpsc::channel(4096);
        let bootstrap = net
            .node(via)
            .dial_addrs()
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        let config = network::Config {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
            bootstrap,
            transport: Transport::TcpQuic,
            ..network::Config::default()
        };
        let (client, _) = network::spawn(&keypair, config, tx, cancel.clone())
            .await
            .context("cannot start the attacker's swarm")?;
        let heard = Arc::new(Heard::default());
        let h = heard.clone();
        let c = client.clone();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                match event {
                    Event::Gossip { id, source, .. } => {
                        c.report(id, source, network::MessageAcceptance::Ignore).await
                    }
                    Event::Market { request, .. } => {
                        let n = match request {
                            MarketRequest::CallForOffers(_) => &h.calls,
                            _ => &h.other,
                        };
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        });
        for t in topics {
            client.subscribe(t.clone()).await?;
        }
        let mut addr = None;
        for _ in 0..50 {
            if let Some(a) = client.listen_addrs().await?.into_iter().next() {
                addr = Some(format!("{a}/p2p/{}", keypair.node_id()));
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let addr = addr.context("the attacker's swarm never listened")?;
        // Time for the mesh to form (gossipsub grafts at its heartbeat).
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(Attacker {
            keypair,
            client,
            heard,
            addr,
            cancel,
        })
    }

    /// Its node id.
    pub(super) fn id(&self) -> NodeId {
        self.keypair.node_id()
    }

    /// Publishes on a topic; a publication gossipsub refuses (no peer yet,
    /// a duplicate) is counted as not sent.
    pub(super) async fn publish(&self, topic: &str, data: Vec<u8>) -> bool {
        self.client.publish(topic.to_owned(), data).await.is_ok()
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
