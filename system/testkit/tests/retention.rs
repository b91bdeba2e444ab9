//! Deleting jobs, both modes: `DELETE /job/{id}` by the owner removes the record and every
//! object of the job at once (another key gets 404, a job that has not ended 409), the Judge0
//! door's `DELETE /submissions/{token}` answers with the submission in base64; and with a short
//! `retention`, an ended job disappears by itself, objects included, while a young one stays.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wolf_testkit::Stack;
use wolf_testkit::client::{call, wolf};

/// Short enough to see a job expire in a test, long enough for the owner's deletes to come
/// first on a loaded machine.
const RETENTION: &str = "20s";

fn root() -> bool {
    wolf_testkit::running_as_root("sandboxes and the testkit's PostgreSQL need root")
}

/// Files under `dir` (none when it is gone).
fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() { files_under(&p) } else { 1 }
        })
        .sum()
}

/// A finished python job of `key`'s, submitted at `api`; its id.
fn finished(api: &str, key: &str, code: &str) -> String {
    let (status, rec) = call(
        "POST",
        &format!("{api}/job?wait=true"),
        key,
        &json!({"code": code, "executionEngine": "python"}),
    );
    assert_eq!(status, 200, "{rec}");
    assert_eq!(rec["status"], "Completed", "{rec}");
    rec["id"].as_str().unwrap().to_string()
}

/// What holds in both modes. Jobs go in at `a`, are deleted at `b`; `objects(id)` is where the
/// job's objects are kept on disk.
fn deleting(a: &str, b: &str, env: &[(&str, String)], objects: &dyn Fn(&str) -> PathBuf) {
    let alice = wolf(&["keys", "create", "--name", "alice"], env);
    let bob = wolf(&["keys", "create", "--name", "bob"], env);
    // Submitted first: retention takes it while the rest runs.
    let old = finished(a, &alice, "print('old')");
    let started = Instant::now();

    let id = finished(a, &alice, "print('hi')");
    assert!(files_under(&objects(&id)) >= 2, "code and output are stored");
    assert_eq!(call("DELETE", &format!("{b}/job/{id}"), "", &Value::Null).0, 401);
    let (status, body) = call("DELETE", &format!("{b}/job/{id}"), &bob, &Value::Null);
    assert_eq!(status, 404, "another key's job is not found: {body}");
    assert_eq!(
        call("GET", &format!("{a}/job/{id}"), &alice, &Value::Null).0,
        200,
        "bob deleted nothing"
    );
    let (status, body) = call("DELETE", &format!("{b}/job/{id}"), &alice, &Value::Null);
    assert_eq!(status, 204, "{body}");
    for route in ["", "/output", "/code", "/timeline"] {
        let (status, body) = call("GET", &format!("{a}/job/{id}{route}"), &alice, &Value::Null);
        assert_eq!(status, 404, "{route} after the delete: {body}");
    }
    assert_eq!(files_under(&objects(&id)), 0, "every object of the job is gone");
    assert_eq!(
        call("DELETE", &format!("{b}/job/{id}"), &alice, &Value::Null).0,
        404,
        "deleted once"
    );
    let (status, page) = call("GET", &format!("{a}/job"), &alice, &Value::Null);
    assert_eq!(status, 200);
    assert!(!page.to_string().contains(&id), "the listing no longer has it: {page}");

    // A job that has not ended is kept.
    let (status, rec) = call(
        "POST",
        &format!("{a}/job"),
        &alice,
        &json!({"code": "import time; time.sleep(3)", "executionEngine": "python"}),
    );
    assert_eq!(status, 200, "{rec}");
    let slow = rec["id"].as_str().unwrap();
    let (status, body) = call("DELETE", &format!("{b}/job/{slow}"), &alice, &Value::Null);
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap_or("").contains("ended"),
        "{body}"
    );

    // The Judge0 door: the submission as it was, in base64, then gone.
    let (status, sub) = call(
        "POST",
        &format!("{a}/judge0/submissions?wait=true"),
        &alice,
        &json!({"source_code": "print(42)", "language_id": 71}),
    );
    assert!(matches!(status, 200 | 201), "{status} {sub}");
    let token = sub["token"].as_str().unwrap();
    let (status, gone) = call("DELETE", &format!("{b}/judge0/submissions/{token}"), &bob, &Value::Null);
    assert_eq!(status, 404, "{gone}");
    let (status, gone) = call(
        "DELETE",
        &format!("{b}/judge0/submissions/{token}"),
        &alice,
        &Value::Null,
    );
    assert_eq!(status, 200, "{gone}");
    assert_eq!(gone["stdout"], "NDIK\n", "base64 of 42\\n, as Ruby writes it: {gone}");
    assert_eq!(
        call("GET", &format!("{a}/judge0/submissions/{token}"), &alice, &Value::Null).0,
        404
    );
    let (_, info) = call("GET", &format!("{a}/judge0/config_info"), &alice, &Value::Null);
    assert_eq!(info["enable_submission_delete"], true, "{info}");

    // Retention: the first job expires with its objects; a young one stays.
    assert!(files_under(&objects(&old)) >= 1);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (status, _) = call("GET", &format!("{a}/job/{old}"), &alice, &Value::Null);
        if status == 404 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            Instant::now() < deadline,
            "a job past the retention of {RETENTION} was not deleted"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        started.elapsed() >= Duration::from_secs(15),
        "expired before its time: after {:?}",
        started.elapsed()
    );
    assert_eq!(files_under(&objects(&old)), 0, "its objects went with it");
    // A pass runs every quarter of the retention: after more than one, a job younger than it
    // is still there.
    let young = finished(a, &alice, "print('young')");
    std::thread::sleep(Duration::from_secs(7));
    let (status, rec) = call("GET", &format!("{a}/job/{young}"), &alice, &Value::Null);
    assert_eq!((status, rec["status"].as_str()), (200, Some("Completed")), "{rec}");
    assert!(files_under(&objects(&young)) >= 1);
}

#[test]
fn jobs_are_deleted_by_their_owner_and_by_retention_embedded() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [("WOLF_DATA_DIR", data.display().to_string())];
    let mut s = wolf_testkit::serve::serve(
        dir.path(),
        "127.0.0.1:0",
        &[("WOLF_AUTH", "on"), ("WOLF_RETENTION", RETENTION)],
    )
    .unwrap();
    deleting(&s.url, &s.url, &env, &|id| data.join("jobs").join(id));
    let _ = s.child.kill();
    let _ = s.child.wait();
}

#[test]
fn jobs_are_deleted_by_their_owner_and_by_retention_distributed_across_two_apis() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Stack::up_with(
        dir.path(),
        2,
        1,
        &[
            ("WOLF_WORKERS", "2"),
            ("WOLF_AUTH", "on"),
            ("WOLF_RETENTION", RETENTION),
        ],
    )
    .unwrap();
    let env = [("WOLF_DATABASE_URL", s.postgres.url())];
    deleting(&s.apis[0].1, &s.apis[1].1, &env, &|id| {
        s.s3.object_path(&format!("jobs/{id}"))
    });
}
