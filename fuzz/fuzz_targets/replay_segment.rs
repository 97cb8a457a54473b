//! Replay segment files, as recovery reads them back: any bytes must give a prefix of
//! whole records, never a panic or a read past the end.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let whole = cmdchan_server::replay::whole_records(bytes);
    assert!(whole <= bytes.len());
});
