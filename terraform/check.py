#!/usr/bin/env python3
"""Offline checks of terraform/ and cloud-init/ (no provider download is possible here).

1. Every .tf parses (python-hcl2); every variable has a description and a type; every
   `var.x` and `local.x` referenced is declared, and every variable is used.
2. Every templatefile() path exists, and every `${name}` / `%{ if name }` in a template is
   passed by each call that renders it.
3. Every template is rendered by terraform's own templatefile() (a provider-free root module,
   applied locally) with sample values, and each result is validated against the cloud-init
   schema (`cloud-init schema`).

usage: check.py OUT_DIR
"""
import json
import os
import re
import subprocess
import sys

import hcl2

ROOT = os.path.dirname(os.path.abspath(__file__))
MODULE = os.path.join(ROOT, "aws")
OUT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/tfcheck")
errors = []


def fail(msg):
    errors.append(msg)
    print("FAIL:", msg)


texts = {}
parsed = {}
for name in sorted(os.listdir(MODULE)):
    if name.endswith(".tf"):
        path = os.path.join(MODULE, name)
        texts[name] = open(path).read()
        with open(path) as f:
            try:
                parsed[name] = hcl2.load(f)
            except Exception as e:  # noqa: BLE001 - report any parse error
                fail(f"{name} does not parse: {e}")
print(f"parsed {len(parsed)} files: {', '.join(parsed)}")
for required in ["versions.tf", "variables.tf", "outputs.tf", "main.tf"]:
    if required not in texts:
        fail(f"{required} is missing")
if not os.path.isfile(os.path.join(MODULE, "README.md")):
    fail("aws/README.md is missing")

declared = {}
for block in parsed.get("variables.tf", {}).get("variable", []):
    for name, body in block.items():
        name = name.strip('"')
        declared[name] = body
        if not body.get("description"):
            fail(f"variable {name} has no description")
        if "type" not in body:
            fail(f"variable {name} has no type")
all_text = "\n".join(texts.values())
used_vars = set(re.findall(r"\bvar\.([a-z_][a-z0-9_]*)", all_text))
for v in sorted(used_vars - set(declared)):
    fail(f"var.{v} is used but not declared")
for v in sorted(set(declared) - used_vars):
    fail(f"variable {v} is declared but never used")

locals_ = {}
for name, doc in parsed.items():
    for block in doc.get("locals", []):
        locals_.update({k.strip('"'): v for k, v in block.items()})
for l in sorted(set(re.findall(r"\blocal\.([a-z_][a-z0-9_]*)", all_text)) - set(locals_)):
    fail(f"local.{l} is used but not defined")
common_keys = {k.strip('"') for k in locals_.get("common", {}).keys()}
print(f"{len(declared)} variables, {len(locals_)} locals, common template keys: {sorted(common_keys)}")

# templatefile("${path.module}/../../cloud-init/x.yaml.tftpl", merge(local.common, { k = v ... }))
calls = []
main = texts.get("main.tf", "")
for m in re.finditer(r'templatefile\("\$\{path\.module\}/([^"]+)",\s*merge\(local\.common,\s*\{', main):
    depth, i = 1, m.end()
    while depth and i < len(main):
        depth += {"{": 1, "}": -1}.get(main[i], 0)
        i += 1
    inline = set(re.findall(r"^\s*([a-z_][a-z0-9_]*)\s*=", main[m.end():i - 1], re.M))
    calls.append((m.group(1), common_keys | inline))
if not calls:
    fail("no templatefile() call found in main.tf")

SAMPLES = {"migrate": True, "run_loadgen": True, "workers": 8, "loadgen_rps": 5}
render = {}
for rel, keys in calls:
    path = os.path.normpath(os.path.join(MODULE, rel))
    if not os.path.isfile(path):
        fail(f"templatefile path {rel} does not exist")
        continue
    body = open(path).read()
    if not body.startswith("#cloud-config"):
        fail(f"{rel} does not start with #cloud-config")
    names = set(re.findall(r"(?<!\$)\$\{\s*([a-z_][a-z0-9_]*)", body))
    names |= set(re.findall(r"%\{\s*if\s+([a-z_][a-z0-9_]*)", body))
    for n in sorted(names - keys):
        fail(f"{rel} uses ${{{n}}}, which its templatefile() call does not pass")
    role = os.path.basename(path).split(".")[0]
    render[role] = (path, {k: SAMPLES.get(k, f"sample-{k.replace('_', '-')}") for k in sorted(keys)})

# Render with terraform itself (no provider needed: init and apply work offline).
os.makedirs(OUT, exist_ok=True)
with open(os.path.join(OUT, "main.tf"), "w") as f:
    for role, (path, values) in render.items():
        f.write(f'output "{role}" {{\n  value = templatefile({json.dumps(path)}, {json.dumps(values)})\n}}\n')
env = dict(os.environ, TF_IN_AUTOMATION="1", CHECKPOINT_DISABLE="1")
for cmd in (["terraform", "init", "-input=false", "-no-color"], ["terraform", "apply", "-auto-approve", "-input=false", "-no-color"]):
    r = subprocess.run(cmd, cwd=OUT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"{' '.join(cmd)}: {r.stdout[-2000:]} {r.stderr[-2000:]}")
        break
else:
    outputs = json.loads(subprocess.run(["terraform", "output", "-json"], cwd=OUT, env=env, capture_output=True, text=True, check=True).stdout)
    for role, out in outputs.items():
        rendered = os.path.join(OUT, f"{role}.yaml")
        with open(rendered, "w") as f:
            f.write(out["value"])
        r = subprocess.run(["cloud-init", "schema", "--config-file", rendered], capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"{role}: cloud-init schema: {r.stdout.strip()} {r.stderr.strip()}")
        else:
            print(f"{role}: rendered by terraform, valid cloud-config ({r.stdout.strip()})")

if errors:
    print(f"{len(errors)} problem(s)")
    sys.exit(1)
print("terraform and cloud-init checks passed")
