//! The service's state: SQLite (default) or PostgreSQL through one code path
//! (sqlx's `AnyPool`, `$N` placeholders, no macros). Migrations run at open.

pub mod archives;
pub mod audit;
pub mod classes;
pub mod exams;
pub mod logins;
mod migrations;
pub mod sessions;
pub mod templates;
pub mod users;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pub pool: AnyPool,
    pub kind: DbKind,
    /// Bumped by this process's writes that can change who gets through or
    /// where to: in-memory caches above the store (the proxy's routes, live
    /// logins) drop what they hold when it moves.
    pub epochs: std::sync::Arc<Epochs>,
}

/// Change counters, see [`Store::epochs`].
#[derive(Default, Debug)]
pub struct Epochs {
    /// A session changed state or address.
    pub sessions: std::sync::atomic::AtomicU64,
    /// A login was revoked or a user disabled.
    pub logins: std::sync::atomic::AtomicU64,
}

impl Epochs {
    pub fn bump_sessions(&self) {
        self.sessions
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn bump_logins(&self) {
        self.logins
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

/// A random 128-bit id, hex.
pub fn new_id() -> String {
    hex(&crate::auth::random_bytes::<16>())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The URL of the default database under `caas_dir`.
pub fn default_url(caas_dir: &std::path::Path) -> String {
    format!("sqlite://{}", caas_dir.join("caas.db").display())
}

impl Store {
    /// Connects, checks the database is one, and applies migrations.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let (kind, connect_url) = if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() || path.contains('?') {
                return Err(Error::Invalid(format!(
                    "--database {url}: give a file path, e.g. sqlite:///var/lib/cubby/caas/caas.db"
                )));
            }
            check_sqlite_header(std::path::Path::new(path), url)?;
            // rwc: create the file when missing.
            (DbKind::Sqlite, format!("sqlite://{path}?mode=rwc"))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (DbKind::Postgres, url.to_string())
        } else {
            return Err(Error::Invalid(format!(
                "--database {}: use sqlite://PATH or postgres://USER@HOST:PORT/DB",
                redact(url)
            )));
        };
        let what = redact(url);
        let sqlite = kind == DbKind::Sqlite;
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 10 })
            // WAL + synchronous=NORMAL: a commit survives a crash of the
            // process (kill -9) at once; only a power loss may drop the last
            // commits (never corrupting the file). FULL costs an fsync per
            // commit, seconds over an up-class. Per connection in SQLite.
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        use sqlx::Executor;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                    }
                    Ok(())
                })
            })
            .acquire_timeout(Duration::from_secs(10))
            .connect(&connect_url)
            .await
            .map_err(|e| Error::Database(format!("cannot open {what}: {e}")))?;
        let store = Store {
            pool,
            kind,
            epochs: Default::default(),
        };
        if kind == DbKind::Sqlite {
            // The first real read: a file that is not a database fails here,
            // before anything is written.
            sqlx::query("SELECT count(*) FROM sqlite_master")
                .fetch_one(&store.pool)
                .await
                .map_err(|e| {
                    Error::Database(format!(
                        "{what} is not a usable SQLite database ({e}): move it away or point --database elsewhere"
                    ))
                })?;
            // WAL: readers never block the writer; persistent in the file.
            sqlx::query("PRAGMA journal_mode=WAL")
                .fetch_optional(&store.pool)
                .await
                .map_err(|e| Error::Database(format!("{what}: set WAL mode: {e}")))?;
        }
        store
            .migrate()
            .await
            .map_err(|e| Error::Database(format!("{what}: migrations: {e}")))?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
            .execute(&self.pool)
            .await?;
        for (version, statements) in migrations::MIGRATIONS {
            let done: i64 =
                sqlx::query("SELECT count(*) FROM schema_migrations WHERE version = $1")
                    .bind(*version)
                    .fetch_one(&self.pool)
                    .await?
                    .try_get(0)?;
            if done > 0 {
                continue;
            }
            let mut tx = self.pool.begin().await?;
            // The version row first: a second instance migrating at the same
            // moment fails on the primary key and rolls back its copy.
            let claimed =
                sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                    .bind(*version)
                    .bind(now())
                    .execute(&mut *tx)
                    .await;
            if let Err(e) = claimed {
                if crate::error::is_unique_violation(&e) {
                    continue;
                }
                return Err(e.into());
            }
            for s in *statements {
                sqlx::query(*s).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }

    /// A setting, created with `init()` when absent (first writer wins).
    pub async fn setting_or_init(
        &self,
        name: &str,
        init: impl FnOnce() -> String,
    ) -> Result<String> {
        if let Some(v) = self.setting(name).await? {
            return Ok(v);
        }
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(init())
        .execute(&self.pool)
        .await?;
        self.setting(name)
            .await?
            .ok_or_else(|| Error::Internal(format!("setting {name} vanished")))
    }

    pub async fn setting(&self, name: &str) -> Result<Option<String>> {
        Ok(sqlx::query("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get::<String, _>(0))
            .transpose()?)
    }
}

/// A non-empty file must start with SQLite's header; anything else is
/// refused before a connection (or a WAL file) touches it.
fn check_sqlite_header(path: &std::path::Path, url: &str) -> Result<()> {
    use std::io::Read;
    let mut head = [0u8; 16];
    let n = match std::fs::File::open(path) {
        Ok(mut f) => f.read(&mut head).unwrap_or(0),
        Err(_) => return Ok(()), // missing: created on open
    };
    if n > 0 && head[..n] != b"SQLite format 3\0"[..n] {
        return Err(Error::Database(format!(
            "{url} is not a usable SQLite database (no SQLite header): move it away or point --database elsewhere"
        )));
    }
    Ok(())
}

/// The URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..s + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_hides_the_password() {
        assert_eq!(
            super::redact("postgres://u:secret@127.0.0.1:5/db"),
            "postgres://u:***@127.0.0.1:5/db"
        );
        assert_eq!(super::redact("sqlite:///x/y.db"), "sqlite:///x/y.db");
    }
}
