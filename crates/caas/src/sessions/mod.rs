//! The session manager: drives each session's state machine against the
//! backend, recovers after a crash (`reconcile`), and follows the backend's
//! events to mark sandboxes that died (OOM, exit).
//!
//! Safety rests on three things: the session row (and so the sandbox name)
//! exists before anything is provisioned; `start_sandbox` is idempotent by
//! name; every transition is a compare-and-set with a lease, so only one
//! instance drives a session at a time and a dead one's work is taken over.

pub mod activity;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::backend::{Backend, SandboxEvent, SandboxStatus, LABEL_MANAGED, LABEL_SESSION};
use crate::error::{Error, Result};
use crate::store::sessions::{Session, State};
use crate::store::Store;
use crate::template::{sandbox_spec, SandboxFor};

#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// This process's id as a lease owner (stable per root: see serve).
    pub instance: String,
    /// How many sandboxes start at once (up-class is bounded by this).
    pub start_concurrency: usize,
    /// How long a claimed transition stays ours before others may take it.
    pub lease_secs: i64,
    pub ready_timeout: Duration,
    pub stop_grace: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            instance: crate::store::new_id(),
            start_concurrency: 8,
            lease_secs: 60,
            ready_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(10),
        }
    }
}

/// A sandbox with our labels and no session: reported, never deleted.
#[derive(Debug, Clone, Serialize)]
pub struct Orphan {
    pub name: String,
    pub status: SandboxStatus,
    pub session: Option<String>,
    pub reason: String,
}

pub struct Manager {
    pub store: Store,
    pub backend: Arc<dyn Backend>,
    pub service_id: String,
    cfg: ManagerConfig,
    permits: Semaphore,
    stop_permits: Semaphore,
    /// Sessions a task of this process is driving right now.
    inflight: Mutex<HashSet<String>>,
    /// Proxied traffic and terminal input per session (idle culling).
    pub activity: activity::Activity,
    /// Class networks ensured by this process.
    networks: Mutex<HashSet<String>>,
}

/// Removes a session from `inflight` when its driver ends, even by panic.
struct Inflight<'a>(&'a Manager, String);
impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        self.0
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

fn oom_reason(exit_code: Option<i64>, oom: bool) -> String {
    if oom {
        "out of memory".into()
    } else {
        match exit_code {
            Some(c) => format!("exited with code {c}"),
            None => "exited".into(),
        }
    }
}

impl Manager {
    pub async fn new(
        store: Store,
        backend: Arc<dyn Backend>,
        cfg: ManagerConfig,
    ) -> Result<Arc<Manager>> {
        // One id per database: every instance labels sandboxes the same way.
        let service_id = store
            .setting_or_init("service_id", crate::store::new_id)
            .await?;
        Ok(Arc::new(Manager {
            store,
            backend,
            service_id,
            permits: Semaphore::new(cfg.start_concurrency.max(1)),
            stop_permits: Semaphore::new(2 * cfg.start_concurrency.max(1)),
            cfg,
            inflight: Mutex::new(HashSet::new()),
            activity: activity::Activity::default(),
            networks: Mutex::new(HashSet::new()),
        }))
    }

    /// Requests a session for (class, student) and drives it in the
    /// background; returns it as it is now. Idempotent.
    pub async fn start(
        self: &Arc<Self>,
        class_id: &str,
        student_id: &str,
        actor: &str,
    ) -> Result<Session> {
        let s = self.request(class_id, student_id, actor).await?;
        self.spawn_drive(&s.id);
        Ok(s)
    }

    /// The active session of (class, student), created `requested` if none.
    async fn request(&self, class_id: &str, student_id: &str, actor: &str) -> Result<Session> {
        let class = self.store.class(class_id).await?;
        let template_id = class.template_id.ok_or_else(|| {
            Error::Invalid(format!(
                "class {} has no template: assign one first",
                class.code
            ))
        })?;
        let (s, _created) = self
            .store
            .request_session(class_id, student_id, &template_id, actor)
            .await?;
        Ok(s)
    }

    /// [`Self::start`], answering when the session is ready or failed: it is
    /// driven in this task (no polling) unless another one drives it already.
    pub async fn start_and_wait(
        self: &Arc<Self>,
        class_id: &str,
        student_id: &str,
        actor: &str,
        timeout: Duration,
    ) -> Result<Session> {
        let s = self.request(class_id, student_id, actor).await?;
        if let Err(e) = self.drive(&s.id).await {
            eprintln!("cubby serve: session {}: {e}", s.id);
        }
        self.wait_settled(&s.id, timeout).await
    }

    /// Waits until the session is no longer requested/starting (or timeout).
    pub async fn wait_settled(&self, id: &str, timeout: Duration) -> Result<Session> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.store.session(id).await?;
            if !matches!(s.state, State::Requested | State::Starting)
                || tokio::time::Instant::now() >= deadline
            {
                return Ok(s);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Asks the session to stop; the sandbox stops, it and the workspace stay.
    pub async fn stop(self: &Arc<Self>, id: &str) -> Result<Session> {
        let s = self.store.session(id).await?;
        if s.state.is_active() && s.state != State::Stopping {
            self.store
                .transition(
                    id,
                    &[State::Requested, State::Starting, State::Ready],
                    State::Stopping,
                    None,
                    None,
                )
                .await?;
        }
        self.spawn_drive(id);
        self.store.session(id).await
    }

    /// Starts every enrolled student's session (bounded by the start
    /// permits, never all at once).
    pub async fn up_class(self: &Arc<Self>, class_id: &str, actor: &str) -> Result<Vec<Session>> {
        let mut out = Vec::new();
        for (student_id, _) in self.store.students(class_id).await? {
            out.push(self.start(class_id, &student_id, actor).await?);
        }
        Ok(out)
    }

    pub async fn down_class(self: &Arc<Self>, class_id: &str) -> Result<Vec<Session>> {
        let mut out = Vec::new();
        for s in self
            .store
            .sessions(crate::store::sessions::SessionFilter::Class(class_id), true)
            .await?
        {
            out.push(self.stop(&s.id).await?);
        }
        Ok(out)
    }

    pub fn spawn_drive(self: &Arc<Self>, id: &str) {
        let me = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            if let Err(e) = me.drive(&id).await {
                eprintln!("cubby serve: session {id}: {e}");
            }
        });
    }

    /// Moves one session forward as far as it goes. Safe to call any number
    /// of times, from any instance: the claims decide who acts.
    pub async fn drive(self: &Arc<Self>, id: &str) -> Result<()> {
        if !self
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string())
        {
            return Ok(());
        }
        let _guard = Inflight(self, id.to_string());
        loop {
            let s = self.store.session(id).await?;
            let me = &self.cfg.instance;
            match s.state {
                State::Requested | State::Starting => {
                    if !self
                        .store
                        .claim(id, s.state, State::Starting, me, self.cfg.lease_secs)
                        .await?
                    {
                        return Ok(()); // someone else holds it, or it moved on
                    }
                    self.do_start(&s).await?;
                }
                State::Stopping => {
                    if !self
                        .store
                        .claim(
                            id,
                            State::Stopping,
                            State::Stopping,
                            me,
                            self.cfg.lease_secs,
                        )
                        .await?
                    {
                        return Ok(());
                    }
                    {
                        // Down-class is bounded too: never hundreds of stops
                        // against the engine at once.
                        let _permit = self
                            .stop_permits
                            .acquire()
                            .await
                            .map_err(|_| Error::Internal("stop permits closed".into()))?;
                        self.backend
                            .stop_sandbox(&s.sandbox, self.cfg.stop_grace)
                            .await?;
                    }
                    self.store
                        .transition(id, &[State::Stopping], State::Stopped, None, None)
                        .await?;
                    return Ok(());
                }
                State::Ready | State::Stopped | State::Failed => return Ok(()),
            }
        }
    }

    async fn do_start(&self, s: &Session) -> Result<()> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Internal("start permits closed".into()))?;
        match self.provision(s).await {
            Ok(address) => {
                let done = self
                    .store
                    .transition(
                        &s.id,
                        &[State::Starting],
                        State::Ready,
                        None,
                        address.as_deref(),
                    )
                    .await?;
                if !done {
                    // Stopped while we were starting it: the loop in drive
                    // sees `stopping` and stops what we just started.
                    self.backend
                        .stop_sandbox(&s.sandbox, self.cfg.stop_grace)
                        .await?;
                }
            }
            Err(e) => {
                // Roll back: no half-made sandbox stays behind (its workspace
                // volume does). The reason says what to fix.
                let _ = self.backend.remove_sandbox(&s.sandbox).await;
                let reason = e.to_string();
                self.store
                    .transition(
                        &s.id,
                        &[State::Starting],
                        State::Failed,
                        Some(&reason),
                        None,
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Network, sandbox, readiness. Returns the sandbox's address.
    async fn provision(&self, s: &Session) -> Result<Option<String>> {
        let t = self.store.template(&s.template_id).await?;
        let spec = sandbox_spec(
            &t.spec,
            &SandboxFor {
                service_id: &self.service_id,
                session_id: &s.id,
                class_id: &s.class_id,
                student_id: &s.student_id,
            },
        );
        // Once per class network and process: one engine call less per start.
        let net = spec.network.name.clone();
        let known = self
            .networks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&net);
        if !known {
            self.backend.ensure_network(&spec.network).await?;
            self.networks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(net.clone());
        }
        let info = match self.backend.start_sandbox(&spec).await {
            Ok(i) => i,
            Err(e) => {
                // Perhaps the network went away: ensure it again next time.
                self.networks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&net);
                return Err(e.into());
            }
        };
        if let Some(port) = spec.app_port {
            match self
                .backend
                .wait_ready(&info, port, self.cfg.ready_timeout)
                .await
            {
                Ok(()) => {}
                Err(e) => {
                    // Died while starting: say why in the user's terms.
                    if let Ok(Some(now)) = self.backend.inspect_sandbox(&spec.name).await {
                        if matches!(now.status, SandboxStatus::Exited | SandboxStatus::Dead) {
                            return Err(Error::Invalid(oom_reason(now.exit_code, now.oom_killed)));
                        }
                    }
                    return Err(e.into());
                }
            }
        }
        Ok(info.address.map(|a| a.to_string()))
    }

    /// After a start (or a crash): finishes unfinished sessions, marks ready
    /// ones whose sandbox is gone or exited, and reports orphans.
    pub async fn reconcile(self: &Arc<Self>) -> Result<Vec<Orphan>> {
        for s in self.store.unfinished_sessions().await? {
            self.spawn_drive(&s.id);
        }
        self.check_ready().await?;
        let orphans = self.orphans().await?;
        for o in &orphans {
            eprintln!(
                "cubby serve: orphan sandbox {} ({}): kept, not deleted",
                o.name, o.reason
            );
        }
        Ok(orphans)
    }

    /// Ready sessions whose sandbox is no longer running become failed.
    async fn check_ready(&self) -> Result<()> {
        let ready = self
            .store
            .sessions(crate::store::sessions::SessionFilter::All, true)
            .await?;
        for s in ready.into_iter().filter(|s| s.state == State::Ready) {
            let reason = match self.backend.inspect_sandbox(&s.sandbox).await? {
                None => Some("its sandbox was removed".to_string()),
                Some(i) if matches!(i.status, SandboxStatus::Exited | SandboxStatus::Dead) => {
                    Some(oom_reason(i.exit_code, i.oom_killed))
                }
                Some(_) => None,
            };
            if let Some(r) = reason {
                self.store
                    .transition(&s.id, &[State::Ready], State::Failed, Some(&r), None)
                    .await?;
            }
        }
        Ok(())
    }

    /// Sandboxes with our label whose session the database does not know.
    pub async fn orphans(&self) -> Result<Vec<Orphan>> {
        let mut out = Vec::new();
        for sb in self.backend.list_sandboxes().await? {
            if sb.labels.get(LABEL_MANAGED) != Some(&self.service_id) {
                continue;
            }
            let session = sb.labels.get(LABEL_SESSION).cloned();
            let known = match self.store.session_by_sandbox(&sb.name).await? {
                Some(s) => session.as_deref() == Some(s.id.as_str()),
                None => false,
            };
            if !known {
                out.push(Orphan {
                    name: sb.name,
                    status: sb.status,
                    session,
                    reason: "no session in the database owns it".into(),
                });
            }
        }
        Ok(out)
    }

    /// Follows the backend's events for ever (reconnecting), marking
    /// sessions whose sandbox exited: "out of memory" for an OOM kill.
    pub async fn follow_events(self: Arc<Self>) {
        // A stream that keeps ending at once (an engine that closes it) must
        // not turn into a busy loop of reconnects and sandbox inspections.
        let mut backoff = Duration::from_secs(1);
        loop {
            let began = tokio::time::Instant::now();
            match self.backend.events().await {
                Ok(mut stream) => {
                    // Events may have been missed while disconnected.
                    if let Err(e) = self.check_ready().await {
                        eprintln!("cubby serve: check sessions: {e}");
                    }
                    while let Some(ev) = stream.next().await {
                        match ev {
                            Ok(ev) => {
                                if let Err(e) = self.on_event(ev).await {
                                    eprintln!("cubby serve: sandbox event: {e}");
                                }
                            }
                            Err(e) => {
                                eprintln!("cubby serve: sandbox events: {e}");
                                break;
                            }
                        }
                    }
                }
                Err(e) => eprintln!("cubby serve: sandbox events: {e}"),
            }
            backoff = if began.elapsed() > Duration::from_secs(60) {
                Duration::from_secs(1)
            } else {
                (backoff * 2).min(Duration::from_secs(15))
            };
            tokio::time::sleep(backoff).await;
        }
    }

    async fn on_event(&self, ev: SandboxEvent) -> Result<()> {
        let (name, reason) = match ev {
            SandboxEvent::Exited {
                name,
                exit_code,
                oom_killed,
            } => (name, oom_reason(Some(exit_code), oom_killed)),
            SandboxEvent::Removed { name } => (name, "its sandbox was removed".to_string()),
            SandboxEvent::Started { .. } => return Ok(()),
        };
        if let Some(s) = self.store.session_by_sandbox(&name).await? {
            // Only a ready session fails here: a starting one is failed by its
            // starter (wait_ready sees the exit); a stopping one meant it.
            self.store
                .transition(&s.id, &[State::Ready], State::Failed, Some(&reason), None)
                .await?;
        }
        Ok(())
    }

    /// Every `every`: takes over unfinished sessions whose lease expired
    /// (a dead instance sharing the database) and stops sessions past their
    /// template's maximum length.
    pub async fn reconcile_loop(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            for s in self.store.unfinished_sessions().await.unwrap_or_default() {
                self.spawn_drive(&s.id);
            }
            if let Err(e) = self.enforce_max_length().await {
                eprintln!("cubby serve: session time limits: {e}");
            }
        }
    }

    /// Stops ready sessions older than their template's `max_session_secs`.
    pub async fn enforce_max_length(self: &Arc<Self>) -> Result<()> {
        let now = crate::store::now();
        let mut limits = std::collections::HashMap::new();
        let active = self
            .store
            .sessions(crate::store::sessions::SessionFilter::All, true)
            .await?;
        for s in active.into_iter().filter(|s| s.state == State::Ready) {
            if !limits.contains_key(&s.template_id) {
                let t = self.store.template(&s.template_id).await?;
                limits.insert(s.template_id.clone(), t.spec.max_session_secs as i64);
            }
            let max = limits[&s.template_id];
            if now - s.created_at >= max {
                let reason = format!("maximum session length reached ({max} s)");
                if self
                    .store
                    .transition(&s.id, &[State::Ready], State::Stopping, Some(&reason), None)
                    .await?
                {
                    self.spawn_drive(&s.id);
                }
            }
        }
        Ok(())
    }
}
