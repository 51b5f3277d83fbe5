//! Exam windows per class: when sessions may start, and when all of them
//! are collected (archived and removed).

use serde::Serialize;
use sqlx::Row;

use super::{now, Store};
use crate::error::Result;

#[derive(Debug, Clone, Serialize)]
pub struct Exam {
    pub class_id: String,
    /// Unix seconds.
    pub starts_at: i64,
    pub ends_at: i64,
    /// When the collection began (`None`: not yet).
    pub collected_at: Option<i64>,
    pub set_by: String,
}

fn from_row(r: &sqlx::any::AnyRow) -> Result<Exam> {
    Ok(Exam {
        class_id: r.try_get("class_id")?,
        starts_at: r.try_get("starts_at")?,
        ends_at: r.try_get("ends_at")?,
        collected_at: r.try_get("collected_at")?,
        set_by: r.try_get("set_by")?,
    })
}

impl Store {
    /// Sets (or moves) the class's exam window; a new window is collected
    /// again at its end.
    pub async fn set_exam(
        &self,
        class_id: &str,
        starts_at: i64,
        ends_at: i64,
        by: &str,
    ) -> Result<Exam> {
        sqlx::query(
            "INSERT INTO exams (class_id, starts_at, ends_at, collected_at, set_by) VALUES ($1, $2, $3, NULL, $4)
             ON CONFLICT (class_id) DO UPDATE SET starts_at = $2, ends_at = $3, collected_at = NULL, set_by = $4",
        )
        .bind(class_id)
        .bind(starts_at)
        .bind(ends_at)
        .bind(by)
        .execute(&self.pool)
        .await?;
        self.exam(class_id)
            .await?
            .ok_or_else(|| crate::error::Error::Internal(format!("exam of {class_id} vanished")))
    }

    pub async fn exam(&self, class_id: &str) -> Result<Option<Exam>> {
        sqlx::query("SELECT class_id, starts_at, ends_at, collected_at, set_by FROM exams WHERE class_id = $1")
            .bind(class_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(from_row)
            .transpose()
    }

    /// Exams that start in `(from, until]` (pre-pull of their images).
    pub async fn exams_starting(&self, from: i64, until: i64) -> Result<Vec<Exam>> {
        sqlx::query(
            "SELECT class_id, starts_at, ends_at, collected_at, set_by FROM exams \
             WHERE starts_at > $1 AND starts_at <= $2",
        )
        .bind(from)
        .bind(until)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(from_row)
        .collect()
    }

    /// Exams whose end has passed.
    pub async fn ended_exams(&self) -> Result<Vec<Exam>> {
        sqlx::query("SELECT class_id, starts_at, ends_at, collected_at, set_by FROM exams WHERE ends_at <= $1")
            .bind(now())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(from_row)
            .collect()
    }

    /// Exams whose end has passed and whose collection nobody began; each
    /// returned one is claimed by this caller (compare-and-set).
    pub async fn claim_ended_exams(&self) -> Result<Vec<Exam>> {
        let t = now();
        let due = sqlx::query(
            "SELECT class_id, starts_at, ends_at, collected_at, set_by FROM exams WHERE ends_at <= $1 AND collected_at IS NULL",
        )
        .bind(t)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in &due {
            let e = from_row(r)?;
            let n = sqlx::query(
                "UPDATE exams SET collected_at = $1 WHERE class_id = $2 AND collected_at IS NULL AND ends_at = $3",
            )
            .bind(t)
            .bind(&e.class_id)
            .bind(e.ends_at)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if n == 1 {
                out.push(Exam {
                    collected_at: Some(t),
                    ..e
                });
            }
        }
        Ok(out)
    }
}
