//! Requests a node sends out on its own connections, from any task: the task holds a
//! [`Link`] to one peer; the node's event loop owns the swarm, sends what the link hands
//! it and settles the answers ([`Pending`]). A daemon thus talks to its coordinator over
//! the one connection and identity it already has, and the one-peer [`crate::Client`] is
//! the same two halves around a swarm of its own.

use std::collections::HashMap;

use futures::StreamExt;
use libp2p::Swarm;
use libp2p::request_response::{Event, Message, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use olc_protocol::blob::BlobOutline;
use olc_protocol::{
    BlobPart, BlobRequest, BlobResponse, ContentId, PeerId, RpcRequest, RpcResponse,
};
use tokio::sync::{mpsc, oneshot};

use crate::client::ClientError;
use crate::node::{Behaviour, BehaviourEvent};

/// One request for the event loop to send, and where its answer goes.
#[derive(Debug)]
pub enum Outbound {
    Rpc(
        PeerId,
        RpcRequest,
        oneshot::Sender<Result<RpcResponse, String>>,
    ),
    Blob(
        PeerId,
        BlobRequest,
        oneshot::Sender<Result<BlobResponse, String>>,
    ),
}

type Waiting<T> = HashMap<OutboundRequestId, oneshot::Sender<Result<T, String>>>;

/// The event loop's half: the requests in flight.
#[derive(Debug, Default)]
pub struct Pending {
    rpc: Waiting<RpcResponse>,
    blobs: Waiting<BlobResponse>,
}

impl Pending {
    pub fn send(&mut self, swarm: &mut Swarm<Behaviour>, outbound: Outbound) {
        match outbound {
            Outbound::Rpc(peer, request, reply) => {
                let id = swarm.behaviour_mut().rpc.send_request(&peer, request);
                self.rpc.insert(id, reply);
            }
            Outbound::Blob(peer, request, reply) => {
                let id = swarm.behaviour_mut().blobs.send_request(&peer, request);
                self.blobs.insert(id, reply);
            }
        }
    }

    /// Hands an answer (or the reason there is none) to whoever asked; gives back every
    /// event that is not about one of our requests.
    pub fn settle(
        &mut self,
        event: SwarmEvent<BehaviourEvent>,
    ) -> Option<SwarmEvent<BehaviourEvent>> {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Rpc(e)) => {
                settle(&mut self.rpc, e).map(|e| SwarmEvent::Behaviour(BehaviourEvent::Rpc(e)))
            }
            SwarmEvent::Behaviour(BehaviourEvent::Blobs(e)) => {
                settle(&mut self.blobs, e).map(|e| SwarmEvent::Behaviour(BehaviourEvent::Blobs(e)))
            }
            other => Some(other),
        }
    }
}

/// Settles `event` if it answers one of `waiting`; gives it back otherwise.
fn settle<Req, Resp>(
    waiting: &mut Waiting<Resp>,
    event: Event<Req, Resp>,
) -> Option<Event<Req, Resp>> {
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
        other => return Some(other),
    };
    if let Some(reply) = waiting.remove(&request_id) {
        let _ = reply.send(answer);
    }
    None
}

/// The tasks' half: requests to one peer, through the event loop that owns the swarm.
#[derive(Debug, Clone)]
pub struct Link {
    peer: PeerId,
    tx: mpsc::Sender<Outbound>,
}

impl Link {
    pub fn new(peer: PeerId, tx: mpsc::Sender<Outbound>) -> Self {
        Self { peer, tx }
    }

    pub fn peer(&self) -> PeerId {
        self.peer
    }

    pub async fn rpc(&self, request: RpcRequest) -> Result<RpcResponse, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Outbound::Rpc(self.peer, request, tx))
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
        self.tx
            .send(Outbound::Blob(self.peer, request, tx))
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
