//! The messages of DESIGN.md's "A job's life", in their first shapes. Later protocol
//! versions extend them; [`crate::codec`] refuses a version it does not know.

pub mod advert;
pub mod execution;
pub mod job;
pub mod settlement;

use crate::Message;

/// Every signed message type's domain tag; tests check they are distinct.
pub const ALL_NAMES: [&str; 6] = [
    advert::HardwareAdvert::NAME,
    job::JobSpec::NAME,
    execution::Assignment::NAME,
    execution::Commitment::NAME,
    execution::ExecutionReceipt::NAME,
    settlement::SettlementReceipt::NAME,
];
