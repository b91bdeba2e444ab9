//! The testkit's servers start, answer, die on SIGKILL and come back on their data.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::Command;

use wolf_testkit::{Nats, Postgres};

fn root() -> bool {
    wolf_testkit::running_as_root("PostgreSQL must be started as the postgres user, which needs root here")
}

fn nats_info(url: &str) -> String {
    let addr = url.trim_start_matches("nats://");
    let s = TcpStream::connect(addr).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line
}

#[test]
fn nats_runs_jetstream_and_comes_back_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = Nats::start(dir.path()).unwrap();
    let info = nats_info(&n.url());
    assert!(
        info.starts_with("INFO ") && info.contains("\"jetstream\":true"),
        "{info}"
    );
    let pid = n.pid().unwrap();
    n.kill9();
    assert!(
        TcpStream::connect(n.url().trim_start_matches("nats://")).is_err(),
        "killed server still answers"
    );
    n.restart().unwrap();
    assert_ne!(n.pid().unwrap(), pid);
    assert!(nats_info(&n.url()).contains("\"jetstream\":true"));
}

fn psql(pg: &Postgres, sql: &str) -> (bool, String) {
    let out = Command::new("psql").args([&pg.url(), "-tAc", sql]).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

#[test]
fn postgres_keeps_committed_data_across_kill_9() {
    if !root() {
        return;
    }
    let mut pg = Postgres::start().unwrap();
    assert!(psql(&pg, "CREATE TABLE t (x int); INSERT INTO t VALUES (42)").0);
    pg.kill9();
    assert!(!psql(&pg, "SELECT 1").0, "killed server still answers");
    pg.restart().unwrap();
    assert_eq!(psql(&pg, "SELECT x FROM t"), (true, "42".to_string()));
}
