//! Wall-clock time as unix seconds, and the formats people type and read it in.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 for a clock set before 1970).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `2030-01-01T00:00:00Z` for 1893456000.
pub fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// Why an expiry could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither a duration (like 90d or 12h) nor an RFC 3339 time (like 2030-01-01T00:00:00Z) nor \"never\"")]
pub struct ExpiryError(String);

/// Reads `never`, a duration from `now` (`30d`, `12h 30m`) or an RFC 3339 time.
pub fn parse_expiry(text: &str, now: u64) -> Result<Option<u64>, ExpiryError> {
    if text == "never" {
        return Ok(None);
    }
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(Some(now.saturating_add(d.as_secs())));
    }
    humantime::parse_rfc3339_weak(text)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| Some(d.as_secs()))
        .ok_or_else(|| ExpiryError(text.to_owned()))
}

/// Reads an RFC 3339 time as unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(text).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_forms() {
        assert_eq!(parse_expiry("never", 100), Ok(None));
        assert_eq!(parse_expiry("1h", 100), Ok(Some(3700)));
        assert_eq!(
            parse_expiry("2030-01-01T00:00:00Z", 0),
            Ok(Some(1_893_456_000))
        );
        assert!(parse_expiry("soon", 0).is_err());
        assert_eq!(rfc3339(1_893_456_000), "2030-01-01T00:00:00Z");
    }
}
