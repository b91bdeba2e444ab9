//! # wolf-testkit
//!
//! Real servers for tests and the testbed: [`Nats`] (nats-server with JetStream) and
//! [`Postgres`] (PostgreSQL run as the `postgres` user), each on a free loopback port, in a
//! directory of its own, killable with SIGKILL and restartable on the same port and data, so
//! chaos tests can do to them what production does.
//!
//! # Layout
//! - [`nats`], [`postgres`]: one server each.
//! - [`port`]: free loopback ports and readiness probes.

pub mod nats;
pub mod port;
pub mod postgres;

pub use nats::Nats;
pub use postgres::Postgres;
