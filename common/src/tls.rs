//! OpenSSL contexts for both ends: TLS 1.2 only, (EC)DHE-PSK AEAD suites only, nothing
//! resumable, renegotiable or compressed. The server's PSK callback lives here too.
//!
//! Contexts are built once and shared; OpenSSL's PSK callbacks exist only per context.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use hmac::{Hmac, KeyInit, Mac};
use openssl::dh::Dh;
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions, SslRef,
    SslSessionCacheMode, SslVersion,
};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::ident::{printable, IdentityError, PskIdentity};
use crate::keys::{MasterKey, Psk, KEY_LEN};

/// The only suites either side offers or accepts, server's preference first.
pub const CIPHERS: &str = "ECDHE-PSK-CHACHA20-POLY1305:DHE-PSK-AES256-GCM-SHA384:\
                           DHE-PSK-CHACHA20-POLY1305:DHE-PSK-AES128-GCM-SHA256";

/// What a server accepts unless told to take DHE too: an ffdhe3072 key generation
/// costs the server about 9 ms of CPU for any ClientHello, before the client has proven
/// anything (40 times an X25519 one), so DHE-PSK is opt-in.
pub const ECDHE_ONLY: &str = "ECDHE-PSK-CHACHA20-POLY1305";

/// ECDHE groups, preferred first.
pub const GROUPS: &str = "X25519:P-256";

/// RFC 7919 ffdhe3072 parameters for the DHE-PSK suites (public values, not a secret).
pub const FFDHE3072_PEM: &[u8] = include_bytes!("ffdhe3072.pem");

/// What the server's PSK callback made of the identity a client offered. Kept on the
/// connection so the server can log why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offered {
    /// A well-formed identity; its key was derived. If the handshake then fails, the
    /// client holds a different key.
    Identity(PskIdentity),
    /// A valid identity the server refuses (revoked); a decoy key was used.
    Refused { identity: PskIdentity, why: String },
    /// Not a valid identity; a decoy key was used so the client sees what a wrong key
    /// gives. `shown` is the identity escaped and cut to 64 characters, safe to log.
    Invalid { shown: String, why: IdentityError },
}

/// Builds the server's context. Every valid identity gets the key derived from `master`;
/// an invalid one, or one `refuse` names a reason for (a revoked key), gets a decoy key,
/// so the client cannot tell any of them from a wrong key. `refuse` runs inside the
/// handshake: it must be quick and must not block.
/// With `dhe`, the DHE-PSK suites are accepted too (with the ffdhe3072 group in
/// `dh_pem`); otherwise only ECDHE-PSK (see [`ECDHE_ONLY`]).
pub fn server_context<F>(
    master: MasterKey,
    dh_pem: &[u8],
    dhe: bool,
    refuse: F,
) -> Result<SslContext, ErrorStack>
where
    F: Fn(&PskIdentity) -> Option<String> + Send + Sync + 'static,
{
    let mut b = SslContextBuilder::new(SslMethod::tls_server())?;
    harden(&mut b)?;
    b.set_options(SslOptions::CIPHER_SERVER_PREFERENCE);
    if dhe {
        let dh = Dh::params_from_pem(dh_pem)?;
        b.set_tmp_dh(&dh)?;
    } else {
        b.set_cipher_list(ECDHE_ONLY)?;
    }
    let decoy = Decoy::new()?;
    let index = offered_index()?;
    b.set_psk_server_callback(move |ssl, identity, psk_out| {
        // A panic must not cross the C trampoline (it would abort the process).
        catch_unwind(AssertUnwindSafe(|| {
            let offered = identity.unwrap_or_default();
            let (key, verdict) = match PskIdentity::parse(offered) {
                Ok(id) => match refuse(&id) {
                    None => (master.psk(&id), Offered::Identity(id)),
                    Some(why) => (decoy.psk(offered), Offered::Refused { identity: id, why }),
                },
                Err(why) => (
                    decoy.psk(offered),
                    Offered::Invalid {
                        shown: printable(offered),
                        why,
                    },
                ),
            };
            ssl.set_ex_data(index, verdict);
            write_key(&key, psk_out)
        }))
        .unwrap_or(Ok(0))
    });
    Ok(b.build())
}

/// Builds a client's context for one identity and key.
pub fn client_context(identity: &PskIdentity, psk: &Psk) -> Result<SslContext, ErrorStack> {
    Ok(client_builder(identity, psk)?.build())
}

/// The builder behind [`client_context`], for a caller that narrows it further (the
/// benchmark offers one suite at a time).
pub fn client_builder(identity: &PskIdentity, psk: &Psk) -> Result<SslContextBuilder, ErrorStack> {
    let mut b = SslContextBuilder::new(SslMethod::tls_client())?;
    harden(&mut b)?;
    let mut name = identity.to_string().into_bytes();
    name.push(0);
    // The context outlives the caller's borrow: it keeps its own copy, wiped on drop.
    let psk = Psk::from_bytes(*psk.expose());
    b.set_psk_client_callback(move |_ssl, _hint, identity_out, psk_out| {
        let Some(out) = identity_out.get_mut(..name.len()) else {
            return Ok(0);
        };
        out.copy_from_slice(&name);
        write_key(&psk, psk_out)
    });
    Ok(b)
}

/// What the PSK callback decided for this connection, if it ran.
pub fn offered(ssl: &SslRef) -> Option<&Offered> {
    ssl.ex_data(offered_index().ok()?)
}

/// The settings both sides share (MISSION.md §2, NOTES-TLS-PSK.md "Hardening calls").
fn harden(b: &mut SslContextBuilder) -> Result<(), ErrorStack> {
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    b.set_max_proto_version(Some(SslVersion::TLS1_2))?;
    b.set_cipher_list(CIPHERS)?;
    b.set_groups_list(GROUPS)?;
    // Level 2: at least 112-bit security, so DHE groups under 2048 bits are refused.
    b.set_security_level(2);
    b.set_options(
        SslOptions::NO_TICKET | SslOptions::NO_RENEGOTIATION | SslOptions::NO_COMPRESSION,
    );
    b.set_session_cache_mode(SslSessionCacheMode::OFF);
    b.set_num_tickets(0)?;
    b.set_max_early_data(0)?;
    b.set_mode(SslMode::RELEASE_BUFFERS);
    // Read as much as the socket holds: a record's header and body in one read(2)
    // instead of two, and requests sent together in one.
    b.set_read_ahead(true);
    Ok(())
}

fn write_key(psk: &Psk, out: &mut [u8]) -> Result<usize, ErrorStack> {
    match out.get_mut(..KEY_LEN) {
        Some(slot) => {
            slot.copy_from_slice(psk.expose());
            Ok(KEY_LEN)
        }
        None => Ok(0),
    }
}

fn offered_index() -> Result<Index<Ssl, Offered>, ErrorStack> {
    static INDEX: OnceLock<Index<Ssl, Offered>> = OnceLock::new();
    if let Some(index) = INDEX.get() {
        return Ok(*index);
    }
    let index = Ssl::new_ex_index()?;
    Ok(*INDEX.get_or_init(|| index))
}

/// A per-process random secret for decoy keys. It is never derived from the master key,
/// so a decoy can never equal a real client's key.
struct Decoy(Zeroizing<[u8; KEY_LEN]>);

impl Decoy {
    fn new() -> Result<Self, ErrorStack> {
        let mut secret = Zeroizing::new([0u8; KEY_LEN]);
        openssl::rand::rand_bytes(secret.as_mut())?;
        Ok(Self(secret))
    }

    /// `decoy = HMAC-SHA256(secret, identity)`: stable per identity within a process.
    fn psk(&self, identity: &[u8]) -> Psk {
        // HMAC accepts a key of any length, so this cannot fail.
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.0.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        Psk::from_bytes(mac.chain_update(identity).finalize().into_bytes().into())
    }
}
