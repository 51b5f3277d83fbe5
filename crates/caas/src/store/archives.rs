//! Archives of workspaces (rows exist only for verified objects), the
//! archive-pending back-off, and what a new session's workspace starts from.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::sessions::{Session, State};
use super::{new_id, now, Store};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize)]
pub struct Archive {
    pub id: String,
    pub class_id: String,
    pub student_id: String,
    pub session_id: String,
    /// "final" (the session's end) or "checkpoint".
    pub kind: String,
    pub object_key: String,
    /// Compressed size in bytes and sha256 of the stored object.
    pub size: i64,
    pub sha256: String,
    pub created_at: i64,
}

const COLS: &str =
    "id, class_id, student_id, session_id, kind, object_key, size, sha256, created_at";

fn from_row(r: &AnyRow) -> Result<Archive> {
    Ok(Archive {
        id: r.try_get("id")?,
        class_id: r.try_get("class_id")?,
        student_id: r.try_get("student_id")?,
        session_id: r.try_get("session_id")?,
        kind: r.try_get("kind")?,
        object_key: r.try_get("object_key")?,
        size: r.try_get("size")?,
        sha256: r.try_get("sha256")?,
        created_at: r.try_get("created_at")?,
    })
}

/// Which archives to list.
pub enum ArchiveFilter<'a> {
    All,
    Class(&'a str),
    ClassStudent(&'a str, &'a str),
    Student(&'a str),
    /// Archives of classes this teacher teaches.
    Teacher(&'a str),
}

/// Seconds until the next archive attempt after `attempts` failures:
/// 5, 10, 20 ... capped at 5 minutes.
pub fn backoff_secs(attempts: i64) -> i64 {
    (5i64 << attempts.clamp(0, 6)).min(300)
}

impl Store {
    pub async fn insert_archive(&self, a: &Archive) -> Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO archives ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        )))
        .bind(&a.id)
        .bind(&a.class_id)
        .bind(&a.student_id)
        .bind(&a.session_id)
        .bind(&a.kind)
        .bind(&a.object_key)
        .bind(a.size)
        .bind(&a.sha256)
        .bind(a.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn archive(&self, id: &str) -> Result<Archive> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM archives WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::NotFound(format!("archive {id}")))?;
        from_row(&r)
    }

    /// The session's final archive, if it was made (and verified).
    pub async fn final_archive(&self, session_id: &str) -> Result<Option<Archive>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM archives WHERE session_id = $1 AND kind = 'final'"
        )))
        .bind(session_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
    }

    /// A session's checkpoints, newest first.
    pub async fn checkpoints(&self, session_id: &str) -> Result<Vec<Archive>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM archives WHERE session_id = $1 AND kind = 'checkpoint'
             ORDER BY created_at DESC, object_key DESC"
        )))
        .bind(session_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(from_row)
        .collect()
    }

    pub async fn latest_checkpoint_at(&self, session_id: &str) -> Result<Option<i64>> {
        Ok(self
            .checkpoints(session_id)
            .await?
            .first()
            .map(|a| a.created_at))
    }

    pub async fn delete_archive(&self, id: &str) -> Result<()> {
        // A teacher's restore choice pointing at it falls back to "latest".
        sqlx::query("DELETE FROM restore_choices WHERE archive_id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM archives WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The newest archive of (class, student), final or checkpoint.
    pub async fn latest_archive(
        &self,
        class_id: &str,
        student_id: &str,
    ) -> Result<Option<Archive>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM archives WHERE class_id = $1 AND student_id = $2
             ORDER BY created_at DESC, kind DESC, id DESC LIMIT 1"
        )))
        .bind(class_id)
        .bind(student_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
    }

    pub async fn archives(&self, filter: ArchiveFilter<'_>) -> Result<Vec<Archive>> {
        let (cond, binds): (&str, Vec<&str>) = match filter {
            ArchiveFilter::All => ("1 = 1", vec![]),
            ArchiveFilter::Class(c) => ("class_id = $1", vec![c]),
            ArchiveFilter::ClassStudent(c, s) => ("class_id = $1 AND student_id = $2", vec![c, s]),
            ArchiveFilter::Student(s) => ("student_id = $1", vec![s]),
            ArchiveFilter::Teacher(t) => (
                "class_id IN (SELECT class_id FROM class_teachers WHERE user_id = $1)",
                vec![t],
            ),
        };
        let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM archives WHERE {cond} ORDER BY created_at, id"
        )));
        for b in binds {
            q = q.bind(b);
        }
        q.fetch_all(&self.pool)
            .await?
            .iter()
            .map(from_row)
            .collect()
    }

    /// Stopping -> archive pending, with the reason and the next attempt's
    /// time (back-off). `false` if the session was not stopping.
    pub async fn mark_archive_pending(&self, id: &str, reason: &str) -> Result<bool> {
        let s = self.session(id).await?;
        let t = now();
        let n = sqlx::query(
            "UPDATE sessions SET state = 'archive_pending', reason = $1, archive_attempts = archive_attempts + 1,
             retry_at = $2, owner = NULL, lease_until = 0, updated_at = $3
             WHERE id = $4 AND state = 'stopping'",
        )
        .bind(format!("archive pending: {reason}"))
        .bind(t + backoff_secs(s.archive_attempts))
        .bind(t)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Archive-pending sessions whose next attempt is due (`force`: all).
    pub async fn archive_pending(&self, due_only: bool) -> Result<Vec<Session>> {
        let all = self
            .sessions(super::sessions::SessionFilter::All, true)
            .await?;
        let t = now();
        Ok(all
            .into_iter()
            .filter(|s| s.state == State::ArchivePending && (!due_only || s.retry_at <= t))
            .collect())
    }

    /// Archive pending -> stopping (the stopping driver archives again).
    pub async fn retry_archive(&self, id: &str) -> Result<bool> {
        self.transition(id, &[State::ArchivePending], State::Stopping, None, None)
            .await
    }

    /// Clears the pending reason once archived.
    pub async fn clear_reason(&self, id: &str) -> Result<()> {
        sqlx::query(
            "UPDATE sessions SET reason = NULL WHERE id = $1 AND reason LIKE 'archive pending:%'",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_reason(&self, id: &str, reason: &str) -> Result<()> {
        sqlx::query("UPDATE sessions SET reason = $1 WHERE id = $2")
            .bind(reason)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A teacher's choice for the student's next session: an archive of
    /// this class, or `None` for an empty workspace.
    pub async fn set_restore_choice(
        &self,
        class_id: &str,
        student_id: &str,
        archive_id: Option<&str>,
        chosen_by: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO restore_choices (class_id, student_id, archive_id, chosen_by, created_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (class_id, student_id) DO UPDATE SET archive_id = $3, chosen_by = $4, created_at = $5",
        )
        .bind(class_id)
        .bind(student_id)
        .bind(archive_id)
        .bind(chosen_by)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// `Some(choice)` if a teacher chose (choice `None` = empty).
    pub async fn restore_choice(
        &self,
        class_id: &str,
        student_id: &str,
    ) -> Result<Option<Option<String>>> {
        Ok(sqlx::query(
            "SELECT archive_id FROM restore_choices WHERE class_id = $1 AND student_id = $2",
        )
        .bind(class_id)
        .bind(student_id)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| r.try_get::<Option<String>, _>(0))
        .transpose()?)
    }

    /// Records once what the session's workspace starts from: `Some(id)`
    /// -> 'pending' (restore that archive), `None` -> 'none'. The teacher's
    /// choice, if any, is consumed. Returns the session as decided.
    pub async fn decide_restore(&self, s: &Session, from: Option<&str>) -> Result<Session> {
        let state = if from.is_some() { "pending" } else { "none" };
        sqlx::query(
            "UPDATE sessions SET restore_from = $1, restore_state = $2 WHERE id = $3 AND restore_state = 'undecided'",
        )
        .bind(from)
        .bind(state)
        .bind(&s.id)
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM restore_choices WHERE class_id = $1 AND student_id = $2")
            .bind(&s.class_id)
            .bind(&s.student_id)
            .execute(&self.pool)
            .await?;
        self.session(&s.id).await
    }

    /// The workspace volume existed already: it is kept, nothing restored.
    pub async fn restore_kept(&self, id: &str) -> Result<Session> {
        sqlx::query("UPDATE sessions SET restore_state = 'kept' WHERE id = $1 AND restore_state = 'undecided'")
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.session(id).await
    }

    pub async fn restore_done(&self, id: &str) -> Result<()> {
        sqlx::query("UPDATE sessions SET restore_state = 'done' WHERE id = $1 AND restore_state = 'pending'")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// A new archive row (id and time filled in).
pub fn new_archive(
    s: &Session,
    kind: &str,
    object_key: String,
    size: u64,
    sha256: String,
) -> Archive {
    Archive {
        id: new_id(),
        class_id: s.class_id.clone(),
        student_id: s.student_id.clone(),
        session_id: s.id.clone(),
        kind: kind.into(),
        object_key,
        size: size as i64,
        sha256,
        created_at: now(),
    }
}
