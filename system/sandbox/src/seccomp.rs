//! The seccomp-bpf filters, compiled at build time from `policy/seccomp.toml`.
//!
//! Installed by the payload pipeline as its last step before execve(2) (after no_new_privs,
//! which an unprivileged process needs for seccomp(2)).

use seccompiler::{BpfProgram, sock_filter};

mod compiled {
    include!(concat!(env!("OUT_DIR"), "/seccomp_bpf.rs"));
}

/// Errors installing the filters.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The policy has no compiled filter for this architecture.
    #[error("no seccomp policy for this architecture")]
    Unsupported,
    /// seccomp(2) refused the program.
    #[error("install seccomp filter {name}")]
    Install {
        /// Which of the two programs.
        name: &'static str,
        /// The kernel's answer.
        #[source]
        source: seccompiler::Error,
    },
}

fn program(raw: &[(u16, u8, u8, u32)]) -> BpfProgram {
    raw.iter()
        .map(|&(code, jt, jf, k)| sock_filter { code, jt, jf, k })
        .collect()
}

/// Whether this build carries a filter for the target architecture.
pub fn supported() -> bool {
    compiled::SUPPORTED
}

/// Number of BPF instructions of the allowlist program (for diagnostics and tests).
pub fn allowlist_len() -> usize {
    compiled::ALLOW.len()
}

/// Install the allowlist, then the ENOSYS program (the later filter wins among ERRNO results).
pub fn install() -> Result<(), SeccompError> {
    if !supported() {
        return Err(SeccompError::Unsupported);
    }
    seccompiler::apply_filter(&program(compiled::ALLOW))
        .map_err(|source| SeccompError::Install { name: "allow", source })?;
    seccompiler::apply_filter(&program(compiled::ENOSYS))
        .map_err(|source| SeccompError::Install { name: "enosys", source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_programs_start_with_the_architecture_check() {
        assert!(supported());
        // ld [arch]; jeq AUDIT_ARCH_X86_64; ret KILL_PROCESS
        let first = compiled::ALLOW[0];
        assert_eq!(first.0, 0x20, "BPF_LD|BPF_W|BPF_ABS");
        assert_eq!(first.3, 4, "offsetof(seccomp_data, arch)");
        assert_eq!(compiled::ALLOW[1].3, 0xc000_003e, "AUDIT_ARCH_X86_64");
        assert_eq!(compiled::ALLOW[2].3, libc::SECCOMP_RET_KILL_PROCESS);
        assert_eq!(compiled::ENOSYS[1].3, 0xc000_003e);
        assert!(allowlist_len() > 100);
    }

    #[test]
    fn dangerous_calls_are_not_in_the_policy() {
        let text = include_str!("../policy/seccomp.toml");
        let policy: toml::Value = toml::from_str(text).unwrap();
        let allowed: Vec<&str> = policy["allow"]["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let conditional: Vec<&str> = policy["allow"]["conditional"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["syscall"].as_str().unwrap())
            .collect();
        for bad in [
            "ptrace",
            "mount",
            "umount2",
            "unshare",
            "setns",
            "chroot",
            "pivot_root",
            "io_uring_setup",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "keyctl",
            "add_key",
            "request_key",
            "kexec_load",
            "init_module",
            "finit_module",
            "open_by_handle_at",
            "process_vm_readv",
            "setuid",
            "capset",
            "clone3",
            "move_mount",
            "fsopen",
            "open_tree",
        ] {
            assert!(
                !allowed.contains(&bad) && !conditional.contains(&bad),
                "{bad} must not be allowed"
            );
        }
    }
}
