//! The rejected-events log: every piece of input that could not become a record, with where it
//! came from and why, kept under `DATA/rejected/` so that nothing vanishes silently.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use crate::decode::Location;
use crate::redact::redact_secret;
use crate::writer::{WriteError, create_dir_durably};

/// At most this much of a rejected event's text is kept in the log.
pub const MAX_RAW_BYTES: usize = 64 * 1024;

/// One thing that was not recorded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// File name, `-` for standard input, or the HTTP request.
    pub source: String,
    /// Where in the source, when known.
    pub location: Option<Location>,
    /// Why.
    pub reason: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(location) => write!(f, "{}: {}: {}", self.source, location, self.reason),
            None => write!(f, "{}: {}", self.source, self.reason),
        }
    }
}

/// Rejected text that could hold Secret values is redacted like stored objects are: the objects of
/// an event that parses are redacted, and text that does not parse is not kept at all.
fn scrub_secrets(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let mentions_secret = memchr::memmem::find(raw, b"ecret").is_some();
    if !mentions_secret {
        return std::borrow::Cow::Borrowed(raw);
    }
    match serde_json::from_slice::<serde_json::Value>(raw) {
        Ok(serde_json::Value::Object(mut event)) if event.contains_key("auditID") || event.contains_key("stage") => {
            for key in ["requestObject", "responseObject"] {
                if let Some(object) = event.get_mut(key) {
                    let redacted = redact_secret(&object.to_string());
                    *object = serde_json::from_str(&redacted).unwrap_or(serde_json::Value::Null);
                }
            }
            std::borrow::Cow::Owned(serde_json::Value::Object(event).to_string().into_bytes())
        }
        // Not an event: perhaps a Secret itself (`kubectl get secret -o json`), or a list of them.
        Ok(_) => std::borrow::Cow::Owned(redact_secret(&String::from_utf8_lossy(raw)).into_bytes()),
        _ => std::borrow::Cow::Borrowed(b"<not kept: the text may hold Secret values and could not be redacted>"),
    }
}

/// Appends rejections as JSON lines to `DATA/rejected/<writer>.jsonl`, created on the first one.
pub struct RejectedLog {
    path: PathBuf,
    file: Option<BufWriter<File>>,
}

impl RejectedLog {
    /// A log at `dir/<writer_id>.jsonl`.
    pub fn new(dir: PathBuf, writer_id: &str) -> Self {
        Self { path: dir.join(format!("{writer_id}.jsonl")), file: None }
    }

    /// The log's path (it exists only once something was rejected).
    pub fn path(&self) -> &PathBuf {
        &self.path
    }

    /// Appends one rejection and the text that was rejected (cut to [`MAX_RAW_BYTES`]).
    pub fn append(&mut self, rejection: &Rejection, raw: &[u8]) -> Result<(), WriteError> {
        let io = |action, source| WriteError::Io { action, path: self.path.clone(), source };
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                create_dir_durably(dir)?;
            }
            let file = OpenOptions::new().create(true).append(true).open(&self.path).map_err(|e| io("opening", e))?;
            self.file = Some(BufWriter::new(file));
        }
        let raw = scrub_secrets(raw);
        let raw = raw.as_ref();
        let cut = raw.len().min(MAX_RAW_BYTES);
        let line = serde_json::json!({
            "source": rejection.source,
            "line": rejection.location.map(|l| l.line),
            "item": rejection.location.and_then(|l| l.item),
            "reason": rejection.reason,
            "raw": String::from_utf8_lossy(&raw[..cut]),
            "raw_truncated": cut < raw.len(),
        });
        if let Some(file) = self.file.as_mut() {
            writeln!(file, "{line}").map_err(|e| io("writing", e))?;
        }
        Ok(())
    }

    /// Flushes and fsyncs what was written.
    pub fn sync(&mut self) -> Result<(), WriteError> {
        if let Some(file) = self.file.as_mut() {
            let io = |action, source| WriteError::Io { action, path: self.path.clone(), source };
            file.flush().map_err(|e| io("writing", e))?;
            file.get_ref().sync_all().map_err(|e| io("fsyncing", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_secrets_are_redacted_or_not_kept() {
        let event = br#"{"auditID":"a","objectRef":{"resource":"secrets"},"requestObject":{"kind":"Secret","data":{"k":"c2VjcmV0"}}}"#;
        let out = scrub_secrets(event);
        assert!(!String::from_utf8_lossy(&out).contains("c2VjcmV0"));
        assert!(String::from_utf8_lossy(&out).contains("\"auditID\":\"a\""));
        let broken = br#"{"kind":"Secret","data":{"k":"c2VjcmV0"}"#;
        assert!(!String::from_utf8_lossy(&scrub_secrets(broken)).contains("c2VjcmV0"));
        assert_eq!(scrub_secrets(b"plain").as_ref(), b"plain");
        let bare = br#"{"kind":"Secret","metadata":{"name":"s"},"data":{"k":"c2VjcmV0"}}"#;
        assert!(!String::from_utf8_lossy(&scrub_secrets(bare)).contains("c2VjcmV0"));
    }
}
