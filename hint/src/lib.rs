//! Sets the PSK identity hint of a server's TLS context, or of one connection:
//! rust-openssl exposes reading a hint (`SslRef::psk_identity_hint`) but not
//! `SSL_CTX_use_psk_identity_hint` or `SSL_use_psk_identity_hint`. A cmdchan server
//! names its zone there (and the version of its revocation list); a TLS 1.2
//! (EC)DHE-PSK ServerKeyExchange carries it to the client, which picks that zone's key.
//!
//! Unsafe code, kept to these two calls in a crate of its own (cgroup-exec holds the
//! workspace's only other unsafe block).

use std::ffi::{c_char, c_int, CString};

use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::ssl::{SslContextBuilder, SslRef};

extern "C" {
    // int SSL_CTX_use_psk_identity_hint(SSL_CTX *ctx, const char *hint);
    // int SSL_use_psk_identity_hint(SSL *s, const char *hint);
    // (libssl, linked by openssl-sys)
    fn SSL_CTX_use_psk_identity_hint(ctx: *mut openssl_sys::SSL_CTX, hint: *const c_char) -> c_int;
    fn SSL_use_psk_identity_hint(s: *mut openssl_sys::SSL, hint: *const c_char) -> c_int;
}

/// Sets the identity hint of one connection, before its handshake (it replaces the
/// context's). Same limits as [`set_psk_identity_hint`].
pub fn set_ssl_psk_identity_hint(ssl: &mut SslRef, hint: &str) -> Result<(), ErrorStack> {
    let hint = CString::new(hint).map_err(|_| ErrorStack::get())?;
    #[allow(
        unsafe_code,
        reason = "the FFI call rust-openssl lacks; the safety argument is beside it"
    )]
    // SAFETY: `ssl.as_ptr()` is the live SSL `ssl` borrows mutably for this whole call;
    // `hint` is a NUL-terminated C string that lives until the call returns, and OpenSSL
    // copies it (OPENSSL_strdup) before returning, keeping no pointer to it.
    let set = unsafe { SSL_use_psk_identity_hint(ssl.as_ptr(), hint.as_ptr()) };
    match set {
        1 => Ok(()),
        _ => Err(ErrorStack::get()),
    }
}

/// Sets the identity hint every handshake of `builder`'s contexts sends. `hint` must not
/// hold NUL and must be at most 256 bytes (OpenSSL refuses longer ones).
pub fn set_psk_identity_hint(
    builder: &mut SslContextBuilder,
    hint: &str,
) -> Result<(), ErrorStack> {
    let hint = CString::new(hint).map_err(|_| ErrorStack::get())?;
    #[allow(
        unsafe_code,
        reason = "the one FFI call rust-openssl lacks; the safety argument is beside it"
    )]
    // SAFETY: `builder.as_ptr()` is the live SSL_CTX the builder owns for this whole call;
    // `hint` is a NUL-terminated C string that lives until the call returns, and OpenSSL
    // copies it (OPENSSL_strdup) before returning, keeping no pointer to it.
    let set = unsafe { SSL_CTX_use_psk_identity_hint(builder.as_ptr(), hint.as_ptr()) };
    match set {
        1 => Ok(()),
        _ => Err(ErrorStack::get()),
    }
}
