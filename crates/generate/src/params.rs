//! What to generate: the fleet's size, the history's span, and how much it churns.

use thiserror::Error;

pub const SECS_PER_DAY: u64 = 86_400;

/// The fleet and the history. Same `Params` (seed included) → same history, byte for byte.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub clusters: u32,
    /// Nodes each cluster starts with; joins, leaves and replacements move it around this.
    pub nodes_per_cluster: u32,
    /// Application pods per node at the start (daemon set pods come on top).
    pub pods_per_node: u32,
    /// Size of the image catalog: the distinct `container.image.name` values the history can
    /// use (see the crate docs for how it is split).
    pub images: u32,
    /// Length of the history.
    pub duration_secs: u64,
    /// The collection interval (`collection_interval`, 10 s by default in the receiver).
    pub interval_secs: u64,
    pub seed: u64,
    /// Unix seconds of the first collection.
    pub start_unix_secs: u64,
    /// The largest batch, in data points: where a batch processor with
    /// `send_batch_max_size` splits. 8192 is the processor's `send_batch_size` default
    /// and the usual max in deployment guides.
    pub max_batch_points: usize,
    /// How long a "returning" image stays away. `None`: 35 days when the history lasts at
    /// least 40 days (longer than the rule's 30-day baseline), else a third of the history.
    pub return_gap_secs: Option<u64>,
    pub churn: Churn,
}

/// Event rates. Each kind of event happens at uniformly random intervals whose mean gives
/// the rate (integer arithmetic only, so histories are identical on every platform).
#[derive(Debug, Clone, PartialEq)]
pub struct Churn {
    /// Rollouts (a new image tag, every pod replaced) per workload per day.
    pub rollouts_per_workload_per_day: f64,
    /// Pods rescheduled onto another node (evictions, drains, preemption) per pod per day.
    pub pod_moves_per_pod_per_day: f64,
    /// Node replacements (a node drained and removed, a fresh one joins) per node per day.
    pub node_replacements_per_node_per_day: f64,
    /// Autoscaler decisions (a node joins, or leaves when above the size) per cluster per day.
    pub scaling_per_cluster_per_day: f64,
    /// Container restarts per pod per day (one of its containers restarts and reports not
    /// ready once).
    pub restarts_per_pod_per_day: f64,
    /// Share of new images that arrive by renaming a deployment's image in a rollout (the
    /// rest arrive as new deployments).
    pub new_image_by_rename_per_mille: u64,
}

impl Default for Churn {
    fn default() -> Self {
        Churn {
            rollouts_per_workload_per_day: 0.2,
            pod_moves_per_pod_per_day: 0.02,
            node_replacements_per_node_per_day: 1.0 / 30.0,
            scaling_per_cluster_per_day: 0.5,
            restarts_per_pod_per_day: 0.05,
            new_image_by_rename_per_mille: 300,
        }
    }
}

impl Default for Params {
    fn default() -> Self {
        Params {
            clusters: 3,
            nodes_per_cluster: 10,
            pods_per_node: 20,
            images: 200,
            duration_secs: 7 * SECS_PER_DAY,
            interval_secs: 10,
            seed: 1,
            // 2026-01-01T00:00:00Z
            start_unix_secs: 1_767_225_600,
            max_batch_points: 8192,
            return_gap_secs: None,
            churn: Churn::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParamsError {
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("the history ({duration_secs} s) is shorter than one interval ({interval_secs} s)")]
    TooShort {
        duration_secs: u64,
        interval_secs: u64,
    },
    #[error(
        "max batch points is {0}: a batch must hold at least one container (6 points); use 8192 unless testing"
    )]
    BatchTooSmall(usize),
    #[error("a churn rate is negative or not a number: {0}")]
    BadRate(&'static str),
    #[error("new_image_by_rename_per_mille is {0}, over 1000")]
    BadShare(u64),
    #[error("the fleet is too large: {0}")]
    TooLarge(String),
}

impl Params {
    /// Collections in the history.
    pub fn ticks(&self) -> u64 {
        self.duration_secs / self.interval_secs.max(1)
    }

    /// The gap a returning image stays away for (see [`Params::return_gap_secs`]).
    pub fn return_gap(&self) -> u64 {
        self.return_gap_secs
            .unwrap_or(if self.duration_secs >= 40 * SECS_PER_DAY {
                35 * SECS_PER_DAY
            } else {
                (self.duration_secs / 3).max(self.interval_secs)
            })
    }

    pub fn validate(&self) -> Result<(), ParamsError> {
        for (name, value) in [
            ("clusters", u64::from(self.clusters)),
            ("nodes per cluster", u64::from(self.nodes_per_cluster)),
            ("images", u64::from(self.images)),
            ("interval", self.interval_secs),
        ] {
            if value == 0 {
                return Err(ParamsError::Zero(name));
            }
        }
        if self.duration_secs < self.interval_secs {
            return Err(ParamsError::TooShort {
                duration_secs: self.duration_secs,
                interval_secs: self.interval_secs,
            });
        }
        if self.max_batch_points < crate::metrics::MAX_POINTS_PER_CONTAINER {
            return Err(ParamsError::BatchTooSmall(self.max_batch_points));
        }
        let c = &self.churn;
        for (name, rate) in [
            (
                "rollouts_per_workload_per_day",
                c.rollouts_per_workload_per_day,
            ),
            ("pod_moves_per_pod_per_day", c.pod_moves_per_pod_per_day),
            (
                "node_replacements_per_node_per_day",
                c.node_replacements_per_node_per_day,
            ),
            ("scaling_per_cluster_per_day", c.scaling_per_cluster_per_day),
            ("restarts_per_pod_per_day", c.restarts_per_pod_per_day),
        ] {
            if !(rate >= 0.0 && rate.is_finite()) {
                return Err(ParamsError::BadRate(name));
            }
        }
        if c.new_image_by_rename_per_mille > 1000 {
            return Err(ParamsError::BadShare(c.new_image_by_rename_per_mille));
        }
        // Names and indexes are u32; keep well clear of it.
        let pods = u64::from(self.clusters)
            * u64::from(self.nodes_per_cluster)
            * u64::from(self.pods_per_node.max(1));
        if pods > 200_000_000 {
            return Err(ParamsError::TooLarge(format!(
                "{pods} pods; at most 200,000,000"
            )));
        }
        if self
            .start_unix_secs
            .checked_add(self.duration_secs)
            .and_then(|end| end.checked_mul(1_000_000_000))
            .is_none()
        {
            return Err(ParamsError::TooLarge(
                "the history ends after 2554, past what OTLP nanosecond times hold".to_string(),
            ));
        }
        Ok(())
    }
}
