//! A scan's baseline keys fed to the triage's index with the marks of
//! `BatchScan::for_each_baseline_key_marked` (no entry that an earlier key made, nor one
//! that no finding reads) decide every finding as the keys fed one by one do: the same
//! novelty scopes, look-alikes, registries and incidents.

use proptest::prelude::*;
use unseen_detect::BatchScan;
use unseen_findings::{Decider, Suppressions, TriageSettings, TriageState};
use unseen_model::{Windows, SEED_RULE};
use unseen_normalize::{KeyMode, KeyRef};

const T: i64 = 1_770_000_000;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn marked_baseline_keys_decide_as_every_key_does(
        points in prop::collection::vec((0usize..3, 0usize..4, 0usize..8, prop_oneof![-29i64 * 86_400..-2 * 86_400, -3_000i64..-1]), 0..60),
    ) {
        let clusters = ["prod", "staging", "dev"];
        // The same node names in several clusters.
        let nodes = ["node-1", "node-2", "ip-10-0-0-3.ec2.internal", "node-4"];
        let images = [
            "docker.io/library/nginx",
            "ghcr.io/acme/api",
            "ghcr.io/acme/worker",
            "quay.io/jetstack/cert-manager-controller",
            "registry.example.com:5000/team/app",
            "ghcr.io/acme/api-v2",
            // Look-alikes of `ghcr.io/acme/api`.
            "ghcr.io/acme/apl",
            "ghcr.io/acme/aip",
        ];
        let windows = Windows::default();
        let mut scan = BatchScan::new(windows, T);
        for (c, n, i, offset) in points {
            let node = nodes[n];
            let key = KeyRef { host: node, cluster: clusters[c], node, image: images[i].into() };
            scan.observe(key, T + offset, None);
        }
        let mode = KeyMode::default();
        let settings = TriageSettings::default();
        let suppressions = Suppressions::default();
        let decider = Decider {
            rule: &SEED_RULE,
            mode: &mode,
            windows,
            settings: &settings,
            suppressions: &suppressions,
            now: T,
            report: true,
        };
        let mut every = TriageState::untracked();
        scan.for_each_baseline_key(|c, n, i| decider.know_baseline(&mut every, c, n, i));
        let mut marked = TriageState::untracked();
        let (mut keys, mut skipped) = (0, 0);
        scan.for_each_baseline_key_marked(|key| {
            keys += 1;
            skipped += usize::from(!key.index_image);
            decider.know_baseline_key(&mut marked, key);
        });
        // From the ninth key on, some image was an earlier key's.
        prop_assert!(keys <= images.len() || skipped > 0);
        let detections = scan.finish();
        let every = decider.batch_with(detections.clone(), every);
        let marked = decider.batch_with(detections, marked);
        prop_assert_eq!(every, marked);
    }
}
