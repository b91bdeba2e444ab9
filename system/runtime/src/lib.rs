//! Runtimes from container images: any image taken as a sandbox's read-only root.
//!
//! `wolf runtime import NAME SOURCE` reads an image ([`image`]: an OCI layout, a tar of one,
//! a `docker save` archive, an image in containerd's store: [`containerd`]), keeps its layers content-addressed and unpacks them, by rules
//! that hold whatever the tar says ([`unpack`]), into a root per runtime ([`store`]). A
//! language entry naming the runtime then runs in a sandbox whose read-only binds come from
//! that root ([`Store::binds`]) instead of the host's; every other layer of the jail is
//! unchanged. docs/runtimes.md explains the store and its security rules.

pub mod containerd;
pub mod image;
pub mod store;
pub mod unpack;

pub use store::{RuntimeInfo, Store, valid_name};
pub use unpack::{Bounds, Dropped};

/// Why a runtime could not be imported or used.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The image is malformed or refused (its message says which rule).
    #[error("image refused: {0}")]
    Invalid(String),
    /// The image is larger than the store's bounds.
    #[error("image refused: it is too large: {0}")]
    TooLarge(String),
    /// A runtime of that name exists (import with replace).
    #[error("runtime {0} exists (give --replace to import over it)")]
    Exists(String),
    /// No runtime of that name.
    #[error("no runtime named {0}")]
    NotFound(String),
    /// The host's filesystem failed.
    #[error("runtime store: {0}")]
    Io(String),
}
