//! Sessions on this host: a sandbox kept between execs, its work dir persisting (files an
//! exec wrote are there for the next), every layer of a job's sandbox applied to each exec.
//!
//! A session is one prepared sandbox in session mode ([`crate::pool::SessionBox`]): each exec
//! is a job frame run in a fresh step supervisor of that sandbox, with the session's limits (its
//! memory and process limits are its cgroup's, over everything it runs at once). Execs of one
//! session run one at a time. A session ends when deleted, after its idle timeout, or at the
//! end of its lifetime; its sandbox is destroyed then, and a later call says it is gone (410)
//! rather than not found. At most `max` live at once on a host (503 past it).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use wolf_core::session::{
    DEFAULT_IDLE_S, DEFAULT_TTL_S, ExecRequest, ExecResult, MAX_IDLE_S, MAX_TTL_S, SessionError, SessionInfo,
    SessionMode, SessionSpec,
};
use wolf_sandbox::runner::Plan;
use wolf_sandbox::sandbox::JobFile;
use wolf_sandbox::{Caps, LimitRequest, Registry, RunRequest};
use wolf_store::SessionHost;

use crate::pool::{Pool, SessionBox};
use crate::repl::{Failed, Repl};

/// How long a REPL session's file transfer may take.
const TRANSFER: Duration = Duration::from_secs(10);

/// Sessions live at once on one host, by default.
pub const DEFAULT_MAX_SESSIONS: usize = 16;
/// Ids of ended sessions remembered (to answer 410 rather than 404).
const REMEMBERED: usize = 4096;

/// This host's sessions.
pub struct Sessions {
    pool: Arc<dyn Pool>,
    registry: &'static Registry,
    caps: Caps,
    max: usize,
    node: String,
    /// The first eight hex digits of this host's session ids: an API routes a session's calls
    /// to the manager that holds it by them ([`wolf_store::session_rpc`]).
    tag: String,
    live: Mutex<HashMap<String, Arc<Entry>>>,
    /// Ended sessions and why, newest last.
    ended: Mutex<VecDeque<(String, String)>>,
    /// Where each exec is recorded, as a job of its own (none in tests).
    store: Option<(Arc<dyn wolf_store::Metadata>, Arc<dyn wolf_store::Objects>)>,
    /// Where execs stream their output (`GET /session/{id}/events`), keyed by the session.
    streams: Option<wolf_store::Streams>,
}

/// A live session: its state as last known (readable while an exec runs), and the session.
struct Entry {
    info: Mutex<SessionInfo>,
    session: tokio::sync::Mutex<Session>,
}

impl Entry {
    fn set(&self, info: &SessionInfo) {
        *self.info.lock().unwrap_or_else(|e| e.into_inner()) = info.clone();
    }
}

struct Session {
    sandbox: Option<Box<dyn SessionBox>>,
    /// A REPL session's interpreter (it holds the sandbox then).
    repl: Option<Repl>,
    /// Each exec's (or cell's) wall limit, ms.
    wall_ms: u64,
    info: SessionInfo,
    engine: String,
    limits: LimitRequest,
    idle: Duration,
    ttl: Duration,
    created: Instant,
    last: Instant,
}

impl Sessions {
    /// Sessions on `pool`'s sandboxes, at most `max` at once, each exec recorded in `store`.
    pub fn new(
        pool: Arc<dyn Pool>,
        registry: &'static Registry,
        caps: Caps,
        max: usize,
        node: String,
        store: Option<(Arc<dyn wolf_store::Metadata>, Arc<dyn wolf_store::Objects>)>,
        streams: Option<wolf_store::Streams>,
    ) -> Arc<Self> {
        let me = Arc::new(Self {
            pool,
            registry,
            caps,
            max,
            node,
            tag: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
            live: Default::default(),
            ended: Default::default(),
            store,
            streams,
        });
        // Reap idle and expired sessions once a second; the task ends with the last handle.
        let weak = Arc::downgrade(&me);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(me) = weak.upgrade() else { return };
                me.reap().await;
            }
        });
        me
    }

    /// Record exec `r` of session `sid` (`code` in `engine`) as a finished job of its own,
    /// tagged `session:<sid>`, off the exec's path; its id goes into `r`.
    fn record(
        &self,
        sid: &str,
        engine: &str,
        code: &str,
        stdin: Option<&str>,
        r: &mut ExecResult,
        started: chrono::DateTime<Utc>,
    ) {
        let Some((meta, objects)) = self.store.clone() else {
            return;
        };
        let sub: wolf_core::Submission = match serde_json::from_value(serde_json::json!({
            "code": code,
            "executionEngine": engine,
            "stdin": stdin,
            "tags": [format!("session:{sid}"), format!("exec:{}", r.exec)],
        })) {
            Ok(s) => s,
            Err(_) => return,
        };
        let id = uuid::Uuid::now_v7().to_string();
        let mut rec = wolf_core::JobRecord::new(id.clone(), &sub, started);
        let end = Utc::now();
        rec.status = wolf_core::Status::Completed;
        rec.start_time = Some(started);
        rec.end_time = Some(end);
        rec.output_path = Some(wolf_core::job::output_key(&id));
        rec.output_hash = Some(wolf_core::hash::sha256_hex(r.stdout.as_bytes()));
        rec.result = Some(wolf_core::JobResult {
            verdict: r.verdict,
            exit_code: r.exit_code,
            signal: r.signal,
            cpu_time_ms: r.cpu_time_ms,
            wall_time_ms: r.wall_time_ms,
            memory_kb: r.memory_kb,
            stderr: r.stderr.clone(),
            compile_output: r.compile_output.clone(),
            truncated: false,
            error: r.error.clone(),
            output_not_utf8: false,
            tests: Vec::new(),
            passed: None,
            score: None,
            files: r.files.clone(),
            files_refused: Vec::new(),
        });
        rec.timings = Some(wolf_core::Timings {
            execution: r.wall_time_ms as f64,
            total: r.total_ms,
            ..Default::default()
        });
        r.job_id = Some(id.clone());
        let stdout = r.stdout.clone().into_bytes();
        let code_bytes = sub.code.clone().into_bytes();
        tokio::spawn(async move {
            let stored = async {
                objects.put(&wolf_core::job::code_key(&id), code_bytes).await?;
                objects.put(&wolf_core::job::output_key(&id), stdout).await?;
                meta.insert(&rec, &sub).await?;
                meta.finish(&rec).await
            };
            if let Err(e) = stored.await {
                tracing::warn!(job = %id, error = %e, "a session's exec was not recorded");
            }
        });
    }

    /// The tag of this host's session ids.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    fn get(&self, id: &str) -> Result<Arc<Entry>, SessionError> {
        if let Some(s) = self.live.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
            return Ok(s.clone());
        }
        let ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        match ended.iter().rev().find(|(i, _)| i == id) {
            Some((_, why)) => Err(SessionError::Gone(format!("session {id} {why}; its state is lost"))),
            None => Err(SessionError::NotFound(format!("session {id} not found"))),
        }
    }

    /// End session `id` for `why`, destroying its sandbox off the caller's path.
    fn end(&self, id: &str, why: &str) -> Option<Arc<Entry>> {
        let s = self.live.lock().unwrap_or_else(|e| e.into_inner()).remove(id)?;
        let mut ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        ended.push_back((id.to_string(), why.to_string()));
        while ended.len() > REMEMBERED {
            ended.pop_front();
        }
        metrics::gauge!("wolf_sessions").decrement(1.0);
        if let Some(st) = &self.streams {
            st.close(id);
        }
        Some(s)
    }

    async fn reap(&self) {
        let all: Vec<(String, Arc<Entry>)> = self
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (id, s) in all {
            // A session busy with an exec is not idle; its exec ends by its own limits.
            let Ok(mut g) = s.session.try_lock() else { continue };
            let why = if g.created.elapsed() >= g.ttl {
                Some("reached the end of its lifetime")
            } else if g.last.elapsed() >= g.idle {
                Some("was reaped after its idle timeout")
            } else if !g.sandbox.as_ref().is_some_and(|b| b.is_alive()) && !g.repl.as_ref().is_some_and(Repl::is_alive)
            {
                Some("lost its sandbox")
            } else {
                None
            };
            if let Some(why) = why {
                let sandbox = g.sandbox.take();
                drop(g.repl.take());
                drop(g);
                self.end(&id, why);
                metrics::counter!("wolf_sessions_ended_total", "why" => why).increment(1);
                drop_off_path(sandbox);
            }
        }
    }
}

/// Destroying a sandbox (kill, reap, cgroup removal) blocks: on a blocking thread.
fn drop_off_path(sandbox: Option<Box<dyn SessionBox>>) {
    if let Some(b) = sandbox {
        tokio::task::spawn_blocking(move || drop(b));
    }
}

fn files_of(files: &[wolf_core::FileInput]) -> Result<Vec<JobFile>, SessionError> {
    files
        .iter()
        .map(|f| {
            Ok(JobFile {
                name: f.name.clone(),
                contents: f.bytes().map_err(SessionError::Invalid)?,
                mode: 0o644,
            })
        })
        .collect()
}

#[async_trait]
impl SessionHost for Sessions {
    async fn create(&self, spec: SessionSpec) -> Result<SessionInfo, SessionError> {
        let engine = spec.execution_engine.clone().unwrap_or_else(|| "python".into());
        let lang = self
            .registry
            .find(&engine)
            .map_err(|e| SessionError::Invalid(e.to_string()))?;
        if let Some(why) = &lang.absent {
            return Err(SessionError::Invalid(format!("{engine} is not available here: {why}")));
        }
        if let Some(rt) = &lang.spec.runtime {
            // A session's sandbox is on the host's root; one on a runtime's is not built yet.
            return Err(SessionError::Invalid(format!(
                "{engine} runs on runtime {rt}: sessions on image runtimes are not supported yet"
            )));
        }
        let limits: LimitRequest = spec.limits.unwrap_or_default().into();
        let resolved = wolf_sandbox::Limits::resolve(&lang.run_limits, &self.caps.run, &limits)
            .map_err(|e| SessionError::Invalid(e.to_string()))?;
        let mode = spec.mode.unwrap_or(SessionMode::Exec);
        if mode == SessionMode::Repl && lang.spec.name != "python" {
            return Err(SessionError::Invalid(format!(
                "a repl session runs Python cells, not {}",
                lang.spec.name
            )));
        }
        let idle = spec.idle_timeout_s.unwrap_or(DEFAULT_IDLE_S);
        let ttl = spec.ttl_s.unwrap_or(DEFAULT_TTL_S);
        if !(1..=MAX_IDLE_S).contains(&idle) || !(1..=MAX_TTL_S).contains(&ttl) {
            return Err(SessionError::Invalid(format!(
                "idleTimeoutS must be 1 to {MAX_IDLE_S} and ttlS 1 to {MAX_TTL_S}"
            )));
        }
        let names = spec.files.iter().map(|f| f.name.as_str());
        wolf_core::names::check_file_paths(names).map_err(SessionError::Invalid)?;
        let files = files_of(&spec.files)?;
        if self.live.lock().unwrap_or_else(|e| e.into_inner()).len() >= self.max {
            return Err(SessionError::Full(format!(
                "{} sessions live on this host, its limit",
                self.max
            )));
        }
        let pool = self.pool.clone();
        let mut sandbox = tokio::task::spawn_blocking(move || pool.prepare_session())
            .await
            .map_err(|e| SessionError::Unavailable(format!("sandbox thread: {e}")))?
            .map_err(|e| SessionError::Unavailable(format!("no sandbox for the session: {e}")))?;
        let id = format!("s-{}{}", self.tag, &uuid::Uuid::new_v4().simple().to_string()[..24]);
        if !files.is_empty() {
            sandbox
                .put(&id, files)
                .await
                .map_err(|e| SessionError::Unavailable(e.to_string()))?;
        }
        let (sandbox, repl) = match mode {
            SessionMode::Exec => (Some(sandbox), None),
            SessionMode::Repl => {
                match Repl::start(sandbox, self.registry, self.caps, limits, ttl.saturating_mul(1000), &id).await {
                    Ok(r) => (None, Some(r)),
                    Err((sandbox, e)) => {
                        drop_off_path(Some(sandbox));
                        return Err(SessionError::Unavailable(format!("the interpreter did not start: {e}")));
                    }
                }
            }
        };
        let now = Utc::now();
        let info = SessionInfo {
            id: id.clone(),
            state: "ready".into(),
            execution_engine: lang.spec.name.clone(),
            mode,
            created_at: now,
            last_used_at: now,
            expires_at: now + chrono::Duration::seconds(idle.min(ttl) as i64),
            execs: 0,
            cpu_time_ms: 0,
            wall_time_ms: 0,
            node: self.node.clone(),
        };
        let session = Session {
            sandbox,
            repl,
            wall_ms: resolved.wall_time_ms,
            info: info.clone(),
            engine: lang.spec.name.clone(),
            limits,
            idle: Duration::from_secs(idle),
            ttl: Duration::from_secs(ttl),
            created: Instant::now(),
            last: Instant::now(),
        };
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if live.len() >= self.max {
            drop(live);
            drop_off_path(session.sandbox);
            return Err(SessionError::Full(format!(
                "{} sessions live on this host, its limit",
                self.max
            )));
        }
        live.insert(
            id,
            Arc::new(Entry {
                info: Mutex::new(info.clone()),
                session: tokio::sync::Mutex::new(session),
            }),
        );
        metrics::gauge!("wolf_sessions").increment(1.0);
        Ok(info)
    }

    async fn exec(&self, id: &str, req: ExecRequest) -> Result<ExecResult, SessionError> {
        let started = Instant::now();
        let began = Utc::now();
        let s = self.get(id)?;
        let mut g = s.session.lock().await;
        if g.repl.is_some() {
            return self.cell(id, &s, &mut g, req, started, began).await;
        }
        let (engine, code) = match (&req.code, &req.command) {
            (Some(code), None) => (
                req.execution_engine.clone().unwrap_or_else(|| g.engine.clone()),
                code.clone(),
            ),
            (None, Some(command)) if req.execution_engine.is_none() => ("bash".to_string(), command.clone()),
            _ => {
                return Err(SessionError::Invalid(
                    "give exactly one of code and command (a command takes no executionEngine)".into(),
                ));
            }
        };
        if self.registry.find(&engine).is_ok_and(|l| l.spec.runtime.is_some()) {
            return Err(SessionError::Invalid(format!(
                "{engine} runs on an image runtime: a session's execs run on the host's root"
            )));
        }
        if wolf_core::names::is_blank(&code) {
            return Err(SessionError::Invalid("the code or command is empty".into()));
        }
        for p in &req.output_files {
            if !wolf_core::names::valid_output_pattern(p) {
                return Err(SessionError::Invalid(format!(
                    "outputFiles: {p:?} is not a relative path or glob"
                )));
            }
        }
        let run = RunRequest {
            engine,
            code: code.into_bytes(),
            stdin: req.stdin.clone().map(String::into_bytes),
            limits: g.limits,
            output_files: req.output_files.clone(),
            ..RunRequest::default()
        };
        let (registry, caps) = (self.registry, self.caps);
        let plan: Plan = tokio::task::spawn_blocking(move || Plan::new(registry, &caps, &run))
            .await
            .map_err(|e| SessionError::Unavailable(format!("plan thread: {e}")))?
            .map_err(|e| SessionError::Invalid(e.to_string()))?;
        g.info.state = "busy".into();
        s.set(&g.info);
        let n = g.info.execs + 1;
        let job_id = format!("{id}/{n}");
        let Some(sandbox) = g.sandbox.as_mut() else {
            return Err(SessionError::Gone(format!("session {id} lost its sandbox")));
        };
        // The exec streams on the session's stream (its stdin is the request's, as always).
        let tap = match &self.streams {
            Some(st) => {
                if n == 1 {
                    st.open(id, false).await;
                }
                let compiled = plan.has_compile();
                let tap = crate::live::Tap::new(st, id, |fds| sandbox.pass_stdio(fds), compiled);
                if tap.is_ok() {
                    st.publish(id, |seq| wolf_core::stream::StreamEvent::Stage {
                        seq,
                        stage: "exec".into(),
                        name: Some(n.to_string()),
                    })
                    .await;
                }
                tap.ok()
            }
            None => None,
        };
        let plan = if tap.is_some() { plan.streamed(false) } else { plan };
        let out = sandbox.run(&job_id, &plan).await;
        if let Some(t) = tap {
            drop((t.stdin, t.control));
            crate::live::Tap::done(t.readers).await;
        }
        g.info.state = "ready".into();
        s.set(&g.info);
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                // The sandbox itself failed: the session's state went with it.
                let sandbox = g.sandbox.take();
                drop(g);
                self.end(id, "lost its sandbox");
                drop_off_path(sandbox);
                return Err(SessionError::Gone(format!(
                    "session {id} lost its sandbox: {e}; its state is lost"
                )));
            }
        };
        let r = out.result;
        let facts = (r.exit_code, r.signal, r.verdict, r.cpu_time_ms, r.wall_time_ms);
        self.exec_done(id, &s, &mut g, n, facts).await;
        let mut result = ExecResult {
            exec: n,
            verdict: r.verdict,
            exit_code: r.exit_code,
            signal: r.signal,
            stdout: r.stdout,
            stderr: r.stderr,
            compile_output: r.compile_output,
            cpu_time_ms: r.cpu_time_ms,
            wall_time_ms: r.wall_time_ms,
            memory_kb: r.memory_kb,
            files: r.files,
            error: r.error,
            traceback: None,
            value: None,
            total_ms: started.elapsed().as_secs_f64() * 1000.0,
            job_id: None,
        };
        let text = req.code.as_deref().or(req.command.as_deref()).unwrap_or_default();
        let engine = if req.command.is_some() {
            "bash".to_string()
        } else {
            req.execution_engine.clone().unwrap_or_else(|| g.engine.clone())
        };
        self.record(id, &engine, text, req.stdin.as_deref(), &mut result, began);
        Ok(result)
    }

    async fn put_file(&self, id: &str, path: &str, data: Vec<u8>) -> Result<(), SessionError> {
        if !wolf_core::names::valid_file_path(path) {
            return Err(SessionError::Invalid(format!(
                "{path:?} is not a relative path of plain names"
            )));
        }
        let s = self.get(id)?;
        let mut g = s.session.lock().await;
        let file = JobFile {
            name: path.to_string(),
            contents: data,
            mode: 0o644,
        };
        if let Some(repl) = g.repl.as_mut() {
            let data = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &file.contents);
            let req = serde_json::json!({"op": "put", "path": path, "data": data});
            return match repl.call(&req, TRANSFER, None).await {
                Ok((v, _)) => match v.get("error").and_then(|e| e.as_str()) {
                    Some(e) => Err(SessionError::Invalid(format!("cannot write {path}: {e}"))),
                    None => Ok(()),
                },
                Err(_) => Err(SessionError::Unavailable(format!(
                    "the interpreter did not write {path}"
                ))),
            };
        }
        let Some(sandbox) = g.sandbox.as_mut() else {
            return Err(SessionError::Gone(format!("session {id} lost its sandbox")));
        };
        sandbox
            .put(id, vec![file])
            .await
            .map_err(|e| SessionError::Invalid(format!("cannot write {path}: {e}")))
    }

    async fn get_file(&self, id: &str, path: &str) -> Result<Vec<u8>, SessionError> {
        if !wolf_core::names::valid_file_path(path) || path.contains(['*', '?']) {
            return Err(SessionError::Invalid(format!(
                "{path:?} is not a relative path of plain names"
            )));
        }
        let s = self.get(id)?;
        let mut g = s.session.lock().await;
        if let Some(repl) = g.repl.as_mut() {
            let req = serde_json::json!({"op": "get", "path": path});
            let v = match repl.call(&req, TRANSFER, None).await {
                Ok((v, _)) => v,
                Err(_) => {
                    return Err(SessionError::Unavailable(format!(
                        "the interpreter did not read {path}"
                    )));
                }
            };
            let data = v.get("data").and_then(|d| d.as_str()).unwrap_or_default();
            return match base64::Engine::decode(&base64::engine::general_purpose::STANDARD, data) {
                Ok(d) if v.get("error").is_none() => Ok(d),
                _ => Err(SessionError::NotFound(format!("{path}: no regular file there"))),
            };
        }
        let Some(sandbox) = g.sandbox.as_mut() else {
            return Err(SessionError::Gone(format!("session {id} lost its sandbox")));
        };
        match sandbox.get(id, path).await {
            Ok(Some(d)) => Ok(d),
            Ok(None) => Err(SessionError::NotFound(format!(
                "{path}: no regular file of at most {} bytes there",
                wolf_core::job::MAX_OUTPUT_FILE_BYTES
            ))),
            Err(e) => Err(SessionError::Unavailable(e.to_string())),
        }
    }

    async fn info(&self, id: &str) -> Result<SessionInfo, SessionError> {
        // A busy session answers from its last known state without waiting for the exec.
        let s = self.get(id)?;
        let info = s.info.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Ok(info)
    }

    async fn delete(&self, id: &str) -> Result<(), SessionError> {
        self.get(id)?;
        if let Some(s) = self.end(id, "was deleted") {
            // An exec in progress finishes (its limits bound it) before the sandbox goes.
            let mut g = s.session.lock().await;
            drop(g.repl.take());
            drop_off_path(g.sandbox.take());
        }
        Ok(())
    }
}

/// What ended an exec, for the stream and the session's usage: exit code, signal, verdict,
/// CPU ms, wall ms.
type ExecFacts = (Option<i32>, Option<i32>, wolf_core::Verdict, u64, u64);

impl Sessions {
    /// Exec `n` of session `id` is over (either mode): its `exit` on the session's stream, its
    /// usage counted, the session's expiry pushed back.
    async fn exec_done(&self, id: &str, entry: &Entry, g: &mut Session, n: u64, facts: ExecFacts) {
        let (exit_code, signal, verdict, cpu_ms, wall_ms) = facts;
        if let Some(st) = &self.streams {
            let verdict = format!("{verdict:?}");
            st.publish(id, |seq| wolf_core::stream::StreamEvent::Exit {
                seq,
                exit_code,
                signal,
                verdict,
            })
            .await;
        }
        g.info.execs = n;
        g.info.cpu_time_ms += cpu_ms;
        g.info.wall_time_ms += wall_ms;
        g.last = Instant::now();
        let now = Utc::now();
        g.info.last_used_at = now;
        let left_ttl = g.ttl.saturating_sub(g.created.elapsed());
        g.info.expires_at = now + chrono::Duration::from_std(g.idle.min(left_ttl)).unwrap_or_default();
        entry.set(&g.info);
        metrics::counter!("wolf_session_execs_total").increment(1);
    }

    /// An exec of a REPL session: one cell in its interpreter.
    async fn cell(
        &self,
        id: &str,
        entry: &Entry,
        g: &mut Session,
        req: ExecRequest,
        started: Instant,
        began: chrono::DateTime<Utc>,
    ) -> Result<ExecResult, SessionError> {
        if req
            .execution_engine
            .as_deref()
            .is_some_and(|e| self.registry.find(e).map(|l| l.spec.name != "python").unwrap_or(true))
        {
            return Err(SessionError::Invalid("a repl session runs Python cells only".into()));
        }
        let n = g.info.execs + 1;
        g.info.state = "busy".into();
        entry.set(&g.info);
        // A command runs under bash beside the interpreter, in the same work dir.
        let call = match (&req.code, &req.command) {
            (Some(code), None) => {
                serde_json::json!({"op": "exec", "code": code, "stdin": req.stdin, "outputFiles": req.output_files})
            }
            (None, Some(command)) => serde_json::json!({"op": "shell", "command": command, "stdin": req.stdin}),
            _ => return Err(SessionError::Invalid("give exactly one of code and command".into())),
        };
        let limit = Duration::from_millis(g.wall_ms);
        let Some(repl) = g.repl.as_mut() else {
            return Err(SessionError::Gone(format!("session {id} lost its interpreter")));
        };
        let live = self.streams.as_ref().map(|st| (st, id));
        if let Some(st) = &self.streams {
            if n == 1 {
                st.open(id, false).await;
            }
            st.publish(id, |seq| wolf_core::stream::StreamEvent::Stage {
                seq,
                stage: "exec".into(),
                name: Some(n.to_string()),
            })
            .await;
        }
        let answered = repl.call(&call, limit, live).await;
        g.info.state = "ready".into();
        let ms = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_f64()).unwrap_or(0.0);
        let text = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let mut result = ExecResult {
            exec: n,
            verdict: wolf_core::Verdict::Accepted,
            exit_code: None,
            signal: None,
            stdout: String::new(),
            stderr: String::new(),
            compile_output: String::new(),
            cpu_time_ms: 0,
            wall_time_ms: 0,
            memory_kb: 0,
            files: Vec::new(),
            error: None,
            traceback: None,
            value: None,
            total_ms: 0.0,
            job_id: None,
        };
        let mut ended = None;
        let (answer, raw, interrupted) = match answered {
            Ok((v, raw)) => (Ok(v), raw, false),
            Err(Failed::Interrupted(v, raw)) => (Ok(v), raw, true),
            Err(Failed::Died(outcome)) => (Err(outcome), String::new(), false),
        };
        match answer {
            Ok(v) => {
                result.stdout = raw + &text(&v, "stdout").unwrap_or_default();
                result.stderr = text(&v, "stderr").unwrap_or_default();
                result.value = text(&v, "value");
                result.error = text(&v, "error");
                result.traceback = text(&v, "traceback");
                result.exit_code = v.get("exitCode").and_then(|x| x.as_i64()).map(|x| x as i32);
                result.signal = v.get("signal").and_then(|x| x.as_i64()).map(|x| x as i32);
                result.cpu_time_ms = ms(&v, "cpuMs").round() as u64;
                result.wall_time_ms = ms(&v, "wallMs").round() as u64;
                result.memory_kb = ms(&v, "memoryKb") as u64;
                result.files = serde_json::from_value(v.get("files").cloned().unwrap_or_default()).unwrap_or_default();
                result.verdict = if interrupted {
                    // Interrupted at its wall limit; the interpreter and its state live on.
                    wolf_core::Verdict::TimeLimitExceeded
                } else if result.error.is_some() || result.exit_code.is_some_and(|c| c != 0) || result.signal.is_some()
                {
                    wolf_core::Verdict::RuntimeError
                } else {
                    wolf_core::Verdict::Accepted
                };
            }
            Err(outcome) => {
                let verdict = outcome.as_ref().map(|o| o.result.verdict);
                result.verdict = match verdict {
                    // Killed after an interrupt it did not answer: its wall limit.
                    _ if started.elapsed().as_millis() as u64 >= g.wall_ms => wolf_core::Verdict::TimeLimitExceeded,
                    Some(wolf_core::Verdict::Accepted) | None => wolf_core::Verdict::InternalError,
                    Some(v) => v,
                };
                if let Some(o) = &outcome {
                    result.signal = o.result.signal;
                    result.memory_kb = o.result.memory_kb;
                }
                result.wall_time_ms = started.elapsed().as_millis() as u64;
                let why = format!("{:?}", result.verdict);
                result.error = Some(format!("the interpreter died ({why}); the session's state is lost"));
                ended = Some(format!("lost its interpreter ({why})"));
            }
        }
        let facts = (
            result.exit_code,
            result.signal,
            result.verdict,
            result.cpu_time_ms,
            result.wall_time_ms,
        );
        self.exec_done(id, entry, g, n, facts).await;
        if let Some(why) = ended {
            drop(g.repl.take());
            self.end(id, &why);
        }
        result.total_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (engine, text) = match (&req.code, &req.command) {
            (Some(c), _) => ("python", c.as_str()),
            (None, Some(c)) => ("bash", c.as_str()),
            _ => ("python", ""),
        };
        self.record(id, engine, text, req.stdin.as_deref(), &mut result, began);
        Ok(result)
    }
}
