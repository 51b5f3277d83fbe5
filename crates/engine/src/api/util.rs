//! Small pure helpers of the API: query flags, times, Docker's log frames,
//! signal names, image names.

use super::error::{ApiError, ApiResult};
use crate::logs::{parse_rfc3339, Stream};
use nix::sys::signal::Signal;
use std::collections::HashMap;

pub type Query = HashMap<String, String>;

/// A boolean query parameter as Docker reads them: `1`, `true`, `True`
/// are true; absent, empty, `0`, `false` are false.
pub fn flag(q: &Query, name: &str) -> bool {
    matches!(
        q.get(name).map(|v| v.to_ascii_lowercase()).as_deref(),
        Some("1" | "true")
    )
}

/// Seconds since the epoch of an RFC 3339 time; 0 if it does not parse.
pub fn unix_secs(rfc3339: &str) -> i64 {
    parse_rfc3339(rfc3339).map(|(s, _)| s).unwrap_or(0)
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Docker's `HumanDuration` (as in "Up 5 seconds", "Exited (0) 2 hours ago").
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (mins, hours) = (secs / 60, secs / 3600);
    let plural = |n: i64, unit: &str| format!("{n} {unit}s");
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => plural(s, "second"),
        _ if mins == 1 => "About a minute".into(),
        _ if mins < 60 => plural(mins, "minute"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => plural(hours, "hour"),
        _ if hours < 24 * 7 * 2 => plural(hours / 24, "day"),
        _ if hours < 24 * 30 * 2 => plural(hours / 24 / 7, "week"),
        _ if hours < 24 * 365 * 2 => plural(hours / 24 / 30, "month"),
        _ => plural(hours / 24 / 365, "year"),
    }
}

/// One frame of Docker's multiplexed stream (containers without a TTY):
/// `[stream, 0, 0, 0, len as u32 big-endian]` then the bytes. Data longer
/// than `u32::MAX` is split into several frames; empty data makes none.
pub fn push_frame(out: &mut Vec<u8>, stream: Stream, data: &[u8]) {
    let kind = match stream {
        Stream::Stdout => 1,
        Stream::Stderr => 2,
    };
    for chunk in data.chunks(u32::MAX as usize) {
        out.extend_from_slice(&[kind, 0, 0, 0]);
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        out.extend_from_slice(chunk);
    }
}

/// A signal as `docker kill --signal` sends it: empty (SIGKILL), a number,
/// or a name with or without `SIG`, any case.
pub fn parse_signal(s: &str) -> ApiResult<Signal> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(Signal::SIGKILL);
    }
    cubby_runtime::signals::parse(s)
        .map_err(|_| ApiError::bad_request(format!("Invalid signal: {s}")))
}

/// How Docker shows a stored reference: `docker.io/library/alpine:3` is
/// `alpine:3`, `docker.io/user/app:1` is `user/app:1`.
pub fn short_name(name: &str) -> &str {
    name.strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        let mut out = Vec::new();
        push_frame(&mut out, Stream::Stdout, b"hi\n");
        push_frame(&mut out, Stream::Stderr, b"");
        push_frame(&mut out, Stream::Stderr, b"e");
        assert_eq!(
            out,
            [1, 0, 0, 0, 0, 0, 0, 3, b'h', b'i', b'\n', 2, 0, 0, 0, 0, 0, 0, 1, b'e']
        );
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("15").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("hup").unwrap(), Signal::SIGHUP);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), Signal::SIGUSR1);
        for bad in ["0", "999", "-1", "NOPE", "SIG"] {
            assert_eq!(
                parse_signal(bad).unwrap_err().status,
                axum::http::StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }

    #[test]
    fn durations_and_flags() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(5), "5 seconds");
        assert_eq!(human_duration(61), "About a minute");
        assert_eq!(human_duration(3 * 3600), "3 hours");
        assert_eq!(human_duration(-4), "Less than a second");
        let q: Query = [("a", "1"), ("b", "True"), ("c", "0"), ("d", "")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(flag(&q, "a") && flag(&q, "b"));
        assert!(!flag(&q, "c") && !flag(&q, "d") && !flag(&q, "e"));
        assert_eq!(short_name("docker.io/library/alpine:3"), "alpine:3");
        assert_eq!(short_name("docker.io/u/app:1"), "u/app:1");
        assert_eq!(short_name("ghcr.io/x/y:1"), "ghcr.io/x/y:1");
        assert_eq!(unix_secs("1970-01-01T00:01:00Z"), 60);
        assert_eq!(unix_secs("garbage"), 0);
    }
}
