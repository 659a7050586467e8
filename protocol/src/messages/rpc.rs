//! Request-response messages between peers: the coordinator's query API and the blob
//! protocol. Unsigned: the transport authenticates the peer, and nothing here carries
//! authority by itself (blobs are checked against their content ids).

use bincode::{Decode, Encode};
use serde::Serialize;

use crate::blob::{BlobOutline, CHUNK_SIZE};
use crate::{ContentId, HardwareAdvert, Message, PublicKey};

/// What a client may ask a coordinator. Later protocol versions add job submission.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum RpcRequest {
    ListWorkers,
}

impl Message for RpcRequest {
    const NAME: &'static str = "olc/rpc-request";
    const MAX_SIZE: usize = 4 * 1024 * 1024;
}

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum RpcResponse {
    Workers(Vec<RegisteredWorker>),
    /// The request was understood but refused; the text says why.
    Refused(String),
}

impl Message for RpcResponse {
    const NAME: &'static str = "olc/rpc-response";
    const MAX_SIZE: usize = crate::MAX_MESSAGE_BYTES;
}

/// One live worker as the coordinator's registry knows it.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize)]
pub struct RegisteredWorker {
    pub public_key: PublicKey,
    pub advert: HardwareAdvert,
    /// Coordinator's clock, unix ms, when the latest advert arrived.
    pub last_seen_ms: u64,
    pub first_seen_ms: u64,
}

/// Ask for a blob's outline, or for one of its chunks.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct BlobRequest {
    pub id: ContentId,
    pub part: BlobPart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum BlobPart {
    Outline,
    Chunk(u64),
}

impl Message for BlobRequest {
    const NAME: &'static str = "olc/blob-request";
    const MAX_SIZE: usize = 128;
}

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum BlobResponse {
    Outline(BlobOutline),
    Chunk(Vec<u8>),
    NotFound,
}

impl Message for BlobResponse {
    const NAME: &'static str = "olc/blob-response";
    /// A chunk plus framing; an outline of up to ~32 GiB (32 bytes per MiB) also fits.
    const MAX_SIZE: usize = CHUNK_SIZE as usize + 64 * 1024;
}
