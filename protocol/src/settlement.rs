//! Settlement: the voucher, which names what a payment pays for.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::envelope::{Payload, PayloadType};
use crate::id::{MessageId, NodeId, TaskId};
use crate::units::{Credits, Fuel, Price};
use crate::wire_struct;

/// A requester's payment for one verified receipt.
///
/// The amount is `price.cost(fuel)`. A voucher is not sent on its own: the
/// payer records it in an [`Entry::Pay`](crate::chain::Entry::Pay) block of
/// its credit chain and sends that signed block, and the payee counts it by
/// appending an [`Entry::Receive`](crate::chain::Entry::Receive) block that
/// carries the payer's block whole. The payee counts at most one payment
/// per `receipt`, so a payment sent again never counts twice (SPEC.md §8.5,
/// §8.6).
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

/// [`PayloadType::Voucher`] is reserved: a voucher travels inside a block,
/// never in an envelope of its own.
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
