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
use crate::logs::LogOptions;
use crate::records::{ContainerRecord, RestartPolicy};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Longest request line the monitor accepts, newline excluded.
pub const MAX_REQUEST_LINE: usize = 16 << 20;
/// Longest response line a client accepts (a list of many records).
pub const MAX_RESPONSE_LINE: usize = 256 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Request {
    /// Record a container (state Created); answered with its [`Response::Record`].
    Create(Box<CreateRequest>),
    /// Start a created or exited container; [`Response::Record`].
    /// [`ErrorKind::NotModified`] if it runs already.
    Start {
        id: String,
    },
    /// Signal, wait `timeout` seconds (None: 10, negative: for ever), then
    /// SIGKILL; answered with [`Response::Ok`] once it exited.
    Stop {
        id: String,
        #[serde(default)]
        timeout: Option<i64>,
        #[serde(default)]
        signal: Option<i32>,
    },
    /// Stop (if running) then start; [`Response::Ok`] once started.
    Restart {
        id: String,
        #[serde(default)]
        timeout: Option<i64>,
    },
    /// Signal a running container's init; answered with [`Response::Ok`].
    Kill {
        id: String,
        signal: i32,
    },
    Pause {
        id: String,
    },
    Unpause {
        id: String,
    },
    Rename {
        id: String,
        name: String,
    },
    /// Remove a container (a running one only with `force`, answered once
    /// it is dead and gone); [`Response::Ok`].
    Remove {
        id: String,
        #[serde(default)]
        force: bool,
    },
    /// Answered with [`Response::Exit`] when the condition is met.
    Wait {
        id: String,
        #[serde(default)]
        condition: WaitCondition,
    },
    /// [`Response::Ok`], then the connection carries the container's
    /// output as frames (see [`crate::monitor::frame`]) and, with `stdin`,
    /// what the client writes goes to the container's stdin.
    Attach {
        id: String,
        #[serde(default)]
        stdin: bool,
    },
    /// The terminal size of a container (or of one of its execs).
    Resize {
        id: String,
        #[serde(default)]
        exec_id: Option<String>,
        height: u16,
        width: u16,
    },
    /// Run a process in a running container: [`Response::Ok`], then (unless
    /// `detach`) the connection is attached to it as for [`Request::Attach`].
    Exec(Box<ExecRequest>),
    /// [`Response::Exec`].
    ExecInspect {
        exec_id: String,
    },
    /// [`Response::Ok`], then one JSON [`Event`] per line: the kept ones
    /// from `since` (nanoseconds), then new ones until `until`.
    Events {
        #[serde(default)]
        since: Option<i64>,
        #[serde(default)]
        until: Option<i64>,
    },
    /// Add an event (images, volumes) to the log; [`Response::Ok`].
    Publish(Box<Event>),
    /// Every record; [`Response::Records`].
    List,
    /// First phase of a create: holds the name (and id) for this
    /// connection until a `Create` of that id, an `Unreserve`, or the
    /// connection closes (a daemon that dies mid-create frees it).
    /// [`Response::Ok`]; Conflict if a container or another reservation
    /// has the name.
    Reserve {
        id: String,
        name: String,
    },
    /// Adds the volumes a reserved create will mount (so no client removes
    /// them before the record exists); [`Response::Ok`].
    Claim {
        id: String,
        volumes: Vec<String>,
    },
    /// Drops this connection's reservation of `id`; [`Response::Ok`].
    Unreserve {
        id: String,
    },
    /// The creates in flight; [`Response::Reservations`].
    Reservations,
    /// One record; [`Response::Record`].
    Get {
        id: String,
    },
    /// The record of a container named as Docker clients name them (id,
    /// name, unique id prefix); [`Response::Record`].
    Find {
        what: String,
    },
    /// [`Response::Ok`] if the monitor serves.
    Ping,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaitCondition {
    /// Returns at once if the container is not running.
    #[default]
    NotRunning,
    /// The next exit, whatever the state now.
    NextExit,
    /// Its removal.
    Removed,
}

/// A process to run in a container (`docker exec`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ExecRequest {
    pub id: String,
    pub exec_id: String,
    pub cmd: Vec<String>,
    /// `KEY=VALUE`, over the container's environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// `uid[:gid]` or names from the container's /etc/passwd; empty: the container's user.
    #[serde(default)]
    pub user: String,
    /// Empty: the container's working directory.
    #[serde(default)]
    pub workdir: String,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub detach: bool,
}

/// What the monitor knows of an exec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecState {
    pub exec_id: String,
    /// The container.
    pub id: String,
    pub running: bool,
    pub pid: i32,
    #[serde(default)]
    pub exit_code: Option<i32>,
}

/// A create in flight: its id and name are taken, its volumes in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub volumes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Response {
    Ok,
    Record(Box<ContainerRecord>),
    Records(Vec<ContainerRecord>),
    Reservations(Vec<Reservation>),
    /// A container's exit code (for [`Request::Wait`]).
    Exit {
        code: i32,
    },
    Exec(ExecState),
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
    /// Nothing to do: it is already in the wanted state (HTTP 304).
    NotModified,
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

impl ErrorKind {
    /// The class of an engine error: the one mapping, for the monitor's
    /// answers and for the engine's own calls alike.
    pub fn of(e: &Error) -> ErrorKind {
        match e {
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::AlreadyExists(_) => ErrorKind::AlreadyExists,
            Error::NameInUse { .. } => ErrorKind::Conflict,
            Error::WrongState { .. } => ErrorKind::Conflict,
            Error::NotModified(_) => ErrorKind::NotModified,
            Error::Runtime(cubby_runtime::Error::AlreadyExists(_)) => ErrorKind::AlreadyExists,
            Error::Runtime(cubby_runtime::Error::WrongState { .. }) => ErrorKind::Conflict,
            Error::Invalid(_) => ErrorKind::Invalid,
            Error::Runtime(cubby_runtime::Error::NotFound(_)) => ErrorKind::NotFound,
            Error::Runtime(
                cubby_runtime::Error::InvalidId(_) | cubby_runtime::Error::InvalidSpec(_),
            ) => ErrorKind::Invalid,
            _ => ErrorKind::Internal,
        }
    }
}

impl From<&Error> for Response {
    fn from(e: &Error) -> Response {
        Response::error(ErrorKind::of(e), e.to_string())
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

/// An engine event (`docker events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `container`, `image`, `volume`, `network`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `create`, `start`, `die`, `stop`, `kill`, `destroy`, ...
    pub action: String,
    /// The object's id (or name for images and volumes).
    pub id: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Nanoseconds since the epoch; set by the monitor when 0.
    #[serde(default)]
    pub time_nano: i64,
}

impl Event {
    pub fn new(kind: &str, action: &str, id: &str) -> Event {
        Event {
            kind: kind.into(),
            action: action.into(),
            id: id.into(),
            attributes: BTreeMap::new(),
            time_nano: 0,
        }
    }

    pub fn attr(mut self, key: &str, value: impl Into<String>) -> Event {
        self.attributes.insert(key.into(), value.into());
        self
    }
}

/// What the monitor needs to run a container (`Request::Create`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateRequest {
    pub id: String,
    pub name: String,
    pub spec: Spec,
    pub bundle: PathBuf,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default, with = "log_options")]
    pub log: LogOptions,
    /// The daemon's own view of the container, kept in the record as given
    /// (Docker's `{"Config":…,"HostConfig":…,"Mounts":[…]}`).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub config: serde_json::Value,
    /// Give the container a stdin pipe that attachers write to (`-i`).
    #[serde(default)]
    pub open_stdin: bool,
    /// Close it when the first attacher with stdin leaves.
    #[serde(default)]
    pub stdin_once: bool,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Remove the container when it exits for good (`--rm`).
    #[serde(default)]
    pub auto_remove: bool,
    /// Run cubby's init as PID 1 (`--init`).
    #[serde(default)]
    pub init: bool,
}

impl CreateRequest {
    pub fn new(id: &str, name: &str, spec: Spec, bundle: PathBuf) -> CreateRequest {
        CreateRequest {
            id: id.into(),
            name: name.into(),
            spec,
            bundle,
            image: None,
            labels: BTreeMap::new(),
            log: LogOptions::default(),
            config: serde_json::Value::Null,
            open_stdin: false,
            stdin_once: false,
            restart: RestartPolicy::default(),
            auto_remove: false,
            init: false,
        }
    }

    /// Whether the process gets a terminal.
    pub fn tty(&self) -> bool {
        self.spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false)
    }
}

/// [`LogOptions`] on the wire: `{"max_size": 1000, "max_file": 2}`.
mod log_options {
    use crate::logs::LogOptions;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Wire {
        #[serde(default)]
        max_size: Option<u64>,
        #[serde(default = "one")]
        max_file: u32,
    }

    fn one() -> u32 {
        1
    }

    pub fn serialize<S: Serializer>(o: &LogOptions, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            max_size: o.max_size,
            max_file: o.max_file,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LogOptions, D::Error> {
        let w = Wire::deserialize(d)?;
        Ok(LogOptions {
            max_size: w.max_size,
            max_file: w.max_file,
        })
    }
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
            image: Some("busybox".into()),
            labels: [("a".to_string(), "b".to_string())].into(),
            log: crate::logs::LogOptions {
                max_size: Some(1000),
                max_file: 3,
            },
            config: serde_json::json!({"Config": {"Tty": false}}),
            open_stdin: true,
            restart: crate::records::RestartPolicy {
                name: crate::records::RestartName::OnFailure,
                max_retries: 2,
            },
            ..CreateRequest::new(
                "c1",
                "web",
                cubby_runtime::spec::default_spec(
                    std::path::Path::new("/r/rootfs"),
                    vec!["sh".into(), "-c".into(), "echo hi".into()],
                ),
                "/r".into(),
            )
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
