//! A stand-in test process for the testkit's own hygiene tests (tests/hygiene.rs): it starts
//! the shared stores, a PostgreSQL of its own and a database session, prints the directories it
//! made and `READY`, waits for a line on stdin, then ends the way
//! `SFDEV_TESTKIT_CHILD_MODE` says (`panic`, `abort`, or sleep until SIGKILLed). The tests
//! then check that none of its store processes survived it.

use std::io::Write;
use std::thread;
use std::time::Duration;

use shardfeed_testkit::{shared, PgServer, TestDb};

fn main() {
    let mode = std::env::var("SFDEV_TESTKIT_CHILD_MODE").unwrap_or_default();
    let stores = shared();
    let own_pg = PgServer::start().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(TestDb::new()).unwrap();
    // Keep a backend busy in the shared server, as a test would.
    let _session = runtime.block_on(db.connect()).unwrap();
    let mut out = std::io::stdout().lock();
    for dir in [stores.pg.dir(), stores.redis.dir(), own_pg.dir()] {
        writeln!(out, "DIR {}", dir.display()).unwrap();
    }
    writeln!(out, "READY").unwrap();
    out.flush().unwrap();
    drop(out);

    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    match mode.as_str() {
        "panic" => panic!("the helper panics on purpose"),
        "abort" => std::process::abort(),
        _ => thread::sleep(Duration::from_secs(3600)), // until SIGKILLed
    }
}
