//! Job store files (segments of ended jobs, live files of running ones), as a server's
//! start reads them back: any bytes must give a prefix of whole records whose output
//! chunks parse, never a panic or a read past the end.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let whole = cmdchan_server::jobs::store::recover_bytes(bytes);
    assert!(whole <= bytes.len());
});
