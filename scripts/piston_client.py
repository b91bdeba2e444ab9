"""Requests shaped exactly as the npm piston-client 1.0.2 sends them, against Wolf's Piston door.

Usage: piston_client.py URL   (URL is Wolf's base; the client appends /api/v2/...)
piston-client sends no Content-Type (node-fetch labels the body text/plain;charset=UTF-8), its
default args are ["1","2","3"], and "latest" is the lexicographic max version of the runtimes
whose language equals the name. Any failed check exits non-zero.
"""

import json
import sys
import urllib.error
import urllib.request

base = sys.argv[1].rstrip("/") + "/api/v2"
ok = 0


def check(name, cond, got):
    global ok
    if not cond:
        print(f"FAIL {name}: {got!r}")
        sys.exit(1)
    ok += 1
    print(f"ok   {name}")


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "text/plain;charset=UTF-8")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


status, runtimes = call("GET", "/runtimes")
check("runtimes", status == 200 and all({"language", "version", "aliases"} <= set(r) for r in runtimes), runtimes)


def latest(lang):
    return max((r["version"] for r in runtimes if r["language"] == lang), default=None)


def execute(lang, code, **cfg):
    # piston-client's body, with its defaults.
    body = {
        "language": lang,
        "version": cfg.pop("version", latest(lang)),
        "files": cfg.pop("files", [{"content": code}]),
        "stdin": cfg.pop("stdin", ""),
        "args": cfg.pop("args", ["1", "2", "3"]),
        "compile_timeout": cfg.pop("compileTimeout", 10000),
        "run_timeout": cfg.pop("runTimeout", 3000),
        "compile_memory_limit": cfg.pop("compileMemoryLimit", -1),
        "run_memory_limit": cfg.pop("runMemoryLimit", -1),
    }
    body.update(cfg)
    if body["version"] is None:
        del body["version"]  # JSON.stringify drops undefined
    return call("POST", "/execute", body)


s, r = execute("python", "import sys\nprint(sys.argv[1:])")
check("python with the client's defaults", s == 200 and r["run"]["stdout"] == "['1', '2', '3']\n" and r["run"]["code"] == 0, r)
check("answer shape", set(r) == {"language", "version", "run"} and r["version"] == latest("python"), r)
check("stage shape", {"stdout", "stderr", "output", "code", "signal", "message", "status", "cpu_time", "wall_time", "memory"} <= set(r["run"]), r["run"])
s, r = execute("py", "print('alias')", version="3.x")
check("alias with a selector", s == 200 and r["run"]["stdout"] == "alias\n", r)
s, r = execute("py", "print(1)")
check("alias without a version: 400 as the client gets from Piston", s == 400 and r["message"] == "version is required as a string", r)
s, r = execute("python", "print(1)", version="1.x")
check("unknown version", s == 400 and r["message"] == f"python-1.x runtime is unknown", r)
s, r = execute("python", "import sys\nprint(repr(sys.stdin.read()))", stdin="abc")
check("stdin gets its newline", r["run"]["stdout"] == "'abc\\n'\n", r)
s, r = execute(
    "python",
    None,
    files=[
        {"name": "main.py", "content": "from lib import v\nprint(v(), open('d.bin','rb').read().hex())"},
        {"name": "lib.py", "content": "def v(): return 'lib'"},
        {"name": "d.bin", "content": "AAH/", "encoding": "base64"},
    ],
)
check("files and encodings", s == 200 and r["run"]["stdout"] == "lib 0001ff\n", r)
s, r = execute("python", "raise SystemExit(3)")
check("exit code", r["run"]["code"] == 3 and r["run"]["status"] == "RE", r["run"])
s, r = execute("python", "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)")
check("signal", r["run"]["signal"] == "SIGSEGV" and r["run"]["status"] == "SG" and r["run"]["code"] is None, r["run"])
s, r = execute("python", "while True: pass", runTimeout=1500, run_cpu_time=500)
check("time limit", r["run"]["status"] == "TO" and r["run"]["signal"] == "SIGKILL", r["run"])
s, r = execute("c++", "#include <cstdio>\nint main(int c, char **v) { std::printf(\"%d\\n\", c); }")
check("compiled: compile stage then run", s == 200 and r["compile"]["code"] == 0 and r["run"]["stdout"] == "4\n", r)
s, r = execute("c++", "int main() { return nope; }")
check("compile error: run is a copy of compile", r["compile"]["code"] != 0 and r["run"] == r["compile"] and "nope" in r["compile"]["output"], r)
for body, msg in [
    ({"version": "*", "files": [{"content": "x"}]}, "language is required as a string"),
    ({"language": "python", "version": "*"}, "files is required as an array"),
    ({"language": "python", "version": "*", "files": [{}]}, "files[0].content is required as a string"),
    ({"language": "python", "version": "*", "files": [{"content": "eA==", "encoding": "base64"}]}, "files must include at least one utf8 encoded file"),
    ({"language": "python", "version": "*", "files": [{"content": "x"}], "run_timeout": "9"}, "If specified, run_timeout must be a number"),
    ({"language": "python", "version": "*", "files": [{"content": "x"}], "run_timeout": -2}, "run_timeout must be non-negative"),
]:
    s, r = call("POST", "/execute", body)
    check(f"400 {msg}", s == 400 and r["message"] == msg, (s, r))
s, r = call("POST", "/execute", {"language": "python", "version": "*", "files": [{"content": "x"}], "run_timeout": 10**12})
check("400 past the limit", s == 400 and "cannot exceed the configured limit" in r["message"], r)
s, r = call("POST", "/execute", {"language": "python", "version": "*", "files": [{"content": "x"}, {"name": "../../etc/x", "content": ""}]})
check("400 for a path out of the work dir (Piston: 500)", s == 400, (s, r))
s, r = call("GET", "/nope")
check("404 Not Found", s == 404 and r == {"message": "Not Found"}, (s, r))
print(f"piston client: {ok} checks passed")
