//! `GET /containers/{id}/logs` (with `follow`, `since`, `until`, `tail`,
//! `timestamps`, stream selection) and the json-file options of
//! `HostConfig.LogConfig` (`--log-opt max-size/max-file`).
//!
//! Following polls the log file (every 100 ms, on the blocking pool only
//! for the read) through a [`LogFollower`], which survives rotation, and
//! the container's record (every 500 ms); it
//! stops when the container is no longer running and the file is drained,
//! when `until` has passed, or when the client goes away (the channel to
//! the response body closes). Rejected: inotify, which would need a watch
//! on the directory to see rotations and still a record check for the
//! exit, for no gain at these rates.

use super::error::ApiError;
use super::util::{flag, push_frame, Query};
use super::{blocking, ApiResult, Shared};
use crate::logs::{read_logs, LogFilter, LogFollower, LogLine};
use crate::records::{ContainerRecord, Status};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query as Q, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(100);
const RECORD_POLL: Duration = Duration::from_millis(500);

/// A `since`/`until` value as Docker sends it (`seconds[.nanoseconds]`,
/// the CLI converts durations and dates) or an RFC 3339 time, as RFC 3339;
/// `None` for empty or 0 (no bound).
pub fn docker_time(what: &str, v: &str) -> ApiResult<Option<String>> {
    let v = v.trim();
    if v.is_empty() || v == "0" {
        return Ok(None);
    }
    if crate::logs::parse_rfc3339(v).is_some() {
        return Ok(Some(v.to_string()));
    }
    let bad = || ApiError::bad_request(format!("invalid {what} {v:?}: want seconds[.nanoseconds]"));
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().map_err(|_| bad())?
    };
    Ok(Some(cubby_runtime::state::rfc3339(secs, nanos)))
}

/// The query's filter, validated.
pub fn filter_of(q: &Query) -> ApiResult<LogFilter> {
    let (stdout, stderr) = (flag(q, "stdout"), flag(q, "stderr"));
    if !stdout && !stderr {
        return Err(ApiError::bad_request(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let tail = match q.get("tail").map(String::as_str) {
        None | Some("" | "all") => None,
        Some(n) => match n.parse::<i64>() {
            Ok(n) if n < 0 => None,
            Ok(n) => Some(n as usize),
            Err(_) => return Err(ApiError::bad_request(format!("invalid tail {n:?}"))),
        },
    };
    Ok(LogFilter {
        tail,
        since: docker_time("since", q.get("since").map_or("", String::as_str))?,
        until: docker_time("until", q.get("until").map_or("", String::as_str))?,
        timestamps: flag(q, "timestamps"),
        stdout,
        stderr,
    })
}

/// Multiplexed frames, or for a container with a TTY (one stream) the
/// raw text, as Docker sends them.
fn frames(lines: &[LogLine], tty: bool) -> Bytes {
    let mut out = Vec::new();
    for l in lines {
        if tty {
            out.extend_from_slice(l.text.as_bytes());
        } else {
            push_frame(&mut out, l.stream, l.text.as_bytes());
        }
    }
    Bytes::from(out)
}

/// Whether more output can still come: live, or about to be restarted.
fn may_log(status: Status) -> bool {
    status.is_live() || status == Status::Restarting
}

pub async fn logs(
    State(d): State<Shared>,
    Path(id): Path<String>,
    Q(q): Q<Query>,
) -> ApiResult<Response> {
    let filter = filter_of(&q)?;
    let r = d.find(&id).await?;
    let tty = r.tty;
    let kind = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let content = [(CONTENT_TYPE, kind)];
    if !flag(&q, "follow") {
        let path = r.log_path.clone();
        let body = blocking(move || {
            let lines = read_logs(&path, &filter)?;
            Ok(frames(&lines, tty))
        })
        .await?;
        return Ok((content, body).into_response());
    }
    // Errors found before the first byte are still HTTP errors.
    let path = r.log_path.clone();
    let f2 = filter.clone();
    let (first, follower) = blocking(move || Ok(LogFollower::start(&path, &f2)?)).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let until = filter
        .until
        .as_deref()
        .and_then(crate::logs::parse_rfc3339)
        .map(|(s, _)| s);
    tokio::spawn(follow(d, r, first, follower, until, tx));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        let b = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(b), rx))
    });
    Ok((content, Body::from_stream(body)).into_response())
}

/// The follow loop: a task that holds no thread between polls (a class of
/// students each following a log costs timers, not pool threads). A failed
/// send means the client went away; errors after the first byte can only
/// end the stream.
async fn follow(
    d: Shared,
    r: ContainerRecord,
    first: Vec<LogLine>,
    mut follower: LogFollower,
    until: Option<i64>,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) {
    let (id, tty, mut running) = (r.id, r.tty, may_log(r.status));
    if !first.is_empty() && tx.send(frames(&first, tty)).await.is_err() {
        return;
    }
    let mut checked = Instant::now();
    while running {
        if until.is_some_and(|u| super::util::now_secs() > u) || tx.is_closed() {
            return;
        }
        tokio::time::sleep(POLL).await;
        if checked.elapsed() >= RECORD_POLL {
            checked = Instant::now();
            let id = id.clone();
            running = d
                .monitor(move |c| c.get(&id))
                .await
                .is_ok_and(|rec| may_log(rec.status));
        }
        // After the exit is seen, one last read drains the file: the
        // monitor writes the last output before it records the exit.
        let polled = blocking(move || {
            let lines = follower.poll()?;
            Ok((follower, lines))
        })
        .await;
        let lines;
        (follower, lines) = match polled {
            Ok(v) => v,
            Err(_) => return,
        };
        if !lines.is_empty() && tx.send(frames(&lines, tty)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_sizes() {
        assert_eq!(docker_time("since", "").unwrap(), None);
        assert_eq!(docker_time("since", "0").unwrap(), None);
        assert_eq!(
            docker_time("since", "1700000000.5").unwrap().as_deref(),
            Some("2023-11-14T22:13:20.500000000Z")
        );
        assert_eq!(
            docker_time("since", "60").unwrap().as_deref(),
            Some("1970-01-01T00:01:00.000000000Z")
        );
        assert_eq!(
            docker_time("until", "2024-01-01T00:00:00Z")
                .unwrap()
                .as_deref(),
            Some("2024-01-01T00:00:00Z")
        );
        for bad in ["x", "1.x", "1.0123456789", "yesterday"] {
            assert!(docker_time("since", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters() {
        let q = |pairs: &[(&str, &str)]| -> Query {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(filter_of(&q(&[])).is_err());
        let f = filter_of(&q(&[("stdout", "1"), ("tail", "2"), ("since", "60")])).unwrap();
        assert_eq!(f.tail, Some(2));
        assert!(f.stdout && !f.stderr);
        assert!(f.since.is_some() && f.until.is_none());
        assert!(filter_of(&q(&[("stderr", "1"), ("tail", "x")])).is_err());
        assert_eq!(
            filter_of(&q(&[("stderr", "1"), ("tail", "all")]))
                .unwrap()
                .tail,
            None
        );
    }
}
