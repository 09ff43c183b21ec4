//! The rule's logic, and nothing else: no IO, no clock, no formats.
//!
//! - [`batch`]: contract section 3, what one run of the seed search at time T reports.
//! - [`episode`]: contract section 4, the same rule in real time, one point at a time.
//! - [`pipeline`]: a batch evaluation fed a few points behind, so that key lookups do not
//!   wait for memory.
//! - [`table`] and [`intern`]: the compact key table a scan and the embedded store's key
//!   states are made of.
//!
//! Both produce a [`Detection`]: a key and the evidence for it. Turning that into a
//! finding (ids, risk, JSON) is the job of `unseen-findings`.

pub mod batch;
pub mod episode;
pub mod intern;
pub mod pipeline;
pub mod table;

use unseen_model::{OwnedContext, UnixSecs};
use unseen_normalize::Key;

pub use batch::{BaselineKey, BatchScan, Placement};
pub use episode::{step, Episode, KeyState, Step};
pub use pipeline::{Pipelined, Sighting};

/// A key the rule reports, with its evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub key: Key,
    /// The episode's first point.
    pub first_seen: UnixSecs,
    /// The latest point of the episode known when reported.
    pub last_seen: UnixSecs,
    /// Points of the episode known when reported.
    pub count: u64,
    /// The key's sighting before the gap, if known.
    pub previous_seen: Option<UnixSecs>,
    /// Reported more than the recent window after its first point.
    pub late: bool,
    /// A `host.name` seen on the points (in default mode the collector's machine, kept
    /// as evidence; in strict mode the same as the key's host).
    pub host_name: Option<String>,
    /// The evidence attributes of the episode's opening point (empty in strict mode).
    pub context: OwnedContext,
    /// `container.image.name` as the opening point said it, when that differs from the
    /// key's (canonical) image.
    pub image_raw: Option<String>,
}
