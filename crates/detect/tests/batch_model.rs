//! The compact `BatchScan` (interned key parts, `u32` offsets, a side table for what does
//! not fit) against the plain implementation it replaced: one `HashMap<Key, Agg>` of owned
//! strings and full-width numbers. Same points, same detections, field for field.

use std::collections::HashMap;

use proptest::prelude::*;
use unseen_detect::{BatchScan, Detection, Placement};
use unseen_model::{UnixSecs, Windows};
use unseen_normalize::{Key, KeyRef};

#[derive(Default)]
struct Agg {
    count: u64,
    first: UnixSecs,
    last: UnixSecs,
    in_baseline: bool,
    before_last: Option<UnixSecs>,
    host_name: Option<String>,
}

/// The straightforward implementation, as it was before the state was made compact.
struct Plain {
    scan: BatchScan, // only for `placement`, which is not under test here
    keys: HashMap<Key, Agg>,
}

impl Plain {
    fn new(w: Windows, at: UnixSecs) -> Self {
        Plain {
            scan: BatchScan::new(w, at),
            keys: HashMap::new(),
        }
    }

    fn observe(&mut self, key: KeyRef<'_>, t: UnixSecs, host_name: Option<&str>) -> Placement {
        let placement = self.scan.placement(t);
        if placement == Placement::AfterT {
            return placement;
        }
        let agg = self.keys.entry(key.to_owned_key()).or_default();
        if let Placement::Current | Placement::Both = placement {
            if agg.count == 0 || t < agg.first {
                agg.first = t;
            }
            if agg.count == 0 || t > agg.last {
                agg.last = t;
            }
            agg.count += 1;
            if agg.host_name.is_none() {
                agg.host_name = host_name.filter(|h| !h.is_empty()).map(str::to_string);
            }
        }
        match placement {
            Placement::Baseline | Placement::Both => agg.in_baseline = true,
            Placement::BeforeWindows => {
                agg.before_last = Some(agg.before_last.map_or(t, |b| b.max(t)));
            }
            _ => {}
        }
        placement
    }

    fn finish(self) -> Vec<Detection> {
        let mut out: Vec<Detection> = self
            .keys
            .into_iter()
            .filter(|(_, a)| a.count > 0 && !a.in_baseline)
            .map(|(key, a)| Detection {
                key,
                first_seen: a.first,
                last_seen: a.last,
                count: a.count,
                previous_seen: a.before_last,
                late: false,
                host_name: a.host_name,
                context: Default::default(),
                image_raw: None,
            })
            .collect();
        out.sort_by(|a, b| (a.first_seen, &a.key).cmp(&(b.first_seen, &b.key)));
        out
    }
}

const NAMES: [&str; 6] = ["", "a", "node-1", "node-2", "ip-10-0-0-1.ec2.internal", "ß"];

fn name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&NAMES[..])
}

/// A key whose host is its node (default mode) or any name (strict mode).
fn key() -> impl Strategy<Value = (&'static str, &'static str, &'static str, &'static str)> {
    (any::<bool>(), name(), name(), name(), name()).prop_map(|(same, h, c, n, i)| {
        let host = if same { n } else { h };
        (host, c, n, i)
    })
}

fn at() -> impl Strategy<Value = UnixSecs> {
    prop_oneof![
        4 => Just(1_700_000_000i64),
        1 => any::<i64>(),
        1 => prop::sample::select(vec![i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX]),
    ]
}

/// Valid windows, small or huge (offsets over `u32`), and arbitrary ones built without
/// `Windows::new` (the fields are public).
fn windows() -> impl Strategy<Value = Windows> {
    let valid = (1u64..6, 0u64..6, 1u64..12).prop_map(|(r, extra_c, extra_b)| {
        let c = r + extra_c;
        Windows::new(c, c + extra_b, r).unwrap()
    });
    prop_oneof![
        4 => valid,
        1 => Just(Windows::default()),
        1 => (1u64..1 << 40, 0u64..1 << 40, 0u64..1 << 40).prop_map(|(r, c, b)| {
            Windows::new(r + c, r + c + b + 1, r).unwrap()
        }),
        1 => (any::<u64>(), any::<u64>(), any::<u64>())
            .prop_map(|(current, baseline, recent)| Windows { current, baseline, recent }),
        1 => (0u64..20, 0u64..20, 0u64..20)
            .prop_map(|(current, baseline, recent)| Windows { current, baseline, recent }),
    ]
}

/// Times near T and the window edges, far from them (beyond `u32` offsets), and extremes.
fn time(at: UnixSecs, w: Windows) -> impl Strategy<Value = UnixSecs> {
    let edge = |d: u64| at.saturating_sub(i64::try_from(d).unwrap_or(i64::MAX));
    let edges = vec![at, edge(w.recent), edge(w.current), edge(w.baseline)];
    prop_oneof![
        4 => (prop::sample::select(edges), -3i64..=3).prop_map(|(e, d)| e.saturating_add(d)),
        2 => (-(40 * 86_400i64)..10).prop_map(move |d| at.saturating_add(d)),
        1 => (-(1i64 << 34)..(1i64 << 33)).prop_map(move |d| at.saturating_add(d)),
        1 => any::<i64>(),
        1 => prop::sample::select(vec![i64::MIN, i64::MAX, 0]),
    ]
}

fn host_name() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![Just(None), name().prop_map(Some)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn compact_scan_equals_the_plain_one(
        (w, at, points) in (windows(), at()).prop_flat_map(|(w, at)| {
            (Just(w), Just(at), prop::collection::vec((key(), time(at, w), host_name()), 0..80))
        })
    ) {
        let mut plain = Plain::new(w, at);
        let mut scan = BatchScan::new(w, at);
        for ((h, c, n, i), t, host) in points {
            let key = KeyRef { host: h, cluster: c, node: n, image: i.into() };
            prop_assert_eq!(scan.observe(key.clone(), t, host), plain.observe(key, t, host));
        }
        prop_assert_eq!(scan.keys(), plain.keys.len());
        prop_assert_eq!(scan.finish(), plain.finish());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// A finding's evidence (context attributes, the image as the point named it) is the
    /// one of its first point in the current window; among points of the same second, the
    /// first observed.
    #[test]
    fn evidence_is_the_first_current_points(
        points in prop::collection::vec(
            (0usize..3, 0usize..3, -(2 * 3_600i64)..60, 0usize..4),
            0..60,
        )
    ) {
        let w = Windows::default();
        let at = 1_700_000_000;
        let nodes = ["n1", "n2", "n3"];
        let images = ["docker.io/library/nginx", "ghcr.io/acme/api", "quay.io/x/y"];
        let pods = ["web-0", "web-1", "api-7d4b9c6f8d-x2x7q", "job-x7k2p"];
        let mut scan = BatchScan::new(w, at);
        let mut model: HashMap<(usize, usize), (UnixSecs, usize)> = HashMap::new();
        for (n, i, offset, pod) in points {
            let t = at + offset;
            let key = KeyRef { host: nodes[n], cluster: "c", node: nodes[n], image: images[i].into() };
            let mut context = unseen_model::Context::default();
            context.0[unseen_model::ctx::POD_NAME] = Some(pods[pod]);
            // The raw name differs from the key's image for one pod, as `nginx:1` would.
            let raw = if pod == 3 { "raw-spelling" } else { images[i] };
            let placement = scan.observe_with(key, t, None, Some((&context, raw)));
            if placement == Placement::Current {
                let e = model.entry((n, i)).or_insert((t, pod));
                if t < e.0 {
                    *e = (t, pod);
                }
            }
        }
        for d in scan.finish() {
            let n = nodes.iter().position(|x| *x == d.key.node).unwrap();
            let i = images.iter().position(|x| *x == d.key.image).unwrap();
            let (t, pod) = model[&(n, i)];
            prop_assert_eq!(t, d.first_seen);
            prop_assert_eq!(d.context.get(unseen_model::ctx::POD_NAME), Some(pods[pod]));
            prop_assert_eq!(d.image_raw.as_deref(), (pod == 3).then_some("raw-spelling"));
        }
    }
}

#[test]
fn many_keys() {
    // Enough keys to grow the tables many times, with repeats, in both windows.
    let w = Windows::default();
    let at = 1_700_000_000;
    let mut plain = Plain::new(w, at);
    let mut scan = BatchScan::new(w, at);
    let nodes: Vec<String> = (0..300)
        .map(|n| format!("ip-10-0-{}-{}", n / 250, n % 250))
        .collect();
    let images: Vec<String> = (0..97)
        .map(|i| format!("registry/team/service-{i}"))
        .collect();
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..60_000 {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let node = &nodes[(s % 300) as usize];
        let image = &images[(s >> 16) as usize % 97];
        let cluster = if s >> 40 & 1 == 0 { "prod" } else { "staging" };
        let t = at - (s >> 20) as i64 % (40 * 86_400);
        let key = KeyRef {
            host: node,
            cluster,
            node,
            image: image.into(),
        };
        let host = Some(["vm-a", "vm-b", ""][(s >> 50) as usize % 3]);
        assert_eq!(
            scan.observe(key.clone(), t, host),
            plain.observe(key, t, host)
        );
    }
    assert_eq!(scan.keys(), plain.keys.len());
    let (got, expected) = (scan.finish(), plain.finish());
    assert!(!expected.is_empty());
    assert_eq!(got, expected);
}
