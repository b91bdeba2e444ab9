//! The language registry: data from `languages.toml`, resolved against the host.
//!
//! An engine whose toolchain is missing on this host is *absent* (listed with the reason), not
//! broken. Host-side commands (version, probe, prepare) run with the host's PATH; commands in
//! the sandbox use absolute paths only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use serde::Deserialize;

use crate::limits::Limits;

/// Where the cache directory appears inside every sandbox.
pub const CACHE_INSIDE: &str = "/opt/wolf/cache";

/// Where a language's probed directory (e.g. the Rust sysroot) appears inside every sandbox:
/// a neutral path, so that host directory names (`/root/.rustup/...`) do not show inside.
pub fn probe_inside(lang: &Language) -> Option<PathBuf> {
    lang.probe_dir.as_ref()?;
    let safe: String = lang
        .spec
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    Some(PathBuf::from("/opt/wolf/probe").join(safe))
}

/// Why an engine is absent from a registry that resolved only some ([`Registry::load_some`]):
/// not known to be missing, just not looked at.
const NOT_RESOLVED: &str = "not resolved by this command";

/// The registry shipped with Wolf.
pub const BUILTIN: &str = include_str!("../languages.toml");

/// Errors loading or using the registry.
#[derive(Debug, thiserror::Error)]
pub enum LanguageError {
    /// The registry file does not parse.
    #[error("parse language registry")]
    Parse(#[source] toml::de::Error),
    /// An added engine takes a name or alias already taken.
    #[error("language {0} is defined twice")]
    Duplicate(String),
    /// Reading the registry file failed.
    #[error("read language registry {path}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// No such engine.
    #[error("unknown execution engine {name:?}; known: {known}")]
    Unknown {
        /// What was asked for.
        name: String,
        /// Comma-separated known names.
        known: String,
    },
    /// The engine is in the registry but its toolchain is missing here.
    #[error("execution engine {name} is not available on this host: {reason}")]
    Absent {
        /// Engine.
        name: String,
        /// Why.
        reason: String,
    },
    /// The one-time preparation (precompiled header) failed.
    #[error("prepare {name}: {reason}")]
    Prepare {
        /// Engine.
        name: String,
        /// Why.
        reason: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
struct LimitDefaults {
    compile: Limits,
    run: Limits,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct LangLimits {
    compile: Option<Limits>,
    run: Option<Limits>,
}

/// Sandbox-wide settings in the registry file.
#[derive(Debug, Clone, Deserialize)]
pub struct SandboxSection {
    /// Host paths bound read-only into every sandbox.
    pub binds: Vec<PathBuf>,
    /// The complete environment of every step.
    pub env: Vec<String>,
}

/// One registry entry, as written.
#[derive(Debug, Clone, Deserialize)]
pub struct LanguageSpec {
    /// Engine name.
    pub name: String,
    /// Other accepted names.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Source file name.
    pub source: String,
    /// Compile argv.
    pub compile: Option<Vec<String>>,
    /// Run argv.
    pub run: Vec<String>,
    /// Version argv (host).
    pub version: Vec<String>,
    /// Host paths that must exist.
    #[serde(default)]
    pub requires: Vec<PathBuf>,
    /// Probe argv (host) printing a directory to bind.
    pub probe: Option<Vec<String>>,
    /// One-time preparation argv (host).
    pub prepare: Option<Vec<String>>,
    /// Marker file (relative to the cache) of a finished preparation.
    pub prepare_creates: Option<String>,
    /// Files (relative path, contents) written into the cache before `prepare`.
    #[serde(default)]
    pub prepare_files: Vec<(String, String)>,
    /// stderr substrings meaning "out of memory".
    #[serde(default)]
    pub oom_patterns: Vec<String>,
    /// Extra pids for the run step.
    #[serde(default)]
    pub extra_pids: u64,
    /// The runtime (an imported image) whose root the engine runs in, instead of the host's;
    /// its paths (`requires`, commands) are the root's.
    #[serde(default)]
    pub runtime: Option<String>,
    #[serde(default)]
    limits: LangLimits,
}

/// An imported runtime, as a language on it sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeRoot {
    /// Its root on the host.
    pub root: PathBuf,
    /// The image's digest.
    pub digest: String,
    /// The image's environment (`KEY=value`, its `ENV`).
    pub env: Vec<String>,
}

/// Engines added by the operator (the configuration's `[[language]]` entries), and the
/// runtimes they may name.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    /// `[[language]]` entries, as TOML text (the registry file's format).
    pub languages: String,
    /// Imported runtimes by name.
    pub runtimes: BTreeMap<String, RuntimeRoot>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct ExtraFile {
    #[serde(default)]
    language: Vec<LanguageSpec>,
}

#[derive(Debug, Clone, Deserialize)]
struct RegistryFile {
    defaults: LimitDefaults,
    sandbox: SandboxSection,
    language: Vec<LanguageSpec>,
}

/// One engine's preparation: done once, its outcome kept (the error text when it failed).
type Prepared = OnceLock<Result<(), String>>;

/// A language resolved on this host.
#[derive(Debug, Clone)]
pub struct Language {
    /// The registry entry.
    pub spec: LanguageSpec,
    /// Default compile limits.
    pub compile_limits: Limits,
    /// Default run limits (extra pids included).
    pub run_limits: Limits,
    /// The probed directory, if the entry has a probe.
    pub probe_dir: Option<PathBuf>,
    /// Why it is absent, if it is.
    pub absent: Option<String>,
    /// The runtime it runs in, when it names one that is imported.
    pub runtime: Option<RuntimeRoot>,
}

/// The registry: all engines, present or not.
#[derive(Debug)]
pub struct Registry {
    /// Sandbox-wide settings.
    pub sandbox: SandboxSection,
    languages: Vec<Language>,
    cache_dir: PathBuf,
    versions: Mutex<BTreeMap<String, Option<String>>>,
    /// Each engine's preparation, done once: one engine's build (a precompiled header of
    /// seconds) never holds up another's jobs.
    prepared: Mutex<BTreeMap<String, Arc<Prepared>>>,
}

/// An engine on a runtime: present when the runtime is imported and what it `requires` is in
/// the runtime's root. No probe or preparation runs for it (they would run on the host).
fn on_runtime(spec: LanguageSpec, rt: Option<&RuntimeRoot>, defaults: &LimitDefaults, wanted: bool) -> Language {
    let compile_limits = spec.limits.compile.unwrap_or(defaults.compile);
    let mut run_limits = spec.limits.run.unwrap_or(defaults.run);
    run_limits.pids += spec.extra_pids;
    let name = spec.runtime.clone().unwrap_or_default();
    let absent = if !wanted {
        Some(NOT_RESOLVED.to_string())
    } else if spec.probe.is_some() || spec.prepare.is_some() {
        Some("an engine on a runtime has no probe or prepare (they would run on the host)".into())
    } else {
        match rt {
            None => Some(format!(
                "runtime {name} is not imported (wolf runtime import {name} SOURCE)"
            )),
            Some(rt) => spec
                .requires
                .iter()
                .find(|p| !in_root(&rt.root, p))
                .map(|p| format!("{} not found in runtime {name}", p.display())),
        }
    };
    Language {
        spec,
        compile_limits,
        run_limits,
        probe_dir: None,
        absent,
        runtime: rt.cloned(),
    }
}

/// Whether `p` exists in the tree at `root` as a process with that root would see it: each
/// symlink on the way resolved against `root`, never against the host's `/`.
pub fn in_root(root: &Path, p: &Path) -> bool {
    let mut todo: Vec<std::ffi::OsString> = p.iter().rev().map(|c| c.to_os_string()).collect();
    let mut at = PathBuf::new(); // relative to root
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        match c.to_str() {
            Some("/") | Some(".") => continue,
            Some("..") => {
                at.pop();
                continue;
            }
            _ => {}
        }
        let next = at.join(&c);
        let full = root.join(&next);
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                let Ok(target) = std::fs::read_link(&full) else {
                    return false;
                };
                if hops > 40 {
                    return false;
                }
                if target.is_absolute() {
                    at = PathBuf::new();
                }
                todo.extend(target.iter().rev().map(|c| c.to_os_string()));
            }
            Ok(_) => at = next,
            Err(_) => return false,
        }
    }
    true
}

fn substitute(arg: &str, probe: Option<&Path>, cache: &Path, memory_mb: u64) -> String {
    let mut s = arg
        .replace("{cache}", &cache.display().to_string())
        .replace("{memory_mb}", &memory_mb.to_string());
    if let Some(p) = probe {
        s = s.replace("{probe}", &p.display().to_string());
    }
    s
}

impl Registry {
    /// Parse a registry and resolve it against this host. `cache_dir` holds prepared artifacts.
    pub fn load(text: &str, cache_dir: &Path) -> Result<Self, LanguageError> {
        Self::load_some(text, cache_dir, |_| true)
    }

    /// Like [`Registry::load`], resolving only the engines `wanted` selects; the others are
    /// absent ("not resolved"). A probe can be slow (`rustc --print sysroot` through the rustup
    /// proxy costs ~25 ms): one-shot commands resolve just the engine they run.
    pub fn load_some(
        text: &str,
        cache_dir: &Path,
        wanted: impl Fn(&LanguageSpec) -> bool,
    ) -> Result<Self, LanguageError> {
        Self::load_extra(text, &Extra::default(), cache_dir, wanted)
    }

    /// Like [`Registry::load_some`], with the operator's engines of `extra` after the
    /// registry's (a name or alias may not be taken twice).
    pub fn load_extra(
        text: &str,
        extra: &Extra,
        cache_dir: &Path,
        wanted: impl Fn(&LanguageSpec) -> bool,
    ) -> Result<Self, LanguageError> {
        let mut file: RegistryFile = toml::from_str(text).map_err(LanguageError::Parse)?;
        let added: ExtraFile = toml::from_str(&extra.languages).map_err(LanguageError::Parse)?;
        for spec in added.language {
            let names = || std::iter::once(&spec.name).chain(&spec.aliases);
            if let Some(taken) = names().find(|n| file.language.iter().any(|l| l.name == **n || l.aliases.contains(n)))
            {
                return Err(LanguageError::Duplicate(taken.clone()));
            }
            file.language.push(spec);
        }
        let languages = file
            .language
            .into_iter()
            .map(|spec| {
                if let Some(name) = &spec.runtime {
                    return on_runtime(spec.clone(), extra.runtimes.get(name), &file.defaults, wanted(&spec));
                }
                let compile_limits = spec.limits.compile.unwrap_or(file.defaults.compile);
                let mut run_limits = spec.limits.run.unwrap_or(file.defaults.run);
                run_limits.pids += spec.extra_pids;
                let mut absent = if wanted(&spec) {
                    spec.requires
                        .iter()
                        .find(|p| !p.exists())
                        .map(|p| format!("{} not found", p.display()))
                } else {
                    Some(NOT_RESOLVED.to_string())
                };
                let mut probe_dir = None;
                if absent.is_none()
                    && let Some(argv) = &spec.probe
                {
                    match host_output(argv) {
                        Ok(out) if Path::new(out.trim()).is_dir() => probe_dir = Some(PathBuf::from(out.trim())),
                        Ok(out) => absent = Some(format!("probe printed {:?}, not a directory", out.trim())),
                        Err(e) => absent = Some(format!("probe {}: {e}", argv.join(" "))),
                    }
                }
                if absent.is_none()
                    && let Some(prog) = spec.compile.as_ref().unwrap_or(&spec.run).first()
                {
                    let prog = substitute(prog, probe_dir.as_deref(), cache_dir, 0);
                    if prog.starts_with('/') && !Path::new(&prog).exists() {
                        absent = Some(format!("{prog} not found"));
                    }
                }
                Language {
                    spec,
                    compile_limits,
                    run_limits,
                    probe_dir,
                    absent,
                    runtime: None,
                }
            })
            .collect();
        Ok(Self {
            sandbox: file.sandbox,
            languages,
            cache_dir: cache_dir.to_path_buf(),
            versions: Mutex::new(BTreeMap::new()),
            prepared: Mutex::new(BTreeMap::new()),
        })
    }

    /// The built-in registry, cached per process.
    pub fn builtin(cache_dir: &Path) -> Result<&'static Registry, LanguageError> {
        static REG: OnceLock<Registry> = OnceLock::new();
        if let Some(r) = REG.get() {
            return Ok(r);
        }
        let r = Registry::load(BUILTIN, cache_dir)?;
        Ok(REG.get_or_init(|| r))
    }

    /// The built-in registry with only the engine named `engine` (a name or alias) resolved.
    pub fn builtin_for(cache_dir: &Path, engine: &str) -> Result<Registry, LanguageError> {
        Registry::builtin_for_each(cache_dir, &[engine])
    }

    /// Like [`Registry::builtin_for`], for each of `engines` (a program's and its checker's).
    pub fn builtin_for_each(cache_dir: &Path, engines: &[&str]) -> Result<Registry, LanguageError> {
        let wanted: Vec<String> = engines.iter().map(|e| e.trim().to_ascii_lowercase()).collect();
        Registry::load_some(BUILTIN, cache_dir, |spec| {
            wanted.iter().any(|n| spec.name == *n || spec.aliases.contains(n))
        })
    }

    /// All engines.
    pub fn all(&self) -> &[Language] {
        &self.languages
    }

    /// The cache directory (bound read-only into sandboxes).
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// `(host, inside)` paths to bind read-only into every sandbox: the registry's list at the
    /// same path, probe dirs at [`probe_inside`], the cache at [`CACHE_INSIDE`].
    pub fn bind_paths(&self) -> Vec<(PathBuf, PathBuf)> {
        let mut v: Vec<(PathBuf, PathBuf)> = self.sandbox.binds.iter().map(|p| (p.clone(), p.clone())).collect();
        v.extend(
            self.languages
                .iter()
                .filter_map(|l| Some((l.probe_dir.clone()?, probe_inside(l)?))),
        );
        v.push((self.cache_dir.clone(), PathBuf::from(CACHE_INSIDE)));
        v
    }

    /// Find an engine by name or alias (case-insensitive), present or not.
    pub fn find(&self, name: &str) -> Result<&Language, LanguageError> {
        let n = name.trim().to_ascii_lowercase();
        self.languages
            .iter()
            .find(|l| l.spec.name == n || l.spec.aliases.contains(&n))
            .ok_or_else(|| LanguageError::Unknown {
                name: name.to_string(),
                known: self.known().join(", "),
            })
    }

    /// Names of the engines present on this host.
    pub fn known(&self) -> Vec<String> {
        self.languages
            .iter()
            .filter(|l| l.absent.as_deref().is_none_or(|a| a == NOT_RESOLVED))
            .map(|l| l.spec.name.clone())
            .collect()
    }

    /// A present engine, prepared (precompiled header built) and ready to run.
    pub fn get(&self, name: &str) -> Result<&Language, LanguageError> {
        let lang = self.find(name)?;
        if let Some(reason) = &lang.absent {
            return Err(LanguageError::Absent {
                name: lang.spec.name.clone(),
                reason: reason.clone(),
            });
        }
        self.prepare(lang)?;
        Ok(lang)
    }

    /// The complete environment of `lang`'s steps: the registry's, with an image runtime's
    /// own variables over it (its `PATH`, say) but for `HOME` and `TMPDIR`, which stay Wolf's
    /// writable places.
    pub fn env_for(&self, lang: &Language) -> Vec<String> {
        let mut env = self.sandbox.env.clone();
        let Some(rt) = &lang.runtime else {
            return env;
        };
        for var in &rt.env {
            let Some((key, _)) = var.split_once('=') else { continue };
            if key.is_empty() || key == "HOME" || key == "TMPDIR" {
                continue;
            }
            env.retain(|e| e.split_once('=').map(|(k, _)| k) != Some(key));
            env.push(var.clone());
        }
        env
    }

    /// The engine's version string (probed once, on the host). An engine on a runtime is
    /// never probed on the host (the image's programs run only in sandboxes): its version is
    /// what its version command printed in a sandbox on its root, given by whoever ran it
    /// there ([`Registry::set_version`]), else its [`Registry::image`].
    pub fn version(&self, lang: &Language) -> Option<String> {
        let mut cache = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        if lang.runtime.is_some() {
            // What the version command printed inside the root ([`Registry::set_version`]),
            // else the image.
            return match cache.get(&lang.spec.name) {
                Some(Some(v)) => Some(v.clone()),
                _ => self.image(lang),
            };
        }
        cache
            .entry(lang.spec.name.clone())
            .or_insert_with(|| {
                let argv: Vec<String> = lang
                    .spec
                    .version
                    .iter()
                    .map(|a| substitute(a, lang.probe_dir.as_deref(), &self.cache_dir, 0))
                    .collect();
                host_output(&argv)
                    .ok()
                    .and_then(|s| s.lines().find(|l| !l.trim().is_empty()).map(|l| l.trim().to_string()))
            })
            .clone()
    }

    /// The image an engine on a runtime runs on: `RUNTIME@sha256:…`.
    pub fn image(&self, lang: &Language) -> Option<String> {
        match (&lang.runtime, &lang.spec.runtime) {
            (Some(rt), Some(name)) => Some(format!("{name}@{}", rt.digest)),
            _ => None,
        }
    }

    /// Record the version an engine's version command printed (its first non-empty line),
    /// where only a sandbox can run it (an engine on a runtime).
    pub fn set_version(&self, name: &str, printed: &str) {
        let line = printed
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_string);
        if line.is_some() {
            self.versions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.to_string(), line);
        }
    }

    fn prepare(&self, lang: &Language) -> Result<(), LanguageError> {
        let Some(argv) = &lang.spec.prepare else {
            return Ok(());
        };
        // The map's lock only finds the engine's cell; the build runs under the cell alone
        // (callers for the same engine wait for it, others do not).
        let cell = self
            .prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(lang.spec.name.clone())
            .or_default()
            .clone();
        let result = cell.get_or_init(|| {
            if let Some(marker) = &lang.spec.prepare_creates
                && self.cache_dir.join(marker).exists()
            {
                return Ok(());
            }
            for (rel, contents) in &lang.spec.prepare_files {
                let p = self.cache_dir.join(rel);
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                }
                std::fs::write(&p, contents).map_err(|e| e.to_string())?;
            }
            // Build into a temporary name and rename: a crash never leaves a half-written
            // artifact that later runs would trust.
            let marker = lang.spec.prepare_creates.as_ref().map(|m| self.cache_dir.join(m));
            let tmp = marker
                .as_ref()
                .map(|m| m.with_extension(format!("tmp{}", std::process::id())));
            let argv: Vec<String> = argv
                .iter()
                .map(|a| {
                    let s = substitute(a, lang.probe_dir.as_deref(), &self.cache_dir, 0);
                    match (&marker, &tmp) {
                        (Some(m), Some(t)) if Path::new(&s) == m.as_path() => t.display().to_string(),
                        _ => s,
                    }
                })
                .collect();
            let out = Command::new(&argv[0])
                .args(&argv[1..])
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).chars().take(2000).collect());
            }
            if let (Some(m), Some(t)) = (&marker, &tmp) {
                std::fs::rename(t, m).map_err(|e| e.to_string())?;
            }
            Ok(())
        });
        result.clone().map_err(|reason| LanguageError::Prepare {
            name: lang.spec.name.clone(),
            reason,
        })
    }

    /// Substitute placeholders in an argv run inside the sandbox, for a step with `memory_mb`.
    pub fn argv(&self, lang: &Language, argv: &[String], memory_mb: u64) -> Vec<String> {
        argv.iter()
            .map(|a| substitute(a, probe_inside(lang).as_deref(), Path::new(CACHE_INSIDE), memory_mb))
            .collect()
    }
}

fn host_output(argv: &[String]) -> Result<String, String> {
    let (prog, args) = argv.split_first().ok_or("empty command")?;
    let out = Command::new(prog).args(args).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("exit {}", out.status));
    }
    // `java -version` prints to stderr.
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    if s.trim().is_empty() {
        s = String::from_utf8_lossy(&out.stderr).into_owned();
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_registry_has_the_required_engines() {
        let tmp = tempfile::tempdir().unwrap();
        let r = Registry::load(BUILTIN, tmp.path()).unwrap();
        for name in ["c", "c++", "python", "javascript", "java", "rust", "bash"] {
            let l = r.find(name).unwrap();
            assert!(!l.spec.run.is_empty());
            assert!(l.run_limits.cpu_time_ms > 0);
        }
        assert_eq!(r.find("CPP").unwrap().spec.name, "c++");
        assert_eq!(
            r.find("java").unwrap().run_limits.pids,
            16 + 32,
            "extra pids for the JVM"
        );
    }

    #[test]
    fn unknown_engine_lists_the_known_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let r = Registry::load(BUILTIN, tmp.path()).unwrap();
        let e = r.find("cobol").unwrap_err().to_string();
        assert!(e.contains("cobol") && e.contains("known:"), "{e}");
    }

    #[test]
    fn missing_toolchain_is_absent_not_broken() {
        let text = BUILTIN.to_string()
            + "\n[[language]]\nname = \"zig\"\nsource = \"main.zig\"\nrun = [\"/nonexistent/zig\", \"run\"]\nversion = [\"/nonexistent/zig\", \"version\"]\n";
        let tmp = tempfile::tempdir().unwrap();
        let r = Registry::load(&text, tmp.path()).unwrap();
        let z = r.find("zig").unwrap();
        assert!(z.absent.as_deref().unwrap().contains("not found"));
        assert!(matches!(r.get("zig"), Err(LanguageError::Absent { .. })));
        assert!(!r.known().contains(&"zig".to_string()));
    }

    #[test]
    fn placeholders_are_substituted() {
        let tmp = tempfile::tempdir().unwrap();
        let r = Registry::load(BUILTIN, tmp.path()).unwrap();
        let java = r.find("java").unwrap();
        let argv = r.argv(java, &java.spec.run, 300);
        assert!(argv.contains(&"-Xmx300m".to_string()));
        let cpp = r.find("c++").unwrap();
        let argv = r.argv(cpp, cpp.spec.compile.as_ref().unwrap(), 0);
        assert!(argv.contains(&format!("-I{CACHE_INSIDE}/pch")));
    }
}
