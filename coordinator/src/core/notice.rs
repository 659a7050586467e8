//! What the core wants an operator to read in the log. The core keeps no logger: the
//! node drains these from the book and writes them out.

use olc_protocol::{ContentId, PublicKey};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The ledger refused a slash, so the worker kept its stake.
    SlashNotApplied { worker: PublicKey, error: String },
    /// Stake whose unbonding ended could not be returned.
    UnbondedNotReleased { error: String },
    /// A job that ended could not be paid out or refunded.
    NotSettled { job: ContentId, error: String },
    /// The referee disagreed with a worker's output and the worker lost `amount`.
    SlashedForWrongOutput {
        job: ContentId,
        worker: PublicKey,
        amount: u64,
    },
}
