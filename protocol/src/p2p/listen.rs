//! Waiting for a fresh swarm's listeners to come up, so a node can print (and tests can
//! use) real addresses rather than the `/udp/0` it was asked for.

use std::collections::HashSet;

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm};

use super::node::{Behaviour, NodeError};

/// Listens on `addrs` and returns the first address each listener reports, with
/// `/p2p/<peer id>` appended. Other events that arrive meanwhile are dropped: nothing is
/// connected yet.
pub async fn listen_and_wait(
    swarm: &mut Swarm<Behaviour>,
    addrs: &[Multiaddr],
) -> Result<Vec<Multiaddr>, NodeError> {
    let mut waiting: HashSet<_> = HashSet::new();
    for addr in addrs {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| NodeError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        waiting.insert((id, addr.clone()));
    }
    let me = *swarm.local_peer_id();
    let mut bound = Vec::new();
    while !waiting.is_empty() {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                if let Some(entry) = waiting.iter().find(|(id, _)| *id == listener_id).cloned() {
                    waiting.remove(&entry);
                }
                bound.push(address.with_p2p(me).unwrap_or_else(|a| a));
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some((_, addr)) = waiting.iter().find(|(id, _)| *id == listener_id) {
                    let reason = match reason {
                        Ok(()) => "closed".to_string(),
                        Err(e) => e.to_string(),
                    };
                    return Err(NodeError::Listen {
                        addr: addr.clone(),
                        reason,
                    });
                }
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                if let Some((_, addr)) = waiting.iter().find(|(id, _)| *id == listener_id) {
                    return Err(NodeError::Listen {
                        addr: addr.clone(),
                        reason: error.to_string(),
                    });
                }
            }
            _ => {}
        }
    }
    Ok(bound)
}

/// A long-running node's swarm: built, subscribed to hardware adverts, and listening on
/// `addrs`. Returns the bound addresses, each ending in `/p2p/<peer id>`.
pub async fn start_swarm(
    identity: &crate::Identity,
    config: &super::NodeConfig,
    addrs: &[Multiaddr],
) -> Result<(Swarm<Behaviour>, Vec<Multiaddr>), NodeError> {
    let mut swarm = super::build_swarm(identity, config)?;
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&super::adverts_topic())
        .map_err(|e| NodeError::Gossip(e.to_string()))?;
    let bound = listen_and_wait(&mut swarm, addrs).await?;
    Ok((swarm, bound))
}
