//! Async connections to the monitor, for requests that take as long as a
//! container does (wait, stop, restart) and for streams (attach, exec,
//! events). One connection per request; the monitor serves many.

use super::error::{EngineError, EngineResult};
use crate::protocol::{self, Request, Response, MAX_RESPONSE_LINE};
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// A monitor connection turned into a stream by its first request.
pub struct MonitorStream {
    pub reader: BufReader<OwnedReadHalf>,
    pub writer: OwnedWriteHalf,
}

fn monitor_error(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::internal(format!("container monitor: {what}: {e}"))
}

/// Sends `req` and reads its one response line; the connection is left
/// positioned after it.
async fn exchange(socket: &Path, req: &Request) -> EngineResult<(MonitorStream, Response)> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| monitor_error(&format!("connect {}", socket.display()), e))?;
    let (r, mut writer) = stream.into_split();
    writer
        .write_all(&protocol::encode(req))
        .await
        .map_err(|e| monitor_error("send", e))?;
    let mut reader = BufReader::new(r);
    let mut line = Vec::new();
    (&mut reader)
        .take(MAX_RESPONSE_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| monitor_error("receive", e))?;
    if line.last() != Some(&b'\n') {
        return Err(monitor_error(
            "receive",
            "the monitor closed the connection",
        ));
    }
    let resp: Response =
        serde_json::from_slice(&line).map_err(|e| monitor_error("bad response", e))?;
    match resp {
        Response::Error { message, kind } => Err(EngineError::from_kind(kind, message)),
        resp => Ok((MonitorStream { reader, writer }, resp)),
    }
}

/// One request, one response, however long the monitor takes.
pub async fn call(socket: &Path, req: &Request) -> EngineResult<Response> {
    Ok(exchange(socket, req).await?.1)
}

/// Sends a streaming request (attach, exec, events) and returns the stream
/// once the monitor accepted it.
pub async fn open_stream(socket: &Path, req: &Request) -> EngineResult<MonitorStream> {
    match exchange(socket, req).await? {
        (stream, Response::Ok) => Ok(stream),
        _ => Err(monitor_error("stream", "unexpected response")),
    }
}
