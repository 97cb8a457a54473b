//! The canonical byte encoding under every HKDF `info` and every HMAC.
//!
//! Each variable-length field carries a 4-byte big-endian length and each integer is 8
//! bytes big-endian, so two different field lists never encode to the same bytes
//! (`"ab","c"` ≠ `"a","bc"`). PROTOCOL.md §3 gives the same rules.

/// An encoding buffer; the methods append one field each.
#[derive(Debug, Default)]
pub struct Canonical(Vec<u8>);

impl Canonical {
    pub fn new() -> Self {
        Self::default()
    }

    /// `bytes(b) = u32be(len(b)) || b`
    pub fn bytes(mut self, b: &[u8]) -> Self {
        // Every field we encode is bounded far below 4 GiB (identifiers, labels).
        let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(b);
        self
    }

    /// `u64(n) = 8 bytes big-endian`
    pub fn u64(mut self, n: u64) -> Self {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }

    /// `opt(None) = 0x00`, `opt(Some(n)) = 0x01 || u64(n)`
    pub fn opt_u64(mut self, n: Option<u64>) -> Self {
        match n {
            None => self.0.push(0),
            Some(n) => {
                self.0.push(1);
                self = self.u64(n);
            }
        }
        self
    }

    /// `list(xs) = u32be(count) || bytes(x1) || … || bytes(xn)`
    pub fn list<S: AsRef<str>>(mut self, items: &[S]) -> Self {
        let count = u32::try_from(items.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&count.to_be_bytes());
        items
            .iter()
            .fold(self, |acc, s| acc.bytes(s.as_ref().as_bytes()))
    }

    pub fn finish(self) -> Vec<u8> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting_a_string_differently_changes_the_encoding() {
        let ab_c = Canonical::new().bytes(b"ab").bytes(b"c").finish();
        let a_bc = Canonical::new().bytes(b"a").bytes(b"bc").finish();
        assert_ne!(ab_c, a_bc);
    }

    #[test]
    fn list_and_option_are_length_tagged() {
        let one = Canonical::new().list(&["a,b"]).finish();
        let two = Canonical::new().list(&["a", "b"]).finish();
        assert_ne!(one, two);
        let none = Canonical::new().opt_u64(None).finish();
        assert_eq!(none, [0]);
        let some = Canonical::new().opt_u64(Some(1)).finish();
        assert_eq!(some, [1, 0, 0, 0, 0, 0, 0, 0, 1]);
    }
}
