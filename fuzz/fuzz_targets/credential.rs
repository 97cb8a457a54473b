//! Credential files: any text must parse or be refused, never panic.
#![no_main]

use cmdchan_common::credential::Credential;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = Credential::from_toml(text);
});
