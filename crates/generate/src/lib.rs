//! A synthetic fleet history, seeded and reproducible, as the OpenTelemetry `k8s_cluster`
//! receiver would have reported it: for demos, load tests and benchmarks of unseen.
//!
//! The core ([`Generator`]) is synchronous and does no IO: it walks the history collection
//! by collection and hands out [`Batch`]es, which become OTLP requests
//! ([`Batch::to_request`]) or the bytes of a file format ([`Encoder`]). Only one batch is in
//! memory at a time, so a history of any length streams in bounded memory. With the `send`
//! feature, [`send`] replays a history to a live OTLP/HTTP server.
//!
//! # The model
//!
//! **Fleet.** `clusters` clusters of `nodes_per_cluster` nodes. Each cluster runs:
//! - the cluster receiver itself, a one-replica collector deployment (its node is the
//!   `host.name` of the CSV export);
//! - one daemon set per system image (collector agent, kube-proxy, CNI, log shipper): a pod
//!   on every node;
//! - application deployments (10 % stateful sets, 20 % with a sidecar) of 1–10 replicas,
//!   `pods_per_node` × nodes pods in all, on random nodes.
//!
//! **Images.** A catalog of `images` names, split into disjoint roles: system (a tenth, 1 to
//! 4), then of the rest a twentieth *seasonal*, a fifth *fresh*, and the others *base*.
//! Base images are handed round-robin to deployments across the fleet; public names
//! (`docker.io/library/nginx`, ...) and internal ones (`<registry>/<team>/<service>`, with
//! `git-<sha>` tags) are mixed.
//!
//! **Churn**, each at the rate in [`Churn`]:
//! - rollouts: a workload gets a new tag and all its pods are replaced (new names, uids,
//!   container ids; deployment pods land on random nodes);
//! - new images: each fresh image arrives once, the arrivals evenly spread over the history,
//!   either as a new deployment or as a rollout that renames a deployment's image;
//! - returning images: each seasonal image is run by one deployment that is removed after a
//!   while and comes back after more than the return gap ([`Params::return_gap`]: 35 days
//!   when the history is long enough, so longer than the rule's 30-day baseline), again and
//!   again;
//! - pods moving between nodes (evictions), with a new pod identity;
//! - nodes joining and leaving (autoscaling around the cluster size) and being replaced
//!   (a fresh node joins, an old one is drained: its pods move);
//! - container restarts: `k8s.container.restarts` goes up and the container reports not
//!   ready (`k8s.container.ready` 0) for one collection, as new containers do in their first.
//!
//! **Payloads.** One resource per node (`k8s.node.condition_ready`), per pod
//! (`k8s.pod.phase`) and per container (`k8s.container.restarts`, `k8s.container.ready`,
//! and the request and limit metrics the container's spec sets: one of
//! [`metrics::CONTAINER_PROFILES`]), with the receiver's descriptions and units. Container
//! resources carry the receiver's eight attributes plus `k8s.cluster.name`
//! ([`metrics::CONTAINER_ATTRIBUTES`]). Every point of one collection has the same time;
//! each cluster's collector scrapes at its own offset within the interval.
//!
//! **Batches.** The receiver exports one request per collection per cluster; a batch
//! processor with `send_batch_max_size: 8192` splits larger ones. Here a collection is cut
//! into batches of at most [`Params::max_batch_points`] (8192) points, between resources, so
//! every batch but a collection's last holds more than 8192 − 6 points.
//!
//! **Determinism.** Same [`Params`] (seed included) → the same history, byte for byte, on
//! every platform: the PRNG is our own SplitMix64 and event timing uses integers only.

pub mod encode;
pub mod metrics;

mod catalog;
mod fleet;
mod generator;
mod params;
mod rng;
#[cfg(feature = "send")]
mod send;

pub use encode::{CsvMetrics, Encoder, Format, CSV_HEADER};
pub use fleet::EventCounts;
pub use generator::{Batch, FlatPoint, GenStats, Generator, Requests, Value};
pub use params::{Churn, Params, ParamsError, SECS_PER_DAY};
#[cfg(feature = "send")]
pub use send::{send, send_blocking, Latency, SendError, SendOptions, SendStats};
