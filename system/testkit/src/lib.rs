//! # wolf-testkit
//!
//! Real servers for tests and the testbed: [`Nats`] (nats-server with JetStream) and
//! [`Postgres`] (PostgreSQL run as the `postgres` user), each on a free loopback port, in a
//! directory of its own, killable with SIGKILL and restartable on the same port and data, so
//! chaos tests can do to them what production does.
//!
//! # Layout
//! - [`nats`], [`postgres`], [`s3`]: one server each.
//! - [`stack`]: the whole distributed mode (servers + `wolf api` + `wolf manager` processes),
//!   which the `testbed` binary prints as JSON.
//! - [`port`]: free loopback ports and readiness probes.

pub mod nats;
pub mod otlp;
pub mod port;
pub mod postgres;
pub mod s3;
pub mod stack;

pub use nats::Nats;

use std::path::PathBuf;

use anyhow::Context;

/// Whether this process runs as root (sandboxes, cgroups and the postgres user need it). When
/// not, prints why the calling test skips: `skipped: {reason}`.
pub fn running_as_root(reason: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipped: {reason}");
    }
    root
}

/// A binary of this workspace: `$env_var`, else `name` next to the current executable or up to
/// two directories above (tests run from target/<profile>/deps).
pub fn workspace_binary(env_var: &str, name: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .skip(1)
        .take(3)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} is not next to this executable: cargo build --workspace (or set {env_var})"))
}
pub use postgres::Postgres;
pub use s3::S3;
pub use stack::Stack;
