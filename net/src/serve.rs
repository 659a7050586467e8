//! What every long-running node (worker, coordinator) does the same way: serve blobs,
//! shrug off bad requests, follow mDNS, and stop on request.

use futures::Future;
use libp2p::Swarm;
use libp2p::request_response::{Event, Message};
use libp2p::swarm::SwarmEvent;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::node::{Behaviour, BehaviourEvent};
use olc_protocol::blob::{self, BlobSource};

/// Handles the events whose handling does not depend on the node's role; gives back the
/// others for the node to handle.
pub fn handle_shared(
    swarm: &mut Swarm<Behaviour>,
    blobs: &dyn BlobSource,
    event: SwarmEvent<BehaviourEvent>,
) -> Option<SwarmEvent<BehaviourEvent>> {
    match event {
        SwarmEvent::Behaviour(BehaviourEvent::Blobs(Event::Message {
            peer,
            message: Message::Request {
                request, channel, ..
            },
            ..
        })) => {
            let response = blob::respond(blobs, &request);
            if swarm
                .behaviour_mut()
                .blobs
                .send_response(channel, response)
                .is_err()
            {
                tracing::debug!(%peer, "blob requester left before its answer was sent");
            }
        }
        SwarmEvent::Behaviour(BehaviourEvent::Rpc(Event::InboundFailure {
            peer, error, ..
        }))
        | SwarmEvent::Behaviour(BehaviourEvent::Blobs(Event::InboundFailure {
            peer, error, ..
        })) => {
            tracing::debug!(%peer, %error, "bad inbound request");
        }
        SwarmEvent::Behaviour(BehaviourEvent::Mdns(libp2p::mdns::Event::Discovered(found))) => {
            for (peer, addr) in found {
                tracing::debug!(%peer, %addr, "found by mDNS");
                let _ = swarm.dial(addr);
            }
        }
        SwarmEvent::ConnectionClosed {
            peer_id, ref cause, ..
        } => {
            tracing::debug!(peer = %peer_id, ?cause, "disconnected");
            return Some(event);
        }
        other => return Some(other),
    }
    None
}

/// Answers an `/olc/rpc/1` request; a requester gone by then is only worth a debug line.
pub fn reply_rpc(
    swarm: &mut Swarm<Behaviour>,
    peer: libp2p::PeerId,
    channel: libp2p::request_response::ResponseChannel<olc_protocol::RpcResponse>,
    response: olc_protocol::RpcResponse,
) {
    if swarm
        .behaviour_mut()
        .rpc
        .send_response(channel, response)
        .is_err()
    {
        tracing::debug!(%peer, "requester left before its answer was sent");
    }
}

/// A node's event loop running in its own task, stoppable from outside.
#[derive(Debug)]
pub struct NodeTask {
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl NodeTask {
    /// Spawns `run`, which must return once its shutdown receiver fires.
    pub fn spawn<F, Fut>(run: F) -> Self
    where
        F: FnOnce(oneshot::Receiver<()>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        Self {
            shutdown: Some(tx),
            task: tokio::spawn(run(rx)),
        }
    }

    /// Signals the loop to stop and waits for it, so its connections are closed on return.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}
