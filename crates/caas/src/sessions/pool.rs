//! Warm pool: per template, a configured number of sandboxes started and
//! ready before any student asks (`warm_pool` in the template). A start
//! claims one instead of provisioning: the session row takes the member's
//! name as its sandbox (compare-and-set), the member is connected to the
//! class network and taken off the pool network, its workspace put back to
//! what it was when the member became ready (what pool life wrote there
//! goes), the student's archive restored into it, and its port checked.
//! The pool is refilled in the background (never while students wait in
//! the admission queue).
//!
//! What a member can be before the student is known:
//! - its workspace is its own volume (`caas-poolws-{id}` for sandbox
//!   `caas-pool-{id}`): a claimed session derives it from its sandbox name
//!   and keeps it for life (archived and removed at its end like any);
//! - its labels are generic (managed + `io.cubby.caas.pool` = template,
//!   `io.cubby.caas.pool.spec` = spec digest): labels are immutable in the
//!   engine, so for a claimed sandbox the session row is authoritative
//!   (orphan handling and the pool look the name up in the sessions);
//! - it waits on the pool network (`caas-pool`, internal): the class
//!   network is connected at claim.
//!
//! A class with a scheduled start (an exam window open or opening within
//! `prepull_ahead`) whose template is pooled (`warm_pool` > 0) also gets a
//! pool of its own, sized from its roster (enrolled students, at most its
//! capacity, less its active sessions): members made directly on the class
//! network with the class label, so that a claim makes no network change
//! (check, restore, port). Only that class's starts claim them (they are on
//! no other network); when the window ends (or the class or its template
//! goes) they are removed. Starts without a schedule use the template-wide
//! pool above.
//!
//! Members are found again after a restart by their labels and adopted if
//! no session owns them and their spec digest is the template's current
//! one; any other unowned member is removed (the template changed, its pool
//! shrank, or the template is gone). A claim that fails at any step
//! discards the member (sandbox and volume: it held nothing of the
//! student's that is not in the archive) and the session is provisioned the
//! ordinary way; a claim interrupted by a crash is given up the same way
//! when the session is driven again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;

use super::Manager;
use crate::backend::{
    BackendError, SandboxSpec, SandboxStatus, LABEL_CLASS, LABEL_MANAGED, LABEL_POOL,
    LABEL_POOL_CLASS, LABEL_POOL_SPEC,
};
use crate::error::{Error, Result};
use crate::store::sessions::Session;
use crate::template::{
    pool_spec, sandbox_spec, spec_digest, SandboxFor, TemplateSpec, POOL_NETWORK,
};

/// A member's workspace as it was when it became ready, kept to reset the
/// workspace at claim; a bigger one means the member is not kept.
const MAX_BASELINE: usize = 8 << 20;

/// The phases of a claim, as `cubby_pool_claim_phase_seconds{phase}`:
/// session row, spec and class network ensured; connecting the class
/// network, disconnecting the pool network and exporting the workspace to
/// check it against the baseline (these three run at once); putting the
/// baseline back (only when it changed); restoring the student's archive;
/// inspect and port check.
pub const CLAIM_PHASES: [&str; 7] = [
    "row",
    "connect",
    "disconnect",
    "check",
    "reset",
    "restore",
    "ready",
];

/// How often the pool is checked and refilled.
pub const ROUND: Duration = Duration::from_secs(1);

/// The ready list of a template's pool (its id) or of a class's pool.
fn pool_key(template_id: &str, class: Option<&str>) -> String {
    match class {
        Some(c) => format!("{CLASS_KEY}{c}"),
        None => template_id.to_string(),
    }
}
const CLASS_KEY: &str = "class:";

/// A pool as this round wants it.
struct Want {
    template_id: String,
    digest: String,
    spec: TemplateSpec,
    size: usize,
    /// A class's pool (on its network), or the template's (`None`).
    class: Option<String>,
}

/// One ready, unclaimed member.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    /// Its pool ([`pool_key`]).
    key: String,
    /// The class whose network it is on (a class pool's member).
    class: Option<String>,
    pub volume: String,
    pub digest: String,
    /// The tar of the workspace when it became ready.
    pub baseline: Bytes,
}

#[derive(Default)]
pub struct Pool {
    /// Ready members per pool ([`pool_key`]).
    ready: Mutex<HashMap<String, Vec<Member>>>,
    /// Members being made, per pool ([`pool_key`]).
    warming: Mutex<HashMap<String, usize>>,
    pub claims: AtomicU64,
    /// Starts of a pooled template that found no member ready.
    pub misses: AtomicU64,
    /// Claims given up (the session was provisioned the ordinary way).
    pub failed_claims: AtomicU64,
    /// Starts of a pooled template that could not use the pool: the
    /// student's own workspace volume was still there (left by a session
    /// that failed, or a volume the engine did not remove), and it is
    /// kept rather than replaced by a member's.
    pub skipped_kept: AtomicU64,
    /// Members set aside for a session that will claim them (taken out of
    /// `ready` when the session bypasses the admission queue).
    reserved: Mutex<HashMap<String, Member>>,
    pub made: AtomicU64,
    pub removed: AtomicU64,
    /// The pool network was found too small for the pools' sizes with
    /// members on it: the ready ones are removed next round so it can be
    /// made anew with room.
    regrow: std::sync::atomic::AtomicBool,
    /// Claims running now: the pool is not refilled meanwhile (making
    /// members competes with them for the engine's network lock and the
    /// CPU; measured: it made the claims of a burst slower).
    claiming: std::sync::atomic::AtomicUsize,
    /// Claims by phase ([`CLAIM_PHASES`]).
    pub claim_phase: [crate::metrics::Histogram; CLAIM_PHASES.len()],
}

impl Pool {
    fn lock_ready(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Member>>> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Names of the members ready now (every template).
    fn ready_names(&self) -> std::collections::HashSet<String> {
        self.lock_ready()
            .values()
            .flatten()
            .map(|m| m.name.clone())
            .collect()
    }
    fn lock_warming(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.warming.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ready members now, all templates.
    pub fn size(&self) -> usize {
        self.lock_ready().values().map(Vec::len).sum()
    }

    /// Ready members per template id (template-wide pools).
    pub fn sizes(&self) -> Vec<(String, usize)> {
        self.sizes_where(|k| (!k.starts_with(CLASS_KEY)).then_some(k))
    }

    /// Ready members per class id (class pools).
    pub fn class_sizes(&self) -> Vec<(String, usize)> {
        self.sizes_where(|k| k.strip_prefix(CLASS_KEY))
    }

    fn sizes_where(&self, f: impl Fn(&str) -> Option<&str>) -> Vec<(String, usize)> {
        let mut v: Vec<_> = self
            .lock_ready()
            .iter()
            .filter_map(|(k, m)| f(k).map(|k| (k.to_string(), m.len())))
            .collect();
        v.sort();
        v
    }

    fn lock_reserved(&self) -> std::sync::MutexGuard<'_, HashMap<String, Member>> {
        self.reserved.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f`, timed as claim phase `i` ([`CLAIM_PHASES`]).
    async fn timed<T>(&self, i: usize, f: impl std::future::Future<Output = T>) -> T {
        let at = std::time::Instant::now();
        let r = f.await;
        self.claim_phase[i].observe(at.elapsed());
        r
    }

    /// Gives a reserved member back (the session did not claim it).
    pub(super) fn unreserve(&self, session_id: &str) {
        if let Some(m) = self.lock_reserved().remove(session_id) {
            self.give_back(m);
        }
    }

    /// Puts an unused member back first in its ready list.
    fn give_back(&self, m: Member) {
        self.lock_ready()
            .entry(m.key.clone())
            .or_default()
            .insert(0, m);
    }

    /// Takes a ready member for a session of this class and template, of
    /// this spec, oldest first: its class's pool first, else the
    /// template's (`peek`: only says whether there is one).
    fn take(&self, s: &Session, digest: &str, peek: bool) -> Option<Member> {
        let mut g = self.lock_ready();
        for key in [
            pool_key(&s.template_id, Some(&s.class_id)),
            pool_key(&s.template_id, None),
        ] {
            let Some(list) = g.get_mut(&key) else {
                continue;
            };
            if let Some(i) = list.iter().position(|m| m.digest == digest) {
                return Some(if peek {
                    list[i].clone()
                } else {
                    list.remove(i)
                });
            }
        }
        None
    }
}

/// Times a claim's phases into the pool's histograms.
struct Lap<'a> {
    pool: &'a Pool,
    at: std::time::Instant,
}

impl<'a> Lap<'a> {
    fn new(pool: &'a Pool) -> Self {
        Lap {
            pool,
            at: std::time::Instant::now(),
        }
    }
    /// The next phase starts now (the ones before were timed apart).
    fn restart(&mut self) {
        self.at = std::time::Instant::now();
    }
    /// Phase `i` ([`CLAIM_PHASES`]) ended now.
    fn done(&mut self, i: usize) {
        let now = std::time::Instant::now();
        self.pool.claim_phase[i].observe(now - self.at);
        self.at = now;
    }
}

/// Removes a warming count when the making ends, even by panic.
struct Warming<'a>(&'a Pool, String);
impl Drop for Warming<'_> {
    fn drop(&mut self) {
        let mut g = self.0.lock_warming();
        if let Some(n) = g.get_mut(&self.1) {
            *n = n.saturating_sub(1);
        }
    }
}

impl Manager {
    /// Checks and refills the pool for ever.
    pub async fn pool_loop(self: Arc<Self>) {
        loop {
            if !self.draining() {
                if let Err(e) = self.pool_round().await {
                    crate::log!("warn", "warm pool: {e}");
                }
            }
            tokio::time::sleep(ROUND).await;
        }
    }

    /// The pools wanted now, by [`pool_key`]: every pooled template's, and
    /// for each class with a scheduled start on a pooled template, the
    /// class's, sized from its roster less its active sessions.
    async fn wanted_pools(&self) -> Result<HashMap<String, Want>> {
        let mut wanted = HashMap::new();
        let mut pooled = HashMap::new();
        for t in self.store.templates().await? {
            if t.spec.warm_pool > 0 {
                let digest = spec_digest(&t.spec);
                wanted.insert(
                    pool_key(&t.id, None),
                    Want {
                        template_id: t.id.clone(),
                        digest,
                        spec: t.spec.clone(),
                        size: t.spec.warm_pool as usize,
                        class: None,
                    },
                );
                pooled.insert(t.id, t.spec);
            }
        }
        let ahead = self.cfg.prepull_ahead.unwrap_or(Duration::ZERO);
        for e in self.scheduled_exams(ahead).await? {
            let class = match self.store.class(&e.class_id).await {
                Ok(c) => c,
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let Some(spec) = class.template_id.as_ref().and_then(|t| pooled.get(t)) else {
                continue;
            };
            let active = self
                .store
                .sessions(
                    crate::store::sessions::SessionFilter::Class(&class.id),
                    true,
                )
                .await?
                .len();
            let roster = usize::try_from(class.enrolled.min(class.capacity)).unwrap_or(0);
            let tid = class.template_id.clone().unwrap_or_default();
            wanted.insert(
                pool_key(&tid, Some(&class.id)),
                Want {
                    template_id: tid,
                    digest: spec_digest(spec),
                    spec: spec.clone(),
                    size: roster.saturating_sub(active),
                    class: Some(class.id),
                },
            );
        }
        Ok(wanted)
    }

    /// One round: adopt members found in the engine, remove stale ones,
    /// start making missing ones (not while students wait for a slot).
    pub async fn pool_round(self: &Arc<Self>) -> Result<()> {
        let wanted = self.wanted_pools().await?;
        // Members made while the list is taken are not in it: only those
        // ready before it can be found gone by it.
        let ready_before = self.pool.ready_names();
        let listed = self.backend.list_sandboxes().await?;
        let members: Vec<_> = listed
            .into_iter()
            .filter(|sb| {
                sb.labels.get(LABEL_MANAGED) == Some(&self.service_id)
                    && sb.labels.contains_key(LABEL_POOL)
                    && sb.name.starts_with("caas-pool-")
            })
            .collect();
        let warming_any = self.pool.lock_warming().values().any(|n| *n > 0);
        // Drop from memory what the engine no longer runs.
        {
            let running: std::collections::HashSet<&str> = members
                .iter()
                .filter(|m| m.status == SandboxStatus::Running)
                .map(|m| m.name.as_str())
                .collect();
            let mut g = self.pool.lock_ready();
            for list in g.values_mut() {
                list.retain(|m| {
                    !ready_before.contains(&m.name) || running.contains(m.name.as_str())
                });
            }
        }
        // Remove stale members (template changed or gone, pool shrank,
        // the class's window ended).
        let mut stale = Vec::new();
        {
            let mut g = self.pool.lock_ready();
            g.retain(|key, list| {
                let keep = match wanted.get(key) {
                    Some(w) => {
                        let (good, bad): (Vec<_>, Vec<_>) =
                            list.drain(..).partition(|m| m.digest == w.digest);
                        stale.extend(bad);
                        let mut good = good;
                        // A class pool shrinks as its students start (each
                        // start takes a member): not trimmed, or a member
                        // could go between a start's row and its claim.
                        while w.class.is_none() && good.len() > w.size {
                            if let Some(m) = good.pop() {
                                stale.push(m);
                            }
                        }
                        *list = good;
                        true
                    }
                    None => {
                        stale.append(list);
                        false
                    }
                };
                keep
            });
        }
        if self.pool.regrow.swap(false, Ordering::Relaxed) {
            let mut g = self.pool.lock_ready();
            let n: usize = g.values().flatten().filter(|m| m.class.is_none()).count();
            crate::log!(
                "info",
                "warm pool: network {POOL_NETWORK} is too small for the pools' sizes: its {n} \
                 ready members are removed so that it is made anew with room"
            );
            for list in g.values_mut() {
                let (on_pool_net, class): (Vec<_>, Vec<_>) =
                    list.drain(..).partition(|m| m.class.is_none());
                stale.extend(on_pool_net);
                *list = class;
            }
        }
        for m in stale {
            self.remove_member(&m.name, &m.volume).await;
        }
        // Members in the engine that this process does not hold: adopted
        // (a restart) if current, removed if not. Skipped while some are
        // being made (they are not in the list yet).
        if !warming_any {
            let mut known = self.pool.ready_names();
            known.extend(self.pool.lock_reserved().values().map(|m| m.name.clone()));
            for sb in members.iter().filter(|m| !known.contains(&m.name)) {
                if self.store.session_by_sandbox(&sb.name).await?.is_some() {
                    continue; // claimed: a session's sandbox now
                }
                let tid = sb.labels.get(LABEL_POOL).cloned().unwrap_or_default();
                let class = sb.labels.get(LABEL_POOL_CLASS).cloned();
                let key = pool_key(&tid, class.as_deref());
                let digest = sb.labels.get(LABEL_POOL_SPEC).cloned().unwrap_or_default();
                let volume = crate::template::pool_volume(sb.name.trim_start_matches("caas-pool-"));
                let want = wanted.get(&key).filter(|w| w.digest == digest);
                let room = want
                    .is_some_and(|w| self.pool.lock_ready().get(&key).map_or(0, Vec::len) < w.size);
                if let (Some(w), true, SandboxStatus::Running) = (want, room, sb.status) {
                    match self.baseline(&sb.name, &w.spec.workspace_path).await {
                        Ok(baseline) => {
                            self.pool
                                .lock_ready()
                                .entry(key.clone())
                                .or_default()
                                .push(Member {
                                    name: sb.name.clone(),
                                    key,
                                    class,
                                    volume,
                                    digest,
                                    baseline,
                                });
                            continue;
                        }
                        Err(e) => {
                            crate::log!("warn", "warm pool: member {}: not adopted: {e}", sb.name)
                        }
                    }
                }
                self.remove_member(&sb.name, &volume).await;
            }
        }
        // Refill, students first: nothing is made while any wait, nor
        // while claims run or members are reserved for starts.
        if self.admission.stats().queued > 0
            || self.pool.claiming.load(Ordering::Relaxed) > 0
            || !self.pool.lock_reserved().is_empty()
        {
            return Ok(());
        }
        let limit = self.cfg.start_concurrency.max(1);
        // Class pools first: their start is scheduled.
        let mut wanted: Vec<(String, Want)> = wanted.into_iter().collect();
        wanted.sort_by_key(|(k, w)| (w.class.is_none(), k.clone()));
        for (key, want) in wanted {
            let want = Arc::new(want);
            loop {
                let (have, warming_total) = {
                    let have = self.pool.lock_ready().get(&key).map_or(0, Vec::len);
                    let w = self.pool.lock_warming();
                    (
                        have + w.get(&key).copied().unwrap_or(0),
                        w.values().sum::<usize>(),
                    )
                };
                if have >= want.size || warming_total >= limit {
                    break;
                }
                *self.pool.lock_warming().entry(key.clone()).or_default() += 1;
                let me = self.clone();
                let (key, want) = (key.clone(), want.clone());
                tokio::spawn(async move {
                    let _w = Warming(&me.pool, key.clone());
                    if let Err(e) = me.make_member(&key, &want).await {
                        crate::log!("warn", "warm pool: {key}: {e}");
                        // Not in a tight loop against a failing engine.
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                });
            }
        }
        Ok(())
    }

    /// A member of the pool `w`: the template's sandbox with the pool's
    /// labels and its own volume; on the pool network, or for a class's
    /// pool on the class network (as a fresh sandbox of the class is),
    /// with the class label.
    fn member_spec(&self, w: &Want, member_id: &str) -> SandboxSpec {
        let mut spec = pool_spec(&w.spec, &self.service_id, &w.template_id, member_id);
        if let Some(class) = &w.class {
            let fresh = sandbox_spec(
                &w.spec,
                &SandboxFor {
                    service_id: &self.service_id,
                    session_id: member_id,
                    class_id: class,
                    student_id: "",
                },
            );
            spec.network = fresh.network;
            spec.labels.insert(LABEL_CLASS.to_string(), class.clone());
            spec.labels
                .insert(LABEL_POOL_CLASS.to_string(), class.clone());
        }
        spec
    }

    async fn make_member(&self, key: &str, w: &Want) -> Result<()> {
        let id = crate::store::new_id();
        let mut spec = self.member_spec(w, &id);
        if let Err(e) = self.ensure_network_once(&mut spec.network).await {
            if w.class.is_none() && matches!(e, Error::Backend(BackendError::NetworkTooSmall(_))) {
                self.pool.regrow.store(true, Ordering::Relaxed);
            }
            return Err(e);
        }
        let made = async {
            let info = self.backend.start_sandbox(&spec).await?;
            if let Some(port) = spec.app_port {
                self.backend
                    .wait_ready(&info, port, self.cfg.ready_timeout)
                    .await?;
            }
            self.baseline(&spec.name, &spec.workspace_path).await
        }
        .await;
        match made {
            Ok(baseline) => {
                self.pool.made.fetch_add(1, Ordering::Relaxed);
                self.pool
                    .lock_ready()
                    .entry(key.to_string())
                    .or_default()
                    .push(Member {
                        name: spec.name,
                        key: key.to_string(),
                        class: w.class.clone(),
                        volume: spec.workspace_volume,
                        digest: w.digest.clone(),
                        baseline,
                    });
                Ok(())
            }
            Err(e) => {
                self.remove_member(&spec.name, &spec.workspace_volume).await;
                Err(e)
            }
        }
    }

    /// The workspace of a running sandbox as a tar, in memory (bounded).
    async fn baseline(&self, name: &str, path: &str) -> Result<Bytes> {
        let mut tar = self.backend.export_path(name, path).await?;
        let mut buf = Vec::new();
        while let Some(chunk) = tar.try_next().await? {
            buf.extend_from_slice(&chunk);
            if buf.len() > MAX_BASELINE {
                return Err(Error::Invalid(format!(
                    "the workspace {path} of a fresh sandbox holds more than {} MiB: too much to \
                     keep per warm-pool member; set warm_pool to 0 for this template",
                    MAX_BASELINE >> 20
                )));
            }
        }
        Ok(Bytes::from(buf))
    }

    async fn remove_member(&self, name: &str, volume: &str) {
        let r = async {
            self.backend.remove_sandbox(name).await?;
            self.backend.remove_volume(volume).await
        }
        .await;
        match r {
            Ok(()) => {
                self.pool.removed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => crate::log!("warn", "warm pool: removing member {name}: {e}"),
        }
    }

    /// Sets a ready member aside for a session that is about to start, so
    /// it can skip the admission queue (a claim is cheap: no sandbox is
    /// made). False when the template has no pool, none is ready, or the
    /// student's own volume exists (it would be kept, not replaced).
    pub(super) async fn reserve_member(&self, s: &Session) -> Result<bool> {
        if s.sandbox != crate::template::sandbox_name(&s.id) {
            return Ok(false); // an interrupted claim: given up in provision
        }
        if self.pool.lock_reserved().contains_key(&s.id) {
            return Ok(true);
        }
        let t = self.store.template(&s.template_id).await?;
        if t.spec.warm_pool == 0 {
            return Ok(false);
        }
        let digest = spec_digest(&t.spec);
        if self.pool.take(s, &digest, true).is_none() {
            return Ok(false);
        }
        if s.restore_state == "kept" {
            return Ok(false);
        }
        let own = crate::template::workspace_volume(&s.class_id, &s.student_id);
        if s.restore_state == "undecided" && self.backend.volume_exists(&own).await? {
            return Ok(false);
        }
        let Some(m) = self.pool.take(s, &digest, false) else {
            return Ok(false); // taken meanwhile: through the queue
        };
        self.pool.lock_reserved().insert(s.id.clone(), m);
        Ok(true)
    }

    /// A ready member of the session's template, claimed for it; `None`
    /// when the template has no pool or none is ready (a miss), or the
    /// claim failed (the member is discarded). Returns the address.
    pub(super) async fn try_claim(
        &self,
        s: &Session,
        t: &crate::template::TemplateSpec,
    ) -> Result<Option<Option<String>>> {
        let reserved = self.pool.lock_reserved().remove(&s.id);
        if t.warm_pool == 0 {
            if let Some(m) = reserved {
                self.remove_member(&m.name, &m.volume).await;
            }
            return Ok(None);
        }
        if s.restore_state == "kept" {
            self.pool.skipped_kept.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = reserved {
                self.pool.give_back(m);
            }
            crate::log!(
                "info",
                "session {}: the student's workspace volume was kept: provisioned on it, not from the warm pool",
                s.id
            );
            return Ok(None);
        }
        let digest = spec_digest(t);
        let reserved = match reserved {
            Some(m) if m.digest != digest => {
                // The template changed since: this member is stale.
                self.remove_member(&m.name, &m.volume).await;
                None
            }
            r => r,
        };
        let Some(m) = reserved.or_else(|| self.pool.take(s, &digest, false)) else {
            self.pool.misses.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        };
        self.pool.claiming.fetch_add(1, Ordering::Relaxed);
        let claimed = self.claim(s, t, &m).await;
        self.pool.claiming.fetch_sub(1, Ordering::Relaxed);
        match claimed {
            Ok(addr) => {
                self.pool.claims.fetch_add(1, Ordering::Relaxed);
                Ok(Some(addr))
            }
            Err(e) => {
                self.pool.failed_claims.fetch_add(1, Ordering::Relaxed);
                crate::log!(
                    "warn",
                    "session {}: warm-pool member {} not usable, provisioning anew: {e}",
                    s.id,
                    m.name
                );
                self.drop_claim(s).await?;
                Ok(None)
            }
        }
    }

    async fn claim(
        &self,
        s: &Session,
        t: &crate::template::TemplateSpec,
        m: &Member,
    ) -> Result<Option<String>> {
        let mut lap = Lap::new(&self.pool);
        // The row first: a crash from here on finds the claim by it.
        if !self.store.claim_sandbox(&s.id, &m.name).await? {
            return Err(Error::Conflict(format!(
                "session {} changed while claiming warm-pool member {}",
                s.id, m.name
            )));
        }
        let s = self.store.session(&s.id).await?;
        let mut spec = self.spec_with(&s, t);
        if m.class.is_none() {
            // A class pool's member is on the class network already.
            self.ensure_network_once(&mut spec.network).await?;
        }
        lap.done(0);
        // Back to the workspace the member had when it became ready: what
        // pool life wrote there goes.
        let check = self
            .pool
            .timed(3, self.baseline(&spec.name, &t.workspace_path));
        let now = if let Some(class) = &m.class {
            if *class != s.class_id {
                return Err(Error::Invalid(format!(
                    "warm-pool member {} is class {class}'s, not class {}'s",
                    m.name, s.class_id
                )));
            }
            // Made on this class's network: nothing to change.
            check.await?
        } else {
            // Class network on, pool network off and the workspace checked,
            // at once: the two network changes queue for the engine's
            // network lock together instead of one after the other
            // (docs/caas.md, Warm pool).
            let (connected, disconnected, now) = tokio::join!(
                self.pool.timed(
                    1,
                    self.backend.connect_network(&spec.name, &spec.network.name)
                ),
                self.pool
                    .timed(2, self.backend.disconnect_network(&spec.name, POOL_NETWORK)),
                check,
            );
            connected?;
            disconnected?;
            now?
        };
        lap.restart();
        // The workspace (reset if pool life touched it, then the student's
        // archive) and the app's readiness at once: the member's app was
        // answering when it joined the pool, so this is a check, and it
        // need not wait behind the restore.
        let workspace = async {
            if now != m.baseline {
                let dir = &t.workspace_path;
                let wipe = format!(
                    "cd {dir} && rm -rf -- ./* ./.[!.]* ./..?* 2>/dev/null; [ -z \"$(ls -A .)\" ]"
                );
                let out = self
                    .backend
                    .exec(
                        &spec.name,
                        &["sh".into(), "-c".into(), wipe],
                        Some(&spec.user),
                    )
                    .await?;
                if out.exit_code != 0 {
                    return Err(Error::Invalid(format!(
                        "could not empty the workspace of warm-pool member {}: {}",
                        m.name,
                        String::from_utf8_lossy(&out.stderr)
                    )));
                }
                let tar = m.baseline.clone();
                self.backend
                    .import_tar(
                        &spec.name,
                        crate::archive::parent_dir(&spec.workspace_path),
                        Box::pin(futures_util::stream::once(async move { Ok(tar) })),
                    )
                    .await?;
                lap.done(4);
            }
            self.restore_into(&s, &spec).await?;
            lap.done(5);
            Ok(())
        };
        let ready = self.pool.timed(6, async {
            let info = self
                .backend
                .inspect_sandbox(&spec.name)
                .await?
                .ok_or_else(|| {
                    Error::Invalid(format!("sandbox {} vanished at claim", spec.name))
                })?;
            if let Some(port) = spec.app_port {
                self.backend
                    .wait_ready(&info, port, self.cfg.ready_timeout)
                    .await?;
            }
            Ok::<_, Error>(info)
        });
        let (restored, info) = tokio::join!(workspace, ready);
        restored?;
        let info = info?;
        Ok(info.address.map(|a| a.to_string()))
    }

    /// Gives a claim up: the member (under either name) and its volume go,
    /// the session goes back to the derived volume and to restoring again.
    pub(super) async fn drop_claim(&self, s: &Session) -> Result<Session> {
        if let Some(member) = s.sandbox.strip_prefix("caas-pool-") {
            self.backend.remove_sandbox(&s.sandbox).await?;
            self.backend
                .remove_volume(&crate::template::pool_volume(member))
                .await?;
        }
        self.store.drop_pool_claim(&s.id).await
    }
}
