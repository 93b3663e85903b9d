//! Web panel sessions, shared by every server process on the database.
//!
//! A row is found by the SHA-256 of the session's token; the token itself
//! is never written. `key_hash` references the API key's hash with
//! `ON DELETE CASCADE`, so revoking or replacing a key ends its sessions
//! in the same statement, whichever process or command does it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pakkt_core::account::SecretHash;
use pakkt_core::panel::{self, PanelSession};
use pakkt_core::store::{SessionStore, StoreError};
use sqlx::any::AnyRow;

use super::{Result, WriteOn, dynamic, get, is_unique_violation};
use crate::codec::{backend, corrupt, from_us, parse, us};
use crate::open::{Backend, Database};

const SESSION_COLUMNS: &str = "token_hash, key_hash, account_id, csrf, created_at, last_seen_at, expires_at";

fn hash_from(row: &AnyRow, column: &str) -> Result<SecretHash> {
    let bytes: [u8; 32] = get::<Vec<u8>>(row, column)?
        .try_into()
        .map_err(|_| corrupt(format!("a session's {column} is not 32 bytes")))?;
    Ok(SecretHash::from_bytes(bytes))
}

fn session_from(row: &AnyRow) -> Result<PanelSession> {
    Ok(PanelSession {
        token_hash: hash_from(row, "token_hash")?,
        key_hash: hash_from(row, "key_hash")?,
        account: parse(&get::<String>(row, "account_id")?, "account id")?,
        csrf: get(row, "csrf")?,
        created_at: from_us(get(row, "created_at")?)?,
        last_seen_at: from_us(get(row, "last_seen_at")?)?,
        expires_at: from_us(get(row, "expires_at")?)?,
    })
}

fn bytes(hash: &SecretHash) -> Vec<u8> {
    hash.as_bytes().to_vec()
}

#[async_trait]
impl SessionStore for Database {
    async fn start_session(&self, session: &PanelSession, keep: usize) -> Result<()> {
        let account = session.account.to_string();
        let mut tx = self.write().await?;
        if self.backend == Backend::Postgres {
            // One start per account at a time, across replicas, so that the
            // cap holds; SQLite's write transaction excludes other writers.
            // (NO KEY: inserts of the account's keys and agents go on.)
            let found = sqlx::query("SELECT id FROM accounts WHERE id = $1 FOR NO KEY UPDATE")
                .bind(&account)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
            if found.is_none() {
                return Err(StoreError::NotFound);
            }
        }
        let inserted = sqlx::query(
            "INSERT INTO panel_sessions (token_hash, key_hash, account_id, csrf, created_at, last_seen_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(bytes(&session.token_hash))
        .bind(bytes(&session.key_hash))
        .bind(&account)
        .bind(&session.csrf)
        .bind(us(session.created_at))
        .bind(us(session.last_seen_at))
        .bind(us(session.expires_at))
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Duplicate { existing: "panel session".into() });
            }
            Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => return Err(StoreError::NotFound),
            Err(e) => return Err(backend(e)),
        }
        let rows = sqlx::query(dynamic(format!("SELECT {SESSION_COLUMNS} FROM panel_sessions WHERE account_id = $1")))
            .bind(&account)
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
        let sessions = rows.iter().map(session_from).collect::<Result<Vec<_>>>()?;
        for ended in panel::sessions_to_end(&sessions, &session.token_hash, keep) {
            sqlx::query("DELETE FROM panel_sessions WHERE token_hash = $1")
                .bind(bytes(&ended))
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        Self::commit(tx).await
    }

    async fn session(&self, token: &SecretHash) -> Result<Option<PanelSession>> {
        let row = sqlx::query(dynamic(format!("SELECT {SESSION_COLUMNS} FROM panel_sessions WHERE token_hash = $1")))
            .bind(bytes(token))
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(session_from).transpose()
    }

    async fn renew_session(
        &self,
        token: &SecretHash,
        last_seen_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query("UPDATE panel_sessions SET last_seen_at = $1, expires_at = $2 WHERE token_hash = $3")
            .bind(us(last_seen_at))
            .bind(us(expires_at))
            .bind(bytes(token))
            .write_on(self)
            .await?
            .map_err(backend)?;
        Ok(())
    }

    async fn set_session_notice(&self, token: &SecretHash, notice: &[u8]) -> Result<()> {
        sqlx::query("UPDATE panel_sessions SET notice = $1 WHERE token_hash = $2")
            .bind(notice.to_vec())
            .bind(bytes(token))
            .write_on(self)
            .await?
            .map_err(backend)?;
        Ok(())
    }

    async fn take_session_notice(&self, token: &SecretHash) -> Result<Option<Vec<u8>>> {
        // Most pages have no notice: a read, and no write, finds that out.
        let notice: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT notice FROM panel_sessions WHERE token_hash = $1")
                .bind(bytes(token))
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        let Some(notice) = notice.flatten() else { return Ok(None) };
        // Cleared only if it is still the notice read: of concurrent takes,
        // one clears it and gets it; the others find it gone.
        let cleared = sqlx::query("UPDATE panel_sessions SET notice = NULL WHERE token_hash = $1 AND notice = $2")
            .bind(bytes(token))
            .bind(notice.clone())
            .write_on(self)
            .await?
            .map_err(backend)?;
        Ok((cleared.rows_affected() == 1).then_some(notice))
    }

    async fn end_session(&self, token: &SecretHash) -> Result<()> {
        sqlx::query("DELETE FROM panel_sessions WHERE token_hash = $1")
            .bind(bytes(token))
            .write_on(self)
            .await?
            .map_err(backend)?;
        Ok(())
    }

    async fn purge_expired_sessions(&self, now: DateTime<Utc>) -> Result<usize> {
        let done = sqlx::query("DELETE FROM panel_sessions WHERE expires_at <= $1")
            .bind(us(now))
            .write_on(self)
            .await?
            .map_err(backend)?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
    }
}
