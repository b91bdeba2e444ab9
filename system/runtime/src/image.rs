//! Reading an image: an OCI image layout (a directory, or a tar of one) or a `docker save`
//! archive (which Docker 25+ writes as an OCI layout with a `manifest.json` beside it; older
//! ones hold `<id>/layer.tar` files). What comes out is the image's manifest digest, its
//! config (environment, working dir, architecture) and its layers in order, each read from a
//! blob whose digest is checked as it is read.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::RuntimeError;

/// Largest JSON document (index, manifest, config) read from an image.
const MAX_JSON: u64 = 4 << 20;
/// Indexes followed at most from `index.json` to a manifest.
const MAX_DEPTH: usize = 4;

/// An image opened from a directory (an OCI layout, or an unpacked archive).
pub struct Image {
    dir: OwnedFd,
    /// How the image was given.
    pub format: &'static str,
    /// The manifest's digest (`sha256:…`), or for an old docker archive the config's.
    pub digest: String,
    /// The image's config.
    pub config: ImageConfig,
    /// Layers, lowest first.
    pub layers: Vec<Layer>,
}

/// One layer: where its blob is in the image, and its digest when the image names one.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Path of the blob relative to the image's directory.
    pub path: PathBuf,
    /// `sha256:…`, checked while the blob is read; `None` for an old docker archive's
    /// `layer.tar` (then the digest of what was read is recorded).
    pub digest: Option<String>,
}

/// What Wolf keeps of an image's config.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageConfig {
    /// `amd64`, `arm64`…
    #[serde(default)]
    pub architecture: String,
    /// `linux`.
    #[serde(default)]
    pub os: String,
    /// The image's environment (`KEY=value`).
    #[serde(default)]
    pub env: Vec<String>,
    /// Its working directory.
    #[serde(default)]
    pub working_dir: String,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    config: Option<RawRunConfig>,
}

#[derive(Deserialize)]
struct RawRunConfig {
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    working_dir: Option<String>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// This machine's architecture as images name it.
pub fn this_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

impl Image {
    /// Open the image in directory `dir` (an OCI layout or an unpacked docker archive).
    pub fn open(dir: &Path) -> Result<Self, RuntimeError> {
        let fd = openat2(
            nix::fcntl::AT_FDCWD,
            dir,
            OpenHow::new().flags(OFlag::O_DIRECTORY | OFlag::O_PATH | OFlag::O_CLOEXEC),
        )
        .map_err(|e| RuntimeError::Invalid(format!("{}: {e}", dir.display())))?;
        let mut image = Image {
            dir: fd,
            format: "oci",
            digest: String::new(),
            config: ImageConfig::default(),
            layers: Vec::new(),
        };
        if image.exists("index.json") {
            let manifest_digest = image.pick_manifest()?;
            let manifest: Manifest = image.json(&blob_path(&manifest_digest)?, Some(&manifest_digest))?;
            image.digest = manifest_digest;
            image.config = image.config_of(&blob_path(&manifest.config.digest)?, Some(&manifest.config.digest))?;
            for l in manifest.layers {
                if l.media_type.contains("zstd") {
                    return Err(RuntimeError::Invalid(format!(
                        "layer {} is zstd-compressed: only tar and tar+gzip layers are read",
                        l.digest
                    )));
                }
                image.layers.push(Layer {
                    path: blob_path(&l.digest)?,
                    digest: Some(l.digest),
                });
            }
            if image.exists("manifest.json") {
                image.format = "docker-archive";
            }
        } else if image.exists("manifest.json") {
            image.format = "docker-archive";
            let entries: Vec<DockerEntry> = image.json(Path::new("manifest.json"), None)?;
            let [entry] = <[DockerEntry; 1]>::try_from(entries).map_err(|v| {
                RuntimeError::Invalid(format!(
                    "manifest.json lists {} images; give an archive of one",
                    v.len()
                ))
            })?;
            let config_path = relative(&entry.config)?;
            let config_bytes = image.read_small(&config_path)?;
            image.digest = format!("sha256:{}", hex::encode(Sha256::digest(&config_bytes)));
            image.config = parse_config(&config_bytes)?;
            for l in entry.layers {
                let path = relative(&l)?;
                let digest = digest_in_path(&path);
                image.layers.push(Layer { path, digest });
            }
        } else {
            return Err(RuntimeError::Invalid(
                "neither an OCI image layout (index.json) nor a docker archive (manifest.json)".into(),
            ));
        }
        if !image.config.os.is_empty() && image.config.os != "linux" {
            return Err(RuntimeError::Invalid(format!(
                "the image is for {}, not linux",
                image.config.os
            )));
        }
        if !image.config.architecture.is_empty() && image.config.architecture != this_arch() {
            return Err(RuntimeError::Invalid(format!(
                "the image is for {}, this host is {}",
                image.config.architecture,
                this_arch()
            )));
        }
        if image.layers.is_empty() {
            return Err(RuntimeError::Invalid("the image has no layers".into()));
        }
        Ok(image)
    }

    /// The blob of `layer` as the image holds it (compressed or not).
    pub fn blob(&self, layer: &Layer) -> Result<std::fs::File, RuntimeError> {
        self.file(&layer.path)
    }

    fn pick_manifest(&self) -> Result<String, RuntimeError> {
        let mut index: Index = self.json(Path::new("index.json"), None)?;
        for _ in 0..MAX_DEPTH {
            let wanted = index
                .manifests
                .iter()
                .find(|d| {
                    d.platform
                        .as_ref()
                        .is_none_or(|p| p.os == "linux" && p.architecture == this_arch())
                })
                .ok_or_else(|| RuntimeError::Invalid(format!("no manifest for linux/{} in the image", this_arch())))?;
            if wanted.media_type.contains("index") || wanted.media_type.contains("manifest.list") {
                let digest = wanted.digest.clone();
                index = self.json(&blob_path(&digest)?, Some(&digest))?;
                continue;
            }
            return Ok(wanted.digest.clone());
        }
        Err(RuntimeError::Invalid("indexes nested too deep".into()))
    }

    fn config_of(&self, path: &Path, digest: Option<&str>) -> Result<ImageConfig, RuntimeError> {
        let bytes = self.read_small(path)?;
        if let Some(d) = digest {
            check(d, &bytes)?;
        }
        parse_config(&bytes)
    }

    fn json<T: serde::de::DeserializeOwned>(&self, path: &Path, digest: Option<&str>) -> Result<T, RuntimeError> {
        let bytes = self.read_small(path)?;
        if let Some(d) = digest {
            check(d, &bytes)?;
        }
        serde_json::from_slice(&bytes).map_err(|e| RuntimeError::Invalid(format!("{}: {e}", path.display())))
    }

    fn read_small(&self, path: &Path) -> Result<Vec<u8>, RuntimeError> {
        let mut out = Vec::new();
        self.file(path)?
            .take(MAX_JSON + 1)
            .read_to_end(&mut out)
            .map_err(|e| RuntimeError::Io(format!("{}: {e}", path.display())))?;
        if out.len() as u64 > MAX_JSON {
            return Err(RuntimeError::Invalid(format!(
                "{} is larger than {MAX_JSON} bytes",
                path.display()
            )));
        }
        Ok(out)
    }

    fn exists(&self, name: &str) -> bool {
        self.file(Path::new(name)).is_ok()
    }

    /// A regular file of the image, resolved inside the image's directory (a symlink in an
    /// archive cannot point outside it).
    fn file(&self, path: &Path) -> Result<std::fs::File, RuntimeError> {
        let fd = openat2(
            &self.dir,
            path,
            OpenHow::new()
                .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
                .mode(Mode::empty())
                .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS),
        )
        .map_err(|e| RuntimeError::Invalid(format!("{}: {e}", path.display())))?;
        let file = std::fs::File::from(fd);
        let meta = file.metadata().map_err(|e| RuntimeError::Io(e.to_string()))?;
        if !meta.is_file() {
            return Err(RuntimeError::Invalid(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        Ok(file)
    }
}

fn parse_config(bytes: &[u8]) -> Result<ImageConfig, RuntimeError> {
    let raw: RawConfig =
        serde_json::from_slice(bytes).map_err(|e| RuntimeError::Invalid(format!("the image config: {e}")))?;
    let run = raw.config.unwrap_or(RawRunConfig {
        env: None,
        working_dir: None,
    });
    Ok(ImageConfig {
        architecture: raw.architecture,
        os: raw.os,
        env: run.env.unwrap_or_default(),
        working_dir: run.working_dir.unwrap_or_default(),
    })
}

/// `blobs/sha256/<hex>` for a digest; only sha256 digests of 64 hex digits are taken.
pub fn blob_path(digest: &str) -> Result<PathBuf, RuntimeError> {
    let hex = sha256_hex(digest).ok_or_else(|| RuntimeError::Invalid(format!("not a sha256 digest: {digest:?}")))?;
    Ok(PathBuf::from("blobs/sha256").join(hex))
}

/// The 64 hex digits of a `sha256:` digest.
pub fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())).then_some(hex)
}

/// The digest a blob's path names (`…/sha256/<hex>`), if it names one.
pub(crate) fn digest_in_path(p: &Path) -> Option<String> {
    let hex = p.file_name()?.to_str()?;
    let d = format!("sha256:{hex}");
    (sha256_hex(&d).is_some() && p.parent().is_some_and(|q| q.ends_with("sha256"))).then_some(d)
}

fn relative(p: &str) -> Result<PathBuf, RuntimeError> {
    crate::unpack::normalize(Path::new(p))
        .filter(|q| !q.as_os_str().is_empty())
        .ok_or_else(|| RuntimeError::Invalid(format!("a path in manifest.json leaves the archive: {p:?}")))
}

fn check(digest: &str, bytes: &[u8]) -> Result<(), RuntimeError> {
    let got = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
    if got != digest {
        return Err(RuntimeError::Invalid(format!("digest mismatch: {digest} has {got}")));
    }
    Ok(())
}

/// A layer blob's tar stream: gunzipped when it is gzip (by its first bytes, whatever the
/// media type says); zstd is refused.
pub fn tar_stream(blob: std::fs::File) -> Result<Box<dyn Read>, RuntimeError> {
    let mut buffered = std::io::BufReader::new(blob);
    let head = std::io::BufRead::fill_buf(&mut buffered).map_err(|e| RuntimeError::Io(e.to_string()))?;
    Ok(match head {
        [0x1f, 0x8b, ..] => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            return Err(RuntimeError::Invalid(
                "a zstd-compressed layer: only tar and tar+gzip layers are read".into(),
            ));
        }
        _ => Box::new(buffered),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sha256_digests_name_blobs() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            blob_path(&d).unwrap(),
            PathBuf::from(format!("blobs/sha256/{}", "a".repeat(64)))
        );
        assert!(blob_path("sha256:../../etc/passwd").is_err());
        assert!(blob_path(&format!("sha512:{}", "a".repeat(64))).is_err());
        assert!(blob_path(&format!("sha256:{}", "A".repeat(64))).is_err());
    }
}
