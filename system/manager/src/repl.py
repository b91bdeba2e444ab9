# Wolf's Python REPL driver: one interpreter kept alive for a session, running cells.
#
# Requests arrive on stdin, one JSON object per line: {"op": "exec", "code", "stdin"?,
# "outputFiles"?}, {"op": "shell", "command", "stdin"?} (bash, in the same work dir),
# {"op": "put", "path", "data"} (base64), {"op": "get", "path"}. Each answer
# is one line on the real stdout, after the marker given as argv[1]: {"stdout", "stderr",
# "value", "error", "traceback", "cpuMs", "wallMs", "files"} or {"data"} or {"error"}.
# A cell's prints go to descriptor 1 as they happen (the manager streams them, and takes
# whatever comes before the marker as the cell's stdout); what it writes to sys.stderr is
# captured for the answer and also written to descriptor 2 as it happens (streamed), where the
# marker line ends each answer's stderr before the answer itself goes out. "memoryKb" is the
# interpreter's peak resident size so far. This runs inside the session's sandbox, as the
# session's user: it can do nothing the cells cannot do themselves.
import ast
import base64
import glob
import hashlib
import io
import json
import os
import resource
import stat
import subprocess
import sys
import time
import traceback

MARK = sys.argv[1]
OUT = os.fdopen(os.dup(1), "w", buffering=1)
ERR = os.fdopen(os.dup(2), "w", buffering=1, errors="replace")
ENV = {"__name__": "__main__", "__builtins__": __builtins__}


class Tee(io.TextIOBase):
    """A cell's sys.stderr: kept for its answer, and written out at once to be streamed."""

    def __init__(self):
        self.kept = io.StringIO()

    def writable(self):
        return True

    def write(self, s):
        self.kept.write(s)
        ERR.write(s)
        ERR.flush()
        return len(s)

    def getvalue(self):
        return self.kept.getvalue()


def answer(obj):
    ERR.write(MARK + "\n")
    ERR.flush()
    OUT.write(MARK + " " + json.dumps(obj) + "\n")
    OUT.flush()


def regular(path):
    """The bytes of a regular file at `path` in the work dir, never through a link."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError("not a regular file")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read()
    finally:
        os.close(fd)


def run_cell(req):
    out, err = OUT, Tee()
    sys.stdout, sys.stderr = out, err
    sys.stdin = io.StringIO(req.get("stdin") or "")
    value = error = tb = None
    t0, c0 = time.monotonic(), time.process_time()
    try:
        tree = ast.parse(req["code"], "<cell>", "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, "<cell>", "exec"), ENV)
        if last is not None:
            v = eval(compile(last, "<cell>", "eval"), ENV)
            if v is not None:
                value = repr(v)
    except BaseException as e:  # a cell's SystemExit and KeyboardInterrupt end the cell only
        error = type(e).__name__ + (": " + str(e) if str(e) else "")
        # The cell's frames only: the first one is this driver's.
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__.tb_next))
    finally:
        sys.stdout, sys.stderr, sys.stdin = sys.__stdout__, sys.__stderr__, sys.__stdin__
    files = []
    for pattern in req.get("outputFiles") or []:
        for path in sorted(glob.glob(pattern, recursive=False)):
            try:
                data = regular(path)
            except OSError:
                continue
            files.append({"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    OUT.flush()
    return {
        "stdout": "",
        "stderr": err.getvalue(),
        "value": value,
        "error": error,
        "traceback": tb,
        "cpuMs": (time.process_time() - c0) * 1000,
        "wallMs": (time.monotonic() - t0) * 1000,
        "memoryKb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "files": files,
    }


for line in sys.stdin:
    try:
        req = json.loads(line)
        op = req.get("op")
        if op == "exec":
            answer(run_cell(req))
        elif op == "shell":
            t0 = time.monotonic()
            p = subprocess.run(["/bin/bash", "-c", req["command"]], input=(req.get("stdin") or "").encode(), capture_output=True)
            answer({
                "stdout": p.stdout.decode(errors="replace"),
                "stderr": p.stderr.decode(errors="replace"),
                "exitCode": p.returncode if p.returncode >= 0 else None,
                "signal": -p.returncode if p.returncode < 0 else None,
                "wallMs": (time.monotonic() - t0) * 1000,
            })
        elif op == "put":
            path = req["path"]
            parent = os.path.dirname(path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(base64.b64decode(req["data"]))
            answer({})
        elif op == "get":
            answer({"data": base64.b64encode(regular(req["path"])).decode()})
        else:
            answer({"error": "unknown op"})
    except Exception as e:
        answer({"error": type(e).__name__ + ": " + str(e)})
