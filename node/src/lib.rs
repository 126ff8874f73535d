//! The Mosaic validator node: ledger, mempool, libp2p networking and HTTP API.
//! Being built: see the project's issues.
