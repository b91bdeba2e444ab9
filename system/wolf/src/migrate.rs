//! `wolf migrate`: apply the PostgreSQL schema of the distributed mode (idempotent; one
//! migrator at a time through an advisory lock).

use std::process::ExitCode;

use clap::Args;
use wolf_store::PgStore;

/// Arguments of `wolf migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// postgres:// URL of the metadata database.
    #[arg(long, env = "WOLF_DATABASE_URL")]
    database_url: String,
}

pub fn main(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let version = rt.block_on(async {
        let store = PgStore::connect(&args.database_url)?;
        store.migrate().await
    })?;
    eprintln!("wolf: schema at version {version}");
    Ok(ExitCode::SUCCESS)
}
