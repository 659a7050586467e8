//! The coordinator's decisions as plain state machines: who is online (registry), who may
//! be offered work in a pass (candidates) and who is picked (matcher), each job's life
//! (record, book), its tokens on their way to followers (stream), whether its output
//! stands (verify, rules), who is owed what (ledger, economy) and whether the state adds
//! up (audit). Signed messages are checked once, on
//! entry (verified). Nothing here does I/O or keeps time: the node passes the clock and
//! the coordinator's identity (the seed of the sample audits' draws) in and carries out
//! the actions that come back, so every rule is tested without a network
//! (`tests/core_is_pure.rs` keeps it so).

pub mod action;
pub mod audit;
pub mod book;
pub mod candidates;
pub mod catalog;
pub mod economy;
pub mod ledger;
pub mod matcher;
pub mod notice;
pub mod record;
pub mod registry;
pub mod rules;
pub mod stream;
pub mod verified;
pub(crate) mod verify;
