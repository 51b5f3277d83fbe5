//! The web terminal: a websocket to a shell with a pty in the sandbox, as
//! the sandbox's user. Binary frames carry bytes both ways; a text frame
//! `{"resize":[cols,rows]}` resizes the pty. The server's first frame is a
//! text frame `{"resume":TOKEN,"fresh":BOOL}`.
//!
//! A dropped websocket does not end the shell: it is parked for
//! [`PARK_FOR`] and a reconnect with `?resume=TOKEN` (same session, same
//! user) gets it back, with the output it produced meanwhile (held by the
//! engine's stream, nothing read is lost). A reconnect while the old socket
//! still looks alive to us (a half-open TCP connection after a network blip)
//! takes the shell over from it. When the shell exits the server closes
//! with 1000 "the shell ended"; an unclaimed parked shell gets EOF on its
//! input and ends.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::api::authn::Caller;
use crate::api::handlers::visible_session;
use crate::api::AppState;
use crate::backend::Terminal;
use crate::error::{Error, Result};
use crate::sessions::activity::Event;
use crate::store::sessions::State as SessionState;

/// The close code of a socket whose shell another connection took over.
pub const TAKEN_OVER: u16 = 4000;

/// How long a shell whose browser went away waits for it to come back.
pub const PARK_FOR: Duration = Duration::from_secs(60);

/// A shell and whose it is, between websockets.
struct Shell {
    session: String,
    user: String,
    term: Terminal,
    /// Output read from the shell but not delivered when the socket failed.
    pending: Option<bytes::Bytes>,
}

/// A shell on a socket: its session, its user, and how to ask that socket
/// to let go of it.
type Live = (String, String, std::sync::Arc<tokio::sync::Notify>);

/// The shells of this process: parked ones, and how to take over a live one.
#[derive(Default)]
pub struct Shells {
    /// token -> (shell, park number: an expiry only ends its own parking)
    parked: Mutex<HashMap<String, (Shell, u64)>>,
    /// token -> (session, user, asks the socket holding it to let go)
    live: Mutex<HashMap<String, Live>>,
    parks: std::sync::atomic::AtomicU64,
}

impl Shells {
    fn park(&self, token: &str, shell: Shell) -> u64 {
        let n = self.parks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.lock_parked().insert(token.to_string(), (shell, n));
        n
    }

    fn lock_parked(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Shell, u64)>> {
        self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The parked shell `token` names, if it is this user's in this session.
    fn take(&self, token: &str, session: &str, user: &str) -> Option<Shell> {
        let mut m = self.lock_parked();
        match m.get(token) {
            Some((s, _)) if s.session == session && s.user == user => {
                m.remove(token).map(|(s, _)| s)
            }
            _ => None,
        }
    }

    /// Asks the socket holding `token` (if this user's, in this session) to
    /// park its shell, then takes it (up to 2 s).
    async fn take_over(&self, token: &str, session: &str, user: &str) -> Option<Shell> {
        if let Some(s) = self.take(token, session, user) {
            return Some(s);
        }
        let holder = self
            .lock_live()
            .get(token)
            .filter(|(s, u, _)| s == session && u == user)
            .map(|(_, _, n)| n.clone())?;
        holder.notify_one();
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if let Some(s) = self.take(token, session, user) {
                return Some(s);
            }
        }
        None
    }

    /// Ends a parked shell that nobody came back for.
    fn expire(&self, token: &str, park: u64) -> Option<Shell> {
        let mut m = self.lock_parked();
        match m.get(token) {
            Some((_, n)) if *n == park => m.remove(token).map(|(s, _)| s),
            _ => None,
        }
    }
}

#[derive(serde::Deserialize)]
pub struct TermQuery {
    resume: Option<String>,
}

pub async fn terminal(
    State(st): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    Query(q): Query<TermQuery>,
    headers: HeaderMap,
    ws: std::result::Result<
        WebSocketUpgrade,
        axum::extract::ws::rejection::WebSocketUpgradeRejection,
    >,
) -> Result<Response> {
    let s = visible_session(&st, &who, &id).await?;
    let ws = ws.map_err(|e| {
        Error::Invalid(format!(
            "the terminal is a websocket ({e}); open it from the web page"
        ))
    })?;
    crate::proxy::check_same_origin(&headers)?;
    if s.state != SessionState::Ready {
        return Err(Error::Conflict(format!(
            "this sandbox is {}, not running: start it first",
            s.state.as_str()
        )));
    }
    let resumed = match q.resume.as_deref() {
        Some(t) => st
            .shells
            .take_over(t, &id, &who.id)
            .await
            .map(|s| (t.to_string(), s)),
        None => None,
    };
    let fresh = resumed.is_none();
    let (token, shell) = match resumed {
        Some(r) => r,
        None => {
            let t = st.store().template(&s.template_id).await?;
            let term = st
                .manager
                .backend
                .open_terminal(
                    &s.sandbox,
                    &["sh".to_string()],
                    &t.spec.user,
                    Some(&t.spec.workspace_path),
                    &["TERM=xterm-256color".to_string()],
                    (80, 24),
                )
                .await?;
            let token = crate::store::hex(&crate::auth::random_bytes::<24>());
            let shell = Shell {
                session: id.clone(),
                user: who.id.clone(),
                term,
                pending: None,
            };
            (token, shell)
        }
    };
    Ok(ws.on_upgrade(move |socket| pump(st, token, socket, shell, fresh)))
}

#[derive(serde::Deserialize)]
struct Control {
    resize: (u16, u16),
}

/// Why a socket stopped carrying its shell.
enum End {
    /// The shell exited (or failed): nothing to keep.
    ShellGone,
    /// The socket closed or failed, or another took over: park.
    SocketGone,
}

async fn pump(st: AppState, token: String, mut socket: WebSocket, mut shell: Shell, fresh: bool) {
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    st.shells.lock_live().insert(
        token.clone(),
        (shell.session.clone(), shell.user.clone(), release.clone()),
    );
    let end = carry(&st, &token, &mut socket, &mut shell, fresh, &release).await;
    st.shells.lock_live().remove(&token);
    match end {
        End::ShellGone => {
            let _ = shell.term.input.shutdown().await;
        }
        End::SocketGone => {
            drop(socket);
            let park = st.shells.park(&token, shell);
            let st = st.clone();
            tokio::spawn(async move {
                tokio::time::sleep(PARK_FOR).await;
                if let Some(mut s) = st.shells.expire(&token, park) {
                    let _ = s.term.input.shutdown().await;
                }
            });
        }
    }
}

async fn carry(
    st: &AppState,
    token: &str,
    socket: &mut WebSocket,
    shell: &mut Shell,
    fresh: bool,
    release: &tokio::sync::Notify,
) -> End {
    let hello = serde_json::json!({"resume": token, "fresh": fresh}).to_string();
    if socket.send(Message::Text(hello.into())).await.is_err() {
        return End::SocketGone;
    }
    if let Some(b) = shell.pending.take() {
        if socket.send(Message::Binary(b.clone())).await.is_err() {
            shell.pending = Some(b);
            return End::SocketGone;
        }
    }
    loop {
        tokio::select! {
            chunk = shell.term.output.next() => match chunk {
                Some(Ok(b)) if b.is_empty() => {}
                Some(Ok(b)) => {
                    if socket.send(Message::Binary(b.clone())).await.is_err() {
                        shell.pending = Some(b);
                        return End::SocketGone;
                    }
                }
                Some(Err(e)) => {
                    crate::log!("warn", "terminal of session {}: {e}", shell.session);
                    let _ = socket.send(Message::Close(None)).await;
                    return End::ShellGone;
                }
                None => {
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code: 1000,
                            reason: "the shell ended".into(),
                        })))
                        .await;
                    return End::ShellGone;
                }
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    st.manager
                        .activity
                        .record(&shell.session, Event::TerminalInput(b.len() as u64));
                    if shell.term.input.write_all(&b).await.is_err() {
                        return End::ShellGone;
                    }
                    let _ = shell.term.input.flush().await;
                }
                Some(Ok(Message::Text(t))) => {
                    if let Ok(c) = serde_json::from_str::<Control>(t.as_str()) {
                        let (cols, rows) = (c.resize.0.clamp(2, 1000), c.resize.1.clamp(2, 1000));
                        let _ = st.manager.backend.resize_terminal(&shell.term.id, (cols, rows)).await;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return End::SocketGone,
                Some(Ok(_)) => {}
            },
            _ = release.notified() => {
                // Another connection took this shell: say so, so the page
                // does not try to take it back.
                let _ = socket
                    .send(Message::Close(Some(CloseFrame {
                        code: TAKEN_OVER,
                        reason: "this shell was opened elsewhere".into(),
                    })))
                    .await;
                return End::SocketGone;
            }
        }
    }
}

pub async fn activity(
    State(st): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<serde_json::Value>> {
    visible_session(&st, &who, &id).await?;
    serde_json::to_value(st.manager.activity.get(&id))
        .map(axum::Json)
        .map_err(|e| Error::Internal(e.to_string()))
}
