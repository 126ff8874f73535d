//! The local testnet and its end-to-end tests of real processes on 127.0.0.1.
//! Being built: see the project's issues.
