//! Accounts: role, argon2id hash, disabled flag.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{new_id, now, Store};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Teacher,
    Student,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Teacher => "teacher",
            Role::Student => "student",
        }
    }

    pub fn parse(s: &str) -> Result<Role> {
        match s {
            "admin" => Ok(Role::Admin),
            "teacher" => Ok(Role::Teacher),
            "student" => Ok(Role::Student),
            _ => Err(Error::Invalid(format!(
                "role {s:?}: use admin, teacher or student"
            ))),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: String,
    pub username: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: i64,
}

const COLS: &str = "id, username, role, disabled, created_at";

fn from_row(r: &AnyRow) -> Result<User> {
    Ok(User {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        role: Role::parse(&r.try_get::<String, _>("role")?)?,
        disabled: r.try_get::<i64, _>("disabled")? != 0,
        created_at: r.try_get("created_at")?,
    })
}

/// Usernames: what a CSV or a login form may carry, nothing that needs escaping.
pub fn check_username(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "username {name:?}: use 1-64 characters among a-z A-Z 0-9 . _ - @"
        )))
    }
}

impl Store {
    /// Creates a user; `password_hash` comes from `auth::hash_password`.
    pub async fn create_user(
        &self,
        username: &str,
        role: Role,
        password_hash: &str,
    ) -> Result<User> {
        check_username(username)?;
        let id = new_id();
        let created_at = now();
        sqlx::query(
            "INSERT INTO users (id, username, role, password_hash, disabled, created_at) VALUES ($1, $2, $3, $4, 0, $5)",
        )
        .bind(&id)
        .bind(username)
        .bind(role.as_str())
        .bind(password_hash)
        .bind(created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if crate::error::is_unique_violation(&e) {
                Error::Conflict(format!("user {username} already exists"))
            } else {
                e.into()
            }
        })?;
        Ok(User {
            id,
            username: username.to_string(),
            role,
            disabled: false,
            created_at,
        })
    }

    /// Creates several users in one transaction: all or none.
    pub async fn create_users(&self, users: &[(String, Role, String)]) -> Result<Vec<User>> {
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::new();
        for (username, role, hash) in users {
            check_username(username)?;
            let u = User {
                id: new_id(),
                username: username.clone(),
                role: *role,
                disabled: false,
                created_at: now(),
            };
            sqlx::query(
                "INSERT INTO users (id, username, role, password_hash, disabled, created_at) VALUES ($1, $2, $3, $4, 0, $5)",
            )
            .bind(&u.id)
            .bind(username)
            .bind(role.as_str())
            .bind(hash)
            .bind(u.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if crate::error::is_unique_violation(&e) {
                    Error::Conflict(format!("user {username} already exists: nothing was imported"))
                } else {
                    e.into()
                }
            })?;
            out.push(u);
        }
        tx.commit().await?;
        Ok(out)
    }

    pub async fn user(&self, id: &str) -> Result<User> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM users WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::NotFound(format!("user {id}")))?;
        from_row(&r)
    }

    pub async fn user_by_name(&self, username: &str) -> Result<Option<User>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM users WHERE username = $1"
        )))
        .bind(username)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
    }

    /// The user and their password hash, for login.
    pub async fn user_with_hash(&self, username: &str) -> Result<Option<(User, String)>> {
        let Some(r) = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS}, password_hash FROM users WHERE username = $1"
        )))
        .bind(username)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        Ok(Some((from_row(&r)?, r.try_get("password_hash")?)))
    }

    pub async fn users(&self) -> Result<Vec<User>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM users ORDER BY username"
        )))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(from_row)
        .collect()
    }

    /// Sets a new hash and revokes every login of the user (one transaction).
    pub async fn set_password(&self, user_id: &str, password_hash: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(Error::NotFound(format!("user {user_id}")));
        }
        sqlx::query("UPDATE logins SET revoked = 1 WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.epochs.bump_logins();
        Ok(())
    }

    /// Disables (or enables) a user; disabling revokes their logins.
    pub async fn set_disabled(&self, user_id: &str, disabled: bool) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("UPDATE users SET disabled = $1 WHERE id = $2")
            .bind(disabled as i64)
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(Error::NotFound(format!("user {user_id}")));
        }
        if disabled {
            sqlx::query("UPDATE logins SET revoked = 1 WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.epochs.bump_logins();
        Ok(())
    }
}
