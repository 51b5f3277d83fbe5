//! The byte streams of attach, exec and logs: Docker's multiplexed frames
//! (no TTY) or raw bytes (TTY) to our stdout/stderr, our stdin to the
//! container, and the terminal's size to the daemon.

use super::http::{Client, Hijacked};
use anyhow::{Context, Result};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Response};
use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a hijacked session carries.
#[derive(Clone, Copy)]
pub struct Session {
    /// Raw bytes (a TTY) rather than multiplexed frames.
    pub tty: bool,
    /// Our stdin goes to the container.
    pub stdin: bool,
}

/// Splits Docker's multiplexed stream (`[stream, 0, 0, 0, len u32 BE]`
/// then `len` bytes) into (stream, bytes) pieces, across reads.
#[derive(Default)]
pub struct Demux {
    buf: Vec<u8>,
}

impl Demux {
    /// Feeds `data`; calls `out(stream, payload)` for every whole frame.
    pub fn feed(
        &mut self,
        data: &[u8],
        out: &mut dyn FnMut(u8, &[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        self.buf.extend_from_slice(data);
        let mut at = 0;
        while self.buf.len() - at >= 8 {
            let h = &self.buf[at..at + 8];
            let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
            if self.buf.len() - at - 8 < len {
                break;
            }
            let kind = h[0];
            out(kind, &self.buf[at + 8..at + 8 + len])?;
            at += 8 + len;
        }
        self.buf.drain(..at);
        Ok(())
    }
}

/// Where output goes: stream 2 to stderr, the rest (stdin echo 0, stdout
/// 1) to stdout.
fn write_out(kind: u8, data: &[u8]) -> std::io::Result<()> {
    if kind == 2 {
        let mut e = std::io::stderr().lock();
        e.write_all(data)?;
        e.flush()
    } else {
        let mut o = std::io::stdout().lock();
        o.write_all(data)?;
        o.flush()
    }
}

/// Copies a streamed response body (logs, or a non-hijacked attach).
pub async fn copy_body(resp: Response<Incoming>, tty: bool) -> Result<()> {
    let mut body = resp.into_body();
    let mut demux = Demux::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("read the daemon's stream")?;
        if let Ok(data) = frame.into_data() {
            if tty {
                write_out(1, &data)?;
            } else {
                demux.feed(&data, &mut write_out)?;
            }
        }
    }
    Ok(())
}

/// Tells the daemon our terminal's size (`POST {path}?h=&w=`).
async fn resize(c: &Client, path: &str) {
    let Ok(ws) = cubby_runtime::tty::get_winsize(std::io::stdout().as_fd()) else {
        return;
    };
    let q = format!("{path}?h={}&w={}", ws.ws_row, ws.ws_col);
    // A failed resize is cosmetic: the session goes on.
    let _ = c.call(Method::POST, &q, None).await;
}

/// Relays a hijacked session until the daemon closes its output: our stdin
/// in (when asked), the container's output out, window sizes when `tty`.
pub async fn relay(
    c: &Client,
    conn: Result<Hijacked, Response<Incoming>>,
    s: Session,
    resize_path: Option<&str>,
) -> Result<()> {
    let conn = match conn {
        Ok(h) => h,
        // An old-style answer: output only, in the body.
        Err(resp) => return copy_body(resp, s.tty).await,
    };
    let stdin_tty = std::io::stdin().is_terminal();
    // Raw mode so keys reach the container as typed; restored on drop.
    let _raw = if s.tty && s.stdin && stdin_tty {
        Some(cubby_runtime::tty::RawMode::enter(
            std::io::stdin().as_fd(),
        )?)
    } else {
        None
    };
    let (mut rd, mut wr) = tokio::io::split(conn);

    let winch = match resize_path {
        Some(path) if std::io::stdout().is_terminal() => {
            resize(c, path).await;
            let path = path.to_string();
            let client = super::http::Client {
                host: c.host.clone(),
            };
            Some(tokio::spawn(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let Ok(mut sig) = signal(SignalKind::window_change()) else {
                    return;
                };
                while sig.recv().await.is_some() {
                    resize(&client, &path).await;
                }
            }))
        }
        _ => None,
    };

    let input = s.stdin.then(|| {
        // Blocking reads on a plain thread: the process exits without
        // waiting for it when the session ends.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.blocking_send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                if wr.write_all(&chunk).await.is_err() {
                    return;
                }
                let _ = wr.flush().await;
            }
            // EOF on our stdin: half-close so the container sees EOF too.
            let _ = wr.shutdown().await;
        })
    });

    let mut demux = Demux::default();
    let mut buf = vec![0u8; 32 * 1024];
    let result = loop {
        match rd.read(&mut buf).await {
            Ok(0) => break Ok(()),
            Ok(n) => {
                let written = if s.tty {
                    write_out(1, &buf[..n])
                } else {
                    demux.feed(&buf[..n], &mut write_out)
                };
                if let Err(e) = written {
                    break Err(e).context("write the container's output");
                }
            }
            // A reset after the container ended is the end of the output.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break Ok(()),
            Err(e) => break Err(e).context("read the container's output"),
        }
    };
    if let Some(t) = input {
        t.abort();
    }
    if let Some(t) = winch {
        t.abort();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demux_across_reads() {
        let mut wire = vec![1, 0, 0, 0, 0, 0, 0, 3];
        wire.extend_from_slice(b"abc");
        wire.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 2]);
        wire.extend_from_slice(b"de");
        let mut got: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut d = Demux::default();
        // One byte at a time: frames split anywhere still come out whole.
        for b in &wire {
            d.feed(std::slice::from_ref(b), &mut |k, data| {
                got.push((k, data.to_vec()));
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(got, vec![(1, b"abc".to_vec()), (2, b"de".to_vec())]);
        assert!(d.buf.is_empty());
    }
}
