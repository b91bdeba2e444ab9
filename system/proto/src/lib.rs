//! # wolf-proto
//!
//! Generated gRPC code for `proto/worker.proto`: the manager calls `Worker.Run` on a sandbox's
//! Unix domain socket.

#![allow(missing_docs, clippy::all)]

/// `wolf.worker.v1`.
pub mod v1 {
    tonic::include_proto!("wolf.worker.v1");
}
