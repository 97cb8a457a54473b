//! PSK identities as a peer sends them: any bytes must open or be refused, never panic
//! (the server's PSK callback runs this on every handshake).
#![no_main]

use cmdchan_common::ident::Ident;
use cmdchan_common::keys::ZoneKey;
use cmdchan_common::sealed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let zone = ZoneKey::new(Ident::new("prod").expect("valid"), 1, [7; 32]);
    let _ = sealed::generation_of(bytes);
    let _ = sealed::open(&zone.identity_key(), &zone.zone, 1, bytes);
});
