//! Docker's connection hijack for attach and exec: the client asks for
//! `Upgrade: tcp`, gets `101 Switching Protocols`, and the connection then
//! carries the process's output (multiplexed frames without a TTY, raw
//! bytes with one) one way and its stdin the other.
//!
//! The monitor sends frames ([`crate::monitor::frame`]) on its side; this
//! bridge passes stdout/stderr frames through (they are Docker's format),
//! unwraps them for a TTY, drops the streams the client did not ask for,
//! and ends the connection at the exit frame.

use crate::monitor::stdio::{FRAME_EXIT, FRAME_STDERR, FRAME_STDOUT};
use crate::service::conn::MonitorStream;
use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{CONNECTION, CONTENT_TYPE, UPGRADE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the client asked to see.
#[derive(Debug, Clone, Copy)]
pub struct Streams {
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Answers `req` with 101 (or 200 for a client that did not ask to
/// upgrade, as old Docker clients do) and bridges the upgraded connection
/// to `monitor` in a task.
pub fn hijack(req: Request, monitor: MonitorStream, streams: Streams) -> Response {
    hijack_then(req, streams, async move { Ok(monitor) })
}

/// Like [`hijack`], but opens the monitor stream (which starts the
/// process, for exec) only once the client has its 101: output must not
/// race the response headers, or a client that reads them through a
/// buffer (docker-py) loses the first bytes. A failure then can only be
/// reported in the stream, as stderr.
pub fn hijack_then<F>(mut req: Request, streams: Streams, open: F) -> Response
where
    F: std::future::Future<Output = super::ApiResult<MonitorStream>> + Send + 'static,
{
    let upgrade_asked = req
        .headers()
        .get(UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"tcp"));
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut client = TokioIo::new(upgraded);
        match open.await {
            Ok(monitor) => bridge(client, monitor, streams).await,
            Err(e) => {
                let text = format!("{}\n", e.message);
                let out = if streams.tty {
                    text.into_bytes()
                } else {
                    crate::monitor::frame(FRAME_STDERR, text.as_bytes())
                };
                let _ = client.write_all(&out).await;
                let _ = client.shutdown().await;
            }
        }
    });
    let content_type = if streams.tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = if upgrade_asked {
        StatusCode::SWITCHING_PROTOCOLS
    } else {
        StatusCode::OK
    };
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if upgrade_asked {
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("tcp"));
    }
    resp
}

async fn bridge<S>(client: S, monitor: MonitorStream, streams: Streams)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut client_r, mut client_w) = tokio::io::split(client);
    let MonitorStream {
        mut reader,
        mut writer,
    } = monitor;
    // Client → stdin; its end of file is the process's (the monitor decides).
    let input = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_r, &mut writer).await;
        let _ = writer.shutdown().await;
    });
    let mut header = [0u8; 8];
    loop {
        if reader.read_exact(&mut header).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let mut payload = vec![0u8; len];
        if reader.read_exact(&mut payload).await.is_err() {
            break;
        }
        let wanted = match header[0] {
            FRAME_STDOUT => streams.stdout,
            FRAME_STDERR => streams.stderr,
            FRAME_EXIT => break,
            _ => false,
        };
        if !wanted {
            continue;
        }
        let written = if streams.tty {
            client_w.write_all(&payload).await
        } else {
            match client_w.write_all(&header).await {
                Ok(()) => client_w.write_all(&payload).await,
                Err(e) => Err(e),
            }
        };
        if written.is_err() {
            break;
        }
    }
    let _ = client_w.flush().await;
    let _ = client_w.shutdown().await;
    input.abort();
}
