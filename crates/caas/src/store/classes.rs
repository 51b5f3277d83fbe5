//! Classes, their teachers and enrolments. Capacity is enforced by one
//! conditional UPDATE of a counter, atomic on SQLite and PostgreSQL alike.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{new_id, now, Store};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize)]
pub struct Class {
    pub id: String,
    pub name: String,
    pub code: String,
    pub capacity: i64,
    pub enrolled: i64,
    pub join_code: String,
    pub template_id: Option<String>,
    pub created_by: String,
    pub created_at: i64,
}

const COLS: &str =
    "id, name, code, capacity, enrolled, join_code, template_id, created_by, created_at";

fn from_row(r: &AnyRow) -> Result<Class> {
    Ok(Class {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        code: r.try_get("code")?,
        capacity: r.try_get("capacity")?,
        enrolled: r.try_get("enrolled")?,
        join_code: r.try_get("join_code")?,
        template_id: r.try_get("template_id")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
    })
}

/// A join code students can type: 10 characters, no look-alikes.
fn join_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    crate::auth::random_bytes::<10>()
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect()
}

impl Store {
    pub async fn create_class(
        &self,
        name: &str,
        code: &str,
        capacity: i64,
        template_id: Option<&str>,
        teacher_id: &str,
    ) -> Result<Class> {
        if name.trim().is_empty() || name.len() > 200 {
            return Err(Error::Invalid("class name: give 1-200 characters".into()));
        }
        crate::store::users::check_username(code).map_err(|_| {
            Error::Invalid(format!(
                "class code {code:?}: use 1-64 characters among a-z A-Z 0-9 . _ - @"
            ))
        })?;
        if !(1..=10_000).contains(&capacity) {
            return Err(Error::Invalid(format!(
                "capacity {capacity}: use 1 to 10000"
            )));
        }
        let c = Class {
            id: new_id(),
            name: name.to_string(),
            code: code.to_string(),
            capacity,
            enrolled: 0,
            join_code: join_code(),
            template_id: template_id.map(str::to_string),
            created_by: teacher_id.to_string(),
            created_at: now(),
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO classes ({COLS}) VALUES ($1, $2, $3, $4, 0, $5, $6, $7, $8)"
        )))
        .bind(&c.id)
        .bind(&c.name)
        .bind(&c.code)
        .bind(c.capacity)
        .bind(&c.join_code)
        .bind(&c.template_id)
        .bind(&c.created_by)
        .bind(c.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if crate::error::is_unique_violation(&e) {
                Error::Conflict(format!("a class with code {code} already exists"))
            } else {
                e.into()
            }
        })?;
        sqlx::query("INSERT INTO class_teachers (class_id, user_id) VALUES ($1, $2)")
            .bind(&c.id)
            .bind(teacher_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(c)
    }

    pub async fn class(&self, id: &str) -> Result<Class> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM classes WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::NotFound(format!("class {id}")))?;
        from_row(&r)
    }

    /// All classes, or those `teacher_id` teaches.
    pub async fn classes(&self, teacher_id: Option<&str>) -> Result<Vec<Class>> {
        let rows = match teacher_id {
            None => sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLS} FROM classes ORDER BY code"))).fetch_all(&self.pool).await?,
            Some(t) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLS} FROM classes WHERE id IN (SELECT class_id FROM class_teachers WHERE user_id = $1) ORDER BY code"
                )))
                .bind(t)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(from_row).collect()
    }

    /// Classes a student is enrolled in.
    pub async fn classes_of_student(&self, student_id: &str) -> Result<Vec<Class>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM classes WHERE id IN (SELECT class_id FROM enrolments WHERE user_id = $1) ORDER BY code"
        )))
        .bind(student_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(from_row)
        .collect()
    }

    pub async fn is_teacher_of(&self, class_id: &str, user_id: &str) -> Result<bool> {
        let n: i64 =
            sqlx::query("SELECT count(*) FROM class_teachers WHERE class_id = $1 AND user_id = $2")
                .bind(class_id)
                .bind(user_id)
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?;
        Ok(n > 0)
    }

    pub async fn is_enrolled(&self, class_id: &str, user_id: &str) -> Result<bool> {
        let n: i64 =
            sqlx::query("SELECT count(*) FROM enrolments WHERE class_id = $1 AND user_id = $2")
                .bind(class_id)
                .bind(user_id)
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?;
        Ok(n > 0)
    }

    pub async fn set_class_template(&self, class_id: &str, template_id: &str) -> Result<()> {
        sqlx::query("UPDATE classes SET template_id = $1 WHERE id = $2")
            .bind(template_id)
            .bind(class_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Enrols a student; `Ok(false)` when already enrolled. Capacity: the
    /// counter UPDATE comes first (it takes the write lock on both databases,
    /// and PostgreSQL re-checks its WHERE after waiting for a concurrent one).
    pub async fn enrol(&self, class_id: &str, user_id: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE classes SET enrolled = enrolled + 1 WHERE id = $1 AND enrolled < capacity",
        )
        .bind(class_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            drop(tx);
            let c = self.class(class_id).await?;
            if self.is_enrolled(class_id, user_id).await? {
                return Ok(false);
            }
            return Err(Error::Conflict(format!(
                "class {} is full ({} of {}): ask its teacher to raise the capacity",
                c.code, c.enrolled, c.capacity
            )));
        }
        let inserted = sqlx::query(
            "INSERT INTO enrolments (class_id, user_id, created_at) VALUES ($1, $2, $3)",
        )
        .bind(class_id)
        .bind(user_id)
        .bind(now())
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {
                tx.commit().await?;
                Ok(true)
            }
            // Already enrolled: the rollback returns the seat.
            Err(e) if crate::error::is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn class_by_join_code(&self, join_code: &str) -> Result<Class> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM classes WHERE join_code = $1"
        )))
        .bind(join_code)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::NotFound("a class with this join code".into()))?;
        from_row(&r)
    }

    /// The students of a class (id, username), by username.
    pub async fn students(&self, class_id: &str) -> Result<Vec<(String, String)>> {
        sqlx::query("SELECT u.id, u.username FROM enrolments e JOIN users u ON u.id = e.user_id WHERE e.class_id = $1 ORDER BY u.username")
            .bind(class_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }
}
