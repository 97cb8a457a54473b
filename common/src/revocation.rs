//! Signed revocation lists: which client names, key epochs and zone key generations no
//! server may accept, signed on the admin machine with a key derived from the root (so
//! the root stays offline), carried to the servers by any client, and checked by each
//! server against the public half it was given with its zone key. A list's version only
//! increases: a server keeps the newest it has seen and refuses older ones.
//!
//! ```text
//! seed      = HKDF-Expand(PRK_root, bytes("cmdchan/v3/revocation-key"), 32)   (Ed25519)
//! signed    = Ed25519(seed, "cmdchan/v3/revocations" || postcard(list))
//! text form = "cmdchan-revocations:" base64url(postcard(SignedList)) (no padding)
//! ```

use openssl::pkey::{Id, PKey};
use openssl::sign::{Signer, Verifier};
use serde::{Deserialize, Serialize};

use crate::ident::Ident;

/// What the signature covers besides the list: a signature made for anything else
/// cannot pass for a list's.
const CONTEXT: &[u8] = b"cmdchan/v3/revocations";
/// The text form's prefix.
const PREFIX: &str = "cmdchan-revocations:";
/// The longest text form read (a list of about 100,000 names).
pub const MAX_TEXT: usize = 8 << 20;

/// What a list revokes, every part in order and without repeats (one encoding per list).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationList {
    /// Only increases from one list to the next.
    pub version: u64,
    /// Unix seconds it was signed at.
    pub issued_at: u64,
    /// Client names refused whatever their key epoch.
    pub names: Vec<Ident>,
    /// Lowest key epoch still accepted, per client name.
    pub min_epochs: Vec<(Ident, u64)>,
    /// Zone key generations no longer accepted: (zone, generation).
    pub retired: Vec<(Ident, u64)>,
}

/// A list and its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedList {
    pub list: RevocationList,
    #[serde(with = "signature_bytes")]
    pub signature: [u8; 64],
}

/// Why a list is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    #[error("is not a revocation list (it must start with {PREFIX})")]
    NotAList,
    #[error("is not a readable revocation list: {0}")]
    Malformed(String),
    #[error("its entries are not in order, or repeat: {0}")]
    NotCanonical(&'static str),
    #[error("its signature does not verify under this zone's revocation key (forged, altered, or signed by another root)")]
    BadSignature,
}

impl RevocationList {
    /// Sorts every part and drops repeats (a name's lowest epoch: the highest given).
    pub fn canonical(mut self) -> Self {
        self.names.sort();
        self.names.dedup();
        self.min_epochs.sort();
        self.min_epochs.reverse();
        self.min_epochs.dedup_by(|later, kept| later.0 == kept.0);
        self.min_epochs.reverse();
        self.retired.sort();
        self.retired.dedup();
        self
    }

    fn check_canonical(&self) -> Result<(), ListError> {
        let ordered = |ok: bool, what| {
            if ok {
                Ok(())
            } else {
                Err(ListError::NotCanonical(what))
            }
        };
        ordered(self.names.windows(2).all(|w| w[0] < w[1]), "names")?;
        ordered(
            self.min_epochs.windows(2).all(|w| w[0].0 < w[1].0),
            "min_epochs",
        )?;
        ordered(self.retired.windows(2).all(|w| w[0] < w[1]), "retired")
    }

    /// The bytes the signature covers.
    fn signed_bytes(&self) -> Result<Vec<u8>, ListError> {
        let body = postcard::to_stdvec(self).map_err(|e| ListError::Malformed(e.to_string()))?;
        Ok([CONTEXT, &body].concat())
    }

    /// Signs the list with the revocation key's seed.
    pub fn sign(self, seed: &[u8; 32]) -> Result<SignedList, openssl::error::ErrorStack> {
        let list = self.canonical();
        let key = PKey::private_key_from_raw_bytes(seed, Id::ED25519)?;
        let mut signer = Signer::new_without_digest(&key)?;
        let message = list.signed_bytes().unwrap_or_default();
        let mut signature = [0u8; 64];
        signer.sign_oneshot(&mut signature, &message)?;
        Ok(SignedList { list, signature })
    }
}

impl SignedList {
    /// The list, if `public_key` verifies its signature.
    pub fn verify(&self, public_key: &[u8; 32]) -> Result<&RevocationList, ListError> {
        self.list.check_canonical()?;
        let message = self.list.signed_bytes()?;
        let ok = PKey::public_key_from_raw_bytes(public_key, Id::ED25519)
            .and_then(|key| {
                Verifier::new_without_digest(&key)?.verify_oneshot(&self.signature, &message)
            })
            .unwrap_or(false);
        match ok {
            true => Ok(&self.list),
            false => Err(ListError::BadSignature),
        }
    }

    /// `cmdchan-revocations:BASE64URL`, one line.
    pub fn to_text(&self) -> String {
        let bytes = postcard::to_stdvec(self).unwrap_or_default();
        format!("{PREFIX}{}", crate::base64url::encode(&bytes))
    }

    /// Reads the text form (surrounding white space ignored); the signature is not
    /// checked here (see [`SignedList::verify`]).
    pub fn from_text(text: &str) -> Result<Self, ListError> {
        let text = text.trim();
        if text.len() > MAX_TEXT {
            return Err(ListError::Malformed(format!(
                "longer than {MAX_TEXT} bytes"
            )));
        }
        let body = text.strip_prefix(PREFIX).ok_or(ListError::NotAList)?;
        let bytes = crate::base64url::decode(body)
            .ok_or_else(|| ListError::Malformed("not base64url".into()))?;
        let (signed, rest): (SignedList, _) =
            postcard::take_from_bytes(&bytes).map_err(|e| ListError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(ListError::Malformed("bytes after the list".into()));
        }
        // One encoding per list: what was read must be what it encodes to.
        if postcard::to_stdvec(&signed).map_or(true, |again| again != bytes) {
            return Err(ListError::NotCanonical("encoding"));
        }
        Ok(signed)
    }
}

/// A signature as 64 raw bytes (serde's arrays stop at 32).
mod signature_bytes {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        let (a, b) = bytes.split_at(32);
        let halves: ([u8; 32], [u8; 32]) = (
            a.try_into().unwrap_or([0; 32]),
            b.try_into().unwrap_or([0; 32]),
        );
        halves.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let (a, b): ([u8; 32], [u8; 32]) = Deserialize::deserialize(d)?;
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&a);
        out[32..].copy_from_slice(&b);
        Ok(out)
    }
}

/// The public half of a revocation key's seed.
pub fn public_key(seed: &[u8; 32]) -> Result<[u8; 32], openssl::error::ErrorStack> {
    let key = PKey::private_key_from_raw_bytes(seed, Id::ED25519)?;
    let raw = key.raw_public_key()?;
    let mut out = [0u8; 32];
    out.copy_from_slice(&raw[..32.min(raw.len())]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(s: &str) -> Ident {
        Ident::new(s).expect("valid")
    }

    fn list() -> RevocationList {
        RevocationList {
            version: 3,
            issued_at: 1_893_456_000,
            names: vec![ident("mallory"), ident("eve"), ident("mallory")],
            min_epochs: vec![(ident("alice"), 2), (ident("alice"), 5), (ident("bob"), 1)],
            retired: vec![(ident("web"), 1)],
        }
    }

    #[test]
    fn a_signed_list_verifies_round_trips_and_anything_altered_does_not() {
        let seed = [7u8; 32];
        let public = public_key(&seed).expect("public key");
        let signed = list().sign(&seed).expect("signs");
        assert_eq!(signed.list.names, [ident("eve"), ident("mallory")]);
        assert_eq!(
            signed.list.min_epochs,
            [(ident("alice"), 5), (ident("bob"), 1)]
        );
        let back = SignedList::from_text(&signed.to_text()).expect("reads");
        assert_eq!(back.verify(&public).expect("verifies"), &signed.list);

        let other = public_key(&[8u8; 32]).expect("public key");
        assert_eq!(back.verify(&other), Err(ListError::BadSignature));
        let mut bumped = back.clone();
        bumped.list.version += 1;
        assert_eq!(bumped.verify(&public), Err(ListError::BadSignature));
        let mut unordered = back.clone();
        unordered.list.names.reverse();
        assert!(matches!(
            unordered.verify(&public),
            Err(ListError::NotCanonical(_))
        ));
        assert_eq!(SignedList::from_text("mallory"), Err(ListError::NotAList));
        let text = signed.to_text();
        assert!(SignedList::from_text(&text[..text.len() - 4]).is_err());
    }

    /// PROTOCOL.md §8's revocation vectors, also produced by scripts/vectors.py.
    #[test]
    fn lists_match_protocol_md_vectors() {
        let root = crate::keys::RootKey::from_hex(&hex::encode((0u8..32).collect::<Vec<_>>()))
            .expect("root");
        let seed = root.revocation_seed();
        assert_eq!(
            hex::encode(*seed),
            "315e28459ecd8b125672b7370c1e69d32b2ab9b006d6c93033e5acf9aec52779"
        );
        assert_eq!(
            hex::encode(public_key(&seed).expect("key")),
            "02b0706791149292acd5fa56cdeec72b6a1f7120a9b194b6f84e79e3cac8560d"
        );
        let list = RevocationList {
            version: 1,
            issued_at: 1_893_456_000,
            names: vec![ident("mallory")],
            min_epochs: vec![(ident("alice"), 2)],
            retired: vec![(ident("prod"), 1)],
        };
        assert_eq!(
            hex::encode(postcard::to_stdvec(&list).expect("encodes")),
            "0180b1ef860701076d616c6c6f72790105616c69636502010470726f6401"
        );
        let signed = list.sign(&seed).expect("signs");
        assert_eq!(
            signed.to_text(),
            "cmdchan-revocations:AYCx74YHAQdtYWxsb3J5AQVhbGljZQIBBHByb2QBCLNqh2R5hDIDIGaGORFdwfsjKIg4GHsVQeUqMiY5bOn6ZGYqd-jlD504-6c843HsvvQtAfvm9l8GGVGMGKxEBg"
        );
    }
}
