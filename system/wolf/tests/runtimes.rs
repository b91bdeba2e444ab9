//! Runtimes from images, through the real binary: two images built here by Docker (`FROM
//! scratch` with Debian's static busybox and a tool of a different version in each), saved
//! with `docker save`, imported with `wolf runtime import`, and jobs run in each side by side
//! with `wolf run` — each sees its own root, read-only, and nothing of the host's; the jail's
//! other layers hold there as on the host root.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const BUSYBOX: &str = "/bin/busybox";

fn docker_ok() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `docker build` then `docker save` of a busybox image whose tool prints `version`.
fn image(dir: &Path, tag: &str, version: &str) -> PathBuf {
    let ctx = dir.join(tag.replace([':', '/'], "-"));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::copy(BUSYBOX, ctx.join("busybox")).unwrap();
    std::fs::write(ctx.join("tool"), format!("#!/bin/sh\necho tool {version}\n")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nENV TOOL_HOME=/opt/tool HOME=/image-home\nCOPY busybox /bin/busybox\nCOPY tool /usr/bin/tool\n\
         RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         RUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo secret > /etc/shadow; chmod 600 /etc/shadow; chmod 4755 /bin/busybox /usr/bin/tool\"]\n",
    )
    .unwrap();
    let out = Command::new("docker")
        .args(["build", "-q", "-t", tag])
        .arg(&ctx)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let archive = dir.join(format!("{}.tar", tag.replace([':', '/'], "-")));
    let out = Command::new("docker")
        .args(["save", "-o"])
        .arg(&archive)
        .arg(tag)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker save: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    archive
}

/// A configuration entry for a shell engine on runtime `rt`, its version from the image's tool.
fn shell_engine(name: &str, rt: &str, aliases: &[&str], requires: &[&str]) -> String {
    let list = |items: &[&str]| items.iter().map(|i| format!("{i:?}")).collect::<Vec<_>>().join(", ");
    format!(
        "[[language]]\nname = \"{name}\"\naliases = [{}]\nruntime = \"{rt}\"\nsource = \"main.sh\"\n\
         run = [\"/bin/sh\", \"main.sh\"]\nversion = [\"/usr/bin/tool\"]\nrequires = [{}]\n",
        list(aliases),
        list(requires)
    )
}

fn wolf(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wolf"))
        .args(args)
        .env("WOLF_CONFIG", config)
        .env_remove("WOLF_DATA_DIR")
        .output()
        .unwrap()
}

fn run(config: &Path, data: &Path, engine: &str, code: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("main.sh");
    std::fs::write(&file, code).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wolf"))
        .args(["run", "--engine", engine, "--cache-dir"])
        .arg(common::cache_dir())
        .arg(&file)
        .env("WOLF_CONFIG", config)
        .env("WOLF_DATA_DIR", data)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn jobs_run_in_image_runtimes_side_by_side() {
    if !common::privileged() {
        return;
    }
    if !docker_ok() || !Path::new(BUSYBOX).exists() {
        eprintln!("skipped: needs a Docker engine and Debian's busybox-static (the test command installs it)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = tmp.path().join("wolf.toml");
    let engine = |name: &str, rt: &str| shell_engine(name, rt, &[], &["/bin/sh", "/usr/bin/tool"]);
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n{}{}{}",
            data.display(),
            engine("tool-1", "tool-1"),
            engine("tool-2", "tool-2"),
            engine("tool-3", "not-imported")
        ),
    )
    .unwrap();
    for (name, version) in [("tool-1", "1.0"), ("tool-2", "2.0")] {
        let archive = image(tmp.path(), &format!("wolf-test/{name}:latest"), version);
        let out = wolf(&config, &["runtime", "import", name, archive.to_str().unwrap()]);
        assert!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
        let info: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(info["format"], "docker-archive", "{info}");
        assert!(info["digest"].as_str().unwrap().starts_with("sha256:"), "{info}");
        // The setuid bits the image set are gone, and counted.
        assert!(info["dropped"]["specialBits"].as_u64().unwrap() >= 2, "{info}");
    }
    // Two versions of the same tool, side by side.
    for (engine, want) in [("tool-1", "tool 1.0\n"), ("tool-2", "tool 2.0\n")] {
        let r = run(&config, &data, engine, "tool");
        assert_eq!(r["verdict"], "Accepted", "{r}");
        assert_eq!(r["stdout"], want, "{r}");
    }
    // The image's environment applies (its PATH, its variables), but HOME stays Wolf's.
    let r = run(&config, &data, "tool-1", "echo \"$PATH|$TOOL_HOME|$HOME\"");
    assert_eq!(
        r["stdout"], "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|/opt/tool|/tmp\n",
        "{r}"
    );
    // The root is the image's, read-only; nothing of the host's is there; the identity is the
    // sandbox's; a setuid binary of the image gains nothing.
    let r = run(
        &config,
        &data,
        "tool-1",
        "ls /; test -e /usr/lib && echo HOST-USR; test -e /usr/bin/python3 && echo HOST-PYTHON\n\
         touch /bin/new 2>/dev/null && echo WROTE-ROOT; touch /etc/new 2>/dev/null && echo WROTE-ETC\n\
         cat /etc/shadow 2>/dev/null && echo READ-SHADOW\n\
         id -u; busybox id -u\n\
         echo ok > /work/x && cat /work/x; echo t > /tmp/t && cat /tmp/t\n\
         ls /proc | grep -c '^[0-9]'\n",
    );
    assert_eq!(r["verdict"], "Accepted", "{r}");
    let out = r["stdout"].as_str().unwrap();
    for bad in ["HOST-USR", "HOST-PYTHON", "WROTE-ROOT", "WROTE-ETC", "READ-SHADOW"] {
        assert!(!out.contains(bad), "{bad}: {out}");
    }
    let lines: Vec<&str> = out.lines().collect();
    let uid_at = lines.iter().position(|l| l.parse::<u32>().is_ok()).unwrap();
    assert_ne!(lines[uid_at], "0", "unprivileged: {out}");
    assert_eq!(lines[uid_at], lines[uid_at + 1], "setuid busybox gains nothing: {out}");
    assert!(out.contains("ok\nt\n"), "the writable places work: {out}");
    // A fork bomb is held by the pids limit in a runtime as on the host.
    let r = run(&config, &data, "tool-1", "b() { b | b & }; b; sleep 1; echo survived");
    assert_ne!(r["verdict"], "InternalError", "{r}");
    // An engine on a runtime that is not imported is absent, and says why.
    let r = Command::new(env!("CARGO_BIN_EXE_wolf"))
        .args(["run", "--engine", "tool-3", "/dev/null"])
        .env("WOLF_CONFIG", &config)
        .env("WOLF_DATA_DIR", &data)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        !r.status.success() && err.contains("not-imported is not imported"),
        "{err}"
    );
    // Through `wolf serve`: the engines on runtimes are listed with their image, and a job
    // runs on its runtime's root while the others keep the host's.
    serve_runs_jobs_on_runtimes(&config);
    // Listed, then removed.
    let out = wolf(&config, &["runtime", "list"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    let out = wolf(&config, &["runtime", "rm", "tool-2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = wolf(&config, &["runtime", "inspect", "tool-2"]);
    assert!(!out.status.success());
    // Hostile input to the command: a name that is a path, a source that is not an image.
    let out = wolf(&config, &["runtime", "import", "../x", "/dev/null"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("runtime name"), "{out:?}");
    let out = wolf(&config, &["runtime", "import", "x", "/etc/hostname"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("refused"),
        "{out:?}"
    );
}

fn serve_runs_jobs_on_runtimes(config: &Path) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_wolf"))
        .args(["serve", "--listen", "127.0.0.1:0", "--workers", "1"])
        .env("WOLF_CONFIG", config)
        .env("WOLF_CACHE_DIR", common::cache_dir())
        .env("WOLF_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let _guard = Kill(child);
    let base = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("wolf: listening on ")
                .map(|r| r.split_whitespace().next().unwrap().to_string())
        })
        .expect("wolf serve printed its address");
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(60)))
        .build()
        .into();
    let langs: Value = agent
        .get(format!("{base}/languages"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let tool1 = langs
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "tool-1")
        .cloned()
        .unwrap_or_default();
    // The version is what the image's own tool printed, asked in a sandbox on its root.
    assert_eq!(tool1["version"], "tool 1.0", "{langs}");
    assert!(
        tool1["image"].as_str().is_some_and(|v| v.starts_with("tool-1@sha256:")),
        "{langs}"
    );
    assert!(
        !langs.as_array().unwrap().iter().any(|l| l["name"] == "tool-3"),
        "absent engines are not listed"
    );
    let post = |body: Value| {
        let mut r = agent
            .post(format!("{base}/job?wait=true&timeout=60"))
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .unwrap();
        (
            r.status().as_u16(),
            r.body_mut().read_json::<Value>().unwrap_or_default(),
        )
    };
    for (engine, want) in [("tool-2", "tool 2.0\n"), ("tool-1", "tool 1.0\n")] {
        let (s, rec) =
            post(serde_json::json!({"code": "tool; test -e /usr/lib || echo no-host-usr", "executionEngine": engine}));
        assert_eq!(s, 200, "{rec}");
        assert_eq!(rec["result"]["verdict"], "Accepted", "{rec}");
        let id = rec["id"].as_str().unwrap();
        let out = agent
            .get(format!("{base}/job/{id}/output"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        assert_eq!(out, format!("{want}no-host-usr\n"), "{rec}");
    }
    // The host's engines still run on the host's root, on the same workers.
    let (s, rec) = post(serde_json::json!({"code": "test -e /usr/lib && echo host", "executionEngine": "bash"}));
    assert_eq!((s, rec["result"]["verdict"].as_str()), (200, Some("Accepted")), "{rec}");
    // An engine whose runtime is not imported is refused at submission.
    let (s, body) = post(serde_json::json!({"code": "true", "executionEngine": "tool-3"}));
    assert_eq!(s, 422, "{body}");
    // Sessions are on the host's root only, and say so.
    let mut r = agent
        .post(format!("{base}/session"))
        .header("Content-Type", "application/json")
        .send(serde_json::json!({"executionEngine": "tool-1"}).to_string())
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        422,
        "{}",
        r.body_mut().read_to_string().unwrap_or_default()
    );
}

/// The worked example: the python-ml image (deploy/runtimes/python-ml/build.sh, which the test
/// command runs first and names in WOLF_PYTHON_ML), imported, computing with numpy and pandas
/// and returning a matplotlib PNG as an output file.
#[test]
fn the_python_ml_runtime_computes_and_plots() {
    if !common::privileged() {
        return;
    }
    let Some(archive) = std::env::var_os("WOLF_PYTHON_ML").map(PathBuf::from) else {
        eprintln!(
            "skipped: WOLF_PYTHON_ML names no image archive (scripts/test.sh builds it with deploy/runtimes/python-ml/build.sh)"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = tmp.path().join("wolf.toml");
    let engine = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/runtimes/python-ml/wolf.toml"
    ))
    .unwrap();
    std::fs::write(&config, format!("data_dir = \"{}\"\n{engine}", data.display())).unwrap();
    let started = std::time::Instant::now();
    let out = wolf(&config, &["runtime", "import", "python-ml", archive.to_str().unwrap()]);
    assert!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!(
        "python-ml import: {:.1} s, {} MB of files, {} entries, dropped {}",
        started.elapsed().as_secs_f64(),
        info["bytes"].as_u64().unwrap_or(0) >> 20,
        info["entries"],
        info["dropped"]
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("main.py");
    std::fs::write(
        &file,
        "import numpy as np, pandas as pd\nimport matplotlib\nimport matplotlib.pyplot as plt\n\
         x = np.linspace(0, 2 * np.pi, 200)\ndf = pd.DataFrame({'x': x, 'y': np.sin(x)})\n\
         print(matplotlib.get_backend(), round(float(df['y'].max()), 3), len(df))\n\
         plt.plot(df['x'], df['y'])\nplt.savefig('plot.png')\n",
    )
    .unwrap();
    let outputs = dir.path().join("out");
    let out = Command::new(env!("CARGO_BIN_EXE_wolf"))
        .args([
            "run",
            "--engine",
            "python-ml",
            "--output-file",
            "plot.png",
            "--output-dir",
        ])
        .arg(&outputs)
        .arg("--cache-dir")
        .arg(common::cache_dir())
        .arg(&file)
        .env("WOLF_CONFIG", &config)
        .env("WOLF_DATA_DIR", &data)
        .output()
        .unwrap();
    let r: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(r["verdict"], "Accepted", "{r}");
    assert_eq!(
        r["stdout"].as_str().map(str::to_lowercase).as_deref(),
        Some("agg 1.0 200\n"),
        "{r}"
    );
    let png = std::fs::read(outputs.join("plot.png")).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000,
        "a PNG of {} bytes",
        png.len()
    );

    // Hostile programs on this root are held as on the host's: what gets through is printed.
    let probe = |code: &str, flags: &[&str]| {
        let f = dir.path().join("probe.py");
        std::fs::write(&f, code).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_wolf"))
            .args(["run", "--engine", "python-ml"])
            .args(flags)
            .arg(&f)
            .env("WOLF_CONFIG", &config)
            .env("WOLF_DATA_DIR", &data)
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let r = probe(
        "import ctypes, os, socket, subprocess\ngot = []\n\
         for p in ['/etc/shadow', '/root', '/proc/1/environ']:\n    try:\n        open(p).read() if not os.path.isdir(p) else os.listdir(p)\n        got.append(p)\n    except OSError:\n        pass\n\
         for p in ['/usr/x', '/etc/x', '/x']:\n    try:\n        open(p, 'w'); got.append(p)\n    except OSError:\n        pass\n\
         try:\n    socket.create_connection(('1.1.1.1', 53), timeout=1); got.append('network')\nexcept OSError:\n    pass\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         if libc.mount(b'none', b'/tmp', b'tmpfs', 0, None) == 0: got.append('mount')\n\
         if libc.unshare(0x10000000) == 0: got.append('unshare-user')\n\
         if os.path.exists('/bin/su') and subprocess.run(['/bin/su', '-c', 'id -u'], capture_output=True, text=True).stdout.strip() == '0': got.append('su')\n\
         print('got', got, os.getuid())\n",
        &[],
    );
    assert_eq!(r["verdict"], "Accepted", "{r}");
    let out = r["stdout"].as_str().unwrap();
    assert!(out.starts_with("got [] ") && !out.trim().ends_with(" 0"), "{r}");
    let r = probe(
        "import numpy as np\nx = np.ones((1 << 30,), dtype=np.uint8)\nx[:] = 1\nprint(x.sum())",
        &["--memory-mb", "256"],
    );
    assert_eq!(r["verdict"], "MemoryLimitExceeded", "{r}");
    let r = probe(
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        &["--wall-time-ms", "2000"],
    );
    assert!(
        ["TimeLimitExceeded", "RuntimeError"].contains(&r["verdict"].as_str().unwrap()),
        "{r}"
    );
    let r = probe("while True:\n    pass", &["--cpu-time-ms", "500"]);
    assert_eq!(r["verdict"], "TimeLimitExceeded", "{r}");
}

/// Distributed: one API, two managers, only manager 0 with the runtime. Jobs for its engine
/// all run there while host jobs run anywhere; `/languages` lists it with its image's digest
/// while a manager offers it; an engine whose runtime no manager has is refused at submission
/// (422 naming the engines that exist), and so is the runtime's once its manager stops.
#[test]
fn distributed_jobs_on_a_runtime_go_to_the_managers_that_have_it() {
    if !common::privileged() {
        return;
    }
    if !docker_ok() || !Path::new(BUSYBOX).exists() {
        eprintln!("skipped: needs a Docker engine and Debian's busybox-static (the test command installs it)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let archive = image(tmp.path(), "wolf-test/route:latest", "3.0");
    let config = tmp.path().join("wolf.toml");
    let engine = |name: &str, rt: &str| shell_engine(name, rt, &[&format!("{name}-alias")], &["/bin/sh"]);
    std::fs::write(
        &config,
        format!(
            "{}{}",
            engine("rtool", "bb.route"),
            engine("rtool-nowhere", "bb-nowhere")
        ),
    )
    .unwrap();
    let mut stack =
        wolf_testkit::Stack::up_with(tmp.path(), 1, 0, &[("WOLF_CONFIG", config.to_str().unwrap())]).unwrap();
    let out = stack
        .wolf_cmd()
        .args(["runtime", "import", "bb.route"])
        .arg(&archive)
        .arg("--data-dir")
        .arg(tmp.path().join("manager-0"))
        .output()
        .unwrap();
    assert!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
    stack.start_manager(0).unwrap();
    stack.start_manager(1).unwrap();
    let with_runtime = stack.managers[0].id();
    let api = stack.apis[0].1.clone();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(60)))
        .build()
        .into();
    let languages = || -> Vec<Value> {
        agent
            .get(format!("{api}/languages"))
            .call()
            .unwrap()
            .body_mut()
            .read_json::<Vec<Value>>()
            .unwrap()
    };
    let offered = |want: bool| {
        for _ in 0..100 {
            let l = languages();
            if l.iter().any(|e| e["name"] == "rtool") == want {
                return l;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("rtool offered should be {want}: {:?}", languages());
    };
    let list = offered(true);
    let rtool = list.iter().find(|e| e["name"] == "rtool").unwrap();
    assert!(
        rtool["image"].as_str().unwrap().starts_with("bb.route@sha256:"),
        "{rtool}"
    );
    assert_eq!(
        rtool["version"], "tool 3.0",
        "asked on the manager, in its runtime: {rtool}"
    );
    assert!(!list.iter().any(|e| e["name"] == "rtool-nowhere"), "{list:?}");
    assert!(
        list.iter().any(|e| e["name"] == "python"),
        "host engines stay listed: {list:?}"
    );
    let submit = |engine: &str, code: &str| -> (u16, Value) {
        let mut r = agent
            .post(format!("{api}/job?wait=true&timeout=60"))
            .send_json(serde_json::json!({"code": code, "executionEngine": engine}))
            .unwrap();
        let status = r.status().as_u16();
        let mut body: Value = r.body_mut().read_json().unwrap();
        if status == 200 {
            let out = agent
                .get(format!("{api}/job/{}/output", body["id"].as_str().unwrap()))
                .call()
                .unwrap()
                .body_mut()
                .read_to_string()
                .unwrap();
            body["verdict"] = body["result"]["verdict"].clone();
            body["stdout"] = out.into();
        }
        (status, body)
    };
    let (status, body) = submit("rtool-nowhere", "tool");
    assert_eq!(status, 422, "{body}");
    let msg = body.to_string();
    assert!(
        msg.contains("not offered by any live manager") && msg.contains("rtool") && msg.contains("python"),
        "{msg}"
    );
    for i in 0..6 {
        let engine = if i % 2 == 0 { "rtool" } else { "rtool-alias" };
        let (status, r) = submit(engine, &format!("tool; echo {i}"));
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["verdict"], "Accepted", "{r}");
        assert_eq!(r["stdout"], format!("tool 3.0\n{i}\n"), "{r}");
        let worker = r["attempts"][0]["worker"].as_str().unwrap();
        assert!(
            worker.contains(&format!("/{with_runtime}/")),
            "ran on the manager with the runtime ({with_runtime}): {r}"
        );
    }
    for i in 0..4 {
        let (status, r) = submit("python", &format!("print({i})"));
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["stdout"], format!("{i}\n"), "{r}");
    }
    // The manager with the runtime stops: its offer goes with it.
    let _ = Command::new("kill").args(["-TERM", &with_runtime.to_string()]).status();
    let _ = stack.managers[0].wait();
    offered(false);
    let (status, body) = submit("rtool", "tool");
    assert_eq!(status, 422, "{body}");
    let (status, r) = submit("python", "print('still')");
    assert_eq!((status, r["stdout"].as_str()), (200, Some("still\n")), "{r}");
}

/// `containerd://NAMESPACE/IMAGE`: an image put into the host's containerd (Docker's, on this
/// machine) is imported from its content store through its socket, and runs; a missing image
/// and a reference that would be an option of containerd's CLI are refused.
#[test]
fn an_image_in_containerd_is_imported_through_its_socket() {
    if !common::privileged() {
        return;
    }
    let address = [
        "/run/containerd/containerd.sock",
        "/var/run/docker/containerd/containerd.sock",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists());
    let ctr = Command::new("ctr")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let (Some(address), true, true, true) = (address, ctr, docker_ok(), Path::new(BUSYBOX).exists()) else {
        eprintln!("skipped: needs a containerd socket with its ctr, a Docker engine and busybox-static");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let archive = image(tmp.path(), "wolf-test/ctr:latest", "4.0");
    let ns = format!("wolf-test-{}", std::process::id());
    let ctr = |args: &[&str]| {
        Command::new("ctr")
            .args(["--address", address, "--namespace", &ns])
            .args(args)
            .output()
            .unwrap()
    };
    let out = ctr(&["images", "import", archive.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "ctr import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    struct Cleanup<F: Fn()>(F);
    impl<F: Fn()> Drop for Cleanup<F> {
        fn drop(&mut self) {
            (self.0)()
        }
    }
    let _cleanup = Cleanup(|| {
        let _ = ctr(&["images", "rm", "--sync", "docker.io/wolf-test/ctr:latest"]);
        let _ = Command::new("ctr")
            .args(["--address", address, "namespaces", "rm", &ns])
            .output();
    });
    let data = tmp.path().join("data");
    let config = tmp.path().join("wolf.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n{}",
            data.display(),
            shell_engine("ctool", "from-ctr", &[], &["/bin/sh"])
        ),
    )
    .unwrap();
    let source = format!("containerd://{ns}/docker.io/wolf-test/ctr:latest");
    let import = |source: &str| {
        Command::new(env!("CARGO_BIN_EXE_wolf"))
            .args(["runtime", "import", "from-ctr", source])
            .env("WOLF_CONFIG", &config)
            .env("CONTAINERD_ADDRESS", address)
            .output()
            .unwrap()
    };
    let out = import(&source);
    assert!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["source"], source, "{info}");
    // The digest recorded is the one containerd has for the image.
    let listed = String::from_utf8_lossy(&ctr(&["images", "ls"]).stdout).to_string();
    let digest = info["digest"].as_str().unwrap();
    assert!(
        digest.starts_with("sha256:")
            && listed
                .lines()
                .any(|l| l.starts_with("docker.io/wolf-test/ctr:latest") && l.contains(digest)),
        "{digest} vs containerd's {listed}"
    );
    assert!(info["dropped"]["specialBits"].as_u64().unwrap() >= 2, "{info}");
    let r = run(
        &config,
        &data,
        "ctool",
        "tool; cat /etc/shadow 2>/dev/null || echo no-shadow",
    );
    assert_eq!(r["verdict"], "Accepted", "{r}");
    assert_eq!(r["stdout"], "tool 4.0\nno-shadow\n", "{r}");
    // Refused: an image containerd does not have; a reference shaped as an option.
    let out = import(&format!("containerd://{ns}/docker.io/wolf-test/absent:1"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("absent"), "{err}");
    let out = import(&format!("containerd://{ns}/--address=/tmp/x"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not valid"), "{err}");
}
