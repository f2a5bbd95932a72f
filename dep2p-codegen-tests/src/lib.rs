//! Tests of the code `#[service]` generates; the crate itself is empty.
//!
//! * `tests/ui.rs`: what must compile (`tests/ui/pass`) and what must be rejected, with the
//!   reviewed diagnostics (`tests/ui/fail`).
//! * `tests/e2e.rs`: generated clients against generated servers over QUIC on loopback.
//!
//! The expansion snapshots live in `dep2p-macros` itself (`dep2p-macros/snapshots`).
