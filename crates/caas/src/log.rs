//! The service's log lines: human text (`cubby serve: message`, the
//! default) or one JSON object per line (`cubby serve --log-format json`):
//! `time` (RFC 3339, UTC, ms), `level`, `message`, and the ids the message
//! is about (`session`, `sandbox`, `template`) as fields of their own.

use std::sync::atomic::{AtomicBool, Ordering};

static JSON: AtomicBool = AtomicBool::new(false);

/// Chooses the format for the rest of the process.
pub fn set_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

pub fn is_json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Writes one line to stderr: `level` is "info", "warn" or "error".
pub fn emit(level: &str, message: &str) {
    if !is_json() {
        eprintln!("cubby serve: {message}");
        return;
    }
    eprintln!(
        "{}",
        json_line(std::time::SystemTime::now(), level, message)
    );
}

/// The JSON object for one line (fields lifted out of the message's
/// leading `session ID:` / `sandbox NAME:` / `template ID:`).
pub fn json_line(at: std::time::SystemTime, level: &str, message: &str) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert("time".into(), rfc3339(at).into());
    obj.insert("level".into(), level.into());
    obj.insert("message".into(), message.into());
    for key in ["session", "sandbox", "orphan sandbox", "template"] {
        if let Some(rest) = message.strip_prefix(key).and_then(|r| r.strip_prefix(' ')) {
            let id: String = rest
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != ':')
                .collect();
            if !id.is_empty() {
                obj.insert(key.replace("orphan ", ""), id.into());
            }
            break;
        }
    }
    serde_json::Value::Object(obj).to_string()
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn rfc3339(at: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// `log!("warn", "session {id}: {e}")`.
#[macro_export]
macro_rules! log {
    ($level:literal, $($arg:tt)*) => {
        $crate::log::emit($level, &format!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_carry_time_level_and_ids() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_796_598_215_042);
        let v: serde_json::Value =
            serde_json::from_str(&json_line(at, "warn", "session abc123: archive pending: x"))
                .unwrap();
        assert_eq!(v["time"], "2026-12-06T23:03:35.042Z");
        assert_eq!(v["level"], "warn");
        assert_eq!(v["session"], "abc123");
        assert_eq!(v["message"], "session abc123: archive pending: x");
        let v: serde_json::Value =
            serde_json::from_str(&json_line(at, "info", "listening on http://x")).unwrap();
        assert!(v.get("session").is_none());
        assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
