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
//! - [`containers`]: the same stack as containers on private networks (testcontainers).
//! - [`port`]: free loopback ports and readiness probes.
//! - [`guest`]: a real kernel (Debian's, under qemu) running one command as root.

pub mod client;
pub mod containers;
pub mod guest;
pub mod nats;
pub mod otlp;
pub mod port;
pub mod postgres;
pub mod procs;
pub mod s3;
pub mod serve;
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
/// Parse a duration as the command-line tools take it: `60s`, `2m`, `500ms`, `3` (seconds).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let v: f64 = num
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (try 60s, 2m, 500ms)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" | "" => v,
        "m" | "min" => v * 60.0,
        _ => return Err(format!("unknown unit in {s:?} (ms, s, m)")),
    };
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(format!("not a duration: {s:?}"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

pub use postgres::Postgres;
pub use s3::S3;
pub use stack::Stack;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3h").is_err());
    }
}
