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
pub mod port;
pub mod postgres;
pub mod s3;
pub mod stack;

pub use nats::Nats;
pub use postgres::Postgres;
pub use s3::S3;
pub use stack::Stack;
