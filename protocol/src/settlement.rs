//! Settlement: payment vouchers.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::envelope::{Payload, PayloadType};
use crate::id::{MessageId, NodeId, TaskId};
use crate::units::{Credits, Fuel, Price};
use crate::wire_struct;

/// A requester's signed promise of payment for one verified receipt.
///
/// The amount is `price.cost(fuel)`. A voucher is identified by its
/// envelope's `(signer, nonce)`; a ledger records each at most once, so a
/// voucher never counts twice (SPEC.md §8.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Voucher {
    /// The receipt paid for (its envelope id).
    pub receipt: MessageId,
    /// The agreement it fulfilled.
    pub agreement: MessageId,
    /// The task.
    pub task: TaskId,
    /// Who is paid.
    pub provider: NodeId,
    /// Fuel paid for.
    pub fuel: Fuel,
    /// The agreed price.
    pub price: Price,
    /// The amount: `price.cost(fuel)`.
    pub amount: Credits,
}

wire_struct!(Voucher {
    receipt,
    agreement,
    task,
    provider,
    fuel,
    price,
    amount,
});

impl Payload for Voucher {
    const TYPE: PayloadType = PayloadType::Voucher;
    const DOMAIN: &'static str = "agora/1/settlement/voucher";
    const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
}

impl Voucher {
    /// Whether the amount is what fuel and price make.
    pub fn amount_is_consistent(&self) -> bool {
        self.price.cost(self.fuel) == self.amount
    }
}
