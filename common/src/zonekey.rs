//! The key files: the root key (hex, kept by the admin) and a zone key file (TOML: the
//! zone, the generation and the key), which is all a server holds. Both mode 0600.
//!
//! ```toml
//! # cmdchan zone key: keep it on the servers of this zone only (mode 0600)
//! zone = "prod"
//! generation = 1
//! key = "HEX"
//! revocation_key = "HEX"   # the public key signed revocation lists are checked with
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::ident::Ident;
use crate::keyfile::{self, KeyFileError};
use crate::keys::{RootKey, ZoneKey, KEY_LEN};

const ROOT: &str = "root key";
const ZONE: &str = "zone key";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ZoneKeyToml {
    zone: Ident,
    generation: u64,
    key: String,
    /// The public key revocation lists are signed with (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revocation_key: Option<String>,
}

impl Drop for ZoneKeyToml {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

/// Reads a root key file, refusing exposed, short or malformed keys.
pub fn load_root(path: &Path) -> Result<RootKey, KeyFileError> {
    let text = keyfile::read_private(ROOT, path)?;
    RootKey::from_hex(&text).map_err(|e| KeyFileError::Invalid {
        what: ROOT,
        path: path.into(),
        reason: e.to_string(),
    })
}

/// Writes a root key file (hex, mode 0600).
pub fn save_root(key: &RootKey, path: &Path, replace: bool) -> Result<(), KeyFileError> {
    let mut text = key.to_hex();
    text.push('\n');
    keyfile::write_private(ROOT, path, text.as_bytes(), replace)
}

/// Reads a zone key file.
pub fn load(path: &Path) -> Result<ZoneKey, KeyFileError> {
    let text = keyfile::read_private(ZONE, path)?;
    parse(&text).map_err(|reason| KeyFileError::Invalid {
        what: ZONE,
        path: path.into(),
        reason,
    })
}

/// Parses a zone key file's text; the error never quotes the text, which holds the key.
pub fn parse(text: &str) -> Result<ZoneKey, String> {
    let file: ZoneKeyToml = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(0, |s| {
            let before = text.get(..s.start).unwrap_or(text);
            before.bytes().filter(|&b| b == b'\n').count() + 1
        });
        format!(
            "is not a valid zone key file (line {line}): {}",
            e.message()
        )
    })?;
    let bytes = Zeroizing::new(
        hex::decode(file.key.trim()).map_err(|_| "holds a key that is not hexadecimal")?,
    );
    let key = <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "holds a key of {} bytes; exactly {KEY_LEN} are required",
            bytes.len()
        )
    })?;
    let mut zone_key = ZoneKey::new(file.zone.clone(), file.generation, key);
    if let Some(text) = &file.revocation_key {
        let bytes = hex::decode(text.trim())
            .map_err(|_| "holds a revocation_key that is not hexadecimal")?;
        let public = <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| "holds a revocation_key that is not 32 bytes")?;
        zone_key.revocation_key = Some(public);
    }
    Ok(zone_key)
}

/// Writes a zone key file (mode 0600).
pub fn save(key: &ZoneKey, path: &Path, replace: bool) -> Result<(), KeyFileError> {
    let file = ZoneKeyToml {
        zone: key.zone.clone(),
        generation: key.generation,
        key: key.to_hex().to_string(),
        revocation_key: key.revocation_key.map(hex::encode),
    };
    let body = Zeroizing::new(toml::to_string(&file).unwrap_or_default());
    let mut text = Zeroizing::new(String::with_capacity(body.len() + 80));
    text.push_str("# cmdchan zone key: keep it on the servers of this zone only (mode 0600)\n");
    text.push_str(&body);
    keyfile::write_private(ZONE, path, text.as_bytes(), replace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::vector_zone;

    #[test]
    fn a_zone_key_file_round_trips_and_its_errors_hide_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("prod.key");
        save(&vector_zone(), &path, false).expect("save");
        let back = load(&path).expect("load");
        assert_eq!((back.zone.as_str(), back.generation), ("prod", 1));
        assert_eq!(back.to_hex(), vector_zone().to_hex());
        let text = std::fs::read_to_string(&path)
            .expect("read")
            .replace("generation = 1", "generation = x");
        let Err(err) = parse(&text) else {
            panic!("refused")
        };
        assert!(!err.contains(vector_zone().to_hex().as_str()), "{err}");
    }
}
