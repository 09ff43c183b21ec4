//! What every fuzz target does: decode the input with `read_source` and check the
//! invariants that must hold for any bytes at all ([`invariants`]); and, for the
//! `differential` target, the fast decoders against the plain ones ([`differential`]).

pub mod differential;
pub mod invariants;

pub use invariants::{run, run_request};
