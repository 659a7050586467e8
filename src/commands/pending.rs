//! Command groups that exist in the CLI's shape but not yet in this build. They fail
//! loudly: a user must never mistake a missing feature for one that ran and did nothing.

use anyhow::{Result, bail};

pub const JOBS: &str = "end-to-end jobs (submit, match, execute, receipts, devnet)";

pub fn not_yet(group: &str, arrives_with: &str) -> Result<()> {
    bail!(
        "`olc {group}` is not implemented in this build yet; it arrives with {arrives_with}. \
         See \"Status\" in README.md for what works today."
    )
}
