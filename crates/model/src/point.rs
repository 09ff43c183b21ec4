//! A `k8s.container.ready` point as the decoders hand it to the rest of the pipeline.

/// The dimensions the rule can use, borrowed from the decoder's buffer.
///
/// Decoders resolve attribute precedence before building this: a data-point
/// attribute wins over a resource attribute of the same name, and only string values
/// count (contract section 1). A non-string value is treated as absent, so it neither
/// provides nor hides a dimension.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dims<'a> {
    /// `host.name`
    pub host_name: Option<&'a str>,
    /// `k8s.cluster.name`
    pub cluster_name: Option<&'a str>,
    /// `k8s.node.name`
    pub node_name: Option<&'a str>,
    /// `container.image.name`
    pub image_name: Option<&'a str>,
}

/// Attribute names, in one place.
pub mod attr {
    pub const HOST_NAME: &str = "host.name";
    pub const CLUSTER_NAME: &str = "k8s.cluster.name";
    pub const NODE_NAME: &str = "k8s.node.name";
    pub const IMAGE_NAME: &str = "container.image.name";
    /// The only metric the rule counts.
    pub const READY_METRIC: &str = "k8s.container.ready";
}

impl<'a> Dims<'a> {
    /// Sets a dimension if `key` is one the rule uses; returns whether it was.
    #[inline]
    pub fn set(&mut self, key: &str, value: &'a str) -> bool {
        let slot = match key {
            attr::HOST_NAME => &mut self.host_name,
            attr::CLUSTER_NAME => &mut self.cluster_name,
            attr::NODE_NAME => &mut self.node_name,
            attr::IMAGE_NAME => &mut self.image_name,
            _ => return false,
        };
        *slot = Some(value);
        true
    }

    /// `self` (the data point's own attributes) over `resource`.
    #[inline]
    pub fn over(self, resource: Dims<'a>) -> Dims<'a> {
        Dims {
            host_name: self.host_name.or(resource.host_name),
            cluster_name: self.cluster_name.or(resource.cluster_name),
            node_name: self.node_name.or(resource.node_name),
            image_name: self.image_name.or(resource.image_name),
        }
    }
}

/// One sighting: a `k8s.container.ready` point with its time and dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointRef<'a> {
    /// OTLP `time_unix_nano`; never 0 (decoders reject such points).
    pub time_unix_nano: u64,
    pub dims: Dims<'a>,
}
