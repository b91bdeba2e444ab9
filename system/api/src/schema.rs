//! The OpenAPI document as this deployment enforces it: the handlers' generated document, with
//! the constraints that depend on the deployment filled in — the engines present here, the
//! operator's caps, the file and argument rules. A client generated from it, or a property
//! test (schemathesis, in the test command), sees exactly what the server accepts.

use serde_json::{Value, json};
use utoipa::OpenApi;

use crate::AppState;
use crate::routes::{ApiDoc, MAX_ARG_CHARS, MAX_ARGS};

/// The document for this deployment.
pub fn document(st: &AppState) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    let schemas = &mut doc["components"]["schemas"];
    let mut engines: Vec<String> = Vec::new();
    for l in st.registry.all().iter().filter(|l| l.absent.is_none()) {
        engines.push(l.spec.name.clone());
        engines.extend(l.spec.aliases.iter().cloned());
    }
    let sub = &mut schemas["Submission"]["properties"];
    sub["executionEngine"]["enum"] = json!(engines);
    sub["args"]["maxItems"] = json!(MAX_ARGS);
    let arg_items = json!({"type": "string", "maxLength": MAX_ARG_CHARS, "pattern": "^[^\\u0000]*$"});
    sub["args"]["items"] = arg_items.clone();
    sub["compilerOptions"]["maxItems"] = json!(MAX_ARGS);
    sub["compilerOptions"]["items"] = arg_items.clone();
    sub["files"]["maxItems"] = json!(st.cfg.max_files);
    sub["tests"]["maxItems"] = json!(wolf_core::job::MAX_TESTS);
    sub["outputFiles"]["maxItems"] = json!(wolf_core::job::MAX_OUTPUT_PATTERNS);
    sub["outputFiles"]["items"] = json!({"type": "string", "pattern": wolf_core::names::OUTPUT_PATTERN});
    let test = &mut schemas["TestInput"];
    test["additionalProperties"] = json!(false);
    test["properties"]["args"]["maxItems"] = json!(MAX_ARGS);
    test["properties"]["args"]["items"] = arg_items.clone();
    test["properties"]["name"]["pattern"] = json!("^[^\\u0000-\\u001f\\u007f-\\u009f]{1,128}$");
    let name = &mut schemas["FileInput"]["properties"]["name"];
    name["pattern"] = json!(wolf_core::names::FILE_PATH_PATTERN);
    name["not"] = json!({"enum": [".", ".."]});
    // The float checker's epsilon and the checker program's code and engine.
    if let Some(variants) = schemas["Checker"]["oneOf"].as_array_mut() {
        for v in variants {
            v["additionalProperties"] = json!(false);
            if v["properties"].get("epsilon").is_some() {
                v["properties"]["epsilon"]["minimum"] = json!(0);
            }
            // A checker program: code as the submission's, an engine this deployment runs.
            if v["properties"].get("code").is_some() {
                v["properties"]["code"]["minLength"] = json!(1);
                v["properties"]["code"]["pattern"] = json!("\\S");
                v["properties"]["code"]["maxLength"] = json!(st.cfg.max_code_bytes);
                v["properties"]["executionEngine"]["enum"] = json!(engines);
            }
        }
    }
    // Sessions: engines present here (or null: the default), output patterns and code as a
    // submission's.
    let mut or_null: Vec<Value> = engines.iter().map(|e| json!(e)).collect();
    or_null.push(Value::Null);
    let spec = &mut schemas["SessionSpec"];
    spec["additionalProperties"] = json!(false);
    spec["properties"]["executionEngine"]["enum"] = json!(or_null);
    spec["properties"]["files"]["maxItems"] = json!(st.cfg.max_files);
    let exec = &mut schemas["ExecRequest"];
    exec["additionalProperties"] = json!(false);
    exec["properties"]["executionEngine"]["enum"] = json!(or_null);
    exec["properties"]["outputFiles"]["maxItems"] = json!(wolf_core::job::MAX_OUTPUT_PATTERNS);
    exec["properties"]["outputFiles"]["items"] = json!({"type": "string", "pattern": wolf_core::names::OUTPUT_PATTERN});
    for field in ["code", "command"] {
        exec["properties"][field]["maxLength"] = json!(st.cfg.max_code_bytes);
        exec["properties"][field]["pattern"] = json!("\\S");
    }
    // An interactor: code and engine as a checker program's.
    let interactor = &mut schemas["Interactor"];
    interactor["additionalProperties"] = json!(false);
    interactor["properties"]["code"]["maxLength"] = json!(st.cfg.max_code_bytes);
    interactor["properties"]["executionEngine"]["enum"] = json!(engines);
    let caps = st.cfg.caps.run;
    let limits = &mut schemas["LimitsInput"];
    limits["additionalProperties"] = json!(false);
    for (field, max) in [
        ("cpuTimeMs", caps.cpu_time_ms),
        ("wallTimeMs", caps.wall_time_ms),
        ("memoryMb", caps.memory_mb),
        ("pids", caps.pids),
        ("outputBytes", caps.output_bytes),
    ] {
        let p = &mut limits["properties"][field];
        p["minimum"] = json!(1);
        p["maximum"] = json!(max);
    }
    // A stack is bounded by the memory cap unless the operator caps it, a file size by the
    // operator's cap or 1 TiB.
    limits["properties"]["stackMb"]["minimum"] = json!(1);
    limits["properties"]["stackMb"]["maximum"] = json!(caps.stack_mb.unwrap_or(caps.memory_mb));
    limits["properties"]["fileSizeMb"]["minimum"] = json!(1);
    limits["properties"]["fileSizeMb"]["maximum"] =
        json!(caps.file_size_mb.unwrap_or(wolf_core::limits::MAX_FILE_SIZE_MB));
    // Each Server-Sent Event of a job's or a session's stream: its kind, its number and the
    // event as JSON.
    for path in ["/job/{id}/events", "/session/{id}/events"] {
        let Some(c) = doc["paths"][path]["get"]["responses"]["200"]["content"].get_mut("text/event-stream") else {
            continue;
        };
        c["schema"] = json!({
            "type": "object",
            "required": ["event", "data", "id"],
            "properties": {
                "event": {"type": "string", "enum": ["stage", "stdout", "stderr", "exit", "result", "lagged"]},
                "id": {"type": "string", "pattern": "^[0-9]+$"},
                "data": {"type": "string", "contentMediaType": "application/json"},
            },
        });
    }
    doors(&mut doc);
    // A job's id, as POST /job answers it, is what every per-job operation takes: stated as
    // OpenAPI links, so clients (and stateful property tests) can follow a job.
    let link = |op: &str| json!({"operationId": op, "parameters": {"id": "$response.body#/id"}});
    for status in ["200", "202"] {
        if let Some(r) = doc["paths"]["/job"]["post"]["responses"].get_mut(status) {
            r["links"] = json!({
                "GetJob": link("get_job"),
                "GetCode": link("code"),
                "GetOutput": link("output"),
                "GetTimeline": link("timeline"),
            });
        }
    }
    if st.cfg.auth_required {
        secured(&mut doc);
    }
    doc
}

/// When keys are required: the schemes, and on every route but the open ones (probes,
/// metrics, this document) the requirement and its 401 and 403 answers.
fn secured(doc: &mut Value) {
    doc["components"]["securitySchemes"] = json!({
        "bearer": {"type": "http", "scheme": "bearer", "description": "wolf keys create"},
        "xAuthToken": {"type": "apiKey", "in": "header", "name": "X-Auth-Token", "description": "Judge0's header"},
    });
    let err = |d: &str| json!({"description": d, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}});
    let open = ["/healthz", "/readyz", "/metrics", "/openapi.json"];
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (_, item) in paths.iter_mut().filter(|(p, _)| !open.contains(&p.as_str())) {
            for op in item.as_object_mut().into_iter().flat_map(|o| o.values_mut()) {
                op["security"] = json!([{"bearer": []}, {"xAuthToken": []}]);
                op["responses"]["401"] = err("no API key, or not a valid one");
                op["responses"]["403"] = err("outside the key's scopes");
            }
        }
    }
}

/// The front doors' routes, under their own tags: what each answers is Judge0's or Piston's
/// own shape (docs/judge0.md, docs/piston.md), documented there field by field; here they are
/// listed so that a reader of the document sees every route Wolf serves. (The property tests
/// exclude these tags: the doors keep their peers' status codes, e.g. Judge0's 422 shapes.)
fn doors(doc: &mut Value) {
    let any = json!({"type": "object", "additionalProperties": true});
    let routes: [(&str, &str, &str, &str, bool); 21] = [
        (
            "post",
            "/judge0/submissions",
            "judge0",
            "Create a submission (201 with its token; `wait=true` answers the result)",
            true,
        ),
        (
            "get",
            "/judge0/submissions",
            "judge0",
            "List submissions (403, as Judge0 answers by default)",
            false,
        ),
        (
            "post",
            "/judge0/submissions/batch",
            "judge0",
            "Create submissions in a batch",
            true,
        ),
        (
            "get",
            "/judge0/submissions/batch",
            "judge0",
            "Submissions by `tokens`",
            false,
        ),
        (
            "get",
            "/judge0/submissions/{token}",
            "judge0",
            "A submission (`fields`, `base64_encoded`)",
            false,
        ),
        (
            "delete",
            "/judge0/submissions/{token}",
            "judge0",
            "Delete a submission (400, as Judge0 answers by default)",
            false,
        ),
        (
            "get",
            "/judge0/languages",
            "judge0",
            "Languages under Judge0 1.13.1's ids",
            false,
        ),
        (
            "get",
            "/judge0/languages/all",
            "judge0",
            "Every language, archived ones included",
            false,
        ),
        ("get", "/judge0/languages/{id}", "judge0", "A language", false),
        ("get", "/judge0/statuses", "judge0", "Judge0's 14 statuses", false),
        ("get", "/judge0/about", "judge0", "Version 1.13.1", false),
        (
            "get",
            "/judge0/config_info",
            "judge0",
            "Judge0's 39 configuration keys, true to Wolf's configuration",
            false,
        ),
        ("get", "/judge0/system_info", "judge0", "The host", false),
        ("get", "/judge0/statistics", "judge0", "Counts", false),
        ("get", "/judge0/workers", "judge0", "The queue and its workers", false),
        ("get", "/judge0/version", "judge0", "1.13.1", false),
        (
            "get",
            "/api/v2/runtimes",
            "piston",
            "Runtimes: language, version, aliases",
            false,
        ),
        (
            "post",
            "/api/v2/execute",
            "piston",
            "Run a program and answer Piston's `{language, version, run, compile?}`",
            true,
        ),
        ("get", "/api/v2/packages", "piston", "What is installed", false),
        (
            "get",
            "/api/v2/connect",
            "piston",
            "The interactive WebSocket (init, data, signal; runtime, stage, data, exit)",
            false,
        ),
        (
            "get",
            "/job/ws",
            "jobs",
            "Wolf's interactive WebSocket (init, stdin, eof, signal; the job's events)",
            false,
        ),
    ];
    for (method, path, tag, summary, body) in routes {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|c| c.strip_prefix('{').and_then(|c| c.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = json!({
            "tags": [tag],
            "summary": summary,
            "operationId": format!("{tag}_{method}_{}", path.trim_matches('/').replace(['/', '{', '}'], "_")),
            "responses": {"default": {"description": "the peer's own answer", "content": {"application/json": {"schema": any}}}},
        });
        if !params.is_empty() {
            op["parameters"] = json!(params);
        }
        if body {
            op["requestBody"] = json!({"content": {"application/json": {"schema": any}}});
        }
        doc["paths"][path][method] = op;
    }
}
