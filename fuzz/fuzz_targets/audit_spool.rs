//! Audit spools, as `audit-verify` and `admin spool-output` read them: any bytes must
//! give each run's digests and what is wrong, never a panic.
#![no_main]

use cmdchan_server::audit::spool;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let contents = spool::read(bytes);
    if let Some((at, _)) = contents.broken {
        assert!(at <= bytes.len() as u64);
    }
    let _ = spool::output_of(bytes, &[0; 16]);
    let _ = spool::check(bytes, &[]);
});
