//! The JetStream queue against a real nats-server from the testkit.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use chrono::Utc;
use wolf_core::{JobRecord, Submission};
use wolf_store::jetstream::{CONSUMER, STREAM};
use wolf_store::{JetStreamConfig, JetStreamQueue, Queue};
use wolf_testkit::Nats;

fn sub() -> Submission {
    serde_json::from_value(serde_json::json!({"code": "print(1)", "executionEngine": "python"})).unwrap()
}

async fn admit(q: &JetStreamQueue, id: &str) -> bool {
    let rec = JobRecord::new(id.to_string(), &sub(), Utc::now());
    q.admit(&rec, &sub(), None, 3).await.is_ok()
}

async fn lease_all(q: &JetStreamQueue) -> BTreeSet<String> {
    let mut got = BTreeSet::new();
    while let Some(d) = q.lease(Duration::from_secs(30)).await.unwrap() {
        q.ack(&d.job_id).await.unwrap();
        got.insert(d.job_id);
    }
    got
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

// The state nats-server 2.9 can restore after a kill -9 (TESTBED.md): the consumer's ack floor
// past messages still in the work-queue stream. It is written here exactly as the server
// stores it (obs/<consumer>/o.dat: magic 22, version 2, then uvarints ack floor consumer/stream
// sequence, delivered consumer/stream sequence, pending count, redelivered count), with the
// floor at stream sequence 2 while messages 1 and 2 are still stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_janitor_requeues_messages_orphaned_below_the_ack_floor_by_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = Nats::start(dir.path()).unwrap();
    let cfg = JetStreamConfig {
        max_pending: 3,
        ..Default::default()
    };
    let q = JetStreamQueue::connect(&nats.url(), cfg).await.unwrap();
    for id in ["job-0", "job-1", "job-2"] {
        assert!(admit(&q, id).await);
    }
    assert!(!admit(&q, "job-late").await, "the bound holds: three queued");
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    js.get_stream(STREAM)
        .await
        .unwrap()
        .create_consumer(consumer::pull::Config {
            durable_name: Some(CONSUMER.into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    nats.kill9();
    let odat = dir
        .path()
        .join(format!("jetstream/jetstream/$G/streams/{STREAM}/obs/{CONSUMER}/o.dat"));
    std::fs::write(&odat, [22u8, 2, 2, 2, 2, 2, 0, 0]).unwrap();
    nats.restart().unwrap();

    assert_eq!(
        lease_all(&q).await,
        set(&["job-2"]),
        "only the message above the floor is delivered"
    );
    assert_eq!(q.depth().await.unwrap(), 2, "the orphans still count against the bound");
    assert!(admit(&q, "job-3").await, "one slot is free");
    assert!(!admit(&q, "job-4").await, "and only one: the orphans hold the rest");
    assert_eq!(lease_all(&q).await, set(&["job-3"]));

    assert_eq!(q.janitor().await.unwrap(), 0, "a first sighting is only a suspect");
    assert_eq!(
        q.janitor().await.unwrap(),
        2,
        "seen twice: both orphans are queued again"
    );
    assert_eq!(q.janitor().await.unwrap(), 0, "nothing is left below the floor");
    assert_eq!(lease_all(&q).await, set(&["job-0", "job-1"]));
    assert_eq!(q.depth().await.unwrap(), 0, "acked requeued messages leave the stream");
    for id in ["job-5", "job-6", "job-7"] {
        assert!(admit(&q, id).await, "the whole bound is free again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_admits_once_and_a_different_body_conflicts() {
    use wolf_store::{Admission, Idempotency, StoreError};
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path()).unwrap();
    let q = JetStreamQueue::connect(&nats.url(), JetStreamConfig::default())
        .await
        .unwrap();
    let idem = |hash: &str| Idempotency {
        key: "order 42 / ünïcode".into(),
        body_hash: hash.into(),
    };
    let first = JobRecord::new("job-a".into(), &sub(), Utc::now());
    assert!(matches!(
        q.admit(&first, &sub(), Some(&idem("h1")), 10).await.unwrap(),
        Admission::New
    ));
    let retry = JobRecord::new("job-b".into(), &sub(), Utc::now());
    match q.admit(&retry, &sub(), Some(&idem("h1")), 10).await.unwrap() {
        Admission::Existing(rec) => assert_eq!(rec.id, "job-a", "the retry answers the first job"),
        Admission::New => panic!("a retry with the same key and body made a second job"),
    }
    assert!(matches!(
        q.admit(&retry, &sub(), Some(&idem("h2")), 10).await,
        Err(StoreError::IdempotencyConflict { .. })
    ));
    assert_eq!(lease_all(&q).await, set(&["job-a"]), "one job queued, once");
    // Past the duplicate window a retry publishes the job again; the manager acks it without
    // running because its record is final. Here: the retry after the job ran is that message.
    match q.admit(&retry, &sub(), Some(&idem("h1")), 10).await.unwrap() {
        Admission::Existing(rec) => assert_eq!(rec.id, "job-a"),
        Admission::New => panic!("second job"),
    }
}
