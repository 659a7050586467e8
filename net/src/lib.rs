//! olc-net: the libp2p layer every node shares: the behaviour, swarm set-up, framing,
//! addresses, and the one-peer client. Sockets and async live here; the messages that
//! travel are olc-protocol's, which stays pure.

pub mod addr;
pub mod client;
pub mod listen;
pub mod node;
pub mod outbound;
pub mod serve;
pub mod wire;

pub use libp2p;
pub use node::{
    BLOB_PROTOCOL, Behaviour, BehaviourEvent, NodeConfig, NodeError, RPC_PROTOCOL, adverts_topic,
    build_swarm,
};

pub use client::{Client, ClientError};
pub use listen::{listen_and_wait, start_swarm};
pub use outbound::{Link, Outbound, Pending};
pub use serve::{NodeTask, handle_shared, reply_rpc};

/// Unix time in milliseconds: what adverts and receipts carry.
pub fn unix_ms() -> u64 {
    unix_us() / 1000
}

/// Unix time in microseconds: workers' advert sequence numbers.
pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// An advert a node accepted, reported to an optional observer (monitoring, benchmarks).
/// A worker's `seq` is its wall clock in microseconds at publication, so
/// `received_us - seq` is the propagation delay when both clocks agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdvertSeen {
    pub signer: olc_protocol::PublicKey,
    pub seq: u64,
    pub received_us: u64,
}

pub type AdvertObserver = tokio::sync::mpsc::UnboundedSender<AdvertSeen>;
