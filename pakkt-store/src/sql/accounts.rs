//! Accounts and keys.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pakkt_core::account::{Account, AccountName, ApiKeyRecord, SecretHash};
use pakkt_core::id::{AccountId, ApiKeyId};
use pakkt_core::quota::Quota;
use pakkt_core::store::{AccountStore, StoreError};

use super::{ACCOUNT_COLUMNS, Result, WriteOn, account_from, database_error, dynamic, get, is_unique_violation};
use crate::codec::{backend, corrupt, from_us, parse, uncount, us};
use crate::open::Database;

impl Database {
    /// One attempt of [`Store::replace_api_keys`].
    pub(super) async fn replace_api_keys_once(&self, key: &ApiKeyRecord) -> Result<()> {
        let mut tx = self.write().await?;
        let owner = sqlx::query("SELECT account_id FROM api_keys WHERE hash = $1")
            .bind(key.hash.as_bytes().to_vec())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        if let Some(row) = owner {
            if get::<String>(&row, "account_id")? != key.account_id.to_string() {
                return Err(StoreError::Duplicate { existing: key.hash.to_hex() });
            }
            sqlx::query("DELETE FROM api_keys WHERE account_id = $1 AND hash <> $2")
                .bind(key.account_id.to_string())
                .bind(key.hash.as_bytes().to_vec())
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        } else {
            sqlx::query("DELETE FROM api_keys WHERE account_id = $1")
                .bind(key.account_id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            let inserted =
                sqlx::query("INSERT INTO api_keys (id, account_id, hash, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(key.id.to_string())
                    .bind(key.account_id.to_string())
                    .bind(key.hash.as_bytes().to_vec())
                    .bind(us(key.created_at))
                    .execute(&mut *tx)
                    .await;
            match inserted {
                Ok(_) => {}
                Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => return Err(StoreError::NotFound),
                Err(e) => return Err(backend(e)),
            }
        }
        Self::commit(tx).await?;
        self.notify_keys_changed().await;
        Ok(())
    }
}

#[async_trait]
impl AccountStore for Database {
    async fn create_account(&self, name: &AccountName, now: DateTime<Utc>) -> Result<Account> {
        let account = Account { id: AccountId::generate(), name: name.clone(), suspended: false, created_at: now };
        let inserted = sqlx::query("INSERT INTO accounts (id, name, suspended, created_at) VALUES ($1, $2, 0, $3)")
            .bind(account.id.to_string())
            .bind(name.as_str())
            .bind(us(now))
            .write_on(self)
            .await?;
        match inserted {
            Ok(_) => Ok(account),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Duplicate { existing: name.to_string() }),
            Err(e) => Err(backend(e)),
        }
    }

    async fn account_by_name(&self, name: &AccountName) -> Result<Option<Account>> {
        let row = sqlx::query(dynamic(format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = $1")))
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(account_from).transpose()
    }

    async fn set_suspended(&self, name: &AccountName, suspended: bool) -> Result<Account> {
        let done = sqlx::query("UPDATE accounts SET suspended = $1 WHERE name = $2")
            .bind(i64::from(suspended))
            .bind(name.as_str())
            .write_on(self)
            .await?
            .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.notify_keys_changed().await;
        self.account_by_name(name).await?.ok_or(StoreError::NotFound)
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord, max: u32) -> Result<()> {
        let mut tx = self.write().await?;
        self.lock_account(&mut tx, key.account_id).await?;
        // Revoked keys are deleted: every row is a live key.
        let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE account_id = $1")
            .bind(key.account_id.to_string())
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        Quota::ApiKeys.admit(max, uncount(held), 1)?;
        let inserted = sqlx::query("INSERT INTO api_keys (id, account_id, hash, created_at) VALUES ($1, $2, $3, $4)")
            .bind(key.id.to_string())
            .bind(key.account_id.to_string())
            .bind(key.hash.as_bytes().to_vec())
            .bind(us(key.created_at))
            .execute(&mut *tx)
            .await;
        match inserted {
            Ok(_) => Self::commit(tx).await,
            Err(e) if is_unique_violation(&e) => Err(StoreError::Duplicate { existing: key.hash.to_hex() }),
            Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => Err(StoreError::NotFound),
            Err(e) => Err(backend(e)),
        }
    }

    async fn replace_api_keys(&self, key: &ApiKeyRecord) -> Result<()> {
        // Replicas starting at once with one bootstrap key race to insert
        // it: the loser's insert violates the unique hash and is rolled
        // back; once more, it finds the key in place.
        match self.replace_api_keys_once(key).await {
            Err(e) if database_error(&e).is_some_and(sqlx::error::DatabaseError::is_unique_violation) => {
                self.replace_api_keys_once(key).await
            }
            outcome => outcome,
        }
    }

    async fn revoke_api_key(&self, id: ApiKeyId) -> Result<()> {
        let done = sqlx::query("DELETE FROM api_keys WHERE id = $1")
            .bind(id.to_string())
            .write_on(self)
            .await?
            .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.notify_keys_changed().await;
        Ok(())
    }

    async fn key_by_hash(&self, hash: &SecretHash) -> Result<Option<(ApiKeyRecord, Account)>> {
        let row = sqlx::query(
            "SELECT k.id AS key_id, k.created_at AS key_created_at, a.id, a.name, a.suspended, a.created_at \
             FROM api_keys k JOIN accounts a ON a.id = k.account_id WHERE k.hash = $1",
        )
        .bind(hash.as_bytes().to_vec())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        let account = account_from(&row)?;
        let key = ApiKeyRecord {
            id: parse(&get::<String>(&row, "key_id")?, "key id")?,
            account_id: account.id,
            hash: *hash,
            created_at: from_us(get(&row, "key_created_at")?)?,
        };
        Ok(Some((key, account)))
    }

    async fn list_api_keys(&self, account: AccountId) -> Result<Vec<ApiKeyRecord>> {
        let rows =
            sqlx::query("SELECT id, hash, created_at FROM api_keys WHERE account_id = $1 ORDER BY created_at, id")
                .bind(account.to_string())
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let hash: [u8; 32] =
                    get::<Vec<u8>>(row, "hash")?.try_into().map_err(|_| corrupt("an API key hash is not 32 bytes"))?;
                Ok(ApiKeyRecord {
                    id: parse(&get::<String>(row, "id")?, "key id")?,
                    account_id: account,
                    hash: SecretHash::from_bytes(hash),
                    created_at: from_us(get(row, "created_at")?)?,
                })
            })
            .collect()
    }
}
