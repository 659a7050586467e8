//! The libp2p behaviour every OLC node runs, and how its swarm is built. Workers,
//! coordinators and one-shot clients differ only in what they do with its events.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, ValidationMode};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{Multiaddr, StreamProtocol, Swarm, identify, mdns, noise, ping, tcp, yamux};

use crate::wire::MessageCodec;
use olc_protocol::codec::Message;
use olc_protocol::{
    BlobRequest, BlobResponse, HardwareAdvert, Identity, PROTOCOL_VERSION, RpcRequest, RpcResponse,
    Signed,
};

/// Gossip topic of hardware adverts. The protocol version is in the name, so nodes of
/// incompatible versions do not even exchange adverts.
pub fn adverts_topic() -> IdentTopic {
    IdentTopic::new(format!("olc/adverts/v{PROTOCOL_VERSION}"))
}

pub const RPC_PROTOCOL: StreamProtocol = StreamProtocol::new("/olc/rpc/1");
pub const BLOB_PROTOCOL: StreamProtocol = StreamProtocol::new("/olc/blob/1");
/// Sent in identify; peers log it, nothing depends on it.
pub const IDENTIFY_PROTOCOL: &str = "/olc/1";

pub type RpcBehaviour = request_response::Behaviour<MessageCodec<RpcRequest, RpcResponse>>;
pub type BlobBehaviour = request_response::Behaviour<MessageCodec<BlobRequest, BlobResponse>>;

#[derive(NetworkBehaviour)]
#[allow(missing_debug_implementations)] // several libp2p behaviours do not implement Debug
pub struct Behaviour {
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub gossipsub: gossipsub::Behaviour,
    pub rpc: RpcBehaviour,
    pub blobs: BlobBehaviour,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
}

/// How a node's swarm is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Find peers on the local network by mDNS. Off by default: bootstrap is by explicit
    /// addresses, and a production node should not announce itself to its LAN.
    pub mdns: bool,
    /// How long a request may wait for its response.
    pub request_timeout: Duration,
    /// Gossipsub heartbeat: bounds how fast adverts spread to peers outside the mesh.
    pub heartbeat: Duration,
    /// Connections with nothing going on are closed after this.
    pub idle_timeout: Duration,
    /// Agent string sent in identify.
    pub agent: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            mdns: false,
            request_timeout: Duration::from_secs(30),
            heartbeat: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(120),
            agent: format!("olc/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot set up the {0} transport: {1}")]
    Transport(&'static str, String),
    #[error("cannot configure gossip: {0}")]
    Gossip(String),
    #[error("cannot start mDNS: {0}")]
    Mdns(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
}

fn gossipsub_behaviour(
    identity: &Identity,
    cfg: &NodeConfig,
) -> Result<gossipsub::Behaviour, NodeError> {
    let max_advert = <Signed<HardwareAdvert> as Message>::MAX_SIZE;
    let config = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(cfg.heartbeat)
        // Every message is signed by its author's key (the same key as the advert's
        // signer), so a relay cannot forge who said what.
        .validation_mode(ValidationMode::Strict)
        // Nothing is forwarded until the application has checked it.
        .validate_messages()
        .max_transmit_size(max_advert + 1024)
        // Peers pruned from a full mesh are told of others to connect to.
        .do_px()
        .build()
        .map_err(|e| NodeError::Gossip(e.to_string()))?;
    let mut behaviour = gossipsub::Behaviour::new(
        MessageAuthenticity::Signed(identity.to_libp2p_keypair()),
        config,
    )
    .map_err(|e| NodeError::Gossip(e.to_string()))?;

    // Scoring makes "rejected" mean "penalised": one invalid advert drops the sender below
    // the graylist threshold, after which its messages are ignored. The mesh-delivery
    // penalties are off: adverts are rare, and an honest quiet worker must not lose score.
    let mut params = gossipsub::PeerScoreParams::default();
    params.ip_colocation_factor_whitelist.extend([
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ]);
    let topic_params = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -100.0,
        invalid_message_deliveries_decay: 0.5,
        ..Default::default()
    };
    params.topics.insert(adverts_topic().hash(), topic_params);
    behaviour
        .with_peer_score(params, gossipsub::PeerScoreThresholds::default())
        .map_err(NodeError::Gossip)?;
    Ok(behaviour)
}

/// Builds a node: QUIC first, TCP + noise + yamux as the fallback, DNS resolution, and the
/// behaviour above. Must be called inside a tokio runtime.
pub fn build_swarm(identity: &Identity, cfg: &NodeConfig) -> Result<Swarm<Behaviour>, NodeError> {
    let keypair = identity.to_libp2p_keypair();
    let gossipsub = gossipsub_behaviour(identity, cfg)?;
    let mdns = if cfg.mdns {
        Some(
            mdns::tokio::Behaviour::new(mdns::Config::default(), identity.peer_id())
                .map_err(|e| NodeError::Mdns(e.to_string()))?,
        )
    } else {
        None
    };
    let rr_config = request_response::Config::default().with_request_timeout(cfg.request_timeout);
    let identify = identify::Behaviour::new(
        identify::Config::new(IDENTIFY_PROTOCOL.to_string(), keypair.public())
            .with_agent_version(cfg.agent.clone()),
    );
    let behaviour = Behaviour {
        identify,
        ping: ping::Behaviour::new(ping::Config::new()),
        gossipsub,
        rpc: request_response::Behaviour::new(
            [(RPC_PROTOCOL, ProtocolSupport::Full)],
            rr_config.clone(),
        ),
        blobs: request_response::Behaviour::new(
            [(BLOB_PROTOCOL, ProtocolSupport::Full)],
            rr_config,
        ),
        mdns: mdns.into(),
    };
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NodeError::Transport("tcp", e.to_string()))?
        .with_quic()
        .with_dns()
        .map_err(|e| NodeError::Transport("dns", e.to_string()))?
        .with_behaviour(|_| behaviour)
        .map_err(|e| NodeError::Transport("behaviour", e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(cfg.idle_timeout))
        .build();
    Ok(swarm)
}
