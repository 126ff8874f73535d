//! Erasure-coded block storage for Mosaic: Reed-Solomon fragments with Merkle
//! proofs, placement and the durable store. Being built: see the project's issues.
