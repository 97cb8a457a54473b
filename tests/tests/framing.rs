//! Frames: oversized, truncated, undecodable and future-version frames end only their own
//! connection, with the documented error; a concurrent client keeps being served.

use std::io::{Read, Write};
use std::time::Duration;

use cmdchan::{Body, Client, ErrorCode, Reply, Response};
use cmdchan_common::frame::MsgCodec;
use cmdchan_common::protocol::VERSION;
use cmdchan_tests::{Server, TestEnv};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;
use tokio_util::codec::Decoder;

/// Writes `bytes` on a fresh authenticated connection and reads until the server hangs up.
async fn attack(
    server: &Server,
    cred: &std::path::Path,
    bytes: &[u8],
    close_after: bool,
) -> Vec<Response> {
    let mut raw = server.raw(cred).await;
    raw.write_all(bytes).await.unwrap();
    raw.flush().await.unwrap();
    if close_after {
        raw.shutdown().await.unwrap();
    }
    read_to_end(raw).await
}

async fn read_to_end(mut raw: SslStream<TcpStream>) -> Vec<Response> {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server must close the connection");
    decode_all(&buf)
}

fn decode_all(bytes: &[u8]) -> Vec<Response> {
    let mut codec = MsgCodec::<Response, Response>::new(1 << 20);
    let mut buf = bytes::BytesMut::from(bytes);
    std::iter::from_fn(|| codec.decode(&mut buf).unwrap()).collect()
}

fn only_error(responses: &[Response]) -> ErrorCode {
    match responses {
        [Response {
            counter: 0,
            body: Body::Err(f),
            ..
        }] => f.code,
        other => panic!("expected one connection-level error, got {other:?}"),
    }
}

async fn still_served(client: &mut Client) {
    assert_eq!(client.call("ping", &[]).await.unwrap(), Reply::Pong);
}

#[tokio::test]
async fn an_oversized_frame_is_refused_before_it_is_read() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "operator", &[]);
    let server = env.start(&["--max-frame", "1024"]);
    let mut honest = server.client(&cred).await;
    let responses = attack(&server, &cred, &[0x7f, 0xff, 0xff, 0xff, 1, 2, 3], false).await;
    assert_eq!(only_error(&responses), ErrorCode::TooLarge);
    let mut just_over = 1025u32.to_be_bytes().to_vec();
    just_over.extend(vec![1u8; 1025]);
    assert_eq!(
        only_error(&attack(&server, &cred, &just_over, false).await),
        ErrorCode::TooLarge
    );
    still_served(&mut honest).await;
}

#[tokio::test]
async fn a_truncated_frame_ends_only_its_connection() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "operator", &[]);
    let server = env.start(&[]);
    let mut honest = server.client(&cred).await;
    let mut partial = 100u32.to_be_bytes().to_vec();
    partial.extend([1u8; 10]);
    let responses = attack(&server, &cred, &partial, true).await;
    assert!(responses.is_empty(), "nothing to answer: {responses:?}");
    assert!(server.wait_for_log("closed in the middle of a frame"));
    still_served(&mut honest).await;
}

#[tokio::test]
async fn garbage_and_empty_frames_are_refused_malformed() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "operator", &[]);
    let server = env.start(&[]);
    let mut honest = server.client(&cred).await;
    let garbage = [0, 0, 0, 5, VERSION, 0xff, 0xff, 0xff, 0xff];
    assert_eq!(
        only_error(&attack(&server, &cred, &garbage, false).await),
        ErrorCode::Malformed
    );
    assert_eq!(
        only_error(&attack(&server, &cred, &[0, 0, 0, 0], false).await),
        ErrorCode::Malformed
    );
    still_served(&mut honest).await;
    let admitted = server.wait_for_lines("admitted", 1);
    assert_eq!(admitted.len(), 1, "only the honest ping ran");
}

#[tokio::test]
async fn a_future_or_a_version_1_frame_is_refused_clearly() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "operator", &[]);
    let server = env.start(&[]);
    for version in [VERSION + 1, 2, 1] {
        let responses = attack(&server, &cred, &[0, 0, 0, 3, version, 0, 0], false).await;
        assert_eq!(only_error(&responses), ErrorCode::UnsupportedVersion);
        let Body::Err(failure) = &responses[0].body else {
            unreachable!()
        };
        assert!(
            failure.message.contains(&format!("version {version}"))
                && failure.message.contains(&format!("version {VERSION}")),
            "{}",
            failure.message
        );
    }
}

#[tokio::test]
async fn bytes_that_are_not_tls_do_not_disturb_other_clients() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "operator", &[]);
    let server = env.start(&[]);
    let mut honest = server.client(&cred).await;
    let mut tcp = std::net::TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest);
    assert!(server.wait_for_log("handshake failed before any key was chosen"));
    still_served(&mut honest).await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_a_bad_counter_stops_the_rest() {
    use tokio_util::codec::Encoder;
    let env = TestEnv::new();
    let server = env.start(&[]);
    let cred = env.provision("alice", "operator", &[]);
    // A client only to build well-formed requests (counters 1, 2, 3, …).
    let mut builder = server.client(&cred).await;
    let mut requests: Vec<_> = (0..8)
        .map(|_| builder.request("ping", &[]).unwrap())
        .collect();
    requests[5].counter = 42;
    let mut codec = MsgCodec::<Response, cmdchan::ClientMsg>::new(1 << 20);
    let mut bytes = bytes::BytesMut::new();
    for r in &requests {
        codec
            .encode(&cmdchan::ClientMsg::Request(r.clone()), &mut bytes)
            .unwrap();
    }
    // All eight in one write: the server must not wait for anything more to answer.
    let responses = attack(&server, &cred, &bytes, false).await;
    let named: Vec<(u64, [u8; 16])> = responses.iter().map(|r| (r.counter, r.id)).collect();
    let expected: Vec<(u64, [u8; 16])> = requests[..6].iter().map(|r| (r.counter, r.id)).collect();
    assert_eq!(
        named, expected,
        "answers in request order, none after the bad counter"
    );
    assert!(responses[..5]
        .iter()
        .all(|r| r.body == Body::Ok(Reply::Pong)));
    assert!(
        matches!(&responses[5].body, Body::Err(f) if f.code == ErrorCode::BadCounter),
        "{:?}",
        responses[5]
    );
}
