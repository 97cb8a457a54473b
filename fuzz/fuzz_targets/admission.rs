//! Any decodable request through every admission check: must refuse or admit, never panic.
#![no_main]

use std::sync::Arc;

use cmdchan_common::ident::{Ident, PskIdentity};
use cmdchan_common::keys::ZoneKey;
use cmdchan_common::protocol::Request;
use cmdchan_server::admit::{check, Rules};
use cmdchan_server::policy::Policy;
use cmdchan_server::rate::RateLimiter;
use cmdchan_server::revoke::Revocations;
use libfuzzer_sys::fuzz_target;
use tokio::sync::Semaphore;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = postcard::from_bytes::<Request>(data) else { return };
    let master = ZoneKey::new(Ident::new("test").expect("valid"), 1, [0x42; 32]);
    let tag_key = master.tag_key();
    let server = Ident::new("db1").expect("valid");
    let revocations = Revocations::default();
    let policy = Policy::builtin_default();
    let executions = Arc::new(Semaphore::new(4));
    let limiter = RateLimiter::default();
    let rules = Rules {
        tag_key: &tag_key,
        server_id: &server,
        window: 60,
        revocations: &revocations,
        policy: &policy,
        executions: &executions,
        limiter: &limiter,
        rate: (1000.0, 1000.0),
        tag_proven: false,
        arrived: std::time::Instant::now(),
        stdin_was_open: false,
    };
    let key = PskIdentity { name: Ident::new("alice").expect("valid"), epoch: 0 };
    let _ = check(&req, req.counter, &key, &rules, req.issued_at);
});
