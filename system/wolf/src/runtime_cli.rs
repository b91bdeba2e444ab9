//! `wolf runtime import | list | inspect | rm`: the runtime store under the data dir
//! ([`wolf_runtime::Store`]), and what the other commands need of it: the registry with the
//! operator's engines and the runtimes they name, and the binds of an engine's root.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use wolf_core::Registry;
use wolf_core::language::BUILTIN;

use crate::config::{Config, ConfigArgs};

/// `wolf runtime`.
#[derive(Debug, Args)]
pub struct RuntimeArgs {
    #[command(subcommand)]
    command: RuntimeCommand,
}

#[derive(Debug, Subcommand)]
enum RuntimeCommand {
    /// Import an image as runtime NAME: an OCI image layout (a directory, or a tar of one), a
    /// `docker save` archive, or `containerd://[NAMESPACE/]IMAGE` from the host's containerd
    /// (socket: CONTAINERD_ADDRESS, else /run/containerd/containerd.sock, else Docker's).
    Import {
        /// The runtime's name (a lowercase letter or digit, then letters, digits, `.`, `_`, `-`).
        name: String,
        /// The image.
        source: PathBuf,
        /// Replace a runtime of that name.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        config: Box<ConfigArgs>,
    },
    /// The imported runtimes (JSON lines).
    List {
        #[command(flatten)]
        config: Box<ConfigArgs>,
    },
    /// One runtime's record (JSON).
    Inspect {
        /// Its name.
        name: String,
        #[command(flatten)]
        config: Box<ConfigArgs>,
    },
    /// Remove a runtime (and the layers no other runtime uses).
    Rm {
        /// Its name.
        name: String,
        #[command(flatten)]
        config: Box<ConfigArgs>,
    },
}

pub fn main(args: RuntimeArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.command {
        RuntimeCommand::Import { config, .. }
        | RuntimeCommand::List { config }
        | RuntimeCommand::Inspect { config, .. }
        | RuntimeCommand::Rm { config, .. } => config,
    };
    let cfg = Config::load(config)?;
    let store = wolf_runtime::Store::new(&cfg.data_dir);
    match args.command {
        RuntimeCommand::Import {
            name, source, replace, ..
        } => {
            let info = match source.to_str().and_then(|s| s.strip_prefix("containerd://")) {
                Some(rest) => {
                    store.import_containerd(&name, &wolf_runtime::containerd::Containerd::parse(rest)?, replace)?
                }
                None => store.import(&name, &source, replace)?,
            };
            println!("{}", serde_json::to_string(&info)?);
        }
        RuntimeCommand::List { .. } => {
            for r in store.list()? {
                println!("{}", serde_json::to_string(&r)?);
            }
        }
        RuntimeCommand::Inspect { name, .. } => println!("{}", serde_json::to_string_pretty(&store.inspect(&name)?)?),
        RuntimeCommand::Rm { name, .. } => store.remove(&name)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The registry: the built-in engines and the configuration's, those on a runtime resolved
/// against the runtimes imported under `data_dir`; only the engines `wanted` selects.
pub fn registry(
    cfg: &Config,
    data_dir: &Path,
    cache: &Path,
    wanted: impl Fn(&wolf_core::language::LanguageSpec) -> bool,
) -> anyhow::Result<Registry> {
    let extra = cfg.extra(data_dir).context("the runtime store")?;
    Ok(Registry::load_extra(BUILTIN, &extra, cache, wanted)?)
}

/// [`registry`] with every engine resolved, for the life of the process.
pub fn registry_static(cfg: &Config, data_dir: &Path, cache: &Path) -> anyhow::Result<&'static Registry> {
    Ok(Box::leak(Box::new(registry(cfg, data_dir, cache, |_| true)?)))
}

/// Engines on runtimes, by name and alias, to their runtime: where the queue publishes their jobs.
pub fn routes(reg: &Registry) -> std::collections::HashMap<String, String> {
    let mut routes = std::collections::HashMap::new();
    for l in reg.all() {
        if let Some(rt) = &l.spec.runtime {
            for n in std::iter::once(&l.spec.name).chain(&l.spec.aliases) {
                routes.insert(n.clone(), rt.clone());
            }
        }
    }
    routes
}

/// What this manager offers of the engines on runtimes: those present here with a sandbox
/// pool of their runtime.
pub fn offers<P>(reg: &Registry, pools: &std::collections::BTreeMap<String, P>) -> Vec<wolf_store::engines::EngineAd> {
    reg.all()
        .iter()
        .filter(|l| l.absent.is_none())
        .filter_map(|l| {
            let rt = l.spec.runtime.as_ref().filter(|rt| pools.contains_key(*rt))?;
            Some(wolf_store::engines::EngineAd {
                name: l.spec.name.clone(),
                runtime: rt.clone(),
                version: reg.version(l),
                image: reg.image(l),
            })
        })
        .collect()
}

/// The read-only binds of a sandbox for `engine`: its runtime's root, or the host's.
pub fn binds(reg: &Registry, data_dir: &Path, engine: &str) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
    let lang = reg.find(engine)?;
    if let Some(reason) = &lang.absent {
        anyhow::bail!("execution engine {} is not available: {reason}", lang.spec.name);
    }
    match &lang.spec.runtime {
        Some(name) => {
            Ok(wolf_runtime::Store::new(data_dir).binds(name, &wolf_sandbox::SandboxConfig::default().work_dir)?)
        }
        None => Ok(reg.bind_paths()),
    }
}

/// A sandbox pool per runtime that a present engine names, each on that runtime's root.
pub fn pools(
    cfg: &Config,
    reg: &Registry,
    data_dir: &Path,
    worker_socket_dir: Option<PathBuf>,
) -> anyhow::Result<std::collections::BTreeMap<String, std::sync::Arc<dyn wolf_manager::Pool>>> {
    let store = wolf_runtime::Store::new(data_dir);
    let work_dir = wolf_sandbox::SandboxConfig::default().work_dir;
    let mut pools = std::collections::BTreeMap::new();
    for lang in reg.all().iter().filter(|l| l.absent.is_none()) {
        let Some(name) = &lang.spec.runtime else { continue };
        if pools.contains_key(name) {
            continue;
        }
        let binds = store.binds(name, &work_dir)?;
        let pool = wolf_sandbox::Sandboxes::new(cfg.sandbox(binds, worker_socket_dir.clone()))
            .with_context(|| format!("the sandboxes of runtime {name}"))?;
        tracing::info!(runtime = %name, engine = %lang.spec.name, "sandboxes on an image runtime");
        // One sandbox kept prepared ahead per runtime in use: its jobs do not wait for one.
        let spare = wolf_manager::Spare::new(std::sync::Arc::new(pool));
        pools.insert(
            name.clone(),
            std::sync::Arc::new(spare) as std::sync::Arc<dyn wolf_manager::Pool>,
        );
    }
    Ok(pools)
}
