//! The store and the session state machine against both databases (a
//! private PostgreSQL cluster per run), with an in-memory backend: capacity
//! under concurrent joins, idempotent starts, OOM reporting, crash recovery
//! and leases, bad database files.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::fake::Fake;
use common::pg::Postgres;
use cubby_caas::sessions::{Manager, ManagerConfig};
use cubby_caas::store::sessions::State;
use cubby_caas::store::users::Role;
use cubby_caas::store::Store;
use cubby_caas::template::TemplateSpec;
use cubby_caas::Error;

/// Makes a fresh database per scenario.
enum Db {
    Sqlite(tempfile::TempDir),
    Pg(Postgres, std::sync::atomic::AtomicUsize),
}

impl Db {
    fn url(&self, name: &str) -> String {
        match self {
            Db::Sqlite(d) => format!("sqlite://{}", d.path().join(format!("{name}.db")).display()),
            Db::Pg(pg, n) => pg.database(&format!("{name}_{}", n.fetch_add(1, Ordering::SeqCst))),
        }
    }
}

async fn world(store: &Store, students: usize, capacity: i64) -> (String, Vec<String>) {
    let t = store.create_user("t", Role::Teacher, "x").await.unwrap();
    let spec: TemplateSpec = serde_json::from_str(r#"{"image":"demo:1","port":8080}"#).unwrap();
    let tpl = store.create_template("tpl", &t.id, &spec).await.unwrap();
    let c = store
        .create_class("C", "c1", capacity, Some(&tpl.id), &t.id)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..students {
        let s = store
            .create_user(&format!("s{i}"), Role::Student, "x")
            .await
            .unwrap();
        ids.push(s.id);
    }
    (c.id, ids)
}

fn cfg(instance: &str) -> ManagerConfig {
    ManagerConfig {
        instance: instance.into(),
        lease_secs: 2,
        ..ManagerConfig::default()
    }
}

async fn settled(m: &Manager, id: &str) -> cubby_caas::store::sessions::Session {
    m.wait_settled(id, Duration::from_secs(20)).await.unwrap()
}

async fn capacity_is_atomic(db: &Db) {
    let store = Store::open(&db.url("cap")).await.unwrap();
    let (class, students) = world(&store, 20, 5).await;
    let mut tasks = Vec::new();
    for s in students {
        let (st, c) = (store.clone(), class.clone());
        tasks.push(tokio::spawn(async move { st.enrol(&c, &s).await }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(true) => ok += 1,
            Ok(false) => panic!("nobody was enrolled twice"),
            Err(Error::Conflict(m)) => assert!(m.contains("full"), "{m}"),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok, 5);
    let c = store.class(&class).await.unwrap();
    assert_eq!(
        (c.enrolled, store.students(&class).await.unwrap().len()),
        (5, 5)
    );
    // Enrolling someone already enrolled in a full class is not an error.
    let (first, _) = store.students(&class).await.unwrap()[0].clone();
    assert!(!store.enrol(&class, &first).await.unwrap());
}

async fn starts_are_idempotent_and_oom_shows(db: &Db) {
    let store = Store::open(&db.url("idem")).await.unwrap();
    let (class, students) = world(&store, 3, 30).await;
    for s in &students {
        store.enrol(&class, s).await.unwrap();
    }
    let fake = Arc::new(Fake::new(Duration::from_millis(50)));
    let m = Manager::new(store.clone(), fake.clone(), cfg("a"))
        .await
        .unwrap();
    tokio::spawn(m.clone().follow_events());
    // Pressing start ten times at once: one session, one sandbox.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (m, c, s) = (m.clone(), class.clone(), students[0].clone());
        tasks.push(tokio::spawn(async move {
            m.start(&c, &s, &s).await.unwrap().id
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let s = settled(&m, &ids[0]).await;
    assert_eq!(s.state, State::Ready, "{s:?}");
    assert_eq!(fake.creates.load(Ordering::SeqCst), 1);
    // Up-class: the others start, the ready one is returned as is.
    let all = m.up_class(&class, "t").await.unwrap();
    assert_eq!(all.len(), 3);
    for s in &all {
        assert_eq!(settled(&m, &s.id).await.state, State::Ready);
    }
    assert_eq!(fake.creates.load(Ordering::SeqCst), 3);
    // An OOM kill of one: that session says so, the others stay ready.
    fake.exit(&all[1].sandbox, 137, true);
    let mut failed = None;
    for _ in 0..200 {
        let s = store.session(&all[1].id).await.unwrap();
        if s.state == State::Failed {
            failed = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failed = failed.expect("the OOM-killed session never failed");
    assert_eq!(failed.reason.as_deref(), Some("out of memory"));
    for s in [&all[0], &all[2]] {
        assert_eq!(store.session(&s.id).await.unwrap().state, State::Ready);
    }
    // Down-class: archived, then removed.
    m.down_class(&class).await.unwrap();
    for s in [&all[0], &all[2]] {
        let mut st = State::Stopping;
        for _ in 0..200 {
            st = store.session(&s.id).await.unwrap().state;
            if st == State::Stopped {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(st, State::Stopped);
    }
    // Each ended session was archived (verified, recorded), then its
    // sandbox removed; the failed one's sandbox is kept.
    assert_eq!(fake.sandboxes.lock().unwrap().len(), 1);
    for s in [&all[0], &all[2]] {
        assert!(store.final_archive(&s.id).await.unwrap().is_some());
    }
    assert_eq!(fake.running(), 0);
    // A new start after a stop is a new session (the old one stays stopped).
    let again = m.start(&class, &students[0], "x").await.unwrap();
    assert_ne!(again.id, all[0].id);
    // A sandbox found stopped at the session's end (e.g. stopped by an
    // archive attempt that failed) is exported as it is: archived and
    // removed without being started again.
    let again = settled(&m, &again.id).await;
    assert_eq!(again.state, State::Ready, "{again:?}");
    fake.sandboxes
        .lock()
        .unwrap()
        .get_mut(&again.sandbox)
        .unwrap()
        .status = cubby_caas::backend::SandboxStatus::Exited;
    m.stop(&again.id).await.unwrap();
    let mut ended = store.session(&again.id).await.unwrap();
    for _ in 0..200 {
        if ended.state != State::Stopping {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        ended = store.session(&again.id).await.unwrap();
    }
    assert_eq!(ended.state, State::Stopped, "{ended:?}");
    assert!(store.final_archive(&again.id).await.unwrap().is_some());
    assert!(!fake.sandboxes.lock().unwrap().contains_key(&again.sandbox));
    assert_eq!(fake.restarts.load(Ordering::SeqCst), 0);
}

async fn crash_recovery_and_leases(db: &Db) {
    let url = db.url("crash");
    let store = Store::open(&url).await.unwrap();
    let (class, students) = world(&store, 3, 30).await;
    for s in &students {
        store.enrol(&class, s).await.unwrap();
    }
    let tpl = store.class(&class).await.unwrap().template_id.unwrap();
    // As a killed instance "dead" leaves them: one requested, one starting
    // (its sandbox made already), one stopping.
    let fake = Arc::new(Fake::new(Duration::from_millis(1)));
    let (s0, _) = store
        .request_session(&class, &students[0], &tpl, "t")
        .await
        .unwrap();
    let (s1, _) = store
        .request_session(&class, &students[1], &tpl, "t")
        .await
        .unwrap();
    let (s2, _) = store
        .request_session(&class, &students[2], &tpl, "t")
        .await
        .unwrap();
    assert!(store
        .claim(&s1.id, State::Requested, State::Starting, "dead", 600)
        .await
        .unwrap());
    let m0 = Manager::new(store.clone(), fake.clone(), cfg("dead"))
        .await
        .unwrap();
    let spec = cubby_caas::template::sandbox_spec(
        &store.template(&tpl).await.unwrap().spec,
        &cubby_caas::template::SandboxFor {
            service_id: &m0.service_id,
            session_id: &s1.id,
            class_id: &class,
            student_id: &students[1],
        },
    );
    cubby_caas::backend::Backend::start_sandbox(fake.as_ref(), &spec)
        .await
        .unwrap();
    assert!(store
        .transition(&s2.id, &[State::Requested], State::Stopping, None, None)
        .await
        .unwrap());
    assert!(store
        .claim(&s2.id, State::Stopping, State::Stopping, "dead", 600)
        .await
        .unwrap());
    drop(m0);
    // A second instance while the dead one's leases hold: it touches nothing
    // but the unowned requested session.
    let store2 = Store::open(&url).await.unwrap();
    let m = Manager::new(store2.clone(), fake.clone(), cfg("other"))
        .await
        .unwrap();
    assert_eq!(
        m.service_id,
        store.setting("service_id").await.unwrap().unwrap()
    );
    m.reconcile().await.unwrap();
    assert_eq!(settled(&m, &s0.id).await.state, State::Ready);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(store.session(&s1.id).await.unwrap().state, State::Starting);
    assert_eq!(store.session(&s2.id).await.unwrap().state, State::Stopping);
    // Once the leases expire (made so here rather than waited for), it
    // finishes them; the half-made sandbox is reused, never duplicated.
    sqlx::query("UPDATE sessions SET lease_until = 1 WHERE owner = 'dead'")
        .execute(&store.pool)
        .await
        .unwrap();
    m.reconcile().await.unwrap();
    assert_eq!(settled(&m, &s1.id).await.state, State::Ready);
    let mut st = State::Stopping;
    for _ in 0..200 {
        st = store.session(&s2.id).await.unwrap().state;
        if st == State::Stopped {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(st, State::Stopped);
    assert_eq!(
        fake.creates.load(Ordering::SeqCst),
        2,
        "s0 and s1 once each"
    );
    // A sandbox with our label and no session is reported, never removed.
    let mut stray = spec.clone();
    stray.name = "caas-stray".into();
    stray
        .labels
        .insert(cubby_caas::backend::LABEL_SESSION.into(), "nope".into());
    cubby_caas::backend::Backend::start_sandbox(fake.as_ref(), &stray)
        .await
        .unwrap();
    let orphans = m.reconcile().await.unwrap();
    assert_eq!(orphans.len(), 1);
    assert_eq!(orphans[0].name, "caas-stray");
    assert!(fake.sandboxes.lock().unwrap().contains_key("caas-stray"));
}

async fn max_length_stops_sessions(db: &Db) {
    let store = Store::open(&db.url("maxlen")).await.unwrap();
    let t = store.create_user("t", Role::Teacher, "x").await.unwrap();
    let s = store.create_user("s", Role::Student, "x").await.unwrap();
    let spec: TemplateSpec =
        serde_json::from_str(r#"{"image":"demo:1","max_session_secs":60}"#).unwrap();
    let tpl = store.create_template("short", &t.id, &spec).await.unwrap();
    let c = store
        .create_class("C", "c", 5, Some(&tpl.id), &t.id)
        .await
        .unwrap();
    store.enrol(&c.id, &s.id).await.unwrap();
    let fake = Arc::new(Fake::new(Duration::from_millis(1)));
    let m = Manager::new(store.clone(), fake.clone(), cfg("a"))
        .await
        .unwrap();
    let sess = m.start(&c.id, &s.id, &s.id).await.unwrap();
    assert_eq!(settled(&m, &sess.id).await.state, State::Ready);
    m.enforce_max_length().await.unwrap();
    assert_eq!(store.session(&sess.id).await.unwrap().state, State::Ready);
    // An hour later (made so rather than waited for).
    sqlx::query("UPDATE sessions SET created_at = created_at - 3600 WHERE id = $1")
        .bind(&sess.id)
        .execute(&store.pool)
        .await
        .unwrap();
    m.enforce_max_length().await.unwrap();
    let mut last = None;
    for _ in 0..200 {
        let x = store.session(&sess.id).await.unwrap();
        if x.state == State::Stopped {
            last = Some(x);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let x = last.expect("never stopped");
    assert!(x.reason.unwrap().contains("maximum session length"));
    assert_eq!(fake.running(), 0);
}

/// A class presses start at once: at most `start_concurrency` sandboxes
/// are provisioned together, the others wait in arrival order showing
/// distinct queue positions, and every one becomes ready (none fails);
/// then the caps refuse new sessions with a message naming them.
async fn burst_is_queued_in_order_and_capped(db: &Db) {
    let store = Store::open(&db.url("burst")).await.unwrap();
    let (class, students) = world(&store, 40, 100).await;
    for s in &students {
        store.enrol(&class, s).await.unwrap();
    }
    let fake = Arc::new(Fake::new(Duration::from_millis(150)));
    let m = Manager::new(
        store.clone(),
        fake.clone(),
        ManagerConfig {
            start_concurrency: 3,
            caps: cubby_caas::sessions::admission::Caps {
                per_class: Some(40),
                total: Some(41),
            },
            ..cfg("burst")
        },
    )
    .await
    .unwrap();
    let mut ids = Vec::new();
    for s in &students {
        ids.push(m.start(&class, s, s).await.unwrap().id);
    }
    // While the burst drains, the waiting ones have distinct positions
    // 1..=queued, and a session's position only moves forward.
    let mut seen_queue = false;
    let mut checked_state = false;
    let mut last: std::collections::HashMap<String, usize> = Default::default();
    for _ in 0..4000 {
        let mut pos: Vec<usize> = Vec::new();
        for id in &ids {
            if let Some(p) = m.admission.position(id) {
                if let Some(before) = last.insert(id.clone(), p) {
                    assert!(p <= before, "{id} moved back from {before} to {p}");
                }
                pos.push(p);
                if !checked_state && p > 3 {
                    // Far enough back to be still waiting when read.
                    let s = m.with_position(store.session(id).await.unwrap());
                    assert_eq!(s.state, State::Requested, "a queued session is requested");
                    assert!(s.queue_position.is_some(), "{s:?}");
                    checked_state = true;
                }
            }
        }
        pos.sort();
        if pos.len() > 1 {
            seen_queue = true;
            pos.dedup();
            assert_eq!(
                pos.len(),
                *pos.last().unwrap(),
                "positions not distinct: {pos:?}"
            );
        }
        if m.admission.stats().queued == 0 && m.admission.stats().provisioning == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(checked_state, "no queued session was read back");
    assert!(seen_queue, "40 starts with 3 slots never queued");
    for id in &ids {
        assert_eq!(settled(&m, id).await.state, State::Ready);
    }
    assert!(fake.max_starting.load(Ordering::SeqCst) <= 3);
    assert_eq!(fake.creates.load(Ordering::SeqCst), 40);
    let st = m.admission.stats();
    assert_eq!((st.queued, st.provisioning, st.admitted), (0, 0, 40));
    // The same, as Prometheus sees it.
    let text = cubby_caas::metrics::render(&m).await.unwrap();
    for line in [
        "cubby_sessions{state=\"ready\"} 40",
        "cubby_sessions{state=\"failed\"} 0",
        "cubby_admission_queue_length 0",
        "cubby_admission_slots 3",
        "cubby_admission_wait_seconds_count 40",
        "cubby_provision_seconds_count 40",
        "cubby_provision_seconds_bucket{le=\"+Inf\"} 40",
        "cubby_provision_failures_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
    assert!(cubby_caas::metrics::ready(&m).await.is_ok());
    // The class cap (40) is reached: a 41st student is refused, named.
    let extra = store
        .create_user("s-extra", Role::Student, "x")
        .await
        .unwrap();
    store.enrol(&class, &extra.id).await.unwrap();
    match m.start(&class, &extra.id, &extra.id).await {
        Err(Error::RateLimited(msg)) => {
            assert!(msg.contains("class c1") && msg.contains("40"), "{msg}")
        }
        other => panic!("expected the class cap, got {other:?}"),
    }
    // Pressing start again on a running session is not a new sandbox.
    assert_eq!(
        m.start(&class, &students[0], &students[0])
            .await
            .unwrap()
            .id,
        ids[0]
    );
}

/// A graceful shutdown finishes the provisioning in progress, starts
/// nothing new and stops no sandbox; the next start of the service drives
/// the sessions that were still queued.
async fn drain_finishes_work_and_keeps_sandboxes(db: &Db) {
    let store = Store::open(&db.url("drain")).await.unwrap();
    let (class, students) = world(&store, 8, 30).await;
    for s in &students {
        store.enrol(&class, s).await.unwrap();
    }
    let fake = Arc::new(Fake::new(Duration::from_millis(300)));
    let m = Manager::new(
        store.clone(),
        fake.clone(),
        ManagerConfig {
            start_concurrency: 2,
            ..cfg("drain-a")
        },
    )
    .await
    .unwrap();
    let mut ids = Vec::new();
    for s in &students {
        ids.push(m.start(&class, s, s).await.unwrap().id);
    }
    while m.admission.stats().provisioning == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(m.drain(Duration::from_secs(20)).await, 0);
    let mut ready = 0;
    for id in &ids {
        match store.session(id).await.unwrap().state {
            State::Ready => ready += 1,
            State::Requested => {}
            other => panic!("{id}: {other:?} after a drain"),
        }
    }
    assert!((1..8).contains(&ready), "ready after the drain: {ready}");
    assert_eq!(fake.running(), ready, "a shutdown stops no sandbox");
    // The next start of the service (another instance id) resumes them.
    let m2 = Manager::new(store.clone(), fake.clone(), cfg("drain-b"))
        .await
        .unwrap();
    m2.reconcile().await.unwrap();
    for id in &ids {
        assert_eq!(settled(&m2, id).await.state, State::Ready);
    }
    assert_eq!(fake.running(), 8);
    assert_eq!(fake.creates.load(Ordering::SeqCst), 8);
}

async fn scenarios(db: Db) {
    burst_is_queued_in_order_and_capped(&db).await;
    drain_finishes_work_and_keeps_sandboxes(&db).await;
    max_length_stops_sessions(&db).await;
    capacity_is_atomic(&db).await;
    starts_are_idempotent_and_oom_shows(&db).await;
    crash_recovery_and_leases(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    scenarios(Db::Sqlite(tempfile::tempdir().unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    scenarios(Db::Pg(Postgres::start(), Default::default())).await;
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_untouched() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("notes.db");
    let junk = b"these are my notes, not a database\n".repeat(200);
    std::fs::write(&p, &junk).unwrap();
    let e = match Store::open(&format!("sqlite://{}", p.display())).await {
        Ok(_) => panic!("opened a text file as a database"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("not a usable SQLite database") && e.contains("notes.db"),
        "{e}"
    );
    assert_eq!(std::fs::read(&p).unwrap(), junk);
    let e = Store::open("mysql://x").await.err().unwrap().to_string();
    assert!(e.contains("sqlite://"), "{e}");
    // Reopening a good database applies no migration twice.
    let good = format!("sqlite://{}", d.path().join("ok.db").display());
    Store::open(&good).await.unwrap();
    Store::open(&good).await.unwrap();
}
