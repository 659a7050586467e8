//! Starting a fresh swarm's listeners and waiting for them to come up, so a node can print
//! (and tests can use) real addresses rather than the `/udp/0` it was asked for.
//!
//! A listen list with QUIC addresses and no TCP address at all also gets TCP on the same
//! IP and port as each QUIC address: a peer whose UDP is blocked retries over TCP on the
//! port it already knows ([`crate::addr::tcp_fallback`]), and that only works if
//! something listens there.

use std::error::Error;

use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm};

use crate::node::{Behaviour, NodeError};

/// One listener asked for, and the first address it reported.
struct Listener {
    id: ListenerId,
    requested: Multiaddr,
    first: Option<Multiaddr>,
}

/// Listens on `addrs` (plus the TCP twins of QUIC addresses when no TCP address is given)
/// and returns the addresses the listeners report while they come up, each with
/// `/p2p/<peer id>` appended. Other events that arrive meanwhile are dropped: nothing is
/// connected yet.
pub async fn listen_and_wait(
    swarm: &mut Swarm<Behaviour>,
    addrs: &[Multiaddr],
) -> Result<Vec<Multiaddr>, NodeError> {
    let mut bound = Vec::new();
    let mut listeners = start_listeners(swarm, addrs, |addr, reason| NodeError::Listen {
        addr: addr.clone(),
        reason,
    })?;
    if let Err((i, reason)) = wait_bound(swarm, &mut listeners, &mut bound).await {
        return Err(NodeError::Listen {
            addr: listeners[i].requested.clone(),
            reason,
        });
    }

    // An explicit TCP address means the operator chose the TCP listeners; adding more
    // could take a port they meant for something else.
    if addrs.iter().any(is_tcp) {
        return Ok(bound);
    }
    // QUIC is bound first so a `/udp/0` request has a real port to copy.
    let mut twins: Vec<(Multiaddr, Multiaddr, u16)> = Vec::new();
    for listener in listeners.iter().filter(|l| is_quic(&l.requested)) {
        let Some(port) = listener.first.as_ref().and_then(udp_port) else {
            continue;
        };
        if let Some(tcp) = tcp_twin(&listener.requested, port)
            && !twins.iter().any(|(t, _, _)| *t == tcp)
        {
            twins.push((tcp, listener.requested.clone(), port));
        }
    }
    let twin_error = |i: usize, reason: String| {
        let (tcp, quic, port) = &twins[i];
        NodeError::Listen {
            addr: tcp.clone(),
            reason: format!(
                "{reason}; TCP port {port} is opened because QUIC listens on {quic} and peers \
                 that cannot use UDP fall back to TCP on the same port: free that port, or \
                 give TCP listen addresses of your own"
            ),
        }
    };
    let tcp_addrs: Vec<Multiaddr> = twins.iter().map(|(t, _, _)| t.clone()).collect();
    let mut tcp_listeners = start_listeners(swarm, &tcp_addrs, |addr, reason| {
        let i = tcp_addrs.iter().position(|a| a == addr).unwrap_or_default();
        twin_error(i, reason)
    })?;
    if let Err((i, reason)) = wait_bound(swarm, &mut tcp_listeners, &mut bound).await {
        return Err(twin_error(i, reason));
    }
    Ok(bound)
}

/// A long-running node's swarm: built, subscribed to hardware adverts, and listening on
/// `addrs` (see [`listen_and_wait`]). Returns the bound addresses, each ending in
/// `/p2p/<peer id>`.
pub async fn start_swarm(
    identity: &olc_protocol::Identity,
    config: &crate::NodeConfig,
    addrs: &[Multiaddr],
) -> Result<(Swarm<Behaviour>, Vec<Multiaddr>), NodeError> {
    let mut swarm = crate::build_swarm(identity, config)?;
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&crate::adverts_topic())
        .map_err(|e| NodeError::Gossip(e.to_string()))?;
    let bound = listen_and_wait(&mut swarm, addrs).await?;
    Ok((swarm, bound))
}

fn start_listeners(
    swarm: &mut Swarm<Behaviour>,
    addrs: &[Multiaddr],
    error: impl Fn(&Multiaddr, String) -> NodeError,
) -> Result<Vec<Listener>, NodeError> {
    addrs
        .iter()
        .map(|addr| {
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| error(addr, describe(&e)))?;
            Ok(Listener {
                id,
                requested: addr.clone(),
                first: None,
            })
        })
        .collect()
}

/// Waits until each of `listeners` has reported an address or one has failed (its index
/// and why). Every address reported meanwhile, by any listener, is added to `bound`.
async fn wait_bound(
    swarm: &mut Swarm<Behaviour>,
    listeners: &mut [Listener],
    bound: &mut Vec<Multiaddr>,
) -> Result<(), (usize, String)> {
    let me = *swarm.local_peer_id();
    let waiting = |listeners: &[Listener], id: ListenerId| {
        listeners
            .iter()
            .position(|l| l.id == id && l.first.is_none())
    };
    while listeners.iter().any(|l| l.first.is_none()) {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                if let Some(i) = waiting(listeners, listener_id) {
                    listeners[i].first = Some(address.clone());
                }
                bound.push(address.with_p2p(me).unwrap_or_else(|a| a));
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some(i) = waiting(listeners, listener_id) {
                    let reason = match reason {
                        Ok(()) => "the listener closed before it reported an address".into(),
                        Err(e) => describe(&e),
                    };
                    return Err((i, reason));
                }
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                if let Some(i) = waiting(listeners, listener_id) {
                    return Err((i, describe(&error)));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Why a listener failed, never empty: libp2p's `TransportError::Other` displays as
/// nothing and keeps the real cause (say "Address already in use") in its source chain,
/// so the whole chain is read, each distinct message once.
fn describe(err: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        let text = text.trim();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(text)) {
            parts.push(text.to_string());
        }
        next = e.source();
    }
    if parts.is_empty() {
        "the transport gave no reason".into()
    } else {
        parts.join(": ")
    }
}

fn is_tcp(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::Tcp(_)))
}

fn is_quic(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::QuicV1))
}

fn udp_port(addr: &Multiaddr) -> Option<u16> {
    addr.iter().find_map(|p| match p {
        Protocol::Udp(port) => Some(port),
        _ => None,
    })
}

/// The TCP address at the same IP as `quic` and the given port.
fn tcp_twin(quic: &Multiaddr, port: u16) -> Option<Multiaddr> {
    let tcp = crate::addr::tcp_fallback(quic)?;
    Some(
        tcp.iter()
            .map(|p| match p {
                Protocol::Tcp(_) => Protocol::Tcp(port),
                other => other,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Silent(std::io::Error);

    impl std::fmt::Display for Silent {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            Ok(())
        }
    }

    impl Error for Silent {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_silent_error_is_described_by_its_cause() {
        let inner = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let expected = inner.to_string();
        let err = Silent(inner);
        assert_eq!(describe(&err), expected);
        let nothing = Silent(std::io::Error::other(Silent(std::io::Error::other(""))));
        assert!(!describe(&nothing).is_empty());
    }

    #[test]
    fn a_cause_repeated_by_its_wrapper_is_said_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("wrapped: {0}")]
        struct Wrapper(#[source] std::io::Error);
        let err = Wrapper(std::io::Error::other("boom"));
        assert_eq!(describe(&err), "wrapped: boom");
    }

    #[test]
    fn tcp_twin_keeps_the_ip_and_takes_the_port() {
        let quic: Multiaddr = "/ip4/0.0.0.0/udp/0/quic-v1".parse().unwrap();
        assert_eq!(
            tcp_twin(&quic, 4321).unwrap().to_string(),
            "/ip4/0.0.0.0/tcp/4321"
        );
        let quic6: Multiaddr = "/ip6/::1/udp/7000/quic-v1".parse().unwrap();
        assert_eq!(
            tcp_twin(&quic6, 7000).unwrap().to_string(),
            "/ip6/::1/tcp/7000"
        );
        let tcp: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        assert_eq!(tcp_twin(&tcp, 1), None);
        assert!(is_tcp(&tcp) && !is_quic(&tcp));
        assert!(is_quic(&quic) && !is_tcp(&quic));
    }
}
