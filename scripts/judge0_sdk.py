"""The official Judge0 Python SDK (PyPI judge0 0.0.8), unchanged, against Wolf's Judge0 door.

Usage: judge0_sdk.py URL   (URL is Wolf's /judge0 base, e.g. http://127.0.0.1:8080/judge0)
Each check asserts what a Judge0 CE 1.13.1 server would answer; any failure exits non-zero.
"""

import sys

import httpx
import judge0

url = sys.argv[1]
client = judge0.Client(url, headers={})  # GET /languages, GET /config_info
ok = 0


def check(name, cond, got):
    global ok
    if not cond:
        print(f"FAIL {name}: {got!r}")
        sys.exit(1)
    ok += 1
    print(f"ok   {name}")


# A single run, the language by alias (the SDK reads /about's version to map it: 71). The stdin
# is not valid base64 on purpose: the SDK decodes any field that is (its own quirk).
r = judge0.run(client=client, source_code="print(input()[::-1])", stdin="a wolf", language=judge0.PYTHON)
check("single run by alias", int(r.status) == 3 and r.stdout == "flow a\n", (r.status, r.stdout))
check("time and memory", float(r.time) >= 0 and int(r.memory) > 0, (r.time, r.memory))

# The language by id, with an expected output that differs: Wrong Answer.
r = judge0.run(client=client, source_code="print(1)", language=71, expected_output="2")
check("wrong answer by id", int(r.status) == 4, r.status)

# Test cases: one submission per test, through the batch routes.
rs = judge0.run(
    client=client,
    source_code="print(int(input()) * 2)",
    language=71,
    test_cases=[("1", "2"), ("5", "10"), ("7", "15")],
)
check("test cases", [int(x.status) for x in rs] == [3, 3, 4], [x.status for x in rs])

# A batch of submissions given directly.
subs = [judge0.Submission(source_code=f"print({i})", language=71) for i in range(3)]
rs = judge0.run(client=client, submissions=subs)
check("batch", [x.stdout for x in rs] == ["0\n", "1\n", "2\n"], [x.stdout for x in rs])

# A compile error: C++ (GCC 9.2.0), id 54.
r = judge0.run(client=client, source_code="int main() { return nope; }", language=54)
check("compile error", int(r.status) == 6 and "nope" in (r.compile_output or ""), (r.status, r.compile_output))

# A time limit in Judge0's unit (seconds).
r = judge0.run(client=client, source_code="while True: pass", language=71, cpu_time_limit=1)
check("time limit", int(r.status) == 5, r.status)

# A runtime error by signal: SIGSEGV is status 7.
r = judge0.run(
    client=client, source_code="#include <signal.h>\nint main() { raise(SIGSEGV); }", language=50
)
check("SIGSEGV", int(r.status) == 7, r.status)

# Text that is not ASCII survives base64 both ways.
r = judge0.run(client=client, source_code="print(input() + ' ✓')", stdin="héllo", language=71)
check("unicode through base64", r.stdout == "héllo ✓\n", r.stdout)

# additional_files: the SDK zips them; they are unpacked beside the program, subdirectories too.
fs = judge0.Filesystem(content=[judge0.File(name="data.txt", content="41"), judge0.File(name="lib/one.py", content="ONE = 1")])
r = judge0.run(
    client=client,
    source_code="import sys\nsys.path.insert(0, 'lib')\nimport one\nprint(int(open('data.txt').read()) + one.ONE)",
    language=71,
    additional_files=fs,
)
check("additional files", r.stdout == "42\n", (r.status, r.stdout, r.stderr))

# redirect_stderr_to_stdout: one stream, in the order written.
r = judge0.run(
    client=client,
    source_code="import sys\nprint('a', flush=True)\nsys.stderr.write('b\\n'); sys.stderr.flush()\nprint('c')",
    language=71,
    redirect_stderr_to_stdout=True,
)
check("stderr to stdout", r.stdout == "a\nb\nc\n" and not r.stderr, (r.stdout, r.stderr))

# The raw API: 201 with a token, wait=true answers the result, fields, statuses, 422 shapes.
h = httpx.Client(base_url=url, timeout=60)
t = h.post("/submissions", json={"source_code": "print(2)", "language_id": 71})
check("201 token", t.status_code == 201 and set(t.json()) == {"token"}, t.text)
w = h.post("/submissions?wait=true&fields=stdout,status_id,language", json={"source_code": "print(3)", "language_id": 71})
check("wait=true", w.status_code == 201 and w.json()["stdout"] == "3\n" and w.json()["status_id"] == 3, w.text)
check("fields", set(w.json()) == {"stdout", "status_id", "language"}, w.text)
check("14 statuses", len(h.get("/statuses").json()) == 14, h.get("/statuses").text)
check("about 1.13.1", h.get("/about").json()["version"] == "1.13.1", h.get("/about").text)
check("39 config keys", len(h.get("/config_info").json()) == 39, len(h.get("/config_info").json()))
bad = h.post("/submissions", json={"source_code": "x", "language_id": 9999})
check("unknown language 422", bad.status_code == 422 and "language_id" in bad.json(), bad.text)
bad = h.post("/submissions", json={"source_code": "x", "language_id": 71, "cpu_time_limit": 100000})
check("limit past the cap 422", bad.status_code == 422 and "cpu_time_limit" in bad.json(), bad.text)
check("bad fields 400", h.get(f"/submissions/{t.json()['token']}?fields=nope").status_code == 400, "")
check("unknown token 404", h.get("/submissions/00000000-0000-4000-8000-000000000000").status_code == 404, "")
g = h.get(f"/submissions/batch?tokens={t.json()['token']},00000000-0000-4000-8000-000000000000")
check("batch get with null", g.status_code == 200 and g.json()["submissions"][1] is None, g.text)
print(f"judge0 SDK: {ok} checks passed")
