//! PBFT consensus for Mosaic as a pure state machine (no I/O, no clock, no tokio),
//! with a deterministic simulator. Being built: see the project's issues.
