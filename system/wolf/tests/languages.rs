//! Every engine of the registry that is present on this host runs a program end to end.

mod common;

use common::*;

fn hello(engine: &str) -> &'static str {
    match engine {
        "c" => {
            "#include <stdio.h>\nint main(void){ char n[64]; if (scanf(\"%63s\", n) != 1) return 1; printf(\"hello %s\\n\", n); return 0; }\n"
        }
        "c++" => {
            "#include <bits/stdc++.h>\nusing namespace std;\nint main(){ string n; cin >> n; cout << \"hello \" << n << endl; }\n"
        }
        "python" => "print('hello', input())\n",
        "javascript" => "const n = require('fs').readFileSync(0, 'utf8').trim(); console.log('hello ' + n);\n",
        "java" => {
            "import java.util.*;\npublic class Main { public static void main(String[] a) { System.out.println(\"hello \" + new Scanner(System.in).next()); } }\n"
        }
        "rust" => {
            "use std::io::Read;\nfn main(){ let mut s = String::new(); std::io::stdin().read_to_string(&mut s).unwrap(); println!(\"hello {}\", s.trim()); }\n"
        }
        "bash" => "read n; echo \"hello $n\"\n",
        _ => unreachable!(),
    }
}

fn present(engine: &str) -> bool {
    let ok = match engine {
        "rust" => std::process::Command::new("rustc")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "java" => std::path::Path::new("/usr/bin/javac").exists(),
        "javascript" => std::path::Path::new("/usr/bin/node").exists(),
        _ => true,
    };
    if !ok {
        eprintln!("skipped {engine}: its toolchain is not installed on this host");
    }
    ok
}

#[test]
fn every_engine_says_hello_with_stdin() {
    if !privileged() {
        return;
    }
    let (_d, input) = temp_file(b"wolf\n");
    for engine in ["c", "c++", "python", "javascript", "java", "rust", "bash"] {
        if !present(engine) {
            continue;
        }
        let v = run(engine, hello(engine), &["--stdin", input.to_str().unwrap()]);
        assert_eq!(verdict(&v), "Accepted", "{engine}: {v}");
        assert_eq!(stdout(&v), "hello wolf\n", "{engine}: {v}");
    }
}

#[test]
fn compiled_engines_report_compile_errors() {
    if !privileged() {
        return;
    }
    for engine in ["c", "c++", "java", "rust"] {
        if !present(engine) {
            continue;
        }
        let v = run(engine, "this is not a program {", &[]);
        assert_eq!(verdict(&v), "CompileError", "{engine}: {v}");
        assert!(
            !v["compileOutput"].as_str().unwrap().is_empty(),
            "{engine}: diagnostics reported: {v}"
        );
    }
}

#[test]
fn seed_hello_world_in_cpp_uses_the_precompiled_header() {
    if !privileged() {
        return;
    }
    let code = "#include <bits/stdc++.h>\nusing namespace std;\n\nint main() {\n    cout << \"Hello World\";\n    return 0;\n}";
    let v = run("c++", code, &[]);
    assert_eq!(verdict(&v), "Accepted", "{v}");
    assert_eq!(stdout(&v), "Hello World");
    assert!(
        cache_dir().join("pch/bits/stdc++.h.gch").exists(),
        "the header was precompiled into the cache"
    );
}

#[test]
fn unknown_engine_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.cob");
    std::fs::write(&f, "DISPLAY 'HI'.").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wolf"))
        .args(["run", "--engine", "cobol"])
        .arg(&f)
        .env("WOLF_CACHE_DIR", cache_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown execution engine") && err.contains("python"),
        "{err}"
    );
}

#[test]
fn wolf_run_judges_a_tests_directory_with_a_checker_program() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tests = dir.path().join("tests");
    std::fs::create_dir(&tests).unwrap();
    for (name, input, answer) in [("1", "1 2", "3"), ("2", "5 5", "10"), ("10", "2 2", "5")] {
        std::fs::write(tests.join(format!("{name}.in")), input).unwrap();
        std::fs::write(tests.join(format!("{name}.ans")), answer).unwrap();
    }
    let tests = tests.to_str().unwrap();
    let ab = "a, b = map(int, input().split())\nprint(a + b)";
    let v = run("python", ab, &["--tests", tests]);
    assert_eq!(verdict(&v), "WrongAnswer", "{v}");
    let names: Vec<&str> = v["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["1", "2", "10"], "numeric order: {v}");
    assert_eq!((v["passed"].as_u64(), v["score"].as_f64()), (Some(2), Some(2.0)), "{v}");
    let v = run("python", ab, &["--tests", tests, "--stop-on-first-failure"]);
    assert_eq!(v["tests"].as_array().map(Vec::len), Some(3), "{v}");
    // A checker program that gives half a point for an answer one off.
    let checker = dir.path().join("check.py");
    std::fs::write(
        &checker,
        "import sys\no, a = (int(open(p).read()) for p in sys.argv[2:4])\n\
         if o == a: sys.exit(0)\n\
         if abs(o - a) == 1:\n    sys.stderr.write('points 0.5 one off'); sys.exit(7)\n\
         sys.stderr.write(f'wrong answer {o} is not {a}'); sys.exit(1)\n",
    )
    .unwrap();
    let v = run(
        "python",
        ab,
        &["--tests", tests, "--checker", checker.to_str().unwrap()],
    );
    assert_eq!(verdict(&v), "Accepted", "{v}");
    let t = &v["tests"][2];
    assert_eq!(
        (t["score"].as_f64(), t["checkerMessage"].as_str()),
        (Some(0.5), Some("one off")),
        "{v}"
    );
    assert_eq!(v["score"].as_f64(), Some(2.5), "{v}");
}

#[test]
fn wolf_run_connects_a_program_to_an_interactor_in_each_test() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tests = dir.path().join("tests");
    std::fs::create_dir(&tests).unwrap();
    for (name, secret) in [("1", "42"), ("2", "999")] {
        std::fs::write(tests.join(format!("{name}.in")), secret).unwrap();
    }
    // The interactor answers each guess with < > or = and allows 12.
    let interactor = dir.path().join("judge.py");
    std::fs::write(
        &interactor,
        "import sys\nsecret = int(open(sys.argv[1]).read())\n\
         for q in range(1, 13):\n\
         \x20   g = int(sys.stdin.readline() or 0)\n\
         \x20   if g == secret:\n\
         \x20       print('=', flush=True); sys.stderr.write(f'found in {q}'); sys.exit(0)\n\
         \x20   print('<' if secret < g else '>', flush=True)\n\
         sys.stderr.write('too many guesses'); sys.exit(1)\n",
    )
    .unwrap();
    let bisect = "lo, hi = 1, 1000\nwhile True:\n    m = (lo + hi) // 2\n    print(m, flush=True)\n    r = input()\n\
        \x20   if r == '=': break\n    lo, hi = (lo, m - 1) if r == '<' else (m + 1, hi)";
    let tests = tests.to_str().unwrap();
    let v = run(
        "python",
        bisect,
        &["--tests", tests, "--interactor", interactor.to_str().unwrap()],
    );
    assert_eq!(verdict(&v), "Accepted", "{v}");
    let said: Vec<&str> = v["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["checkerMessage"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(said, ["found in 8", "found in 9"], "{v}");
    // A program that guesses the same number forever is out of guesses.
    let v = run(
        "python",
        "while True:\n    print(1, flush=True)\n    input()",
        &["--tests", tests, "--interactor", interactor.to_str().unwrap()],
    );
    assert_eq!(verdict(&v), "RuntimeError", "{v}: it reads end of file and fails first");
    assert_eq!(v["tests"][0]["checkerMessage"], "too many guesses", "{v}");
}

#[test]
fn wolf_run_brings_back_the_output_files_asked_for() {
    if !privileged() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("files");
    let code = "import os\nos.makedirs('out', exist_ok=True)\nopen('out/t.csv', 'w').write('a,b\\n')\n\
        open('plot.png', 'wb').write(bytes(range(256)))\nos.symlink('/etc/passwd', 'out/link.csv')";
    let v = run(
        "python",
        code,
        &[
            "--output-file",
            "out/*.csv",
            "--output-file",
            "plot.png",
            "--output-dir",
            target.to_str().unwrap(),
        ],
    );
    assert_eq!(verdict(&v), "Accepted", "{v}");
    assert_eq!(std::fs::read(target.join("out/t.csv")).unwrap(), b"a,b\n");
    assert_eq!(
        std::fs::read(target.join("plot.png")).unwrap(),
        (0..=255u8).collect::<Vec<_>>()
    );
    assert!(
        !target.join("out/link.csv").exists(),
        "a planted link is never brought back"
    );
    let refused = v["filesRefused"].as_array().unwrap();
    assert!(refused.iter().any(|r| r["path"] == "out/link.csv"), "{v}");
}

/// A timed wait that a signal interrupts with no handler to run is restarted by the kernel
/// (`restart_syscall`), which the sandbox must let through: without it the wait failed with
/// EPERM and glibc aborted ("The futex facility returned an unexpected error code"), as in
/// Python when one thread waits with a timeout while another starts a program that is missing
/// (matplotlib's font manager does both on import).
#[test]
fn a_timed_wait_interrupted_by_a_signal_is_restarted() {
    if !privileged() {
        return;
    }
    let c = "#define _GNU_SOURCE\n#include <errno.h>\n#include <pthread.h>\n#include <semaphore.h>\n#include <signal.h>\n\
             #include <stdio.h>\n#include <time.h>\n#include <unistd.h>\nstatic sem_t s;\n\
             static void *waiter(void *a) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); ts.tv_sec += 1;\n\
               int r = sem_clockwait(&s, CLOCK_MONOTONIC, &ts); printf(\"waited %d %d\\n\", r, r ? errno : 0); return a; }\n\
             int main(void) { sem_init(&s, 0, 0); pthread_t t; pthread_create(&t, NULL, waiter, NULL); usleep(10000);\n\
               sigset_t all, old; sigfillset(&all); pthread_sigmask(SIG_BLOCK, &all, &old);\n\
               /* the child's SIGCHLD, blocked here, interrupts the waiting thread */\n\
               if (vfork() == 0) { char *av[] = {\"x\", NULL}; execve(\"/nonexistent\", av, NULL); _exit(127); }\n\
               pthread_sigmask(SIG_SETMASK, &old, NULL); pthread_join(t, NULL); puts(\"done\"); return 0; }\n";
    let r = run("c", c, &[]);
    assert_eq!(r["verdict"], "Accepted", "{r}");
    assert_eq!(r["stdout"], "waited -1 110\ndone\n", "ETIMEDOUT after the restart: {r}");
    let py = "import subprocess, threading\nt = threading.Timer(5, print)\nt.start()\ntry:\n    subprocess.run(['missing-program'])\n\
              except FileNotFoundError:\n    print('missing')\nt.cancel()\nprint('ok')\n";
    let r = run("python", py, &[]);
    assert_eq!(r["verdict"], "Accepted", "{r}");
    assert_eq!(r["stdout"], "missing\nok\n", "{r}");
}
