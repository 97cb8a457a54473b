//! The key hierarchy: the root key (kept by the admin, off the servers), a zone key per
//! zone and generation (the only key a server holds), and the keys HKDF derives from a
//! zone key under distinct labels.
//!
//! ```text
//! zone key      = HKDF-Expand(HKDF-Extract("cmdchan/v2", root),
//!                             bytes("cmdchan/v2/zone") || bytes(ZONE) || u64(GENERATION), 32)
//! PRK_z         = HKDF-Extract(salt = "cmdchan/v2", IKM = zone key)
//! psk           = HKDF-Expand(PRK_z, bytes("cmdchan/v2/psk") || bytes(ZONE) || bytes(NAME) || u64(EPOCH), 32)
//! tag key       = HKDF-Expand(PRK_z, bytes("cmdchan/v2/tag-key") || bytes(ZONE), 32)
//! identity key  = HKDF-Expand(PRK_z, bytes("cmdchan/v2/identity") || bytes(ZONE), 32)
//! audit key     = HKDF-Expand(PRK_z, bytes("cmdchan/v2/audit-chain") || bytes(ZONE), 32)
//! ```
//! HKDF-Expand cannot be inverted, so a zone key gives nothing about the root or about
//! another zone's keys: a server exposes its zone, never the fleet. Keys are used only
//! as HKDF input, never for two purposes.

use std::fmt;

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::encode::Canonical;
use crate::ident::{Ident, PskIdentity};

/// Length of every key, in bytes.
pub const KEY_LEN: usize = 32;

/// HKDF salt for both extract steps.
const SALT: &[u8] = b"cmdchan/v2";

/// The purposes a key is derived for; each maps to its own label, so no two purposes can
/// ever share key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    Zone,
    Psk,
    TagKey,
    Identity,
    AuditKey,
}

impl Label {
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            Label::Zone => b"cmdchan/v2/zone",
            Label::Psk => b"cmdchan/v2/psk",
            Label::TagKey => b"cmdchan/v2/tag-key",
            Label::Identity => b"cmdchan/v2/identity",
            Label::AuditKey => b"cmdchan/v2/audit-chain",
        }
    }
}

/// Why bytes cannot be a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("is not hexadecimal")]
    NotHex,
    #[error("holds {0} bytes; at least {KEY_LEN} (256 bits) are required")]
    TooShort(usize),
    #[error("holds {0} bytes; exactly {KEY_LEN} are required")]
    WrongLength(usize),
}

/// The root key: at least 256 bits, kept by the admin off every server. Zeroized on
/// drop, never printed, never copied.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct RootKey(Vec<u8>);

impl RootKey {
    /// Draws a new key from OpenSSL's CSPRNG.
    pub fn generate() -> Result<Self, openssl::error::ErrorStack> {
        let mut key = vec![0u8; KEY_LEN];
        openssl::rand::rand_bytes(&mut key)?;
        Ok(Self(key))
    }

    /// Parses hex text (surrounding white space is ignored); refuses keys under 256 bits.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let key = Zeroizing::new(hex::decode(text.trim()).map_err(|_| KeyError::NotHex)?);
        if key.len() < KEY_LEN {
            return Err(KeyError::TooShort(key.len()));
        }
        Ok(Self(key.to_vec()))
    }

    /// The one deliberate way to see the key: as hex, for writing the key file.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(&self.0))
    }

    /// `zone key = HKDF-Expand(PRK_root, bytes(label) || bytes(ZONE) || u64(GENERATION))`
    pub fn zone_key(&self, zone: &Ident, generation: u64) -> ZoneKey {
        let info = Canonical::new()
            .bytes(Label::Zone.as_bytes())
            .bytes(zone.as_str().as_bytes())
            .u64(generation)
            .finish();
        let mut key = [0u8; KEY_LEN];
        // 32 bytes is far below HKDF-SHA256's limit of 255 * 32, so expand cannot fail.
        let _ = Hkdf::<Sha256>::new(Some(SALT), &self.0).expand(&info, &mut key);
        let mut zone_key = ZoneKey::new(zone.clone(), generation, key);
        zone_key.revocation_key = crate::revocation::public_key(&self.revocation_seed()).ok();
        zone_key
    }

    /// The seed of the Ed25519 key that signs revocation lists, which only the root's
    /// holder has: `HKDF-Expand(PRK_root, bytes("cmdchan/v3/revocation-key"), 32)`. Its
    /// public half goes to every server with its zone key.
    pub fn revocation_seed(&self) -> Zeroizing<[u8; KEY_LEN]> {
        let info = Canonical::new().bytes(REVOCATION_LABEL).finish();
        let mut seed = Zeroizing::new([0u8; KEY_LEN]);
        let _ = Hkdf::<Sha256>::new(Some(SALT), &self.0).expand(&info, seed.as_mut_slice());
        seed
    }
}

/// The label of the revocation key's derivation.
const REVOCATION_LABEL: &[u8] = b"cmdchan/v3/revocation-key";

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RootKey(<secret>)")
    }
}

/// One generation of one zone's key: what a server of the zone holds. The HKDF extract
/// is done once, when it is made, not per handshake.
#[derive(ZeroizeOnDrop)]
pub struct ZoneKey {
    #[zeroize(skip)]
    pub zone: Ident,
    #[zeroize(skip)]
    pub generation: u64,
    /// The public key revocation lists are signed with (none in a zone key file made
    /// before there were signed lists).
    #[zeroize(skip)]
    pub revocation_key: Option<[u8; 32]>,
    key: [u8; KEY_LEN],
    prk: [u8; KEY_LEN],
}

impl ZoneKey {
    pub fn new(zone: Ident, generation: u64, key: [u8; KEY_LEN]) -> Self {
        let (prk, _) = Hkdf::<Sha256>::extract(Some(SALT), &key);
        Self {
            revocation_key: None,
            zone,
            generation,
            key,
            prk: prk.into(),
        }
    }

    /// The one deliberate way to see the key: as hex, for writing the key file.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.key))
    }

    /// `psk = HKDF-Expand(PRK_z, bytes(label) || bytes(ZONE) || bytes(NAME) || u64(EPOCH))`
    pub fn psk(&self, identity: &PskIdentity) -> Psk {
        let info = Canonical::new()
            .bytes(Label::Psk.as_bytes())
            .bytes(self.zone.as_str().as_bytes())
            .bytes(identity.name.as_str().as_bytes())
            .u64(identity.epoch)
            .finish();
        Psk(self.expand(&info))
    }

    /// The key that signs this zone's key-use tags.
    pub fn tag_key(&self) -> TagKey {
        TagKey {
            key: self.expand(&self.labelled(Label::TagKey)),
            zone: self.zone.clone(),
        }
    }

    /// The key that hides client names in this zone's PSK identities.
    pub fn identity_key(&self) -> IdentityKey {
        IdentityKey(self.expand(&self.labelled(Label::Identity)))
    }

    /// The key of the audit file's chain.
    pub fn audit_key(&self) -> AuditKey {
        AuditKey(self.expand(&self.labelled(Label::AuditKey)))
    }

    /// `bytes(label) || bytes(ZONE)`
    fn labelled(&self, label: Label) -> Vec<u8> {
        Canonical::new()
            .bytes(label.as_bytes())
            .bytes(self.zone.as_str().as_bytes())
            .finish()
    }

    fn expand(&self, info: &[u8]) -> [u8; KEY_LEN] {
        let mut okm = [0u8; KEY_LEN];
        // The PRK is 32 bytes, and 32 bytes of output is within HKDF's limit.
        if let Ok(hkdf) = Hkdf::<Sha256>::from_prk(&self.prk) {
            let _ = hkdf.expand(info, &mut okm);
        }
        okm
    }
}

impl fmt::Debug for ZoneKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ZoneKey({} generation {}, <secret>)",
            self.zone, self.generation
        )
    }
}

/// A client's pre-shared key: never copied; compared only in constant time.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Psk([u8; KEY_LEN]);

impl Psk {
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        Ok(Self(key_from_hex(text)?))
    }

    pub(crate) fn from_bytes(key: [u8; KEY_LEN]) -> Self {
        Self(key)
    }

    /// The one deliberate way to see the key: the raw bytes, for the TLS callback.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0))
    }

    /// Whether two keys are equal, in constant time.
    pub fn ct_eq(&self, other: &Psk) -> bool {
        openssl::memcmp::eq(&self.0, &other.0)
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Psk(<secret>)")
    }
}

/// The key that signs and verifies one zone's key-use tags (see `tag`).
#[derive(ZeroizeOnDrop)]
pub struct TagKey {
    pub(crate) key: [u8; KEY_LEN],
    #[zeroize(skip)]
    pub(crate) zone: Ident,
}

impl fmt::Debug for TagKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TagKey({}, <secret>)", self.zone)
    }
}

/// The key that seals client names into PSK identities (see `sealed`). Every client of
/// the zone holds it, so it hides names from the network, not from the zone.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct IdentityKey(pub(crate) [u8; KEY_LEN]);

impl IdentityKey {
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        Ok(Self(key_from_hex(text)?))
    }

    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0))
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdentityKey(<secret>)")
    }
}

/// The key of the audit file's keyed chain (see the server's `audit::chain`).
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct AuditKey([u8; KEY_LEN]);

impl AuditKey {
    pub fn from_bytes(key: [u8; KEY_LEN]) -> Self {
        Self(key)
    }

    /// The one deliberate way to see the key: the raw bytes, for the HMAC.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(<secret>)")
    }
}

fn key_from_hex(text: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let bytes = Zeroizing::new(hex::decode(text.trim()).map_err(|_| KeyError::NotHex)?);
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| KeyError::WrongLength(bytes.len()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The root key of PROTOCOL.md's test vectors: bytes 0x00..=0x1f.
    pub(crate) fn vector_root() -> RootKey {
        RootKey((0u8..32).collect())
    }

    /// Zone `prod`, generation 1, of [`vector_root`].
    pub(crate) fn vector_zone() -> ZoneKey {
        vector_root().zone_key(&ident("prod"), 1)
    }

    fn ident(s: &str) -> Ident {
        Ident::new(s).expect("valid")
    }

    fn identity(name: &str, epoch: u64) -> PskIdentity {
        PskIdentity {
            name: ident(name),
            epoch,
        }
    }

    #[test]
    fn derivations_match_protocol_md_vectors() {
        let zone = vector_zone();
        let vectors = [
            ("zone key", zone.to_hex().to_string()),
            (
                "psk(alice, 0)",
                zone.psk(&identity("alice", 0)).to_hex().to_string(),
            ),
            (
                "psk(alice, 7)",
                zone.psk(&identity("alice", 7)).to_hex().to_string(),
            ),
            ("tag key", hex::encode(zone.tag_key().key)),
            ("identity key", hex::encode(zone.identity_key().0)),
            ("audit key", hex::encode(zone.audit_key().0)),
        ];
        let expected = [
            (
                "zone key",
                "2e342530c6db8045795d0fe71a7f035986ee8c6a74866c866ea94b0d53a79b9d",
            ),
            (
                "psk(alice, 0)",
                "91f40113a6a2213d91ba20a67c3f2d0392e017a92da1dcfa99eeb519a0dbf6bd",
            ),
            (
                "psk(alice, 7)",
                "26f83d97eed2a8937940633f9e0118f95d53e1f255038c4d81cd605e1cf669bd",
            ),
            (
                "tag key",
                "30f113a0c471e5587ba2ad297fe828ac949a4866edf1937a6912d3293eeec64b",
            ),
            (
                "identity key",
                "cb0d3db9efcfe6402e6fc7517ec83a6f67403d66c007c2f06bfbce34eccb85f7",
            ),
            (
                "audit key",
                "52b2f352def384d33010d8b3e781832b878a0f01131aadde8cf07cee0586749b",
            ),
        ];
        for ((what, got), (_, want)) in vectors.iter().zip(expected) {
            assert_eq!(got, want, "{what}");
        }
    }

    /// The attack a compromised server of zone A would try: derive zone B's keys from
    /// what it holds. Nothing it can compute matches.
    #[test]
    fn nothing_derived_from_one_zone_matches_another_zones_keys() {
        let root = vector_root();
        let a = root.zone_key(&ident("a"), 1);
        let b = root.zone_key(&ident("b"), 1);
        let alice = identity("alice", 0);
        assert!(!a.psk(&alice).ct_eq(&b.psk(&alice)));
        // Zone A's key under zone B's name: still not B's (the name is in the label,
        // the key is A's).
        let forged = ZoneKey::new(ident("b"), 1, a.key);
        assert!(!forged.psk(&alice).ct_eq(&b.psk(&alice)));
        assert_ne!(forged.tag_key().key, b.tag_key().key);
        assert_ne!(forged.identity_key().0, b.identity_key().0);
        assert_ne!(a.key, b.key);
        // Generations differ too.
        assert_ne!(root.zone_key(&ident("a"), 2).key, a.key);
    }

    #[test]
    fn psks_differ_by_name_and_epoch_and_from_the_other_keys() {
        let z = vector_zone();
        let a0 = z.psk(&identity("alice", 0));
        assert!(!a0.ct_eq(&z.psk(&identity("alice", 1))));
        assert!(!a0.ct_eq(&z.psk(&identity("alicf", 0))));
        assert!(a0.ct_eq(&z.psk(&identity("alice", 0))));
        assert_ne!(a0.expose(), &z.tag_key().key);
        assert_ne!(z.tag_key().key, z.identity_key().0);
    }

    #[test]
    fn short_or_malformed_root_keys_are_refused() {
        assert_eq!(
            RootKey::from_hex(&"ab".repeat(31)).err(),
            Some(KeyError::TooShort(31))
        );
        assert_eq!(RootKey::from_hex("zz").err(), Some(KeyError::NotHex));
        assert!(RootKey::from_hex(&format!("{}\n", "ab".repeat(32))).is_ok());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let z = vector_zone();
        let shown = format!(
            "{:?} {z:?} {:?} {:?}",
            vector_root(),
            z.psk(&identity("a", 0)),
            z.tag_key()
        );
        assert_eq!(
            shown,
            "RootKey(<secret>) ZoneKey(prod generation 1, <secret>) Psk(<secret>) TagKey(prod, <secret>)"
        );
    }
}
