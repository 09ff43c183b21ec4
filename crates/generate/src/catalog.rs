//! The image catalog: every `container.image.name` a history can use, split by role.

use std::ops::Range;

use crate::rng::Rng;

/// Images every cluster runs: the collector (as the cluster receiver's deployment and as an
/// agent daemon set) and node daemons. Names as the runtime reports them in the status.
const SYSTEM: [(&str, &str, &str); 4] = [
    (
        "docker.io/otel/opentelemetry-collector-contrib",
        "otel-collector",
        "observability",
    ),
    ("registry.k8s.io/kube-proxy", "kube-proxy", "kube-system"),
    ("quay.io/cilium/cilium", "cilium-agent", "kube-system"),
    ("cr.fluentbit.io/fluent/fluent-bit", "fluent-bit", "logging"),
];

/// Public images that application teams run, used first.
const PUBLIC: [&str; 10] = [
    "docker.io/library/nginx",
    "docker.io/library/redis",
    "docker.io/bitnami/postgresql",
    "docker.io/library/rabbitmq",
    "quay.io/prometheus/prometheus",
    "docker.io/grafana/grafana",
    "registry.k8s.io/ingress-nginx/controller",
    "quay.io/jetstack/cert-manager-controller",
    "docker.io/envoyproxy/envoy",
    "ghcr.io/dexidp/dex",
];

const REGISTRIES: [&str; 4] = [
    "123456789012.dkr.ecr.us-east-1.amazonaws.com",
    "europe-west1-docker.pkg.dev/acme-prod",
    "acmeprod.azurecr.io",
    "ghcr.io/acme",
];

/// Namespaces of application workloads; also the teams in internal image paths.
pub(crate) const TEAMS: [&str; 10] = [
    "payments", "checkout", "search", "platform", "data", "ml", "web", "identity", "ingest",
    "default",
];

const WORDS: [&str; 30] = [
    "payment",
    "checkout",
    "cart",
    "search",
    "catalog",
    "user",
    "auth",
    "billing",
    "invoice",
    "ledger",
    "order",
    "shipping",
    "inventory",
    "pricing",
    "review",
    "notify",
    "email",
    "report",
    "export",
    "import",
    "feature",
    "session",
    "profile",
    "media",
    "thumbnail",
    "recommend",
    "fraud",
    "risk",
    "audit",
    "gateway",
];
const SUFFIXES: [&str; 10] = [
    "api",
    "worker",
    "service",
    "consumer",
    "scheduler",
    "sync",
    "web",
    "cron",
    "processor",
    "indexer",
];

/// One catalog entry.
#[derive(Debug, Clone)]
pub(crate) struct Image {
    pub(crate) name: String,
    /// The workload and container name teams give it.
    pub(crate) short: String,
    pub(crate) namespace: &'static str,
    /// Internal images carry `git-<sha>` tags, public ones semantic versions.
    pub(crate) sha_tags: bool,
}

/// The catalog, split into disjoint ranges of indexes:
/// - `system`: run by every cluster (collector, node daemons);
/// - `base`: application images in use from the start;
/// - `seasonal`: each used by one workload that goes away and comes back after the gap;
/// - `fresh`: unused at the start, introduced one by one over the history.
#[derive(Debug)]
pub(crate) struct Catalog {
    pub(crate) images: Vec<Image>,
    pub(crate) system: Range<u32>,
    pub(crate) base: Range<u32>,
    pub(crate) seasonal: Range<u32>,
    pub(crate) fresh: Range<u32>,
}

impl Catalog {
    pub(crate) fn new(size: u32, rng: &mut Rng) -> Catalog {
        let system = (size / 10).clamp(1, SYSTEM.len() as u32);
        let rest = size - system;
        let seasonal = if rest >= 3 { (rest / 20).max(1) } else { 0 };
        let fresh = if rest >= 2 { (rest / 5).max(1) } else { 0 };
        let base = rest - seasonal - fresh;

        let mut images = Vec::with_capacity(size as usize);
        for &(name, short, namespace) in &SYSTEM[..system as usize] {
            images.push(Image {
                name: name.to_string(),
                short: short.to_string(),
                namespace,
                sha_tags: false,
            });
        }
        // Service names: every word × suffix pair once, in a seeded order, then again with
        // a numeric suffix.
        let mut pairs: Vec<(usize, usize)> = (0..WORDS.len())
            .flat_map(|w| (0..SUFFIXES.len()).map(move |s| (w, s)))
            .collect();
        for i in (1..pairs.len()).rev() {
            pairs.swap(i, rng.index(i + 1));
        }
        let mut internal = 0usize;
        for k in 0..rest as usize {
            if k < PUBLIC.len() {
                let name = PUBLIC[k];
                let short = name.rsplit('/').next().unwrap_or(name);
                images.push(Image {
                    name: name.to_string(),
                    short: short.to_string(),
                    namespace: TEAMS[k % TEAMS.len()],
                    sha_tags: false,
                });
                continue;
            }
            let (w, s) = pairs[internal % pairs.len()];
            let round = internal / pairs.len();
            internal += 1;
            let short = if round == 0 {
                format!("{}-{}", WORDS[w], SUFFIXES[s])
            } else {
                format!("{}-{}-{}", WORDS[w], SUFFIXES[s], round + 1)
            };
            let team = *rng.pick(&TEAMS);
            let registry = rng.pick(&REGISTRIES);
            images.push(Image {
                name: format!("{registry}/{team}/{short}"),
                short,
                namespace: team,
                sha_tags: true,
            });
        }
        // Shuffle the application images so that public ones are not all `base`.
        let apps = &mut images[system as usize..];
        for i in (1..apps.len()).rev() {
            apps.swap(i, rng.index(i + 1));
        }
        let base_end = system + base;
        let seasonal_end = base_end + seasonal;
        Catalog {
            images,
            system: 0..system,
            base: system..base_end,
            seasonal: base_end..seasonal_end,
            fresh: seasonal_end..size,
        }
    }

    pub(crate) fn get(&self, index: u32) -> &Image {
        &self.images[index as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_partition_the_catalog_and_names_are_unique() {
        for size in [1u32, 2, 3, 4, 5, 10, 20, 200, 1000] {
            let c = Catalog::new(size, &mut Rng::new(3));
            assert_eq!(c.images.len(), size as usize);
            assert_eq!(c.system.start, 0);
            assert_eq!(c.system.end, c.base.start);
            assert_eq!(c.base.end, c.seasonal.start);
            assert_eq!(c.seasonal.end, c.fresh.start);
            assert_eq!(c.fresh.end, size);
            assert!(!c.system.is_empty());
            if size >= 2 {
                assert!(!c.base.is_empty(), "size {size}");
            }
            let mut names: Vec<&str> = c.images.iter().map(|i| i.name.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), size as usize, "size {size}");
        }
    }
}
