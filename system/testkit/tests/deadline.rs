//! Admission by deadline, both modes: once jobs of about a second have run (before any job
//! has ended there is no estimate), a flood of them at two workers with `max_queue_wait = 3s`
//! is accepted up to about three seconds of backlog and refused past it (503,
//! `queue_wait_too_long`, a `Retry-After`), through Wolf's door and the Judge0 door; every
//! accepted job still ends. Embedded, with keys: while one key's flood is refused, another
//! key's job is accepted (fair queuing puts it near the head); and a restarted `wolf serve`
//! knows the run times from its records, refusing a flood before any new job has ended.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wolf_testkit::Stack;
use wolf_testkit::client::{call, request, wolf};

fn root() -> bool {
    wolf_testkit::running_as_root("sandboxes and the testkit's PostgreSQL need root")
}

const SLEEPY: &str = "import time; time.sleep(1)";

/// A POST of `body` to `url` with `key`: status, Retry-After, body.
fn submit(url: &str, key: &str, body: &Value) -> (u16, Option<u64>, Value) {
    let a = request("POST", url, key, body);
    (a.status, a.retry_after, a.body)
}

/// The flood at `api` as `key`: 30 one-second jobs at once, after `warm` of them one by one
/// (the run time learned). Returns the accepted ids.
fn flood(api: &str, key: &str, warm: usize) -> Vec<String> {
    for _ in 0..warm {
        let (status, _, rec) = submit(
            &format!("{api}/job?wait=true"),
            key,
            &json!({"code": SLEEPY, "executionEngine": "python"}),
        );
        assert_eq!((status, rec["status"].as_str()), (200, Some("Completed")), "{rec}");
    }
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..30 {
        let (status, after, body) = submit(
            &format!("{api}/job"),
            key,
            &json!({"code": SLEEPY, "executionEngine": "python", "tags": [format!("flood-{i}")]}),
        );
        match status {
            200 => accepted.push(body["id"].as_str().unwrap().to_string()),
            503 => {
                refused += 1;
                assert_eq!(body["error"]["code"], "queue_wait_too_long", "{body}");
                let msg = body["error"]["message"].as_str().unwrap_or("");
                assert!(msg.contains("max_queue_wait"), "{msg}");
                assert!(after.is_some_and(|s| s >= 1), "Retry-After on a refusal: {after:?}");
            }
            other => panic!("{other}: {body}"),
        }
    }
    // About three seconds at two workers is about six jobs waiting and two running.
    assert!(
        (2..=14).contains(&accepted.len()),
        "accepted {} of 30 (refused {refused})",
        accepted.len()
    );
    assert_eq!(accepted.len() + refused, 30);
    // The Judge0 door refuses the same way, in its own shape. The flood sits at the deadline's
    // edge, and a worker may finish a job between the last refusal and this submission (seen
    // once on a loaded machine: 201): a few more submissions push the backlog back past it.
    let mut tries = 0;
    let (status, after, body) = loop {
        let (status, after, body) = submit(
            &format!("{api}/judge0/submissions"),
            key,
            &json!({"source_code": SLEEPY, "language_id": 71}),
        );
        tries += 1;
        if status != 201 || tries == 4 {
            break (status, after, body);
        }
    };
    assert_eq!(status, 503, "after {tries} submissions through the Judge0 door: {body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("max_queue_wait"),
        "{body}"
    );
    assert!(after.is_some());
    accepted
}

/// Every accepted job ends (Completed).
fn all_end(api: &str, key: &str, ids: &[String]) {
    for id in ids {
        let (status, rec) = call(
            "GET",
            &format!("{api}/job/{id}?wait=true&timeout=120"),
            key,
            &Value::Null,
        );
        assert_eq!((status, rec["status"].as_str()), (200, Some("Completed")), "{rec}");
    }
}

#[test]
fn a_flood_past_the_deadline_is_refused_and_another_key_still_gets_in_embedded() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let env = [("WOLF_DATA_DIR", dir.path().join("data").display().to_string())];
    let mut s = wolf_testkit::serve::serve(
        dir.path(),
        "127.0.0.1:0",
        &[("WOLF_AUTH", "on"), ("WOLF_MAX_QUEUE_WAIT", "3s")],
    )
    .unwrap();
    let alice = wolf(&["keys", "create", "--name", "alice"], &env);
    let bob = wolf(&["keys", "create", "--name", "bob"], &env);
    let accepted = flood(&s.url, &alice, 2);
    // Alice is refused now; bob's job goes near the head of the queue, so it is accepted.
    let (status, _, body) = submit(
        &format!("{}/job", s.url),
        &alice,
        &json!({"code": SLEEPY, "executionEngine": "python"}),
    );
    assert_eq!(status, 503, "{body}");
    let started = Instant::now();
    let (status, _, body) = submit(
        &format!("{}/job", s.url),
        &bob,
        &json!({"code": "print('bob')", "executionEngine": "python"}),
    );
    assert_eq!(status, 200, "another key is not refused for alice's backlog: {body}");
    all_end(&s.url, &bob, &[body["id"].as_str().unwrap().to_string()]);
    eprintln!("bob's job ended after {:?} behind alice's flood", started.elapsed());
    all_end(&s.url, &alice, &accepted);
    let _ = s.child.kill();
    let _ = s.child.wait();
    // Restarted: the run times come from the records, so the flood is refused at once.
    let mut s = wolf_testkit::serve::serve(
        dir.path(),
        "127.0.0.1:0",
        &[("WOLF_AUTH", "on"), ("WOLF_MAX_QUEUE_WAIT", "3s")],
    )
    .unwrap();
    let accepted = flood(&s.url, &alice, 0);
    all_end(&s.url, &alice, &accepted);
    let _ = s.child.kill();
    let _ = s.child.wait();
}

#[test]
fn a_flood_past_the_deadline_is_refused_distributed() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Stack::up_with(
        dir.path(),
        1,
        1,
        &[("WOLF_WORKERS", "2"), ("WOLF_MAX_QUEUE_WAIT", "3s")],
    )
    .unwrap();
    let api = &s.apis[0].1;
    // The API counts the manager's workers from its advertisement (read every 2 s).
    std::thread::sleep(Duration::from_secs(3));
    let accepted = flood(api, "", 2);
    all_end(api, "", &accepted);
}
