//! What a coordinator is started with: its listen addresses, the registry's and the
//! book's settings, the economics, where its state lives. Apart from the node so the
//! settings can be read (and defaulted) without the event loop around them.

use std::path::PathBuf;

use olc_net::libp2p::Multiaddr;
use olc_net::{AdvertObserver, NodeConfig};

use crate::core::book::JobsConfig;
use crate::core::ledger::LedgerConfig;
use crate::core::registry::RegistryConfig;
use crate::core::rules::Policy;

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub listen: Vec<Multiaddr>,
    pub registry: RegistryConfig,
    pub node: NodeConfig,
    /// Told of every advert admitted to the registry.
    pub observer: Option<AdvertObserver>,
    /// Where jobs (sled) and blobs live. `None`: a temporary directory, removed on stop —
    /// for tests and the devnet; a real coordinator keeps its state across restarts.
    pub data_dir: Option<PathBuf>,
    pub jobs: JobsConfig,
    /// Largest blob a submitter or worker may upload.
    pub max_upload_bytes: u64,
    /// Fees, slashes, stake and jail: the network's economics.
    pub policy: Policy,
    pub ledger: LedgerConfig,
    /// Mint credits for anyone who asks (`olc account deposit`): devnets only.
    pub faucet: bool,
    /// Threads the referee re-runs disputed and audited jobs with. `None`: no referee, so
    /// a disagreement fails the job with a full refund and slashes no one.
    pub referee_threads: Option<usize>,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            registry: RegistryConfig::default(),
            node: NodeConfig::default(),
            observer: None,
            data_dir: None,
            jobs: JobsConfig::default(),
            max_upload_bytes: 64 << 30,
            policy: Policy::default(),
            ledger: LedgerConfig::default(),
            faucet: false,
            referee_threads: Some(1),
        }
    }
}

/// QUIC on UDP 7000, and TCP on the same port for peers whose UDP is blocked.
pub fn default_listen() -> Vec<Multiaddr> {
    ["/ip4/0.0.0.0/udp/7000/quic-v1", "/ip4/0.0.0.0/tcp/7000"]
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect()
}
