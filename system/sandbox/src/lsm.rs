//! Linux security modules on the host: Landlock (applied per payload, see `landlock_rules`) and
//! AppArmor (a shipped profile, applied on exec where the host has AppArmor and the profile is
//! loaded). This kernel has no AppArmor: we say so once and rely on the other layers.

use std::path::Path;
use std::sync::Once;

/// Name of the shipped AppArmor profile (`policy/apparmor/wolf-sandbox`).
pub const APPARMOR_PROFILE: &str = "wolf-sandbox";

/// The shipped profile text, for installers (`apparmor_parser -r`).
pub const APPARMOR_PROFILE_TEXT: &str = include_str!("../policy/apparmor/wolf-sandbox");

/// Whether the host kernel has AppArmor enabled.
pub fn apparmor_enabled(sysfs: &Path) -> bool {
    std::fs::read_to_string(sysfs.join("module/apparmor/parameters/enabled"))
        .map(|s| s.trim() == "Y")
        .unwrap_or(false)
}

/// Whether our profile is loaded (then the payload pipeline asks for it on exec).
pub fn apparmor_profile_loaded(sysfs: &Path) -> bool {
    std::fs::read_to_string(sysfs.join("kernel/security/apparmor/profiles"))
        .map(|s| s.lines().any(|l| l.split_whitespace().next() == Some(APPARMOR_PROFILE)))
        .unwrap_or(false)
}

/// The profile to apply, if any.
pub fn apparmor_profile() -> Option<&'static str> {
    let sys = Path::new("/sys");
    (apparmor_enabled(sys) && apparmor_profile_loaded(sys)).then_some(APPARMOR_PROFILE)
}

/// Log, once per process, which LSM layers this host gives us.
pub fn log_host_lsms() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let lsms = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
        let sys = Path::new("/sys");
        let abi = crate::landlock_rules::kernel_abi();
        tracing::info!(
            lsms = %lsms.trim(),
            apparmor = if apparmor_enabled(sys) && apparmor_profile_loaded(sys) { APPARMOR_PROFILE } else { "not applied" },
            landlock_abi = abi.unwrap_or(0),
            "sandbox layers: namespaces, seccomp, cgroups, rlimits; {}",
            crate::landlock_rules::describe(abi)
        );
        if !apparmor_enabled(sys) {
            tracing::info!(lsms = %lsms.trim(), "AppArmor is not available on this host: its profile is not applied; namespaces, seccomp, Landlock and cgroups still are");
        } else if !apparmor_profile_loaded(sys) {
            tracing::warn!("AppArmor is enabled but profile {APPARMOR_PROFILE} is not loaded (apparmor_parser -r policy/apparmor/{APPARMOR_PROFILE})");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_reads_sysfs() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(!apparmor_enabled(tmp.path()));
        std::fs::create_dir_all(tmp.path().join("module/apparmor/parameters")).unwrap();
        std::fs::write(tmp.path().join("module/apparmor/parameters/enabled"), "Y\n").unwrap();
        assert!(apparmor_enabled(tmp.path()));
        std::fs::create_dir_all(tmp.path().join("kernel/security/apparmor")).unwrap();
        std::fs::write(
            tmp.path().join("kernel/security/apparmor/profiles"),
            "wolf-sandbox (enforce)\n",
        )
        .unwrap();
        assert!(apparmor_profile_loaded(tmp.path()));
        assert!(APPARMOR_PROFILE_TEXT.contains("profile wolf-sandbox"));
    }
}
