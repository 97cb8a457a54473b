//! DNS answers, as a name server sends them for `srv:` inventories: any bytes give SRV
//! records or an error, never a panic or a loop, and every record read names a target
//! of host-name characters.
#![no_main]

use cmdchan::inventory::srv;
use libfuzzer_sys::fuzz_target;

/// The question the fuzzed answers answer: `_cmdchan._tcp.x`, ID 0x1234.
const QUERY: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x08_cmdchan\x04_tcp\x01x\x00\x00\x21\x00\x01";

fuzz_target!(|answer: &[u8]| {
    if let Ok(records) = srv::parse(answer, QUERY) {
        for r in records {
            assert!(r
                .target
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.'));
        }
    }
});
