//! # wolf-store
//!
//! Where Wolf keeps jobs: a metadata store (records), an object store (code, output) and the
//! durable queue, each a trait with an embedded implementation here (one SQLite file and a
//! directory in the data dir). The distributed implementations (PostgreSQL, S3, JetStream)
//! implement the same traits.
//!
//! # Layout
//! - [`traits`]: [`Metadata`], [`Objects`], [`Queue`] and their error type.
//! - [`sqlite`]: embedded metadata + queue in one SQLite database (WAL), atomic admission.
//! - [`local`]: objects as files under the data dir, written by rename.
//! - [`postgres`]: metadata in PostgreSQL (distributed mode), idempotent writes, migrations.
//! - [`jetstream`]: the distributed queue on NATS JetStream, with a dead-letter stream.
//! - [`s3`]: objects in any S3-compatible store.
//! - [`keys`], [`quotas`]: API keys, session owners, rate buckets and unfinished counts.
//! - [`retention`]: which ended jobs are past the retention, and forgetting them.
//! - [`backlog`]: what a new job would wait behind, for admission by deadline.
//! - [`fair`]: fair dispatch over JetStream (a window of jobs per key, the rest held in PostgreSQL).
//! - [`engines`]: which engines on image runtimes live managers offer (a key-value bucket).
//! - [`turns`]: one admission of a key at a time.
//! - [`events`]: in-process "queued" and "finished" notifications.

pub mod backlog;
pub mod engines;
pub mod events;
pub mod fair;
pub mod jetstream;
pub mod keys;
pub mod local;
pub mod postgres;
pub mod quotas;
pub mod retention;
pub mod s3;
pub mod session_rpc;
pub mod sqlite;
pub mod streams;
pub mod traits;
pub mod turns;
pub mod webhooks;

pub use events::{Events, Service};
pub use fair::FairQueue;
pub use jetstream::{JetStreamConfig, JetStreamQueue};
pub use local::LocalObjects;
pub use postgres::PgStore;
pub use retention::Retention;
pub use s3::{S3Config, S3Objects};
pub use sqlite::SqliteStore;
pub use streams::Streams;
pub use traits::{
    Admission, Backlog, DeadLetter, Delivery, Idempotency, Keys, Metadata, Objects, Outbox, Page, Queue, QueueConfig,
    Quotas, SessionError, SessionHost, StoreError, Unfinished, Webhook, WebhookFate, WebhookState,
};
pub use turns::Turns;
