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

use std::sync::Arc;

use crate::credential::{Credential, ZoneEntry, ZoneError};
use crate::ident::{printable, Ident, IdentityError, PskIdentity};
use crate::keys::{IdentityKey, Psk, ZoneKey, KEY_LEN};
use crate::sealed;

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
    /// A sealed identity that opened; its key was derived from the zone key of
    /// `generation`. If the handshake then fails, the client holds a different key.
    Identity {
        identity: PskIdentity,
        generation: u64,
    },
    /// A valid identity the server refuses (revoked); a decoy key was used.
    Refused { identity: PskIdentity, why: String },
    /// Not an identity of this zone; a decoy key was used so the client sees what a
    /// wrong key gives. `shown` is the identity escaped and cut to 64 characters.
    Invalid { shown: String, why: IdentityError },
}

/// Builds the server's context for one zone, with one or two generations of its key
/// (rotation). The zone is named in the PSK identity hint. Every identity that opens
/// under one of them gets the key derived from that generation; anything else, or an
/// identity `refuse` names a reason for (a revoked key), gets a decoy key, so the
/// client cannot tell any of them from a wrong key. `refuse` runs inside the handshake:
/// it must be quick and must not block. With `dhe`, the DHE-PSK suites are accepted too
/// (with the ffdhe3072 group in `dh_pem`); otherwise only ECDHE-PSK (see
/// [`ECDHE_ONLY`]).
pub fn server_context<F>(
    keys: Vec<Arc<ZoneKey>>,
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
    if let Some(key) = keys.first() {
        cmdchan_tls_hint::set_psk_identity_hint(&mut b, key.zone.as_str())?;
    }
    let keyring: Vec<(Arc<ZoneKey>, IdentityKey)> = keys
        .into_iter()
        .map(|k| {
            let identity = k.identity_key();
            (k, identity)
        })
        .collect();
    let decoy = Decoy::new()?;
    let index = offered_index()?;
    b.set_psk_server_callback(move |ssl, identity, psk_out| {
        // A panic must not cross the C trampoline (it would abort the process).
        catch_unwind(AssertUnwindSafe(|| {
            let offered = identity.unwrap_or_default();
            let (key, verdict) = match open(&keyring, offered) {
                Ok((zone_key, id)) => match refuse(&id) {
                    None => (
                        zone_key.psk(&id),
                        Offered::Identity {
                            identity: id,
                            generation: zone_key.generation,
                        },
                    ),
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

/// Opens a sealed identity with the key of the generation it names.
fn open<'k>(
    keyring: &'k [(Arc<ZoneKey>, IdentityKey)],
    offered: &[u8],
) -> Result<(&'k ZoneKey, PskIdentity), IdentityError> {
    let generation = sealed::generation_of(offered).ok_or(IdentityError::NotSealed)?;
    let (zone_key, identity_key) = keyring
        .iter()
        .find(|(k, _)| k.generation == generation)
        .ok_or(IdentityError::UnknownGeneration)?;
    let id = sealed::open(identity_key, &zone_key.zone, generation, offered)?;
    Ok((zone_key, id))
}

/// The zone one client connection means to reach, set on its `Ssl` before the
/// handshake; the PSK callback records there why it sent nothing, if it did not.
#[derive(Debug)]
struct ZoneCheck {
    meant: Ident,
    refused: Option<ZoneError>,
    /// The version of the revocation list the server's hint names, if it names one.
    list_version: Option<u64>,
}

/// Builds a client's context for `cred`, once for all its connections. Each
/// connection names the zone it means to reach ([`client_ssl`]); its handshake seals
/// that zone's name and epoch afresh, and sends nothing if the server's identity hint
/// names another zone (or the credential lacks the zone): the reason is then
/// [`zone_refusal`]'s. A server that names no zone gets the meant zone's key, which only
/// a holder of that zone's key can use.
pub fn client_context(cred: Arc<Credential>) -> Result<SslContext, ErrorStack> {
    Ok(client_builder(cred)?.build())
}

/// [`client_context`] before it is built (tools that change its suites).
pub fn client_builder(cred: Arc<Credential>) -> Result<SslContextBuilder, ErrorStack> {
    let mut b = SslContextBuilder::new(SslMethod::tls_client())?;
    harden(&mut b)?;
    let index = zone_index()?;
    b.set_psk_client_callback(move |ssl, hint, identity_out, psk_out| {
        // A panic must not cross the C trampoline (it would abort the process).
        catch_unwind(AssertUnwindSafe(|| {
            let Some(check) = ssl.ex_data_mut(index) else {
                return Ok(0);
            };
            let (named, version) = split_hint(hint.unwrap_or_default());
            check.list_version = version;
            let (zone, entry) = match pick(&cred, &check.meant, Some(named)) {
                Ok(found) => found,
                Err(e) => {
                    check.refused = Some(e);
                    return Ok(0);
                }
            };
            let identity = sealed::seal(
                &entry.identity_key,
                zone,
                entry.generation,
                &cred.identity(entry),
            );
            write_identity(identity.as_bytes(), identity_out)?;
            write_key(&entry.psk, psk_out)
        }))
        .unwrap_or(Ok(0))
    });
    Ok(b)
}

/// A server's identity hint: `ZONE`, or `ZONE rv=N` when it keeps revocation list
/// version N (a space is in no identifier).
pub fn split_hint(hint: &[u8]) -> (&[u8], Option<u64>) {
    let Some(space) = hint.iter().position(|&b| b == b' ') else {
        return (hint, None);
    };
    let version = std::str::from_utf8(&hint[space + 1..])
        .ok()
        .and_then(|rest| rest.strip_prefix("rv="))
        .and_then(|n| n.parse().ok());
    (&hint[..space], version)
}

/// The hint of a server of `zone` that keeps revocation list `version` (none: 0).
pub fn hint(zone: &Ident, version: u64) -> String {
    match version {
        0 => zone.to_string(),
        v => format!("{zone} rv={v}"),
    }
}

/// Sets one server connection's hint to name its zone and revocation list `version`.
pub fn set_hint(ssl: &mut SslRef, zone: &Ident, version: u64) -> Result<(), ErrorStack> {
    cmdchan_tls_hint::set_ssl_psk_identity_hint(ssl, &hint(zone, version))
}

/// The revocation list version the server's hint named on this connection.
pub fn server_list_version(ssl: &SslRef) -> Option<u64> {
    ssl.ex_data(zone_index().ok()?)?.list_version
}

/// The entry of the zone `meant`, if the server's hint names that zone or none.
fn pick<'c>(
    cred: &'c Credential,
    meant: &Ident,
    hint: Option<&[u8]>,
) -> Result<(&'c Ident, &'c ZoneEntry), ZoneError> {
    if let Some(named) = hint.filter(|h| !h.is_empty()) {
        if named != meant.as_str().as_bytes() {
            return Err(ZoneError::Mismatch {
                named: printable(named),
                meant: meant.to_string(),
            });
        }
    }
    cred.zone(Some(meant.as_str()))
}

/// A connection of `ctx` (from [`client_context`]) that means to reach `zone`.
pub fn client_ssl(ctx: &SslContext, zone: &Ident) -> Result<Ssl, ErrorStack> {
    let mut ssl = Ssl::new(ctx)?;
    let check = ZoneCheck {
        meant: zone.clone(),
        refused: None,
        list_version: None,
    };
    ssl.set_ex_data(zone_index()?, check);
    Ok(ssl)
}

/// Why the client's side of this handshake sent no identity, if that is why it failed.
pub fn zone_refusal(ssl: &SslRef) -> Option<ZoneError> {
    ssl.ex_data(zone_index().ok()?)?.refused.clone()
}

fn zone_index() -> Result<Index<Ssl, ZoneCheck>, ErrorStack> {
    static INDEX: OnceLock<Index<Ssl, ZoneCheck>> = OnceLock::new();
    if let Some(index) = INDEX.get() {
        return Ok(*index);
    }
    let index = Ssl::new_ex_index()?;
    Ok(*INDEX.get_or_init(|| index))
}

/// A client's context for a fixed identity text and key (tests and tools that speak
/// for a credential without choosing a zone: `admin psk` gives such a pair).
pub fn fixed_client_builder(identity: &str, psk: &Psk) -> Result<SslContextBuilder, ErrorStack> {
    let mut b = SslContextBuilder::new(SslMethod::tls_client())?;
    harden(&mut b)?;
    let identity = identity.as_bytes().to_vec();
    // The context outlives the caller's borrow: it keeps its own copy, wiped on drop.
    let psk = Psk::from_bytes(*psk.expose());
    b.set_psk_client_callback(move |_ssl, _hint, identity_out, psk_out| {
        write_identity(&identity, identity_out)?;
        write_key(&psk, psk_out)
    });
    Ok(b)
}

/// Writes `identity` NUL-terminated; 0 (no key) if it does not fit.
fn write_identity(identity: &[u8], out: &mut [u8]) -> Result<usize, ErrorStack> {
    let Some(slot) = out.get_mut(..=identity.len()) else {
        return Ok(0);
    };
    slot[..identity.len()].copy_from_slice(identity);
    slot[identity.len()] = 0;
    Ok(identity.len())
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

/// A per-process random secret for decoy keys. It is never derived from a zone key,
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
