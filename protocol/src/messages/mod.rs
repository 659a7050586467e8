//! The messages of DESIGN.md's "A job's life", in their first shapes. Later protocol
//! versions extend them; [`crate::codec`] refuses a version it does not know.

pub mod account;
pub mod advert;
pub mod catalog;
pub mod execution;
pub mod job;
pub mod jobs_api;
pub mod rpc;
pub mod settlement;
pub mod stream;

use crate::Message;

/// Every message type's name (the domain tag of signed ones); tests check they are distinct.
pub const ALL_NAMES: [&str; 16] = [
    advert::HardwareAdvert::NAME,
    job::JobSpec::NAME,
    execution::Assignment::NAME,
    execution::Commitment::NAME,
    execution::ExecutionReceipt::NAME,
    settlement::SettlementReceipt::NAME,
    rpc::RpcRequest::NAME,
    rpc::RpcResponse::NAME,
    rpc::BlobRequest::NAME,
    rpc::BlobResponse::NAME,
    jobs_api::JobProgress::NAME,
    jobs_api::JobFailure::NAME,
    crate::manifest::Manifest::NAME,
    account::AccountRequest::NAME,
    stream::TokenChunk::NAME,
    stream::CancelJob::NAME,
];
