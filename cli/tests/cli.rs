//! The `mosaic` binary's usage contract: help with examples, exit codes, key files.
//! (Building this test also builds the binary that testnet/tests/e2e.rs drives.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::process::Command;

fn mosaic(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mosaic"))
        .args(args)
        .env_remove("MOSAIC_NODE")
        .output()
        .unwrap()
}

#[test]
fn every_leaf_command_has_help_with_an_example() {
    for args in [
        vec!["keys", "new"],
        vec!["keys", "show"],
        vec!["node", "run"],
        vec!["node", "init"],
        vec!["testnet", "init"],
        vec!["testnet", "up"],
        vec!["testnet", "kill"],
        vec!["tx", "transfer"],
        vec!["tx", "status"],
        vec!["account"],
        vec!["block"],
        vec!["audit", "verify"],
        vec!["audit", "export"],
        vec!["audit", "reconstruct"],
    ] {
        let mut with_help = args.clone();
        with_help.push("--help");
        let out = mosaic(&with_help);
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Example"),
            "{args:?} --help has no example:\n{text}"
        );
    }
}

#[test]
fn keys_round_trip_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alice.key");
    let path = path.to_str().unwrap();
    let made = mosaic(&["keys", "new", "--out", path, "--json"]);
    assert!(made.status.success());
    let made: serde_json::Value = serde_json::from_slice(&made.stdout).unwrap();
    let shown = mosaic(&["keys", "show", path]);
    assert_eq!(
        String::from_utf8_lossy(&shown.stdout).trim(),
        made["address"].as_str().unwrap()
    );
    // No silent overwrite.
    let again = mosaic(&["keys", "new", "--out", path]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    // Usage errors.
    assert_eq!(mosaic(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(mosaic(&["block", "minus-one"]).status.code(), Some(2));
    assert_eq!(
        mosaic(&[
            "testnet",
            "init",
            "-n",
            "5",
            "--dir",
            dir.path().join("t").to_str().unwrap()
        ])
        .status
        .code(),
        Some(1)
    );
}
