//! The distributed mode end to end against real nats-server, PostgreSQL and the S3 server: the
//! `wolf api` and `wolf manager` binaries started by the testkit's [`Stack`].

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wolf_testkit::Stack;

fn root() -> bool {
    wolf_testkit::running_as_root("sandboxes and the testkit's PostgreSQL need root")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn submit(api: &str, body: &Value) -> (u16, Value) {
    submit_with(api, body, &[])
}

fn submit_with(api: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = agent()
        .post(format!("{api}/job"))
        .header("Content-Type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut r = req.send(body.to_string()).unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap_or(Value::Null),
    )
}

fn get(api: &str, path: &str) -> (u16, String) {
    match agent().get(format!("{api}{path}")).call() {
        Ok(mut r) => (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

fn wait_final(api: &str, id: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (s, b) = get(api, &format!("/job/{id}"));
        if s == 200 {
            let v: Value = serde_json::from_str(&b).unwrap();
            if matches!(v["status"].as_str(), Some("Completed" | "Failed")) {
                return v;
            }
        }
        assert!(Instant::now() < deadline, "job {id} not final in time: {s} {b}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stack(apis: usize, managers: usize, env: &[(&str, &str)]) -> (tempfile::TempDir, Stack) {
    let dir = tempfile::tempdir().unwrap();
    let s = Stack::up_with(dir.path(), apis, managers, env).unwrap();
    (dir, s)
}

const SEED: &str =
    "#include <bits/stdc++.h>\nusing namespace std;\n\nint main() {\n    cout << \"Hello World\";\n    return 0;\n}";

#[test]
fn the_seed_flow_through_jetstream_postgres_and_s3() {
    if !root() {
        return;
    }
    let (_d, s) = stack(1, 1, &[]);
    let api = &s.apis[0].1;
    let (status, rec) = submit(api, &json!({"code": SEED, "executionEngine": "c++"}));
    assert_eq!(status, 200, "{rec}");
    assert_eq!(rec["status"], "Pending");
    let id = rec["id"].as_str().unwrap();
    // Read your writes: found at once, whether PostgreSQL has it yet or not.
    assert_eq!(get(api, &format!("/job/{id}")).0, 200);
    let done = wait_final(api, id, Duration::from_secs(120));
    assert_eq!(done["status"], "Completed", "{done}");
    assert_eq!(done["result"]["verdict"], "Accepted");
    assert_eq!(get(api, &format!("/job/{id}/output")), (200, "Hello World".to_string()));
    assert_eq!(get(api, &format!("/job/{id}/code")).1, SEED.replace("\\n", "\n"));
    // The manager reports its stages on its own /metrics.
    let (st, metrics) = get(&s.manager_urls[0], "/metrics");
    assert_eq!(st, 200);
    for stage in ["queue_wait", "execution", "storage", "end_to_end"] {
        assert!(metrics.contains(&format!("stage=\"{stage}\"")), "{stage}:\n{metrics}");
    }
}

#[test]
fn two_apis_and_two_managers_share_one_stream_and_run_each_job_once() {
    if !root() {
        return;
    }
    let (_d, s) = stack(2, 2, &[("WOLF_WORKERS", "1")]);
    let mut jobs = Vec::new();
    for i in 0..16 {
        let api = &s.apis[i % 2].1;
        let (st, rec) = submit(
            api,
            &json!({"code": format!("print({i} * 3)"), "executionEngine": "python"}),
        );
        assert_eq!(st, 200, "{rec}");
        jobs.push((rec["id"].as_str().unwrap().to_string(), i));
    }
    for (id, i) in &jobs {
        // Either API serves any job: they share PostgreSQL and S3.
        let api = &s.apis[(i + 1) % 2].1;
        let done = wait_final(api, id, Duration::from_secs(120));
        assert_eq!(done["result"]["verdict"], "Accepted", "{done}");
        assert_eq!(done["retryCount"], 0, "no fault, so each job ran once: {done}");
        assert_eq!(get(api, &format!("/job/{id}/output")).1, format!("{}\n", i * 3));
    }
}

fn submit_keyed(api: &str, key: &str, body: &Value) -> (u16, Value) {
    submit_with(api, body, &[("Idempotency-Key", key)])
}

#[test]
fn an_idempotency_key_is_one_job_across_apis() {
    if !root() {
        return;
    }
    let (_d, s) = stack(2, 1, &[("WOLF_WORKERS", "1")]);
    let body = json!({"code": "print('once')", "executionEngine": "python"});
    let (st, first) = submit_keyed(&s.apis[0].1, "order-42", &body);
    assert_eq!(st, 200, "{first}");
    let id = first["id"].as_str().unwrap();
    let (st, again) = submit_keyed(&s.apis[1].1, "order-42", &body);
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["id"], id, "the other API answers the same job");
    let other = json!({"code": "print('twice')", "executionEngine": "python"});
    let (st, conflict) = submit_keyed(&s.apis[1].1, "order-42", &other);
    assert_eq!(st, 409, "another body under the same key: {conflict}");
    let done = wait_final(&s.apis[0].1, id, Duration::from_secs(120));
    assert_eq!(done["retryCount"], 0, "{done}");
    assert_eq!(get(&s.apis[0].1, &format!("/job/{id}/output")).1, "once\n");
    // After the job ran, a retry still answers it and does not run it again.
    let (st, late) = submit_keyed(&s.apis[0].1, "order-42", &body);
    assert_eq!((st, late["id"].as_str()), (200, Some(id)));
    std::thread::sleep(Duration::from_millis(500));
    let (_, rec) = get(&s.apis[1].1, &format!("/job/{id}"));
    let rec: Value = serde_json::from_str(&rec).unwrap();
    assert_eq!(rec["status"], "Completed");
    assert_eq!(rec["retryCount"], 0, "{rec}");
}

#[test]
fn the_pending_bound_refuses_then_admission_resumes_after_the_drain() {
    if !root() {
        return;
    }
    let (_d, mut s) = stack(1, 0, &[("WOLF_MAX_PENDING", "5")]);
    let api = s.apis[0].1.clone();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..8 {
        match submit(
            &api,
            &json!({"code": format!("print({i})"), "executionEngine": "python"}),
        ) {
            (200, rec) => accepted.push(rec["id"].as_str().unwrap().to_string()),
            (503, err) => {
                assert_eq!(err["error"]["code"], "unavailable", "{err}");
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        (accepted.len(), refused),
        (5, 3),
        "the stream holds at most 5 pending jobs"
    );
    s.start_manager(0).unwrap();
    for id in &accepted {
        assert_eq!(wait_final(&api, id, Duration::from_secs(120))["status"], "Completed");
    }
    let (st, _) = submit(&api, &json!({"code": "print('again')", "executionEngine": "python"}));
    assert_eq!(st, 200, "admission resumes once the queue drained");
}

/// Kill the sandbox running a program whose command line contains `marker`, whenever it appears.
fn kill_workers_running(marker: String, until: Instant) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut kills = 0;
        while Instant::now() < until {
            for init in wolf_testkit::procs::workers_running(&marker) {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &init.to_string()])
                    .status();
                kills += 1;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        kills
    })
}

#[test]
fn a_poison_job_ends_failed_and_in_the_dead_letter_stream() {
    if !root() {
        return;
    }
    let (_d, s) = stack(1, 1, &[("WOLF_WORKERS", "1"), ("WOLF_MAX_ATTEMPTS", "3")]);
    let api = &s.apis[0].1;
    let marker = format!("poison{}", std::process::id());
    let killer = kill_workers_running(marker.clone(), Instant::now() + Duration::from_secs(60));
    let (_, rec) = submit(
        api,
        &json!({"code": "import time\ntime.sleep(30)", "executionEngine": "python", "args": [marker]}),
    );
    let id = rec["id"].as_str().unwrap();
    let done = wait_final(api, id, Duration::from_secs(60));
    assert_eq!(done["status"], "Failed", "{done}");
    assert!(done["failureReason"].as_str().unwrap().contains("3 attempts"), "{done}");
    assert_eq!(done["retryCount"], 2, "{done}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dead = rt.block_on(async {
        let q = wolf_store::JetStreamQueue::connect(&s.nats.url(), Default::default())
            .await
            .unwrap();
        q.dead_letter_count().await.unwrap()
    });
    assert_eq!(dead, 1, "the job is kept in WOLF_DLQ");
    // Inspectable through the API, as in the embedded mode.
    let (st, body) = get(api, "/dead-letters");
    assert_eq!(st, 200, "{body}");
    let letters: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(letters[0]["jobId"], id, "{letters}");
    assert!(
        letters[0]["reason"].as_str().unwrap().contains("3 attempts"),
        "{letters}"
    );
    drop(killer);
    // The pool healed: a normal job still runs.
    let (_, ok) = submit(api, &json!({"code": "print('fine')", "executionEngine": "python"}));
    assert_eq!(
        wait_final(api, ok["id"].as_str().unwrap(), Duration::from_secs(60))["result"]["verdict"],
        "Accepted"
    );
}

#[test]
fn a_manager_killed_mid_job_is_redelivered_to_another() {
    if !root() {
        return;
    }
    let (_d, mut s) = stack(1, 1, &[("WOLF_WORKERS", "1"), ("WOLF_LEASE_SECS", "2")]);
    let api = s.apis[0].1.clone();
    let marker = format!("longjob{}", std::process::id());
    let (_, rec) = submit(
        &api,
        &json!({"code": "import time, sys\ntime.sleep(1)\nprint('done', sys.argv[1][:7])", "executionEngine": "python", "args": [marker.clone()]}),
    );
    let id = rec["id"].as_str().unwrap().to_string();
    // Wait until the job runs, then kill -9 the manager running it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).unwrap_or_default()).contains(&marker)
        });
        if running {
            break;
        }
        assert!(Instant::now() < deadline, "the job never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut m = s.managers.remove(0);
    let _ = m.kill();
    let _ = m.wait();
    s.start_manager(1).unwrap();
    let done = wait_final(&api, &id, Duration::from_secs(120));
    assert_eq!(done["status"], "Completed", "{done}");
    assert!(done["retryCount"].as_u64().unwrap() >= 1, "redelivered: {done}");
    assert_eq!(get(&api, &format!("/job/{id}/output")).1, "done longjob\n");
}

fn submit_batch(api: &str, n: usize, tag: &str) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let out = format!("{tag}-{i}");
            let (st, rec) = submit(
                api,
                &json!({"code": format!("print('{out}')"), "executionEngine": "python"}),
            );
            assert_eq!(st, 200, "accepted while a dependency is down: {rec}");
            (rec["id"].as_str().unwrap().to_string(), out)
        })
        .collect()
}

fn all_complete(api: &str, jobs: &[(String, String)]) {
    for (id, out) in jobs {
        let done = wait_final(api, id, Duration::from_secs(120));
        assert_eq!(done["status"], "Completed", "{done}");
        assert_eq!(done["result"]["verdict"], "Accepted", "{done}");
        assert_eq!(get(api, &format!("/job/{id}/output")).1, format!("{out}\n"), "job {id}");
    }
}

#[test]
fn a_postgres_outage_loses_nothing_and_metadata_catches_up() {
    if !root() {
        return;
    }
    let (_d, mut s) = stack(1, 1, &[("WOLF_WORKERS", "1")]);
    let api = s.apis[0].1.clone();
    let before = submit_batch(&api, 3, "before");
    s.postgres.kill9();
    let during = submit_batch(&api, 5, "during");
    for (id, _) in &during {
        assert_eq!(
            get(&api, &format!("/job/{id}")).0,
            200,
            "read your writes while PostgreSQL is down"
        );
    }
    std::thread::sleep(Duration::from_secs(10));
    s.postgres.restart().unwrap();
    all_complete(&api, &before);
    all_complete(&api, &during);
}

#[test]
fn an_s3_outage_holds_acks_until_everything_is_stored() {
    if !root() {
        return;
    }
    let (_d, mut s) = stack(1, 1, &[("WOLF_WORKERS", "1"), ("WOLF_LEASE_SECS", "3")]);
    let api = s.apis[0].1.clone();
    s.s3.kill9();
    let during = submit_batch(&api, 4, "s3down");
    std::thread::sleep(Duration::from_secs(10));
    s.s3.restart().unwrap();
    all_complete(&api, &during);
    // The API's background writer retries with backoff (at most 2 s apart): the code objects
    // arrive soon after the store is back.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (id, _) in &during {
        while get(&api, &format!("/job/{id}/code")).0 != 200 {
            assert!(
                Instant::now() < deadline,
                "the code object of {id} was never stored after the outage"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

// With Debian's nats-server 2.9.10 a job delivered just before the kill -9 can stay below the
// consumer's ack floor after the restart, never redelivered (TESTBED.md); the managers' janitor
// queues such orphans again within two passes (system/store/tests/jetstream.rs makes one on
// purpose). Either way every accepted job must complete, once.
#[test]
fn nats_kill_9_and_restart_loses_no_accepted_job_and_gives_none_two_results() {
    if !root() {
        return;
    }
    let (_d, mut s) = stack(1, 1, &[("WOLF_WORKERS", "2")]);
    let api = s.apis[0].1.clone();
    let jobs = submit_batch(&api, 10, "natskill");
    s.nats.kill9();
    s.nats.restart().unwrap();
    all_complete(&api, &jobs);
    // One final result each: the record is final and its output hash matches its output.
    for (id, out) in &jobs {
        let (_, body) = get(&api, &format!("/job/{id}"));
        let rec: Value = serde_json::from_str(&body).unwrap();
        let (_, got) = get(&api, &format!("/job/{id}/output"));
        assert_eq!(got, format!("{out}\n"));
        assert!(rec["outputHash"].is_string());
    }
}

#[test]
fn one_job_is_one_trace_across_the_api_the_manager_the_worker_and_storage() {
    if !root() {
        return;
    }
    let otlp = wolf_testkit::otlp::OtlpReceiver::start().unwrap();
    let (_d, s) = stack(
        1,
        1,
        &[
            ("WOLF_WORKERS", "1"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let api = &s.apis[0].1;
    let (st, rec) = submit(api, &json!({"code": "print('traced')", "executionEngine": "python"}));
    assert_eq!(st, 200, "{rec}");
    let id = rec["id"].as_str().unwrap();
    let trace = rec["traceId"].as_str().unwrap().to_string();
    let done = wait_final(api, id, Duration::from_secs(60));
    assert_eq!(done["traceId"], trace.as_str(), "the record keeps its trace id");
    let (_, tl) = get(api, &format!("/job/{id}/timeline"));
    assert!(tl.contains(&trace), "{tl}");
    let want = [
        ("wolf-api", "api.submit"),
        ("wolf-api", "storage.persist_admission"),
        ("wolf-api", "storage.code_put"),
        ("wolf-manager", "manager.job"),
        ("wolf-manager", "worker.run"),
        ("wolf-manager", "worker.execution"),
        ("wolf-manager", "storage.output_put"),
        ("wolf-manager", "storage.result_write"),
        ("wolf-manager", "queue.ack"),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans: Vec<_> = otlp.spans().into_iter().filter(|s| s.trace_id == trace).collect();
        if want
            .iter()
            .all(|(svc, name)| spans.iter().any(|s| s.service == *svc && s.name == *name))
        {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "missing spans of trace {trace}; got {:?}",
            spans.iter().map(|s| (&s.service, &s.name)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // One tree: the API's request span is the root, the manager's job span its child (through
    // the NATS header), the worker's and storage spans below.
    let by_name = |n: &str| spans.iter().find(|s| s.name == n).unwrap();
    let root = by_name("api.submit");
    assert!(
        root.parent_span_id.is_empty() || root.parent_span_id == "0000000000000000",
        "{root:?}"
    );
    assert_eq!(by_name("manager.job").parent_span_id, root.span_id);
    assert_eq!(by_name("worker.run").parent_span_id, by_name("manager.job").span_id);
    assert_eq!(
        by_name("worker.execution").parent_span_id,
        by_name("worker.run").span_id
    );
    assert_eq!(
        by_name("storage.output_put").parent_span_id,
        by_name("manager.job").span_id
    );
    for s in &spans {
        if s.span_id != root.span_id {
            assert!(
                spans.iter().any(|p| p.span_id == s.parent_span_id),
                "{s:?} hangs outside the tree"
            );
        }
    }
}

/// Submit on one API, read at once on the other: the record, the code and the timeline are
/// there every time, also while PostgreSQL is down (the other API reads the job from the
/// stream by its subject).
#[test]
fn any_api_answers_at_once_for_a_job_another_api_accepted() {
    if !root() {
        return;
    }
    // 200 jobs as fast as they go to one worker, half of them while no result can be stored:
    // the backlog reaches ~30 s, where admission by deadline rightly refuses (seen once: 157
    // jobs ahead at ~157 ms). This test is about reading a job on the other API, so no deadline.
    let (_d, mut s) = stack(2, 1, &[("WOLF_WORKERS", "1"), ("WOLF_MAX_QUEUE_WAIT", "off")]);
    let (a, b) = (s.apis[0].1.clone(), s.apis[1].1.clone());
    let check = |phase: &str| {
        let mut ids = Vec::new();
        for i in 0..100 {
            let code = format!("print({i})");
            let (st, rec) = submit(&a, &json!({"code": code, "executionEngine": "python"}));
            assert_eq!(st, 200, "{phase}: {rec}");
            let id = rec["id"].as_str().unwrap().to_string();
            let (st, body) = get(&b, &format!("/job/{id}"));
            assert_eq!(st, 200, "{phase}: job {i} not found on the other API: {body}");
            let other: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(other["id"], rec["id"]);
            assert_eq!(other["codeHash"], rec["codeHash"]);
            assert_eq!(
                get(&b, &format!("/job/{id}/code")),
                (200, code),
                "{phase}: code of job {i}"
            );
            assert_eq!(
                get(&b, &format!("/job/{id}/timeline")).0,
                200,
                "{phase}: timeline of job {i}"
            );
            ids.push((id, i));
        }
        ids
    };
    let before = check("PostgreSQL up");
    s.postgres.kill9();
    let during = check("PostgreSQL down");
    s.postgres.restart().unwrap();
    for (id, i) in before.iter().chain(&during) {
        let done = wait_final(&b, id, Duration::from_secs(300));
        assert_eq!(done["result"]["verdict"], "Accepted", "{done}");
        assert_eq!(get(&b, &format!("/job/{id}/output")).1, format!("{i}\n"));
    }
}
