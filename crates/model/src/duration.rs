//! Human durations: `30d`, `90m`, `1h30m`, `3600s`, `2w`.
//!
//! We parse them ourselves rather than pull in a crate because the grammar is tiny and
//! we want exact whole seconds (`30d` is exactly 2,592,000 s; no months, no leap
//! seconds) and error messages that say which character was wrong.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("empty duration: write a number and a unit, e.g. `30d`, `90m`, `1h30m`")]
    Empty,
    #[error("invalid duration `{input}`: {reason}; write a number and a unit (s, m, h, d, w), e.g. `30d`, `90m`, `1h30m`")]
    Invalid { input: String, reason: String },
    #[error("duration `{0}` is too large")]
    Overflow(String),
}

/// Parses a duration into whole seconds.
pub fn parse_duration(input: &str) -> Result<u64, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let invalid = |reason: String| DurationError::Invalid {
        input: input.to_string(),
        reason,
    };
    let mut total: u64 = 0;
    let mut chars = s.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if !c.is_ascii_digit() {
            return Err(invalid(format!("expected a number at `{}`", &s[start..])));
        }
        let mut value: u64 = 0;
        while let Some(&(_, d)) = chars.peek() {
            let Some(digit) = d.to_digit(10) else { break };
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(digit)))
                .ok_or_else(|| DurationError::Overflow(input.to_string()))?;
            chars.next();
        }
        let unit_start = chars.peek().map_or(s.len(), |&(i, _)| i);
        while chars.peek().is_some_and(|&(_, c)| c.is_ascii_alphabetic()) {
            chars.next();
        }
        let unit_end = chars.peek().map_or(s.len(), |&(i, _)| i);
        let unit = &s[unit_start..unit_end];
        let factor = match unit {
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3_600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 604_800,
            "" => return Err(invalid(format!("missing unit after `{value}`"))),
            other => return Err(invalid(format!("unknown unit `{other}`"))),
        };
        total = value
            .checked_mul(factor)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| DurationError::Overflow(input.to_string()))?;
        // Allow `1h 30m`.
        while chars.peek().is_some_and(|&(_, c)| c == ' ') {
            chars.next();
        }
    }
    Ok(total)
}

/// Formats whole seconds in the largest units: `2592000` → `30d`, `5400` → `1h30m`.
/// Below two days it counts hours, as people do (`24h`, not `1d`).
pub fn format_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    let mut rest = secs;
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if unit == "d" && secs < 2 * 86_400 {
            continue;
        }
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_documented_forms() {
        for (input, secs) in [
            ("30d", 2_592_000),
            ("90m", 5_400),
            ("1h30m", 5_400),
            ("1h 30m", 5_400),
            ("24h", 86_400),
            ("3600s", 3_600),
            ("2w", 1_209_600),
            ("0s", 0),
        ] {
            assert_eq!(parse_duration(input), Ok(secs), "{input}");
        }
    }

    #[test]
    fn rejects_with_a_reason() {
        let cases = [
            ("", "empty duration: write a number and a unit, e.g. `30d`, `90m`, `1h30m`"),
            ("30", "invalid duration `30`: missing unit after `30`; write a number and a unit (s, m, h, d, w), e.g. `30d`, `90m`, `1h30m`"),
            ("30y", "invalid duration `30y`: unknown unit `y`; write a number and a unit (s, m, h, d, w), e.g. `30d`, `90m`, `1h30m`"),
            ("d30", "invalid duration `d30`: expected a number at `d30`; write a number and a unit (s, m, h, d, w), e.g. `30d`, `90m`, `1h30m`"),
            ("-1h", "invalid duration `-1h`: expected a number at `-1h`; write a number and a unit (s, m, h, d, w), e.g. `30d`, `90m`, `1h30m`"),
        ];
        for (input, message) in cases {
            assert_eq!(parse_duration(input).unwrap_err().to_string(), message);
        }
        assert!(matches!(
            parse_duration("99999999999999999999d"),
            Err(DurationError::Overflow(_))
        ));
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(secs in 0u64..10_000_000_000) {
            prop_assert_eq!(parse_duration(&format_duration(secs)), Ok(secs));
        }
    }
}
