//! Sessions: a persisted state machine. Every transition is a
//! compare-and-set UPDATE (`WHERE state = <expected>`), so two instances of
//! the service, or a retry after a crash, can never both drive one session.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{new_id, now, Store};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Requested,
    Starting,
    Ready,
    Stopping,
    Stopped,
    Failed,
    /// Ended, but its workspace is not archived yet (the object store or
    /// the engine failed): nothing is deleted, retried with back-off.
    #[serde(rename = "archive_pending")]
    ArchivePending,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Requested => "requested",
            State::Starting => "starting",
            State::Ready => "ready",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Failed => "failed",
            State::ArchivePending => "archive_pending",
        }
    }

    pub fn parse(s: &str) -> Result<State> {
        Ok(match s {
            "requested" => State::Requested,
            "starting" => State::Starting,
            "ready" => State::Ready,
            "stopping" => State::Stopping,
            "stopped" => State::Stopped,
            "failed" => State::Failed,
            "archive_pending" => State::ArchivePending,
            _ => return Err(Error::Internal(format!("stored session state {s:?}"))),
        })
    }

    /// Active sessions hold the (class, student) slot.
    pub fn is_active(self) -> bool {
        !matches!(self, State::Stopped | State::Failed)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Session {
    pub id: String,
    pub class_id: String,
    pub student_id: String,
    pub template_id: String,
    pub state: State,
    /// Why it failed (e.g. "out of memory").
    pub reason: Option<String>,
    pub sandbox: String,
    pub address: Option<String>,
    #[serde(skip)]
    pub owner: Option<String>,
    #[serde(skip)]
    pub lease_until: i64,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// Failed archive attempts so far, and when the next one is due.
    pub archive_attempts: i64,
    pub retry_at: i64,
    /// The archive the workspace starts from (see `restore_state`).
    pub restore_from: Option<String>,
    pub restore_state: String,
    /// The idle timer, when the template has one (filled in by the manager
    /// when the session is shown; not stored).
    #[serde(flatten)]
    pub idle: Option<crate::sessions::culling::IdleInfo>,
    /// 1-based place in the admission queue while waiting to be provisioned
    /// (filled in by the session manager, not stored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<usize>,
}

const COLS: &str = "id, class_id, student_id, template_id, state, reason, sandbox, address, owner, lease_until, created_by, created_at, updated_at, archive_attempts, retry_at, restore_from, restore_state";

/// The states holding the (class, student) slot, as SQL.
const ACTIVE_SQL: &str = "('requested', 'starting', 'ready', 'stopping', 'archive_pending')";

fn from_row(r: &AnyRow) -> Result<Session> {
    Ok(Session {
        id: r.try_get("id")?,
        class_id: r.try_get("class_id")?,
        student_id: r.try_get("student_id")?,
        template_id: r.try_get("template_id")?,
        state: State::parse(&r.try_get::<String, _>("state")?)?,
        reason: r.try_get("reason")?,
        sandbox: r.try_get("sandbox")?,
        address: r.try_get("address")?,
        owner: r.try_get("owner")?,
        lease_until: r.try_get("lease_until")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        archive_attempts: r.try_get("archive_attempts")?,
        retry_at: r.try_get("retry_at")?,
        restore_from: r.try_get("restore_from")?,
        restore_state: r.try_get("restore_state")?,
        idle: None,
        queue_position: None,
    })
}

/// Which sessions to list.
pub enum SessionFilter<'a> {
    All,
    Class(&'a str),
    Student(&'a str),
    /// Sessions in classes this teacher teaches.
    Teacher(&'a str),
}

impl Store {
    /// Creates a `requested` session for (class, student), or returns the
    /// active one (`false`): the partial unique index decides, so pressing
    /// start twice, even on two instances, never makes two.
    pub async fn request_session(
        &self,
        class_id: &str,
        student_id: &str,
        template_id: &str,
        created_by: &str,
    ) -> Result<(Session, bool)> {
        let id = new_id();
        let t = now();
        let inserted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO sessions ({COLS}) VALUES ($1, $2, $3, $4, 'requested', NULL, $5, NULL, NULL, 0, $6, $7, $7, 0, 0, NULL, 'undecided')"
        )))
        .bind(&id)
        .bind(class_id)
        .bind(student_id)
        .bind(template_id)
        .bind(crate::template::sandbox_name(&id))
        .bind(created_by)
        .bind(t)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok((self.session(&id).await?, true)),
            Err(e) if crate::error::is_unique_violation(&e) => {
                let s = self
                    .active_session(class_id, student_id)
                    .await?
                    // It ended between our insert and this read: try once more.
                    .ok_or_else(|| {
                        Error::Conflict("the session changed state meanwhile: retry".into())
                    })?;
                Ok((s, false))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A warm-pool member claimed for a starting session: the row names
    /// it as the session's sandbox (compare-and-set on the derived name, so
    /// a session claims at most one).
    pub async fn claim_sandbox(&self, id: &str, member: &str) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE sessions SET sandbox = $1 WHERE id = $2 AND sandbox = $3 AND state = 'starting'",
        )
        .bind(member)
        .bind(id)
        .bind(crate::template::sandbox_name(id))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// A warm-pool claim given up: the session goes back to its derived
    /// sandbox name and, if its restore was done into the discarded member,
    /// restores again.
    pub async fn drop_pool_claim(&self, id: &str) -> Result<Session> {
        sqlx::query(
            "UPDATE sessions SET sandbox = $1, restore_state = CASE WHEN restore_state = 'done' \
             AND restore_from IS NOT NULL THEN 'pending' ELSE restore_state END WHERE id = $2",
        )
        .bind(crate::template::sandbox_name(id))
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.session(id).await
    }

    pub async fn session(&self, id: &str) -> Result<Session> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM sessions WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::NotFound(format!("session {id}")))?;
        from_row(&r)
    }

    pub async fn active_session(
        &self,
        class_id: &str,
        student_id: &str,
    ) -> Result<Option<Session>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM sessions WHERE class_id = $1 AND student_id = $2 AND state IN {ACTIVE_SQL}"
        )))
        .bind(class_id)
        .bind(student_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
    }

    pub async fn session_by_sandbox(&self, sandbox: &str) -> Result<Option<Session>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM sessions WHERE sandbox = $1"
        )))
        .bind(sandbox)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
    }

    pub async fn sessions(
        &self,
        filter: SessionFilter<'_>,
        active_only: bool,
    ) -> Result<Vec<Session>> {
        let active = if active_only {
            format!(" AND state IN {ACTIVE_SQL}")
        } else {
            String::new()
        };
        let q = match filter {
            SessionFilter::All => format!("SELECT {COLS} FROM sessions WHERE 1 = 1{active} ORDER BY created_at, id"),
            SessionFilter::Class(_) => format!("SELECT {COLS} FROM sessions WHERE class_id = $1{active} ORDER BY created_at, id"),
            SessionFilter::Student(_) => format!("SELECT {COLS} FROM sessions WHERE student_id = $1{active} ORDER BY created_at, id"),
            SessionFilter::Teacher(_) => format!(
                "SELECT {COLS} FROM sessions WHERE class_id IN (SELECT class_id FROM class_teachers WHERE user_id = $1){active} ORDER BY created_at, id"
            ),
        };
        let mut query = sqlx::query(sqlx::AssertSqlSafe(q));
        match filter {
            SessionFilter::All => {}
            SessionFilter::Class(x) | SessionFilter::Student(x) | SessionFilter::Teacher(x) => {
                query = query.bind(x)
            }
        }
        query
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(from_row)
            .collect()
    }

    /// Sessions in a transitional state (requested, starting, stopping).
    pub async fn unfinished_sessions(&self) -> Result<Vec<Session>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM sessions WHERE state IN ('requested', 'starting', 'stopping') ORDER BY created_at, id"
        )))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(from_row)
        .collect()
    }

    /// Compare-and-set: moves the session from `from` to `to` and takes the
    /// lease for `owner` if the session is in `from` and its lease is free
    /// (no owner, ours, or expired). `true` when this caller won.
    pub async fn claim(
        &self,
        id: &str,
        from: State,
        to: State,
        owner: &str,
        lease_secs: i64,
    ) -> Result<bool> {
        let t = now();
        let n = sqlx::query(
            "UPDATE sessions SET state = $1, owner = $2, lease_until = $3, updated_at = $4
             WHERE id = $5 AND state = $6 AND (owner IS NULL OR owner = $2 OR lease_until < $4)",
        )
        .bind(to.as_str())
        .bind(owner)
        .bind(t + lease_secs)
        .bind(t)
        .bind(id)
        .bind(from.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n == 1 {
            self.epochs.bump_sessions();
        }
        Ok(n == 1)
    }

    /// Compare-and-set of the state alone (a given reason is kept through
    /// later transitions) (no lease check): used by the
    /// lease holder to finish a transition and by requests (stop) that
    /// hand a session over to whoever runs it next.
    pub async fn transition(
        &self,
        id: &str,
        from: &[State],
        to: State,
        reason: Option<&str>,
        address: Option<&str>,
    ) -> Result<bool> {
        let mut q = String::from("UPDATE sessions SET state = $1, reason = COALESCE($2, reason), updated_at = $3, owner = NULL, lease_until = 0");
        if address.is_some() {
            q.push_str(", address = $5");
        }
        let states: Vec<String> = from.iter().map(|s| format!("'{}'", s.as_str())).collect();
        q.push_str(&format!(
            " WHERE id = $4 AND state IN ({})",
            states.join(", ")
        ));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(to.as_str())
            .bind(reason)
            .bind(now())
            .bind(id);
        if let Some(a) = address {
            query = query.bind(a);
        }
        let moved = query.execute(&self.pool).await?.rows_affected() == 1;
        if moved {
            self.epochs.bump_sessions();
        }
        Ok(moved)
    }
}
