//! Frames: a 4-byte big-endian length, then the protocol version byte and a postcard value.
//!
//! [`MsgCodec`] is the only place bytes become messages. It refuses a frame longer than the
//! configured maximum before buffering it, reads a large frame only within a memory
//! budget shared by every connection, and tells a clean close (EOF between frames) from
//! a hang-up mid-frame.

use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Buf, BufMut, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::codec::{Decoder, Encoder};

use crate::protocol::VERSION;

/// Default largest frame payload, in bytes (1 MiB).
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// Most bytes a response frame holds besides its reply or its output's data: the
/// version, counter, ID, the body's and reply's tags and a length, rounded up.
pub const RESPONSE_OVERHEAD: usize = 64;

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
    #[error("frame has {0} bytes after its message")]
    Trailing(usize),
    /// A varint written longer than it needs: one message has exactly one encoding.
    #[error("frame is not in canonical form (a number written with more bytes than it needs)")]
    NotCanonical,
    #[error("frame does not decode: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("a frame of {0} bytes does not fit in the memory left for large frames; send it again later")]
    NoMemory(usize),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Decodes frames into `D` and encodes `E` into frames, for one side of a connection.
#[derive(Debug)]
pub struct MsgCodec<D, E> {
    max: usize,
    /// The length of the frame whose header was read and whose body is still coming.
    pending: Option<usize>,
    /// Memory shared by every connection for frames larger than [`SMALL_FRAME`].
    budget: Option<FrameBudget>,
    /// Bytes this codec holds of the budget, for the frame being read.
    held: usize,
    _types: PhantomData<fn(E) -> D>,
}

/// Frames up to this size are read without asking the budget.
pub const SMALL_FRAME: usize = 64 * 1024;

/// Bytes that partly read large frames may take across all connections. Without it,
/// each of a thousand connections could park a maximum-size frame half sent.
#[derive(Debug, Clone)]
pub struct FrameBudget(Arc<AtomicUsize>);

impl FrameBudget {
    pub fn new(bytes: usize) -> Self {
        Self(Arc::new(AtomicUsize::new(bytes)))
    }

    fn take(&self, n: usize) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(n)
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        self.0.fetch_add(n, Ordering::AcqRel);
    }
}

impl<D, E> MsgCodec<D, E> {
    /// A codec whose frames carry at most `max` payload bytes, in both directions.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            pending: None,
            budget: None,
            held: 0,
            _types: PhantomData,
        }
    }

    /// The same, with frames over [`SMALL_FRAME`] read only within `budget`: one that
    /// does not fit is refused ([`FrameError::NoMemory`]) rather than buffered.
    pub fn with_budget(max: usize, budget: FrameBudget) -> Self {
        Self {
            budget: Some(budget),
            ..Self::new(max)
        }
    }

    /// Takes budget for a large frame of `len` bytes, before its body is buffered.
    fn reserve(&mut self, len: usize) -> Result<(), FrameError> {
        let Some(budget) = &self.budget else {
            return Ok(());
        };
        if len <= SMALL_FRAME {
            return Ok(());
        }
        if !budget.take(len) {
            return Err(FrameError::NoMemory(len));
        }
        self.held = len;
        Ok(())
    }

    fn release(&mut self) {
        if let Some(budget) = &self.budget {
            budget.give(std::mem::take(&mut self.held));
        }
    }
}

impl<D, E> Drop for MsgCodec<D, E> {
    fn drop(&mut self) {
        self.release();
    }
}

impl<D, E> MsgCodec<D, E> {
    /// A frame's header has been read and its body has not all come: the frame has
    /// begun, though the read buffer may be empty.
    pub fn mid_frame(&self) -> bool {
        self.pending.is_some()
    }
}

impl<D: DeserializeOwned + Serialize, E> Decoder for MsgCodec<D, E> {
    type Item = D;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<D>, FrameError> {
        let len = match self.pending {
            Some(len) => len,
            None => {
                let Some(header) = src.get(..4) else {
                    return Ok(None);
                };
                let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
                // Refused on its length, before any of its body is buffered.
                if len > self.max {
                    return Err(FrameError::TooLarge { max: self.max });
                }
                self.reserve(len)?;
                src.advance(4);
                src.reserve(len);
                self.pending = Some(len);
                len
            }
        };
        if src.len() < len {
            return Ok(None);
        }
        let frame = src.split_to(len);
        self.pending = None;
        self.release();
        let (&version, body) = frame.split_first().ok_or(FrameError::Empty)?;
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        // One message, one encoding: bytes after the value are an error, not ignored,
        // and so is a number written long (the only encoding postcard would take in two
        // forms: every other field is fixed or checked, so a longer body is a longer
        // varint).
        let item = match postcard::take_from_bytes(body)? {
            (item, []) => item,
            (_, rest) => return Err(FrameError::Trailing(rest.len())),
        };
        match postcard::experimental::serialized_size(&item) {
            Ok(n) if n == body.len() => Ok(Some(item)),
            _ => Err(FrameError::NotCanonical),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<D>, FrameError> {
        match self.decode(src)? {
            Some(item) => Ok(Some(item)),
            None if src.is_empty() && self.pending.is_none() => Ok(None),
            None => {
                self.pending = None;
                self.release();
                Err(FrameError::Truncated)
            }
        }
    }
}

impl<D, E: Serialize> Encoder<&E> for MsgCodec<D, E> {
    type Error = FrameError;

    fn encode(&mut self, item: &E, dst: &mut BytesMut) -> Result<(), FrameError> {
        // Written in place behind a length filled in last: no buffer of its own per frame.
        let start = dst.len();
        dst.put_u32(0);
        dst.put_u8(VERSION);
        if let Err(e) = postcard::to_io(item, (&mut *dst).writer()) {
            dst.truncate(start);
            return Err(e.into());
        }
        let len = dst.len() - start - 4;
        // The length fits in u32: it is at most `max`, itself a `usize` we were given,
        // and frames over 4 GiB are refused here by any sane `max`.
        let Some(len) = u32::try_from(len).ok().filter(|_| len <= self.max) else {
            dst.truncate(start);
            return Err(FrameError::TooLarge { max: self.max });
        };
        dst[start..start + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Body, ErrorCode, Failure, Response};

    type Codec = MsgCodec<Response, Response>;

    fn sample() -> Response {
        let failure = Failure::new(ErrorCode::Replay, "seen");
        Response {
            counter: 3,
            id: [7; 16],
            body: Body::Err(failure),
        }
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
    fn a_frame_over_max_is_not_written_and_leaves_the_frames_before_it_whole() {
        let mut big = Codec::new(DEFAULT_MAX_FRAME);
        let mut buf = BytesMut::new();
        big.encode(&sample(), &mut buf).expect("encode");
        let len = buf.len();
        let mut small = Codec::new(len - 5);
        assert!(matches!(
            small.encode(&sample(), &mut buf),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(buf.len(), len, "nothing of the refused frame stays");
        small
            .encode(&sample(), &mut buf)
            .expect_err("max counts the payload");
        let mut exact = Codec::new(len - 4);
        exact
            .encode(&sample(), &mut buf)
            .expect("a payload of max bytes");
        assert_eq!(big.decode(&mut buf).expect("decode"), Some(sample()));
        assert_eq!(big.decode(&mut buf).expect("decode"), Some(sample()));
        assert!(buf.is_empty());
    }

    #[test]
    fn a_partial_frame_waits_and_eof_inside_it_is_truncation() {
        let mut codec = Codec::new(DEFAULT_MAX_FRAME);
        let mut full = BytesMut::new();
        codec.encode(&sample(), &mut full).expect("encode");
        let mut part = BytesMut::from(&full[..full.len() - 1]);
        assert!(codec.decode(&mut part).expect("waits").is_none());
        assert!(matches!(
            codec.decode_eof(&mut part),
            Err(FrameError::Truncated)
        ));
        assert!(codec
            .decode_eof(&mut BytesMut::new())
            .expect("clean")
            .is_none());
    }

    #[test]
    fn an_oversized_length_is_refused_before_its_body_arrives() {
        let mut codec = Codec::new(16);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 17][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge { max: 16 })
        ));
    }

    #[test]
    fn other_versions_empty_frames_and_garbage_are_refused() {
        let mut codec = Codec::new(64);
        for old in [1, 2] {
            let mut frame = BytesMut::from(&[0u8, 0, 0, 2, old, 0][..]);
            assert!(matches!(codec.decode(&mut frame), Err(FrameError::Version(v)) if v == old));
        }
        let mut empty = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert!(matches!(codec.decode(&mut empty), Err(FrameError::Empty)));
        let mut junk = BytesMut::from(&[0u8, 0, 0, 3, 3, 0xff, 0xff][..]);
        assert!(matches!(
            codec.decode(&mut junk),
            Err(FrameError::Malformed(_))
        ));
    }

    fn frame_hex<T: Serialize>(message: &T) -> String {
        let mut buf = BytesMut::new();
        MsgCodec::<T, T>::new(DEFAULT_MAX_FRAME)
            .encode(message, &mut buf)
            .expect("encode");
        hex::encode(&buf)
    }

    /// PROTOCOL.md §8's wire vectors, also produced by scripts/vectors.py.
    #[test]
    fn frames_match_protocol_md_vectors() {
        use crate::ident::Ident;
        use crate::protocol::{
            ClientMsg, ExitInfo, Grant, Input, Output, Param, Reply, Request, Started, Stream,
        };
        let ident = |s: &str| Ident::new(s).expect("valid");
        let servers = vec![ident("db1"), ident("db2")];
        let grant = Grant {
            role: ident("operator"),
            epoch: 7,
            expires: Some(1_893_456_000),
            servers,
        };
        let id: [u8; 16] = std::array::from_fn(|i| i as u8);
        let tag = crate::keys::tests::vector_zone()
            .tag_key()
            .sign(&ident("alice"), &grant);
        let args = vec!["hi".to_owned(), "ü".to_owned()];
        let request = Request {
            counter: 1,
            id,
            issued_at: 1_893_455_990,
            target: ident("db1"),
            grant,
            tag,
            command: "echo".into(),
            args: args.clone(),
            params: vec![],
            detach: false,
            run: None,
            approval: None,
        };
        let tail = Request {
            counter: 2,
            command: "tail-log".into(),
            args: vec!["/var/log/syslog".into()],
            params: vec![Param {
                name: "lines".into(),
                value: "10".into(),
            }],
            detach: true,
            run: Some([0xaa; 16]),
            approval: None,
            ..request.clone()
        };
        assert_eq!(
            frame_hex(&ClientMsg::Request(request)),
            "00000065030001000102030405060708090a0b0c0d0e0ff6b0ef860703646231086f70657261746f72070180b1ef86070203646231\
             036462320b88f747797b56dcb0fc125170581bc8a825415bc371b601c97cf0fcf221224a046563686f0202686902c3bc00000000"
        );
        assert_eq!(frame_hex(&ClientMsg::Request(tail)), "0000008c030002000102030405060708090a0b0c0d0e0ff6b0ef860703646231086f70657261746f72070180b1ef86070203646231\
             036462320b88f747797b56dcb0fc125170581bc8a825415bc371b601c97cf0fcf221224a087461696c2d6c6f67010f2f7661722f\
             6c6f672f7379736c6f6701056c696e6573023130\
             0101aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa00");
        let input = ClientMsg::Input(Input {
            counter: 1,
            data: b"hi\n".to_vec(),
        });
        assert_eq!(frame_hex(&input), "000000070301010368690a");
        assert_eq!(frame_hex(&ClientMsg::InputEnd(1)), "00000003030201");
        let response = |body| Response {
            counter: 1,
            id,
            body,
        };
        assert_eq!(
            frame_hex(&response(Body::Ok(Reply::Echo(args)))),
            "0000001b0301000102030405060708090a0b0c0d0e0f00020202686902c3bc"
        );
        let failure = Failure::new(ErrorCode::Replay, "this command ID was already used");
        assert_eq!(
            frame_hex(&response(Body::Err(failure))),
            "000000360301000102030405060708090a0b0c0d0e0f0110207468697320636f6d6d616e642049442077617320616c7265616479207573656400"
        );
        let output = Output {
            stream: Stream::Stderr,
            data: b"oops\n".to_vec(),
        };
        assert_eq!(
            frame_hex(&response(Body::Output(output))),
            "0000001a0301000102030405060708090a0b0c0d0e0f0201056f6f70730a"
        );
        let exit = ExitInfo {
            code: Some(-1),
            duration_ms: 1500,
            output_bytes: 300,
            truncated: true,
            ..ExitInfo::default()
        };
        assert_eq!(
            frame_hex(&response(Body::Started(Started { stdin_limit: 1000 }))),
            "000000150301000102030405060708090a0b0c0d0e0f03e807"
        );
        assert_eq!(
            frame_hex(&response(Body::Alive(crate::protocol::Alive::Running))),
            "000000140301000102030405060708090a0b0c0d0e0f0400"
        );
        assert_eq!(
            frame_hex(&response(Body::Ok(Reply::Exit(exit)))),
            "0000001e0301000102030405060708090a0b0c0d0e0f000401010000dc0bac020100"
        );
        let job = crate::protocol::JobInfo {
            id,
            state: crate::protocol::JobState::Exited(3),
            client: "alice".into(),
            command: "backup".into(),
            started_at: 1_893_455_990,
            ended_at: 1_893_456_000,
            output_bytes: 300,
            kept_bytes: 300,
            stdout_sha256: [0x11; 32],
            stderr_sha256: [0x22; 32],
            run: Some([0xaa; 16]),
        };
        assert_eq!(
            frame_hex(&response(Body::Ok(Reply::Jobs(vec![job])))),
            "000000930301000102030405060708090a0b0c0d0e0f000701000102030405060708090a0b0c0d0e0f01\
             0605616c696365066261636b7570f6b0ef860780b1ef8607ac02ac02\
             1111111111111111111111111111111111111111111111111111111111111111\
             2222222222222222222222222222222222222222222222222222222222222222\
             01aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        );
        assert_eq!(
            hex::encode(crate::protocol::job_id(&[0xaa; 16], &ident("db1"))),
            "e8c207cc846bc0fb6f56ea6fedd224a1"
        );
    }

    #[test]
    fn large_frames_share_one_budget_and_give_it_back_when_read_or_dropped() {
        let budget = FrameBudget::new(150_000);
        let mut a = Codec::with_budget(DEFAULT_MAX_FRAME, budget.clone());
        let mut b = Codec::with_budget(DEFAULT_MAX_FRAME, budget.clone());
        let header = |n: u32| BytesMut::from(&n.to_be_bytes()[..]);
        assert!(a.decode(&mut header(100_000)).expect("fits").is_none());
        assert!(matches!(
            b.decode(&mut header(100_000)),
            Err(FrameError::NoMemory(100_000))
        ));
        assert!(
            b.decode(&mut header(1_000)).expect("small").is_none(),
            "small frames need no budget"
        );
        drop(a);
        let mut c = Codec::with_budget(DEFAULT_MAX_FRAME, budget);
        assert!(c
            .decode(&mut header(100_000))
            .expect("given back")
            .is_none());
    }

    #[test]
    fn a_number_written_longer_than_it_needs_is_refused() {
        let mut codec = Codec::new(DEFAULT_MAX_FRAME);
        let mut buf = BytesMut::new();
        codec.encode(&sample(), &mut buf).expect("encode");
        // The counter, 3, is the byte after the version: write it as 0x83 0x00.
        let mut long = buf[..5].to_vec();
        long.extend_from_slice(&[0x83, 0x00]);
        long.extend_from_slice(&buf[6..]);
        let len = u32::try_from(long.len() - 4).expect("small");
        long[..4].copy_from_slice(&len.to_be_bytes());
        let mut long = BytesMut::from(&long[..]);
        assert!(matches!(
            codec.decode(&mut long),
            Err(FrameError::NotCanonical)
        ));
        assert_eq!(codec.decode(&mut buf).expect("canonical"), Some(sample()));
    }

    #[test]
    fn bytes_after_the_message_are_refused() {
        let mut codec = Codec::new(DEFAULT_MAX_FRAME);
        let mut buf = BytesMut::new();
        codec.encode(&sample(), &mut buf).expect("encode");
        buf.extend_from_slice(&[0]);
        let len = u32::try_from(buf.len() - 4).expect("small");
        buf[..4].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::Trailing(1))
        ));
    }

    #[test]
    fn the_sender_refuses_to_write_an_oversized_frame() {
        let mut codec = Codec::new(8);
        let mut buf = BytesMut::new();
        assert!(matches!(
            codec.encode(&sample(), &mut buf),
            Err(FrameError::TooLarge { max: 8 })
        ));
    }
}
