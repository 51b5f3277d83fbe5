//! A small HTTP/1.1 client for the Docker Engine API over a Unix socket or
//! mutual TLS over TCP: one connection a request (hyper's client conn),
//! JSON bodies, Docker's `{"message"}` errors, and hijacked streams
//! (`Upgrade: tcp`) for attach and exec.

use crate::tls::TlsFiles;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// The API version we speak (the daemon's).
pub const API_VERSION: &str = "1.43";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the cubby daemon at {host}: {error} (is `cubby daemon` running?)")]
    Connect { host: String, error: std::io::Error },
    #[error("TLS with the cubby daemon at {host}: {error}")]
    Tls { host: String, error: std::io::Error },
    #[error("{0}")]
    Address(String),
    #[error("talking to the cubby daemon at {host}: {error}")]
    Http { host: String, error: hyper::Error },
    #[error("bad request {0}")]
    Request(String),
    /// The daemon answered with an error status.
    #[error("Error response from daemon: {message}")]
    Daemon { status: StatusCode, message: String },
    #[error("the daemon's answer to {what} is not the expected JSON: {error}")]
    Json {
        what: String,
        error: serde_json::Error,
    },
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Where the daemon is.
#[derive(Clone, Debug)]
pub enum Host {
    Unix(PathBuf),
    Tcp {
        /// `host:port` as given.
        addr: String,
        tls: Arc<rustls::ClientConfig>,
    },
}

impl Host {
    /// `unix:///path` (or a bare absolute path) or `tcp://host:port`, which
    /// needs `tls` (the daemon refuses plain TCP, so we never send it).
    pub fn parse(addr: &str, tls: Option<&TlsFiles>) -> anyhow::Result<Host> {
        if let Some(hostport) = addr.strip_prefix("tcp://") {
            let hostport = hostport.trim_end_matches('/');
            let Some(files) = tls else {
                anyhow::bail!(
                    "--host {addr}: the cubby daemon serves TCP only with TLS: give --tls-cert, \
                     --tls-key and --tls-ca (or CUBBY_TLS_CERT, CUBBY_TLS_KEY, CUBBY_TLS_CA)"
                );
            };
            if hostport.rsplit_once(':').is_none() {
                anyhow::bail!("--host {addr}: expected tcp://HOST:PORT");
            }
            return Ok(Host::Tcp {
                addr: hostport.to_string(),
                tls: crate::tls::client_config(files)?,
            });
        }
        let path = addr.strip_prefix("unix://").unwrap_or(addr);
        if addr.contains("://") && !addr.starts_with("unix://") || !path.starts_with('/') {
            anyhow::bail!("--host {addr}: expected unix:///PATH or tcp://HOST:PORT");
        }
        Ok(Host::Unix(PathBuf::from(path)))
    }

    pub fn describe(&self) -> String {
        match self {
            Host::Unix(p) => format!("unix://{}", p.display()),
            Host::Tcp { addr, .. } => format!("tcp://{addr}"),
        }
    }
}

/// Any byte stream hyper can run over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct Client {
    pub host: Host,
}

/// A hijacked connection: raw bytes both ways.
pub type Hijacked = TokioIo<hyper::upgrade::Upgraded>;

impl Client {
    async fn connect(&self) -> Result<Box<dyn Io>> {
        let host = self.host.describe();
        match &self.host {
            Host::Unix(path) => {
                let s = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|error| ClientError::Connect { host, error })?;
                Ok(Box::new(s))
            }
            Host::Tcp { addr, tls } => {
                let tcp = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(|error| ClientError::Connect {
                        host: host.clone(),
                        error,
                    })?;
                let name = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
                let name = name.trim_start_matches('[').trim_end_matches(']');
                let server_name = rustls::pki_types::ServerName::try_from(name.to_string())
                    .map_err(|_| {
                        ClientError::Address(format!("{host}: {name:?} is not a host name or IP"))
                    })?;
                let s = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(server_name, tcp)
                    .await
                    .map_err(|error| ClientError::Tls { host, error })?;
                Ok(Box::new(s))
            }
        }
    }

    /// Sends one request on a fresh connection; `upgrade` asks to hijack
    /// it (`Connection: Upgrade`, `Upgrade: tcp`).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        upgrade: bool,
    ) -> Result<Response<Incoming>> {
        let host = self.host.describe();
        let io = TokioIo::new(self.connect().await?);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|error| ClientError::Http {
                    host: host.clone(),
                    error,
                })?;
        // Drives the connection (and keeps it for an upgrade).
        tokio::spawn(conn.with_upgrades());
        let authority = match &self.host {
            Host::Unix(_) => "docker".to_string(),
            Host::Tcp { addr, .. } => addr.clone(),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(format!("/v{API_VERSION}{path}"))
            .header(HOST, authority);
        if upgrade {
            req = req.header(CONNECTION, "Upgrade").header(UPGRADE, "tcp");
        }
        let bytes = match body {
            Some(v) => {
                req = req.header(CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| ClientError::Request(format!("{path}: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|error| ClientError::Http { host, error })?;
        if resp.status().is_client_error() || resp.status().is_server_error() {
            let status = resp.status();
            let body = collect(resp, &self.host).await.unwrap_or_default();
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| {
                    let text = String::from_utf8_lossy(&body).trim().to_string();
                    if text.is_empty() {
                        status.to_string()
                    } else {
                        text
                    }
                });
            return Err(ClientError::Daemon { status, message });
        }
        Ok(resp)
    }

    /// A request whose whole answer body we want.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Bytes> {
        let resp = self.send(method, path, body, false).await?;
        collect(resp, &self.host).await
    }

    /// A request answered with JSON.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T> {
        let bytes = self.call(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|error| ClientError::Json {
            what: path.to_string(),
            error,
        })
    }

    /// A hijacked request: the raw connection once the daemon switched
    /// protocols. A daemon that answers 200 instead streams the output in
    /// the body; that is returned as `Err(response)`.
    pub async fn hijack(
        &self,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Result<Hijacked, Response<Incoming>>> {
        let resp = self.send(Method::POST, path, body, true).await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(Err(resp));
        }
        let host = self.host.describe();
        let upgraded = hyper::upgrade::on(resp)
            .await
            .map_err(|error| ClientError::Http { host, error })?;
        Ok(Ok(TokioIo::new(upgraded)))
    }

    /// Does the daemon answer `GET /_ping`?
    pub async fn ping(&self) -> Result<()> {
        self.call(Method::GET, "/_ping", None).await.map(|_| ())
    }
}

pub async fn collect(resp: Response<Incoming>, host: &Host) -> Result<Bytes> {
    resp.into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|error| ClientError::Http {
            host: host.describe(),
            error,
        })
}

/// `%`-encodes a query value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn hosts() {
        assert!(matches!(
            Host::parse("unix:///run/cubby/cubby.sock", None).unwrap(),
            Host::Unix(p) if p == Path::new("/run/cubby/cubby.sock")
        ));
        let e = Host::parse("tcp://127.0.0.1:2376", None).unwrap_err();
        assert!(format!("{e}").contains("--tls-cert"), "{e}");
        assert!(Host::parse("http://x:1", None).is_err());
        assert!(Host::parse("unix://rel.sock", None).is_err());
    }

    #[test]
    fn encoding() {
        assert_eq!(enc("a b/{}"), "a%20b%2F%7B%7D");
        assert_eq!(enc("label=x"), "label%3Dx");
    }
}
