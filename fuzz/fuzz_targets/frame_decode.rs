//! Bytes off the wire into frames and requests: must refuse, never panic.
#![no_main]

use bytes::BytesMut;
use cmdchan_common::frame::MsgCodec;
use cmdchan_common::protocol::{Request, Response};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut codec = MsgCodec::<Request, Response>::new(64 * 1024);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = codec.decode(&mut buf) {}
    let _ = codec.decode_eof(&mut buf);
});
