//! Reading files back out of a work dir after a job's steps (the init process calls this once
//! every process of the steps is gone, so nothing changes the directory while it is read):
//! a compile step's artifacts, and the output files a submission asks for. Nothing here
//! follows a symbolic link — every component is checked with `lstat` and every file opened
//! with `O_NOFOLLOW | O_NONBLOCK` and checked with `fstat` — and every bound holds whatever
//! sizes the files claim.

use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::protocol::{self, Collect, JobSpec, RefusedFile};

/// A file taken: its path relative to the work dir, its mode bits, its contents.
pub type Taken = (String, u32, Vec<u8>);

/// The regular files the steps left in the work dir and its subdirectories (at most
/// [`MAX_DEPTH`] deep), other than the job's own: path, mode and contents. Directories are
/// entered only when `lstat` says they are real ones; a planted symlink or FIFO is skipped,
/// never followed or waited on ([`read_regular`]); the bounds hold whatever the sizes claim.
pub fn artifacts(work: &Path, job: &JobSpec, c: &Collect) -> Result<Vec<Taken>, String> {
    let given: std::collections::HashSet<&str> = job.files.iter().map(|f| f.name.as_str()).collect();
    let mut out = Vec::new();
    let mut total: u64 = 0;
    let mut dirs = vec![(work.to_path_buf(), String::new(), 1usize)];
    while let Some((dir, prefix, depth)) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("read the work dir: {e}"))?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| protocol::valid_work_name(n))
            .collect();
        names.sort();
        for name in names {
            let rel = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            let path = dir.join(&name);
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                if depth < MAX_DEPTH {
                    dirs.push((path, rel, depth + 1));
                }
                continue;
            }
            if !meta.is_file() || given.contains(rel.as_str()) {
                continue;
            }
            if out.len() >= c.max_files {
                return Err(format!("more than {} files in the work dir", c.max_files));
            }
            let room = c.max_bytes.saturating_sub(total);
            let (mode, data) = match read_regular(&path, room) {
                Ok(x) => x,
                Err(why) if why.starts_with("larger than") => {
                    return Err(format!("the files in the work dir exceed {} bytes", c.max_bytes));
                }
                // Replaced by something that is not a regular file since the lstat: skipped.
                Err(_) => continue,
            };
            total += data.len() as u64;
            out.push((rel, mode, data));
        }
    }
    Ok(out)
}

/// How deep [`artifacts`] looks: the depth of a path a job's file may have
/// ([`protocol::valid_work_path`]).
pub const MAX_DEPTH: usize = 8;

/// The output files `c.patterns` name. Each pattern is a relative path whose components may
/// hold `*` and `?`; a directory on the way must be a real one. What matches nothing, is not a
/// regular file, is a symbolic link, is larger than `max_file_bytes` or does not fit in
/// `max_bytes` any more is refused with the reason (never cut).
pub fn outputs(work: &Path, c: &Collect) -> (Vec<Taken>, Vec<RefusedFile>) {
    let mut taken: Vec<Taken> = Vec::new();
    let mut refused = Vec::new();
    let mut total = 0u64;
    for pattern in &c.patterns {
        let comps: Vec<&str> = pattern.split('/').collect();
        let mut found = Vec::new();
        let before = refused.len();
        walk(work, "", &comps, &mut found, &mut refused);
        if found.is_empty() && refused.len() == before {
            refused.push(RefusedFile {
                path: pattern.clone(),
                reason: "no file matches".into(),
            });
        }
        for rel in found {
            if taken.iter().any(|(n, _, _)| *n == rel) {
                continue;
            }
            let refuse = |reason: String| RefusedFile {
                path: rel.clone(),
                reason,
            };
            if taken.len() >= c.max_files {
                refused.push(refuse(format!("more than {} output files", c.max_files)));
                continue;
            }
            match read_regular(&work.join(&rel), c.max_file_bytes) {
                Ok((_, data)) if total + data.len() as u64 > c.max_bytes => {
                    refused.push(refuse(format!(
                        "the output files together exceed {} bytes",
                        c.max_bytes
                    )));
                }
                Ok((mode, data)) => {
                    total += data.len() as u64;
                    taken.push((rel.clone(), mode, data));
                }
                Err(why) => refused.push(refuse(why)),
            }
        }
    }
    (taken, refused)
}

/// Paths below `dir` (as `prefix`) matching `comps`; links on the way are refused.
fn walk(dir: &Path, prefix: &str, comps: &[&str], found: &mut Vec<String>, refused: &mut Vec<RefusedFile>) {
    let Some((first, rest)) = comps.split_first() else {
        return;
    };
    let mut names: Vec<String> = if first.contains(['*', '?']) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| glob(first, n))
            .collect()
    } else {
        vec![first.to_string()]
    };
    names.sort();
    for name in names {
        if !protocol::valid_work_name(&name) {
            continue;
        }
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let path = dir.join(&name);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            refused.push(RefusedFile {
                path: rel,
                reason: "a symbolic link (never followed)".into(),
            });
        } else if rest.is_empty() {
            if meta.is_file() {
                found.push(rel);
            } else if !first.contains(['*', '?']) {
                refused.push(RefusedFile {
                    path: rel,
                    reason: "not a regular file".into(),
                });
            }
        } else if meta.is_dir() {
            walk(&path, &rel, rest, found, refused);
        }
    }
}

/// A regular file's mode and contents, if it is one and at most `max` bytes.
fn read_regular(path: &Path, max: u64) -> Result<(u32, Vec<u8>), String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("cannot be opened: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot be read: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut data = Vec::new();
    (&file)
        .take(max.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|e| format!("cannot be read: {e}"))?;
    if data.len() as u64 > max {
        return Err(format!("larger than {max} bytes"));
    }
    Ok((meta.permissions().mode() & 0o777, data))
}

/// Whether `name` matches one pattern component (`*`: any run of characters, `?`: one).
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Iterative with one backtrack point: linear in practice, never exponential.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FileSpec;

    fn job(given: &[&str]) -> JobSpec {
        JobSpec {
            files: given
                .iter()
                .map(|n| FileSpec {
                    name: n.to_string(),
                    mode: 0o644,
                    blob: 0,
                })
                .collect(),
            steps: Vec::new(),
            collect: None,
        }
    }

    const ROOMY: Collect = Collect {
        max_files: 10,
        max_bytes: 1 << 20,
        patterns: Vec::new(),
        max_file_bytes: 0,
    };

    #[test]
    fn collecting_takes_regular_files_only_and_never_follows_a_planted_link() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host data").unwrap();
        let work = tempfile::tempdir().unwrap();
        let w = work.path();
        std::fs::write(w.join("main.c"), "int main;").unwrap();
        std::fs::write(w.join("main"), "\x7fELF").unwrap();
        std::fs::write(w.join("Main$Inner.class"), "cafe").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), w.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), w.join("dirlink")).unwrap();
        nix::unistd::mkfifo(&w.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::create_dir_all(w.join("com/x")).unwrap();
        std::fs::write(w.join("com/x/Main.class"), "x").unwrap();
        std::fs::write(w.join("com/x/Main.java"), "class Main {}").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), w.join("com/x/link")).unwrap();
        let mut deep = w.to_path_buf();
        for i in 0..10 {
            deep.push(format!("d{i}"));
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("too-deep"), "x").unwrap();
        let mut got = artifacts(w, &job(&["main.c", "com/x/Main.java"]), &ROOMY).unwrap();
        got.sort();
        let names: Vec<&str> = got.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["Main$Inner.class", "com/x/Main.class", "main"],
            "subdirectories entered; no link (to a file or a directory), FIFO, given file, or \
             anything deeper than a job's file may be"
        );
        assert_eq!(got[2].2, b"\x7fELF");
        assert!(
            !got.iter().any(|(_, _, d)| d == b"host data"),
            "a link's target is never read"
        );
    }

    #[test]
    fn collecting_past_a_bound_is_an_error_not_a_partial_answer() {
        let work = tempfile::tempdir().unwrap();
        std::fs::write(work.path().join("big"), vec![7u8; 2000]).unwrap();
        let tight = Collect {
            max_bytes: 1000,
            ..ROOMY
        };
        assert!(
            artifacts(work.path(), &job(&[]), &tight)
                .unwrap_err()
                .contains("exceed")
        );
        for i in 0..3 {
            std::fs::write(work.path().join(format!("f{i}")), "x").unwrap();
        }
        let few = Collect { max_files: 2, ..ROOMY };
        assert!(
            artifacts(work.path(), &job(&[]), &few)
                .unwrap_err()
                .contains("more than 2")
        );
    }

    fn outputs_of(w: &Path, patterns: &[&str], max_file_bytes: u64, max_bytes: u64) -> (Vec<Taken>, Vec<RefusedFile>) {
        let c = Collect {
            max_files: 32,
            max_bytes,
            patterns: patterns.iter().map(|p| p.to_string()).collect(),
            max_file_bytes,
        };
        outputs(w, &c)
    }

    #[test]
    fn output_files_follow_their_patterns_and_refuse_links_oversize_and_absence() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host data").unwrap();
        let work = tempfile::tempdir().unwrap();
        let w = work.path();
        std::fs::write(w.join("plot.png"), b"\x89PNG").unwrap();
        std::fs::create_dir(w.join("out")).unwrap();
        std::fs::write(w.join("out").join("a.csv"), "1,2").unwrap();
        std::fs::write(w.join("out").join("b.csv"), "3,4").unwrap();
        std::fs::write(w.join("out").join("c.txt"), "no").unwrap();
        std::fs::write(w.join("big.bin"), vec![0u8; 5000]).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), w.join("leak.txt")).unwrap();
        std::os::unix::fs::symlink(outside.path(), w.join("linked")).unwrap();
        let (mut got, refused) = outputs_of(
            w,
            &[
                "plot.png",
                "out/*.csv",
                "big.bin",
                "leak.txt",
                "linked/*",
                "missing.txt",
            ],
            1000,
            1 << 20,
        );
        got.sort();
        let names: Vec<&str> = got.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["out/a.csv", "out/b.csv", "plot.png"]);
        assert_eq!(got[2].2, b"\x89PNG");
        let why = |p: &str| {
            refused
                .iter()
                .find(|r| r.path == p)
                .map(|r| r.reason.clone())
                .unwrap_or_default()
        };
        assert!(why("big.bin").contains("larger than"), "{refused:?}");
        assert!(why("leak.txt").contains("symbolic link"), "{refused:?}");
        assert!(why("linked").contains("symbolic link"), "{refused:?}");
        assert!(why("missing.txt").contains("no file"), "{refused:?}");
        assert!(!got.iter().any(|(_, _, d)| d == b"host data"));
        // All together capped: what does not fit is refused, never cut.
        let (got, refused) = outputs_of(w, &["out/*.csv"], 1000, 4);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(refused[0].reason.contains("together"), "{refused:?}");
    }

    #[test]
    fn glob_components_match_as_documented() {
        assert!(glob("*.csv", "a.csv") && glob("?.csv", "a.csv") && glob("*", "x"));
        assert!(!glob("*.csv", "a.csvx") && !glob("?.csv", "ab.csv") && !glob("a*b*c", "acb"));
        assert!(glob("a*b*c", "aXbYc") && glob("**", ""));
    }
}
