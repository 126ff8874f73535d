//! End-to-end tests of the `mosaic` binary: real validator processes on 127.0.0.1,
//! driven through the CLI exactly as operators, clients and auditors use it (see
//! `tests/e2e.rs`), and, when run as root, validators in their own network
//! namespaces under partitions, heals and flapping links (`tests/partition.rs`).
//! `run.sh` in this folder starts a local testnet for operators.
