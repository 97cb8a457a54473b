//! The key hierarchy: the master key and the keys HKDF derives from it under distinct labels.
//!
//! ```text
//! PRK      = HKDF-Extract(salt = "cmdchan/v1", IKM = master)
//! psk      = HKDF-Expand(PRK, bytes("cmdchan/v1/psk") || bytes(name) || u64(epoch), 32)
//! tag key  = HKDF-Expand(PRK, bytes("cmdchan/v1/tag-key"), 32)
//! ```
//! The master key is never used for anything but HKDF-Extract.

use std::fmt;

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::encode::Canonical;
use crate::ident::PskIdentity;

/// Length of every derived key and of a freshly generated master key, in bytes.
pub const KEY_LEN: usize = 32;

/// HKDF salt for the extract step.
const SALT: &[u8] = b"cmdchan/v1";

/// The purposes a key is derived for; each maps to its own label, so no two purposes can
/// ever share key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    Psk,
    TagKey,
    AuditKey,
}

impl Label {
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            Label::Psk => b"cmdchan/v1/psk",
            Label::TagKey => b"cmdchan/v1/tag-key",
            Label::AuditKey => b"cmdchan/v1/audit-chain",
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

/// The server's master key: at least 256 bits, zeroized on drop, never printed, never
/// copied.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct MasterKey(Vec<u8>);

impl MasterKey {
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

    /// The PSK of one client key: `HKDF-Expand(PRK, bytes(label) || bytes(name) || u64(epoch))`.
    pub fn psk(&self, identity: &PskIdentity) -> Psk {
        let info = Canonical::new()
            .bytes(Label::Psk.as_bytes())
            .bytes(identity.name.as_str().as_bytes())
            .u64(identity.epoch)
            .finish();
        Psk(self.expand(&info))
    }

    /// The key that signs key-use tags: `HKDF-Expand(PRK, bytes(label))`.
    pub fn tag_key(&self) -> TagKey {
        let info = Canonical::new().bytes(Label::TagKey.as_bytes()).finish();
        TagKey(self.expand(&info))
    }

    /// The key of the audit file's chain: `HKDF-Expand(PRK, bytes(label))`.
    pub fn audit_key(&self) -> AuditKey {
        let info = Canonical::new().bytes(Label::AuditKey.as_bytes()).finish();
        AuditKey(self.expand(&info))
    }

    fn expand(&self, info: &[u8]) -> [u8; KEY_LEN] {
        let mut okm = [0u8; KEY_LEN];
        // 32 bytes is far below HKDF-SHA256's limit of 255 * 32, so expand cannot fail.
        let _ = Hkdf::<Sha256>::new(Some(SALT), &self.0).expand(info, &mut okm);
        okm
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<secret>)")
    }
}

/// A client's pre-shared key: never copied; compared only in constant time.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Psk([u8; KEY_LEN]);

impl Psk {
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let bytes = Zeroizing::new(hex::decode(text.trim()).map_err(|_| KeyError::NotHex)?);
        let key = <[u8; KEY_LEN]>::try_from(bytes.as_slice())
            .map_err(|_| KeyError::WrongLength(bytes.len()))?;
        Ok(Self(key))
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

/// The key that signs and verifies key-use tags (see `tag`).
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct TagKey(pub(crate) [u8; KEY_LEN]);

impl fmt::Debug for TagKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TagKey(<secret>)")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ident::Ident;

    /// The master key of PROTOCOL.md's test vectors: bytes 0x00..=0x1f.
    pub(crate) fn vector_master() -> MasterKey {
        MasterKey((0u8..32).collect())
    }

    fn identity(name: &str, epoch: u64) -> PskIdentity {
        PskIdentity {
            name: Ident::new(name).expect("valid"),
            epoch,
        }
    }

    #[test]
    fn psk_matches_protocol_md_vectors() {
        let master = vector_master();
        assert_eq!(
            master.psk(&identity("alice", 0)).to_hex().as_str(),
            "f3213eda35a708967d3a5a70b3f3150b89c8b5c2a0c1f729e0c18cbfc5d3b553"
        );
        assert_eq!(
            master.psk(&identity("alice", 7)).to_hex().as_str(),
            "4e03d2b01d4ada84ad2a7a4625363af89504a2bae0af66cc2afa58e7a5a2494a"
        );
    }

    #[test]
    fn tag_key_matches_protocol_md_vector() {
        assert_eq!(
            hex::encode(vector_master().tag_key().0),
            "6fd14567313c0abbeb468905f323577dc0fdd790add7d545a0df3a1b308737c2"
        );
    }

    #[test]
    fn audit_key_matches_protocol_md_vector() {
        assert_eq!(
            hex::encode(vector_master().audit_key().0),
            "84a46eaad8abe71cf5e2980c5196f93be7ae14514e451fe71e34bdedb1679cfc"
        );
    }

    #[test]
    fn psks_differ_by_name_and_epoch_and_from_the_tag_key() {
        let m = vector_master();
        let a0 = m.psk(&identity("alice", 0));
        assert!(!a0.ct_eq(&m.psk(&identity("alice", 1))));
        assert!(!a0.ct_eq(&m.psk(&identity("alicf", 0))));
        assert!(a0.ct_eq(&m.psk(&identity("alice", 0))));
        assert_ne!(a0.expose(), &m.tag_key().0);
    }

    #[test]
    fn short_or_malformed_master_keys_are_refused() {
        assert_eq!(
            MasterKey::from_hex(&"ab".repeat(31)).err(),
            Some(KeyError::TooShort(31))
        );
        assert_eq!(MasterKey::from_hex("zz").err(), Some(KeyError::NotHex));
        assert!(MasterKey::from_hex(&format!("{}\n", "ab".repeat(32))).is_ok());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let m = vector_master();
        let shown = format!("{m:?} {:?} {:?}", m.psk(&identity("a", 0)), m.tag_key());
        assert_eq!(shown, "MasterKey(<secret>) Psk(<secret>) TagKey(<secret>)");
    }
}
