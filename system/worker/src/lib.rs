//! # wolf-worker
//!
//! The manager ↔ worker protocol over a Unix domain socket with gRPC (`wolf.worker.v1.Worker`,
//! defined in `system/proto`). A worker is a pre-warmed sandbox: its init process serves exactly
//! one `Run` call ([`server::serve_one`], registered as the sandbox's job server), and the
//! manager calls it with [`client::run`].
//!
//! The socket is bound by the host outside the sandbox (mode 0600, in the data dir), passed to
//! the init process as a descriptor, and closed in every process of the program under test. The
//! server checks its peer with SO_PEERCRED — only the host's uid, from outside the sandbox's pid
//! namespace (reported as pid 0 there), may call — and a per-sandbox token that only the
//! manager received (over the sandbox's setup channel).
//!
//! # Layout
//! - [`server`]: the in-sandbox side.
//! - [`client`]: the manager side.
//! - [`convert`]: proto messages ↔ the sandbox's job frames.

/// gRPC metadata carrying the worker's token.
pub const TOKEN_HEADER: &str = "x-wolf-worker-token";

pub mod client;
pub mod convert;
pub mod server;
