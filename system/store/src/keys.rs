//! [`Keys`] in both metadata stores: SQLite (`api_keys`, `owners`) and PostgreSQL
//! (`wolf_api_keys`, `wolf_owners`, migration 0002). A key is kept whole as JSON beside the
//! columns its lookups need (name, hash); the secret itself is never stored.

use async_trait::async_trait;
use chrono::Utc;
use sqlx::Row;
use wolf_core::auth::ApiKey;

use crate::traits::{Keys, StoreError};
use crate::{PgStore, SqliteStore};

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

fn parse(text: &str) -> Result<ApiKey, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt {
        what: "an API key".into(),
        source,
    })
}

/// An insert's outcome: done, or refused because the name (or hash) is taken.
fn created<T>(r: Result<T, sqlx::Error>) -> Result<bool, StoreError> {
    match r {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_database_error()
                .is_some_and(|d| d.kind() == sqlx::error::ErrorKind::UniqueViolation) =>
        {
            Ok(false)
        }
        Err(e) => Err(db(e)),
    }
}

#[async_trait]
impl Keys for SqliteStore {
    async fn create_key(&self, key: &ApiKey) -> Result<bool, StoreError> {
        let _w = self.writer.lock().await;
        let r = sqlx::query("INSERT INTO api_keys (id, name, hash, key) VALUES (?, ?, ?, ?)")
            .bind(&key.id)
            .bind(&key.name)
            .bind(&key.hash)
            .bind(serde_json::to_string(key).expect("keys serialize"))
            .execute(&self.pool)
            .await;
        created(r)
    }

    async fn keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let rows = sqlx::query("SELECT key FROM api_keys ORDER BY rowid")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(|r| parse(r.get::<&str, _>(0))).collect()
    }

    async fn revoke_key(&self, name: &str) -> Result<bool, StoreError> {
        let _w = self.writer.lock().await;
        let done = sqlx::query(
            "UPDATE api_keys SET key = json_set(key, '$.revokedAt', ?) \
             WHERE name = ? AND json_extract(key, '$.revokedAt') IS NULL",
        )
        .bind(Utc::now().to_rfc3339())
        .bind(name)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn rotate_webhook_secret(
        &self,
        name: &str,
        secret: &str,
        until: chrono::DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let _w = self.writer.lock().await;
        let done = sqlx::query(
            "UPDATE api_keys SET key = json_set(key, \
                 '$.previousWebhookSecret', json_extract(key, '$.webhookSecret'), \
                 '$.previousWebhookSecretUntil', ?, '$.webhookSecret', ?) \
             WHERE name = ? AND json_extract(key, '$.revokedAt') IS NULL",
        )
        .bind(until.to_rfc3339())
        .bind(secret)
        .bind(name)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let row = sqlx::query("SELECT key FROM api_keys WHERE hash = ?")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| parse(r.get::<&str, _>(0))).transpose()
    }

    async fn set_owner(&self, id: &str, key_id: &str) -> Result<(), StoreError> {
        let _w = self.writer.lock().await;
        sqlx::query("INSERT OR IGNORE INTO owners (id, key_id) VALUES (?, ?)")
            .bind(id)
            .bind(key_id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn owner(&self, id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT key_id FROM owners WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.map(|r| r.get(0)))
    }
}

#[async_trait]
impl Keys for PgStore {
    async fn create_key(&self, key: &ApiKey) -> Result<bool, StoreError> {
        let r = sqlx::query("INSERT INTO wolf_api_keys (id, name, hash, key) VALUES ($1, $2, $3, $4)")
            .bind(&key.id)
            .bind(&key.name)
            .bind(&key.hash)
            .bind(serde_json::to_value(key).expect("keys serialize"))
            .execute(&self.pool)
            .await;
        created(r)
    }

    async fn keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let rows = sqlx::query("SELECT key::text FROM wolf_api_keys ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(|r| parse(r.get::<&str, _>(0))).collect()
    }

    async fn revoke_key(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE wolf_api_keys SET key = key || jsonb_build_object('revokedAt', $1::text) \
             WHERE name = $2 AND NOT key ? 'revokedAt'",
        )
        .bind(Utc::now().to_rfc3339())
        .bind(name)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn rotate_webhook_secret(
        &self,
        name: &str,
        secret: &str,
        until: chrono::DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE wolf_api_keys SET key = key || jsonb_build_object( \
                 'previousWebhookSecret', key->'webhookSecret', \
                 'previousWebhookSecretUntil', $1::text, 'webhookSecret', $2::text) \
             WHERE name = $3 AND NOT key ? 'revokedAt'",
        )
        .bind(until.to_rfc3339())
        .bind(secret)
        .bind(name)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let row = sqlx::query("SELECT key::text FROM wolf_api_keys WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| parse(r.get::<&str, _>(0))).transpose()
    }

    async fn set_owner(&self, id: &str, key_id: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO wolf_owners (id, key_id) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
            .bind(id)
            .bind(key_id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn owner(&self, id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT key_id FROM wolf_owners WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.map(|r| r.get(0)))
    }
}

/// The contract every [`Keys`] store keeps (run on SQLite here, on PostgreSQL in
/// tests/postgres.rs).
pub async fn check_contract(store: &dyn Keys) {
    let (mut a, _) = ApiKey::generate("alice", false);
    a.engines = Some(vec!["python".into()]);
    let (b, _) = ApiKey::generate("bob", true);
    assert!(store.create_key(&a).await.unwrap());
    assert!(store.create_key(&b).await.unwrap());
    let (dup, _) = ApiKey::generate("alice", false);
    assert!(!store.create_key(&dup).await.unwrap(), "a name is unique");
    assert_eq!(store.key_by_hash(&a.hash).await.unwrap().as_ref(), Some(&a));
    assert!(store.key_by_hash("00").await.unwrap().is_none());
    let names: Vec<String> = store.keys().await.unwrap().into_iter().map(|k| k.name).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert!(store.revoke_key("alice").await.unwrap());
    assert!(!store.revoke_key("alice").await.unwrap(), "revoked once");
    assert!(!store.revoke_key("nobody").await.unwrap());
    let revoked = store.key_by_hash(&a.hash).await.unwrap().unwrap();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(revoked.engines, a.engines);
    store.set_owner("s1", &a.id).await.unwrap();
    store.set_owner("s1", &b.id).await.unwrap();
    assert_eq!(
        store.owner("s1").await.unwrap().as_deref(),
        Some(a.id.as_str()),
        "the first owner stays"
    );
    assert!(store.owner("s2").await.unwrap().is_none());
    // A rotation: the new secret signs, the old one beside it until the overlap ends; a
    // revoked or unknown key has nothing to rotate.
    let until = Utc::now() + chrono::Duration::hours(1);
    assert!(store.rotate_webhook_secret("bob", "whsec_new", until).await.unwrap());
    let rotated = store.key_by_hash(&b.hash).await.unwrap().unwrap();
    assert_eq!(rotated.webhook_secret.as_deref(), Some("whsec_new"));
    assert_eq!(rotated.previous_webhook_secret, b.webhook_secret);
    assert_eq!(
        rotated.previous_webhook_secret_until.map(|t| t.timestamp()),
        Some(until.timestamp())
    );
    let old = b.webhook_secret.clone().unwrap();
    assert_eq!(rotated.webhook_secrets(Utc::now()), ["whsec_new".to_string(), old]);
    assert_eq!(
        rotated.webhook_secrets(until + chrono::Duration::seconds(1)),
        ["whsec_new".to_string()],
        "the old secret stops at the end of the overlap"
    );
    assert!(
        !store.rotate_webhook_secret("alice", "whsec_x", until).await.unwrap(),
        "revoked"
    );
    assert!(!store.rotate_webhook_secret("nobody", "whsec_x", until).await.unwrap());
    assert_eq!(rotated.hash, b.hash, "the key itself is unchanged");
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn sqlite_keeps_the_keys_contract() {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::SqliteStore::open(&dir.path().join("k.db")).await.unwrap();
        super::check_contract(&s).await;
    }
}
