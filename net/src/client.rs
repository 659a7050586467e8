//! A one-peer client: dial a node, send it requests, fetch blobs from it. The swarm runs
//! in its own task; callers talk to it through a channel, so a client is cheap to clone
//! and usable from any task.

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm};
use olc_protocol::blob::BlobError;
use olc_protocol::{ContentId, Identity, PeerId, RpcRequest, RpcResponse};
use tokio::sync::{mpsc, oneshot};

use crate::addr::{peer_id_of, tcp_fallback};
use crate::node::{Behaviour, NodeConfig, NodeError, build_swarm};
use crate::outbound::{Link, Outbound, Pending};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("cannot reach {addr}: {reason}")]
    Unreachable { addr: Multiaddr, reason: String },
    #[error("no answer from {addr} within {timeout:?}")]
    ConnectTimeout { addr: Multiaddr, timeout: Duration },
    #[error("request to {peer} failed: {reason}")]
    Request { peer: PeerId, reason: String },
    #[error("{peer} does not have blob {id}")]
    BlobNotFound { peer: PeerId, id: ContentId },
    #[error("{peer} sent a bad blob: {source}")]
    BadBlob { peer: PeerId, source: BlobError },
    #[error("{peer} answered a {asked} request with something else")]
    UnexpectedResponse { peer: PeerId, asked: &'static str },
    #[error("the client's network task has stopped")]
    Stopped,
    #[error("cannot make the connection's key: {0}")]
    Key(String),
}

/// A connection to one peer.
///
/// The connection runs under a key made for it alone, never the user's: requests that
/// carry authority are signed inside the message, and a peer identity on the wire would
/// let a one-shot command take over the connection state of a daemon run under the same
/// key (a coordinator keeps gossip state per peer id, so a worker that reused its key in
/// `olc account stake` was never told the coordinator's subscriptions).
#[derive(Clone, Debug)]
pub struct Client {
    link: Link,
    close: mpsc::Sender<oneshot::Sender<()>>,
}

impl Client {
    /// Dials `addr` (a QUIC address falls back to TCP on the same port) and waits until
    /// connected. Must be called inside a tokio runtime.
    pub async fn connect(
        config: &NodeConfig,
        addr: &Multiaddr,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let transport_key = Identity::generate().map_err(|e| ClientError::Key(e.to_string()))?;
        let mut swarm = build_swarm(&transport_key, config)?;
        let peer = tokio::time::timeout(timeout, dial_until_connected(&mut swarm, addr))
            .await
            .map_err(|_| ClientError::ConnectTimeout {
                addr: addr.clone(),
                timeout,
            })??;
        let (tx, rx) = mpsc::channel(64);
        let (close_tx, close_rx) = mpsc::channel(1);
        tokio::spawn(drive(swarm, peer, rx, close_rx));
        Ok(Self {
            link: Link::new(peer, tx),
            close: close_tx,
        })
    }

    pub fn peer(&self) -> PeerId {
        self.link.peer()
    }

    /// Closes the connection and waits (briefly) until the peer has been told, so it
    /// frees the connection at once instead of holding it until an idle timeout. A
    /// one-shot command calls this before it exits; the other handles stop working.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.close.send(tx).await.is_ok() {
            let _ = rx.await;
        }
    }

    pub async fn rpc(&self, request: RpcRequest) -> Result<RpcResponse, ClientError> {
        self.link.rpc(request).await
    }

    /// See [`Link::fetch_blob`].
    pub async fn fetch_blob(&self, id: ContentId, cap: u64) -> Result<Vec<u8>, ClientError> {
        self.link.fetch_blob(id, cap).await
    }
}

async fn dial_until_connected(
    swarm: &mut Swarm<Behaviour>,
    addr: &Multiaddr,
) -> Result<PeerId, ClientError> {
    let mut candidates = vec![addr.clone()];
    candidates.extend(tcp_fallback(addr));
    let mut last_error = String::from("no address to dial");
    for candidate in candidates {
        if let Err(e) = swarm.dial(candidate.clone()) {
            last_error = e.to_string();
            continue;
        }
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. }
                    if peer_id_of(addr).is_none_or(|want| want == peer_id) =>
                {
                    return Ok(peer_id);
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    tracing::debug!(%candidate, %error, "dial failed");
                    last_error = error.to_string();
                    break;
                }
                _ => {}
            }
        }
    }
    Err(ClientError::Unreachable {
        addr: addr.clone(),
        reason: last_error,
    })
}

async fn drive(
    mut swarm: Swarm<Behaviour>,
    peer: PeerId,
    mut requests: mpsc::Receiver<Outbound>,
    mut close_asked: mpsc::Receiver<oneshot::Sender<()>>,
) {
    let mut pending = Pending::default();
    loop {
        tokio::select! {
            request = requests.recv() => match request {
                Some(request) => pending.send(&mut swarm, request),
                // Every handle dropped: nothing more will be asked.
                None => return,
            },
            done = close_asked.recv() => {
                close(&mut swarm, peer).await;
                if let Some(done) = done {
                    let _ = done.send(());
                }
                return;
            }
            event = swarm.select_next_some() => {
                pending.settle(event);
            }
        }
    }
}

/// How long a closing client waits for its connections to wind down.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

async fn close(swarm: &mut Swarm<Behaviour>, peer: PeerId) {
    if swarm.disconnect_peer_id(peer).is_err() {
        return;
    }
    let closed = async {
        loop {
            if let SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } = swarm.select_next_some().await
                && peer_id == peer
            {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, closed).await;
}
