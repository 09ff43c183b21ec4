//! Time as unseen counts it: whole seconds of UTC since the Unix epoch.

use chrono::{DateTime, SecondsFormat, Utc};
use thiserror::Error;

/// Whole seconds since the Unix epoch, UTC. Signed so that window arithmetic near the
/// epoch (`T - 30d` for small test times) never wraps.
pub type UnixSecs = i64;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TimeError {
    #[error(
        "invalid time `{0}`: use RFC 3339 (`2026-11-28T17:00:00Z`) or Unix seconds (`1764349200`)"
    )]
    Invalid(String),
}

/// OTLP `time_unix_nano` floored to whole seconds (contract section 1).
pub fn unix_secs_from_nanos(nanos: u64) -> UnixSecs {
    // u64 nanos / 1e9 always fits an i64.
    (nanos / 1_000_000_000) as UnixSecs
}

/// Parses RFC 3339 (any offset) or Unix seconds, fractional allowed, floored to whole
/// seconds. Used for `--at` and for CSV `_time`.
pub fn parse_time(input: &str) -> Result<UnixSecs, TimeError> {
    let s = input.trim();
    let invalid = || TimeError::Invalid(input.to_string());
    if s.is_empty() {
        return Err(invalid());
    }
    if s.bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return parse_epoch(s).ok_or_else(invalid);
    }
    // Splunk writes ISO 8601 with a space instead of `T` in some exports.
    let normalized;
    let s = if s.len() > 10 && s.as_bytes()[10] == b' ' {
        normalized = format!("{}T{}", &s[..10], &s[11..]);
        normalized.as_str()
    } else {
        s
    };
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp())
        .map_err(|_| invalid())
}

fn parse_epoch(s: &str) -> Option<UnixSecs> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    if let Some(f) = frac {
        if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    let negative = int.starts_with('-');
    let digits = int.strip_prefix('-').unwrap_or(int);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: i64 = int.parse().ok()?;
    // Floor, not truncate: -1.5 is second -2.
    let has_fraction = frac.is_some_and(|f| f.bytes().any(|b| b != b'0'));
    Some(if negative && has_fraction {
        whole - 1
    } else {
        whole
    })
}

/// `2023-06-14T19:59:29Z`.
pub fn format_rfc3339(secs: UnixSecs) -> String {
    DateTime::<Utc>::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_else(|| secs.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_epoch_and_rfc3339() {
        assert_eq!(parse_time("1686772769"), Ok(1_686_772_769));
        assert_eq!(parse_time("1686772769.999"), Ok(1_686_772_769));
        assert_eq!(parse_time("-1.5"), Ok(-2));
        assert_eq!(parse_time("2023-06-14T19:59:29Z"), Ok(1_686_772_769));
        assert_eq!(parse_time("2023-06-14T19:59:29.9Z"), Ok(1_686_772_769));
        assert_eq!(parse_time("2023-06-14T21:59:29+02:00"), Ok(1_686_772_769));
        assert_eq!(
            parse_time("2023-06-14 19:59:29.000+00:00"),
            Ok(1_686_772_769)
        );
        assert_eq!(format_rfc3339(1_686_772_769), "2023-06-14T19:59:29Z");
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "yesterday",
            "1.2.3",
            "12a",
            "2023-13-01T00:00:00Z",
            "1.",
        ] {
            assert_eq!(
                parse_time(bad).unwrap_err().to_string(),
                format!("invalid time `{bad}`: use RFC 3339 (`2026-11-28T17:00:00Z`) or Unix seconds (`1764349200`)")
            );
        }
    }

    #[test]
    fn floors_nanos() {
        assert_eq!(
            unix_secs_from_nanos(1_686_772_769_034_865_545),
            1_686_772_769
        );
        assert_eq!(unix_secs_from_nanos(999_999_999), 0);
    }
}
