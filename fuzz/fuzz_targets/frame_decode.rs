//! Bytes off the wire into frames: what a server reads from a client (`ClientMsg`) and
//! what a client reads from a server (`Response`). Both must refuse, never panic, and
//! whatever decodes must be in canonical form (it encodes back to the same bytes).
#![no_main]

use bytes::BytesMut;
use cmdchan_common::frame::MsgCodec;
use cmdchan_common::protocol::{ClientMsg, Response};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

fn decode_all<D: serde::de::DeserializeOwned + serde::Serialize>(data: &[u8]) {
    let mut codec = MsgCodec::<D, D>::new(64 * 1024);
    let mut buf = BytesMut::from(data);
    let mut at = 0;
    while let Ok(Some(item)) = codec.decode(&mut buf) {
        let used = data.len() - buf.len() - at;
        let mut again = BytesMut::new();
        codec.encode(&item, &mut again).expect("a decoded message encodes");
        assert_eq!(&again[..], &data[at..at + used], "one message, one encoding");
        at += used;
    }
    let _ = codec.decode_eof(&mut buf);
}

fuzz_target!(|data: &[u8]| {
    decode_all::<ClientMsg>(data);
    decode_all::<Response>(data);
});
