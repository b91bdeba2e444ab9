//! Handlers.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use wolf_core::Limits;
use wolf_core::job::{code_key, output_key};
use wolf_core::{JobRecord, Submission, Timings};
use wolf_store::{Admission, Idempotency, Page};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{JobId, Q, wait_timeout};

/// The OpenAPI document, generated from the handlers and types.
#[derive(OpenApi)]
#[openapi(
    info(title = "Wolf", description = "Run untrusted code in a strict sandbox."),
    paths(
        submit,
        get_job,
        delete_job,
        timeline,
        crate::callbacks::webhook,
        crate::callbacks::redeliver,
        crate::live::events,
        crate::sessions::create,
        crate::sessions::info,
        crate::sessions::delete,
        crate::sessions::exec,
        crate::sessions::events,
        output,
        test_output,
        output_file,
        code,
        list,
        dead_letters,
        languages,
        healthz,
        readyz
    ),
    components(schemas(
        Submission,
        JobRecord,
        ErrorBody,
        JobPage,
        Language,
        wolf_store::DeadLetter,
        wolf_core::stream::StreamEvent
    ))
)]
pub struct ApiDoc;

/// `POST /job` and `GET /job/{id}` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SubmitQuery {
    /// Answer once the job has finished (200 with the final record).
    #[serde(default)]
    pub wait: bool,
    /// Seconds to wait at most (default 30; larger values wait 300).
    #[param(minimum = 0)]
    pub timeout: Option<f64>,
}

/// The `{id}` path parameter.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IdPath {
    /// The job's id (a UUID, as `POST /job` answered it).
    #[param(format = Uuid)]
    pub id: String,
}

pub(crate) fn json_error(e: serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => ApiError::Invalid(format!("invalid request: {e}")),
        _ => ApiError::Malformed(format!("malformed JSON: {e}")),
    }
}

async fn read_body(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), limit).await.map_err(|e| {
        // axum reports the limit as "length limit exceeded"; anything else is the client's
        // connection failing mid-body.
        if e.to_string().contains("length limit") {
            ApiError::TooLarge(format!("the request body exceeds {limit} bytes"))
        } else {
            ApiError::Malformed(format!("the request body could not be read: {e}"))
        }
    })
}

/// Parse a JSON or multipart submission; returns it with the bytes its idempotency hash covers.
async fn parse_submission(st: &AppState, headers: &HeaderMap, req: Request) -> Result<(Submission, Vec<u8>), ApiError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ctype.starts_with("application/json") {
        let body = read_body(req, st.cfg.max_body_bytes).await?;
        let sub: Submission = serde_json::from_slice(&body).map_err(json_error)?;
        Ok((sub, body.to_vec()))
    } else if ctype.starts_with("multipart/form-data") {
        let mut mp = Multipart::from_request(req, &())
            .await
            .map_err(|e| ApiError::Malformed(format!("multipart: {e}")))?;
        let mut metadata: Option<serde_json::Value> = None;
        let mut code: Option<Vec<u8>> = None;
        while let Some(field) = mp.next_field().await.map_err(|e| multipart_error(&e.to_string()))? {
            match field.name().unwrap_or("") {
                "metadata" => {
                    let b = field.bytes().await.map_err(|e| multipart_error(&e.to_string()))?;
                    metadata = Some(serde_json::from_slice(&b).map_err(json_error)?);
                }
                "code" => {
                    code = Some(
                        field
                            .bytes()
                            .await
                            .map_err(|e| multipart_error(&e.to_string()))?
                            .to_vec(),
                    )
                }
                other => {
                    return Err(ApiError::Invalid(format!(
                        "unknown multipart part {other:?}; expected metadata and code"
                    )));
                }
            }
        }
        let mut meta = metadata.ok_or_else(|| ApiError::Invalid("multipart part \"metadata\" is missing".into()))?;
        let code = code.ok_or_else(|| ApiError::Invalid("multipart part \"code\" is missing".into()))?;
        let code_text = String::from_utf8(code).map_err(|_| ApiError::Invalid("code must be UTF-8 text".into()))?;
        let obj = meta
            .as_object_mut()
            .ok_or_else(|| ApiError::Invalid("metadata must be a JSON object".into()))?;
        obj.insert("code".into(), serde_json::Value::String(code_text));
        let canonical = serde_json::to_vec(&meta).unwrap_or_default();
        let sub: Submission = serde_json::from_value(meta).map_err(json_error)?;
        Ok((sub, canonical))
    } else {
        Err(ApiError::MediaType(format!(
            "Content-Type {:?} is not supported; use application/json or multipart/form-data",
            if ctype.is_empty() { "(none)" } else { ctype.as_str() }
        )))
    }
}

fn multipart_error(msg: &str) -> ApiError {
    if msg.contains("limit") {
        ApiError::TooLarge(format!("multipart: {msg}"))
    } else {
        ApiError::Malformed(format!("multipart: {msg}"))
    }
}

/// A program as the API checks it, a submission's or a checker's: its code within the size cap
/// and not blank, its engine one this deployment runs, its run limits within the caps, its files
/// within their count, at valid paths beside its source and the `reserved` names, with contents
/// that decode. Returns its language.
fn check_program(
    st: &AppState,
    code: &str,
    engine: &str,
    limits: Option<wolf_core::LimitsInput>,
    files: &[wolf_core::FileInput],
    reserved: &[&str],
) -> Result<&'static wolf_core::Language, ApiError> {
    if code.len() > st.cfg.max_code_bytes {
        return Err(ApiError::TooLarge(format!(
            "code is {} bytes; the limit is {}",
            code.len(),
            st.cfg.max_code_bytes
        )));
    }
    if wolf_core::names::is_blank(code) {
        return Err(ApiError::Invalid("code is empty".into()));
    }
    let lang = st.registry.find(engine).map_err(|e| ApiError::Invalid(e.to_string()))?;
    // An engine on a runtime, where jobs go to the managers that have it: one must offer it
    // now (its runtime need not be imported where this API runs).
    match (&lang.spec.runtime, st.queue.offered()) {
        (Some(_), Some(offered)) => {
            if !offered.contains_key(&lang.spec.name) {
                return Err(ApiError::Invalid(format!(
                    "execution engine {} is not offered by any live manager (none has its runtime); available: {}",
                    lang.spec.name,
                    available(st).join(", ")
                )));
            }
        }
        _ => {
            if let Some(reason) = &lang.absent {
                return Err(ApiError::Invalid(format!(
                    "execution engine {} is not available on this deployment ({reason}); available: {}",
                    lang.spec.name,
                    available(st).join(", ")
                )));
            }
        }
    }
    let req = limits.unwrap_or_default().into();
    Limits::resolve(&lang.run_limits, &st.cfg.caps.run, &req).map_err(|e| ApiError::Invalid(e.to_string()))?;
    if files.len() > st.cfg.max_files {
        return Err(ApiError::Invalid(format!(
            "{} files; at most {} are allowed",
            files.len(),
            st.cfg.max_files
        )));
    }
    // The source file's name counts: a file may not replace it.
    let taken = std::iter::once(lang.spec.source.as_str()).chain(reserved.iter().copied());
    wolf_core::names::check_file_paths(taken.chain(files.iter().map(|f| f.name.as_str())))
        .map_err(ApiError::Invalid)?;
    for f in files {
        f.bytes().map_err(ApiError::Invalid)?;
    }
    Ok(lang)
}

/// The engines a job may name now: this deployment's host engines, and those on runtimes that
/// are imported here (embedded) or offered by a live manager (distributed).
pub(crate) fn available(st: &AppState) -> Vec<String> {
    match st.queue.offered() {
        None => st.registry.known(),
        Some(offered) => {
            let mut names: Vec<String> = st
                .registry
                .all()
                .iter()
                .filter(|l| l.absent.is_none() && l.spec.runtime.is_none())
                .map(|l| l.spec.name.clone())
                .collect();
            names.extend(
                offered
                    .keys()
                    .filter(|n| st.registry.find(n).is_ok_and(|l| l.spec.runtime.is_some()))
                    .cloned(),
            );
            names
        }
    }
}

/// Check a submission against the registry and caps before anything is stored.
pub(crate) fn validate(st: &AppState, sub: &Submission) -> Result<(), ApiError> {
    let lang = check_program(st, &sub.code, &sub.execution_engine, sub.limits, &sub.files, &[])?;
    check_args(&sub.args)?;
    if !sub.compiler_options.is_empty() {
        if lang.spec.compile.is_none() {
            return Err(ApiError::Invalid(format!(
                "compilerOptions: {} has no compile step",
                lang.spec.name
            )));
        }
        check_args(&sub.compiler_options).map_err(|e| match e {
            ApiError::Invalid(m) => ApiError::Invalid(format!("compilerOptions: {m}")),
            other => other,
        })?;
    }
    crate::webhooks::check_callback(st, sub)?;
    validate_tests(st, sub, &lang.run_limits)
}

/// Test cases: how many, and each one's name, arguments and limits (against the same caps as
/// the submission's), so a suite never fails at its 900th test for a bad request.
fn validate_tests(st: &AppState, sub: &Submission, defaults: &Limits) -> Result<(), ApiError> {
    if let Some(c) = &sub.checker {
        c.validate().map_err(ApiError::Invalid)?;
        check_checker_program(st, c)?;
    }
    if let Some(i) = &sub.interactor {
        if sub.checker.is_some() {
            return Err(ApiError::Invalid(
                "an interactor decides each test itself: give no checker with it".into(),
            ));
        }
        check_program(
            st,
            &i.code,
            &i.execution_engine,
            i.limits,
            &i.files,
            &wolf_core::testlib::INTERACTOR_FILES,
        )
        .map_err(|e| match e {
            ApiError::Invalid(m) => ApiError::Invalid(format!("interactor: {m}")),
            ApiError::TooLarge(m) => ApiError::TooLarge(format!("interactor: {m}")),
            other => other,
        })?;
    }
    check_output_patterns(sub)?;
    if sub.tests.is_empty() {
        if sub.stop_on_first_failure {
            return Err(ApiError::Invalid("stopOnFirstFailure needs tests".into()));
        }
        return Ok(());
    }
    if sub.tests.len() > wolf_core::job::MAX_TESTS {
        return Err(ApiError::Invalid(format!(
            "{} tests; at most {} are allowed",
            sub.tests.len(),
            wolf_core::job::MAX_TESTS
        )));
    }
    if sub.stdin.is_some() || sub.expected_output.is_some() {
        return Err(ApiError::Invalid(
            "with tests, give stdin and expectedOutput per test (the top-level ones are the implicit single test)"
                .into(),
        ));
    }
    let base = sub.limits.unwrap_or_default();
    for (i, t) in sub.tests.iter().enumerate() {
        let at = |e: String| ApiError::Invalid(format!("tests[{i}]: {e}"));
        if let Some(name) = &t.name
            && (name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control))
        {
            return Err(at("name must be 1 to 128 characters, none a control character".into()));
        }
        check_args(&t.args).map_err(|e| match e {
            ApiError::Invalid(m) => at(m),
            other => other,
        })?;
        let req = wolf_core::LimitRequest::from(t.limits.unwrap_or_default()).or(base.into());
        Limits::resolve(defaults, &st.cfg.caps.run, &req).map_err(|e| at(e.to_string()))?;
    }
    Ok(())
}

/// A checker program, checked as a submission's program is ([`check_program`]).
fn check_checker_program(st: &AppState, c: &wolf_core::Checker) -> Result<(), ApiError> {
    let wolf_core::Checker::Testlib {
        code,
        execution_engine,
        files,
        limits,
    } = c
    else {
        return Ok(());
    };
    // The three files the suite gives it are taken names too.
    check_program(
        st,
        code,
        execution_engine,
        *limits,
        files,
        &wolf_core::testlib::CHECKER_FILES,
    )
    .map(drop)
    .map_err(|e| match e {
        ApiError::Invalid(m) => ApiError::Invalid(format!("checker: {m}")),
        ApiError::TooLarge(m) => ApiError::TooLarge(format!("checker: {m}")),
        other => other,
    })
}

/// Output-file patterns: how many, and each a relative path of plain components (globs with
/// `*` and `?` allowed), never absolute, never `.` or `..`.
fn check_output_patterns(sub: &Submission) -> Result<(), ApiError> {
    use wolf_core::job::MAX_OUTPUT_PATTERNS;
    if sub.output_files.len() > MAX_OUTPUT_PATTERNS {
        return Err(ApiError::Invalid(format!(
            "{} outputFiles; at most {MAX_OUTPUT_PATTERNS} are allowed",
            sub.output_files.len()
        )));
    }
    let suite =
        !sub.tests.is_empty() || sub.interactor.is_some() || sub.checker.as_ref().is_some_and(|c| c.is_program());
    if !sub.output_files.is_empty() && suite {
        return Err(ApiError::Invalid(
            "outputFiles with tests (or a checker program, or an interactor) is not supported yet".into(),
        ));
    }
    for p in &sub.output_files {
        if !wolf_core::names::valid_output_pattern(p) {
            return Err(ApiError::Invalid(format!(
                "outputFiles: {p:?} is not a relative path of at most 8 components of [A-Za-z0-9._+*?-]"
            )));
        }
    }
    Ok(())
}

/// Characters in one argument at most: with at most [`MAX_ARGS`] of them, all arguments stay
/// within 1 MiB even at four bytes a character, which exec takes whenever the run step's stack
/// limit (its memory limit, up to 64 MiB) is 4 MiB or more; one argument stays far below the
/// kernel's 128 KiB. Counted in characters so that the OpenAPI document can state it exactly.
pub const MAX_ARG_CHARS: usize = 1024;
/// Arguments at most.
pub const MAX_ARGS: usize = 256;

/// Arguments the kernel will take: no NUL, not too long, not too many.
fn check_args(args: &[String]) -> Result<(), ApiError> {
    if args.len() > MAX_ARGS {
        return Err(ApiError::Invalid(format!(
            "{} args; at most {MAX_ARGS} are allowed",
            args.len()
        )));
    }
    if args.iter().any(|a| a.contains('\0')) {
        return Err(ApiError::Invalid("args may not contain NUL".into()));
    }
    if let Some((i, a)) = args.iter().enumerate().find(|(_, a)| a.chars().count() > MAX_ARG_CHARS) {
        return Err(ApiError::Invalid(format!(
            "args[{i}] has {} characters; one argument may have at most {MAX_ARG_CHARS}",
            a.chars().count()
        )));
    }
    Ok(())
}

/// Submit a job.
#[utoipa::path(post, path = "/job", params(SubmitQuery),
    request_body(content = Submission, description = "JSON, or multipart with parts `metadata` (JSON) and `code`"),
    responses(
        (status = 200, description = "The job record (Pending; or final with wait=true)", body = JobRecord),
        (status = 202, description = "wait=true timed out; the record as it is", body = JobRecord),
        (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
#[tracing::instrument(name = "api.submit", skip_all, fields(job_id = tracing::field::Empty, trace_id = tracing::field::Empty))]
pub async fn submit(
    State(st): State<AppState>,
    Q(q): Q<SubmitQuery>,
    headers: HeaderMap,
    req: Request,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    // Checked before admission: a bad timeout must not leave an accepted job the client never
    // heard of.
    let timeout = wait_timeout(q.timeout, st.cfg.wait_default, st.cfg.wait_max)?;
    if !st.ready.load(Ordering::Relaxed) {
        return Err(ApiError::Unavailable("Wolf is starting or shutting down".into()));
    }
    let (sub, hashed) = tokio::time::timeout(st.cfg.body_timeout, parse_submission(&st, &headers, req))
        .await
        .map_err(|_| {
            ApiError::Timeout(format!(
                "the request body did not arrive within {} s",
                st.cfg.body_timeout.as_secs()
            ))
        })??;
    validate(&st, &sub)?;
    let idem = match headers.get("idempotency-key") {
        Some(v) => {
            let key = v
                .to_str()
                .map_err(|_| ApiError::Invalid("Idempotency-Key must be ASCII".into()))?;
            if key.is_empty() || key.len() > 200 {
                return Err(ApiError::Invalid("Idempotency-Key must be 1 to 200 characters".into()));
            }
            Some(Idempotency {
                // Per key: another key's use of the same Idempotency-Key is another job.
                key: match crate::auth::current().owner() {
                    Some(owner) => format!("{owner}:{key}"),
                    None => key.to_string(),
                },
                body_hash: wolf_core::hash::sha256_hex(&hashed),
            })
        }
        None => None,
    };
    let record = accept(&st, &sub, idem.as_ref(), started).await?;
    let server_ms = started.elapsed().as_secs_f64() * 1000.0;
    metrics::histogram!("wolf_stage_duration_seconds", "stage" => "server").record(server_ms / 1000.0);
    if !q.wait {
        return Ok((StatusCode::OK, Json(record)).into_response());
    }
    let rec = wait_final(&st, &record.id, timeout).await?;
    let status = if rec.status.is_final() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(rec)).into_response())
}

/// Admit a validated submission: a new record (or the existing one of the same idempotency
/// key), durable in the queue once this returns. Every front door admits through here.
pub(crate) async fn accept(
    st: &AppState,
    sub: &Submission,
    idem: Option<&Idempotency>,
    started: Instant,
) -> Result<JobRecord, ApiError> {
    admit(st, sub, idem, started, false).await
}

/// [`accept`] for the WebSocket: the job's stdin is what its client sends.
pub(crate) async fn accept_interactive(
    st: &AppState,
    sub: &Submission,
    started: Instant,
) -> Result<JobRecord, ApiError> {
    admit(st, sub, None, started, true).await
}

async fn admit(
    st: &AppState,
    sub: &Submission,
    idem: Option<&Idempotency>,
    started: Instant,
    interactive: bool,
) -> Result<JobRecord, ApiError> {
    crate::auth::check_engine(&sub.execution_engine)?;
    // Held until the queue has the job: the key's next admission counts it.
    let _quota = crate::quota::check(st).await?;
    let id = uuid::Uuid::now_v7().to_string();
    let mut record = JobRecord::new(id.clone(), sub, Utc::now());
    record.interactive = interactive;
    // What a key submits is its own (authentication off: no owner, as before keys).
    record.owner = crate::auth::current().owner().map(str::to_string);
    crate::deadline::check(st, sub, record.owner.as_deref()).await?;
    // The job's trace: this span's when spans are exported, else a fresh W3C trace id that
    // still names the job in every log line.
    let trace_id = wolf_telemetry::trace_id().unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let span = tracing::Span::current();
    span.record("job_id", id.as_str());
    span.record("trace_id", trace_id.as_str());
    record.trace_id = Some(trace_id);
    let code_stored = st.queue.code_before_admission();
    if code_stored {
        st.objects.put(&code_key(&id), sub.code.clone().into_bytes()).await?;
    }
    record.timings = Some(Timings {
        server: started.elapsed().as_secs_f64() * 1000.0,
        ..Default::default()
    });
    Ok(match st.queue.admit(&record, sub, idem).await? {
        Admission::New => {
            st.events.queued();
            st.depth_hint.admitted();
            // One admission in both modes: the queue holds the envelope (record and submission,
            // code included) durably once `admit` returns, so the answer goes out now. The
            // record and the code object follow in the background, retried until stored (the
            // embedded queue wrote the record in its own transaction already: that insert is a
            // no-op); the manager writes both idempotently too before it runs the job.
            crate::persist::spawn(st, record.clone(), sub.clone(), code_stored);
            record
        }
        Admission::Existing(existing) => *existing,
    })
}

/// Wait until `id` is final or `timeout` passes; returns the record as it is then.
pub(crate) async fn wait_final(st: &AppState, id: &str, timeout: Duration) -> Result<JobRecord, ApiError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut rx = st.events.subscribe();
    // Poll interval: short at first (most jobs take milliseconds), growing to 200 ms.
    let mut every = Duration::from_millis(2);
    loop {
        // In the distributed mode the manager is another process: no event arrives, so the
        // record is also polled. A store that is briefly down is waited out.
        let rec = match lookup(st, id).await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(ApiError::NotFound(format!("job {id} not found"))),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => {
                tokio::time::sleep(every).await;
                continue;
            }
        };
        if rec.status.is_final() || tokio::time::Instant::now() >= deadline {
            return Ok(rec);
        }
        let poll = (tokio::time::Instant::now() + every).min(deadline);
        every = (every * 2).min(Duration::from_millis(200));
        loop {
            match tokio::time::timeout_at(poll, rx.recv()).await {
                Err(_) => break,
                Ok(Ok(done)) if done == id => break,
                Ok(Ok(_)) => continue,
                // Lagged or closed: look at the record again.
                Ok(Err(_)) => {
                    rx = st.events.subscribe();
                    break;
                }
            }
        }
    }
}

/// A job record; with `wait=true`, answered once the job is final or `timeout` passed (a long
/// poll: one request follows a job to its result).
#[utoipa::path(get, path = "/job/{id}", params(IdPath, SubmitQuery),
    responses((status = 200, body = JobRecord), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn get_job(
    State(st): State<AppState>,
    JobId(id): JobId,
    Q(q): Q<SubmitQuery>,
) -> Result<Json<JobRecord>, ApiError> {
    let timeout = wait_timeout(q.timeout, st.cfg.wait_default, st.cfg.wait_max)?;
    if q.wait {
        return wait_final(&st, &id, timeout).await.map(Json);
    }
    lookup(&st, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("job {id} not found")))
}

/// Delete an ended job: its record, code, output and files, at once and for good (the owner's
/// key or an admin; another key's job is 404). A job still queued or running is 409.
#[utoipa::path(delete, path = "/job/{id}", params(IdPath),
    responses((status = 204, description = "Deleted"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn delete_job(State(st): State<AppState>, JobId(id): JobId) -> Result<StatusCode, ApiError> {
    delete_ended(&st, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete job `id` if the current key may see it and it has ended; returns its last record.
pub(crate) async fn delete_ended(st: &AppState, id: &str) -> Result<JobRecord, ApiError> {
    let rec = lookup(st, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id} not found")))?;
    if !rec.status.is_final() {
        return Err(ApiError::Conflict(format!(
            "job {id} is {}; a job can be deleted once it has ended",
            rec.status.as_str()
        )));
    }
    let store = st
        .retention
        .as_ref()
        .ok_or_else(|| ApiError::NotImplemented("this deployment cannot delete jobs".into()))?;
    crate::retention::forget_jobs(&*st.objects, &**store, &[id.to_string()]).await?;
    st.pending_writes.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    let key = crate::auth::key_name();
    tracing::info!(target: "wolf::audit", event = "job_deleted", job = %id, key, "job deleted");
    Ok(rec)
}

/// The job's stages as a waterfall: start and duration of each stage and attempt, the worker,
/// the trace id.
#[utoipa::path(get, path = "/job/{id}/timeline", params(IdPath),
    responses((status = 200, body = wolf_core::timeline::Timeline), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn timeline(
    State(st): State<AppState>,
    JobId(id): JobId,
) -> Result<Json<wolf_core::timeline::Timeline>, ApiError> {
    lookup(&st, &id)
        .await?
        .map(|r| {
            let mut tl = wolf_core::timeline::timeline(&r);
            tl.trace_url = st
                .cfg
                .trace_url
                .as_ref()
                .zip(tl.trace_id.as_ref())
                .map(|(url, id)| url.replace("{trace_id}", id));
            Json(tl)
        })
        .ok_or_else(|| ApiError::NotFound(format!("job {id} not found")))
}

/// Read your writes, on every API: a job is found at once after any API accepted it, and
/// while the metadata store is down.
///
/// Order: the metadata store; else this API's own copy of a job it accepted; else the queue,
/// which holds the job as queued until a manager acks it (JetStream: by the job's subject);
/// else the metadata store once more. A manager stores the final record before it acks, so a
/// job that left the queue between the first read and the queue's answer is in the store by
/// the second read.
pub(crate) async fn lookup(st: &AppState, id: &str) -> Result<Option<JobRecord>, ApiError> {
    Ok(lookup_queued(st, id).await?.map(|(r, _)| r))
}

/// [`lookup`], with the submission when it came from the queue. A job the current key may
/// not see is not found (every door and route reads jobs through here).
async fn lookup_queued(st: &AppState, id: &str) -> Result<Option<(JobRecord, Option<Submission>)>, ApiError> {
    Ok(lookup_any(st, id)
        .await?
        .filter(|(r, _)| crate::auth::may_see(r.owner.as_deref())))
}

async fn lookup_any(st: &AppState, id: &str) -> Result<Option<(JobRecord, Option<Submission>)>, ApiError> {
    let local = st.recent(id);
    let stored = match st.meta.get(id).await {
        Ok(Some(r)) => return Ok(Some((r, None))),
        Ok(None) => None,
        Err(e) => Some(e),
    };
    if let Some(r) = local {
        return Ok(Some((r, None)));
    }
    match (st.queue.peek(id).await, stored) {
        (Ok(Some((r, sub))), _) => Ok(Some((r, Some(sub)))),
        (Ok(None), None) => Ok(st.meta.get(id).await?.map(|r| (r, None))),
        (Ok(None), Some(e)) | (Err(_), Some(e)) => Err(e.into()),
        (Err(e), None) => Err(e.into()),
    }
}

/// The program's stdout (409 while the job has not finished).
#[utoipa::path(get, path = "/job/{id}/output", params(IdPath), responses((status = 200, content_type = "text/plain", body = String),
    (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody),
    (status = 503, body = ErrorBody)))]
pub async fn output(State(st): State<AppState>, JobId(id): JobId) -> Result<Response, ApiError> {
    let rec = lookup(&st, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id} not found")))?;
    if !rec.status.is_final() {
        return Err(ApiError::Conflict(format!(
            "job {id} is {}; its output is not ready",
            rec.status.as_str()
        )));
    }
    let Some(path) = rec
        .output_path
        .clone()
        .or_else(|| (rec.status == wolf_core::Status::Completed).then(|| output_key(&id)))
    else {
        return Err(ApiError::NotFound(format!(
            "job {id} failed and has no output: {}",
            rec.failure_reason.unwrap_or_default()
        )));
    };
    let data = st
        .objects
        .get(&path)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("output of job {id} not found")))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], data).into_response())
}

/// An output file's path parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct FilePath {
    /// The job's id (a UUID).
    #[param(format = Uuid)]
    pub id: String,
    /// The file's path as `result.files` lists it.
    pub path: String,
}

/// A type for an output file from its extension; anything unknown (and anything a browser
/// would run, like HTML) is served as bytes to download.
pub(crate) fn content_type(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "pdf" => "application/pdf",
        "csv" => "text/csv; charset=utf-8",
        "json" => "application/json",
        "txt" | "log" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// A file the program wrote, as `result.files` lists it. Served with `nosniff` and a
/// sandboxing Content-Security-Policy: a program's SVG or PDF cannot run script on this
/// origin.
#[utoipa::path(get, path = "/job/{id}/files/{path}", params(FilePath), responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
    (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody),
    (status = 503, body = ErrorBody)))]
pub async fn output_file(
    State(st): State<AppState>,
    JobId(id): JobId,
    axum::extract::Path(params): axum::extract::Path<std::collections::HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let path = params.get("path").cloned().unwrap_or_default();
    let rec = lookup(&st, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id} not found")))?;
    if !rec.status.is_final() {
        return Err(ApiError::Conflict(format!(
            "job {id} is {}; its files are not ready",
            rec.status.as_str()
        )));
    }
    // Only a listed path is read: nothing a request names can reach another key.
    let listed = rec
        .result
        .as_ref()
        .is_some_and(|r| r.files.iter().any(|f| f.path == path));
    if !listed {
        return Err(ApiError::NotFound(format!("job {id} has no output file {:?}", path)));
    }
    let data = st
        .objects
        .get(&wolf_core::job::output_file_key(&id, &path))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("output file {path:?} of job {id} not found")))?;
    Ok((
        [
            (header::CONTENT_TYPE, content_type(&path)),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'; sandbox"),
        ],
        data,
    )
        .into_response())
}

/// A test's path parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TestPath {
    /// The job's id (a UUID).
    #[param(format = Uuid)]
    pub id: String,
    /// The test's index in `result.tests`, from 0.
    #[param(minimum = 0, maximum = 999)]
    pub n: u32,
}

/// The full stdout of one test (409 while the job has not finished).
#[utoipa::path(get, path = "/job/{id}/tests/{n}/output", params(TestPath), responses((status = 200, content_type = "text/plain", body = String),
    (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody),
    (status = 503, body = ErrorBody)))]
pub async fn test_output(
    State(st): State<AppState>,
    JobId(id): JobId,
    crate::extract::TestIndex(n): crate::extract::TestIndex,
) -> Result<Response, ApiError> {
    let rec = lookup(&st, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id} not found")))?;
    if !rec.status.is_final() {
        return Err(ApiError::Conflict(format!(
            "job {id} is {}; its tests' output is not ready",
            rec.status.as_str()
        )));
    }
    let ran = rec.result.as_ref().map_or(0, |r| r.tests.len());
    if n >= ran {
        return Err(ApiError::NotFound(format!(
            "job {id} ran {ran} tests; there is no test {n} (numbered from 0)"
        )));
    }
    let data = st
        .objects
        .get(&wolf_core::job::test_output_key(&id, n))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("output of test {n} of job {id} not found")))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], data).into_response())
}

/// The submitted source.
#[utoipa::path(get, path = "/job/{id}/code", params(IdPath), responses((status = 200, content_type = "text/plain", body = String),
    (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn code(State(st): State<AppState>, JobId(id): JobId) -> Result<Response, ApiError> {
    let text = |d: Vec<u8>| ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], d).into_response();
    let found = lookup_queued(&st, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id} not found")))?;
    if let (_, Some(sub)) = found {
        return Ok(text(sub.code.into_bytes()));
    }
    if let Some(d) = st.objects.get(&code_key(&id)).await? {
        return Ok(text(d));
    }
    // Known, code object not written yet (the admission writes it in the background): the
    // stored submission holds the code, and the queue has it while the job waits.
    if let Ok(Some(sub)) = st.meta.submission(&id).await
        && !sub.code.is_empty()
    {
        return Ok(text(sub.code.into_bytes()));
    }
    match st.queue.peek(&id).await? {
        Some((_, sub)) => Ok(text(sub.code.into_bytes())),
        None => Err(ApiError::Unavailable(format!(
            "the code of job {id} is not stored yet; retry"
        ))),
    }
}

/// Listing query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// A number skips that many; a job id (the previous page's `nextOffset`) continues after it.
    pub offset: Option<String>,
    /// Page size, 1..=100 (default 20).
    #[param(minimum = 1, maximum = 100, value_type = Option<u64>)]
    #[serde(default, deserialize_with = "crate::extract::whole_query_number")]
    pub limit: Option<u64>,
}

/// A page of jobs, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobPage {
    /// The jobs.
    pub jobs: Vec<JobRecord>,
    /// Pass as `offset` for the next page; null at the end.
    pub next_offset: Option<String>,
}

/// Jobs, newest first, with cursor paging.
#[utoipa::path(get, path = "/job", params(ListQuery), responses((status = 200, body = JobPage), (status = 400, body = ErrorBody),
    (status = 422, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list(State(st): State<AppState>, Q(q): Q<ListQuery>) -> Result<Json<JobPage>, ApiError> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::Invalid("limit must be between 1 and 100".into()));
    }
    let p = crate::auth::current();
    let mut page = Page {
        before: None,
        offset: 0,
        limit,
        // A key lists its own jobs; an admin key (or no authentication) all of them.
        owner: if p.sees_all() { None } else { p.owner() },
    };
    if let Some(o) = q.offset.as_deref().filter(|o| !o.is_empty()) {
        match o.parse::<u64>() {
            Ok(n) => page.offset = n,
            Err(_) => page.before = Some(o),
        }
    }
    let jobs = st.meta.list(page).await?;
    let next_offset = (jobs.len() as u64 == limit)
        .then(|| jobs.last().map(|j| j.id.clone()))
        .flatten();
    Ok(Json(JobPage { jobs, next_offset }))
}

/// `GET /dead-letters` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// How many, newest first, 1..=100 (default 20).
    #[param(minimum = 1, maximum = 100, value_type = Option<u64>)]
    #[serde(default, deserialize_with = "crate::extract::whole_query_number")]
    pub limit: Option<u64>,
}

/// Jobs that cannot run (every attempt's sandbox failed, or the job is malformed), newest first,
/// with the reason: the same in both modes (SQLite table, JetStream stream `WOLF_DLQ`). Each
/// job's record is `Failed` with the same reason.
#[utoipa::path(get, path = "/dead-letters", params(DeadLetterQuery),
    responses((status = 200, body = [wolf_store::DeadLetter]), (status = 400, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn dead_letters(
    State(st): State<AppState>,
    Q(q): Q<DeadLetterQuery>,
) -> Result<Json<Vec<wolf_store::DeadLetter>>, ApiError> {
    crate::auth::require_admin("the dead letters (every key's jobs)")?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::Invalid("limit must be between 1 and 100".into()));
    }
    Ok(Json(st.queue.dead_letters(limit).await?))
}

/// An execution engine of this deployment.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Language {
    /// `executionEngine` value.
    pub name: String,
    /// Other accepted names.
    pub aliases: Vec<String>,
    /// Toolchain version.
    pub version: Option<String>,
    /// Source file name in the work dir.
    pub source_file: String,
    /// Whether it compiles.
    pub compiled: bool,
    /// The image runtime it runs on, `RUNTIME@sha256:…` (absent for the host's engines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// Engines available on this deployment, with versions.
#[utoipa::path(get, path = "/languages", responses((status = 200, body = [Language])))]
pub async fn languages(State(st): State<AppState>) -> Json<Vec<Language>> {
    let reg = st.registry;
    let offered = st.queue.offered();
    let list = tokio::task::spawn_blocking(move || {
        reg.all()
            .iter()
            .filter_map(|l| {
                // An engine on a runtime, where managers offer them: listed while one does,
                // with the version (image digest) that manager has.
                let (version, image) = match (&l.spec.runtime, &offered) {
                    (Some(_), Some(offered)) => {
                        let ad = &offered.get(&l.spec.name)?.0;
                        (ad.version.clone(), ad.image.clone())
                    }
                    _ if l.absent.is_some() => return None,
                    _ => (reg.version(l), reg.image(l)),
                };
                Some(Language {
                    name: l.spec.name.clone(),
                    aliases: l.spec.aliases.clone(),
                    version,
                    source_file: l.spec.source.clone(),
                    compiled: l.spec.compile.is_some(),
                    image,
                })
            })
            .collect()
    })
    .await
    .unwrap_or_default();
    Json(list)
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Readiness: the store answers, intake is open, and (embedded) sandboxes can be prepared.
#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "ready"), (status = 503, body = ErrorBody)))]
pub async fn readyz(State(st): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let depth = st.queue.depth().await?;
    if !st.ready.load(Ordering::Relaxed) {
        return Err(ApiError::Unavailable("not ready: starting or shutting down".into()));
    }
    if let Some(check) = &st.readiness
        && let Err(why) = check()
    {
        return Err(ApiError::Unavailable(format!("not ready: {why}")));
    }
    Ok(Json(serde_json::json!({"status": "ready", "queueDepth": depth})))
}

/// Prometheus metrics.
pub async fn metrics(State(st): State<AppState>) -> Response {
    if let Ok(depth) = st.queue.depth().await {
        metrics::gauge!("wolf_queue_depth").set(depth as f64);
    }
    match &st.prometheus {
        Some(h) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], h.render()).into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled").into_response(),
    }
}

/// The OpenAPI 3 document.
pub async fn openapi(State(st): State<AppState>) -> Json<serde_json::Value> {
    Json(crate::schema::document(&st))
}

/// Unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// Known routes, other methods.
pub async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::MethodNotAllowed(format!("method {method} is not allowed on this route"))
}
