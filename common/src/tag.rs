//! Key-use tags: the HMAC that binds a client's name to what it was granted.
//!
//! ```text
//! tag = HMAC-SHA256(tag key, bytes("cmdchan/v2/grant") || bytes(zone) || bytes(name)
//!                            || bytes(role) || u64(epoch) || opt(expires) || list(servers))
//! ```
//! The tag key is the zone's, and the zone is in the signed bytes too: a grant of one
//! zone is never valid in another.
//! The server recomputes the tag with the name from the TLS handshake, never one from the
//! message, so a client cannot borrow another client's tag or widen its own grant.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::encode::Canonical;
use crate::ident::Ident;
use crate::keys::TagKey;
use crate::protocol::Grant;

/// Domain label for the grant encoding.
const GRANT_LABEL: &[u8] = b"cmdchan/v2/grant";

impl TagKey {
    /// Signs `grant` for the client `name`.
    pub fn sign(&self, name: &Ident, grant: &Grant) -> [u8; 32] {
        self.mac(name, grant).finalize().into_bytes().into()
    }

    /// Checks `tag` in constant time (hmac's `verify_slice` compares with `subtle`).
    pub fn verify(&self, name: &Ident, grant: &Grant, tag: &[u8; 32]) -> bool {
        self.mac(name, grant).verify_slice(tag).is_ok()
    }

    fn mac(&self, name: &Ident, grant: &Grant) -> Hmac<Sha256> {
        // HMAC accepts a key of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(&grant_bytes(&self.zone, name, grant));
        mac
    }
}

/// The canonical encoding signed by the tag (PROTOCOL.md §3.3).
pub fn grant_bytes(zone: &Ident, name: &Ident, grant: &Grant) -> Vec<u8> {
    Canonical::new()
        .bytes(GRANT_LABEL)
        .bytes(zone.as_str().as_bytes())
        .bytes(name.as_str().as_bytes())
        .bytes(grant.role.as_str().as_bytes())
        .u64(grant.epoch)
        .opt_u64(grant.expires)
        .list(&grant.servers)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::vector_zone;

    fn ident(s: &str) -> Ident {
        Ident::new(s).expect("valid")
    }

    pub(crate) fn vector_grant() -> Grant {
        Grant {
            role: ident("operator"),
            epoch: 7,
            expires: Some(1_893_456_000),
            servers: vec![ident("db1"), ident("db2")],
        }
    }

    #[test]
    fn grant_bytes_and_tags_match_protocol_md_vectors() {
        let key = vector_zone().tag_key();
        let alice = ident("alice");
        assert_eq!(
            hex::encode(grant_bytes(&ident("prod"), &alice, &vector_grant())),
            "00000010636d646368616e2f76322f6772616e740000000470726f6400000005616c696365000000086f70657261746f720000000000000007010000000070dbd880000000020000000364623100000003646232"
        );
        assert_eq!(
            hex::encode(key.sign(&alice, &vector_grant())),
            "0b88f747797b56dcb0fc125170581bc8a825415bc371b601c97cf0fcf221224a"
        );
        let plain = Grant {
            role: ident("operator"),
            epoch: 0,
            expires: None,
            servers: vec![],
        };
        assert_eq!(
            hex::encode(key.sign(&alice, &plain)),
            "ef7665116093b84313dfeb9cecae0c341064f455d3f0ed7437272a1afea2c64e"
        );
    }

    #[test]
    fn a_tag_verifies_only_for_its_name_and_grant() {
        let key = vector_zone().tag_key();
        let grant = vector_grant();
        let tag = key.sign(&ident("alice"), &grant);
        assert!(key.verify(&ident("alice"), &grant, &tag));
        assert!(!key.verify(&ident("bob"), &grant, &tag));
        let mut admin = grant.clone();
        admin.role = ident("admin");
        assert!(!key.verify(&ident("alice"), &admin, &tag));
        let mut forever = grant.clone();
        forever.expires = None;
        assert!(!key.verify(&ident("alice"), &forever, &tag));
        let mut anywhere = grant;
        anywhere.servers.clear();
        assert!(!key.verify(&ident("alice"), &anywhere, &tag));
    }

    #[test]
    fn moving_a_boundary_between_fields_changes_the_bytes() {
        let zone = ident("prod");
        let mut grant = vector_grant();
        grant.role = ident("ce");
        let a = grant_bytes(&zone, &ident("alice"), &grant);
        grant.role = ident("alicee");
        let b = grant_bytes(&zone, &ident("al"), &grant);
        assert_ne!(a, b);
    }
}
