//! The admission path, step by step and whole, in ns per request: frame decode, tag
//! verification, the pure checks (counter, tag, revocation, expiry, audience, freshness,
//! policy), the command-ID claim in the memory and file stores, and `admit` end to end.
//! Two crypto floors for reference: HMAC-SHA256 and ChaCha20-Poly1305 over 64 bytes.
//!
//! `cargo bench -p cmdchan-server --bench admission`

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion};
use hmac::{Hmac, KeyInit, Mac};
use openssl::symm::{encrypt_aead, Cipher};
use sha2::Sha256;

use tokio_util::codec::{Decoder, Encoder};

use cmdchan_common::frame::{MsgCodec, DEFAULT_MAX_FRAME};
use cmdchan_common::ident::Ident;

use cmdchan_common::protocol::{Grant, Request, Response};
use cmdchan_common::time;
use cmdchan_server::admit::{self, Fixture, Rules};
use cmdchan_server::policy::Policy;
use cmdchan_server::replay::{Entry, Record, State, Store, StoreOptions, StoreSpec};

fn ident(s: &str) -> Ident {
    Ident::new(s).expect("valid")
}

/// A fresh command ID per call, as every real request has.
fn next_id(n: &mut u128) -> [u8; 16] {
    *n += 1;
    n.to_be_bytes()
}

fn admission(c: &mut Criterion) {
    let mut fixture = Fixture::new(Policy::builtin_default(), 32);
    fixture.rate = (1e12, 1e12);
    let rules = fixture.rules();
    let key = fixture.key.clone();
    let tag_key = &fixture.tag_key;
    let grant = Grant {
        role: ident("ops"),
        epoch: 0,
        expires: None,
        servers: vec![ident("db1")],
    };
    let req = fixture.request(grant, "ping", time::now());
    let mut frame = BytesMut::new();
    MsgCodec::<Response, Request>::new(DEFAULT_MAX_FRAME)
        .encode(&req, &mut frame)
        .expect("encode");

    let mut codec = MsgCodec::<Request, Response>::new(DEFAULT_MAX_FRAME);
    c.bench_function("decode a ping frame", |b| {
        b.iter(|| {
            let mut buf = frame.clone();
            codec
                .decode(&mut buf)
                .expect("decode")
                .expect("whole frame")
        })
    });
    c.bench_function("verify the key-use tag", |b| {
        b.iter(|| assert!(tag_key.verify(&key.name, &req.grant, &req.tag)))
    });
    c.bench_function("pure checks (counter to policy)", |b| {
        b.iter(|| admit::check(&req, 1, &key, &rules, req.issued_at).is_ok())
    });
    let proven = (req.grant.clone(), req.tag);
    c.bench_function(
        "pure checks, grant and tag proven earlier on the connection",
        |b| {
            b.iter(|| {
                let mut rules = Rules { ..rules };
                rules.tag_proven = admit::proven(Some(&proven), &req);
                admit::check(&req, 1, &key, &rules, req.issued_at).is_ok()
            })
        },
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let entry = Entry {
        client: "alice".into(),
        digest: 1,
        state: State::Running,
    };
    for (name, spec) in [
        ("memory", StoreSpec::Memory),
        ("file", StoreSpec::File(dir.path().join("replay"))),
    ] {
        let store = rt
            .block_on(Store::open(
                &spec,
                &StoreOptions::with_max(50_000_000),
                0,
                Default::default(),
            ))
            .expect("store");
        let mut n = 0u128;
        c.bench_function(&format!("claim a command ID ({name} store)"), |b| {
            b.iter(|| {
                let id = next_id(&mut n);
                rt.block_on(store.claim(
                    &Record {
                        id,
                        until: u64::MAX / 2,
                        entry: entry.clone(),
                    },
                    1,
                    false,
                ))
                .expect("claim")
            })
        });
        let mut req = req.clone();
        c.bench_function(&format!("admit a ping end to end ({name} store)"), |b| {
            b.iter(|| {
                req.id = next_id(&mut n);
                let admitted =
                    rt.block_on(admit::admit(&req, 1, &key, &rules, &store, req.issued_at));
                assert!(admitted.is_ok());
            })
        });
    }

    // A store at its limit refuses fresh IDs (fails closed); the refusal must stay as
    // cheap as a claim, not cost a scan of every ID it holds.
    const FULL: usize = 100_000;
    let full = rt
        .block_on(Store::open(
            &StoreSpec::Memory,
            &StoreOptions::with_max(FULL),
            0,
            Default::default(),
        ))
        .expect("store");
    let mut n = 0u128;
    for _ in 0..FULL {
        let id = next_id(&mut n);
        rt.block_on(full.claim(
            &Record {
                id,
                until: u64::MAX / 2,
                entry: entry.clone(),
            },
            1,
            false,
        ))
        .expect("fill");
    }
    c.bench_function(
        &format!("refuse a command ID, the store full ({FULL} IDs)"),
        |b| {
            b.iter(|| {
                let id = next_id(&mut n);
                let refused = rt.block_on(full.claim(
                    &Record {
                        id,
                        until: u64::MAX / 2,
                        entry: entry.clone(),
                    },
                    1,
                    false,
                ));
                assert!(refused.is_err());
            })
        },
    );

    let message = [7u8; 64];
    c.bench_function("floor: HMAC-SHA256 of 64 bytes", |b| {
        b.iter(|| {
            let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&[1; 32]).expect("any key");
            mac.chain_update(message).finalize()
        })
    });
    let cipher = Cipher::chacha20_poly1305();
    c.bench_function(
        "floor: ChaCha20-Poly1305 seal of 64 bytes (one-shot, context set-up included)",
        |b| {
            let mut tag = [0u8; 16];
            b.iter(|| encrypt_aead(cipher, &[2; 32], Some(&[3; 12]), &[], &message, &mut tag))
        },
    );
}

criterion_group!(benches, admission);
criterion_main!(benches);
