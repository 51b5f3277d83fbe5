//! The daemon↔monitor protocol: JSON lines over a Unix stream socket.
//!
//! Each request is one line of JSON (a [`Request`]) and gets exactly one
//! response line (a [`Response`]), in order. Messages are adjacently
//! tagged: `{"type":"ping"}`, `{"type":"kill","data":{"id":"c1","signal":9}}`,
//! `{"type":"records","data":[...]}`.
//!
//! A line that is not a valid request gets an [`Response::Error`] of kind
//! [`ErrorKind::BadRequest`] and the connection stays usable. A request
//! line longer than [`MAX_REQUEST_LINE`] is refused the same way; the
//! monitor discards it up to its newline without keeping it.

use crate::error::Error;
use crate::monitor::CreateRequest;
use crate::records::ContainerRecord;
use serde::{Deserialize, Serialize};

/// Longest request line the monitor accepts, newline excluded.
pub const MAX_REQUEST_LINE: usize = 16 << 20;
/// Longest response line a client accepts (a list of many records).
pub const MAX_RESPONSE_LINE: usize = 256 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Request {
    /// Create and start a container; answered with its [`Response::Record`].
    Create(Box<CreateRequest>),
    /// Signal a running container's init; answered with [`Response::Ok`].
    Kill { id: String, signal: i32 },
    /// Remove a container (a running one only with `force`); [`Response::Ok`].
    Remove {
        id: String,
        #[serde(default)]
        force: bool,
    },
    /// Every record; [`Response::Records`].
    List,
    /// One record; [`Response::Record`].
    Get { id: String },
    /// [`Response::Ok`] if the monitor serves.
    Ping,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Response {
    Ok,
    Record(Box<ContainerRecord>),
    Records(Vec<ContainerRecord>),
    Error {
        message: String,
        /// What went wrong, for the daemon to pick an HTTP status.
        #[serde(default)]
        kind: ErrorKind,
    },
}

/// The class of a monitor error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The line was not a request (or was too long).
    BadRequest,
    NotFound,
    AlreadyExists,
    /// The container is not in a state that allows the request.
    Conflict,
    /// An argument was refused (bad id, bad signal, unsupported option).
    Invalid,
    /// Anything else: I/O, the runtime, cgroups.
    #[default]
    Internal,
}

impl Response {
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
        Response::Error {
            message: message.into(),
            kind,
        }
    }
}

impl From<&Error> for Response {
    fn from(e: &Error) -> Response {
        let kind = match e {
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::AlreadyExists(_) => ErrorKind::AlreadyExists,
            Error::WrongState { .. } => ErrorKind::Conflict,
            Error::Runtime(cubby_runtime::Error::AlreadyExists(_)) => ErrorKind::AlreadyExists,
            Error::Runtime(cubby_runtime::Error::WrongState { .. }) => ErrorKind::Conflict,
            Error::Invalid(_) => ErrorKind::Invalid,
            Error::Runtime(cubby_runtime::Error::NotFound(_)) => ErrorKind::NotFound,
            Error::Runtime(
                cubby_runtime::Error::InvalidId(_) | cubby_runtime::Error::InvalidSpec(_),
            ) => ErrorKind::Invalid,
            _ => ErrorKind::Internal,
        };
        Response::error(kind, e.to_string())
    }
}

/// Serializes a message as one line, newline included.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Our messages are maps, strings and numbers with string keys: they
    // always serialize.
    let mut line = serde_json::to_vec(msg).unwrap_or_else(|e| {
        serde_json::to_vec(&Response::error(
            ErrorKind::Internal,
            format!("encode: {e}"),
        ))
        .unwrap_or_default()
    });
    line.push(b'\n');
    line
}

/// Parses one request line (without its newline); the error is the
/// response to send back.
pub fn decode_request(line: &[u8]) -> Result<Request, Response> {
    serde_json::from_slice(line)
        .map_err(|e| Response::error(ErrorKind::BadRequest, format!("bad request: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        assert_eq!(encode(&Request::Ping), b"{\"type\":\"ping\"}\n");
        assert_eq!(
            decode_request(br#"{"type":"kill","data":{"id":"c","signal":9}}"#).unwrap(),
            Request::Kill {
                id: "c".into(),
                signal: 9
            }
        );
        assert_eq!(
            decode_request(br#"{"type":"remove","data":{"id":"c"}}"#).unwrap(),
            Request::Remove {
                id: "c".into(),
                force: false
            }
        );
        let r: Response =
            serde_json::from_slice(br#"{"type":"error","data":{"message":"x"}}"#).unwrap();
        assert_eq!(r, Response::error(ErrorKind::Internal, "x"));
        assert_eq!(
            encode(&Response::Records(vec![])),
            b"{\"type\":\"records\",\"data\":[]}\n"
        );
    }

    #[test]
    fn create_round_trips() {
        let req = CreateRequest {
            id: "c1".into(),
            name: "web".into(),
            spec: cubby_runtime::spec::default_spec(
                std::path::Path::new("/r/rootfs"),
                vec!["sh".into(), "-c".into(), "echo hi".into()],
            ),
            bundle: "/r".into(),
            image: Some("busybox".into()),
            labels: [("a".to_string(), "b".to_string())].into(),
            log: crate::logs::LogOptions {
                max_size: Some(1000),
                max_file: 3,
            },
            config: serde_json::json!({"Config": {"Tty": false}}),
        };
        let line = encode(&Request::Create(Box::new(req.clone())));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(
            decode_request(&line[..line.len() - 1]).unwrap(),
            Request::Create(Box::new(req))
        );
        // Optional fields may be left out.
        let spec = serde_json::to_string(&cubby_runtime::spec::default_spec(
            std::path::Path::new("/r/rootfs"),
            vec!["true".into()],
        ))
        .unwrap();
        let line = format!(
            r#"{{"type":"create","data":{{"id":"c","name":"n","bundle":"/r","spec":{spec}}}}}"#
        );
        let Request::Create(req) = decode_request(line.as_bytes()).unwrap() else {
            panic!("not a create")
        };
        assert_eq!(req.log, crate::logs::LogOptions::default());
        assert!(req.labels.is_empty() && req.image.is_none());
    }

    #[test]
    fn garbage_is_a_bad_request() {
        for line in [
            &b""[..],
            b"{",
            b"null",
            b"\xff\xfe",
            b"{\"type\":\"nope\"}",
            b"{\"type\":\"kill\",\"data\":{\"id\":1}}",
            b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        ] {
            match decode_request(line) {
                Err(Response::Error {
                    kind: ErrorKind::BadRequest,
                    ..
                }) => {}
                other => panic!("{line:?}: {other:?}"),
            }
        }
    }
}
