//! Request-response framing: one message per stream, encoded by [`olc_protocol::codec`]. The
//! reader stops at the type's size limit plus one byte, so an oversized message is
//! refused after reading at most that much, whatever the peer keeps sending.

use std::io;
use std::marker::PhantomData;

use futures::prelude::*;
use libp2p::StreamProtocol;

use olc_protocol::codec::{self, Message};

/// A `request_response::Codec` for a request type and a response type of ours.
#[derive(Debug)]
pub struct MessageCodec<Req, Resp>(PhantomData<fn() -> (Req, Resp)>);

impl<Req, Resp> Default for MessageCodec<Req, Resp> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<Req, Resp> Clone for MessageCodec<Req, Resp> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

async fn read_message<T: Message, R: AsyncRead + Unpin + Send>(io: &mut R) -> io::Result<T> {
    let mut buf = Vec::new();
    io.take(T::MAX_SIZE as u64 + 1)
        .read_to_end(&mut buf)
        .await?;
    codec::decode::<T>(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Encoded before any await, so the message itself need not be `Sync`. The
/// request-response handler closes the stream after the bytes are written.
fn encode_for_wire<T: Message>(message: &T) -> io::Result<Vec<u8>> {
    codec::encode(message).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

impl<Req, Resp> libp2p::request_response::Codec for MessageCodec<Req, Resp>
where
    Req: Message + Send + 'static,
    Resp: Message + Send + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let bytes = encode_for_wire(&req)?;
        io.write_all(&bytes).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        resp: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let bytes = encode_for_wire(&resp)?;
        io.write_all(&bytes).await
    }
}
