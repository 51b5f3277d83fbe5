//! The web terminal: a websocket to a shell with a pty in the sandbox, as
//! the sandbox's user. Binary frames carry bytes both ways; a text frame
//! `{"resize":[cols,rows]}` resizes the pty. Closing the websocket closes the
//! shell's input, so the shell ends with it: a reconnect gets a fresh shell
//! (the files in the workspace are what persists).

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;

use crate::api::authn::Caller;
use crate::api::handlers::visible_session;
use crate::api::AppState;
use crate::backend::Terminal;
use crate::error::{Error, Result};
use crate::sessions::activity::Event;
use crate::store::sessions::State as SessionState;

pub async fn terminal(
    State(st): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
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
    Ok(ws.on_upgrade(move |socket| pump(st, id, socket, term)))
}

#[derive(serde::Deserialize)]
struct Control {
    resize: (u16, u16),
}

async fn pump(st: AppState, session: String, socket: WebSocket, term: Terminal) {
    let Terminal {
        id,
        mut output,
        mut input,
    } = term;
    let (mut tx, mut rx) = socket.split();
    let out = async {
        while let Some(chunk) = output.next().await {
            match chunk {
                Ok(b) if b.is_empty() => {}
                Ok(b) => {
                    if tx.send(Message::Binary(b)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    eprintln!("cubby serve: terminal of session {session}: {e}");
                    break;
                }
            }
        }
        let _ = tx.send(Message::Close(None)).await;
    };
    let inp = async {
        while let Some(Ok(msg)) = rx.next().await {
            match msg {
                Message::Binary(b) => {
                    st.manager
                        .activity
                        .record(&session, Event::TerminalInput(b.len() as u64));
                    if input.write_all(&b).await.is_err() {
                        return;
                    }
                    let _ = input.flush().await;
                }
                Message::Text(t) => {
                    if let Ok(c) = serde_json::from_str::<Control>(t.as_str()) {
                        let (cols, rows) = (c.resize.0.clamp(2, 1000), c.resize.1.clamp(2, 1000));
                        let _ = st.manager.backend.resize_terminal(&id, (cols, rows)).await;
                    }
                }
                Message::Close(_) => return,
                _ => {}
            }
        }
    };
    // Whichever side ends first ends both: the shell's input is dropped
    // (EOF), so it exits.
    tokio::select! {
        _ = out => {}
        _ = inp => {}
    }
    let _ = input.shutdown().await;
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
