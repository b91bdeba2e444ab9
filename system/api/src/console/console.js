// The Wolf console: write a program, run it, follow it live, and see where its time went.
// It talks only to this origin's API (the page's Content-Security-Policy allows nothing else),
// with the same key any client would send.
"use strict";

const $ = (id) => document.getElementById(id);

const SAMPLES = {
  python: 'name = input() if False else "world"\nprint(f"hello, {name}")\n',
  "c++": '#include <iostream>\n\nint main() {\n    std::cout << "hello, world" << std::endl;\n}\n',
  c: '#include <stdio.h>\n\nint main(void) {\n    puts("hello, world");\n    return 0;\n}\n',
  bash: 'echo "hello, world"\n',
};

// ---- the API -------------------------------------------------------------------------------

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const key = sessionStorage.getItem("wolf-key");
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, opts) {
  const o = Object.assign({}, opts || {});
  o.headers = headers(o.headers);
  const r = await fetch(path, o);
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try {
      const b = await r.json();
      if (b && b.error && b.error.message) msg = r.status + ": " + b.error.message;
    } catch (_) { /* not JSON */ }
    throw new ApiError(r.status, msg);
  }
  return r;
}

const json = async (path, opts) => (await api(path, opts)).json();

// ---- the editor ----------------------------------------------------------------------------

let tabMovesFocus = false;

function gutter() {
  const n = $("code").value.split("\n").length;
  let s = "";
  for (let i = 1; i <= n; i++) s += i + "\n";
  $("gutter").textContent = s;
  $("gutter").scrollTop = $("code").scrollTop;
}

function onCodeKey(e) {
  if (e.key === "Escape") {
    tabMovesFocus = true; // keyboard users leave the editor with Escape, then Tab
    return;
  }
  if (e.key === "Tab" && !tabMovesFocus && !e.ctrlKey && !e.altKey) {
    e.preventDefault();
    const t = e.target;
    const [a, b] = [t.selectionStart, t.selectionEnd];
    t.value = t.value.slice(0, a) + "    " + t.value.slice(b);
    t.selectionStart = t.selectionEnd = a + 4;
    gutter();
  }
}

function addTest(t) {
  const tr = document.createElement("tr");
  const cell = (cls, value, label, multi) => {
    const td = document.createElement("td");
    const el = document.createElement(multi ? "textarea" : "input");
    el.className = cls;
    el.value = value || "";
    el.setAttribute("aria-label", label);
    if (multi) el.rows = 1;
    td.append(el);
    return td;
  };
  const n = $("tests").tBodies[0].rows.length + 1;
  const verdict = document.createElement("td");
  verdict.className = "t-verdict";
  const output = document.createElement("td");
  output.className = "t-output";
  const rm = document.createElement("button");
  rm.type = "button";
  rm.textContent = "Remove";
  rm.setAttribute("aria-label", "Remove test " + n);
  rm.addEventListener("click", () => tr.remove());
  const last = document.createElement("td");
  last.append(rm);
  tr.append(
    cell("t-name", t && t.name, "Test name", false),
    cell("t-stdin", t && t.stdin, "Test stdin", true),
    cell("t-expected", t && t.expectedOutput, "Test expected output", true),
    verdict,
    output,
    last,
  );
  $("tests").tBodies[0].append(tr);
}

function submission() {
  const sub = { code: $("code").value, executionEngine: $("engine").value };
  const args = $("args").value.split("\n").filter((a) => a !== "");
  if (args.length) sub.args = args;
  const limits = {};
  for (const [id, k] of [["cpu", "cpuTimeMs"], ["wall", "wallTimeMs"], ["mem", "memoryMb"]]) {
    if ($(id).value !== "") limits[k] = Number($(id).value);
  }
  if (Object.keys(limits).length) sub.limits = limits;
  const files = $("outfiles").value.split(",").map((s) => s.trim()).filter(Boolean);
  if (files.length) sub.outputFiles = files;
  const tests = [...$("tests").tBodies[0].rows].map((tr) => {
    const t = {};
    const name = tr.querySelector(".t-name").value.trim();
    if (name) t.name = name;
    t.stdin = tr.querySelector(".t-stdin").value;
    const exp = tr.querySelector(".t-expected").value;
    if (exp !== "") t.expectedOutput = exp;
    return t;
  });
  if (tests.length) sub.tests = tests;
  else if ($("stdin").value !== "") sub.stdin = $("stdin").value;
  return sub;
}

// ---- a job ---------------------------------------------------------------------------------

let following = null; // the AbortController of the stream being followed

function reset(text) {
  $("status").textContent = text;
  $("status").className = "status";
  for (const id of ["stdout", "stderr", "compile"]) $(id).textContent = "";
  $("summary").replaceChildren();
  $("files").replaceChildren();
  $("waterfall").replaceChildren();
  $("trace").textContent = "";
  for (const id of ["compile-box", "files-box", "waterfall-box"]) $(id).hidden = true;
  showError(null);
  for (const td of document.querySelectorAll(".t-verdict, .t-output")) td.replaceChildren();
}

function showError(msg) {
  $("error").hidden = !msg;
  $("error").textContent = msg || "";
}

async function run() {
  if ($("interactive").checked) return runInteractive();
  const sub = submission();
  reset("Submitting…");
  $("run").disabled = true;
  try {
    const rec = await json("/job", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(sub),
    });
    history.pushState(null, "", "#/job/" + rec.id);
    await follow(rec.id);
  } catch (e) {
    $("status").textContent = "Not accepted";
    showError(e.message);
  } finally {
    $("run").disabled = false;
  }
  loadRecent();
}

// ---- a session: cells ----------------------------------------------------------------------

let session = null; // the id of the session the cells run in

function sessionState(text) {
  $("session-state").textContent = text;
}

async function startSession() {
  const spec = { executionEngine: $("engine").value };
  if ($("repl").checked) spec.mode = "repl";
  sessionState("Starting…");
  $("session-start").disabled = true;
  try {
    const s = await json("/session", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(spec),
    });
    session = s.id;
    sessionState("session " + s.id + " (" + s.mode + ", " + s.executionEngine + ")");
    $("cells").replaceChildren();
    addCell();
    $("session-start").hidden = true;
    $("session-end").hidden = false;
    $("cell-add").hidden = false;
  } catch (e) {
    sessionState("Not started: " + e.message);
  } finally {
    $("session-start").disabled = false;
  }
}

async function endSession() {
  const id = session;
  session = null;
  $("session-end").hidden = true;
  $("cell-add").hidden = true;
  $("session-start").hidden = false;
  for (const b of document.querySelectorAll("#cells button")) b.disabled = true;
  try {
    await api("/session/" + id, { method: "DELETE" });
    sessionState("session " + id + " ended");
  } catch (e) {
    sessionState("session " + id + ": " + e.message);
  }
}

function addCell() {
  const li = document.createElement("li");
  li.className = "cell";
  const code = document.createElement("textarea");
  code.className = "cell-code";
  code.rows = 2;
  code.spellcheck = false;
  code.setAttribute("aria-label", "Cell " + ($("cells").children.length + 1));
  const go = document.createElement("button");
  go.type = "button";
  go.className = "cell-run";
  go.textContent = "Run cell";
  const out = document.createElement("div");
  out.className = "cell-out";
  go.addEventListener("click", () => runCell(code, go, out));
  code.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      e.stopPropagation();
      runCell(code, go, out);
    }
  });
  li.append(code, go, out);
  $("cells").append(li);
  code.focus();
}

async function runCell(code, go, out) {
  if (!session) return;
  go.disabled = true;
  out.replaceChildren(Object.assign(document.createElement("div"), { className: "hint", textContent: "running…" }));
  try {
    const r = await json("/session/" + session + "/exec", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ code: code.value }),
    });
    out.replaceChildren();
    const line = (cls, text) => {
      const pre = document.createElement("pre");
      pre.className = "out " + cls;
      pre.textContent = text;
      out.append(pre);
    };
    if (r.stdout) line("cell-stdout", r.stdout);
    if (r.value != null) line("cell-value", r.value);
    if (r.stderr) line("cell-stderr", r.stderr);
    if (r.traceback || r.error) line("cell-error", r.traceback || r.error);
    const how = Object.assign(document.createElement("div"), { className: "hint cell-how" });
    how.textContent = "#" + r.exec + " " + r.verdict + " · " + fmtMs(r.totalMs) + " end to end" +
      (r.cpuTimeMs ? " · " + r.cpuTimeMs + " ms CPU" : "") + (r.wallTimeMs ? " · " + r.wallTimeMs + " ms wall" : "");
    how.classList.add(verdictClass(r.verdict));
    out.append(how);
  } catch (e) {
    out.replaceChildren(Object.assign(document.createElement("div"), { className: "error", textContent: e.message }));
    if (e.status === 410) {
      session = null;
      sessionState("the session has ended: " + e.message);
      $("session-end").hidden = true;
      $("cell-add").hidden = true;
      $("session-start").hidden = false;
    }
  } finally {
    go.disabled = !session;
  }
}

// ---- an interactive run -------------------------------------------------------------------

let live = null; // the WebSocket of the interactive run in progress

function showLive(on) {
  $("live").hidden = !on;
  if (on) {
    $("live-sent").replaceChildren();
    $("live-sent").hidden = false;
  }
}

function sendLine() {
  if (!live || live.readyState !== WebSocket.OPEN) return;
  const line = $("live-line").value;
  live.send(JSON.stringify({ type: "stdin", data: line + "\n" }));
  const li = document.createElement("li");
  li.textContent = line;
  $("live-sent").append(li);
  $("live-line").value = "";
}

function sendEof() {
  if (live && live.readyState === WebSocket.OPEN) live.send(JSON.stringify({ type: "eof" }));
  $("live").hidden = true;
}

// Run over the WebSocket /job/ws: what is typed goes to the program's stdin as it runs. A
// browser cannot set a header on a WebSocket, so the key rides as a subprotocol (the server
// answers "wolf.v1"); the job is durable and the key's, as any other.
function runInteractive() {
  const sub = submission();
  if (sub.tests) {
    showError("An interactive run takes no test cases: remove them, or run without Interactive.");
    return;
  }
  delete sub.stdin;
  if (following) following.abort();
  reset("Connecting…");
  $("run").disabled = true;
  const protocols = ["wolf.v1"];
  const key = sessionStorage.getItem("wolf-key");
  if (key) protocols.push("wolf.bearer." + key);
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(scheme + location.host + "/job/ws", protocols);
  live = ws;
  let record = null;
  ws.addEventListener("open", () => ws.send(JSON.stringify(Object.assign({ type: "init" }, sub))));
  ws.addEventListener("message", (m) => {
    let ev;
    try {
      ev = JSON.parse(m.data);
    } catch (_) {
      return;
    }
    if (ev.type === "accepted") {
      history.pushState(null, "", "#/job/" + ev.id);
      $("status").textContent = "Queued";
      showLive(true);
      $("live-line").focus();
    } else if (ev.type === "stage") {
      $("status").textContent = "Running: " + ev.stage + " (type into its stdin below)";
    } else if (ev.type === "stdout" || ev.type === "stderr") {
      $(ev.type).textContent += decode(ev);
    } else if (ev.type === "result") {
      record = ev.record;
    } else if (ev.type === "error") {
      showError(ev.message);
    }
  });
  ws.addEventListener("close", async () => {
    if (live === ws) live = null;
    $("live").hidden = true;
    $("run").disabled = false;
    if (record) {
      await render(record);
    } else if ($("error").hidden) {
      $("status").textContent = "Disconnected";
      showError("The connection closed before the job's result (a wrong key is refused before any frame).");
    } else {
      $("status").textContent = "Not accepted";
    }
    loadRecent();
  });
}

function decode(ev) {
  if (ev.encoding !== "base64") return ev.data;
  const bytes = Uint8Array.from(atob(ev.data), (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

// Follow a job's Server-Sent Events (fetch, not EventSource: EventSource cannot send a key).
async function follow(id) {
  if (following) following.abort();
  const ctl = new AbortController();
  following = ctl;
  $("status").textContent = "Queued";
  let record = null;
  try {
    const r = await api("/job/" + id + "/events", { signal: ctl.signal });
    const reader = r.body.getReader();
    const text = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += text.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const frame = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const data = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
        if (!data) continue;
        const ev = JSON.parse(data);
        if (ev.type === "stage") {
          $("status").textContent = "Running: " + ev.stage + (ev.name ? " " + ev.name : "");
        } else if (ev.type === "stdout" || ev.type === "stderr") {
          $(ev.type).textContent += decode(ev);
        } else if (ev.type === "result") {
          record = ev.record;
        }
      }
    }
  } catch (e) {
    if (ctl.signal.aborted) return;
    // The stream is optional: the record says how it ended.
  }
  if (following !== ctl) return;
  following = null;
  if (!record) record = await json("/job/" + id + "?wait=true");
  await render(record);
}

const fmtMs = (ms) => (ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : Math.round(ms)) + " ms";

function verdictClass(v) {
  return v === "Accepted" ? "verdict-ok" : "verdict-bad";
}

async function render(rec) {
  const res = rec.result || {};
  const verdict = res.verdict || rec.status;
  $("status").textContent = rec.status + (res.verdict ? ": " + res.verdict : "");
  $("status").className = "status " + (rec.status === "Completed" ? verdictClass(res.verdict) : "");
  const rows = [
    ["job", rec.id],
    ["engine", rec.executionEngine],
    ["verdict", verdict],
    ["exit code", res.exitCode == null ? "—" : String(res.exitCode)],
    ["signal", res.signal == null ? "—" : String(res.signal)],
    ["CPU", res.cpuTimeMs == null ? "—" : res.cpuTimeMs + " ms"],
    ["wall", res.wallTimeMs == null ? "—" : res.wallTimeMs + " ms"],
    ["memory", res.memoryKb == null ? "—" : Math.round(res.memoryKb / 102.4) / 10 + " MiB"],
  ];
  if (res.tests) rows.push(["tests passed", res.passed + " of " + res.tests.length]);
  if (rec.failureReason) rows.push(["failure", rec.failureReason]);
  const dl = $("summary");
  dl.replaceChildren();
  for (const [k, v] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    dd.dataset.field = k;
    dl.append(dt, dd);
  }
  if (res.compileOutput) {
    $("compile").textContent = res.compileOutput;
    $("compile-box").hidden = false;
  }
  if (rec.status === "Completed") {
    $("stderr").textContent = res.stderr || "";
    if (!res.tests) {
      try {
        $("stdout").textContent = await (await api("/job/" + rec.id + "/output")).text();
      } catch (_) { /* the live output stays */ }
    }
  }
  if (res.tests) {
    const rowsEl = [...$("tests").tBodies[0].rows];
    if (rowsEl.length !== res.tests.length) {
      $("tests").tBodies[0].replaceChildren();
      res.tests.forEach(() => addTest());
    }
    res.tests.forEach((t, i) => {
      const tr = $("tests").tBodies[0].rows[i];
      const td = tr.querySelector(".t-verdict");
      td.textContent = t.verdict;
      td.className = "t-verdict " + verdictClass(t.verdict);
      if (!tr.querySelector(".t-name").value) tr.querySelector(".t-name").value = t.name;
      tr.querySelector(".t-output").replaceChildren(testOutput(t));
    });
  }
  renderFiles(rec);
  await renderWaterfall(rec);
}

// What one test printed, folded: its stdout (as the record keeps it), stderr, the checker's
// message, and its exit and resource use.
function testOutput(t) {
  const d = document.createElement("details");
  const s = document.createElement("summary");
  s.textContent = "show";
  d.append(s);
  const part = (label, text) => {
    const h = document.createElement("div");
    h.className = "hint";
    h.textContent = label;
    const pre = document.createElement("pre");
    pre.className = "out t-" + label;
    pre.textContent = text;
    d.append(h, pre);
  };
  part("stdout", t.stdout || "");
  if (t.truncated) d.append(Object.assign(document.createElement("div"), { className: "hint", textContent: "truncated" }));
  if (t.stderr) part("stderr", t.stderr);
  if (t.checkerMessage) part("checker", t.checkerMessage);
  if (t.error) part("error", t.error);
  const how = [
    t.signal != null ? "signal " + t.signal : "exit " + (t.exitCode == null ? "—" : t.exitCode),
    t.cpuTimeMs + " ms CPU",
    t.wallTimeMs + " ms wall",
    Math.round(t.memoryKb / 102.4) / 10 + " MiB",
  ];
  d.append(Object.assign(document.createElement("div"), { className: "hint t-how", textContent: how.join(" · ") }));
  return d;
}

function renderFiles(rec) {
  const files = (rec.result && rec.result.files) || [];
  $("files-box").hidden = files.length === 0;
  const ul = $("files");
  ul.replaceChildren();
  for (const f of files) {
    const li = document.createElement("li");
    const path = "/job/" + rec.id + "/files/" + f.path.split("/").map(encodeURIComponent).join("/");
    const label = document.createElement("span");
    label.textContent = f.path + " (" + f.size + " bytes) ";
    li.append(label);
    const image = /\.(png|jpe?g|gif|webp)$/i.test(f.path);
    api(path).then(async (r) => {
      const url = URL.createObjectURL(await r.blob());
      if (image) {
        const img = document.createElement("img");
        img.src = url;
        img.alt = f.path;
        li.append(img);
      } else {
        const a = document.createElement("a");
        a.href = url;
        a.download = f.path.split("/").pop();
        a.textContent = "download";
        li.append(a);
      }
    }).catch((e) => li.append(document.createTextNode(e.message)));
    ul.append(li);
  }
}

const SVG = "http://www.w3.org/2000/svg";

async function renderWaterfall(rec) {
  let tl;
  try {
    tl = await json("/job/" + rec.id + "/timeline");
  } catch (_) {
    return;
  }
  const whole = tl.spans.find((s) => s.stage === "end_to_end");
  const spans = tl.spans.filter((s) => s.stage !== "end_to_end");
  if (!whole || !spans.length) return;
  const total = Math.max(whole.durationMs, 0.001);
  // Timestamps carry ns; Date.parse keeps only ms: the sub-ms digits are added back, so short
  // stages still line up.
  const at = (s) => {
    const m = /\.(\d+)Z$/.exec(s);
    const frac = m ? Number("0." + m[1]) * 1000 : 0;
    return Date.parse(s.replace(/\.\d+Z$/, "Z")) + frac;
  };
  const base = at(whole.start);
  const fails = new Set(((rec.result && rec.result.tests) || []).filter((t) => t.verdict !== "Accepted").map((t) => t.name));
  const [W, L, H] = [640, 200, 18];
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 " + W + " " + (spans.length * H + 24));
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "Waterfall of job " + rec.id + ", " + fmtMs(total) + " end to end");
  const scale = (W - L - 10) / total;
  spans.forEach((s, i) => {
    const y = i * H + 4;
    const label = document.createElementNS(SVG, "text");
    label.setAttribute("x", 0);
    label.setAttribute("y", y + 12);
    label.textContent = s.stage.replace(/_/g, " ") + (s.name ? " " + s.name : "") + (s.attempt > 1 ? " #" + s.attempt : "");
    const bar = document.createElementNS(SVG, "rect");
    const x = L + Math.max(0, at(s.start) - base) * scale;
    bar.setAttribute("x", x.toFixed(2));
    bar.setAttribute("y", y);
    bar.setAttribute("width", Math.max(1, s.durationMs * scale).toFixed(2));
    bar.setAttribute("height", H - 6);
    let cls = "bar";
    if (s.offPath) cls += " off";
    if (s.stage === "test" || s.stage === "checker") cls += fails.has(s.name) ? " fail" : " test";
    bar.setAttribute("class", cls);
    bar.dataset.stage = s.stage;
    bar.dataset.ms = s.durationMs;
    const title = document.createElementNS(SVG, "title");
    title.textContent = label.textContent + ": " + fmtMs(s.durationMs) + (s.offPath ? " (ahead, off the job's path)" : "") + (s.worker ? " on " + s.worker : "");
    bar.append(title);
    const ms = document.createElementNS(SVG, "text");
    const end = x + Math.max(1, s.durationMs * scale);
    // After the bar, or before it when the bar reaches the right edge.
    if (end + 60 <= W) {
      ms.setAttribute("x", (end + 4).toFixed(2));
    } else {
      ms.setAttribute("x", (x - 4).toFixed(2));
      ms.setAttribute("text-anchor", "end");
    }
    ms.setAttribute("y", y + 12);
    ms.textContent = fmtMs(s.durationMs);
    svg.append(label, bar, ms);
  });
  const axis = document.createElementNS(SVG, "text");
  axis.setAttribute("x", L);
  axis.setAttribute("y", spans.length * H + 20);
  axis.textContent = "0 … " + fmtMs(total) + " end to end";
  svg.append(axis);
  $("waterfall").replaceChildren(svg);
  $("waterfall-box").hidden = false;
  showTrace(tl);
}

// The trace id, linked to the tracing UI the server names (`trace_url`): http(s) only, so a
// misconfigured value can never become a script URL.
function showTrace(tl) {
  const p = $("trace");
  p.replaceChildren();
  if (!tl.traceId) return;
  p.append("trace ");
  if (tl.traceUrl && /^https?:\/\//i.test(tl.traceUrl)) {
    const a = document.createElement("a");
    a.id = "trace-link";
    a.href = tl.traceUrl;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    a.textContent = tl.traceId;
    p.append(a);
  } else {
    p.append(tl.traceId);
  }
}

// ---- pages ---------------------------------------------------------------------------------

async function openJob(id) {
  reset("Loading " + id + "…");
  try {
    const rec = await json("/job/" + id);
    try {
      $("code").value = await (await api("/job/" + id + "/code")).text();
      gutter();
    } catch (_) { /* the code stays as it is */ }
    if ([...$("engine").options].some((o) => o.value === rec.executionEngine)) $("engine").value = rec.executionEngine;
    if (rec.status === "Completed" || rec.status === "Failed") await render(rec);
    else await follow(id);
  } catch (e) {
    $("status").textContent = "Not found";
    showError(e.message);
  }
}

async function loadRecent() {
  const ol = $("jobs");
  try {
    const page = await json("/job?limit=20");
    ol.replaceChildren();
    for (const j of page.jobs) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = "#/job/" + j.id;
      a.textContent = j.executionEngine + " · " + ((j.result && j.result.verdict) || j.status);
      a.title = j.id;
      li.append(a);
      ol.append(li);
    }
  } catch (e) {
    ol.replaceChildren(Object.assign(document.createElement("li"), { textContent: e.message }));
  }
}

function route() {
  const m = /^#\/job\/([0-9a-f-]{36})$/.exec(location.hash);
  if (m) openJob(m[1]);
}

async function loadEngines() {
  const sel = $("engine");
  try {
    const langs = await json("/languages");
    sel.replaceChildren();
    for (const l of langs) {
      const o = document.createElement("option");
      o.value = l.name;
      o.textContent = l.name + " (" + l.version + ")";
      sel.append(o);
    }
    if ([...sel.options].some((o) => o.value === "python")) sel.value = "python";
  } catch (e) {
    showError("Languages: " + e.message);
  }
}

function theme(dark) {
  document.documentElement.classList.toggle("dark", dark);
  $("theme").setAttribute("aria-pressed", String(dark));
  $("theme").textContent = dark ? "Light theme" : "Dark theme";
  localStorage.setItem("wolf-theme", dark ? "dark" : "light");
}

async function main() {
  const saved = localStorage.getItem("wolf-theme");
  theme(saved ? saved === "dark" : matchMedia("(prefers-color-scheme: dark)").matches);
  $("theme").addEventListener("click", () => theme(!document.documentElement.classList.contains("dark")));
  $("key").value = sessionStorage.getItem("wolf-key") || "";
  $("key").addEventListener("change", () => {
    sessionStorage.setItem("wolf-key", $("key").value.trim());
    loadEngines();
    loadRecent();
  });
  $("code").addEventListener("input", gutter);
  $("code").addEventListener("scroll", gutter);
  $("code").addEventListener("keydown", onCodeKey);
  $("code").addEventListener("focus", () => { tabMovesFocus = false; });
  $("engine").addEventListener("change", () => {
    const s = SAMPLES[$("engine").value];
    if (s && Object.values(SAMPLES).includes($("code").value)) {
      $("code").value = s;
      gutter();
    }
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      run();
    }
  });
  $("run").addEventListener("click", run);
  $("live-send").addEventListener("click", sendLine);
  $("session-start").addEventListener("click", startSession);
  $("session-end").addEventListener("click", endSession);
  $("cell-add").addEventListener("click", addCell);
  $("live-eof").addEventListener("click", sendEof);
  $("live-line").addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      sendLine();
    }
  });
  $("add-test").addEventListener("click", () => addTest());
  $("refresh").addEventListener("click", loadRecent);
  window.addEventListener("hashchange", route);
  await loadEngines();
  if (!$("code").value) $("code").value = SAMPLES[$("engine").value] || "";
  gutter();
  loadRecent();
  route();
}

main();
