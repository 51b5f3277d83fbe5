//! The session manager: drives each session's state machine against the
//! backend, recovers after a crash (`reconcile`), and follows the backend's
//! events to mark sandboxes that died (OOM, exit).
//!
//! Safety rests on three things: the session row (and so the sandbox name)
//! exists before anything is provisioned; `start_sandbox` is idempotent by
//! name; every transition is a compare-and-set with a lease, so only one
//! instance drives a session at a time and a dead one's work is taken over.

pub mod activity;
pub mod admission;
pub mod culling;
pub mod pool;
pub mod prepull;
mod shutdown;

use std::collections::{HashMap, HashSet};
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

/// The phases of provisioning a sandbox anew, as
/// `cubby_provision_phase_seconds{phase}`: the claim of a warm-pool member
/// tried (and the restore decided), the network ensured, the sandbox
/// created and started, the archive restored, the port answering.
pub const PROVISION_PHASES: [&str; 5] = ["prepare", "network", "sandbox", "restore", "ready"];

#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// This process's id as a lease owner (stable per root: see serve).
    pub instance: String,
    /// How many sandboxes are provisioned at once; the rest wait in the
    /// admission queue (up-class goes through it too).
    pub start_concurrency: usize,
    /// Caps on running sandboxes, per class and in total.
    pub caps: admission::Caps,
    /// How long a claimed transition stays ours before others may take it.
    pub lease_secs: i64,
    pub ready_timeout: Duration,
    pub stop_grace: Duration,
    /// Where workspaces are archived when sessions end.
    pub objects: crate::archive::Objects,
    /// Checkpoints of running sessions this often (`None`: none), keeping
    /// the newest `checkpoint_keep` per session.
    pub checkpoint_every: Option<Duration>,
    pub checkpoint_keep: usize,
    /// Pulls the template image of an exam this long before its start
    /// (`None`: no pre-pull).
    pub prepull_ahead: Option<Duration>,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            instance: crate::store::new_id(),
            start_concurrency: admission::default_concurrency(),
            caps: admission::Caps::default(),
            lease_secs: 60,
            ready_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(10),
            // Tests of the state machine only: serve always sets a durable one.
            objects: crate::archive::Objects::memory(),
            checkpoint_every: None,
            checkpoint_keep: 3,
            prepull_ahead: None,
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
    /// Provisioning slots and the queue in front of them.
    pub admission: Arc<admission::Admission>,
    /// Latencies and failures for /metrics.
    pub metrics: crate::metrics::Metrics,
    /// Set by [`Manager::drain`]: no new session work starts.
    draining: std::sync::atomic::AtomicBool,
    stop_permits: Semaphore,
    /// Warm-pool claims at once: they skip the admission queue (no sandbox
    /// is made), bounded apart from it (4 per provisioning slot).
    claim_permits: Semaphore,
    /// Sessions a task of this process is driving right now.
    inflight: Mutex<HashSet<String>>,
    /// Waiters of sessions ([`Manager::wait_settled`]), woken when a drive
    /// of the session ends (it settled, or moved on).
    drive_ended: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
    /// Proxied traffic and terminal input per session (idle culling).
    pub activity: activity::Activity,
    /// Idle timers and CPU samples (culling.rs).
    culler: culling::Culler,
    /// Sessions being checkpointed right now (one at a time each).
    checkpointing: Mutex<HashSet<String>>,
    checkpoint_permits: Arc<Semaphore>,
    /// Networks ensured by this process, with the sandboxes they were
    /// ensured to hold (a bigger need ensures again).
    networks: Mutex<HashMap<String, u32>>,
    /// Ready sandboxes per template (pool.rs).
    pub pool: pool::Pool,
    /// Images pulled ahead of scheduled starts (prepull.rs).
    pub prepull: prepull::Prepull,
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
        let waiters = self
            .0
            .drive_ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
        if let Some(w) = waiters {
            w.notify_waiters();
        }
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
            admission: admission::Admission::new(cfg.start_concurrency),
            metrics: crate::metrics::Metrics::default(),
            draining: std::sync::atomic::AtomicBool::new(false),
            stop_permits: Semaphore::new(2 * cfg.start_concurrency.max(1)),
            claim_permits: Semaphore::new(4 * cfg.start_concurrency.max(1)),
            cfg,
            inflight: Mutex::new(HashSet::new()),
            drive_ended: Mutex::new(HashMap::new()),
            activity: activity::Activity::default(),
            culler: culling::Culler::default(),
            checkpointing: Mutex::new(HashSet::new()),
            checkpoint_permits: Arc::new(Semaphore::new(2)),
            networks: Mutex::new(HashMap::new()),
            pool: pool::Pool::default(),
            prepull: prepull::Prepull::default(),
        }))
    }

    /// Where archives are kept.
    pub fn objects(&self) -> &crate::archive::Objects {
        &self.cfg.objects
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
        if let Some(e) = self.store.exam(class_id).await? {
            let now = crate::store::now();
            if now < e.starts_at || now >= e.ends_at {
                let at = |t: i64| {
                    let t = std::time::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
                    humantime::format_rfc3339_seconds(t).to_string()
                };
                let when = if now < e.starts_at {
                    format!("it starts in {} min", (e.starts_at - now + 59) / 60)
                } else {
                    "it has ended".to_string()
                };
                return Err(Error::Conflict(format!(
                    "class {} has an exam from {} to {} ({when}): sandboxes start only during the exam",
                    class.code,
                    at(e.starts_at),
                    at(e.ends_at)
                )));
            }
        }
        // Pressing start again returns the session as is; only a new one
        // counts against the caps.
        if let Some(s) = self.store.active_session(class_id, student_id).await? {
            return Ok(self.with_position(s));
        }
        self.cfg
            .caps
            .check(&self.store, class_id, &class.code)
            .await?;
        let (s, _created) = self
            .store
            .request_session(class_id, student_id, &template_id, actor)
            .await?;
        Ok(self.with_position(s))
    }

    /// The session with its place in the admission queue (if waiting).
    pub fn with_position(&self, mut s: Session) -> Session {
        s.queue_position = self.admission.position(&s.id);
        s
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
            crate::log!("warn", "session {}: {e}", s.id);
        }
        self.wait_settled(&s.id, timeout).await
    }

    /// Waits until the session is no longer requested/starting (or timeout).
    ///
    /// Woken when a drive of the session in this process ends, and looks
    /// again each second for what another instance did: no polling of the
    /// database while a class's worth of students wait (it was every 10 ms
    /// each, tens of thousands of reads a second in a burst).
    pub async fn wait_settled(&self, id: &str, timeout: Duration) -> Result<Session> {
        const LOOK_AGAIN: Duration = Duration::from_secs(1);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let wake = self
                .drive_ended
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(id.to_string())
                .or_default()
                .clone();
            // Registered before the read: a drive that ends after the read
            // still wakes us.
            let woken = wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let s = self.store.session(id).await?;
            let now = tokio::time::Instant::now();
            if !matches!(s.state, State::Requested | State::Starting) || now >= deadline {
                self.forget_waiter(id, &wake);
                return Ok(s);
            }
            let _ = tokio::time::timeout((deadline - now).min(LOOK_AGAIN), woken).await;
        }
    }

    /// Drops a waiter's entry when no other waiter holds it.
    fn forget_waiter(&self, id: &str, wake: &Arc<tokio::sync::Notify>) {
        let mut map = self.drive_ended.lock().unwrap_or_else(|e| e.into_inner());
        // Ours and the map's: nobody else waits on it.
        if map.get(id).is_some_and(|w| Arc::ptr_eq(w, wake)) && Arc::strong_count(wake) == 2 {
            map.remove(id);
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
        if self.draining() {
            return; // the next start of the service drives it
        }
        let me = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            if let Err(e) = me.drive(&id).await {
                crate::log!("warn", "session {id}: {e}");
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
                    // A warm-pool member set aside for it: no sandbox to
                    // make, so no provisioning slot (claims have their own
                    // bound) and no place in the queue, which then holds
                    // only the starts that provision. Otherwise queue
                    // first, claim after: a waiting session stays
                    // `requested` (its lease free) with its queue position.
                    let pooled = self.reserve_member(&s).await?;
                    let _permit = if pooled {
                        let p = self
                            .claim_permits
                            .acquire()
                            .await
                            .map_err(|_| Error::Internal("claim permits closed".into()))?;
                        (Some(p), None)
                    } else {
                        (None, Some(self.admission.enter(id).await))
                    };
                    let unreserve = || {
                        if pooled {
                            self.pool.unreserve(id);
                        }
                    };
                    if self.draining() {
                        unreserve();
                        return Ok(()); // stays requested for the next start
                    }
                    let s = self.store.session(id).await?;
                    if !matches!(s.state, State::Requested | State::Starting) {
                        unreserve();
                        continue; // stopped while it waited
                    }
                    if !self
                        .store
                        .claim(id, s.state, State::Starting, me, self.cfg.lease_secs)
                        .await?
                    {
                        unreserve();
                        return Ok(()); // someone else holds it, or it moved on
                    }
                    // A reserved member is claimed (or given back) inside;
                    // on an early error it goes back to the pool here.
                    let started = self.do_start(&s).await;
                    unreserve();
                    started?;
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
                        let began = std::time::Instant::now();
                        let ended = self.end_session(&s).await;
                        self.metrics.archive.observe(began.elapsed());
                        if let Err(e) = ended {
                            self.metrics
                                .archive_failures
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            self.metrics.engine_error(&e);
                            // Nothing was deleted: retried with back-off. The
                            // sandbox is stopped (the session did end); the
                            // retry exports it stopped.
                            crate::log!("warn", "session {id}: archive pending: {e}");
                            let _ = self
                                .backend
                                .stop_sandbox(&s.sandbox, self.cfg.stop_grace)
                                .await;
                            self.store.mark_archive_pending(id, &e.to_string()).await?;
                            return Ok(());
                        }
                        if let Ok(note) = ended {
                            if self
                                .store
                                .transition(id, &[State::Stopping], State::Stopped, None, None)
                                .await?
                            {
                                self.store.clear_reason(id).await?;
                                if let Some(n) = note {
                                    self.store.set_reason(id, &n).await?;
                                }
                            }
                        }
                    }
                    return Ok(());
                }
                State::Ready | State::Stopped | State::Failed | State::ArchivePending => {
                    return Ok(())
                }
            }
        }
    }

    async fn do_start(&self, s: &Session) -> Result<()> {
        let began = std::time::Instant::now();
        let provisioned = self.provision(s).await;
        self.metrics.provision.observe(began.elapsed());
        if let Err(e) = &provisioned {
            self.metrics
                .provision_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.metrics.engine_error(e);
        }
        match provisioned {
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

    async fn spec_of(&self, s: &Session) -> Result<crate::backend::SandboxSpec> {
        let t = self.store.template(&s.template_id).await?;
        Ok(self.spec_with(s, &t.spec))
    }

    /// [`Self::spec_of`] with the session's template at hand.
    fn spec_with(
        &self,
        s: &Session,
        t: &crate::template::TemplateSpec,
    ) -> crate::backend::SandboxSpec {
        let mut spec = sandbox_spec(
            t,
            &SandboxFor {
                service_id: &self.service_id,
                session_id: &s.id,
                class_id: &s.class_id,
                student_id: &s.student_id,
            },
        );
        // A claimed warm-pool member: its own name and volume (the row is
        // authoritative; its labels are the pool's).
        if let Some(member) = s.sandbox.strip_prefix("caas-pool-") {
            spec.name = s.sandbox.clone();
            spec.workspace_volume = crate::template::pool_volume(member);
        }
        spec
    }

    /// The end of a session: archive (export, compress, store, read back,
    /// record), then remove the sandbox and its volume. Any error returns
    /// before anything is deleted. Safe to repeat: a recorded archive is
    /// not made again.
    async fn end_session(&self, s: &Session) -> Result<Option<String>> {
        let spec = self.spec_of(s).await?;
        let mut t = crate::archive::Phases::new();
        if self.store.final_archive(&s.id).await?.is_none() {
            let exists = self.backend.inspect_sandbox(&spec.name).await?.is_some();
            if !exists && !self.backend.volume_exists(&spec.workspace_volume).await? {
                // Stopped before anything was made: nothing to keep.
                return Ok(None);
            }
            // Exported as it is, running or stopped (an exited sandbox is
            // not started again: its command would run once more); only a
            // sandbox that is gone is made again on its volume to export it.
            if !exists {
                self.backend.start_sandbox(&spec).await?;
            }
            t.lap("start");
            let key = crate::archive::object_key(s, "final", crate::store::now_ms());
            let tar = self
                .backend
                .export_path(&spec.name, &spec.workspace_path)
                .await?;
            t.lap("export_open");
            let objects = &self.cfg.objects;
            let (w, put) = objects.put_compressed_timed(&key, tar).await?;
            t.put(&put);
            objects.verify(&key, &w).await?;
            t.lap("verify");
            let row =
                crate::store::archives::new_archive(s, "final", key.clone(), w.size, w.sha256);
            if let Err(e) = self.store.insert_archive(&row).await {
                // Another instance recorded one first: ours is a spare copy.
                if self.store.final_archive(&s.id).await?.is_some() {
                    let _ = objects.delete(&key).await;
                } else {
                    return Err(e);
                }
            }
            t.lap("record");
            t.sizes(put.tar_bytes, w.size);
        }
        // Removed at once (forced): a graceful stop after the export
        // could only lose what the app writes meanwhile, and costs the
        // stop grace per sandbox.
        self.backend.remove_sandbox(&spec.name).await?;
        t.lap("remove_sandbox");
        // The work is archived and verified by now: a volume the engine
        // will not remove (still claimed by something else) is kept, said
        // in the session's reason, and not a reason to archive again.
        let removed = self.backend.remove_volume(&spec.workspace_volume).await;
        t.lap("remove_volume");
        self.metrics.archive_phases(&t);
        crate::log!("info", "session {}: ended: {t}", s.id);
        if let Err(e) = removed {
            crate::log!("warn", "session {}: archived; volume kept: {e}", s.id);
            return Ok(Some(format!("archived; volume not removed: {e}")));
        }
        Ok(None)
    }

    /// Decides once what the workspace starts from: the teacher's choice,
    /// else the latest archive; only into a new volume (an existing one,
    /// left by a session that failed rather than ended, is kept and the
    /// decision says so: restore_state "kept").
    async fn decide_restore(&self, s: &Session, volume: &str) -> Result<Session> {
        if s.restore_state != "undecided" {
            return Ok(s.clone());
        }
        let from = match self
            .store
            .restore_choice(&s.class_id, &s.student_id)
            .await?
        {
            Some(choice) => choice,
            None => self
                .store
                .latest_archive(&s.class_id, &s.student_id)
                .await?
                .map(|a| a.id),
        };
        if from.is_some() && self.backend.volume_exists(volume).await? {
            return self.store.restore_kept(&s.id).await;
        }
        self.store.decide_restore(s, from.as_deref()).await
    }

    /// How many sandboxes a network must hold: a class network its class's
    /// capacity, the warm pool's network the sum of the templates' pools
    /// (each with headroom).
    async fn network_hosts(&self, net: &crate::backend::ClassNetwork) -> Result<u32> {
        let n = if net.name == crate::template::POOL_NETWORK {
            self.store
                .templates()
                .await?
                .iter()
                .map(|t| u64::from(t.spec.warm_pool))
                .sum()
        } else if let Some(class) = net.labels.get(crate::backend::LABEL_CLASS) {
            u64::try_from(self.store.class(class).await?.capacity).unwrap_or(0)
        } else {
            return Ok(0);
        };
        Ok(crate::backend::with_headroom(n))
    }

    /// Ensures a network once per process (one engine call less per start),
    /// sized for what it must hold (`net.hosts` is set here), again when
    /// that grew.
    async fn ensure_network_once(&self, net: &mut crate::backend::ClassNetwork) -> Result<()> {
        net.hosts = self.network_hosts(net).await?;
        let known = self
            .networks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&net.name)
            .is_some_and(|h| *h >= net.hosts);
        if !known {
            self.backend.ensure_network(net).await?;
            self.networks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(net.name.clone(), net.hosts);
        }
        Ok(())
    }

    /// Restores the decided archive into the running sandbox (where every
    /// engine sees the volume); extracting again after a crash rewrites the
    /// same files.
    async fn restore_into(
        &self,
        s: &Session,
        spec: &crate::backend::SandboxSpec,
    ) -> Result<Session> {
        if s.restore_state == "pending" {
            if let Some(id) = &s.restore_from {
                let a = self.store.archive(id).await?;
                let tar = self.cfg.objects.get_tar(&a.object_key).await?;
                self.backend
                    .import_tar(
                        &spec.name,
                        crate::archive::parent_dir(&spec.workspace_path),
                        tar,
                    )
                    .await?;
                self.store.restore_done(&s.id).await?;
                return self.store.session(&s.id).await;
            }
        }
        Ok(s.clone())
    }

    /// Network, sandbox, restore, readiness (or a warm-pool member claimed
    /// for it). Returns the sandbox's address.
    async fn provision(&self, s: &Session) -> Result<Option<String>> {
        let mut at = std::time::Instant::now();
        let mut lap = |i: usize| {
            let now = std::time::Instant::now();
            self.metrics.provision_phase[i].observe(now - at);
            at = now;
        };
        let mut s = s.clone();
        // A claim interrupted by a crash: given up, provisioned anew.
        if s.sandbox != crate::template::sandbox_name(&s.id) {
            s = self.drop_claim(&s).await?;
        }
        let t = self.store.template(&s.template_id).await?;
        let spec = self.spec_of(&s).await?;
        let s = &self.decide_restore(&s, &spec.workspace_volume).await?;
        if let Some(address) = self.try_claim(s, &t.spec).await? {
            return Ok(address);
        }
        let s = &self.store.session(&s.id).await?;
        let mut spec = self.spec_of(s).await?;
        let net = spec.network.name.clone();
        lap(0);
        self.ensure_network_once(&mut spec.network).await?;
        lap(1);
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
        lap(2);
        self.restore_into(s, &spec).await?;
        lap(3);
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
        lap(4);
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
            crate::log!(
                "warn",
                "orphan sandbox {} ({}): archiving, then removing",
                o.name,
                o.reason
            );
            let me = self.clone();
            let name = o.name.clone();
            tokio::spawn(async move {
                if let Err(e) = me.archive_orphan(&name).await {
                    crate::log!("warn", "orphan sandbox {name}: kept: {e}");
                }
            });
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
            let pooled = sb.labels.contains_key(crate::backend::LABEL_POOL);
            if pooled && sb.name.starts_with("caas-pool-") {
                continue; // an unclaimed warm-pool member: the pool's
            }
            let known = match self.store.session_by_sandbox(&sb.name).await? {
                // A claimed member carries no session label: its row is
                // authoritative.
                Some(s) => pooled || session.as_deref() == Some(s.id.as_str()),
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
                        crate::log!("warn", "check sessions: {e}");
                    }
                    while let Some(ev) = stream.next().await {
                        match ev {
                            Ok(ev) => {
                                if let Err(e) = self.on_event(ev).await {
                                    crate::log!("warn", "sandbox event: {e}");
                                }
                            }
                            Err(e) => {
                                crate::log!("warn", "sandbox events: {e}");
                                break;
                            }
                        }
                    }
                }
                Err(e) => crate::log!("warn", "sandbox events: {e}"),
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
            if let Err(e) = self.checkpoints_due().await {
                crate::log!("warn", "checkpoints: {e}");
            }
            if let Err(e) = self.collect_exams().await {
                crate::log!("warn", "exam collection: {e}");
            }
            if let Err(e) = self.retry_archives(true).await {
                crate::log!("warn", "archive retries: {e}");
            }
            if let Err(e) = self.enforce_max_length().await {
                crate::log!("warn", "session time limits: {e}");
            }
            if let Err(e) = self.cull_idle().await {
                crate::log!("warn", "idle culling: {e}");
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

    /// Archive-pending sessions go back to stopping and are driven again:
    /// those whose back-off is over, or all (`due_only` false: an operator's
    /// retry). Returns how many were retried.
    pub async fn retry_archives(self: &Arc<Self>, due_only: bool) -> Result<usize> {
        let mut n = 0;
        for s in self.store.archive_pending(due_only).await? {
            if self.store.retry_archive(&s.id).await? {
                self.spawn_drive(&s.id);
                n += 1;
            }
        }
        Ok(n)
    }

    /// One archive-pending session retried now (an operator's request).
    pub async fn retry_archive(self: &Arc<Self>, id: &str) -> Result<Session> {
        let s = self.store.session(id).await?;
        if s.state != State::ArchivePending {
            return Err(Error::Conflict(format!(
                "session {id} is {}, not archive_pending",
                s.state.as_str()
            )));
        }
        self.store.retry_archive(id).await?;
        self.spawn_drive(id);
        self.store.session(id).await
    }

    /// Starts a checkpoint of every ready session whose last one (or its
    /// start) is older than the interval; at most 2 run at once.
    pub async fn checkpoints_due(self: &Arc<Self>) -> Result<()> {
        let Some(every) = self.cfg.checkpoint_every else {
            return Ok(());
        };
        let now = crate::store::now();
        let ready = self
            .store
            .sessions(crate::store::sessions::SessionFilter::All, true)
            .await?;
        for s in ready.into_iter().filter(|s| s.state == State::Ready) {
            let last = self
                .store
                .latest_checkpoint_at(&s.id)
                .await?
                .unwrap_or(s.created_at);
            if now - last < every.as_secs() as i64 {
                continue;
            }
            if !self
                .checkpointing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(s.id.clone())
            {
                continue;
            }
            let me = self.clone();
            tokio::spawn(async move {
                let r = match me.checkpoint_permits.clone().acquire_owned().await {
                    Ok(_p) => me.checkpoint(&s).await,
                    Err(_) => Ok(()),
                };
                if let Err(e) = r {
                    crate::log!("warn", "session {}: checkpoint: {e}", s.id);
                }
                me.checkpointing
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&s.id);
            });
        }
        Ok(())
    }

    /// One checkpoint: export the running sandbox's workspace, store,
    /// verify, record; then prune the session's older checkpoints beyond
    /// `checkpoint_keep` (row first, then object: a listed archive always
    /// exists).
    pub async fn checkpoint(&self, s: &Session) -> Result<()> {
        let spec = self.spec_of(s).await?;
        let key = crate::archive::object_key(s, "checkpoint", crate::store::now_ms());
        let tar = self
            .backend
            .export_path(&spec.name, &spec.workspace_path)
            .await?;
        let objects = &self.cfg.objects;
        let w = objects.put_compressed(&key, tar).await?;
        objects.verify(&key, &w).await?;
        let row = crate::store::archives::new_archive(s, "checkpoint", key, w.size, w.sha256);
        self.store.insert_archive(&row).await?;
        let keep = self.cfg.checkpoint_keep.max(1);
        for old in self.store.checkpoints(&s.id).await?.into_iter().skip(keep) {
            self.store.delete_archive(&old.id).await?;
            objects.delete(&old.object_key).await?;
        }
        Ok(())
    }

    /// An orphan (our labels, no session) goes through the same path as
    /// a session's end: export (running or stopped, as it is), store,
    /// verify, record (kind "orphan", ids from its labels), then remove the
    /// sandbox, and its volume unless a session in the database still uses
    /// it.
    pub async fn archive_orphan(&self, name: &str) -> Result<()> {
        let Some(info) = self.backend.inspect_sandbox(name).await? else {
            return Ok(());
        };
        let label = |k: &str| {
            info.labels.get(k).cloned().ok_or_else(|| {
                Error::Invalid(format!(
                    "sandbox {name} has no {k} label: kept, not archived"
                ))
            })
        };
        let (class_id, student_id) = (
            label(crate::backend::LABEL_CLASS)?,
            label(crate::backend::LABEL_STUDENT)?,
        );
        let workspace = label(crate::backend::LABEL_WORKSPACE)?;
        let session_id = info
            .labels
            .get(LABEL_SESSION)
            .cloned()
            .unwrap_or_else(|| name.to_string());
        let key = format!(
            "{class_id}/{student_id}/orphan-{name}-{}.tar.zst",
            crate::store::now_ms()
        );
        let tar = self.backend.export_path(name, &workspace).await?;
        let objects = &self.cfg.objects;
        let w = objects.put_compressed(&key, tar).await?;
        objects.verify(&key, &w).await?;
        self.store
            .insert_archive(&crate::store::archives::Archive {
                id: crate::store::new_id(),
                class_id: class_id.clone(),
                student_id: student_id.clone(),
                session_id,
                kind: "orphan".into(),
                object_key: key,
                size: w.size as i64,
                sha256: w.sha256,
                created_at: crate::store::now(),
            })
            .await?;
        self.backend.remove_sandbox(name).await?;
        let volume = crate::template::workspace_volume(&class_id, &student_id);
        if self
            .store
            .active_session(&class_id, &student_id)
            .await?
            .is_none()
        {
            self.backend.remove_volume(&volume).await?;
        }
        Ok(())
    }

    /// At an exam's end: every active session of the class is stopped, so
    /// archived and removed, all at once from here and bounded by the stop
    /// permits (never one by one, never unbounded).
    pub async fn collect_exams(self: &Arc<Self>) -> Result<()> {
        for e in self.store.claim_ended_exams().await? {
            let _ = self
                .store
                .audit(None, "exam.collect", Some(&e.class_id), None)
                .await;
        }
        // Every round, not only once: a crash right after the claim must
        // not leave sandboxes running (stopping twice is a no-op, and no
        // session starts after the window).
        for e in self.store.ended_exams().await? {
            let active = self
                .store
                .sessions(
                    crate::store::sessions::SessionFilter::Class(&e.class_id),
                    true,
                )
                .await?;
            if active
                .iter()
                .any(|s| matches!(s.state, State::Requested | State::Starting | State::Ready))
            {
                self.down_class(&e.class_id).await?;
            }
        }
        Ok(())
    }

    /// Per enrolled student: their latest session in the class started at
    /// or after `since` (the exam's start: work from before the exam is not
    /// its collection) and whether its workspace was collected (a final
    /// archive), pending, or failed.
    pub async fn collection(&self, class_id: &str, since: i64) -> Result<Vec<Collected>> {
        let sessions = self
            .store
            .sessions(
                crate::store::sessions::SessionFilter::Class(class_id),
                false,
            )
            .await?;
        let mut out = Vec::new();
        for (student_id, username) in self.store.students(class_id).await? {
            let latest = sessions
                .iter()
                .filter(|s| s.student_id == student_id && s.created_at >= since)
                .max_by_key(|s| (s.created_at, s.updated_at));
            let (status, session_id, archive_id, reason) = match latest {
                None => ("no_session", None, None, None),
                Some(s) => {
                    let a = self.store.final_archive(&s.id).await?;
                    let status = match (s.state, &a) {
                        (State::Stopped, Some(_)) => "collected",
                        (State::Stopped, None) => "nothing_to_collect",
                        (State::ArchivePending, _) => "pending",
                        (State::Failed, _) => "failed",
                        (State::Stopping, _) => "collecting",
                        _ => "running",
                    };
                    (
                        status,
                        Some(s.id.clone()),
                        a.map(|a| a.id),
                        s.reason.clone(),
                    )
                }
            };
            out.push(Collected {
                student_id,
                username,
                status,
                session_id,
                archive_id,
                reason,
            });
        }
        Ok(out)
    }
}

/// One student's line in an exam collection report.
#[derive(Debug, Clone, Serialize)]
pub struct Collected {
    pub student_id: String,
    pub username: String,
    /// collected | collecting | pending | failed | running | no_session |
    /// nothing_to_collect
    pub status: &'static str,
    pub session_id: Option<String>,
    pub archive_id: Option<String>,
    /// Why it is pending or failed.
    pub reason: Option<String>,
}
