//! A real kernel for tests: Debian's own kernel booted under qemu (TCG, no KVM needed), with
//! this machine's root shared read-only over 9p under a tmpfs overlay, cgroup v2 mounted, and
//! one command run inside as root. Its output and exit status come back over the serial
//! console; the guest powers off after it, and is killed if it outlives its time.
//!
//! The initramfs is built here from busybox-static and the guest kernel's own modules (virtio,
//! 9p, overlay), cached beside the kernel's version. TESTBED.md has the measurements; KVM is not
//! used by default (guests hung on this machine kind, see docs/kernels.md).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Modules the initramfs loads, in dependency order (paths under the kernel's module tree are
/// found by name).
const MODULES: [&str; 11] = [
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "netfs",
    "fscache",
    "9pnet",
    "9pnet_virtio",
    "9p",
    "overlay",
];

/// The marker the guest prints before the command's exit status.
const EXIT_MARK: &str = "WOLF-GUEST-EXIT";

/// A bootable guest: a kernel and an initramfs made for it.
#[derive(Debug, Clone)]
pub struct Guest {
    /// The kernel image.
    pub kernel: PathBuf,
    /// Its release (`6.1.0-...-amd64`).
    pub release: String,
    /// The initramfs built for it.
    pub initrd: PathBuf,
    /// Guest memory, MiB.
    pub memory_mb: u32,
    /// Guest CPUs.
    pub cpus: u32,
}

/// What a command did inside.
#[derive(Debug, Clone)]
pub struct GuestRun {
    /// Its exit status (`None`: the guest never reported one — crashed or timed out).
    pub status: Option<i32>,
    /// Everything the console showed, the command's output included.
    pub output: String,
    /// Boot to power-off.
    pub elapsed: Duration,
}

/// Why no guest can be booted here, when that is so (tests skip with it).
pub fn unavailable() -> Option<String> {
    if Command::new("qemu-system-x86_64").arg("--version").output().is_err() {
        return Some("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)".into());
    }
    if newest_kernel().is_none() {
        return Some("no guest kernel in /boot (apt-get install linux-image-amd64)".into());
    }
    if !Path::new("/bin/busybox").exists() && !Path::new("/usr/bin/busybox").exists() {
        return Some("busybox is not installed (apt-get install busybox-static)".into());
    }
    None
}

/// The newest `/boot/vmlinuz-*` whose modules are installed.
fn newest_kernel() -> Option<(PathBuf, String)> {
    let mut found: Vec<(PathBuf, String)> = std::fs::read_dir("/boot")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let release = name.strip_prefix("vmlinuz-")?.to_string();
            Path::new("/lib/modules")
                .join(&release)
                .is_dir()
                .then(|| (e.path(), release))
        })
        .collect();
    found.sort_by(|a, b| a.1.cmp(&b.1));
    found.pop()
}

fn busybox() -> PathBuf {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("/bin/busybox"))
}

/// Find `name.ko` (maybe compressed) under the module tree.
fn module_path(root: &Path, name: &str) -> Option<PathBuf> {
    let mut stack = vec![root.to_path_buf()];
    let wanted: Vec<String> = ["ko", "ko.xz", "ko.zst", "ko.gz"]
        .iter()
        .map(|ext| format!("{name}.{ext}"))
        .collect();
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if wanted.iter().any(|w| e.file_name().to_string_lossy() == *w) {
                return Some(p);
            }
        }
    }
    None
}

/// The guest's /init: modules, the host root read-only with a tmpfs overlay, then the command
/// named on the kernel command line (`wolf.cmd=PATH`, a script on the host's file system) in a
/// chroot, its status printed after [`EXIT_MARK`], power off.
fn init_script(modules: &[String]) -> String {
    let mut s = String::from(
        "#!/bin/busybox sh\n/bin/busybox --install -s /bin\nmount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n",
    );
    for m in modules {
        s.push_str(&format!("insmod /modules/{m} 2>/dev/null\n"));
    }
    s.push_str(
        r#"mkdir -p /host /upper /root
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 host /host || { echo "9p mount failed"; poweroff -f; }
mount -t tmpfs -o size=75% tmpfs /upper
mkdir -p /upper/u /upper/w
mount -t overlay -o lowerdir=/host,upperdir=/upper/u,workdir=/upper/w overlay /root || { echo "overlay failed"; poweroff -f; }
mount -t proc proc /root/proc
mount -t sysfs sys /root/sys
mount -t cgroup2 -o nsdelegate cgroup2 /root/sys/fs/cgroup
mount -t securityfs securityfs /root/sys/kernel/security 2>/dev/null
mount -t devtmpfs dev /root/dev
mkdir -p /root/dev/pts /root/dev/shm && mount -t devpts devpts /root/dev/pts && mount -t tmpfs tmpfs /root/dev/shm
# /tmp and /run stay the overlay's (writable, in the tmpfs upper layer): a checkout or a test
# binary under the host's /tmp must stay visible.
cmd=$(sed -n 's/.*wolf\.cmd=\([^ ]*\).*/\1/p' /proc/cmdline)
echo "WOLF-GUEST-START"
# switch_root, not chroot: the command's mount namespace is rooted at the overlay, as on a real
# system (AppArmor names paths relative to it). PID 1 is then the runner shell of the host's
# root; it powers off with the host's static busybox.
exec switch_root /root /bin/sh -c "/usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root /bin/sh $cmd </dev/console >/dev/console 2>&1; echo WOLF-GUEST-EXIT \$?; sync; /bin/busybox poweroff -f"
"#,
    );
    s
}

impl Guest {
    /// The newest installed kernel, with an initramfs built for it under `work` (reused when
    /// it exists).
    pub fn prepare(work: &Path) -> anyhow::Result<Self> {
        if let Some(why) = unavailable() {
            bail!("{why}");
        }
        let (kernel, release) = newest_kernel().context("no guest kernel")?;
        std::fs::create_dir_all(work)?;
        let initrd = work.join(format!("initrd-{release}.cpio.gz"));
        if !initrd.exists() {
            build_initrd(&release, &initrd)?;
        }
        Ok(Self {
            kernel,
            release,
            initrd,
            memory_mb: 3072,
            cpus: 2,
        })
    }

    /// Run `script` (shell, as root, with `/` the host's root under a writable overlay) in a
    /// fresh boot; killed after `timeout`. `echo` copies the console to stderr as it goes.
    pub fn run(&self, script: &str, timeout: Duration, echo: bool) -> anyhow::Result<GuestRun> {
        // The script must be on the host's file system (the guest sees it read-only).
        let dir = std::env::current_dir()?.join("target").join("guest-scripts");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("cmd-{}-{}.sh", std::process::id(), crate::port::free_port()));
        std::fs::write(&path, script)?;
        let started = Instant::now();
        let mut child = Command::new("qemu-system-x86_64")
            .args([
                "-accel",
                "tcg",
                "-cpu",
                "max",
                "-nographic",
                "-no-reboot",
                "-monitor",
                "none",
                "-nic",
                "none",
            ])
            .args(["-m", &self.memory_mb.to_string(), "-smp", &self.cpus.to_string()])
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&self.initrd)
            .arg("-append")
            .arg(format!(
                "console=ttyS0 quiet loglevel=1 panic=-1 wolf.cmd={}",
                path.display()
            ))
            .arg("-virtfs")
            .arg("local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("start qemu-system-x86_64")?;
        let stdout = child.stdout.take().context("qemu stdout")?;
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = started + timeout;
        let mut output = String::new();
        let mut status = None;
        let mut started_cmd = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(500))) {
                Ok(line) => {
                    let line = line.trim_end_matches('\r').to_string();
                    // The firmware's escape codes may share a line with the markers.
                    if let Some(at) = line.find(EXIT_MARK) {
                        status = line[at + EXIT_MARK.len()..].trim().parse().ok();
                        continue;
                    }
                    if line.ends_with("WOLF-GUEST-START") {
                        started_cmd = true;
                        continue;
                    }
                    if echo {
                        eprintln!("guest: {line}");
                    }
                    if started_cmd {
                        output.push_str(&line);
                        output.push('\n');
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                output.push_str(&format!("\n[wolf-guest: killed after {timeout:?}]\n"));
                break;
            }
            if let Ok(Some(_)) = child.try_wait() {
                // Drain what is left.
                while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                    let line = line.trim_end_matches('\r').to_string();
                    if let Some(at) = line.find(EXIT_MARK) {
                        status = line[at + EXIT_MARK.len()..].trim().parse().ok();
                    } else if started_cmd {
                        output.push_str(&line);
                        output.push('\n');
                    }
                }
                break;
            }
        }
        let _ = child.wait();
        let _ = std::fs::remove_file(&path);
        Ok(GuestRun {
            status,
            output,
            elapsed: started.elapsed(),
        })
    }
}

/// Write a gzipped newc initramfs for `release` to `out`.
fn build_initrd(release: &str, out: &Path) -> anyhow::Result<()> {
    let tree = tempfile::tempdir()?;
    let root = tree.path();
    for d in ["bin", "dev", "proc", "sys", "modules", "host", "upper", "root"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy(busybox(), root.join("bin/busybox"))?;
    let mods_root = Path::new("/lib/modules").join(release);
    let mut names = Vec::new();
    for m in MODULES {
        let Some(src) = module_path(&mods_root, m) else {
            // Built into this kernel, or not needed by it.
            continue;
        };
        // insmod takes uncompressed modules only (busybox): decompress here.
        let fname = format!("{m}.ko");
        let data = match src.extension().and_then(|e| e.to_str()) {
            Some("xz") => run_capture("xz", &["-dc"], &src)?,
            Some("zst") => run_capture("zstd", &["-dc"], &src)?,
            Some("gz") => run_capture("gzip", &["-dc"], &src)?,
            _ => std::fs::read(&src)?,
        };
        std::fs::write(root.join("modules").join(&fname), data)?;
        names.push(fname);
    }
    let init = root.join("init");
    std::fs::write(&init, init_script(&names))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))?;
    // find . | cpio -o -H newc | gzip
    let list = Command::new("sh")
        .arg("-c")
        .arg("find . | cpio --quiet -o -H newc | gzip -1")
        .current_dir(root)
        .output()
        .context("cpio (apt-get install cpio)")?;
    if !list.status.success() || list.stdout.is_empty() {
        bail!(
            "building the initramfs failed: {}",
            String::from_utf8_lossy(&list.stderr)
        );
    }
    let tmp = out.with_extension("tmp");
    std::fs::File::create(&tmp)?.write_all(&list.stdout)?;
    std::fs::rename(&tmp, out)?;
    Ok(())
}

fn run_capture(cmd: &str, args: &[&str], file: &Path) -> anyhow::Result<Vec<u8>> {
    let out = Command::new(cmd)
        .args(args)
        .arg(file)
        .output()
        .with_context(|| format!("{cmd} {}", file.display()))?;
    if !out.status.success() {
        bail!("{cmd} failed on {}", file.display());
    }
    Ok(out.stdout)
}
