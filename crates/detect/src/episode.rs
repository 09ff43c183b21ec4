//! Real-time episodes (contract section 4).
//!
//! For one key with sightings s1 < s2 < …, s_i opens an episode when i = 1 or
//! s_i − s_(i−1) > B − R. That is exactly the set of sightings some batch run would
//! report, so the server reports each episode once, when its first point arrives,
//! without re-scanning anything.
//!
//! [`step`] is a pure function of the key's previous state: the store keeps the state,
//! this module decides.

use serde::{Deserialize, Serialize};
use unseen_model::{UnixSecs, Windows};

/// What the server remembers per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    /// The latest sighting's time.
    pub last_seen: UnixSecs,
    /// The first point of the current episode.
    pub episode_start: UnixSecs,
}

/// An episode opened by a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Episode {
    pub first_seen: UnixSecs,
    /// The sighting before the gap; `None` for a key never seen (or forgotten).
    pub previous_seen: Option<UnixSecs>,
    /// The point arrived more than R after its own time.
    pub late: bool,
}

/// The outcome of one point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The key's state after the point.
    pub state: KeyState,
    /// Set when the point opened an episode.
    pub opened: Option<Episode>,
}

/// Applies a sighting at `t`, arriving at `now`, to the key's previous state.
///
/// Callers reject future points (more than the allowed clock skew ahead of `now`)
/// before calling this, so state never moves into the future.
pub fn step(prev: Option<KeyState>, t: UnixSecs, now: UnixSecs, windows: &Windows) -> Step {
    let gap = i64::try_from(windows.gap()).unwrap_or(i64::MAX);
    let recent = i64::try_from(windows.recent).unwrap_or(i64::MAX);
    let open = |previous_seen| Step {
        state: KeyState {
            last_seen: t,
            episode_start: t,
        },
        opened: Some(Episode {
            first_seen: t,
            previous_seen,
            late: now.saturating_sub(t) > recent,
        }),
    };
    match prev {
        None => open(None),
        // Out of order (or a repeat): never opens an episode, never moves state back.
        Some(s) if t <= s.last_seen => Step {
            state: s,
            opened: None,
        },
        Some(s) if t - s.last_seen > gap => open(Some(s.last_seen)),
        Some(s) => Step {
            state: KeyState {
                last_seen: t,
                episode_start: s.episode_start,
            },
            opened: None,
        },
    }
}

/// Whether a key may be forgotten (contract section 4): its latest sighting is more
/// than B − R older than the newest point time. Its next sighting opens an episode
/// either way, so forgetting changes nothing that is reported.
pub fn forgettable(state: &KeyState, newest: UnixSecs, windows: &Windows) -> bool {
    newest.saturating_sub(state.last_seen) > i64::try_from(windows.gap()).unwrap_or(i64::MAX)
}

/// Whether a point is too far in the future to accept.
pub fn is_future(t: UnixSecs, now: UnixSecs, max_clock_skew: u64) -> bool {
    t > now.saturating_add(i64::try_from(max_clock_skew).unwrap_or(i64::MAX))
}
