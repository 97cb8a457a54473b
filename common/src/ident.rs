//! Validated identifiers (client names, roles, server IDs) and the PSK identity.
//!
//! Every string that names something is checked once, where it enters, so later code can
//! log and compare it without care: 1–128 bytes, an ASCII letter or digit first, then
//! letters, digits and `.` `_` `-` `@`. No spaces, no control bytes, no `#` (the PSK
//! identity's epoch separator), no `/` or `:`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest identifier accepted, in bytes.
pub const MAX_IDENT_LEN: usize = 128;

/// A client name, role or server ID that passed [`Ident::new`]'s checks.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct Ident(String);

/// Written as its string, borrowed: `serde(into = "String")` would copy it first, and
/// every request's grant and digest write several.
impl Serialize for Ident {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Why a string is not an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentError {
    #[error("is empty")]
    Empty,
    #[error("is {0} bytes long (at most {MAX_IDENT_LEN})")]
    TooLong(usize),
    #[error("must start with an ASCII letter or digit")]
    BadStart,
    #[error("contains {0:?} (allowed: ASCII letters, digits and . _ - @)")]
    BadChar(char),
}

impl Ident {
    /// Checks `s` against the identifier rules.
    pub fn new(s: impl Into<String>) -> Result<Self, IdentError> {
        let s = s.into();
        check(&s)?;
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check(s: &str) -> Result<(), IdentError> {
    let first = s.chars().next().ok_or(IdentError::Empty)?;
    if s.len() > MAX_IDENT_LEN {
        return Err(IdentError::TooLong(s.len()));
    }
    if !first.is_ascii_alphanumeric() {
        return Err(IdentError::BadStart);
    }
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ".-_@".contains(*c)))
    {
        Some(c) => Err(IdentError::BadChar(c)),
        None => Ok(()),
    }
}

impl TryFrom<String> for Ident {
    type Error = IdentError;
    fn try_from(s: String) -> Result<Self, IdentError> {
        Self::new(s)
    }
}

impl From<Ident> for String {
    fn from(i: Ident) -> String {
        i.0
    }
}

impl AsRef<str> for Ident {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for Ident {
    type Err = IdentError;
    fn from_str(s: &str) -> Result<Self, IdentError> {
        Self::new(s)
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Bytes a peer chose, made safe to log or echo: escaped and cut to 64 characters.
pub fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .escape_default()
        .take(64)
        .collect()
}

/// [`printable`] for text that usually needs no escaping: borrowed when it is at most 64
/// characters with nothing `escape_default` would change.
pub fn printable_str(s: &str) -> std::borrow::Cow<'_, str> {
    let plain = s.len() <= 64
        && s.bytes()
            .all(|b| (b' '..=b'~').contains(&b) && !matches!(b, b'\'' | b'"' | b'\\'));
    match plain {
        true => std::borrow::Cow::Borrowed(s),
        false => std::borrow::Cow::Owned(printable(s.as_bytes())),
    }
}

/// Who a PSK identity names: the client and its key epoch. On the wire it is sealed
/// (see `sealed`); the server's logs write it `NAME` for epoch 0 and `NAME#EPOCH`
/// otherwise.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PskIdentity {
    pub name: Ident,
    pub epoch: u64,
}

/// Why the bytes a peer offered as its PSK identity are not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("is not UTF-8")]
    NotUtf8,
    #[error("name {0}")]
    Name(IdentError),
    #[error("epoch is not in canonical decimal form")]
    Epoch,
    #[error("is not a sealed cmdchan identity")]
    NotSealed,
    #[error("is for a key generation this server does not hold")]
    UnknownGeneration,
    #[error("does not open with this zone's identity key (another zone, or tampered with)")]
    Unsealed,
}

impl PskIdentity {
    /// Parses the identity exactly as it came off the wire; only the canonical spelling is
    /// accepted, so one key has one identity (`alice#0` and `alice#07` are refused).
    pub fn parse(bytes: &[u8]) -> Result<Self, IdentityError> {
        let s = std::str::from_utf8(bytes).map_err(|_| IdentityError::NotUtf8)?;
        let (name, epoch) = match s.split_once('#') {
            None => (s, 0),
            Some((name, digits)) => (name, canonical_epoch(digits)?),
        };
        let name = Ident::new(name).map_err(IdentityError::Name)?;
        Ok(Self { name, epoch })
    }
}

fn canonical_epoch(digits: &str) -> Result<u64, IdentityError> {
    let canonical = !digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit());
    match digits.parse::<u64>() {
        Ok(epoch) if canonical => Ok(epoch),
        _ => Err(IdentityError::Epoch),
    }
}

impl fmt::Display for PskIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.epoch {
            0 => write!(f, "{}", self.name),
            epoch => write!(f, "{}#{epoch}", self.name),
        }
    }
}

impl fmt::Debug for PskIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PskIdentity({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_character_set() {
        for ok in ["a", "web-01.example", "svc_backup@db1", &"x".repeat(128)] {
            assert!(Ident::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(Ident::new(""), Err(IdentError::Empty));
        assert_eq!(Ident::new("x".repeat(129)), Err(IdentError::TooLong(129)));
        assert_eq!(Ident::new("-rf"), Err(IdentError::BadStart));
        assert_eq!(Ident::new("a b"), Err(IdentError::BadChar(' ')));
        assert_eq!(Ident::new("a#1"), Err(IdentError::BadChar('#')));
        assert_eq!(Ident::new("a\0"), Err(IdentError::BadChar('\0')));
        assert_eq!(Ident::new("é"), Err(IdentError::BadStart));
    }

    #[test]
    fn printable_escapes_and_cuts() {
        assert_eq!(printable(b"a\nb\x1b"), "a\\nb\\u{1b}");
        assert_eq!(printable(&[b'x'; 1000]).len(), 64);
    }

    #[test]
    fn printable_str_borrows_only_what_printable_leaves_alone() {
        let long = "y".repeat(65);
        for s in [
            "ping",
            "disk usage",
            "a\"b",
            "it's",
            "back\\slash",
            "tab\t",
            "é",
            "~!",
            &long,
        ] {
            let shown = printable_str(s);
            assert_eq!(shown, printable(s.as_bytes()), "{s:?}");
            let borrowed = matches!(shown, std::borrow::Cow::Borrowed(_));
            assert_eq!(borrowed, printable(s.as_bytes()) == s, "{s:?}");
        }
    }

    #[test]
    fn identity_round_trips_in_canonical_form() {
        for s in ["alice", "alice#1", "alice#18446744073709551615"] {
            let id = PskIdentity::parse(s.as_bytes()).expect("valid");
            assert_eq!(id.to_string(), s);
        }
        assert_eq!(PskIdentity::parse(b"alice").map(|i| i.epoch), Ok(0));
    }

    #[test]
    fn identity_refuses_non_canonical_and_garbage() {
        for bad in [
            &b"alice#0"[..],
            b"alice#01",
            b"alice#",
            b"alice#x",
            b"#3",
            b"a#1#2",
            b"\xff",
        ] {
            assert!(PskIdentity::parse(bad).is_err(), "{bad:?}");
        }
        assert!(PskIdentity::parse(b"alice#18446744073709551616").is_err());
    }
}
