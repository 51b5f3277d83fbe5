//! `GET /events`: the monitor's event log as Docker's JSON stream, with
//! `since`/`until` and the usual filters (type, event, container, image,
//! label, volume).

use super::error::ApiError;
use super::util::Query;
use super::{ApiResult, Shared};
use crate::logs::parse_rfc3339;
use crate::monitor::events::Event;
use axum::body::{Body, Bytes};
use axum::extract::{Query as Q, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use tokio::io::AsyncBufReadExt;

/// Docker's times: `seconds[.fraction]` (what the CLI sends) or RFC 3339;
/// nanoseconds since the epoch.
pub fn parse_time(s: &str) -> ApiResult<i64> {
    let bad = || ApiError::bad_request(format!("invalid time {s:?}: use seconds since the epoch"));
    if let Some((secs, nanos)) = parse_rfc3339(s) {
        return Ok(secs * 1_000_000_000 + i64::from(nanos));
    }
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    let mut nanos = 0i64;
    if !frac.is_empty() {
        if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        nanos = format!("{frac:0<9}").parse().map_err(|_| bad())?;
    }
    Ok(secs * 1_000_000_000 + nanos)
}

/// Docker's `filters` query: `{"key": {"value": true}}` or `{"key": ["value"]}`.
pub fn parse_filters(q: &Query) -> ApiResult<BTreeMap<String, Vec<String>>> {
    let Some(raw) = q.get("filters").filter(|f| !f.is_empty()) else {
        return Ok(BTreeMap::new());
    };
    let v: Value = super::json::decode(raw.as_bytes(), &format!("filters {raw:?}"))?;
    let mut out = BTreeMap::new();
    let Value::Object(map) = v else {
        return Err(ApiError::bad_request(format!("invalid filters {raw:?}")));
    };
    for (k, v) in map {
        let values = match v {
            Value::Object(m) => m
                .into_iter()
                .filter(|(_, b)| b != &Value::Bool(false))
                .map(|(k, _)| k)
                .collect(),
            Value::Array(a) => a
                .into_iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => return Err(ApiError::bad_request(format!("invalid filter {k:?}"))),
        };
        out.insert(k, values);
    }
    Ok(out)
}

pub use crate::service::filters::labels_match;

fn matches(e: &Event, filters: &BTreeMap<String, Vec<String>>) -> bool {
    filters.iter().all(|(key, values)| {
        if values.is_empty() {
            return true;
        }
        let any = |f: &dyn Fn(&str) -> bool| values.iter().any(|v| f(v));
        match key.as_str() {
            "type" => any(&|v| v == e.kind),
            "event" => any(&|v| v == e.action || e.action.starts_with(&format!("{v}:"))),
            "container" => {
                e.kind == "container"
                    && any(&|v| {
                        e.id.starts_with(v) || e.attributes.get("name").is_some_and(|n| n == v)
                    })
            }
            "image" => any(&|v| {
                e.attributes.get("image").is_some_and(|i| i == v)
                    || (e.kind == "image" && e.id == v)
            }),
            "volume" => e.kind == "volume" && any(&|v| e.id == v),
            "label" => labels_match(values, &e.attributes),
            _ => true,
        }
    })
}

/// Docker's event JSON.
pub fn docker_event(e: &Event) -> Value {
    let mut doc = json!({
        "Type": e.kind,
        "Action": e.action,
        "Actor": { "ID": e.id, "Attributes": e.attributes },
        "scope": "local",
        "time": e.time_nano / 1_000_000_000,
        "timeNano": e.time_nano,
    });
    // The pre-1.22 fields the docker CLI still prints for containers.
    if e.kind == "container" {
        doc["status"] = json!(e.action);
        doc["id"] = json!(e.id);
        doc["from"] = json!(e.attributes.get("image").cloned().unwrap_or_default());
    }
    doc
}

pub async fn events(State(d): State<Shared>, Q(q): Q<Query>) -> ApiResult<Response> {
    let since = q
        .get("since")
        .filter(|s| !s.is_empty())
        .map(|s| parse_time(s))
        .transpose()?;
    let until = q
        .get("until")
        .filter(|s| !s.is_empty())
        .map(|s| parse_time(s))
        .transpose()?;
    let filters = parse_filters(&q)?;
    let stream = d.events(since, until).await?;
    let body = async_stream_lines(move |tx: tokio::sync::mpsc::Sender<Bytes>| async move {
        // Own the whole stream: capturing only its reader would drop the
        // writer when the handler returns, and the monitor would end the
        // subscription at once (live `docker events` exited immediately).
        let mut stream = stream;
        let mut line = String::new();
        loop {
            line.clear();
            match stream.reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let Ok(e) = serde_json::from_str::<Event>(&line) else {
                continue;
            };
            if !matches(&e, &filters) {
                continue;
            }
            if tx
                .send(Bytes::from(format!("{}\n", docker_event(&e))))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}

/// A body fed by a task through a small channel: the task ends when the
/// client goes away (sends fail).
pub fn async_stream_lines<F, Fut>(producer: F) -> Body
where
    F: FnOnce(tokio::sync::mpsc::Sender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(producer(tx));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_filters() {
        assert_eq!(parse_time("12").unwrap(), 12_000_000_000);
        assert_eq!(parse_time("12.5").unwrap(), 12_500_000_000);
        assert_eq!(parse_time("1.000000001").unwrap(), 1_000_000_001);
        assert!(parse_time("x").is_err());
        assert!(parse_time("1.1234567890").is_err());
        let q: Query = [(
            "filters".to_string(),
            r#"{"type":{"container":true},"event":["die"]}"#.to_string(),
        )]
        .into();
        let f = parse_filters(&q).unwrap();
        let e = Event::new("container", "die", "abc").attr("name", "web");
        assert!(matches(&e, &f));
        assert!(!matches(&Event::new("container", "start", "abc"), &f));
        let mut f2 = BTreeMap::new();
        f2.insert("container".to_string(), vec!["web".to_string()]);
        assert!(matches(&e, &f2));
        let labels: BTreeMap<String, String> = [("a".to_string(), "1".to_string())].into();
        assert!(labels_match(&["a".into()], &labels));
        assert!(labels_match(&["a=1".into()], &labels));
        assert!(!labels_match(&["a=2".into()], &labels));
        assert_eq!(docker_event(&e)["status"], "die");
    }
}
