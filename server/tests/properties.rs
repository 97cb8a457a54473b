//! Property tests over the entry points a peer or a file controls: frame decoding,
//! request decoding and admission, PSK identities, credential and policy files. Each
//! gets thousands of arbitrary inputs and must refuse cleanly, never panic. (The same
//! entry points are what a coverage-guided fuzzer would drive; this runs on stable Rust
//! in CI.)

use bytes::BytesMut;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

use cmdchan_common::credential::Credential;
use cmdchan_common::frame::MsgCodec;
use cmdchan_common::ident::{Ident, PskIdentity};
use cmdchan_common::protocol::{Grant, Request, Response};
use cmdchan_server::admit::{check, Fixture, Refusal};
use cmdchan_server::policy::Policy;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2_000,
        ..ProptestConfig::default()
    }
}

fn decode(bytes: &[u8]) {
    let mut codec = MsgCodec::<Request, Response>::new(64 * 1024);
    let mut buf = BytesMut::from(bytes);
    // Decode until the codec wants more bytes or refuses; a refusal ends a connection.
    while let Ok(Some(_)) = codec.decode(&mut buf) {}
    let _ = codec.decode_eof(&mut buf);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn frame_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        decode(&bytes);
    }

    #[test]
    fn a_well_framed_random_payload_is_decoded_or_refused(payload in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let mut frame = u32::try_from(payload.len() + 1).unwrap_or(0).to_be_bytes().to_vec();
        frame.push(1);
        frame.extend(&payload);
        decode(&frame);
    }

    #[test]
    fn admission_refuses_any_request_without_the_real_tag(
        role in "[a-z]{1,8}", epoch in 0u64..3, expires in proptest::option::of(any::<u64>()),
        tag in any::<[u8; 32]>(), counter in 0u64..3, issued_at in any::<u64>(),
        command in ".{0,20}", args in proptest::collection::vec(".{0,10}", 0..3),
    ) {
        let f = fixture();
        let grant = Grant { role: Ident::new(role).expect("valid"), epoch, expires, servers: vec![] };
        let req = Request { counter, id: [1; 16], issued_at, target: f.server.clone(), grant, tag, command, args, params: vec![], detach: false, run: None, approval: None };
        let verdict = check(&req, 1, &f.key, &f.rules(), 1_800_000_000);
        prop_assert!(verdict.is_err());
        if counter == 1 && epoch == 0 {
            prop_assert!(matches!(verdict.err(), Some(Refusal::BadTag)));
        }
    }

    #[test]
    fn admission_never_panics_on_any_decodable_request(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(req) = postcard::from_bytes::<Request>(&bytes) {
            let f = fixture();
            let _ = check(&req, req.counter, &f.key, &f.rules(), req.issued_at);
        }
    }

    /// The server's PSK callback opens whatever identity a peer sends.
    #[test]
    fn sealed_identities_open_or_are_refused_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let zone = cmdchan_common::keys::ZoneKey::new(Ident::new("prod").expect("valid"), 1, [7; 32]);
        let _ = cmdchan_common::sealed::generation_of(&bytes);
        prop_assert!(cmdchan_common::sealed::open(&zone.identity_key(), &zone.zone, 1, &bytes).is_err());
    }

    #[test]
    fn psk_identities_parse_only_in_canonical_form(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(id) = PskIdentity::parse(&bytes) {
            prop_assert_eq!(id.to_string().into_bytes(), bytes);
        }
    }

    #[test]
    fn credential_parsing_never_panics_nor_shows_the_key(pos in 0usize..400, byte in any::<u8>()) {
        let mut text = CREDENTIAL.as_bytes().to_vec();
        let at = pos % text.len();
        text[at] = byte;
        if let Ok(text) = std::str::from_utf8(&text) {
            if let Err(e) = Credential::from_toml(text) {
                prop_assert!(!e.contains(&PSK[4..60]), "{}", e);
            }
        }
    }

    #[test]
    fn policy_parsing_never_panics(text in "(\\[|\\]|roles|commands|default|program|args|params|\"|=|\\.|\n|[a-z/{}]| ){0,200}") {
        let _ = Policy::parse(&text);
    }
}

const PSK: &str = "5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7";
const CREDENTIAL: &str = "name = \"alice\"\nrole = \"ops\"\nepoch = 0\nservers = [\"db1\"]\n\
tag = \"0000000000000000000000000000000000000000000000000000000000000000\"\n\
psk = \"5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7\"\n";

/// The made-up server every admission property runs against.
fn fixture() -> Fixture {
    Fixture::new(Policy::builtin_default(), 4)
}

proptest! {
    #![proptest_config(config())]

    /// Recovery reads segment files a torn write or anyone with disk access wrote.
    #[test]
    fn replay_segments_decode_to_a_prefix_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let whole = cmdchan_server::replay::whole_records(&bytes);
        prop_assert!(whole <= bytes.len());
    }

    #[test]
    fn audit_verify_gives_a_verdict_for_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let key = cmdchan_common::keys::AuditKey::from_bytes([7; 32]);
        let _ = cmdchan_server::audit::verify::verify_from(&bytes[..], std::slice::from_ref(&key), None, Some("00"));
    }

    /// A broken config line that holds a Redis URL never has its password shown.
    #[test]
    fn config_errors_never_show_a_url_password(
        before in "[a-z_ =\"\\[\\]\n0-9]{0,30}", after in "[a-z_ =\"\\[\\]\n0-9]{0,30}",
    ) {
        let text = format!("{before}replay_store = redis://u:pa55word@h:1/0{after}");
        if let Err(e) = cmdchan_server::config::check_text(&text) {
            prop_assert!(!e.contains("pa55word"), "{}", e);
        }
    }
}
