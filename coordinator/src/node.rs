//! The coordinator's network side: feeds gossip into the registry, answers queries,
//! serves blobs. All decisions are made by the registry; this only moves events.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use olc_protocol::blob::{BlobSource, MemoryBlobs};
use olc_protocol::p2p::libp2p::gossipsub::{self, MessageAcceptance};
use olc_protocol::p2p::libp2p::request_response::{self, Message};
use olc_protocol::p2p::libp2p::swarm::SwarmEvent;
use olc_protocol::p2p::libp2p::{Multiaddr, Swarm};
use olc_protocol::p2p::{
    AdvertObserver, AdvertSeen, Behaviour, BehaviourEvent, NodeConfig, NodeError, NodeTask,
    handle_shared, start_swarm, unix_ms, unix_us,
};
use olc_protocol::{Identity, PeerId, RegisteredWorker, RpcRequest, RpcResponse};
use tokio::sync::oneshot;

use crate::registry::{Admission, Registry, RegistryConfig};

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub listen: Vec<Multiaddr>,
    pub registry: RegistryConfig,
    pub node: NodeConfig,
    /// Told of every advert admitted to the registry.
    pub observer: Option<AdvertObserver>,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            registry: RegistryConfig::default(),
            node: NodeConfig::default(),
            observer: None,
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

/// How often the registry is swept for expired workers.
const EXPIRY_SWEEP: Duration = Duration::from_millis(100);

/// A running coordinator. Dropping it without [`Coordinator::stop`] leaves the task
/// running until the runtime ends.
#[derive(Debug)]
pub struct Coordinator {
    peer_id: PeerId,
    listen_addrs: Vec<Multiaddr>,
    registry: Arc<Mutex<Registry>>,
    blobs: Arc<MemoryBlobs>,
    task: NodeTask,
}

fn lock(registry: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    // The registry is only mutated by whole operations; a panic elsewhere cannot leave it
    // half-updated, so a poisoned lock is still safe to use.
    registry.lock().unwrap_or_else(|e| e.into_inner())
}

impl Coordinator {
    /// Builds the node, binds its listeners and starts serving. Returns once the
    /// listeners are up, with their real addresses.
    pub async fn start(identity: &Identity, config: CoordinatorConfig) -> Result<Self, NodeError> {
        let (swarm, listen_addrs) = start_swarm(identity, &config.node, &config.listen).await?;
        let registry = Arc::new(Mutex::new(Registry::new(config.registry)));
        let blobs = Arc::new(MemoryBlobs::new());
        let (r, b) = (registry.clone(), blobs.clone());
        let task = NodeTask::spawn(move |rx| run(swarm, r, b, config.observer, rx));
        Ok(Self {
            peer_id: identity.peer_id(),
            listen_addrs,
            registry,
            blobs,
            task,
        })
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Bound addresses, each ending in `/p2p/<peer id>`.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }

    pub fn workers(&self) -> Vec<RegisteredWorker> {
        lock(&self.registry).workers()
    }

    /// Content this coordinator serves over the blob protocol.
    pub fn blobs(&self) -> &MemoryBlobs {
        &self.blobs
    }

    pub async fn stop(self) {
        self.task.stop().await;
    }
}

async fn run(
    mut swarm: Swarm<Behaviour>,
    registry: Arc<Mutex<Registry>>,
    blobs: Arc<MemoryBlobs>,
    observer: Option<AdvertObserver>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let mut sweep = tokio::time::interval(EXPIRY_SWEEP);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = sweep.tick() => {
                for key in lock(&registry).expire(unix_ms()) {
                    tracing::info!(worker = %key, "worker expired: missed 3 advert intervals");
                }
            }
            event = swarm.select_next_some() => {
                handle(&mut swarm, &registry, &*blobs, observer.as_ref(), event)
            }
        }
    }
    tracing::info!("coordinator stopped");
}

fn handle(
    swarm: &mut Swarm<Behaviour>,
    registry: &Mutex<Registry>,
    blobs: &dyn BlobSource,
    observer: Option<&AdvertObserver>,
    event: SwarmEvent<BehaviourEvent>,
) {
    let Some(event) = handle_shared(swarm, blobs, event) else {
        return;
    };
    match event {
        SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
            propagation_source,
            message_id,
            message,
        })) => {
            let verdict = lock(registry).observe(&message.data, message.source.as_ref(), unix_ms());
            if let (Ok((key, _)), Some(observer)) = (&verdict, observer) {
                let seq = lock(registry).get(key).map_or(0, |w| w.advert.seq);
                let _ = observer.send(AdvertSeen {
                    signer: *key,
                    seq,
                    received_us: unix_us(),
                });
            }
            let acceptance = match verdict {
                Ok((key, Admission::Joined)) => {
                    tracing::info!(worker = %key, from = %propagation_source, "worker joined");
                    MessageAcceptance::Accept
                }
                Ok((key, Admission::Refreshed)) => {
                    tracing::trace!(worker = %key, "advert refreshed");
                    MessageAcceptance::Accept
                }
                Err(reason) => {
                    tracing::warn!(peer = %propagation_source, %reason, "advert refused");
                    MessageAcceptance::Reject
                }
            };
            swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&message_id, &propagation_source, acceptance);
        }
        SwarmEvent::Behaviour(BehaviourEvent::Rpc(request_response::Event::Message {
            peer,
            message: Message::Request {
                request, channel, ..
            },
            ..
        })) => {
            let response = match request {
                RpcRequest::ListWorkers => RpcResponse::Workers(lock(registry).workers()),
                _ => {
                    RpcResponse::Refused("jobs are not implemented by this coordinator yet".into())
                }
            };
            if swarm
                .behaviour_mut()
                .rpc
                .send_response(channel, response)
                .is_err()
            {
                tracing::debug!(%peer, "client left before its answer was sent");
            }
        }
        SwarmEvent::NewListenAddr { address, .. } => {
            tracing::info!(%address, "listening");
        }
        SwarmEvent::ConnectionEstablished {
            peer_id, endpoint, ..
        } => {
            tracing::debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
        }
        _ => {}
    }
}
