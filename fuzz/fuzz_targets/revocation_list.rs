//! Revocation lists as a server reads them (from a client's push, and from its own file
//! at start) and the identity hints a client reads from a server: any bytes give a list
//! or an error, never a panic, and a list that reads back verifies or is refused.
#![no_main]

use cmdchan_common::revocation::SignedList;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = cmdchan_common::tls::split_hint(text.as_bytes());
    if let Ok(signed) = SignedList::from_text(text) {
        let _ = signed.verify(&[7; 32]);
        assert_eq!(SignedList::from_text(&signed.to_text()).as_ref(), Ok(&signed));
    }
});
