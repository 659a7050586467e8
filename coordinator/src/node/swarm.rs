//! The swarm's events: gossiped adverts fed to the registry (and validated for
//! gossipsub), RPC requests answered through [`rpc`](super::rpc), answers to the
//! node's own requests routed to [`outbound`](super::outbound).

use olc_net::libp2p::gossipsub::{self, MessageAcceptance};
use olc_net::libp2p::request_response::{self, Message};
use olc_net::libp2p::swarm::SwarmEvent;
use olc_net::{AdvertSeen, BehaviourEvent, handle_shared, reply_rpc, unix_ms, unix_us};

use super::{Node, lock};
use crate::core::registry::Admission;

impl Node {
    pub(super) fn handle(&mut self, event: SwarmEvent<BehaviourEvent>) {
        let Some(event) = handle_shared(&mut self.swarm, &*self.blobs, event) else {
            return;
        };
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let verdict =
                    lock(&self.registry).observe(&message.data, message.source.as_ref(), unix_ms());
                if let (Ok((key, _)), Some(observer)) = (&verdict, self.observer.as_ref()) {
                    let seq = lock(&self.registry).get(key).map_or(0, |w| w.advert.seq);
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
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rpc(request_response::Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            })) => {
                match request {
                    olc_protocol::RpcRequest::Follow(follow) => {
                        self.on_follow(peer, follow, channel)
                    }
                    request => {
                        let response = self.answer(request);
                        reply_rpc(&mut self.swarm, peer, channel, response);
                    }
                }
                self.advance_if_due();
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rpc(request_response::Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            })) => self.on_response(request_id, Ok(response)),
            SwarmEvent::Behaviour(BehaviourEvent::Rpc(
                request_response::Event::OutboundFailure {
                    request_id, error, ..
                },
            )) => self.on_response(request_id, Err(error.to_string())),
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => self.peer_gone(peer_id),
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                tracing::debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
            }
            _ => {}
        }
    }
}
