//! The key of the rule (contract section 2), and why a point has none.
//!
//! This crate enforces one rule: a point either has a complete key or a named
//! [`DropReason`]. Nothing downstream sees a partial key, and nothing is dropped
//! without a reason that can be counted and explained.

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;
use unseen_model::{attr, ctx, Dims};

pub mod image;
pub mod lookalike;
pub mod quick_hash;

pub use image::ImageRef;

/// How the key is built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyMode {
    /// The seed's exact dimensions: `host` is `host.name`, no cluster fallback.
    pub strict: bool,
    /// Default mode only: the cluster for points without `k8s.cluster.name`.
    pub cluster_name: Option<String>,
}

impl KeyMode {
    pub fn name(&self) -> &'static str {
        if self.strict {
            "strict"
        } else {
            "default"
        }
    }
}

/// The rule's key: (host, cluster, node, image). Field order is the seed's `by` clause.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Key {
    pub host: String,
    pub cluster: String,
    pub node: String,
    pub image: String,
}

/// A key borrowed from the decoder's buffer; becomes a [`Key`] only when it must be
/// stored, so lookups of known keys allocate nothing. The image is owned only when its
/// canonical form differs from what the point said (`nginx:1.25` is
/// `docker.io/library/nginx`); names already canonical, the usual case, stay borrowed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyRef<'a> {
    pub host: &'a str,
    pub cluster: &'a str,
    pub node: &'a str,
    pub image: Cow<'a, str>,
}

impl KeyRef<'_> {
    pub fn to_owned_key(&self) -> Key {
        Key {
            host: self.host.to_string(),
            cluster: self.cluster.to_string(),
            node: self.node.to_string(),
            image: self.image.to_string(),
        }
    }
}

// Lets hash maps keyed by `Key` be probed with a `KeyRef` (same hash: both hash four
// `str`s in the same order).
impl hashbrown::Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        *self == key.as_ref()
    }
}

impl Key {
    pub fn as_ref(&self) -> KeyRef<'_> {
        KeyRef {
            host: &self.host,
            cluster: &self.cluster,
            node: &self.node,
            image: Cow::Borrowed(&self.image),
        }
    }
}

/// Why a point has no key. Each has a fix the user can apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    MissingHostName,
    MissingClusterName,
    MissingNodeName,
    MissingImageName,
}

impl DropReason {
    pub const ALL: [DropReason; 4] = [
        DropReason::MissingHostName,
        DropReason::MissingClusterName,
        DropReason::MissingNodeName,
        DropReason::MissingImageName,
    ];

    /// Stable name, used in summaries and as a metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::MissingHostName => "missing_host_name",
            DropReason::MissingClusterName => "missing_cluster_name",
            DropReason::MissingNodeName => "missing_node_name",
            DropReason::MissingImageName => "missing_image_name",
        }
    }

    /// The attribute that was missing or empty.
    pub fn attribute(self) -> &'static str {
        match self {
            DropReason::MissingHostName => attr::HOST_NAME,
            DropReason::MissingClusterName => attr::CLUSTER_NAME,
            DropReason::MissingNodeName => attr::NODE_NAME,
            DropReason::MissingImageName => attr::IMAGE_NAME,
        }
    }

    /// What to do about it, in the mode that produced it.
    pub fn fix(self, mode: &KeyMode) -> &'static str {
        match (self, mode.strict) {
            (DropReason::MissingHostName, _) => "strict mode needs `host.name` on every point; add it in the Collector (resourcedetection processor) or drop --strict to use the node as host",
            (DropReason::MissingClusterName, true) => "strict mode needs `k8s.cluster.name`; add it in the Collector (resource processor), or drop --strict and set --cluster-name",
            (DropReason::MissingClusterName, false) => "set --cluster-name (or `cluster_name` in the config), or add `k8s.cluster.name` in the Collector (resource processor)",
            (DropReason::MissingNodeName, _) => "`k8s.node.name` comes from the k8s_cluster receiver; check that its container resource attributes are enabled and not removed by a processor",
            (DropReason::MissingImageName, _) => "`container.image.name` comes from the k8s_cluster receiver; check that it is enabled and not removed by a processor",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn present(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.is_empty())
}

/// The key of a point (contract section 2). Missing and empty parts are the same.
///
/// Reasons are checked in the key's order, so a point missing several parts is
/// counted once, under the first. In default mode the image is its canonical reference
/// ([`image::canonical`]); strict mode compares the seed's exact strings.
pub fn key_of<'a>(dims: &Dims<'a>, mode: &'a KeyMode) -> Result<KeyRef<'a>, DropReason> {
    key_with(dims, mode, image::canonical)
}

/// [`key_of`], with the image names' canonical forms remembered in `memo` (what a scan
/// does: it reads the same images in millions of points).
pub fn key_of_memo<'a>(
    dims: &Dims<'a>,
    mode: &'a KeyMode,
    memo: &mut image::CanonicalMemo,
) -> Result<KeyRef<'a>, DropReason> {
    key_with(dims, mode, |name, tag| memo.canonical(name, tag))
}

/// [`key_of`] with the image name as the point gave it, not yet canonical: the same
/// checks and drops. `image::canonical` (or a memo's) of the image and the point's
/// `container.image.tag` completes it in default mode; strict mode takes it as it is. For
/// callers that canonicalize later (`unseen_detect::Pipelined`, which first fetches the
/// memo's slot from memory).
pub fn key_of_raw<'a>(dims: &Dims<'a>, mode: &'a KeyMode) -> Result<KeyRef<'a>, DropReason> {
    key_with(dims, mode, |name, _| Cow::Borrowed(name))
}

fn key_with<'a>(
    dims: &Dims<'a>,
    mode: &'a KeyMode,
    canonical: impl FnOnce(&'a str, Option<&str>) -> Cow<'a, str>,
) -> Result<KeyRef<'a>, DropReason> {
    let node = present(dims.node_name);
    let host = if mode.strict {
        present(dims.host_name).ok_or(DropReason::MissingHostName)?
    } else {
        node.ok_or(DropReason::MissingNodeName)?
    };
    let cluster = match present(dims.cluster_name) {
        Some(c) => c,
        None if !mode.strict => {
            present(mode.cluster_name.as_deref()).ok_or(DropReason::MissingClusterName)?
        }
        None => return Err(DropReason::MissingClusterName),
    };
    let node = node.ok_or(DropReason::MissingNodeName)?;
    let image = present(dims.image_name).ok_or(DropReason::MissingImageName)?;
    let image = if mode.strict {
        Cow::Borrowed(image)
    } else {
        canonical(image, dims.context.get(ctx::IMAGE_TAG))
    };
    Ok(KeyRef {
        host,
        cluster,
        node,
        image,
    })
}

/// Drop counts by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts([u64; 4]);

impl DropCounts {
    pub fn add(&mut self, reason: DropReason) {
        self.0[reason as usize] += 1;
    }
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    pub fn merge(&mut self, other: &DropCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }
    /// Non-zero counts, in reason order.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .into_iter()
            .map(|r| (r, self.get(r)))
            .filter(|&(_, n)| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims<'a>(
        host: Option<&'a str>,
        cluster: Option<&'a str>,
        node: Option<&'a str>,
        image: Option<&'a str>,
    ) -> Dims<'a> {
        Dims {
            host_name: host,
            cluster_name: cluster,
            node_name: node,
            image_name: image,
            ..Dims::default()
        }
    }

    #[test]
    fn default_mode_uses_the_node_as_host_and_the_configured_cluster() {
        let mode = KeyMode {
            strict: false,
            cluster_name: Some("prod".into()),
        };
        let d = dims(Some("collector-vm"), None, Some("node-1"), Some("nginx"));
        assert_eq!(
            key_of(&d, &mode),
            Ok(KeyRef {
                host: "node-1",
                cluster: "prod",
                node: "node-1",
                image: Cow::Borrowed("docker.io/library/nginx")
            })
        );
        let d = dims(None, Some("eks-1"), Some("node-1"), Some("nginx"));
        assert_eq!(key_of(&d, &mode).map(|k| k.cluster), Ok("eks-1"));
    }

    #[test]
    fn strict_mode_is_the_seed_exactly() {
        let mode = KeyMode {
            strict: true,
            cluster_name: Some("ignored".into()),
        };
        let d = dims(Some("vm"), Some("c"), Some("n"), Some("i"));
        assert_eq!(
            key_of(&d, &mode),
            Ok(KeyRef {
                host: "vm",
                cluster: "c",
                node: "n",
                image: Cow::Borrowed("i")
            })
        );
        let d = dims(None, Some("c"), Some("n"), Some("i"));
        assert_eq!(key_of(&d, &mode), Err(DropReason::MissingHostName));
        let d = dims(Some("vm"), None, Some("n"), Some("i"));
        assert_eq!(key_of(&d, &mode), Err(DropReason::MissingClusterName));
    }

    #[test]
    fn empty_is_missing() {
        let mode = KeyMode::default();
        let table = [
            (
                dims(None, Some("c"), Some(""), Some("i")),
                DropReason::MissingNodeName,
            ),
            (
                dims(None, Some(""), Some("n"), Some("i")),
                DropReason::MissingClusterName,
            ),
            (
                dims(None, Some("c"), Some("n"), Some("")),
                DropReason::MissingImageName,
            ),
            (
                dims(None, Some("c"), Some("n"), None),
                DropReason::MissingImageName,
            ),
        ];
        for (d, reason) in table {
            assert_eq!(key_of(&d, &mode), Err(reason), "{d:?}");
        }
        let empty_config = KeyMode {
            strict: false,
            cluster_name: Some(String::new()),
        };
        assert_eq!(
            key_of(&dims(None, None, Some("n"), Some("i")), &empty_config),
            Err(DropReason::MissingClusterName)
        );
    }

    #[test]
    fn counts_by_reason() {
        let mut c = DropCounts::default();
        c.add(DropReason::MissingImageName);
        c.add(DropReason::MissingImageName);
        c.add(DropReason::MissingClusterName);
        assert_eq!(c.total(), 3);
        assert_eq!(
            c.iter().collect::<Vec<_>>(),
            vec![
                (DropReason::MissingClusterName, 1),
                (DropReason::MissingImageName, 2)
            ]
        );
    }
}
