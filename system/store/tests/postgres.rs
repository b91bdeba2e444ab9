//! PostgreSQL metadata against a real server from the testkit (fresh cluster per test).

use chrono::Utc;
use wolf_core::{Attempt, JobRecord, Status, Submission, Timings};
use wolf_store::{Metadata, Page, PgStore, StoreError};
use wolf_testkit::Postgres;

fn root() -> bool {
    wolf_testkit::running_as_root("the testkit starts PostgreSQL as the postgres user, which needs root")
}

fn sub(code: &str) -> Submission {
    serde_json::from_value(serde_json::json!({"code": code, "executionEngine": "python", "tags": ["t"]})).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_round_trip_and_the_final_result_is_written_once() {
    if !root() {
        return;
    }
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap().unwrap();
    let store = PgStore::connect(&pg.url()).unwrap();
    assert_eq!(store.migrate().await.unwrap(), 5);
    assert_eq!(store.migrate().await.unwrap(), 5, "migrations are idempotent");
    let mut ids = Vec::new();
    for i in 0..5 {
        let rec = JobRecord::new(format!("0190-{i}"), &sub("print(1)"), Utc::now());
        assert!(store.insert(&rec, &sub("print(1)")).await.unwrap());
        assert!(
            !store.insert(&rec, &sub("print(1)")).await.unwrap(),
            "a second insert of the same id is a no-op"
        );
        ids.push(rec.id);
    }
    let got = store.get("0190-2").await.unwrap().unwrap();
    assert_eq!(got.status, Status::Pending);
    assert_eq!(got.tags, Some(vec!["t".to_string()]));
    assert_eq!(store.submission("0190-2").await.unwrap().unwrap().code, "print(1)");
    let page = store
        .list(Page {
            before: None,
            offset: 0,
            limit: 2,
            owner: None,
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["0190-4", "0190-3"]
    );
    let next = store
        .list(Page {
            before: Some("0190-3"),
            offset: 0,
            limit: 2,
            owner: None,
        })
        .await
        .unwrap();
    assert_eq!(
        next.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["0190-2", "0190-1"]
    );
    let mut mine = JobRecord::new("0190-5".into(), &sub("print(1)"), Utc::now());
    mine.owner = Some("k1".into());
    store.insert(&mine, &sub("print(1)")).await.unwrap();
    let own = store
        .list(Page {
            before: None,
            offset: 0,
            limit: 10,
            owner: Some("k1"),
        })
        .await
        .unwrap();
    assert_eq!(
        own.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["0190-5"],
        "one owner's page"
    );
    wolf_store::keys::check_contract(&store).await;
    wolf_store::quotas::check_contract(&store).await;
    wolf_store::webhooks::check_contract(&store).await;
    use wolf_store::Quotas;
    assert_eq!(
        store.unfinished("k1", &["0190-5".to_string()]).await.unwrap(),
        wolf_store::Unfinished { waiting: 1, running: 0 },
        "k1's pending job counts once, also when it is still fresh"
    );

    let attempt = |n: u32| Attempt {
        attempt: n,
        worker: format!("host/1/w{n}"),
        started_at: Utc::now(),
    };
    store
        .mark_running("0190-2", &attempt(1), Timings::default())
        .await
        .unwrap();
    store
        .mark_running(
            "0190-2",
            &attempt(2),
            Timings {
                queue_wait: 1.5,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let running = store.get("0190-2").await.unwrap().unwrap();
    assert_eq!((running.status, running.retry_count), (Status::Running, 1));
    assert!(running.start_time.is_some());
    assert_eq!(running.timings.unwrap().queue_wait, 1.5);
    assert_eq!(
        running.attempts.iter().map(|a| a.worker.as_str()).collect::<Vec<_>>(),
        ["host/1/w1", "host/1/w2"],
        "each delivery is appended"
    );

    let mut done = running.clone();
    // The final record of the last attempt knows only its own attempt: the stored history stays.
    done.attempts = vec![attempt(2)];
    done.status = Status::Completed;
    done.output_hash = Some("first".into());
    assert!(store.finish(&done).await.unwrap());
    done.output_hash = Some("second".into());
    assert!(
        !store.finish(&done).await.unwrap(),
        "a duplicate execution cannot replace the result"
    );
    store
        .mark_running("0190-2", &attempt(3), Timings::default())
        .await
        .unwrap();
    let final_rec = store.get("0190-2").await.unwrap().unwrap();
    assert_eq!(
        (final_rec.status, final_rec.output_hash.as_deref()),
        (Status::Completed, Some("first"))
    );
    assert_eq!(
        final_rec.attempts.len(),
        2,
        "the history survived the final write: {final_rec:?}"
    );
    // A Running write that never landed: the stored history knows attempt 1, the final write
    // attempt 3; both stay.
    let rec = JobRecord::new("0190-4".into(), &sub("print(1)"), Utc::now());
    store.insert(&rec, &sub("print(1)")).await.unwrap();
    store
        .mark_running("0190-4", &attempt(1), Timings::default())
        .await
        .unwrap();
    let mut done = store.get("0190-4").await.unwrap().unwrap();
    done.status = Status::Completed;
    done.attempts = vec![attempt(3)];
    assert!(store.finish(&done).await.unwrap());
    let got = store.get("0190-4").await.unwrap().unwrap();
    assert_eq!(
        got.attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        [1, 3],
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_unavailable_then_the_store_reconnects_with_its_data() {
    if !root() {
        return;
    }
    let mut pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap().unwrap();
    let store = PgStore::connect(&pg.url()).unwrap();
    store.migrate().await.unwrap();
    let rec = JobRecord::new("0190-a".into(), &sub("x"), Utc::now());
    store.insert(&rec, &sub("x")).await.unwrap();
    pg.kill9();
    assert!(
        matches!(store.get("0190-a").await, Err(StoreError::Unavailable(_))),
        "down means Unavailable, not a panic"
    );
    let pg = tokio::task::spawn_blocking(move || {
        pg.restart().unwrap();
        pg
    })
    .await
    .unwrap();
    // Reads fail fast for a moment after an outage (so a reader asks the queue instead of
    // waiting out connect timeouts), then reach the database again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let back = loop {
        match store.get("0190-a").await {
            Ok(r) => break r,
            Err(StoreError::Unavailable(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await
            }
            Err(e) => panic!("not back after the restart: {e}"),
        }
    };
    assert_eq!(back.unwrap().id, "0190-a", "committed data survived the kill");
    drop(pg);
}
