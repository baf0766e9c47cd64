//! Credits minted between accomplices (part of `chaos sybil`): a key that
//! never held a credit signs a payment to one of the fresh keys, which
//! countersigns it. The accomplice's own chain audits (it only received);
//! the minter's fails at its first block. Providers must count the minted
//! credits as worth nothing (SPEC.md §8.6, "Backing").

use agora_protocol::Envelope;
use agora_protocol::chain::{Block, Entry};
use agora_protocol::id::{ContentId, JobId, MessageId, Nonce, TaskId};
use agora_protocol::rpc::{MarketRequest, MarketResponse};
use agora_protocol::settlement::Voucher;
use agora_protocol::units::{Fuel, Price, Timestamp};
use anyhow::{Context, bail};

use super::attacker::Attacker;
use crate::process::Testnet;

/// Credits the minter pays its accomplice.
pub(super) const MINTED: u64 = 1_000;

/// Has a stranger pay node `to` [`MINTED`] credits it never held; the
/// stranger is returned (it stays up: providers may ask it for its chain).
pub(super) async fn mint(net: &mut Testnet, to: usize) -> anyhow::Result<Attacker> {
    let minter = Attacker::join(net, 0, &[]).await?;
    let accomplice = net.node(to).id();
    for a in net.node(to).dial_addrs() {
        if let Ok(addr) = a.parse() {
            minter.client.add_address(accomplice, addr).await;
        }
    }
    // At a price of one credit per CU·s, one micro-credit per unit of fuel.
    let price = Price(1_000_000);
    let fuel = Fuel(MINTED * 1_000_000);
    let voucher = Voucher {
        receipt: MessageId(rand::random()),
        agreement: MessageId([0; 32]),
        task: TaskId::new(JobId(rand::random()), 0),
        provider: accomplice,
        fuel,
        price,
        amount: price.cost(fuel),
    };
    let block = Block {
        seq: 1,
        prev: ContentId([0; 32]),
        entry: Entry::Pay(voucher),
    };
    let env = Envelope::seal(
        &minter.keypair,
        &block,
        Timestamp::from_system(std::time::SystemTime::now()),
        <Block as agora_protocol::Payload>::MAX_LIFETIME,
        Nonce(rand::random()),
    )
    .context("cannot seal the minted payment")?;
    match minter.client.market(accomplice, MarketRequest::Pay(env)).await {
        Ok(MarketResponse::Received(_)) => {}
        Ok(other) => bail!("the accomplice did not countersign the minted payment: {other:?}"),
        Err(e) => bail!("cannot deliver the minted payment: {e}"),
    }
    // The minter's chain (−MINTED) is outside the testnet: the chains of
    // the testnet sum to the grants plus what was minted.
    net.node_mut(to).granted += (MINTED * 1_000_000) as i64;
    Ok(minter)
}
