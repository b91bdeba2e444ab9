//! `wolf keys create | list | revoke | webhook-secret [--rotate]`: API keys in the metadata store of the mode this
//! configuration runs (PostgreSQL when `WOLF_DATABASE_URL` is set, else `<data_dir>/wolf.db`),
//! so a key made here is valid on every API of the deployment at once.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use wolf_core::auth::{ApiKey, valid_name};
use wolf_store::{Keys, PgStore, SqliteStore};

use crate::config::{Config, ConfigArgs};

/// Arguments of `wolf keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make a key; its secret is printed once on stdout and never stored.
    Create {
        /// Unique name (letters, digits, `-`, `_`, `.`; up to 64).
        #[arg(long)]
        name: String,
        /// Sees and manages every key's jobs and sessions, and the dead letters.
        #[arg(long)]
        admin: bool,
        /// Only these engines (comma-separated names of `/languages`).
        #[arg(long, value_delimiter = ',')]
        engines: Vec<String>,
        /// Submissions per second, e.g. `10/s` (a token bucket shared by every API; 429 past it).
        #[arg(long, value_parser = per_second)]
        rate: Option<f64>,
        /// Bucket size of `--rate` (default: the rate, rounded up).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        burst: Option<u32>,
        /// Unfinished jobs (queued or running) at once; 429 past it.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        concurrency: Option<u32>,
        /// Jobs waiting (queued, not started) at once; 429 past it.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        max_queued: Option<u32>,
        #[command(flatten)]
        config: Box<ConfigArgs>,
    },
    /// Every key (never a secret), one JSON line each.
    List {
        #[command(flatten)]
        config: Box<ConfigArgs>,
    },
    /// Revoke a key by name: it authenticates nothing from then on (within 2 s on every API).
    Revoke {
        /// The key's name.
        name: String,
        #[command(flatten)]
        config: Box<ConfigArgs>,
    },
    /// Print the secret a key's webhooks are signed with (`Wolf-Signature`), on stdout; with
    /// `--rotate`, make a new one first (printed), the old one signing beside it for `--overlap`.
    WebhookSecret {
        /// The key's name.
        name: String,
        /// Replace the secret with a new one.
        #[arg(long)]
        rotate: bool,
        /// How long the old secret still signs after `--rotate` (a second `v1` in
        /// `Wolf-Signature`), so receivers can switch without a gap: `24h`, `30m`, `0s`.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration, requires = "rotate")]
        overlap: std::time::Duration,
        #[command(flatten)]
        config: Box<ConfigArgs>,
    },
}

fn per_second(s: &str) -> Result<f64, String> {
    let n = s.strip_suffix("/s").unwrap_or(s);
    match n.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("{s:?}: a rate is a positive number per second, e.g. 10/s")),
    }
}

async fn store(args: &ConfigArgs) -> anyhow::Result<Arc<dyn Keys>> {
    let cfg = Config::load(args)?;
    let url = cfg.postgres.url.expose();
    if !url.is_empty() {
        let pg = PgStore::connect(url)?;
        // The keys' tables come with the schema (idempotent; one migrator at a time).
        pg.migrate().await.context("apply the schema (wolf migrate)")?;
        return Ok(Arc::new(pg));
    }
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("create {}", cfg.data_dir.display()))?;
    Ok(Arc::new(SqliteStore::open(&cfg.data_dir.join("wolf.db")).await?))
}

pub fn main(args: KeysArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        match args.command {
            KeysCommand::Create {
                name,
                admin,
                engines,
                rate,
                burst,
                concurrency,
                max_queued,
                config,
            } => {
                anyhow::ensure!(
                    valid_name(&name),
                    "a key name is 1 to 64 letters, digits, '-', '_' or '.'"
                );
                let (mut key, secret) = ApiKey::generate(&name, admin);
                key.engines = (!engines.is_empty()).then_some(engines);
                (key.rate, key.burst, key.concurrency, key.max_queued) = (rate, burst, concurrency, max_queued);
                if !store(&config).await?.create_key(&key).await? {
                    eprintln!("wolf: a key named {name:?} exists already");
                    return Ok(ExitCode::from(1));
                }
                tracing::info!(target: "wolf::audit", event = "key_created", key = %key.name, id = %key.id, admin, "API key created");
                println!("{secret}");
                eprintln!(
                    "wolf: key {name:?} (id {}) created; its secret is above and is not shown again \
                     (its webhooks' signing secret: `wolf keys webhook-secret {name}`)",
                    key.id
                );
                Ok(ExitCode::SUCCESS)
            }
            KeysCommand::List { config } => {
                for k in store(&config).await?.keys().await? {
                    let mut v = serde_json::to_value(&k)?;
                    if let Some(o) = v.as_object_mut() {
                        o.remove("hash");
                        o.remove("webhookSecret");
                        o.remove("webhook_secret");
                        o.remove("previousWebhookSecret");
                    }
                    println!("{v}");
                }
                Ok(ExitCode::SUCCESS)
            }
            KeysCommand::Revoke { name, config } => {
                if !store(&config).await?.revoke_key(&name).await? {
                    eprintln!("wolf: no live key named {name:?}");
                    return Ok(ExitCode::from(1));
                }
                tracing::info!(target: "wolf::audit", event = "key_revoked", key = %name, "API key revoked");
                eprintln!("wolf: key {name:?} revoked");
                Ok(ExitCode::SUCCESS)
            }
            KeysCommand::WebhookSecret {
                name,
                rotate: true,
                overlap,
                config,
            } => {
                let secret = wolf_core::auth::new_webhook_secret();
                let until = chrono::Utc::now() + chrono::Duration::from_std(overlap).context("--overlap is too long")?;
                if !store(&config).await?.rotate_webhook_secret(&name, &secret, until).await? {
                    eprintln!("wolf: no live key named {name:?}");
                    return Ok(ExitCode::from(1));
                }
                tracing::info!(target: "wolf::audit", event = "webhook_secret_rotated", key = %name, until = %until.to_rfc3339(), "webhook secret rotated");
                println!("{secret}");
                eprintln!(
                    "wolf: key {name:?} signs its webhooks with the secret above; the previous one signs beside it until {}",
                    until.to_rfc3339()
                );
                Ok(ExitCode::SUCCESS)
            }
            KeysCommand::WebhookSecret { name, config, .. } => {
                let key = store(&config).await?.keys().await?.into_iter().find(|k| k.name == name);
                match key.and_then(|k| k.webhook_secret) {
                    Some(s) => {
                        println!("{s}");
                        Ok(ExitCode::SUCCESS)
                    }
                    None => {
                        eprintln!(
                            "wolf: no key named {name:?} with a webhook secret (keys made before webhooks \
                             have none: their jobs' webhooks are signed with WOLF_WEBHOOK_SECRET)"
                        );
                        Ok(ExitCode::from(1))
                    }
                }
            }
        }
    })
}
