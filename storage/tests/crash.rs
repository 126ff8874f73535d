//! Crash safety: a child process commits blocks and reports each acknowledged height;
//! the parent kills it with SIGKILL at a random moment, reopens the store, and
//! checks that every acknowledged block is intact. MOSAIC_CRASH_ROUNDS sets the
//! number of rounds (default 20).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestSchema, block, body_for, tx_id};
use mosaic_storage::{Store, StoreConfig};

const CHILD_ENV: &str = "MOSAIC_CRASH_CHILD_STORE";

fn config() -> StoreConfig {
    StoreConfig {
        validator_index: 1,
        body_window_blocks: 8,
        // A transaction index run every few blocks, so kills land in those too.
        index_run_entries: 3,
        ..StoreConfig::default()
    }
}

/// In the child: commit blocks after the current tip forever, printing each one.
#[test]
fn crash_child_writer() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return; // only does something when run as the child
    };
    let store = Store::<TestSchema>::open(std::path::Path::new(&path), config()).unwrap();
    let start = store.tip().unwrap().unwrap_or(0) + 1;
    // Bounded, in case the parent never kills us.
    for h in start..start + 100_000 {
        store.commit_block(block(h, 1)).unwrap();
        println!("ack {h}");
    }
}

#[test]
fn killed_mid_write_loses_nothing_acknowledged() {
    let rounds: u64 = std::env::var("MOSAIC_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let exe = std::env::current_exe().unwrap();
    let mut acked_max = 0u64;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args([
                "crash_child_writer",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // Kill after a pseudo-random number of acknowledgements (1..=24).
        let kill_after = 1 + (round * 7 + 3) % 24;
        let mut seen = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(h) = line
                .strip_prefix("ack ")
                .and_then(|h| h.parse::<u64>().ok())
            {
                acked_max = acked_max.max(h);
                seen += 1;
                if seen >= kill_after || Instant::now() > deadline {
                    break;
                }
            }
        }
        // SIGKILL while it is most likely inside the next commit.
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(seen > 0, "round {round}: child acknowledged nothing");

        let store = Store::<TestSchema>::open(&path, config()).unwrap();
        let tip = store.tip().unwrap().unwrap();
        assert!(
            tip >= acked_max,
            "round {round}: tip {tip} < acknowledged {acked_max}"
        );
        for h in 1..=acked_max {
            assert_eq!(
                store.header(h).unwrap(),
                Some(block(h, 1).header),
                "header {h}"
            );
            assert!(store.certificate(h).unwrap().is_some(), "certificate {h}");
            assert!(
                store.tx_heights(&tx_id(h)).unwrap().contains(&h),
                "index entry {h}"
            );
            assert_eq!(
                store.own_fragment(h).unwrap(),
                Some(block(h, 1).own_fragment),
                "fragment {h}"
            );
            if h + config().body_window_blocks > tip {
                assert_eq!(store.body(h).unwrap(), Some(body_for(h)), "body {h}");
            }
        }
    }
}
