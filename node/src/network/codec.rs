//! Request-response codecs: one length-prefixed frame per message, in the
//! protocol crate's encoding, with the frame limit checked before reading.

use std::io;
use std::marker::PhantomData;

use agora_protocol::limits::{MAX_CONTENT_FRAME, MAX_MARKET_FRAME};
use agora_protocol::rpc::{ContentRequest, ContentResponse, MarketRequest, MarketResponse, frame_len};
use agora_protocol::{Decode, Encode};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

/// Message pairs of a request-response protocol and their frame limits.
pub(crate) trait Frames: Send + Clone + 'static {
    /// Request type.
    type Request: Encode + Decode + Send + Sync;
    /// Response type.
    type Response: Encode + Decode + Send + Sync;
    /// Largest request frame.
    const MAX_REQUEST: usize;
    /// Largest response frame.
    const MAX_RESPONSE: usize;
}

/// The market protocol's frames.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Market;
impl Frames for Market {
    type Request = MarketRequest;
    type Response = MarketResponse;
    const MAX_REQUEST: usize = MAX_MARKET_FRAME;
    const MAX_RESPONSE: usize = MAX_MARKET_FRAME;
}

/// The content protocol's frames.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Content;
impl Frames for Content {
    type Request = ContentRequest;
    type Response = ContentResponse;
    const MAX_REQUEST: usize = 64;
    const MAX_RESPONSE: usize = MAX_CONTENT_FRAME;
}

/// A codec for the frames `F`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Codec<F>(PhantomData<F>);

async fn read_frame<T, M>(io: &mut T, max: usize, what: &'static str) -> io::Result<M>
where
    T: AsyncRead + Unpin + Send,
    M: Decode,
{
    let mut prefix = [0u8; 4];
    io.read_exact(&mut prefix).await?;
    let len = frame_len(prefix, max, what).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    M::from_bytes(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

async fn write_frame<T, M>(io: &mut T, msg: &M, max: usize) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
    M: Encode,
{
    let body = msg.to_bytes();
    if body.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes exceeds the limit of {max}", body.len()),
        ));
    }
    // One write: each write on a yamux stream is a frame of its own, sent
    // (and woken for at the other end) by itself.
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    io.write_all(&frame).await?;
    io.close().await
}

impl<F: Frames> libp2p::request_response::Codec for Codec<F> {
    type Protocol = StreamProtocol;
    type Request = F::Request;
    type Response = F::Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<F::Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, F::MAX_REQUEST, "request").await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<F::Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, F::MAX_RESPONSE, "response").await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: F::Request) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req, F::MAX_REQUEST).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: F::Response) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res, F::MAX_RESPONSE).await
    }
}
