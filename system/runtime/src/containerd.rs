//! `containerd://[NAMESPACE/]IMAGE`: an image in the host's containerd, read from its content
//! store through containerd's socket.
//!
//! containerd exports the image (`ctr images export --platform <this one>`: the manifest of
//! this architecture, its config and layers, as an OCI archive with a Docker manifest beside
//! its index) into the runtime store's tmp/, and the archive is imported as a file is (through
//! its OCI index: the digest recorded is the manifest's, as containerd lists it), by the same rules (digests checked, unpacked
//! safely). Only containerd's CLI is used, not the `containerd-client` crate: its build needs
//! `protoc` on every machine that builds Wolf (the quick start included), for one command that
//! containerd's own tool does (docs/runtimes.md).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::RuntimeError;

/// containerd's socket, unless `CONTAINERD_ADDRESS` or the source's `?address=` says otherwise.
pub const DEFAULT_ADDRESS: &str = "/run/containerd/containerd.sock";
/// Docker's own containerd (its engine starts one when the host has none).
pub const DOCKER_ADDRESS: &str = "/var/run/docker/containerd/containerd.sock";

/// A parsed `containerd://` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Containerd {
    /// The socket.
    pub address: PathBuf,
    /// containerd namespace (`default` unless given).
    pub namespace: String,
    /// The image reference in that namespace.
    pub reference: String,
}

impl std::fmt::Display for Containerd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "containerd://{}/{}", self.namespace, self.reference)
    }
}

fn refused(msg: String) -> RuntimeError {
    RuntimeError::Invalid(msg)
}

impl Containerd {
    /// Parse what follows `containerd://`. The first path segment is the namespace when there
    /// is a second one and it does not look like a registry host (no `.`, `:`, not
    /// `localhost`): `containerd://moby/docker.io/library/x:1` is namespace `moby`;
    /// `containerd://docker.io/library/x:1` is namespace `default`.
    pub fn parse(rest: &str) -> Result<Self, RuntimeError> {
        let (namespace, reference) = match rest.split_once('/') {
            Some((first, tail)) if !first.contains(['.', ':']) && first != "localhost" && !tail.is_empty() => {
                (first.to_string(), tail.to_string())
            }
            _ => ("default".to_string(), rest.to_string()),
        };
        // Namespaces are containerd's labels: letters and digits, separated by one of . _ -.
        let ns_ok = !namespace.is_empty()
            && namespace.len() <= 76
            && namespace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && namespace.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
        if !ns_ok {
            return Err(refused(format!(
                "containerd namespace {namespace:?} is not a valid name"
            )));
        }
        // A reference is a name, tag and digest: never an option of the tool it is passed to.
        let ref_ok = !reference.is_empty()
            && reference.len() <= 512
            && reference
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b))
            && reference.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && !reference.ends_with('/')
            && !reference.contains("//");
        if !ref_ok {
            return Err(refused(format!("image reference {reference:?} is not valid")));
        }
        let address = std::env::var_os("CONTAINERD_ADDRESS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                if !Path::new(DEFAULT_ADDRESS).exists() && Path::new(DOCKER_ADDRESS).exists() {
                    PathBuf::from(DOCKER_ADDRESS)
                } else {
                    PathBuf::from(DEFAULT_ADDRESS)
                }
            });
        Ok(Self {
            address,
            namespace,
            reference,
        })
    }

    /// containerd writes the image for this architecture as an OCI archive at `to`.
    pub fn export(&self, to: &Path) -> Result<(), RuntimeError> {
        if !self.address.exists() {
            return Err(RuntimeError::Io(format!(
                "no containerd socket at {} (set CONTAINERD_ADDRESS)",
                self.address.display()
            )));
        }
        let platform = format!("linux/{}", crate::image::this_arch());
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.address)
            .args([
                "--namespace",
                &self.namespace,
                "images",
                "export",
                "--platform",
                &platform,
            ])
            .arg(to)
            .arg(&self.reference)
            .output()
            .map_err(|e| RuntimeError::Io(format!("run ctr (containerd's CLI): {e}")))?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        let err = err.trim().trim_start_matches("ctr: ");
        if err.contains("not found") {
            Err(RuntimeError::NotFound(format!("{self} ({err})")))
        } else {
            Err(RuntimeError::Io(format!("containerd export of {self}: {err}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_into_namespace_and_reference() {
        let c = Containerd::parse("docker.io/library/busybox:1.36").unwrap();
        assert_eq!(
            (c.namespace.as_str(), c.reference.as_str()),
            ("default", "docker.io/library/busybox:1.36")
        );
        let c = Containerd::parse("moby/docker.io/library/busybox:1.36").unwrap();
        assert_eq!(
            (c.namespace.as_str(), c.reference.as_str()),
            ("moby", "docker.io/library/busybox:1.36")
        );
        let c = Containerd::parse("wolf-test/busybox:1").unwrap();
        assert_eq!((c.namespace.as_str(), c.reference.as_str()), ("wolf-test", "busybox:1"));
        let c = Containerd::parse("localhost:5000/x:1").unwrap();
        assert_eq!(c.namespace, "default");
        let c = Containerd::parse("busybox@sha256:abc").unwrap();
        assert_eq!(
            (c.namespace.as_str(), c.reference.as_str()),
            ("default", "busybox@sha256:abc")
        );
        for bad in [
            "",
            "ns/",
            "-x",
            "ns/--address=/tmp/s",
            "ns/a b",
            "n$s/x",
            "ns/x;rm",
            "_ns/x",
        ] {
            assert!(Containerd::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
