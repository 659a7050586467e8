//! A one-peer client: dial a node, send it requests, fetch blobs from it. The swarm runs
//! in its own task; callers talk to it through a channel, so a client is cheap to clone
//! and usable from any task.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use libp2p::request_response::{Event, Message, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm};
use tokio::sync::{mpsc, oneshot};

use crate::addr::{peer_id_of, tcp_fallback};
use crate::node::{Behaviour, BehaviourEvent, NodeConfig, NodeError, build_swarm};
use olc_protocol::blob::{BlobError, BlobOutline};
use olc_protocol::{
    BlobPart, BlobRequest, BlobResponse, ContentId, Identity, PeerId, RpcRequest, RpcResponse,
};

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

enum Command {
    Rpc(RpcRequest, oneshot::Sender<Result<RpcResponse, String>>),
    Blob(BlobRequest, oneshot::Sender<Result<BlobResponse, String>>),
    Close(oneshot::Sender<()>),
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
    peer: PeerId,
    commands: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Rpc(..) => "Rpc",
            Command::Blob(..) => "Blob",
            Command::Close(..) => "Close",
        })
    }
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
        tokio::spawn(drive(swarm, peer, rx));
        Ok(Self { peer, commands: tx })
    }

    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// Closes the connection and waits (briefly) until the peer has been told, so it
    /// frees the connection at once instead of holding it until an idle timeout. A
    /// one-shot command calls this before it exits; the other handles stop working.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    pub async fn rpc(&self, request: RpcRequest) -> Result<RpcResponse, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Rpc(request, tx))
            .await
            .map_err(|_| ClientError::Stopped)?;
        let answer = rx.await.map_err(|_| ClientError::Stopped)?;
        answer.map_err(|reason| ClientError::Request {
            peer: self.peer,
            reason,
        })
    }

    async fn blob(&self, request: BlobRequest) -> Result<BlobResponse, ClientError> {
        let (tx, rx) = oneshot::channel();
        let id = request.id;
        self.commands
            .send(Command::Blob(request, tx))
            .await
            .map_err(|_| ClientError::Stopped)?;
        match rx.await.map_err(|_| ClientError::Stopped)? {
            Ok(BlobResponse::NotFound) => Err(ClientError::BlobNotFound {
                peer: self.peer,
                id,
            }),
            Ok(response) => Ok(response),
            Err(reason) => Err(ClientError::Request {
                peer: self.peer,
                reason,
            }),
        }
    }

    /// Fetches a whole blob of at most `cap` bytes, checking the outline against `id`
    /// before any chunk is asked for and each chunk as it arrives. Up to `PIPELINE`
    /// chunk requests are in flight at once, to keep a long link busy.
    pub async fn fetch_blob(&self, id: ContentId, cap: u64) -> Result<Vec<u8>, ClientError> {
        const PIPELINE: usize = 4;
        let bad = |source| ClientError::BadBlob {
            peer: self.peer,
            source,
        };
        let outline = match self
            .blob(BlobRequest {
                id,
                part: BlobPart::Outline,
            })
            .await?
        {
            BlobResponse::Outline(o) => o,
            _ => {
                return Err(ClientError::UnexpectedResponse {
                    peer: self.peer,
                    asked: "outline",
                });
            }
        };
        outline.verify(&id, cap).map_err(bad)?;
        let count = outline.chunk_count();
        if count == 0 {
            return Ok(Vec::new());
        }
        // The last chunk first: it authenticates the exact length (see
        // `BlobOutline::verify`), before anything is allocated for the rest.
        let last = self.fetch_chunk(&outline, id, count - 1).await?;
        let mut out = Vec::with_capacity(outline.len as usize);
        let mut pending = futures::stream::iter(0..count - 1)
            .map(|index| self.fetch_chunk(&outline, id, index))
            .buffered(PIPELINE);
        while let Some(chunk) = pending.next().await {
            out.extend_from_slice(&chunk?);
        }
        out.extend_from_slice(&last);
        Ok(out)
    }

    async fn fetch_chunk(
        &self,
        outline: &BlobOutline,
        id: ContentId,
        index: u64,
    ) -> Result<Vec<u8>, ClientError> {
        match self
            .blob(BlobRequest {
                id,
                part: BlobPart::Chunk(index),
            })
            .await?
        {
            BlobResponse::Chunk(data) => {
                outline
                    .verify_chunk(&id, index, &data)
                    .map_err(|source| ClientError::BadBlob {
                        peer: self.peer,
                        source,
                    })?;
                Ok(data)
            }
            _ => Err(ClientError::UnexpectedResponse {
                peer: self.peer,
                asked: "chunk",
            }),
        }
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

type Waiting<T> = HashMap<OutboundRequestId, oneshot::Sender<Result<T, String>>>;

/// Hands a response (or the reason there is none) to whoever asked for it.
fn settle<Req, Resp>(waiting: &mut Waiting<Resp>, event: Event<Req, Resp>) {
    let (request_id, answer) = match event {
        Event::Message {
            message:
                Message::Response {
                    request_id,
                    response,
                },
            ..
        } => (request_id, Ok(response)),
        Event::OutboundFailure {
            request_id, error, ..
        } => (request_id, Err(error.to_string())),
        _ => return,
    };
    if let Some(reply) = waiting.remove(&request_id) {
        let _ = reply.send(answer);
    }
}

async fn drive(mut swarm: Swarm<Behaviour>, peer: PeerId, mut commands: mpsc::Receiver<Command>) {
    let mut rpc_waiting: Waiting<RpcResponse> = HashMap::new();
    let mut blob_waiting: Waiting<BlobResponse> = HashMap::new();
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Rpc(req, reply)) => {
                    let id = swarm.behaviour_mut().rpc.send_request(&peer, req);
                    rpc_waiting.insert(id, reply);
                }
                Some(Command::Blob(req, reply)) => {
                    let id = swarm.behaviour_mut().blobs.send_request(&peer, req);
                    blob_waiting.insert(id, reply);
                }
                Some(Command::Close(done)) => {
                    close(&mut swarm, peer).await;
                    let _ = done.send(());
                    return;
                }
                // Every handle dropped: nothing more will be asked.
                None => return,
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(BehaviourEvent::Rpc(event)) => settle(&mut rpc_waiting, event),
                SwarmEvent::Behaviour(BehaviourEvent::Blobs(event)) => settle(&mut blob_waiting, event),
                _ => {}
            },
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
