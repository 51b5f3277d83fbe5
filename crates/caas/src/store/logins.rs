//! Logins: one row per sign-in, holding the hash of the current refresh
//! token. Access tokens name their login, and every request checks it is
//! not revoked, so logout and password changes take effect at once.

use sqlx::Row;

use super::{now, Store};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Login {
    pub id: String,
    pub user_id: String,
    pub refresh_hash: String,
    pub expires_at: i64,
    pub revoked: bool,
}

impl Store {
    /// Records a login; with `single` every other login of the user is revoked
    /// (one active login per user).
    pub async fn create_login(
        &self,
        id: &str,
        user_id: &str,
        refresh_hash: &str,
        expires_at: i64,
        single: bool,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if single {
            sqlx::query("UPDATE logins SET revoked = 1 WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO logins (id, user_id, refresh_hash, created_at, expires_at, revoked) VALUES ($1, $2, $3, $4, $5, 0)",
        )
        .bind(id)
        .bind(user_id)
        .bind(refresh_hash)
        .bind(now())
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if single {
            self.epochs.bump_logins();
        }
        Ok(())
    }

    pub async fn login(&self, id: &str) -> Result<Login> {
        let r = sqlx::query(
            "SELECT id, user_id, refresh_hash, expires_at, revoked FROM logins WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::Unauthenticated("unknown login: sign in again".into()))?;
        Ok(Login {
            id: r.try_get("id")?,
            user_id: r.try_get("user_id")?,
            refresh_hash: r.try_get("refresh_hash")?,
            expires_at: r.try_get("expires_at")?,
            revoked: r.try_get::<i64, _>("revoked")? != 0,
        })
    }

    /// Replaces the refresh hash if it is still `old` (compare-and-set: a
    /// refresh token works once).
    pub async fn rotate_refresh(
        &self,
        id: &str,
        old: &str,
        new: &str,
        expires_at: i64,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE logins SET refresh_hash = $1, expires_at = $2 WHERE id = $3 AND refresh_hash = $4 AND revoked = 0",
        )
        .bind(new)
        .bind(expires_at)
        .bind(id)
        .bind(old)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    pub async fn revoke_login(&self, id: &str) -> Result<()> {
        sqlx::query("UPDATE logins SET revoked = 1 WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.epochs.bump_logins();
        Ok(())
    }

    /// Is this login live and its user enabled? Checked on every request.
    pub async fn login_active(&self, login_id: &str, user_id: &str) -> Result<bool> {
        let r = sqlx::query(
            "SELECT count(*) FROM logins l JOIN users u ON u.id = l.user_id
             WHERE l.id = $1 AND l.user_id = $2 AND l.revoked = 0 AND u.disabled = 0",
        )
        .bind(login_id)
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(r.try_get::<i64, _>(0)? == 1)
    }
}
