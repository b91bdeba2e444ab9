//! # wolf-sandbox
//!
//! The jail Wolf runs untrusted programs in, at about the cost of a process spawn.
//!
//! Every job gets every layer (ARCHITECTURE §3): mount, pid, net, ipc, uts and cgroup
//! namespaces (plus user when not root); a read-only pivot_root'ed root with fresh size-capped
//! tmpfs for the work dir, /tmp and /dev/shm; minimal /dev, own /proc, no /sys; an unprivileged
//! uid with no capabilities and no_new_privs; a default-deny seccomp allowlist that checks the
//! architecture; Landlock; cgroups (v1 or v2) for memory, pids and CPU; rlimits; a wall clock;
//! bounded output pipes. Output comes back over a socket: the host never opens a path inside.
//!
//! # Layout
//!
//! - [`sandbox`]: host API — [`Sandboxes::prepare`] a sandbox ahead, [`Prepared::run`] one job.
//! - [`runner`]: a language job (compile + run + verdict) on top of it.
//! - [`suite`]: test cases, compiled once, each run in a fresh sandbox.
//! - [`collect`]: files read back out of a work dir (artifacts, output files).
//! - [`init`]: the init process (PID 1 inside, supervisor of the job).
//! - [`rootfs`], [`payload`]: the ordered pipelines, run through [`sys::Sys`].
//! - [`cgroup`], [`seccomp`], [`landlock_rules`], [`lsm`], [`userns`]: one kernel feature each.
//! - [`verdict`]: decisions from kernel facts, no syscalls; [`language`] and [`limits`] are
//!   `wolf-core`'s (domain data below the jail), re-exported.
//! - [`bench`]: the overhead measurements behind `wolf bench` and the criterion bench.
//! - [`uids`]: one uid per live sandbox, from a configured range.
//! - [`template`]: the fork server that starts init processes without an exec.
//! - [`sys`]: the only module with `unsafe`.

pub mod bench;
pub mod cgroup;
pub mod collect;
pub mod init;
pub mod landlock_rules;
pub mod lsm;
pub mod payload;
pub mod protocol;
mod relay;
pub mod rootfs;
pub mod runner;
pub mod sandbox;
pub mod seccomp;
pub mod suite;
pub mod sys;
pub mod template;
pub mod uids;
pub mod userns;
pub mod verdict;

pub use wolf_core::{language, limits};

pub use init::main_if_init;
pub use language::{Language, Registry};
pub use limits::{LimitRequest, Limits};
pub use runner::{Caps, RunRequest, RunResult, TestRequest, Timings};
pub use sandbox::{Prepared, SandboxConfig, SandboxError, Sandboxes};
pub use verdict::Verdict;
