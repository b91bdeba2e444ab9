//! The runtime store under the data dir:
//!
//! ```text
//! runtimes/                      0700, root's
//!   blobs/sha256/<hex>           layer blobs as the images hold them, content-addressed and
//!                                shared between runtimes (checked against their digest)
//!   roots/<name>/runtime.json    what was imported: digest, source, layers, config, totals
//!   roots/<name>/rootfs/         the unpacked root, bound read-only into the sandboxes
//!   tmp/                         imports in progress (renamed into roots/ when complete)
//! ```
//!
//! An import is staged in `tmp/` and renamed into place whole, so a runtime is either all
//! there or not at all; a crash leaves only `tmp/` to clear (done at the next import).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::RuntimeError;
use crate::image::{Image, ImageConfig, sha256_hex, tar_stream};
use crate::unpack::{Bounds, Dropped, Totals, apply_layer};

/// What is recorded of an imported runtime (`runtime.json`, `wolf runtime inspect`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeInfo {
    /// Its name.
    pub name: String,
    /// The image's digest (its manifest's; an old docker archive's config's).
    pub digest: String,
    /// `oci` or `docker-archive`.
    pub format: String,
    /// What it was imported from, as given.
    pub source: String,
    /// When (RFC 3339).
    pub imported_at: String,
    /// Its layers' digests, lowest first.
    pub layers: Vec<String>,
    /// The image's config (environment, working dir, platform).
    pub config: ImageConfig,
    /// Bytes of files unpacked.
    pub bytes: u64,
    /// Entries read from the layers.
    pub entries: u64,
    /// What the unpacking left out or changed.
    pub dropped: Dropped,
    /// How long the import took, milliseconds.
    pub import_ms: u64,
}

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    bounds: Bounds,
}

impl Store {
    /// The store of data dir `data_dir` (made on first import).
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("runtimes"),
            bounds: Bounds::default(),
        }
    }

    /// With other bounds on each runtime's root.
    pub fn with_bounds(mut self, bounds: Bounds) -> Self {
        self.bounds = bounds;
        self
    }

    /// The root of runtime `name` (not checked to exist).
    pub fn root(&self, name: &str) -> PathBuf {
        self.dir.join("roots").join(name).join("rootfs")
    }

    /// Import the image at `source` (an OCI layout directory, or a tar of one, or a `docker
    /// save` archive) as runtime `name`; with `replace`, an existing one of that name goes.
    pub fn import(&self, name: &str, source: &Path, replace: bool) -> Result<RuntimeInfo, RuntimeError> {
        self.import_as(name, source, &source.display().to_string(), replace)
    }

    /// Import an image from containerd's content store: exported by containerd into this
    /// store's tmp/ (an OCI archive of this architecture), then imported as a file is.
    pub fn import_containerd(
        &self,
        name: &str,
        source: &crate::containerd::Containerd,
        replace: bool,
    ) -> Result<RuntimeInfo, RuntimeError> {
        valid_name(name)?;
        std::fs::create_dir_all(self.dir.join("tmp")).map_err(|e| io_err(&self.dir, e))?;
        restrict(&self.dir)?;
        let stage = tempdir_in(&self.dir.join("tmp"))?;
        let archive = stage.join("export.tar");
        let out = source
            .export(&archive)
            .and_then(|()| self.import_as(name, &archive, &source.to_string(), replace));
        let _ = std::fs::remove_dir_all(&stage);
        out
    }

    fn import_as(&self, name: &str, source: &Path, label: &str, replace: bool) -> Result<RuntimeInfo, RuntimeError> {
        valid_name(name)?;
        let started = Instant::now();
        for sub in ["blobs/sha256", "roots", "tmp"] {
            std::fs::create_dir_all(self.dir.join(sub)).map_err(|e| io_err(&self.dir, e))?;
        }
        restrict(&self.dir)?;
        if !replace && self.dir.join("roots").join(name).exists() {
            return Err(RuntimeError::Exists(name.to_string()));
        }
        let stage = tempdir_in(&self.dir.join("tmp"))?;
        let result = self.import_staged(name, source, label, &stage, started);
        let out = result.and_then(|info| {
            let done = self.dir.join("roots").join(name);
            if done.exists() {
                // Replaced: the old one leaves through tmp/ (a job may still hold its mounts).
                let old = stage.with_extension("old");
                std::fs::rename(&done, &old).map_err(|e| io_err(&done, e))?;
                let _ = std::fs::remove_dir_all(&old);
            }
            std::fs::rename(stage.join("runtime"), &done).map_err(|e| io_err(&done, e))?;
            Ok(info)
        });
        let _ = std::fs::remove_dir_all(&stage);
        out
    }

    fn import_staged(
        &self,
        name: &str,
        source: &Path,
        label: &str,
        stage: &Path,
        started: Instant,
    ) -> Result<RuntimeInfo, RuntimeError> {
        let meta = std::fs::metadata(source).map_err(|e| io_err(source, e))?;
        let mut known = std::collections::HashMap::new();
        let image_dir = if meta.is_dir() {
            source.to_path_buf()
        } else {
            // A tar of an image: read once, its blobs straight into the store.
            let dir = stage.join("image");
            std::fs::create_dir(&dir).map_err(|e| io_err(&dir, e))?;
            let file = File::open(source).map_err(|e| io_err(source, e))?;
            known = self.unpack_archive(file, &dir)?;
            dir
        };
        let image = Image::open(&image_dir)?;
        // Each layer into the blob store (unless the archive put it there), checked against
        // its digest.
        let mut layers = Vec::new();
        for layer in &image.layers {
            let digest = match (known.get(&layer.path), &layer.digest) {
                (Some(d), Some(want)) if d != want => {
                    return Err(RuntimeError::Invalid(format!("layer digest mismatch: {want} has {d}")));
                }
                (Some(d), _) => {
                    let staged = image_dir.join(&layer.path);
                    if staged.symlink_metadata().is_ok_and(|m| m.file_type().is_file()) {
                        self.adopt(&staged, d)?;
                    }
                    d.clone()
                }
                (None, want) => self.store_blob(image.blob(layer)?, want.as_deref())?,
            };
            layers.push(digest);
        }
        let runtime = stage.join("runtime");
        let rootfs = runtime.join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(|e| io_err(&rootfs, e))?;
        let root = open_dir(&rootfs)?;
        let mut totals = Totals::default();
        for digest in &layers {
            let blob = File::open(self.blob(digest)?).map_err(|e| io_err(&self.dir, e))?;
            apply_layer(&root, tar_stream(blob)?, self.bounds, &mut totals)?;
        }
        let info = RuntimeInfo {
            name: name.to_string(),
            digest: image.digest.clone(),
            format: image.format.to_string(),
            source: label.to_string(),
            imported_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            layers,
            config: image.config.clone(),
            bytes: totals.bytes,
            entries: totals.entries,
            dropped: totals.dropped,
            import_ms: started.elapsed().as_millis() as u64,
        };
        let json = serde_json::to_vec_pretty(&info).map_err(|e| RuntimeError::Io(e.to_string()))?;
        std::fs::write(runtime.join("runtime.json"), json).map_err(|e| io_err(&runtime, e))?;
        Ok(info)
    }

    /// Unpack the image archive `file` into `dir` (on the store's filesystem): each blob (under
    /// `blobs/sha256/`, or an old docker archive's `layer.tar`) hashed as it is written, so a
    /// layer is then moved into the store, not copied again ([`Store::adopt`]); the other
    /// regular files (the JSON documents) at most 4 MiB each; symlinks (old archives link identical layers) are made last, inside `dir`
    /// (the image is read with every path resolved in it). Returns the digest of each blob by
    /// its path.
    fn unpack_archive(
        &self,
        file: File,
        dir: &Path,
    ) -> Result<std::collections::HashMap<PathBuf, String>, RuntimeError> {
        let mut archive = tar::Archive::new(tar_stream(file)?);
        let mut known = std::collections::HashMap::new();
        let mut links = Vec::new();
        let mut total = 0u64;
        let entries = archive
            .entries()
            .map_err(|e| RuntimeError::Invalid(format!("not a tar archive: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| RuntimeError::Invalid(format!("the archive: {e}")))?;
            let kind = entry.header().entry_type();
            let Some(path) = entry
                .path()
                .ok()
                .and_then(|p| crate::unpack::normalize(&p))
                .filter(|p| !p.as_os_str().is_empty())
            else {
                continue;
            };
            if kind.is_symlink() {
                if let Some(target) = entry.link_name().ok().flatten() {
                    links.push((path, target.into_owned()));
                }
                continue;
            }
            if !kind.is_file() {
                continue; // directories are made as needed; nothing else belongs in an archive
            }
            total = total.saturating_add(entry.size());
            if total > self.bounds.max_bytes {
                return Err(RuntimeError::TooLarge(format!(
                    "an archive of more than {} bytes",
                    self.bounds.max_bytes
                )));
            }
            let at = dir.join(&path);
            if let Some(parent) = at.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
            }
            let blob = path.starts_with("blobs/sha256") || path.file_name().is_some_and(|n| n == "layer.tar");
            if blob {
                if at.symlink_metadata().is_ok() {
                    return Err(RuntimeError::Invalid(format!(
                        "{} is in the archive twice",
                        path.display()
                    )));
                }
                let digest = write_hashed(&mut entry, &at)?;
                if let Some(named) = crate::image::digest_in_path(&path)
                    && named != digest
                {
                    return Err(RuntimeError::Invalid(format!("digest mismatch: {named} has {digest}")));
                }
                known.insert(path, digest);
            } else {
                if entry.size() > 4 << 20 {
                    return Err(RuntimeError::Invalid(format!(
                        "{} is larger than 4 MiB",
                        path.display()
                    )));
                }
                let mut out = File::create(&at).map_err(|e| io_err(&at, e))?;
                std::io::copy(&mut entry, &mut out).map_err(|e| io_err(&at, e))?;
            }
        }
        for (path, target) in links {
            // Only in a directory the files made, never through another link.
            let mut parent = dir.to_path_buf();
            let real = path.parent().into_iter().flat_map(|p| p.components()).all(|c| {
                parent.push(c);
                parent.symlink_metadata().is_ok_and(|m| m.file_type().is_dir())
            });
            let at = dir.join(&path);
            if real && at.symlink_metadata().is_err() {
                std::os::unix::fs::symlink(&target, &at).map_err(|e| io_err(&at, e))?;
            }
        }
        Ok(known)
    }

    /// Copy a blob into the store (unless it is there), checking it against `digest`; the
    /// digest of what was read when the image names none.
    fn store_blob(&self, from: impl Read, digest: Option<&str>) -> Result<String, RuntimeError> {
        if let Some(d) = digest
            && let Ok(p) = self.blob(d)
            && p.is_file()
        {
            return Ok(d.to_string());
        }
        let tmp = self
            .dir
            .join("tmp")
            .join(format!("blob-{}", uuid::Uuid::new_v4().simple()));
        let got = write_hashed(from, &tmp)?;
        if let Some(d) = digest
            && d != got
        {
            let _ = std::fs::remove_file(&tmp);
            return Err(RuntimeError::Invalid(format!("layer digest mismatch: {d} has {got}")));
        }
        self.adopt(&tmp, &got)?;
        Ok(got)
    }

    /// Move the checked blob at `path` (on the store's filesystem) into the store as `digest`.
    fn adopt(&self, path: &Path, digest: &str) -> Result<(), RuntimeError> {
        let at = self.blob(digest)?;
        if at.is_file() {
            let _ = std::fs::remove_file(path);
            return Ok(());
        }
        std::fs::rename(path, &at).map_err(|e| io_err(&at, e))
    }

    fn blob(&self, digest: &str) -> Result<PathBuf, RuntimeError> {
        let hex = sha256_hex(digest).ok_or_else(|| RuntimeError::Invalid(format!("not a sha256 digest: {digest}")))?;
        Ok(self.dir.join("blobs/sha256").join(hex))
    }

    /// Every imported runtime, by name.
    pub fn list(&self) -> Result<Vec<RuntimeInfo>, RuntimeError> {
        let roots = self.dir.join("roots");
        let mut out = Vec::new();
        let Ok(listing) = std::fs::read_dir(&roots) else {
            return Ok(out);
        };
        for e in listing.flatten() {
            if let Some(name) = e.file_name().to_str()
                && let Ok(info) = self.inspect(name)
            {
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Runtime `name`'s record.
    pub fn inspect(&self, name: &str) -> Result<RuntimeInfo, RuntimeError> {
        valid_name(name)?;
        let p = self.dir.join("roots").join(name).join("runtime.json");
        let bytes = std::fs::read(&p).map_err(|_| RuntimeError::NotFound(name.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| RuntimeError::Invalid(format!("{}: {e}", p.display())))
    }

    /// Remove runtime `name`, and the blobs no other runtime uses.
    pub fn remove(&self, name: &str) -> Result<(), RuntimeError> {
        self.inspect(name)?;
        let dir = self.dir.join("roots").join(name);
        let gone = self
            .dir
            .join("tmp")
            .join(format!("rm-{}", uuid::Uuid::new_v4().simple()));
        std::fs::rename(&dir, &gone).map_err(|e| io_err(&dir, e))?;
        std::fs::remove_dir_all(&gone).map_err(|e| io_err(&gone, e))?;
        let used: std::collections::HashSet<String> = self
            .list()?
            .into_iter()
            .flat_map(|r| r.layers)
            .filter_map(|d| sha256_hex(&d).map(str::to_string))
            .collect();
        if let Ok(blobs) = std::fs::read_dir(self.dir.join("blobs/sha256")) {
            for b in blobs.flatten() {
                if !used.contains(b.file_name().to_str().unwrap_or("")) {
                    let _ = std::fs::remove_file(b.path());
                }
            }
        }
        Ok(())
    }

    /// `(host, inside)` read-only binds that make runtime `name`'s root the sandbox's: each
    /// top-level entry of the root, and each entry of its `/etc` but the files Wolf writes
    /// there itself. The places Wolf provides (`/tmp`, `/dev`, `/proc`, `/sys`, the work dir)
    /// are left to Wolf.
    pub fn binds(&self, name: &str, work_dir: &str) -> Result<Vec<(PathBuf, PathBuf)>, RuntimeError> {
        self.inspect(name)?;
        let root = self.root(name);
        let mut out = Vec::new();
        let names = |dir: &Path| -> Result<Vec<String>, RuntimeError> {
            let mut v: Vec<String> = std::fs::read_dir(dir)
                .map_err(|e| io_err(dir, e))?
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect();
            v.sort();
            Ok(v)
        };
        let work = work_dir.trim_start_matches('/');
        for top in names(&root)? {
            if ["tmp", "dev", "proc", "sys", work].contains(&top.as_str()) {
                continue;
            }
            if top == "etc" && root.join("etc").symlink_metadata().is_ok_and(|m| m.is_dir()) {
                for e in names(&root.join("etc"))? {
                    if !WOLF_ETC.contains(&e.as_str()) {
                        out.push((root.join("etc").join(&e), PathBuf::from("/etc").join(&e)));
                    }
                }
                continue;
            }
            out.push((root.join(&top), PathBuf::from("/").join(&top)));
        }
        Ok(out)
    }
}

/// Write `from` to a new file `to` (synced), returning its digest.
fn write_hashed(mut from: impl Read, to: &Path) -> Result<String, RuntimeError> {
    let mut out = File::create(to).map_err(|e| io_err(to, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = from.read(&mut buf).map_err(|e| io_err(to, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| io_err(to, e))?;
    }
    out.sync_all().map_err(|e| io_err(to, e))?;
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// Files of `/etc` that Wolf writes itself in every sandbox (or that a job has no use for).
const WOLF_ETC: [&str; 7] = [
    "passwd",
    "group",
    "hosts",
    "hostname",
    "shadow",
    "gshadow",
    "resolv.conf",
];

/// Runtime names: a lowercase letter or digit, then up to 62 of those, `.`, `_` or `-`.
pub fn valid_name(name: &str) -> Result<(), RuntimeError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Invalid(format!(
            "runtime name {name:?}: a lowercase letter or digit, then up to 62 of those, '.', '_' or '-'"
        )))
    }
}

fn open_dir(p: &Path) -> Result<OwnedFd, RuntimeError> {
    nix::fcntl::open(
        p,
        nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| RuntimeError::Io(format!("{}: {e}", p.display())))
}

fn restrict(p: &Path) -> Result<(), RuntimeError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700)).map_err(|e| io_err(p, e))
}

fn tempdir_in(parent: &Path) -> Result<PathBuf, RuntimeError> {
    let p = parent.join(format!("import-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&p).map_err(|e| io_err(&p, e))?;
    Ok(p)
}

fn io_err(p: &Path, e: std::io::Error) -> RuntimeError {
    RuntimeError::Io(format!("{}: {e}", p.display()))
}
