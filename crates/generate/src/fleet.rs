//! One cluster's state (nodes, workloads, pods, containers) and the events that change it.

use std::collections::VecDeque;

use crate::catalog::{Catalog, TEAMS};
use crate::metrics::CONTAINER_PROFILES;
use crate::params::{Params, SECS_PER_DAY};
use crate::rng::Rng;

/// The alphabet Kubernetes uses for generated name suffixes (`rand.String`).
const K8S_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
const HEX: &[u8] = b"0123456789abcdef";

/// What happened over the history, for the summary and the tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// Rollouts that changed a tag.
    pub rollouts: u64,
    /// Rollouts that changed a deployment's image name to a new one.
    pub image_renames: u64,
    /// New deployments bringing a new image.
    pub new_deployments: u64,
    pub pod_moves: u64,
    pub node_joins: u64,
    pub node_leaves: u64,
    pub node_replacements: u64,
    pub restarts: u64,
    /// Seasonal workloads taken away / brought back after the gap.
    pub suspensions: u64,
    pub returns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Deployment,
    DaemonSet,
    StatefulSet,
}

#[derive(Debug)]
pub(crate) struct ContainerSpec {
    pub(crate) name: String,
    pub(crate) image: u32,
    pub(crate) tag: String,
    version: [u32; 3],
    /// Index into [`CONTAINER_PROFILES`].
    pub(crate) profile: u8,
    pub(crate) cpu_request: f64,
    pub(crate) memory_request: i64,
    pub(crate) cpu_limit: f64,
    pub(crate) memory_limit: i64,
}

#[derive(Debug)]
pub(crate) struct Workload {
    pub(crate) kind: Kind,
    pub(crate) namespace: &'static str,
    pub(crate) name: String,
    replicas: u32,
    /// The pod-template hash of the current ReplicaSet.
    hash: String,
    pub(crate) containers: Vec<ContainerSpec>,
    active: bool,
    /// For a seasonal workload: the tick it next goes away or comes back.
    season_toggle: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct ContainerState {
    pub(crate) id: String,
    pub(crate) restarts: u32,
    /// The container reports not ready before this tick (just started or restarted).
    pub(crate) unready_until: u64,
}

#[derive(Debug)]
pub(crate) struct Pod {
    pub(crate) workload: u32,
    pub(crate) node: u32,
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) containers: Vec<ContainerState>,
}

#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) uid: String,
}

/// A new image arriving in this cluster at a tick.
#[derive(Debug)]
pub(crate) struct Arrival {
    pub(crate) tick: u64,
    pub(crate) image: u32,
}

/// An event kind with its own clock.
#[derive(Debug, Clone, Copy)]
enum Clock {
    Rollout,
    PodMove,
    NodeReplace,
    Scale,
    Restart,
}
const CLOCKS: [Clock; 5] = [
    Clock::Rollout,
    Clock::PodMove,
    Clock::NodeReplace,
    Clock::Scale,
    Clock::Restart,
];

#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) name: String,
    /// Where in the interval this cluster's collector scrapes: collectors are not in step.
    pub(crate) phase_nanos: u64,
    rng: Rng,
    node_style: u8,
    node_seq: u32,
    target_nodes: u32,
    pub(crate) nodes: Vec<Node>,
    pub(crate) workloads: Vec<Workload>,
    pub(crate) pods: Vec<Pod>,
    /// The seasonal workloads, so that a collection need not look at every workload.
    seasonal: Vec<u32>,
    /// Seconds since the start at which each clock fires next.
    next: [u64; 5],
    pub(crate) arrivals: VecDeque<Arrival>,
    pub(crate) events: EventCounts,
}

/// The workload index of the cluster receiver's own deployment: its node is `host.name`.
pub(crate) const COLLECTOR: u32 = 0;

const ENVS: [&str; 3] = ["prod", "staging", "dev"];
const REGIONS: [&str; 5] = [
    "us-east-1",
    "eu-west-1",
    "ap-southeast-2",
    "us-west-2",
    "eu-central-1",
];

impl Cluster {
    pub(crate) fn new(index: u32, params: &Params, interval_nanos: u64, seed: u64) -> Cluster {
        let mut rng = Rng::derive(seed, u64::from(index) + 1);
        let name = format!(
            "{}-{}-{:02}",
            ENVS[index as usize % ENVS.len()],
            REGIONS[(index as usize / ENVS.len()) % REGIONS.len()],
            index
        );
        let phase_nanos = rng.below(interval_nanos);
        let node_style = (index % 3) as u8;
        let mut cluster = Cluster {
            name,
            phase_nanos,
            rng,
            node_style,
            node_seq: 0,
            target_nodes: params.nodes_per_cluster,
            nodes: Vec::new(),
            workloads: Vec::new(),
            pods: Vec::new(),
            seasonal: Vec::new(),
            next: [0; 5],
            arrivals: VecDeque::new(),
            events: EventCounts::default(),
        };
        for _ in 0..params.nodes_per_cluster {
            let node = cluster.new_node();
            cluster.nodes.push(node);
        }
        cluster
    }

    /// Workloads present at the start. `base` hands out application images round-robin
    /// over the fleet so that every base image is in use somewhere when there are enough
    /// deployments.
    pub(crate) fn populate(
        &mut self,
        index: u32,
        params: &Params,
        catalog: &Catalog,
        base: &mut impl FnMut() -> u32,
    ) {
        let system = catalog.system.clone();
        // The cluster receiver: one replica of the collector.
        let collector = self.workload(
            Kind::Deployment,
            catalog,
            system.start,
            1,
            Some("otel-collector-cluster"),
        );
        self.add_workload(collector, 0);
        for image in system.clone() {
            let ds = self.workload(Kind::DaemonSet, catalog, image, 0, None);
            self.add_workload(ds, 0);
        }
        let target_pods = u64::from(params.nodes_per_cluster) * u64::from(params.pods_per_node);
        let mut pods = 0u64;
        while pods < target_pods {
            let replicas = *self.rng.pick(&[1u32, 1, 2, 2, 2, 3, 3, 4, 6, 10]);
            let kind = if self.rng.chance(100) {
                Kind::StatefulSet
            } else {
                Kind::Deployment
            };
            let image = base();
            let mut w = self.workload(kind, catalog, image, replicas, None);
            if self.rng.chance(200) {
                // A sidecar.
                let sidecar = base();
                let spec = self.container_spec(catalog, sidecar, None);
                w.containers.push(spec);
            }
            self.add_workload(w, 0);
            pods += u64::from(replicas);
        }
        // Seasonal images: each its own deployment in one cluster, present at the start,
        // away for longer than the return gap, then back.
        let clusters = params.clusters;
        let gap_ticks = params.return_gap() / params.interval_secs + 1;
        for image in catalog.seasonal.clone() {
            if image % clusters != index {
                continue;
            }
            let replicas = 1 + self.rng.below(2) as u32;
            let mut w = self.workload(Kind::Deployment, catalog, image, replicas, None);
            w.season_toggle = Some(1 + gap_ticks / 4 + self.rng.below(gap_ticks / 4 + 1));
            self.add_workload(w, 0);
            self.seasonal.push((self.workloads.len() - 1) as u32);
        }
        // The fleet was running before the history starts: ready from the first collection.
        for pod in &mut self.pods {
            for container in &mut pod.containers {
                container.unready_until = 0;
            }
        }
        for (i, clock) in CLOCKS.iter().enumerate() {
            self.next[i] = self.wait(*clock, params);
        }
    }

    fn new_node(&mut self) -> Node {
        self.node_seq += 1;
        let seq = self.node_seq;
        let name = match self.node_style {
            // EKS
            0 => format!(
                "ip-10-{}-{}-{}.ec2.internal",
                (seq / 62_500) % 256,
                (seq / 250) % 250,
                seq % 250 + 4
            ),
            // GKE
            1 => format!(
                "gke-{}-default-pool-{}-{}",
                self.name,
                self.rng.string(HEX, 8),
                self.rng.string(b"abcdefghijklmnopqrstuvwxyz0123456789", 4)
            ),
            // AKS
            _ => format!(
                "aks-nodepool1-{:08}-vmss{:06x}",
                10_000_000 + seq / 1000,
                seq
            ),
        };
        Node {
            name,
            uid: self.rng.uuid(),
        }
    }

    fn container_spec(
        &mut self,
        catalog: &Catalog,
        image: u32,
        name: Option<&str>,
    ) -> ContainerSpec {
        let img = catalog.get(image);
        let version = [
            self.rng.below(4) as u32,
            self.rng.below(30) as u32,
            self.rng.below(10) as u32,
        ];
        let profile = *self.rng.pick(&[0u8, 1, 1, 2, 2, 2, 3, 4, 4, 4]);
        let cpu_request = *self.rng.pick(&[0.05, 0.1, 0.25, 0.5, 1.0, 2.0]);
        let memory_request = (*self.rng.pick(&[64i64, 128, 256, 512, 1024, 2048])) << 20;
        let mut spec = ContainerSpec {
            name: name.unwrap_or(&img.short).to_string(),
            image,
            tag: String::new(),
            version,
            profile,
            cpu_request,
            memory_request,
            cpu_limit: cpu_request * 2.0,
            memory_limit: memory_request * 2,
        };
        spec.tag = self.tag(catalog, image, version);
        spec
    }

    fn tag(&mut self, catalog: &Catalog, image: u32, version: [u32; 3]) -> String {
        if catalog.get(image).sha_tags {
            format!("git-{}", self.rng.string(HEX, 7))
        } else {
            format!("{}.{}.{}", version[0] + 1, version[1], version[2])
        }
    }

    fn workload(
        &mut self,
        kind: Kind,
        catalog: &Catalog,
        image: u32,
        replicas: u32,
        name: Option<&str>,
    ) -> Workload {
        let img = catalog.get(image);
        let base_name = name.unwrap_or(&img.short).to_string();
        // Two deployments of one image in a cluster get distinct names.
        let taken = self
            .workloads
            .iter()
            .filter(|w| w.name.starts_with(&base_name))
            .count();
        let name = if taken == 0 {
            base_name
        } else {
            format!("{base_name}-{}", taken + 1)
        };
        // System and internal images have their own namespace; public images land in some
        // team's.
        let namespace = if catalog.system.contains(&image) || img.sha_tags {
            img.namespace
        } else {
            *self.rng.pick(&TEAMS)
        };
        let spec = self.container_spec(catalog, image, Some(&img.short));
        Workload {
            kind,
            namespace,
            name,
            replicas,
            hash: self.rng.string(K8S_ALPHABET, 10),
            containers: vec![spec],
            active: true,
            season_toggle: None,
        }
    }

    /// Adds a workload and creates its pods.
    fn add_workload(&mut self, workload: Workload, tick: u64) {
        self.workloads.push(workload);
        let w = (self.workloads.len() - 1) as u32;
        self.create_pods(w, tick);
    }

    fn create_pods(&mut self, w: u32, tick: u64) {
        let wl = &self.workloads[w as usize];
        if wl.kind == Kind::DaemonSet {
            for node in 0..self.nodes.len() as u32 {
                let pod = self.new_pod(w, node, 0, tick);
                self.pods.push(pod);
            }
        } else {
            for replica in 0..wl.replicas {
                let node = self.rng.index(self.nodes.len()) as u32;
                let pod = self.new_pod(w, node, replica, tick);
                self.pods.push(pod);
            }
        }
    }

    fn new_pod(&mut self, w: u32, node: u32, replica: u32, tick: u64) -> Pod {
        let wl = &self.workloads[w as usize];
        let name = match wl.kind {
            Kind::Deployment => format!(
                "{}-{}-{}",
                wl.name,
                wl.hash,
                self.rng.string(K8S_ALPHABET, 5)
            ),
            Kind::DaemonSet => format!("{}-{}", wl.name, self.rng.string(K8S_ALPHABET, 5)),
            Kind::StatefulSet => format!("{}-{replica}", wl.name),
        };
        let count = wl.containers.len();
        let containers = (0..count)
            .map(|_| ContainerState {
                id: self.rng.container_id(),
                restarts: 0,
                unready_until: tick + 1,
            })
            .collect();
        Pod {
            workload: w,
            node,
            name,
            uid: self.rng.uuid(),
            containers,
        }
    }

    /// Replaces pod `p` by a new one (new uid, container ids; a new name unless it belongs
    /// to a stateful set) on `node`.
    fn recreate_pod(&mut self, p: usize, node: u32, tick: u64) {
        let replica = {
            let pod = &self.pods[p];
            pod.name
                .rsplit('-')
                .next()
                .and_then(|r| r.parse().ok())
                .unwrap_or(0)
        };
        let w = self.pods[p].workload;
        self.pods[p] = self.new_pod(w, node, replica, tick);
    }

    /// Mean seconds between two events of `clock`, given the current sizes; `None` when
    /// the rate is zero.
    fn wait(&mut self, clock: Clock, params: &Params) -> u64 {
        let churn = &params.churn;
        let (rate, count) = match clock {
            Clock::Rollout => (churn.rollouts_per_workload_per_day, self.workloads.len()),
            Clock::PodMove => (churn.pod_moves_per_pod_per_day, self.pods.len()),
            Clock::NodeReplace => (churn.node_replacements_per_node_per_day, self.nodes.len()),
            Clock::Scale => (churn.scaling_per_cluster_per_day, 1),
            Clock::Restart => (churn.restarts_per_pod_per_day, self.pods.len()),
        };
        if rate <= 0.0 {
            return u64::MAX;
        }
        if count == 0 {
            return SECS_PER_DAY; // look again tomorrow
        }
        let mean = (SECS_PER_DAY as f64 / (rate * count as f64)).max(1.0);
        let mean = if mean > 1e15 {
            1e15 as u64
        } else {
            mean as u64
        };
        1 + self.rng.below(2 * mean)
    }

    /// Applies every event due at `tick` (at `offset` seconds since the start).
    pub(crate) fn advance(&mut self, tick: u64, offset: u64, params: &Params, catalog: &Catalog) {
        while self.arrivals.front().is_some_and(|a| a.tick <= tick) {
            let Some(arrival) = self.arrivals.pop_front() else {
                break;
            };
            self.arrive(arrival.image, tick, params, catalog);
        }
        for i in 0..self.seasonal.len() {
            let w = self.seasonal[i];
            if self.workloads[w as usize]
                .season_toggle
                .is_some_and(|t| t <= tick)
            {
                self.toggle_season(w, tick, params);
            }
        }
        for (i, clock) in CLOCKS.iter().enumerate() {
            while self.next[i] <= offset {
                self.fire(*clock, tick, catalog);
                let wait = self.wait(*clock, params);
                self.next[i] = self.next[i].saturating_add(wait);
            }
        }
    }

    fn fire(&mut self, clock: Clock, tick: u64, catalog: &Catalog) {
        match clock {
            Clock::Rollout => {
                // Random picks with a few retries rather than a scan of every workload
                // (or pod, below): an event must cost O(1) in fleets of 100k pods.
                let Some(w) =
                    self.pick_retrying(self.workloads.len(), |c, w| c.workloads[w].active)
                else {
                    return;
                };
                let w = w as u32;
                let c = self.rng.index(self.workloads[w as usize].containers.len());
                self.bump_tag(w, c, catalog);
                self.rollout(w, tick);
                self.events.rollouts += 1;
            }
            Clock::PodMove => {
                if self.nodes.len() < 2 {
                    return;
                }
                let Some(p) = self.pick_retrying(self.pods.len(), |c, p| {
                    c.workloads[c.pods[p].workload as usize].kind != Kind::DaemonSet
                }) else {
                    return;
                };
                let from = self.pods[p].node;
                let mut to = self.rng.index(self.nodes.len() - 1) as u32;
                if to >= from {
                    to += 1;
                }
                self.recreate_pod(p, to, tick);
                self.events.pod_moves += 1;
            }
            Clock::NodeReplace => {
                if self.nodes.len() < 2 {
                    return;
                }
                self.join_node(tick);
                let victim = self.rng.index(self.nodes.len() - 1);
                self.remove_node(victim as u32, tick);
                self.events.node_replacements += 1;
            }
            Clock::Scale => {
                let n = self.nodes.len() as u32;
                let high = self.target_nodes + (self.target_nodes / 4).max(1);
                let join = n < self.target_nodes || (n < high && self.rng.chance(500));
                if join {
                    self.join_node(tick);
                    self.events.node_joins += 1;
                } else if n >= 2 {
                    let victim = self.rng.index(self.nodes.len());
                    self.remove_node(victim as u32, tick);
                    self.events.node_leaves += 1;
                }
            }
            Clock::Restart => {
                if self.pods.is_empty() {
                    return;
                }
                let p = self.rng.index(self.pods.len());
                let c = self.rng.index(self.pods[p].containers.len());
                let state = &mut self.pods[p].containers[c];
                state.restarts += 1;
                state.unready_until = tick + 1;
                self.events.restarts += 1;
            }
        }
    }

    fn bump_tag(&mut self, w: u32, c: usize, catalog: &Catalog) {
        let minor = self.rng.chance(100);
        let spec = &mut self.workloads[w as usize].containers[c];
        if minor {
            spec.version[1] += 1;
            spec.version[2] = 0;
        } else {
            spec.version[2] += 1;
        }
        let (image, version) = (spec.image, spec.version);
        let tag = self.tag(catalog, image, version);
        self.workloads[w as usize].containers[c].tag = tag;
    }

    /// Every pod of `w` replaced by a pod of the new template.
    fn rollout(&mut self, w: u32, tick: u64) {
        let hash = self.rng.string(K8S_ALPHABET, 10);
        let wl = &mut self.workloads[w as usize];
        wl.hash = hash;
        let kind = wl.kind;
        for p in 0..self.pods.len() {
            if self.pods[p].workload != w {
                continue;
            }
            let node = if kind == Kind::DaemonSet {
                self.pods[p].node
            } else {
                self.rng.index(self.nodes.len()) as u32
            };
            self.recreate_pod(p, node, tick);
        }
    }

    fn join_node(&mut self, tick: u64) {
        let node = self.new_node();
        self.nodes.push(node);
        let n = (self.nodes.len() - 1) as u32;
        for w in 0..self.workloads.len() as u32 {
            let wl = &self.workloads[w as usize];
            if wl.kind == Kind::DaemonSet && wl.active {
                let pod = self.new_pod(w, n, 0, tick);
                self.pods.push(pod);
            }
        }
    }

    /// Drains node `n`: its daemon set pods go, the others are rescheduled elsewhere.
    fn remove_node(&mut self, n: u32, tick: u64) {
        let workloads = &self.workloads;
        self.pods
            .retain(|p| !(p.node == n && workloads[p.workload as usize].kind == Kind::DaemonSet));
        let last = (self.nodes.len() - 1) as u32;
        self.nodes.swap_remove(n as usize);
        for p in 0..self.pods.len() {
            if self.pods[p].node == n {
                let to = self.rng.index(self.nodes.len()) as u32;
                self.recreate_pod(p, to, tick);
            } else if self.pods[p].node == last {
                self.pods[p].node = n;
            }
        }
    }

    fn toggle_season(&mut self, w: u32, tick: u64, params: &Params) {
        let gap_ticks = params.return_gap() / params.interval_secs + 1;
        let wl = &mut self.workloads[w as usize];
        if wl.active {
            wl.active = false;
            self.pods.retain(|p| p.workload != w);
            let away = gap_ticks + self.rng.below(gap_ticks / 10 + 1);
            self.workloads[w as usize].season_toggle = Some(tick + away);
            self.events.suspensions += 1;
        } else {
            wl.active = true;
            let stay = 1 + gap_ticks / 4 + self.rng.below(gap_ticks / 4 + 1);
            wl.season_toggle = Some(tick + stay);
            self.create_pods(w, tick);
            self.events.returns += 1;
        }
    }

    /// A new image arrives: a rollout renames a deployment's image, or a new deployment.
    fn arrive(&mut self, image: u32, tick: u64, params: &Params, catalog: &Catalog) {
        let renamable: Vec<u32> = (0..self.workloads.len() as u32)
            .filter(|&w| {
                let wl = &self.workloads[w as usize];
                w != COLLECTOR
                    && wl.kind == Kind::Deployment
                    && wl.active
                    && wl.season_toggle.is_none()
                    && !catalog.system.contains(&wl.containers[0].image)
            })
            .collect();
        if !renamable.is_empty() && self.rng.chance(params.churn.new_image_by_rename_per_mille) {
            let w = *self.rng.pick(&renamable);
            let spec = self.container_spec(catalog, image, None);
            let old = &mut self.workloads[w as usize].containers[0];
            let name = std::mem::take(&mut old.name);
            *old = spec;
            old.name = name;
            self.rollout(w, tick);
            self.events.image_renames += 1;
        } else {
            let replicas = *self.rng.pick(&[1u32, 2, 2, 3]);
            let w = self.workload(Kind::Deployment, catalog, image, replicas, None);
            self.add_workload(w, tick);
            self.events.new_deployments += 1;
        }
    }

    /// Up to 8 random indexes in `0..len` until one satisfies `ok`.
    fn pick_retrying(&mut self, len: usize, ok: impl Fn(&Cluster, usize) -> bool) -> Option<usize> {
        if len == 0 {
            return None;
        }
        for _ in 0..8 {
            let i = self.rng.index(len);
            if ok(self, i) {
                return Some(i);
            }
        }
        None
    }

    /// The node the cluster receiver runs on: `host.name` where a pipeline sets it.
    pub(crate) fn collector_host(&self) -> &str {
        self.pods
            .iter()
            .find(|p| p.workload == COLLECTOR)
            .map_or("", |p| self.nodes[p.node as usize].name.as_str())
    }

    /// Points of the container resource of pod `p`, container `c`.
    pub(crate) fn container_points(&self, p: usize, c: usize) -> usize {
        let pod = &self.pods[p];
        let spec = &self.workloads[pod.workload as usize].containers[c];
        CONTAINER_PROFILES[spec.profile as usize].len()
    }

    pub(crate) fn containers(&self) -> usize {
        self.pods.iter().map(|p| p.containers.len()).sum()
    }
}
