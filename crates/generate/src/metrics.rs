//! The metrics the generator emits: names, descriptions, units and value types exactly as the
//! `k8s_cluster` receiver writes them (receiver `metadata.yaml`, default-enabled metrics;
//! the strings are the ones in its end-to-end test output).

/// How a metric's points carry their value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    Int,
    Double,
}

/// One metric's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDef {
    pub name: &'static str,
    pub description: &'static str,
    pub unit: &'static str,
    pub value_type: ValueType,
}

const REQUEST_DESCRIPTION: &str = "Resource requested for the container. See https://kubernetes.io/docs/reference/generated/kubernetes-api/v1.23/#resourcerequirements-v1-core for details";
const LIMIT_DESCRIPTION: &str = "Maximum resource limit set for the container. See https://kubernetes.io/docs/reference/generated/kubernetes-api/v1.23/#resourcerequirements-v1-core for details";

pub const CONTAINER_RESTARTS: MetricDef = MetricDef {
    name: "k8s.container.restarts",
    description: "How many times the container has restarted in the recent past. This value is pulled directly from the K8s API and the value can go indefinitely high and be reset to 0 at any time depending on how your kubelet is configured to prune dead containers. It is best to not depend too much on the exact value but rather look at it as either == 0, in which case you can conclude there were no restarts in the recent past, or > 0, in which case you can conclude there were restarts in the recent past, and not try and analyze the value beyond that.",
    unit: "{restart}",
    value_type: ValueType::Int,
};

pub const CONTAINER_READY: MetricDef = MetricDef {
    name: "k8s.container.ready",
    description: "Whether a container has passed its readiness probe (0 for no, 1 for yes)",
    unit: "",
    value_type: ValueType::Int,
};

pub const CONTAINER_CPU_REQUEST: MetricDef = MetricDef {
    name: "k8s.container.cpu_request",
    description: REQUEST_DESCRIPTION,
    unit: "{cpu}",
    value_type: ValueType::Double,
};

pub const CONTAINER_MEMORY_REQUEST: MetricDef = MetricDef {
    name: "k8s.container.memory_request",
    description: REQUEST_DESCRIPTION,
    unit: "By",
    value_type: ValueType::Int,
};

pub const CONTAINER_CPU_LIMIT: MetricDef = MetricDef {
    name: "k8s.container.cpu_limit",
    description: LIMIT_DESCRIPTION,
    unit: "{cpu}",
    value_type: ValueType::Double,
};

pub const CONTAINER_MEMORY_LIMIT: MetricDef = MetricDef {
    name: "k8s.container.memory_limit",
    description: LIMIT_DESCRIPTION,
    unit: "By",
    value_type: ValueType::Int,
};

pub const POD_PHASE: MetricDef = MetricDef {
    name: "k8s.pod.phase",
    description: "Current phase of the pod (1 - Pending, 2 - Running, 3 - Succeeded, 4 - Failed, 5 - Unknown)",
    unit: "",
    value_type: ValueType::Int,
};

pub const NODE_CONDITION_READY: MetricDef = MetricDef {
    name: "k8s.node.condition_ready",
    description: "Ready condition status of the node (true=1, false=0, unknown=-1)",
    unit: "",
    value_type: ValueType::Int,
};

/// The metrics of one container resource, by how its resources are specified. The receiver
/// emits a request or limit metric only when the pod spec sets it, so containers differ:
/// the real output in the fixtures has exactly these five shapes. Each container spec of
/// the generated fleet has one of them for its whole life.
pub const CONTAINER_PROFILES: [&[MetricDef]; 5] = [
    &[CONTAINER_RESTARTS, CONTAINER_READY],
    &[CONTAINER_RESTARTS, CONTAINER_READY, CONTAINER_CPU_REQUEST],
    &[
        CONTAINER_RESTARTS,
        CONTAINER_READY,
        CONTAINER_CPU_REQUEST,
        CONTAINER_MEMORY_REQUEST,
    ],
    &[
        CONTAINER_RESTARTS,
        CONTAINER_READY,
        CONTAINER_CPU_REQUEST,
        CONTAINER_MEMORY_REQUEST,
        CONTAINER_MEMORY_LIMIT,
    ],
    &[
        CONTAINER_RESTARTS,
        CONTAINER_READY,
        CONTAINER_CPU_REQUEST,
        CONTAINER_MEMORY_REQUEST,
        CONTAINER_CPU_LIMIT,
        CONTAINER_MEMORY_LIMIT,
    ],
];

/// The most points one container resource carries; a batch is cut between resources, so a
/// full batch is at most this much below the batch limit.
pub const MAX_POINTS_PER_CONTAINER: usize = 6;

/// The metrics of a pod resource.
pub const POD_METRICS: &[MetricDef] = &[POD_PHASE];

/// The metrics of a node resource (`node_conditions_to_report: [Ready]`, the default).
pub const NODE_METRICS: &[MetricDef] = &[NODE_CONDITION_READY];

/// The instrumentation scope of every metric.
pub const SCOPE_NAME: &str =
    "github.com/open-telemetry/opentelemetry-collector-contrib/receiver/k8sclusterreceiver";
/// A released receiver version (the fixtures, from a test build, say `latest`).
pub const SCOPE_VERSION: &str = "0.115.0";
/// The resource schema URL the receiver sets.
pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.18.0";

/// Resource attribute names.
pub mod attr {
    pub const POD_UID: &str = "k8s.pod.uid";
    pub const POD_NAME: &str = "k8s.pod.name";
    pub const NODE_NAME: &str = "k8s.node.name";
    pub const NODE_UID: &str = "k8s.node.uid";
    pub const NAMESPACE_NAME: &str = "k8s.namespace.name";
    pub const CONTAINER_ID: &str = "container.id";
    pub const CONTAINER_NAME: &str = "k8s.container.name";
    pub const IMAGE_NAME: &str = "container.image.name";
    pub const IMAGE_TAG: &str = "container.image.tag";
    /// Not set by the receiver: added by the `resource` processor (a static value) or the
    /// `resourcedetection` processor on EKS/GKE/AKS, as every real pipeline does.
    pub const CLUSTER_NAME: &str = "k8s.cluster.name";
    /// Only in the CSV export: the collector's own machine, as `resourcedetection` sets it.
    pub const HOST_NAME: &str = "host.name";
}

/// The attributes of a container resource, in the order written: the receiver's eight in
/// the fixtures' (sorted) order, then `k8s.cluster.name` as a processor appends it.
pub const CONTAINER_ATTRIBUTES: [&str; 9] = [
    attr::CONTAINER_ID,
    attr::IMAGE_NAME,
    attr::IMAGE_TAG,
    attr::CONTAINER_NAME,
    attr::NAMESPACE_NAME,
    attr::NODE_NAME,
    attr::POD_NAME,
    attr::POD_UID,
    attr::CLUSTER_NAME,
];

/// The attributes of a pod resource.
pub const POD_ATTRIBUTES: [&str; 5] = [
    attr::NAMESPACE_NAME,
    attr::NODE_NAME,
    attr::POD_NAME,
    attr::POD_UID,
    attr::CLUSTER_NAME,
];

/// The attributes of a node resource.
pub const NODE_ATTRIBUTES: [&str; 3] = [attr::NODE_NAME, attr::NODE_UID, attr::CLUSTER_NAME];
