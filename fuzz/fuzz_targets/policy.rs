//! Policy files: any text must load or be refused, never panic.
#![no_main]

use cmdchan_server::policy::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = Policy::parse(text);
});
