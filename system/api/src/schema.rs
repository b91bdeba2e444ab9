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
    // Each Server-Sent Event of a job's stream: its kind, its number and the event as JSON.
    if let Some(c) = doc["paths"]["/job/{id}/events"]["get"]["responses"]["200"]["content"].get_mut("text/event-stream")
    {
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
    doc
}
