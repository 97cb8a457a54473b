//! Audit files, as `audit-verify` walks them: any bytes must give a verdict, never a
//! panic.
#![no_main]

use cmdchan_common::keys::AuditKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let key = AuditKey::from_bytes([7; 32]);
    let _ = cmdchan_server::audit::verify::verify_from(bytes, std::slice::from_ref(&key), None, Some("00"));
});
