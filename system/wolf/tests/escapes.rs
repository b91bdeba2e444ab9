//! The adversarial suite: each case is a real program run through the real sandbox (`wolf run`)
//! that tries an attack; the test fails if it gets through. Probes print `ESCAPED ...` and/or
//! exit 77 when they succeed at something they must not.

mod common;

use std::collections::HashSet;

use common::*;

const PRELUDE: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
static int escaped = 0;
#define MUST_FAIL(what, expr) do { long r_ = (long)(expr); if (r_ != -1) { printf("ESCAPED %s returned %ld\n", what, r_); escaped = 1; } else { printf("ok %s: %s\n", what, strerror(errno)); } } while (0)
"#;

fn c(code: &str, flags: &[&str]) -> serde_json::Value {
    run("c", &format!("{PRELUDE}\n{code}"), flags)
}

// ---------------------------------------------------------------- resources

#[test]
fn fork_bomb_is_held_by_the_pids_limit() {
    if !privileged() {
        return;
    }
    let v = c(
        r#"int main(void){ int n = 0; for (;;) { pid_t p = fork(); if (p == 0) { pause(); _exit(0); } if (p < 0) break; n++; }
           printf("forked %d\n", n); fflush(stdout); for (;;) fork(); }"#,
        &["--pids", "8", "--cpu-time-ms", "1000", "--wall-time-ms", "3000"],
    );
    assert_contained(&v);
    let n: i64 = stdout(&v)
        .trim()
        .strip_prefix("forked ")
        .and_then(|s| s.parse().ok())
        .expect("count printed");
    assert!(n < 8, "pids.max=8 must stop the bomb, forked {n}: {v}");
    assert_eq!(verdict(&v), "TimeLimitExceeded", "{v}");
}

#[test]
fn thread_bomb_is_held_by_the_pids_limit() {
    if !privileged() {
        return;
    }
    let v = c(
        r#"#include <pthread.h>
           static void *idle(void *a){ (void)a; pause(); return 0; }
           int main(void){ int n = 0; pthread_t t; while (pthread_create(&t, 0, idle, 0) == 0) n++; printf("threads %d\n", n); return 0; }"#,
        &["--pids", "10"],
    );
    assert_contained(&v);
    let n: i64 = stdout(&v)
        .trim()
        .strip_prefix("threads ")
        .and_then(|s| s.parse().ok())
        .expect("count printed");
    assert!(n < 10, "threads count against pids.max: {v}");
}

#[test]
fn heap_bomb_is_memory_limit_exceeded() {
    if !privileged() {
        return;
    }
    let v = c(
        "int main(void){ for (;;) { char *p = malloc(1 << 20); if (!p) return 5; memset(p, 1, 1 << 20); } }",
        &["--memory-mb", "64"],
    );
    assert_eq!(verdict(&v), "MemoryLimitExceeded", "{v}");
    assert!(
        v["memoryKb"].as_u64().unwrap() <= 64 * 1024 + 1024,
        "peak within the limit: {v}"
    );
}

#[test]
fn static_array_bomb_is_memory_limit_exceeded() {
    if !privileged() {
        return;
    }
    let v = c(
        "static char big[1u << 30]; int main(void){ memset(big, 1, sizeof big); return big[12345]; }",
        &["--memory-mb", "64"],
    );
    assert_eq!(verdict(&v), "MemoryLimitExceeded", "{v}");
}

#[test]
fn memory_outside_any_process_is_memory_limit_exceeded() {
    if !privileged() {
        return;
    }
    // tmpfs pages: a 48 MiB file in /tmp under a 16 MiB limit. The memory is charged to the
    // step's cgroup but belongs to no process, so the OOM killer may take the supervisor.
    let v = c(
        "#include <fcntl.h>\n#include <unistd.h>\nint main(void){ static char b[1 << 20]; memset(b, 7, sizeof b); \
         int fd = open(\"/tmp/fill\", O_CREAT | O_WRONLY, 0600); for (int i = 0; i < 48; i++) if (write(fd, b, sizeof b) < 0) return 3; \
         pause(); return 0; }",
        &["--memory-mb", "16", "--wall-time-ms", "10000"],
    );
    assert_eq!(verdict(&v), "MemoryLimitExceeded", "tmpfs: {v}");
    // Pipe buffers: forty pipes grown to 1 MiB each and filled.
    let v = c(
        "#define _GNU_SOURCE\n#include <fcntl.h>\n#include <unistd.h>\nint main(void){ static char b[1 << 16]; memset(b, 7, sizeof b); \
         for (int p = 0; p < 40; p++) { int fds[2]; if (pipe2(fds, O_NONBLOCK)) return 4; fcntl(fds[1], F_SETPIPE_SZ, 1 << 20); \
         while (write(fds[1], b, sizeof b) > 0) {} } pause(); return 0; }",
        &["--memory-mb", "16", "--wall-time-ms", "10000"],
    );
    assert_eq!(verdict(&v), "MemoryLimitExceeded", "pipes: {v}");
}

#[test]
fn interpreter_memory_bomb_is_memory_limit_exceeded() {
    if !privileged() {
        return;
    }
    let v = run(
        "python",
        "a = []\nwhile True:\n    a.append('x' * (1 << 20) + str(len(a)))\n",
        &["--memory-mb", "64"],
    );
    assert_eq!(verdict(&v), "MemoryLimitExceeded", "{v}");
    let v = run("python", "s = 'x' * (1 << 34)\n", &["--memory-mb", "64"]);
    assert_eq!(
        verdict(&v),
        "MemoryLimitExceeded",
        "runtime-reported MemoryError counts too: {v}"
    );
}

#[test]
fn cpu_loop_is_time_limit_exceeded_with_cpu_time_reported() {
    if !privileged() {
        return;
    }
    let v = c(
        "int main(void){ volatile unsigned long x = 0; for (;;) x++; }",
        &["--cpu-time-ms", "500", "--wall-time-ms", "5000"],
    );
    assert_eq!(verdict(&v), "TimeLimitExceeded", "{v}");
    let cpu = v["cpuTimeMs"].as_u64().unwrap();
    assert!(cpu >= 450, "CPU time is reported from the cgroup: {v}");
}

#[test]
fn sleep_pause_and_self_stop_hit_the_wall_clock() {
    if !privileged() {
        return;
    }
    for body in ["sleep(100);", "pause();", "raise(SIGSTOP);", "for (;;) sched_yield();"] {
        let code = format!("#include <sched.h>\nint main(void){{ {body} return 0; }}");
        let v = c(&code, &["--wall-time-ms", "700", "--cpu-time-ms", "5000"]);
        assert_eq!(verdict(&v), "TimeLimitExceeded", "{body}: {v}");
        assert!(v["wallTimeMs"].as_u64().unwrap() >= 700, "{body}: {v}");
    }
}

#[test]
fn stdout_and_stderr_floods_are_capped() {
    if !privileged() {
        return;
    }
    for fd in [1, 2] {
        let code =
            format!("int main(void){{ char b[4096]; memset(b, 'x', sizeof b); for (;;) write({fd}, b, sizeof b); }}");
        let v = c(&code, &["--output-bytes", "10000"]);
        assert_eq!(verdict(&v), "OutputLimitExceeded", "fd {fd}: {v}");
        let field = if fd == 1 { "stdout" } else { "stderr" };
        assert!(v[field].as_str().unwrap().len() <= 10000, "fd {fd} output capped: {v}");
        assert_eq!(v["truncated"], true);
    }
    let v = run("python", "while True: print('y' * 100)\n", &["--output-bytes", "5000"]);
    assert_eq!(verdict(&v), "OutputLimitExceeded", "{v}");
}

#[test]
fn filling_every_writable_place_stops_at_its_cap() {
    if !privileged() {
        return;
    }
    let v = c(
        r#"static long fill(const char *path){ int fd = open(path, O_WRONLY|O_CREAT|O_TRUNC, 0600); if (fd < 0) return -1;
             char b[65536]; memset(b, 7, sizeof b); long t = 0; for (;;) { ssize_t w = write(fd, b, sizeof b); if (w <= 0) break; t += w; } close(fd); return t; }
           int main(void){ signal(SIGXFSZ, SIG_IGN);
             long a = fill("/work/fill"), b = fill("/tmp/fill"), c = fill("/dev/shm/fill");
             printf("%ld %ld %ld\n", a, b, c); return 0; }"#,
        // The caps are what is tested, not time: writing 144 MiB costs ~100 ms natively, and
        // seconds of CPU under the guest suites' emulated CPU.
        &[
            "--memory-mb",
            "512",
            "--cpu-time-ms",
            "20000",
            "--wall-time-ms",
            "40000",
        ],
    );
    assert_contained(&v);
    let n: Vec<i64> = stdout(&v).split_whitespace().map(|s| s.parse().unwrap()).collect();
    assert_eq!(n.len(), 3, "{v}");
    for (i, cap) in [(0, 64i64 << 20), (1, 64 << 20), (2, 16 << 20)] {
        assert!(n[i] > 0 && n[i] <= cap, "place {i} wrote {} (cap {cap}): {v}", n[i]);
    }
}

#[test]
fn sparse_8_gib_file_is_refused() {
    if !privileged() {
        return;
    }
    let v = c(
        r#"int main(void){ signal(SIGXFSZ, SIG_IGN); int fd = open("/work/sparse", O_WRONLY|O_CREAT, 0600);
             MUST_FAIL("ftruncate 8GiB", ftruncate(fd, 8LL << 30));
             MUST_FAIL("pwrite at 8GiB", pwrite(fd, "x", 1, 8LL << 30));
             return escaped ? 77 : 0; }"#,
        &[],
    );
    assert_contained(&v);
    assert_eq!(verdict(&v), "Accepted", "{v}");
}

// ---------------------------------------------------------------- network

#[test]
fn network_has_only_a_down_loopback_and_no_route() {
    if !privileged() {
        return;
    }
    // Real host services this test can see: a TCP listener and an abstract Unix socket.
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    let abstract_name = format!("wolf-test-{}", std::process::id());
    let unix = std::os::unix::net::UnixListener::bind_addr(
        &<std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            abstract_name.as_bytes(),
        )
        .unwrap(),
    )
    .unwrap();
    let code = format!(
        r#"#include <sys/socket.h>
           #include <netinet/in.h>
           #include <arpa/inet.h>
           #include <sys/un.h>
           #include <linux/vm_sockets.h>
           static int tcp(const char *ip, int port){{ int s = socket(AF_INET, SOCK_STREAM, 0); if (s < 0) return -1;
             struct sockaddr_in a = {{0}}; a.sin_family = AF_INET; a.sin_port = htons(port); inet_pton(AF_INET, ip, &a.sin_addr);
             return connect(s, (struct sockaddr*)&a, sizeof a); }}
           int main(void){{
             FILE *f = fopen("/proc/net/dev", "r"); char line[512]; int ifaces = 0;
             while (fgets(line, sizeof line, f)) if (strchr(line, ':')) {{ ifaces++; if (!strstr(line, "lo:")) printf("ESCAPED interface %s", line); }}
             printf("interfaces %d\n", ifaces);
             f = fopen("/proc/net/route", "r"); int routes = -1; while (fgets(line, sizeof line, f)) routes++;
             if (routes > 0) printf("ESCAPED %d routes\n", routes);
             MUST_FAIL("connect host loopback", tcp("127.0.0.1", {port}));
             MUST_FAIL("connect outside", tcp("1.1.1.1", 53));
             MUST_FAIL("connect 10.0.2.2", tcp("10.0.2.2", 80));
             int u = socket(AF_UNIX, SOCK_STREAM, 0); struct sockaddr_un ua = {{0}}; ua.sun_family = AF_UNIX;
             memcpy(ua.sun_path + 1, "{abstract_name}", strlen("{abstract_name}"));
             MUST_FAIL("connect host abstract unix socket", connect(u, (struct sockaddr*)&ua, sizeof(sa_family_t) + 1 + strlen("{abstract_name}")));
             struct sockaddr_un pa = {{0}}; pa.sun_family = AF_UNIX; strcpy(pa.sun_path, "/var/run/postgresql/.s.PGSQL.5432");
             int u2 = socket(AF_UNIX, SOCK_STREAM, 0);
             MUST_FAIL("connect host postgres socket", connect(u2, (struct sockaddr*)&pa, sizeof pa));
             MUST_FAIL("AF_VSOCK socket", socket(AF_VSOCK, SOCK_STREAM, 0));
             MUST_FAIL("AF_NETLINK socket", socket(AF_NETLINK, SOCK_RAW, 0));
             MUST_FAIL("AF_PACKET socket", socket(AF_PACKET, SOCK_RAW, 0));
             MUST_FAIL("raw socket", socket(AF_INET, SOCK_RAW, 1));
             return escaped ? 77 : 0; }}"#
    );
    let v = c(&code, &[]);
    drop((tcp, unix));
    assert_contained(&v);
    assert!(stdout(&v).contains("interfaces 1"), "only lo: {v}");
}

// ---------------------------------------------------------------- host secrets, files

#[test]
fn host_secrets_and_environment_are_not_visible() {
    if !privileged() {
        return;
    }
    let secret = format!("wolf-secret-{}", std::process::id());
    // A canary in each of the host's private directories: never visible, whatever the root.
    let canary = format!("wolf-canary-{}", std::process::id());
    let planted: Vec<std::path::PathBuf> = ["/root", "/home", "/var", "/run", "/boot"]
        .iter()
        .map(|d| std::path::Path::new(d).join(&canary))
        .filter(|p| std::fs::write(p, "secret").is_ok())
        .collect();
    // On an image runtime's root (WOLF_TEST_ENGINES), /var, /home... are the image's own
    // directories: listing them is no leak, the canaries are what counts there.
    let image_root = std::env::var_os("WOLF_TEST_ENGINES").is_some();
    let code = r#"
import os, glob
for k, v in os.environ.items():
    print("env", k, v)
for p in ["/root", "/home", "/var", "/run", "/boot"]:
    if os.path.exists(p + "/CANARY"):
        print("ESCAPED canary", p)
for p in ["/etc/shadow", "/etc/gshadow", "/root", "/home", "/var", "/run", "/sys", "/boot", "/etc/ssh", "/proc/1/environ", "/proc/kcore"]:
    try:
        if os.path.isdir(p) and IMAGE_ROOT and p not in ("/root", "/sys", "/etc/ssh"):
            print("ok the image's own", p)
        elif os.path.isdir(p):
            print("ESCAPED listed", p, os.listdir(p)[:3])
        else:
            with open(p, "rb") as f:
                data = f.read(1)
            # A masked entry (a bind of /dev/null, as /proc/kcore is where the kernel has
            # one) opens and reads empty: nothing leaked.
            print("ESCAPED read" if data else "ok masked", p)
    except OSError as e:
        print("ok", p, e.errno)
for e in glob.glob("/proc/[0-9]*/environ"):
    try:
        print("environ", e, open(e, "rb").read())
    except OSError:
        pass
print("hostname", open("/proc/sys/kernel/hostname").read().strip())
"#;
    let code = code
        .replace("CANARY", &canary)
        .replace("IMAGE_ROOT", if image_root { "True" } else { "False" });
    let v = run_env("python", &code, &[], &[("WOLF_TEST_SECRET", &secret)]);
    for p in &planted {
        let _ = std::fs::remove_file(p);
    }
    assert!(!planted.is_empty(), "the canaries were planted");
    assert_contained(&v);
    let out = stdout(&v);
    assert!(!out.contains(&secret), "host environment leaked: {v}");
    assert!(out.contains("env PATH=") || out.contains("env PATH "), "{v}");
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(out.contains("hostname wolf"), "{v}");
    assert!(!out.contains(&format!("hostname {}", host_name.trim())) || host_name.trim() == "wolf");
}

#[test]
fn writes_outside_the_work_dir_fail() {
    if !privileged() {
        return;
    }
    let v = c(
        r#"int main(void){
             const char *paths[] = {"/x", "/usr/x", "/etc/passwd", "/etc/x", "/bin/x", "/proc/x", "/dev/x", "/proc/sys/kernel/hostname",
                                    "/proc/sys/vm/drop_caches", "/proc/sysrq-trigger", "/sys/x", "/proc/self/oom_score_adj_x"};
             for (unsigned i = 0; i < sizeof paths / sizeof *paths; i++) {
               int fd = open(paths[i], O_WRONLY|O_CREAT, 0644);
               if (fd >= 0 && write(fd, "1", 1) == 1) { printf("ESCAPED wrote %s\n", paths[i]); escaped = 1; }
             }
             MUST_FAIL("mkdir /usr/lib/x", mkdir("/usr/lib/x", 0755));
             MUST_FAIL("symlink in /etc", symlink("/work", "/etc/evil"));
             int fd = open("/work/ok", O_WRONLY|O_CREAT, 0644); if (fd < 0 || write(fd, "1", 1) != 1) { printf("work dir not writable\n"); return 3; }
             return escaped ? 77 : 0; }"#,
        &[],
    );
    assert_contained(&v);
    assert_eq!(verdict(&v), "Accepted", "{v}");
}

#[test]
fn identity_from_inside_is_unprivileged_and_confined() {
    if !privileged() {
        return;
    }
    let v = c(
        r#"#include <dirent.h>
           int main(void){
             FILE *f = fopen("/proc/self/status", "r"); char line[256];
             while (fgets(line, sizeof line, f))
               if (!strncmp(line, "Uid:", 4) || !strncmp(line, "Gid:", 4) || !strncmp(line, "Cap", 3) || !strncmp(line, "NoNewPrivs", 10) || !strncmp(line, "Seccomp:", 8) || !strncmp(line, "Groups:", 7)) printf("%s", line);
             fclose(f);
             int pids = 0; DIR *d = opendir("/proc"); struct dirent *e;
             while ((e = readdir(d))) if (e->d_name[0] >= '0' && e->d_name[0] <= '9') pids++;
             closedir(d);
             printf("pids %d\n", pids);
             int fds = 0; d = opendir("/proc/self/fd"); while ((e = readdir(d))) if (e->d_name[0] != '.') fds++;
             printf("fds %d\n", fds);
             char cg[256] = {0}; f = fopen("/proc/self/cgroup", "r"); fread(cg, 1, sizeof cg - 1, f); printf("cgroup %s", cg);
             printf("getpid %d\n", getpid());
             return 0; }"#,
        &[],
    );
    assert_contained(&v);
    let out = stdout(&v);
    let field = |name: &str| -> String {
        out.lines()
            .find(|l| l.starts_with(name))
            .map(|l| l[name.len()..].trim().to_string())
            .unwrap_or_else(|| panic!("no {name}: {v}"))
    };
    let uids: HashSet<&str> = field("Uid:").split_whitespace().map(|_| "").collect();
    assert!(!uids.is_empty());
    assert!(
        field("Uid:").split_whitespace().all(|u| u != "0"),
        "uid must not be 0: {v}"
    );
    assert!(
        field("Gid:").split_whitespace().all(|g| g != "0"),
        "gid must not be 0: {v}"
    );
    for cap in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(field(cap), "0000000000000000", "{cap} {v}");
    }
    assert_eq!(field("NoNewPrivs:"), "1", "{v}");
    assert_eq!(field("Seccomp:"), "2", "{v}");
    let pids: u32 = field("pids").parse().unwrap();
    assert!(pids <= 2, "only the program's own processes are visible: {v}");
    assert_eq!(field("fds"), "4", "0, 1, 2 and the directory being read: {v}");
    assert!(
        out.contains("cgroup 0::/\n")
            || out
                .lines()
                .filter(|l| l.starts_with("cgroup") || l.contains("::"))
                .all(|l| l.ends_with(":/")),
        "cgroup namespace hides the host tree: {v}"
    );
}

// ---------------------------------------------------------------- system calls

#[test]
fn dangerous_system_calls_fail() {
    if !privileged() {
        return;
    }
    let v = c(
        r#"#include <sys/ptrace.h>
           #include <sys/mount.h>
           #include <sys/sysmacros.h>
           #include <sched.h>
           #include <linux/keyctl.h>
           #include <sys/personality.h>
           #include <sys/ioctl.h>
           #include <termios.h>
           int main(void){
             MUST_FAIL("ptrace TRACEME", ptrace(PTRACE_TRACEME, 0, 0, 0));
             MUST_FAIL("ptrace ATTACH 1", ptrace(PTRACE_ATTACH, 1, 0, 0));
             MUST_FAIL("mount tmpfs", mount("none", "/tmp", "tmpfs", 0, 0));
             MUST_FAIL("umount /proc", umount2("/proc", MNT_DETACH));
             MUST_FAIL("unshare user", unshare(CLONE_NEWUSER));
             MUST_FAIL("unshare net", unshare(CLONE_NEWNET));
             MUST_FAIL("clone newuser", syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0));
             MUST_FAIL("setns", syscall(SYS_setns, 0, 0));
             MUST_FAIL("chroot", chroot("/tmp"));
             MUST_FAIL("pivot_root", syscall(SYS_pivot_root, "/tmp", "/tmp"));
             MUST_FAIL("io_uring_setup", syscall(SYS_io_uring_setup, 8, calloc(1, 256)));
             MUST_FAIL("bpf", syscall(SYS_bpf, 0, calloc(1, 256), 128));
             MUST_FAIL("perf_event_open", syscall(SYS_perf_event_open, calloc(1, 256), 0, -1, -1, 0));
             MUST_FAIL("userfaultfd", syscall(SYS_userfaultfd, 0));
             MUST_FAIL("keyctl join", syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, 0));
             MUST_FAIL("add_key", syscall(SYS_add_key, "user", "x", "y", 1, KEY_SPEC_SESSION_KEYRING));
             MUST_FAIL("kexec_load", syscall(SYS_kexec_load, 0, 0, 0, 0));
             MUST_FAIL("init_module", syscall(SYS_init_module, "x", 1, ""));
             MUST_FAIL("finit_module", syscall(SYS_finit_module, 0, "", 0));
             MUST_FAIL("delete_module", syscall(SYS_delete_module, "ext4", 0));
             MUST_FAIL("open_by_handle_at", syscall(SYS_open_by_handle_at, 0, calloc(1, 64), 0));
             MUST_FAIL("process_vm_readv", syscall(SYS_process_vm_readv, 1, 0, 0, 0, 0, 0));
             MUST_FAIL("setuid 0", setuid(0));
             MUST_FAIL("mknod", mknod("/work/dev", S_IFCHR | 0666, makedev(1, 3)));
             MUST_FAIL("personality ADDR_NO_RANDOMIZE", personality(ADDR_NO_RANDOMIZE));
             char c = 'x'; MUST_FAIL("ioctl TIOCSTI", ioctl(0, TIOCSTI, &c));
             MUST_FAIL("sethostname", sethostname("evil", 4));
             MUST_FAIL("x32 getpid", syscall(0x40000000 | 39));
             MUST_FAIL("clone3", syscall(SYS_clone3, calloc(1, 128), 88));
             return escaped ? 77 : 0; }"#,
        &[],
    );
    assert_contained(&v);
    assert_eq!(verdict(&v), "Accepted", "{v}");
}

#[test]
fn i386_int_0x80_is_killed_by_the_architecture_check() {
    if !privileged() {
        return;
    }
    // i386 getpid is 20; through int 0x80 it would run as a 32-bit call.
    let v = c(
        r#"int main(void){ long r; __asm__ volatile ("int $0x80" : "=a"(r) : "a"(20) : "memory");
             printf("ESCAPED int 0x80 returned %ld\n", r); return 77; }"#,
        &[],
    );
    assert_contained(&v);
    assert_eq!(
        v["signal"].as_i64(),
        Some(31),
        "SIGSYS from SECCOMP_RET_KILL_PROCESS: {v}"
    );
    assert_eq!(verdict(&v), "RuntimeError", "{v}");
}

#[test]
fn killing_the_parent_or_everything_does_not_break_the_sandbox() {
    if !privileged() {
        return;
    }
    let v = c(
        r#"int main(void){ kill(getppid(), SIGKILL); kill(1, SIGKILL); kill(-1, SIGKILL); kill(0, SIGCONT);
             printf("alive\n"); return 0; }"#,
        &[],
    );
    assert_eq!(verdict(&v), "Accepted", "{v}");
    assert_eq!(stdout(&v), "alive\n");
}

#[test]
fn a_double_forked_orphan_does_not_outlive_the_job() {
    if !privileged() {
        return;
    }
    let marker = format!("wolforph{}", std::process::id() % 100000);
    let code = format!(
        r#"#include <sys/prctl.h>
           int main(void){{ if (fork() == 0) {{ setsid(); if (fork() == 0) {{ prctl(PR_SET_NAME, "{marker}"); close(1); close(2); for (;;) sleep(1); }} _exit(0); }}
             wait(0); printf("parent done\n"); return 0; }}"#
    );
    let v = c(&code, &[]);
    assert_eq!(verdict(&v), "Accepted", "{v}");
    // After `wolf run` returned, no process anywhere on the host carries the marker name.
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) {
            assert_ne!(comm.trim(), marker, "orphan survived as pid {:?}", entry.file_name());
        }
    }
}

#[test]
fn nothing_a_job_writes_is_visible_to_the_next() {
    if !privileged() {
        return;
    }
    let first = c(
        r#"#include <sys/ipc.h>
           #include <sys/shm.h>
           #include <sys/msg.h>
           #include <sys/file.h>
           int main(void){ const char *p[] = {"/tmp/left", "/dev/shm/left", "/work/left"};
             for (int i = 0; i < 3; i++) { int fd = open(p[i], O_WRONLY|O_CREAT, 0666); write(fd, "x", 1); flock(fd, LOCK_EX); }
             int id = shmget(4242, 4096, IPC_CREAT | 0666); printf("shm %d\n", id);
             printf("msg %d\n", msgget(4243, IPC_CREAT | 0666)); return 0; }"#,
        &[],
    );
    assert_eq!(verdict(&first), "Accepted", "{first}");
    let second = c(
        r#"#include <sys/ipc.h>
           #include <sys/shm.h>
           #include <sys/msg.h>
           int main(void){ const char *p[] = {"/tmp/left", "/dev/shm/left", "/work/left"};
             for (int i = 0; i < 3; i++) if (access(p[i], F_OK) == 0) { printf("ESCAPED %s survived\n", p[i]); escaped = 1; }
             MUST_FAIL("shmget previous", shmget(4242, 0, 0));
             MUST_FAIL("msgget previous", msgget(4243, 0));
             return escaped ? 77 : 0; }"#,
        &[],
    );
    assert_contained(&second);
    assert_eq!(verdict(&second), "Accepted", "{second}");
}

#[test]
fn symlinks_planted_at_every_name_leave_a_host_canary_untouched() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let canary = dir.path().join("canary");
    std::fs::write(&canary, "untouched").unwrap();
    let before = std::fs::metadata(&canary).unwrap().modified().unwrap();
    let target = canary.display().to_string();
    // Every name the host side (or the sandbox's own supervisor) could read or write.
    let names = [
        "output.log",
        "stdout",
        "stderr",
        "code.bin",
        "main",
        "main.c",
        "main.py",
        "result.json",
        "stdin",
        "compile.log",
        "canary",
    ];
    let mut code = String::from("import os\n");
    for d in ["/work", "/tmp", "/dev/shm"] {
        for n in names {
            code.push_str(&format!("try:\n    os.symlink({target:?}, '{d}/{n}')\nexcept FileExistsError:\n    os.remove('{d}/{n}'); os.symlink({target:?}, '{d}/{n}')\n"));
        }
        code.push_str(&format!("os.mkfifo('{d}/fifo')\n"));
    }
    code.push_str(&format!("try:\n    open({target:?}, 'w').write('owned')\n    print('ESCAPED')\nexcept OSError as e:\n    print('ok', e.errno)\nprint('planted')\n"));
    for _ in 0..2 {
        let v = run("python", &code, &[]);
        assert_contained(&v);
        assert!(stdout(&v).contains("planted"), "{v}");
    }
    // A compiled job too: its compiler and binary share the work dir with the plants.
    let v = c(
        &format!(
            r#"int main(void){{ unlink("/work/main.c"); symlink("{target}", "/work/main.c"); symlink("{target}", "/work/output.log"); puts("planted"); return 0; }}"#
        ),
        &[],
    );
    assert_contained(&v);
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "untouched");
    assert_eq!(std::fs::metadata(&canary).unwrap().modified().unwrap(), before);
}

// ---------------------------------------------------------------- compile-time attacks

#[test]
fn including_host_secrets_at_compile_time_leaks_nothing() {
    if !privileged() {
        return;
    }
    let v = run("c", "#include \"/etc/shadow\"\nint main(void){return 0;}\n", &[]);
    assert_eq!(verdict(&v), "CompileError", "{v}");
    let out = v["compileOutput"].as_str().unwrap();
    assert!(out.contains("No such file"), "the file does not exist inside: {v}");
    if let Ok(shadow) = std::fs::read_to_string("/etc/shadow") {
        for line in shadow.lines().filter(|l| l.contains(':') && l.len() > 8) {
            assert!(!out.contains(line), "host /etc/shadow leaked into compileOutput");
        }
    }
    let v = run("c++", "#include \"/proc/1/environ\"\nint main(){}\n", &[]);
    assert_eq!(verdict(&v), "CompileError", "{v}");
}

#[test]
fn endless_include_and_template_bomb_end_in_compile_error_within_the_limit() {
    if !privileged() {
        return;
    }
    let v = run(
        "c",
        "#include </dev/random>\nint main(void){return 0;}\n",
        &["--compile-cpu-time-ms", "2000", "--compile-wall-time-ms", "4000"],
    );
    assert_eq!(verdict(&v), "CompileError", "{v}");
    let bomb = r#"
template<unsigned long N, unsigned long M> struct A { static const unsigned long v = A<N-1, 2*M>::v + A<N-1, 2*M+1>::v; };
template<unsigned long M> struct A<0, M> { static const unsigned long v = M; };
int main() { return (int)A<40, 0>::v; }
"#;
    let v = run(
        "c++",
        bomb,
        &[
            "--compile-cpu-time-ms",
            "2000",
            "--compile-wall-time-ms",
            "4000",
            "--compile-memory-mb",
            "256",
        ],
    );
    assert_eq!(verdict(&v), "CompileError", "{v}");
    assert!(
        v["timings"]["compile"].as_f64().unwrap() < 4000.0 + 1000.0,
        "stopped by the compile limits: {v}"
    );
}

// ---------------------------------------------------------------- accounting and reporting

#[test]
fn memory_and_cpu_accounting_match_what_the_program_used() {
    if !privileged() {
        return;
    }
    let v = c(
        r#"#include <time.h>
           static double cpu(void){ struct timespec t; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); return t.tv_sec * 1e3 + t.tv_nsec / 1e6; }
           int main(void){ size_t n = 100u << 20; char *p = malloc(n); memset(p, 1, n);
             volatile unsigned long x = 0; while (cpu() < 500) x++;
             printf("%c\n", p[n - 1] + '0'); return 0; }"#,
        &["--memory-mb", "256", "--cpu-time-ms", "6000"],
    );
    assert_eq!(verdict(&v), "Accepted", "{v}");
    let kb = v["memoryKb"].as_u64().unwrap() as f64;
    let used = 100.0 * 1024.0;
    assert!(
        (kb - used).abs() <= used * 0.2,
        "memory {kb} KiB vs {used} KiB used: {v}"
    );
    let cpu = v["cpuTimeMs"].as_u64().unwrap() as f64;
    // The cgroup also charges what the kernel does for the step around the program (the fork,
    // the exec, unmapping 100 MiB at exit). Natively that is a few ms; under an emulated CPU
    // (the guest suites set WOLF_GUEST) it is hundreds to above a thousand, depending on how
    // busy the host is (seen: 1005 ms over), so only the upper slack widens there; reporting
    // wall time or nothing still fails.
    let slack = if std::env::var_os("WOLF_GUEST").is_some() {
        2500.0
    } else {
        100.0
    };
    assert!(cpu >= 400.0 && cpu <= 500.0 + slack, "cpu {cpu} ms vs 500 ms used: {v}");
}

#[test]
fn exit_code_and_signal_are_reported() {
    if !privileged() {
        return;
    }
    let v = c("int main(void){ return 42; }", &[]);
    assert_eq!(verdict(&v), "RuntimeError");
    assert_eq!(v["exitCode"].as_i64(), Some(42));
    assert!(v["signal"].is_null());
    let v = c("int main(void){ volatile int *p = 0; return *p; }", &[]);
    assert_eq!(verdict(&v), "RuntimeError");
    assert_eq!(v["signal"].as_i64(), Some(11), "{v}");
    assert!(v["exitCode"].is_null());
    let v = c("int main(void){ abort(); }", &[]);
    assert_eq!(v["signal"].as_i64(), Some(6), "{v}");
}

#[test]
fn expected_output_gives_wrong_answer_or_accepted() {
    if !privileged() {
        return;
    }
    let (_d1, good) = temp_file(b"42\n");
    let (_d2, bad) = temp_file(b"43\n");
    let code = "print(42)   \n";
    let v = run("python", code, &["--expected-output", good.to_str().unwrap()]);
    assert_eq!(verdict(&v), "Accepted", "{v}");
    let v = run("python", code, &["--expected-output", bad.to_str().unwrap()]);
    assert_eq!(verdict(&v), "WrongAnswer", "{v}");
}

#[test]
fn stdin_is_delivered_and_large_stdin_does_not_deadlock() {
    if !privileged() {
        return;
    }
    let big = "x".repeat(4 << 20);
    let (_d, f) = temp_file(big.as_bytes());
    let v = run(
        "python",
        "import sys\nprint(len(sys.stdin.read()))\n",
        &["--stdin", f.to_str().unwrap()],
    );
    assert_eq!(verdict(&v), "Accepted", "{v}");
    assert_eq!(stdout(&v).trim(), (4 << 20).to_string());
    // A program that never reads its stdin still finishes.
    let v = run("python", "print('ignored')\n", &["--stdin", f.to_str().unwrap()]);
    assert_eq!(verdict(&v), "Accepted", "{v}");
}

// ---------------------------------------------------------------- per-uid kernel limits

/// Two sandboxes at once (two `wolf run` processes, as two Wolf instances would be): the first
/// exhausts what the kernel counts per uid — inotify instances, queued real-time signals, pipe
/// buffer pages — and holds it; the second must still get each. Each sandbox has a uid of its
/// own, so the first one's exhaustion is its own.
#[test]
fn one_job_exhausting_per_uid_limits_does_not_starve_another() {
    if !privileged() {
        return;
    }
    let hog = r#"#include <sys/inotify.h>
        #include <signal.h>
        #include <fcntl.h>
        int main(void){
          int n = 0; while (inotify_init1(IN_CLOEXEC) >= 0) n++;
          sigset_t s; sigemptyset(&s); sigaddset(&s, SIGRTMIN); sigprocmask(SIG_BLOCK, &s, 0);
          union sigval v = {0}; int q = 0; while (sigqueue(getpid(), SIGRTMIN, v) == 0) q++;
          int p = 0; for (;;) { int fds[2]; if (pipe(fds)) break; if (fcntl(fds[1], F_SETPIPE_SZ, 1 << 20) < 0) break; p++; }
          printf("uid %d inotify %d sigqueue %d pipes %d\n", getuid(), n, q, p); fflush(stdout);
          sleep(4); return 0; }"#;
    let probe = r#"#include <sys/inotify.h>
        #include <signal.h>
        #include <fcntl.h>
        int main(void){
          int in = inotify_init1(IN_CLOEXEC);
          sigset_t s; sigemptyset(&s); sigaddset(&s, SIGRTMIN); sigprocmask(SIG_BLOCK, &s, 0);
          union sigval v = {0}; int sq = sigqueue(getpid(), SIGRTMIN, v);
          int fds[2]; int pp = pipe(fds); int big = pp == 0 ? fcntl(fds[1], F_SETPIPE_SZ, 1 << 20) : -1;
          printf("uid %d inotify %d sigqueue %d pipe %d\n", getuid(), in >= 0, sq == 0, big >= (1 << 20)); return 0; }"#;
    let hog_run = std::thread::spawn(move || c(hog, &["--wall-time-ms", "10000"]));
    // The hog compiles, then exhausts within milliseconds and sleeps 4 s: probe within that.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let p = c(probe, &[]);
    let h = hog_run.join().unwrap();
    assert_eq!(verdict(&h), "Accepted", "{h}");
    assert_eq!(verdict(&p), "Accepted", "{p}");
    let uid = |v: &serde_json::Value| stdout(v).split_whitespace().nth(1).map(str::to_string);
    assert_ne!(uid(&h), uid(&p), "two live sandboxes share a uid: {h} {p}");
    assert!(
        stdout(&p).ends_with("inotify 1 sigqueue 1 pipe 1\n"),
        "hog {h}\nprobe {p}"
    );
}

// ---------------------------------------------------------------- instances

/// `wolf run` inside a new pid namespace (with its own /proc), as a Wolf in a container is.
fn run_in_pid_namespace(code: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prog.py");
    std::fs::write(&file, code).unwrap();
    let out = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(env!("CARGO_BIN_EXE_wolf"))
        .args(["run", "--engine", &engine_for("python"), "--wall-time-ms", "15000"])
        // The emulated CPU of the guest suites: room for python's start (see common::run_env).
        .args(if std::env::var_os("WOLF_GUEST").is_some() {
            &["--cpu-time-ms", "20000"][..]
        } else {
            &[][..]
        })
        .arg(&file)
        .env("WOLF_CACHE_DIR", cache_dir())
        .output()
        .expect("unshare");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Starting a Wolf sweeps stale step cgroups. One in another pid namespace sees none of the
/// first one's processes; it must still leave the first one's running job alone (and the
/// reverse): ownership is an instance lock, never a pid.
#[test]
fn a_wolf_in_another_pid_namespace_never_disturbs_a_running_job() {
    if !privileged() {
        return;
    }
    let slow = "import time\ntime.sleep(3)\nprint('alive')\n";
    let quick = "print('quick')\n";
    // Outside runs long; inside starts (and sweeps) meanwhile.
    let outside = std::thread::spawn(move || run("python", slow, &["--wall-time-ms", "15000"]));
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let q = run_in_pid_namespace(quick);
    assert_eq!(stdout(&q), "quick\n", "{q}");
    let o = outside.join().unwrap();
    assert_eq!((verdict(&o), stdout(&o)), ("Accepted", "alive\n"), "{o}");
    // Inside runs long; outside starts meanwhile.
    let inside = std::thread::spawn(move || run_in_pid_namespace(slow));
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let q = run("python", quick, &[]);
    assert_eq!(stdout(&q), "quick\n", "{q}");
    let i = inside.join().unwrap();
    assert_eq!((verdict(&i), stdout(&i)), ("Accepted", "alive\n"), "{i}");
}

// ---------------------------------------------------------------- host identifiers

/// The host's boot id, its uids' key counts and its boot command line are not readable inside
/// (each reads empty); KSM merging (a cross-job side channel) is refused.
#[test]
fn host_identifiers_are_masked_and_memory_merge_is_refused() {
    if !privileged() {
        return;
    }
    let host = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let v = run(
        "python",
        "import ctypes\nfor p in ['/proc/sys/kernel/random/boot_id', '/proc/key-users', '/proc/cmdline']:\n    try:\n        print(p, repr(open(p).read()))\n    except OSError as e:\n        print(p, 'error', e.errno)\nlibc = ctypes.CDLL(None, use_errno=True)\nr = libc.prctl(67, 1, 0, 0, 0)\nprint('merge', r, ctypes.get_errno())\n",
        &[],
    );
    assert_eq!(verdict(&v), "Accepted", "{v}");
    let out = stdout(&v);
    for p in ["/proc/sys/kernel/random/boot_id", "/proc/key-users", "/proc/cmdline"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(p))
            .unwrap_or_else(|| panic!("{p}: {v}"));
        assert!(
            line.ends_with("''") || line.contains("error"),
            "{p} readable inside: {line}"
        );
        let h = host(p);
        assert!(
            h.trim().is_empty() || !line.contains(h.trim()),
            "{p} shows the host's: {line}"
        );
    }
    assert!(
        out.contains("merge -1 1\n"),
        "PR_SET_MEMORY_MERGE must fail with EPERM: {v}"
    );
}

// ---------------------------------------------------------------- the root under test

/// The suite's engines run on the root they are meant to: the host's, or with
/// `WOLF_TEST_ENGINES` the image runtime's (python-ml writes /etc/matplotlibrc, which the host
/// has not) — else the suite's second run, on the image, would prove nothing.
#[test]
fn the_suite_runs_on_the_root_it_names() {
    if !privileged() {
        return;
    }
    let on_image = std::env::var_os("WOLF_TEST_ENGINES").is_some();
    assert!(
        !std::path::Path::new("/etc/matplotlibrc").exists(),
        "the host has no such file"
    );
    let want = if on_image { "1\n" } else { "0\n" };
    let v = c(
        r#"int main(void){ printf("%d\n", access("/etc/matplotlibrc", F_OK) == 0); return 0; }"#,
        &[],
    );
    assert_eq!(stdout(&v), want, "{v}");
    let v = run(
        "python",
        "import os\nprint(int(os.path.exists('/etc/matplotlibrc')))\n",
        &[],
    );
    assert_eq!(stdout(&v), want, "{v}");
}

/// `wolf check` proves every layer on this host with real jobs, and says which it saw.
#[test]
fn wolf_check_proves_every_layer_here() {
    if !privileged() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wolf"))
        .arg("check")
        .env("WOLF_CACHE_DIR", cache_dir())
        .env("WOLF_DATA_DIR", data.path())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{report}");
    assert_eq!(report["ok"], true, "{report}");
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    for want in [
        "seccomp filter",
        "no_new_privs",
        "read-only root",
        "memory cgroup",
        "pids cgroup",
    ] {
        assert!(names.contains(&want), "{report}");
    }
}
