//! The time of an audit record: RFC 3339 in UTC with milliseconds
//! (`2026-11-23T00:46:28.123Z`), the text `humantime::format_rfc3339_millis` writes.
//!
//! The text up to the second is kept per thread and made again only when the second
//! changes: working out a calendar date through `fmt` cost more than all the other
//! fields of a record together.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

/// `YYYY-MM-DDTHH:MM:SS`
const SECOND: usize = 19;

/// A record's time, as text.
#[derive(Debug, Clone, Copy)]
pub struct Stamp([u8; SECOND + 5]);

impl Stamp {
    pub fn now() -> Self {
        Self::at(SystemTime::now())
    }

    pub fn at(time: SystemTime) -> Self {
        thread_local! {
            static LAST: Cell<(u64, [u8; SECOND])> = const { Cell::new((u64::MAX, [0; SECOND])) };
        }
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let second = LAST.with(|last| match last.get() {
            (cached, text) if cached == secs => text,
            _ => {
                let text = second_text(time);
                last.set((secs, text));
                text
            }
        });
        let ms = since.subsec_millis();
        let mut out = [0; SECOND + 5];
        out[..SECOND].copy_from_slice(&second);
        out[SECOND..].copy_from_slice(&[b'.', digit(ms / 100), digit(ms / 10), digit(ms), b'Z']);
        Self(out)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl Serialize for Stamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The last decimal digit of `n`.
fn digit(n: u32) -> u8 {
    b'0' + (n % 10) as u8
}

/// `YYYY-MM-DDTHH:MM:SS` of `time`.
fn second_text(time: SystemTime) -> [u8; SECOND] {
    let text = humantime::format_rfc3339_seconds(time).to_string();
    let mut out = *b"1970-01-01T00:00:00";
    if let Some(second) = text.as_bytes().get(..SECOND) {
        out.copy_from_slice(second);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_text_is_humantimes_across_seconds_days_and_years() {
        let starts = [
            0u64,
            951_782_399,
            1_700_000_000,
            1_798_761_599,
            4_102_444_799,
        ];
        for start in starts {
            // Steps of 7 ms cross second boundaries in both directions of the cache.
            for step in 0..400u64 {
                let time = UNIX_EPOCH + Duration::from_millis(start * 1000 + step * 7);
                assert_eq!(
                    Stamp::at(time).as_str(),
                    humantime::format_rfc3339_millis(time).to_string(),
                    "{time:?}"
                );
            }
        }
        // Going back in time, as a stepped clock may.
        let later = UNIX_EPOCH + Duration::from_millis(1_700_000_001_500);
        let earlier = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        assert_eq!(Stamp::at(later).as_str(), "2023-11-14T22:13:21.500Z");
        assert_eq!(Stamp::at(earlier).as_str(), "2023-11-14T22:13:20.250Z");
    }
}
