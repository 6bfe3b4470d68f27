//! Session names: what a valid one looks like, and how automatic sessions are named.
//!
//! Both the ingest side (which creates sessions) and the query side (which is asked for them by
//! name) need the same rule, so it lives with the schema.

use std::fmt;

/// Longest allowed session name.
pub const MAX_SESSION_NAME_LEN: usize = 128;

/// Why a session name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSessionName {
    /// The refused name.
    pub name: String,
}

impl fmt::Display for InvalidSessionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid session name {:?}: use 1 to {MAX_SESSION_NAME_LEN} characters from A-Z a-z 0-9 . _ -",
            self.name
        )
    }
}

impl std::error::Error for InvalidSessionName {}

/// Checks a session name against `[A-Za-z0-9._-]{1,128}`. Names become directory names
/// (`session_id=<name>`), so anything that could climb out of the directory (`..`) is refused too.
pub fn validate_session_name(name: &str) -> Result<(), InvalidSessionName> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SESSION_NAME_LEN
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok { Ok(()) } else { Err(InvalidSessionName { name: name.to_owned() }) }
}

/// The name of an automatic session that starts at `start_us` (microseconds since the epoch):
/// `auto-YYYYMMDDTHHMMSSZ`, UTC, which sorts in time order.
pub fn auto_session_name(start_us: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(start_us) {
        Some(t) => format!("auto-{}", t.format("%Y%m%dT%H%M%SZ")),
        None => format!("auto-{start_us}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        assert!(validate_session_name("rollout-2024_05.a").is_ok());
        assert!(validate_session_name(&"a".repeat(128)).is_ok());
    }

    #[test]
    fn refuses_everything_else() {
        for bad in ["", "..", ".", "a/b", "a b", "naïve", "x:y", &"a".repeat(129)] {
            let err = validate_session_name(bad).unwrap_err();
            assert!(err.to_string().contains("invalid session name"), "{bad}");
        }
    }

    #[test]
    fn auto_names_are_utc_and_sortable() {
        // 2021-02-10T00:28:46.451356Z
        assert_eq!(auto_session_name(1_612_916_926_451_356), "auto-20210210T002846Z");
        assert!(auto_session_name(1_000_000) < auto_session_name(2_000_000_000_000));
    }
}
