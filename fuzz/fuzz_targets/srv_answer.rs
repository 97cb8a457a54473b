//! DNS answers, as a name server sends them for `srv:` inventories: any bytes give SRV
//! records or an error, never a panic or a loop, and every record read names a target
//! of host-name characters.
#![no_main]

use cmdchan::inventory::srv;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|answer: &[u8]| {
    let id = answer
        .get(..2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    if let Ok(records) = srv::parse(answer, id) {
        for r in records {
            assert!(r
                .target
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.'));
        }
    }
});
