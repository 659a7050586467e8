//! The libp2p layer shared by every node: behaviour, swarm set-up, framing, addresses.
//! Async and sockets live here and only here within the protocol crate.

pub mod addr;
pub mod client;
pub mod listen;
pub mod node;
pub mod wire;

pub use libp2p;
pub use node::{
    BLOB_PROTOCOL, Behaviour, BehaviourEvent, NodeConfig, NodeError, RPC_PROTOCOL, adverts_topic,
    build_swarm,
};

pub use client::{Client, ClientError};
pub use listen::listen_and_wait;

/// Unix time in milliseconds: what adverts and receipts carry.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
