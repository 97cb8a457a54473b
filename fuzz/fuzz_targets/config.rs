//! Server config files: any text must parse or be refused, never panic, and a refusal
//! never quotes a URL's password.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(e) = cmdchan_server::config::check_text(text) {
        assert!(!e.contains("pa55word") || !text.contains("://u:pa55word@"), "{e}");
    }
});
