//! Any decodable request through every admission check: must refuse or admit, never panic.
#![no_main]

use cmdchan_common::protocol::Request;
use cmdchan_server::admit::{check, Fixture};
use cmdchan_server::policy::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = postcard::from_bytes::<Request>(data) else { return };
    let fixture = Fixture::new(Policy::builtin_default(), 4);
    let _ = check(&req, req.counter, &fixture.key, &fixture.rules(), req.issued_at);
});
