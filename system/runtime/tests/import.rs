//! Importing images into the runtime store: each source kind, whiteouts, and hostile images
//! (setuid, device nodes, links and names that point outside the root, a symlink planted to
//! lead a later entry out, a 10 GB file) — imported safely or refused, never written outside.
//! Needs root (files are made as the importer, and the test checks modes and ownership).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wolf_runtime::{RuntimeError, Store};

/// One tar entry of a test layer.
enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, u32, &'a [u8]),
    Link(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Char(&'a str),
    Fifo(&'a str),
}

fn layer(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        match e {
            E::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            E::File(p, mode, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                // Set by hand: tar writers refuse names with `..`, which is the point here.
                raw(&mut h.as_gnu_mut().unwrap().name, p);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
            E::Link(p, target) | E::Hard(p, target) => {
                h.set_entry_type(if matches!(e, E::Link(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.set_mode(0o777);
                h.set_size(0);
                raw(&mut h.as_gnu_mut().unwrap().name, p);
                raw(&mut h.as_gnu_mut().unwrap().linkname, target);
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
            E::Char(p) | E::Fifo(p) => {
                h.set_entry_type(if matches!(e, E::Char(..)) {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Fifo
                });
                h.set_mode(0o666);
                h.set_size(0);
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn raw(field: &mut [u8; 100], s: &str) {
    field.fill(0);
    field[..s.len()].copy_from_slice(s.as_bytes());
}

/// A tar whose one header (written by hand: no tar writer would write it without the data)
/// says a file of `size` bytes follows, and nothing does.
fn header_only(name: &str, size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_cksum();
    let mut v = h.as_bytes().to_vec();
    v.extend_from_slice(&[0u8; 1024]);
    v
}

fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// An OCI image layout in `dir` with `layers` (raw tar blobs, gzipped when `gzip`).
fn oci(dir: &Path, layers: &[Vec<u8>], gzip: bool) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let d = digest(b);
        std::fs::write(blobs.join(&d[7..]), b).unwrap();
        d
    };
    let mut descs = Vec::new();
    for l in layers {
        let blob = if gzip {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(l).unwrap();
            e.finish().unwrap()
        } else {
            l.clone()
        };
        let media = if gzip {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        } else {
            "application/vnd.oci.image.layer.v1.tar"
        };
        descs.push(serde_json::json!({"mediaType": media, "digest": put(&blob), "size": blob.len()}));
    }
    let config = serde_json::json!({"architecture": wolf_runtime::image::this_arch(), "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin", "IMAGE=test"], "WorkingDir": "/srv"}});
    let config = serde_json::to_vec(&config).unwrap();
    let config_d = put(&config);
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d, "size": config.len()},
        "layers": descs});
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let manifest_d = put(&manifest);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_d, "size": manifest.len(), "platform": {"architecture": wolf_runtime::image::this_arch(), "os": "linux"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    manifest_d
}

/// A tar of directory `dir`'s files (what `docker save` or `tar -C dir -c .` gives).
fn tar_of(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap()
}

struct Setup {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    work: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    Setup { _tmp: tmp, data, work }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn an_oci_layout_is_imported_with_its_links_and_whiteouts() {
    if !is_root() {
        eprintln!("skipped: the import test needs root (files are made as root and checked)");
        return;
    }
    let s = setup();
    let low = layer(&[
        E::Dir("usr", 0o755),
        E::Dir("usr/bin", 0o755),
        E::File("usr/bin/tool", 0o755, b"#!/bin/sh\necho v1\n"),
        E::Link("bin", "usr/bin"),
        E::Hard("usr/bin/tool2", "usr/bin/tool"),
        E::Dir("opt/a", 0o755),
        E::File("opt/a/x", 0o644, b"x"),
        E::File("opt/a/y", 0o644, b"y"),
        E::File("opt/gone", 0o644, b"gone"),
        E::File("etc/passwd", 0o644, b"root:x:0:0::/root:/bin/sh\n"),
        E::File("etc/os-release", 0o644, b"ID=test\n"),
    ]);
    let high = layer(&[
        E::File("opt/.wh.gone", 0o644, b""),
        E::File("opt/a/new", 0o644, b"new"),
        E::File("opt/a/.wh..wh..opq", 0o644, b""),
    ]);
    let image = s.work.join("image");
    let manifest = oci(&image, &[low, high], true);
    let store = Store::new(&s.data);
    let info = store.import("tools-1", &image, false).unwrap();
    assert_eq!(info.digest, manifest);
    assert_eq!(info.format, "oci");
    assert_eq!(info.layers.len(), 2);
    assert_eq!(info.config.working_dir, "/srv");
    let root = store.root("tools-1");
    assert_eq!(std::fs::read(root.join("bin/tool")).unwrap(), b"#!/bin/sh\necho v1\n");
    assert_eq!(std::fs::read_link(root.join("bin")).unwrap(), PathBuf::from("usr/bin"));
    let (a, b) = (
        std::fs::metadata(root.join("usr/bin/tool")).unwrap(),
        std::fs::metadata(root.join("usr/bin/tool2")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "a hard link inside the root is kept");
    assert!(!root.join("opt/gone").exists(), "a whiteout removes the lower file");
    let mut names: Vec<String> = std::fs::read_dir(root.join("opt/a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["new"], "an opaque dir keeps only its own layer's entries");
    // The binds: the root's top-level entries, /etc's one by one but the files Wolf writes.
    let binds = store.binds("tools-1", "/work").unwrap();
    let inside: Vec<String> = binds.iter().map(|(_, i)| i.display().to_string()).collect();
    assert!(
        inside.contains(&"/usr".to_string()) && inside.contains(&"/bin".to_string()),
        "{inside:?}"
    );
    assert!(inside.contains(&"/etc/os-release".to_string()), "{inside:?}");
    assert!(!inside.iter().any(|i| i == "/etc/passwd" || i == "/etc"), "{inside:?}");
    // Listed, inspected, refused a second time, replaced, removed with its blobs.
    assert_eq!(store.list().unwrap().len(), 1);
    assert!(matches!(
        store.import("tools-1", &image, false),
        Err(RuntimeError::Exists(_))
    ));
    store.import("tools-1", &image, true).unwrap();
    store.remove("tools-1").unwrap();
    assert!(matches!(store.inspect("tools-1"), Err(RuntimeError::NotFound(_))));
    let blobs = std::fs::read_dir(s.data.join("runtimes/blobs/sha256")).unwrap().count();
    assert_eq!(blobs, 0, "no runtime uses the blobs any more");
    assert!(store.import("../x", &image, false).is_err(), "names are checked");
}

#[test]
fn archives_of_both_kinds_are_imported() {
    if !is_root() {
        eprintln!("skipped: the import test needs root");
        return;
    }
    let s = setup();
    let one = layer(&[E::Dir("bin", 0o755), E::File("bin/tool", 0o755, b"v1")]);
    // A tar of an OCI layout.
    let image = s.work.join("oci");
    let manifest = oci(&image, std::slice::from_ref(&one), false);
    let oci_tar = s.work.join("oci.tar");
    std::fs::write(&oci_tar, tar_of(&image)).unwrap();
    let store = Store::new(&s.data);
    let info = store.import("from-tar", &oci_tar, false).unwrap();
    assert_eq!((info.digest.as_str(), info.format.as_str()), (manifest.as_str(), "oci"));
    // An old-style docker archive: manifest.json, <id>/layer.tar, <id>.json.
    let docker = s.work.join("docker");
    std::fs::create_dir_all(docker.join("abc")).unwrap();
    std::fs::write(docker.join("abc/layer.tar"), &one).unwrap();
    let config =
        serde_json::to_vec(&serde_json::json!({"architecture": wolf_runtime::image::this_arch(), "os": "linux"}))
            .unwrap();
    std::fs::write(docker.join("cfg.json"), &config).unwrap();
    std::fs::write(
        docker.join("manifest.json"),
        serde_json::to_vec(
            &serde_json::json!([{"Config": "cfg.json", "RepoTags": ["t:1"], "Layers": ["abc/layer.tar"]}]),
        )
        .unwrap(),
    )
    .unwrap();
    let docker_tar = s.work.join("docker.tar");
    std::fs::write(&docker_tar, tar_of(&docker)).unwrap();
    let info = store.import("from-docker", &docker_tar, false).unwrap();
    assert_eq!(info.format, "docker-archive");
    assert_eq!(info.digest, digest(&config), "an old archive's digest is its config's");
    assert_eq!(info.layers, [digest(&one)], "the same layer, stored once");
    assert_eq!(
        std::fs::read(store.root("from-docker").join("bin/tool")).unwrap(),
        b"v1"
    );
    assert_eq!(
        std::fs::read_dir(s.data.join("runtimes/blobs/sha256")).unwrap().count(),
        1
    );
}

#[test]
fn hostile_images_are_imported_safely_or_refused() {
    if !is_root() {
        eprintln!("skipped: the import test needs root");
        return;
    }
    let s = setup();
    let store = Store::new(&s.data);
    // Outside the root: a directory the entries below try to reach.
    let outside = s.work.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let outside_s = outside.display().to_string();
    let evil = layer(&[
        E::File("bin/sh", 0o4755, b"setuid root shell"),
        E::File("bin/sg", 0o2755, b"setgid"),
        E::Char("dev-null"),
        E::Fifo("pipe"),
        E::File("../../escaped", 0o644, b"out"),
        E::Hard("shadow", "/etc/shadow"),
        E::Hard("up", "../../../etc/passwd"),
        E::Link("out", &outside_s),
        E::File("out/pwned", 0o644, b"through a symlink"),
        E::Link("abs", "/"),
        E::File("abs/etc/landed", 0o644, b"in the root's etc"),
    ]);
    let image = s.work.join("evil");
    oci(&image, &[evil], false);
    let info = store.import("evil", &image, false).unwrap();
    let root = store.root("evil");
    let mode = std::fs::metadata(root.join("bin/sh")).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o755, "setuid cleared");
    assert_eq!(
        std::fs::metadata(root.join("bin/sg")).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    assert_eq!(std::fs::metadata(root.join("bin/sh")).unwrap().uid(), 0);
    assert!(
        !root.join("dev-null").exists() && !root.join("pipe").exists(),
        "no device nodes or FIFOs"
    );
    assert!(
        !root.join("shadow").exists() && !root.join("up").exists(),
        "no hard link out of the root"
    );
    assert!(
        !s.work.join("escaped").exists() && !s.data.join("escaped").exists(),
        "no ../ escape"
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written through a symlink"
    );
    assert!(!Path::new("/etc/landed").exists());
    assert_eq!(std::fs::read(root.join("etc/landed")).unwrap(), b"in the root's etc");
    let d = &info.dropped;
    assert_eq!((d.special_bits, d.devices, d.links, d.escapes), (2, 2, 2, 1), "{d:?}");

    // A file of 10 GB (the header says so; nothing of it is written) is refused.
    let big = s.work.join("big");
    oci(&big, &[header_only("huge", 10 << 30)], false);
    let e = store.import("big", &big, false).unwrap_err();
    assert!(matches!(e, RuntimeError::TooLarge(_)), "{e}");
    assert!(store.inspect("big").is_err());
    // A layer whose bytes do not match its digest is refused.
    let tampered = s.work.join("tampered");
    oci(&tampered, &[layer(&[E::File("a", 0o644, b"a")])], false);
    for b in std::fs::read_dir(tampered.join("blobs/sha256")).unwrap() {
        let p = b.unwrap().path();
        let bytes = std::fs::read(&p).unwrap();
        if bytes.len() > 1000 {
            let mut t = bytes.clone();
            t[600] ^= 1;
            std::fs::write(&p, t).unwrap();
        }
    }
    let e = store.import("tampered", &tampered, false).unwrap_err();
    assert!(e.to_string().contains("digest"), "{e}");
    // Neither an OCI layout nor a docker archive.
    let e = store.import("nothing", &s.work, false).unwrap_err();
    assert!(e.to_string().contains("neither"), "{e}");
    // A hostile archive around a good image: links planted to lead later entries out (a
    // link, then a link through it) are made last and never followed.
    let good = s.work.join("good");
    oci(&good, &[layer(&[E::File("ok", 0o644, b"ok")])], false);
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", &good).unwrap();
    for (name, target) in [("out", outside_s.as_str()), ("out/planted", "x")] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        raw(&mut h.as_gnu_mut().unwrap().name, name);
        raw(&mut h.as_gnu_mut().unwrap().linkname, target);
        h.set_cksum();
        b.append(&h, std::io::empty()).unwrap();
    }
    let wrapped = s.work.join("wrapped.tar");
    std::fs::write(&wrapped, b.into_inner().unwrap()).unwrap();
    store.import("wrapped", &wrapped, false).unwrap();
    assert_eq!(std::fs::read(store.root("wrapped").join("ok")).unwrap(), b"ok");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing made through a link"
    );
    store.remove("wrapped").unwrap();
    // The store holds only what was imported whole.
    let names: Vec<String> = store.list().unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["evil"]);
    assert_eq!(std::fs::read_dir(s.data.join("runtimes/tmp")).unwrap().count(), 0);
}
