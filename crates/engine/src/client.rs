//! A blocking client of the monitor's socket (see [`crate::protocol`]),
//! for the daemon and for tests.

use crate::monitor::CreateRequest;
use crate::protocol::{self, ErrorKind, Request, Response, WaitCondition, MAX_RESPONSE_LINE};
use crate::records::ContainerRecord;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a call waits for the monitor by default. A forced removal
/// may take the monitor up to 10 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to the monitor at {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talk to the monitor: {0}")]
    Io(#[source] std::io::Error),
    /// The monitor refused or failed the request.
    #[error("{message}")]
    Monitor { kind: ErrorKind, message: String },
    /// The monitor answered something unexpected, or hung up.
    #[error("monitor protocol: {0}")]
    Protocol(String),
    /// An earlier call failed mid-exchange; the connection cannot be trusted.
    #[error("the connection to the monitor broke earlier; reconnect")]
    Broken,
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

pub struct MonitorClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    broken: bool,
}

impl MonitorClient {
    /// Connects with [`DEFAULT_TIMEOUT`] for every call.
    pub fn connect(path: &Path) -> Result<MonitorClient> {
        MonitorClient::connect_timeout(path, DEFAULT_TIMEOUT)
    }

    /// Connects; each read or write of a call waits at most `timeout`.
    pub fn connect_timeout(path: &Path, timeout: Duration) -> Result<MonitorClient> {
        let connect_err = |source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        };
        let stream = UnixStream::connect(path).map_err(connect_err)?;
        let timeout = Some(timeout).filter(|t| !t.is_zero());
        stream.set_read_timeout(timeout).map_err(connect_err)?;
        stream.set_write_timeout(timeout).map_err(connect_err)?;
        let writer = stream.try_clone().map_err(connect_err)?;
        Ok(MonitorClient {
            reader: BufReader::new(stream),
            writer,
            broken: false,
        })
    }

    /// Sends one request and reads its response; a monitor error is
    /// returned as [`ClientError::Monitor`].
    pub fn call(&mut self, req: &Request) -> Result<Response> {
        if self.broken {
            return Err(ClientError::Broken);
        }
        // Until the exchange completes, a failure leaves it half done.
        self.broken = true;
        self.writer
            .write_all(&protocol::encode(req))
            .map_err(ClientError::Io)?;
        let mut line = Vec::new();
        (&mut self.reader)
            .take(MAX_RESPONSE_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(ClientError::Io)?;
        if line.last() != Some(&b'\n') {
            return Err(ClientError::Protocol(if line.len() > MAX_RESPONSE_LINE {
                "response too long".into()
            } else {
                "the monitor closed the connection".into()
            }));
        }
        self.broken = false;
        let resp: Response = serde_json::from_slice(&line)
            .map_err(|e| ClientError::Protocol(format!("bad response: {e}")))?;
        match resp {
            Response::Error { message, kind } => Err(ClientError::Monitor { kind, message }),
            resp => Ok(resp),
        }
    }

    pub fn ping(&mut self) -> Result<()> {
        let r = self.call(&Request::Ping)?;
        expect_ok(r)
    }

    /// Records a container (state Created); returns its record.
    pub fn create(&mut self, req: CreateRequest) -> Result<ContainerRecord> {
        self.record(&Request::Create(Box::new(req)))
    }

    /// Starts a created or exited container; returns its record.
    pub fn start(&mut self, id: &str) -> Result<ContainerRecord> {
        self.record(&Request::Start { id: id.into() })
    }

    /// Stops a container; returns once it exited. Mind the timeout given
    /// at connect: it must exceed the grace period.
    pub fn stop(&mut self, id: &str, timeout: Option<i64>) -> Result<()> {
        let r = self.call(&Request::Stop {
            id: id.into(),
            timeout,
            signal: None,
        })?;
        expect_ok(r)
    }

    pub fn kill(&mut self, id: &str, signal: i32) -> Result<()> {
        let r = self.call(&Request::Kill {
            id: id.into(),
            signal,
        })?;
        expect_ok(r)
    }

    pub fn remove(&mut self, id: &str, force: bool) -> Result<()> {
        let r = self.call(&Request::Remove {
            id: id.into(),
            force,
        })?;
        expect_ok(r)
    }

    /// The exit code once `condition` holds.
    pub fn wait(&mut self, id: &str, condition: WaitCondition) -> Result<i32> {
        match self.call(&Request::Wait {
            id: id.into(),
            condition,
        })? {
            Response::Exit { code } => Ok(code),
            other => Err(unexpected(other)),
        }
    }

    pub fn list(&mut self) -> Result<Vec<ContainerRecord>> {
        match self.call(&Request::List)? {
            Response::Records(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Holds `name` and `id` for a create on this connection (see
    /// [`Request::Reserve`]); dropping the connection frees them.
    pub fn reserve(&mut self, id: &str, name: &str) -> Result<()> {
        self.ok(&Request::Reserve {
            id: id.into(),
            name: name.into(),
        })
    }

    /// Marks `volumes` as used by the reserved create `id`.
    pub fn claim(&mut self, id: &str, volumes: &[String]) -> Result<()> {
        self.ok(&Request::Claim {
            id: id.into(),
            volumes: volumes.to_vec(),
        })
    }

    pub fn unreserve(&mut self, id: &str) -> Result<()> {
        self.ok(&Request::Unreserve { id: id.into() })
    }

    /// The creates in flight, from every client of the monitor.
    pub fn reservations(&mut self) -> Result<Vec<crate::protocol::Reservation>> {
        match self.call(&Request::Reservations)? {
            Response::Reservations(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    pub fn get(&mut self, id: &str) -> Result<ContainerRecord> {
        self.record(&Request::Get { id: id.into() })
    }

    /// Any request answered with [`Response::Ok`].
    pub fn ok(&mut self, req: &Request) -> Result<()> {
        let r = self.call(req)?;
        expect_ok(r)
    }

    fn record(&mut self, req: &Request) -> Result<ContainerRecord> {
        match self.call(req)? {
            Response::Record(r) => Ok(*r),
            other => Err(unexpected(other)),
        }
    }
}

fn expect_ok(r: Response) -> Result<()> {
    match r {
        Response::Ok => Ok(()),
        other => Err(unexpected(other)),
    }
}

fn unexpected(r: Response) -> ClientError {
    let what = match r {
        Response::Ok => "ok",
        Response::Record(_) => "a record",
        Response::Records(_) => "records",
        Response::Reservations(_) => "reservations",
        Response::Exit { .. } => "an exit code",
        Response::Exec(_) => "an exec state",
        Response::Error { .. } => "an error",
    };
    ClientError::Protocol(format!("unexpected response: {what}"))
}
