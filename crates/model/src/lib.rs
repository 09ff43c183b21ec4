//! Domain types shared by every stage of unseen.
//!
//! Nothing here does IO or reads a clock: functions that need "now" take it as an
//! argument, so the same code serves `scan` (now = `--at`) and `serve` (now = the
//! wall clock) and stays testable.

mod bytes;
mod duration;
mod rule;
mod time;

pub use bytes::same_bytes;

pub use duration::{format_duration, parse_duration, DurationError};
pub use rule::{Rule, Windows, WindowsError, SEED_RULE};
pub use time::{format_rfc3339, parse_time, unix_secs_from_nanos, TimeError, UnixSecs};

mod point;
pub use point::{attr, ctx, Context, Dims, OwnedContext, PointRef, CONTEXT_ATTRS, CONTEXT_LEN};
