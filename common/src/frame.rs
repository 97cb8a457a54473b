//! Frames: a 4-byte big-endian length, then the protocol version byte and a postcard value.
//!
//! [`MsgCodec`] is the only place bytes become messages. It refuses a frame longer than the
//! configured maximum before buffering it, and tells a clean close (EOF between frames)
//! from a hang-up mid-frame.

use std::io;
use std::marker::PhantomData;

use bytes::{BufMut, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::codec::length_delimited::LengthDelimitedCodecError;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use crate::protocol::VERSION;

/// Default largest frame payload, in bytes (1 MiB).
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame is larger than the limit of {max} bytes")]
    TooLarge { max: usize },
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("frame is empty (no version byte)")]
    Empty,
    #[error("frame speaks protocol version {0}; this build speaks version {VERSION}")]
    Version(u8),
    #[error("frame does not decode: {0}")]
    Malformed(#[from] postcard::Error),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Decodes frames into `D` and encodes `E` into frames, for one side of a connection.
#[derive(Debug)]
pub struct MsgCodec<D, E> {
    inner: LengthDelimitedCodec,
    max: usize,
    _types: PhantomData<fn(E) -> D>,
}

impl<D, E> MsgCodec<D, E> {
    /// A codec whose frames carry at most `max` payload bytes, in both directions.
    pub fn new(max: usize) -> Self {
        let inner = LengthDelimitedCodec::builder()
            .length_field_length(4)
            .max_frame_length(max)
            .new_codec();
        Self { inner, max, _types: PhantomData }
    }
}

impl<D: DeserializeOwned, E> Decoder for MsgCodec<D, E> {
    type Item = D;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<D>, FrameError> {
        let frame = match self.inner.decode(src) {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(None),
            Err(e) if is_too_large(&e) => return Err(FrameError::TooLarge { max: self.max }),
            Err(e) => return Err(e.into()),
        };
        let (&version, body) = frame.split_first().ok_or(FrameError::Empty)?;
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        Ok(Some(postcard::from_bytes(body)?))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<D>, FrameError> {
        match self.decode(src)? {
            Some(item) => Ok(Some(item)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated),
        }
    }
}

impl<D, E: Serialize> Encoder<&E> for MsgCodec<D, E> {
    type Error = FrameError;

    fn encode(&mut self, item: &E, dst: &mut BytesMut) -> Result<(), FrameError> {
        let payload = postcard::to_extend(item, vec![VERSION])?;
        if payload.len() > self.max {
            return Err(FrameError::TooLarge { max: self.max });
        }
        dst.reserve(4 + payload.len());
        // The length fits in u32: it is at most `max`, itself a `usize` we were given,
        // and frames over 4 GiB are refused above by any sane `max`.
        dst.put_u32(u32::try_from(payload.len()).map_err(|_| FrameError::TooLarge { max: self.max })?);
        dst.extend_from_slice(&payload);
        Ok(())
    }
}

fn is_too_large(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<LengthDelimitedCodecError>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Body, ErrorCode, Failure, Response};

    type Codec = MsgCodec<Response, Response>;

    fn sample() -> Response {
        let failure = Failure { code: ErrorCode::Replay, message: "seen".into() };
        Response { counter: 3, id: [7; 16], body: Body::Err(failure) }
    }

    #[test]
    fn a_frame_round_trips() {
        let mut codec = Codec::new(DEFAULT_MAX_FRAME);
        let mut buf = BytesMut::new();
        codec.encode(&sample(), &mut buf).expect("encode");
        assert_eq!(codec.decode(&mut buf).expect("decode"), Some(sample()));
        assert!(buf.is_empty());
    }

    #[test]
    fn a_partial_frame_waits_and_eof_inside_it_is_truncation() {
        let mut codec = Codec::new(DEFAULT_MAX_FRAME);
        let mut full = BytesMut::new();
        codec.encode(&sample(), &mut full).expect("encode");
        let mut part = BytesMut::from(&full[..full.len() - 1]);
        assert!(codec.decode(&mut part).expect("waits").is_none());
        assert!(matches!(codec.decode_eof(&mut part), Err(FrameError::Truncated)));
        assert!(codec.decode_eof(&mut BytesMut::new()).expect("clean").is_none());
    }

    #[test]
    fn an_oversized_length_is_refused_before_its_body_arrives() {
        let mut codec = Codec::new(16);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 17][..]);
        assert!(matches!(codec.decode(&mut buf), Err(FrameError::TooLarge { max: 16 })));
    }

    #[test]
    fn other_versions_empty_frames_and_garbage_are_refused() {
        let mut codec = Codec::new(64);
        let mut v2 = BytesMut::from(&[0u8, 0, 0, 2, 2, 0][..]);
        assert!(matches!(codec.decode(&mut v2), Err(FrameError::Version(2))));
        let mut empty = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert!(matches!(codec.decode(&mut empty), Err(FrameError::Empty)));
        let mut junk = BytesMut::from(&[0u8, 0, 0, 3, 1, 0xff, 0xff][..]);
        assert!(matches!(codec.decode(&mut junk), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn the_sender_refuses_to_write_an_oversized_frame() {
        let mut codec = Codec::new(8);
        let mut buf = BytesMut::new();
        assert!(matches!(codec.encode(&sample(), &mut buf), Err(FrameError::TooLarge { max: 8 })));
    }
}
