//! Money. Integer amounts only: fees, stakes and payouts must add up exactly, and the
//! ledger's invariant (balances + stakes + escrows + treasury = minted) is an equality.

use std::fmt;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// An amount of credits, in the smallest unit. Arithmetic is checked: an overflow is an
/// error the caller must handle, never a wrap-around.
#[derive(
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Encode,
    Decode,
    Serialize,
    Deserialize,
)]
#[serde(transparent)]
pub struct Amount(pub u64);

impl Amount {
    pub const ZERO: Self = Self(0);

    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Self)
    }

    pub fn checked_sub(self, other: Self) -> Option<Self> {
        self.0.checked_sub(other.0).map(Self)
    }

    pub fn checked_mul(self, factor: u64) -> Option<Self> {
        self.0.checked_mul(factor).map(Self)
    }

    /// What `tokens` tokens of work cost at `price_per_ktoken` credits per 1000 tokens:
    /// rounded up, so a job's declared size is never priced below what metering it could
    /// pay (metering rounds down), and saturating at the largest amount, so an absurd size
    /// reads as unaffordable instead of wrapping around to cheap.
    pub fn price_of(tokens: u64, price_per_ktoken: Self) -> Self {
        let cost = (u128::from(tokens) * u128::from(price_per_ktoken.0)).div_ceil(1000);
        Self(u64::try_from(cost).unwrap_or(u64::MAX))
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Amount({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(Amount(2).checked_add(Amount(3)), Some(Amount(5)));
        assert_eq!(Amount(u64::MAX).checked_add(Amount(1)), None);
        assert_eq!(Amount(2).checked_sub(Amount(3)), None);
        assert_eq!(Amount(u64::MAX).checked_mul(2), None);
        assert_eq!(serde_json::to_string(&Amount(42)).unwrap(), "42");
    }

    #[test]
    fn a_price_is_rounded_up_and_saturates() {
        assert_eq!(Amount::price_of(491_520, Amount(10)), Amount(4916));
        assert_eq!(Amount::price_of(1000, Amount(10)), Amount(10));
        assert_eq!(Amount::price_of(1, Amount(1)), Amount(1));
        assert_eq!(Amount::price_of(0, Amount(10)), Amount(0));
        assert_eq!(Amount::price_of(5, Amount(0)), Amount(0));
        assert_eq!(
            Amount::price_of(u64::MAX, Amount(u64::MAX)),
            Amount(u64::MAX)
        );
        assert_eq!(
            Amount::price_of(u64::MAX, Amount(1000)),
            Amount(u64::MAX),
            "the largest exact price still fits"
        );
    }
}
