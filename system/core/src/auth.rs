//! API keys: what a key may do, and who is asking.
//!
//! A secret is `wolf_<id>_<64 hex digits>`: the id (8 hex digits) is public and names the key
//! in records and logs; the 64 digits (two random UUIDs' 244 bits, from the OS generator) are
//! the secret. Only the SHA-256 of the whole secret is stored: a secret of that entropy needs no
//! slow hash, and the lookup by hash is one indexed read.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A key as stored (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    /// Public id (8 hex digits), the owner of what the key creates.
    pub id: String,
    /// Unique name given at creation.
    pub name: String,
    /// SHA-256 hex of the secret.
    pub hash: String,
    /// Sees and manages everything.
    pub admin: bool,
    /// Only these engines (names as in `/languages`); `None`: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engines: Option<Vec<String>>,
    /// Submissions per second (token bucket), with `burst`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Bucket size of `rate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Jobs running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Jobs queued at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued: Option<u32>,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Revoked at (a revoked key authenticates nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
    /// The secret this key's webhooks are signed with (kept in clear: signing needs it; keys
    /// made before webhooks have none, and their jobs' webhooks use the deployment's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    /// The webhook secret before the last rotation, still signing beside the new one until
    /// [`ApiKey::previous_webhook_secret_until`] (receivers switch over without a gap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_webhook_secret: Option<String>,
    /// Until when the previous webhook secret signs too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_webhook_secret_until: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// A new key named `name` and its secret (shown once, never stored).
    pub fn generate(name: &str, admin: bool) -> (Self, String) {
        let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        let secret = format!(
            "wolf_{id}_{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let key = Self {
            id,
            name: name.to_string(),
            hash: hash_secret(&secret),
            admin,
            engines: None,
            rate: None,
            burst: None,
            concurrency: None,
            max_queued: None,
            created_at: Utc::now(),
            revoked_at: None,
            webhook_secret: Some(new_webhook_secret()),
            previous_webhook_secret: None,
            previous_webhook_secret_until: None,
        };
        (key, secret)
    }

    /// The secrets a webhook sent at `now` is signed with: the key's own, then the previous
    /// one while its overlap lasts.
    pub fn webhook_secrets(&self, now: DateTime<Utc>) -> Vec<String> {
        let previous = self
            .previous_webhook_secret
            .clone()
            .filter(|_| self.previous_webhook_secret_until.is_some_and(|until| now < until));
        self.webhook_secret.iter().cloned().chain(previous).collect()
    }

    /// Whether this key may submit to `engine` (names compared case-insensitively).
    pub fn allows_engine(&self, engine: &str) -> bool {
        self.engines
            .as_ref()
            .is_none_or(|list| list.iter().any(|e| e.eq_ignore_ascii_case(engine)))
    }
}

/// SHA-256 hex of a presented secret (what is stored and looked up).
pub fn hash_secret(secret: &str) -> String {
    crate::hash::sha256_hex(secret.as_bytes())
}

/// Whether `secret` has the shape of a Wolf secret (checked before any lookup).
pub fn well_formed(secret: &str) -> bool {
    let Some(rest) = secret.strip_prefix("wolf_") else {
        return false;
    };
    let Some((id, tail)) = rest.split_once('_') else {
        return false;
    };
    id.len() == 8 && tail.len() == 64 && rest.bytes().all(|b| b.is_ascii_hexdigit() || b == b'_')
}

/// A fresh webhook signing secret (`whsec_` and 128 random bits in hex).
pub fn new_webhook_secret() -> String {
    format!("whsec_{}", uuid::Uuid::new_v4().simple())
}

/// A key name: 1 to 64 of letters, digits, `-`, `_`, `.`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// Authentication is off: everything is visible, as before keys existed.
    Open,
    /// A key.
    Key(Box<ApiKey>),
}

impl Principal {
    /// The owner to stamp on what this principal creates (`None` when authentication is off).
    pub fn owner(&self) -> Option<&str> {
        match self {
            Principal::Open => None,
            Principal::Key(k) => Some(&k.id),
        }
    }

    /// Whether it sees everything.
    pub fn sees_all(&self) -> bool {
        match self {
            Principal::Open => true,
            Principal::Key(k) => k.admin,
        }
    }

    /// Whether it may see what `owner` created.
    pub fn may_see(&self, owner: Option<&str>) -> bool {
        self.sees_all() || (owner.is_some() && owner == self.owner())
    }

    /// The key's name for logs and metrics (`-` when authentication is off).
    pub fn name(&self) -> &str {
        match self {
            Principal::Open => "-",
            Principal::Key(k) => &k.name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_secret_is_well_formed_and_only_its_hash_is_kept() {
        let (k, secret) = ApiKey::generate("ci", false);
        assert!(well_formed(&secret), "{secret}");
        assert!(secret.starts_with(&format!("wolf_{}_", k.id)));
        assert_eq!(k.hash, hash_secret(&secret));
        assert!(!serde_json::to_string(&k).unwrap().contains(&secret[14..]));
        let (k2, s2) = ApiKey::generate("ci", false);
        assert_ne!(secret, s2);
        assert_ne!(k.id, k2.id);
        for bad in [
            "",
            "wolf_",
            "Bearer x",
            &secret[..secret.len() - 1],
            &secret.replace("wolf_", "wolf-"),
        ] {
            assert!(!well_formed(bad), "{bad}");
        }
    }

    #[test]
    fn visibility_and_scopes() {
        let (mut k, _) = ApiKey::generate("a", false);
        let me = Principal::Key(Box::new(k.clone()));
        assert!(me.may_see(Some(&k.id)));
        assert!(!me.may_see(Some("other")));
        assert!(!me.may_see(None), "a job from before keys belongs to no key");
        assert!(Principal::Open.may_see(None) && Principal::Open.may_see(Some("x")));
        k.admin = true;
        assert!(Principal::Key(Box::new(k.clone())).may_see(Some("other")));
        k.engines = Some(vec!["python".into()]);
        assert!(k.allows_engine("Python") && !k.allows_engine("cpp"));
        assert!(valid_name("ci-1.a_b") && !valid_name("") && !valid_name("a b") && !valid_name(&"x".repeat(65)));
    }
}
