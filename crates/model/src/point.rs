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
    /// The attributes a finding carries as evidence ([`CONTEXT_ATTRS`]): never part of the
    /// key, except that `container.image.tag` lets the image's canonical form recognise the
    /// runtimes' bare-digest quirk (contract section 2).
    pub context: Context<'a>,
}

/// The evidence attributes, in [`Context`] slot order. The `k8s.<kind>.name` owners are
/// what the Collector's `k8sattributes` processor adds; the rest come from the
/// `k8s_cluster` receiver itself.
pub const CONTEXT_ATTRS: [&str; 12] = [
    attr::NAMESPACE_NAME,
    attr::POD_NAME,
    attr::POD_UID,
    attr::CONTAINER_NAME,
    attr::CONTAINER_ID,
    attr::IMAGE_TAG,
    attr::DEPLOYMENT_NAME,
    attr::STATEFULSET_NAME,
    attr::DAEMONSET_NAME,
    attr::JOB_NAME,
    attr::CRONJOB_NAME,
    attr::REPLICASET_NAME,
];

/// How many evidence attributes there are.
pub const CONTEXT_LEN: usize = CONTEXT_ATTRS.len();

/// The evidence attributes of a point, borrowed like [`Dims`]; `None` when absent.
///
/// A value that is not usable (not UTF-8, over the dimension size limit) is absent here:
/// evidence never costs a sighting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Context<'a>(pub [Option<&'a str>; CONTEXT_LEN]);

/// Slots of [`Context`], by name.
pub mod ctx {
    pub const NAMESPACE: usize = 0;
    pub const POD_NAME: usize = 1;
    pub const POD_UID: usize = 2;
    pub const CONTAINER_NAME: usize = 3;
    pub const CONTAINER_ID: usize = 4;
    pub const IMAGE_TAG: usize = 5;
    /// The owner attributes, most specific owner first: a pod of a CronJob's Job also has
    /// `k8s.job.name`, and a Deployment's pod has `k8s.replicaset.name` too.
    pub const DEPLOYMENT: usize = 6;
    pub const STATEFULSET: usize = 7;
    pub const DAEMONSET: usize = 8;
    pub const JOB: usize = 9;
    pub const CRONJOB: usize = 10;
    pub const REPLICASET: usize = 11;
}

impl<'a> Context<'a> {
    /// The slot of an evidence attribute, `None` for every other key.
    #[inline]
    pub fn slot(key: &str) -> Option<usize> {
        CONTEXT_ATTRS.iter().position(|a| *a == key)
    }

    #[inline]
    pub fn get(&self, slot: usize) -> Option<&'a str> {
        self.0.get(slot).copied().flatten()
    }

    /// `self` (the data point's own attributes) over `resource`, slot by slot.
    #[inline]
    pub fn over(self, resource: Context<'a>) -> Context<'a> {
        Context(std::array::from_fn(|i| self.0[i].or(resource.0[i])))
    }
}

/// Attribute names, in one place.
pub mod attr {
    pub const HOST_NAME: &str = "host.name";
    pub const CLUSTER_NAME: &str = "k8s.cluster.name";
    pub const NODE_NAME: &str = "k8s.node.name";
    pub const IMAGE_NAME: &str = "container.image.name";
    pub const NAMESPACE_NAME: &str = "k8s.namespace.name";
    pub const POD_NAME: &str = "k8s.pod.name";
    pub const POD_UID: &str = "k8s.pod.uid";
    pub const CONTAINER_NAME: &str = "k8s.container.name";
    pub const CONTAINER_ID: &str = "container.id";
    pub const IMAGE_TAG: &str = "container.image.tag";
    pub const DEPLOYMENT_NAME: &str = "k8s.deployment.name";
    pub const STATEFULSET_NAME: &str = "k8s.statefulset.name";
    pub const DAEMONSET_NAME: &str = "k8s.daemonset.name";
    pub const JOB_NAME: &str = "k8s.job.name";
    pub const CRONJOB_NAME: &str = "k8s.cronjob.name";
    pub const REPLICASET_NAME: &str = "k8s.replicaset.name";
    /// The only metric the rule counts.
    pub const READY_METRIC: &str = "k8s.container.ready";
}

impl<'a> Dims<'a> {
    /// Sets a dimension if `key` is one the rule uses or an evidence attribute; returns
    /// whether it was.
    #[inline]
    pub fn set(&mut self, key: &str, value: &'a str) -> bool {
        let slot = match key {
            attr::HOST_NAME => &mut self.host_name,
            attr::CLUSTER_NAME => &mut self.cluster_name,
            attr::NODE_NAME => &mut self.node_name,
            attr::IMAGE_NAME => &mut self.image_name,
            _ => match Context::slot(key) {
                Some(i) => &mut self.context.0[i],
                None => return false,
            },
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
            context: self.context.over(resource.context),
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

/// A point's evidence attributes, owned: what a sighting keeps until the store has decided
/// whether it opens an episode. One allocation for all of them (none when all are absent),
/// because the server makes one per sighting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct OwnedContext {
    /// The present values, concatenated in slot order.
    text: Box<str>,
    /// End of each slot's value in `text` (a slot's start is the previous slot's end).
    ends: [u32; CONTEXT_LEN],
    /// Bit `i` is set when slot `i` is present (it may be present and empty).
    present: u16,
}

impl OwnedContext {
    /// Bytes it holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.text.len()
    }

    pub fn new(context: &Context<'_>) -> Self {
        let len: usize = context.0.iter().flatten().map(|v| v.len()).sum();
        let mut text = String::with_capacity(len);
        let mut ends = [0u32; CONTEXT_LEN];
        let mut present = 0u16;
        for (i, value) in context.0.iter().enumerate() {
            if let Some(v) = value {
                text.push_str(v);
                present |= 1 << i;
            }
            // Dimension values are capped far below 4 GiB by the decoders' limits.
            ends[i] = u32::try_from(text.len()).unwrap_or(u32::MAX);
        }
        OwnedContext {
            text: text.into_boxed_str(),
            ends,
            present,
        }
    }

    /// The value of slot `slot` ([`ctx`]), `None` when absent.
    pub fn get(&self, slot: usize) -> Option<&str> {
        if slot >= CONTEXT_LEN || self.present & (1 << slot) == 0 {
            return None;
        }
        let start = if slot == 0 { 0 } else { self.ends[slot - 1] } as usize;
        self.text.get(start..self.ends[slot] as usize)
    }

    /// Borrowed again, slot for slot.
    pub fn as_context(&self) -> Context<'_> {
        Context(std::array::from_fn(|i| self.get(i)))
    }

    pub fn is_empty(&self) -> bool {
        self.present == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_context_round_trips_present_absent_and_empty_values() {
        let mut context = Context::default();
        context.0[ctx::NAMESPACE] = Some("payments");
        context.0[ctx::POD_NAME] = Some("");
        context.0[ctx::REPLICASET] = Some("api-7d4b9c");
        let owned = OwnedContext::new(&context);
        assert_eq!(owned.as_context(), context);
        assert_eq!(owned.get(ctx::NAMESPACE), Some("payments"));
        assert_eq!(owned.get(ctx::POD_NAME), Some(""));
        assert_eq!(owned.get(ctx::POD_UID), None);
        assert_eq!(owned.get(ctx::REPLICASET), Some("api-7d4b9c"));
        assert_eq!(owned.get(CONTEXT_LEN), None);
        assert!(OwnedContext::new(&Context::default()).is_empty());
    }

    #[test]
    fn every_context_attribute_has_a_slot_and_sets_through_dims() {
        for (i, name) in CONTEXT_ATTRS.iter().enumerate() {
            assert_eq!(Context::slot(name), Some(i));
            let mut dims = Dims::default();
            assert!(dims.set(name, "v"));
            assert_eq!(dims.context.get(i), Some("v"));
        }
        let mut point = Dims::default();
        point.set(attr::NAMESPACE_NAME, "own");
        let mut resource = Dims::default();
        resource.set(attr::NAMESPACE_NAME, "resource");
        resource.set(attr::POD_NAME, "pod");
        let both = point.over(resource);
        assert_eq!(both.context.get(ctx::NAMESPACE), Some("own"));
        assert_eq!(both.context.get(ctx::POD_NAME), Some("pod"));
    }
}
