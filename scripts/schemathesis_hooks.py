"""Schemathesis hooks for Wolf's API (scripts/test.sh runs schemathesis with every check).

A submission's file names must be unique; JSON Schema cannot state uniqueness by one property
of the items, so the OpenAPI document cannot either. Generated bodies that repeat a name are
dropped here; the server's 422 for them is tested in system/api/tests/edge.rs instead. The
same for the two rules between fields of a submission with test cases: with `tests`, stdin
and expectedOutput go per test; `stopOnFirstFailure` needs tests (both answered 422, tested in
system/testkit/tests/contract.rs). And output-file patterns with a `.` or `..` component
(refused with 422; JSON Schema has no portable way to say "no such component"), and
outputFiles together with tests or a checker program (not supported yet, 422). For files:
a path with a `.` or `..` component, a path that is also another file's directory, and
base64 contents that do not decode (all 422, tested in system/api/tests/edge.rs). And
compilerOptions for an engine without a compile step (422). An interactor with a checker,
or with files of its own (the same rules as a checker program's), or with outputFiles (422). A session's exec gives exactly one of code and command, and a
command no executionEngine, and a repl session only Python (422, tested in
system/testkit/tests/contract/sessions.rs).
"""

import base64
import binascii
import pathlib
import tomllib

import schemathesis

# Engines (names and aliases) without a compile step, from the registry Wolf builds in:
# compilerOptions for them are refused (422).
_REGISTRY = tomllib.loads(
    (pathlib.Path(__file__).resolve().parent.parent / "system/core/languages.toml").read_text()
)
INTERPRETED = {
    n
    for lang in _REGISTRY.get("language", [])
    if "compile" not in lang
    for n in [lang["name"], *lang.get("aliases", [])]
}


def canonical_base64(text):
    """Whether `text` is base64 as the server decodes it: standard alphabet, padded, canonical."""
    try:
        return base64.b64encode(base64.b64decode(text, validate=True)).decode() == text
    except (binascii.Error, ValueError):
        return False


@schemathesis.hook
def filter_body(ctx, body):
    if not isinstance(body, dict):
        return True
    if ctx.operation is not None and ctx.operation.path == "/session" and ctx.operation.method.upper() == "POST":
        # Only Python has a REPL (422 for another engine).
        if body.get("mode") == "repl" and body.get("executionEngine") not in (None, "python", "py", "python3"):
            return False
    if ctx.operation is not None and ctx.operation.path == "/session/{id}/exec":
        code, command = body.get("code"), body.get("command")
        if (code is None) == (command is None):
            return False
        if command is not None and body.get("executionEngine") is not None:
            return False
        # A repl session runs Python cells only (422 for another engine), and a session's
        # mode is not in the request: only Python cells here.
        if body.get("executionEngine") not in (None, "python", "py", "python3"):
            return False
        outs = body.get("outputFiles")
        if isinstance(outs, list):
            for p in outs:
                if isinstance(p, str) and any(c in (".", "..") for c in p.split("/")):
                    return False
        return True
    tests = body.get("tests")
    if isinstance(tests, list) and tests and ("stdin" in body or "expectedOutput" in body):
        return False
    if body.get("stopOnFirstFailure") and not (isinstance(tests, list) and tests):
        return False
    if body.get("compilerOptions") and body.get("executionEngine") in INTERPRETED:
        return False
    checker = body.get("checker")
    if isinstance(checker, dict) and checker.get("type") == "testlib" and checker.get("files"):
        # The checker's files follow the rules of a submission's (unique, no file also a
        # directory, valid base64) and may not take its three reserved names: too many rules
        # between items for JSON Schema; their 422s are tested in system/testkit/tests/contract.
        return False
    interactor = body.get("interactor")
    if isinstance(interactor, dict):
        if "checker" in body or interactor.get("files"):
            return False
        if body.get("outputFiles"):
            return False
    outs = body.get("outputFiles")
    if isinstance(outs, list) and outs:
        if isinstance(tests, list) and tests:
            return False
        checker = body.get("checker")
        if isinstance(checker, dict) and checker.get("type") == "testlib":
            return False
        for p in outs:
            if isinstance(p, str) and any(c in (".", "..") for c in p.split("/")):
                return False
    files = body.get("files")
    if not isinstance(files, list):
        return True
    names = [f.get("name") for f in files if isinstance(f, dict) and isinstance(f.get("name"), str)]
    if len(names) != len(set(names)):
        return False
    dirs = {"/".join(n.split("/")[:i]) for n in names for i in range(1, n.count("/") + 1)}
    if any(n in dirs for n in names):
        return False
    if any(c in (".", "..") for n in names for c in n.split("/")):
        return False
    for f in files:
        if isinstance(f, dict) and f.get("encoding") == "base64" and isinstance(f.get("content"), str):
            if not canonical_base64(f["content"]):
                return False
    return True
