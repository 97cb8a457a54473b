//! The PSK identity on the wire: the client's name and key epoch sealed under its zone's
//! identity key with a fresh nonce per connection, so that an observer can neither read
//! a name nor link two connections of one client.
//!
//! ```text
//! identity  = "c2." || decimal(GENERATION) || "." || base64url(nonce || ciphertext || tag)
//! plaintext = u8(len(NAME)) || NAME || zero bytes up to 129 || u64(EPOCH)     (137 bytes)
//! aad       = bytes("cmdchan/v2/identity") || bytes(ZONE) || u64(GENERATION)
//! AEAD      = ChaCha20-Poly1305 (RFC 8439), key = the zone's identity key, nonce 12 bytes
//! ```
//! base64url is RFC 4648 §5 without padding (165 bytes make exactly 220 characters), so
//! every identity is as long as every other of its generation: the length says nothing
//! about the name. The generation is in clear so the server knows which key opens it.

use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};

use crate::base64url;
use crate::encode::Canonical;
use crate::ident::{Ident, IdentityError, PskIdentity, MAX_IDENT_LEN};
use crate::keys::{IdentityKey, Label};

const PREFIX: &str = "c2.";
const NONCE: usize = 12;
const TAG: usize = 16;
/// The name's length byte, the name padded to the longest identifier, the epoch.
const PLAINTEXT: usize = 1 + MAX_IDENT_LEN + 8;

/// Seals `id` for `zone`, generation `generation`, with a fresh random nonce.
pub fn seal(key: &IdentityKey, zone: &Ident, generation: u64, id: &PskIdentity) -> String {
    let mut nonce = [0u8; NONCE];
    // Without randomness every identity of a client would be the same, which is what
    // this hides; OpenSSL's CSPRNG fails only on a system with no entropy at all.
    let _ = openssl::rand::rand_bytes(&mut nonce);
    seal_with(key, zone, generation, id, nonce)
}

/// [`seal`] with a given nonce (for test vectors and `admin psk`'s fixed identity).
pub fn seal_with(
    key: &IdentityKey,
    zone: &Ident,
    generation: u64,
    id: &PskIdentity,
    nonce: [u8; NONCE],
) -> String {
    let mut plaintext = [0u8; PLAINTEXT];
    let name = id.name.as_str().as_bytes();
    // An identifier is at most 128 bytes, so its length fits the byte and the padding.
    plaintext[0] = name.len() as u8;
    plaintext[1..=name.len()].copy_from_slice(name);
    plaintext[1 + MAX_IDENT_LEN..].copy_from_slice(&id.epoch.to_be_bytes());
    seal_plaintext(key, zone, generation, &plaintext, nonce)
}

fn seal_plaintext(
    key: &IdentityKey,
    zone: &Ident,
    generation: u64,
    plaintext: &[u8; PLAINTEXT],
    nonce: [u8; NONCE],
) -> String {
    let mut tag = [0u8; TAG];
    let sealed = encrypt_aead(
        Cipher::chacha20_poly1305(),
        &key.0,
        Some(&nonce),
        &aad(zone, generation),
        plaintext,
        &mut tag,
    )
    .unwrap_or_default();
    let mut raw = Vec::with_capacity(NONCE + PLAINTEXT + TAG);
    raw.extend_from_slice(&nonce);
    raw.extend_from_slice(&sealed);
    raw.extend_from_slice(&tag);
    format!("{PREFIX}{generation}.{}", base64url::encode(&raw))
}

/// The generation an identity says it was sealed for, if it is one of ours at all.
pub fn generation_of(identity: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(identity).ok()?.strip_prefix(PREFIX)?;
    let (digits, _) = text.split_once('.')?;
    // Decimal digits only ("+1" is not a generation) and no leading zero: one number,
    // one way of writing it.
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    canonical.then(|| digits.parse().ok()).flatten()
}

/// Opens an identity sealed for `zone` and `generation`: the client's name and epoch,
/// or why not (not ours, tampered with, another zone's or generation's key).
pub fn open(
    key: &IdentityKey,
    zone: &Ident,
    generation: u64,
    identity: &[u8],
) -> Result<PskIdentity, IdentityError> {
    let text = std::str::from_utf8(identity).map_err(|_| IdentityError::NotUtf8)?;
    let body = text
        .strip_prefix(PREFIX)
        .and_then(|t| t.split_once('.'))
        .map(|(_, body)| body)
        .ok_or(IdentityError::NotSealed)?;
    let raw = base64url::decode(body).ok_or(IdentityError::NotSealed)?;
    if raw.len() != NONCE + PLAINTEXT + TAG {
        return Err(IdentityError::NotSealed);
    }
    let (nonce, rest) = raw.split_at(NONCE);
    let (sealed, tag) = rest.split_at(PLAINTEXT);
    let plaintext = decrypt_aead(
        Cipher::chacha20_poly1305(),
        &key.0,
        Some(nonce),
        &aad(zone, generation),
        sealed,
        tag,
    )
    .map_err(|_| IdentityError::Unsealed)?;
    let len = usize::from(plaintext[0]);
    let name = plaintext.get(1..=len).ok_or(IdentityError::Unsealed)?;
    // The padding is zeros, as sealed: one name, one plaintext.
    let padding = plaintext
        .get(1 + len..1 + MAX_IDENT_LEN)
        .ok_or(IdentityError::Unsealed)?;
    if padding.iter().any(|&b| b != 0) {
        return Err(IdentityError::Unsealed);
    }
    let name = std::str::from_utf8(name).map_err(|_| IdentityError::Unsealed)?;
    let name = Ident::new(name).map_err(IdentityError::Name)?;
    let epoch = plaintext
        .get(1 + MAX_IDENT_LEN..)
        .and_then(|e| <[u8; 8]>::try_from(e).ok())
        .map(u64::from_be_bytes)
        .ok_or(IdentityError::Unsealed)?;
    Ok(PskIdentity { name, epoch })
}

/// `aad = bytes(label) || bytes(ZONE) || u64(GENERATION)`
fn aad(zone: &Ident, generation: u64) -> Vec<u8> {
    Canonical::new()
        .bytes(Label::Identity.as_bytes())
        .bytes(zone.as_str().as_bytes())
        .u64(generation)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::vector_zone;

    fn alice(epoch: u64) -> PskIdentity {
        PskIdentity {
            name: Ident::new("alice").expect("valid"),
            epoch,
        }
    }

    #[test]
    fn a_sealed_identity_opens_only_with_its_zone_and_generation() {
        let zone = vector_zone();
        let key = zone.identity_key();
        let sealed = seal(&key, &zone.zone, 1, &alice(3));
        assert_eq!(open(&key, &zone.zone, 1, sealed.as_bytes()), Ok(alice(3)));
        assert_eq!(generation_of(sealed.as_bytes()), Some(1));
        let other = Ident::new("staging").expect("valid");
        assert_eq!(
            open(&key, &other, 1, sealed.as_bytes()),
            Err(IdentityError::Unsealed)
        );
        assert_eq!(
            open(&key, &zone.zone, 2, sealed.as_bytes()),
            Err(IdentityError::Unsealed)
        );
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 5;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(open(&key, &zone.zone, 1, &tampered).is_err());
    }

    #[test]
    fn identities_differ_every_time_never_show_the_name_and_all_have_one_length() {
        let zone = vector_zone();
        let key = zone.identity_key();
        let long = PskIdentity {
            name: Ident::new("x".repeat(128)).expect("valid"),
            epoch: u64::MAX,
        };
        let a = seal(&key, &zone.zone, 1, &alice(0));
        let b = seal(&key, &zone.zone, 1, &alice(0));
        let c = seal(&key, &zone.zone, 1, &long);
        assert_ne!(a, b);
        assert!(!a.contains("alice") && !a.to_lowercase().contains("alic"));
        assert_eq!(
            (a.len(), c.len()),
            (225, 225),
            "within OpenSSL's 256 bytes, one length"
        );
        assert_eq!(open(&key, &zone.zone, 1, c.as_bytes()), Ok(long));
    }

    #[test]
    fn only_the_canonical_form_opens_zero_padding_and_a_plain_generation() {
        let zone = vector_zone();
        let key = zone.identity_key();
        let mut plaintext = [0u8; PLAINTEXT];
        plaintext[0] = 5;
        plaintext[1..6].copy_from_slice(b"alice");
        plaintext[100] = 1;
        let padded = seal_plaintext(&key, &zone.zone, 1, &plaintext, [9; NONCE]);
        assert_eq!(
            open(&key, &zone.zone, 1, padded.as_bytes()),
            Err(IdentityError::Unsealed)
        );
        let sealed = seal(&key, &zone.zone, 1, &alice(0));
        let body = sealed.strip_prefix("c2.1.").expect("generation 1");
        for other in ["c2.+1.", "c2.01.", "c2. 1.", "c2.1a."] {
            assert_eq!(
                generation_of(format!("{other}{body}").as_bytes()),
                None,
                "{other}"
            );
        }
    }

    #[test]
    fn the_sealed_identity_matches_protocol_md_vector() {
        let zone = vector_zone();
        let nonce: [u8; 12] = std::array::from_fn(|i| i as u8);
        let sealed = seal_with(&zone.identity_key(), &zone.zone, 1, &alice(7), nonce);
        assert_eq!(sealed, "c2.1.AAECAwQFBgcICQoLc7RIZg268vo7LKNQU933rN6RVTxZYujUaFhUnQwuo21JnXkOieU-gKeBCkusLu09RCeVatzvHQzowltZ2Th7Nkgq_YuhcQ9up_hJ3psHQv1jFKC6MtAi5pUXkSysFUVDdfcMA7-K4dCGnA7LKyXqggTocLyytc_zZJFpxRW-zXfJhP06ok9pxQylBzuvjwrHoyUZI3aCAnof");
    }
}
