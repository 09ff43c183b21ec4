//! Typosquat look-alikes: an image new to the whole fleet whose repository is a small edit
//! away from a known one (`docker.io/library/ngnix` beside `docker.io/library/nginx`).
//!
//! Only repositories of the same registry are compared, on the repository part: a
//! look-alike on another registry is a different supply chain, and comparing registries
//! too would make every mirror (`ghcr.io/acme/x` beside `quay.io/acme/x`) a look-alike.
//! Short names get a tighter threshold, since one edit already turns many short names into
//! other real ones.

use crate::image::registry_of;

/// Last path components shorter than this get a threshold of 1, longer ones 2.
const SHORT_NAME: usize = 6;

/// The known repository (canonical form) closest to `candidate` within a small edit distance,
/// or None. Used for an image new to the whole fleet: `docker.io/library/ngnix` vs a known
/// `docker.io/library/nginx`, `docker.io/bitnami/rediss` vs `docker.io/bitnami/redis`.
///
/// `candidate` and `known` are canonical forms ([`crate::image::canonical`]); anything
/// else (a digest-only image, a value that is not a reference, a non-canonical spelling)
/// has no look-alike and is never one. The threshold is set by the candidate's last path
/// component: 1 edit when it is shorter than 6 characters, else 2. Equal strings are not
/// look-alikes. Ties go to the smaller distance, then the lexicographically smallest.
pub fn look_alike<'k>(
    candidate: &str,
    known: impl IntoIterator<Item = &'k str>,
) -> Option<&'k str> {
    let registry = registry_of(candidate)?;
    let repository = &candidate[registry.len() + 1..];
    let last = repository.rsplit('/').next().unwrap_or(repository);
    let max = if last.chars().count() < SHORT_NAME {
        1
    } else {
        2
    };
    let mut best: Option<(usize, &'k str)> = None;
    for k in known {
        if k == candidate || registry_of(k) != Some(registry) {
            continue;
        }
        let bound = best.map_or(max, |(d, _)| d);
        let Some(d) = osa_distance(repository, &k[registry.len() + 1..], bound) else {
            continue;
        };
        if best.is_none_or(|(bd, bk)| (d, k) < (bd, bk)) {
            best = Some((d, k));
        }
    }
    best.map(|(_, k)| k)
}

/// Optimal string alignment distance (Levenshtein plus adjacent transpositions), bounded:
/// returns None as soon as the distance exceeds `max`. Counts `char`s.
pub fn osa_distance(a: &str, b: &str, max: usize) -> Option<usize> {
    if a.is_ascii() && b.is_ascii() {
        osa(a.as_bytes(), b.as_bytes(), max)
    } else {
        let a: Vec<char> = a.chars().collect();
        let b: Vec<char> = b.chars().collect();
        osa(&a, &b, max)
    }
}

fn osa<T: Eq>(a: &[T], b: &[T], max: usize) -> Option<usize> {
    if a.len().abs_diff(b.len()) > max {
        return None;
    }
    // A common prefix or suffix costs no edit (an optimal alignment matches it as it is,
    // transpositions included): what is left of two similar names is a few characters,
    // not a table of their whole lengths.
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let (a, b) = (&a[prefix..], &b[prefix..]);
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (a, b) = (&a[..a.len() - suffix], &b[..b.len() - suffix]);
    if a.is_empty() || b.is_empty() {
        // Only insertions (or nothing) are left, and their number is within `max`.
        return Some(a.len().max(b.len()));
    }
    // Three rows of the table: i-2, i-1 and i. A row's minimum never decreases from one
    // row to the next, so once it exceeds `max` the distance does too.
    let m = b.len();
    let mut before: Vec<usize> = vec![0; m + 1];
    let mut prev: Vec<usize> = (0..=m).collect();
    let mut cur: Vec<usize> = vec![0; m + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        let mut row_min = i;
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(before[j - 2] + 1);
            }
            cur[j] = d;
            row_min = row_min.min(d);
        }
        if row_min > max {
            return None;
        }
        std::mem::swap(&mut before, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    Some(prev[m]).filter(|&d| d <= max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KNOWN: [&str; 6] = [
        "docker.io/library/nginx",
        "docker.io/library/redis",
        "docker.io/bitnami/redis",
        "docker.io/library/postgres",
        "ghcr.io/acme/api",
        "quay.io/prometheus/node-exporter",
    ];

    #[test]
    fn typosquats_are_found() {
        let table = [
            ("docker.io/library/ngnix", "docker.io/library/nginx"),
            ("docker.io/library/nginxx", "docker.io/library/nginx"),
            ("docker.io/library/ngin", "docker.io/library/nginx"),
            ("docker.io/bitnami/rediss", "docker.io/bitnami/redis"),
            ("docker.io/library/postgress", "docker.io/library/postgres"),
            ("docker.io/library/postrges", "docker.io/library/postgres"),
            ("docker.io/libary/postgres", "docker.io/library/postgres"),
            ("ghcr.io/acme/apj", "ghcr.io/acme/api"),
            (
                "quay.io/prometheus/node-exportr",
                "quay.io/prometheus/node-exporter",
            ),
            (
                "quay.io/prometheus/node_exportre",
                "quay.io/prometheus/node-exporter",
            ),
        ];
        for (candidate, want) in table {
            assert_eq!(look_alike(candidate, KNOWN), Some(want), "{candidate}");
        }
    }

    #[test]
    fn others_are_not() {
        for candidate in [
            // Known itself.
            "docker.io/library/nginx",
            // Far from every known name.
            "docker.io/library/mysql",
            "docker.io/library/busybox",
            // Short names: two edits is too many.
            "docker.io/library/ngixy",
            "ghcr.io/acme/apxx",
            // Long names: three edits is too many.
            "docker.io/library/postgrexxx",
            // Other registry.
            "ghcr.io/a/nginx",
            "ghcr.io/library/ngnix",
            "quay.io/library/nginx",
            // Not canonical forms, digest-only, not references.
            "ngnix",
            "docker.io/ngnix",
            "DOCKER.IO/library/ngnix",
            "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "Docker.io/library/ngnix",
            "",
        ] {
            assert_eq!(look_alike(candidate, KNOWN), None, "{candidate}");
        }
        assert_eq!(
            look_alike("docker.io/library/redis", ["docker.io/library/nginx"]),
            None
        );
        assert_eq!(
            look_alike("ghcr.io/a/nginx", ["docker.io/library/ngnix"]),
            None
        );
        assert_eq!(
            look_alike("docker.io/library/ngnix", ["ghcr.io/library/nginx"]),
            None
        );
        assert_eq!(look_alike("docker.io/library/ngnix", []), None);
    }

    #[test]
    fn ties_go_to_the_nearest_then_the_smallest() {
        let known = [
            "docker.io/library/redisx",
            "docker.io/library/redis",
            "docker.io/library/rediss",
            "docker.io/library/redia",
        ];
        // `redisz` is 1 from `redis`, `redisx`, `rediss`: the smallest of these.
        assert_eq!(
            look_alike("docker.io/library/redisz", known),
            Some("docker.io/library/redis")
        );
        // `rediaa` is 1 from `redia`, 2 from the others.
        assert_eq!(
            look_alike("docker.io/library/rediaa", known),
            Some("docker.io/library/redia")
        );
        let known = ["docker.io/library/abcdef", "docker.io/library/abcxyz"];
        assert_eq!(
            look_alike("docker.io/library/abcxef", known),
            Some("docker.io/library/abcdef")
        );
        let known = ["docker.io/library/abcdzz", "docker.io/library/abcdyy"];
        assert_eq!(
            look_alike("docker.io/library/abcdef", known),
            Some("docker.io/library/abcdyy")
        );
    }

    #[test]
    fn distances() {
        let table = [
            ("", "", Some(0)),
            ("", "ab", Some(2)),
            ("nginx", "nginx", Some(0)),
            ("nginx", "ngnix", Some(1)),
            ("nginx", "ngin", Some(1)),
            ("nginx", "nginxx", Some(1)),
            ("nginx", "nginy", Some(1)),
            ("ab", "ba", Some(1)),
            // OSA, not Damerau: `ca` -> `abc` is 3 (no edit of a transposed substring).
            ("ca", "abc", None),
            ("kitten", "sitting", None),
            ("naïve", "naive", Some(1)),
        ];
        for (a, b, want) in table {
            assert_eq!(osa_distance(a, b, 2), want, "{a} {b}");
            assert_eq!(osa_distance(b, a, 2), want, "{b} {a}");
        }
        assert_eq!(osa_distance("kitten", "sitting", 3), Some(3));
        assert_eq!(osa_distance("ca", "abc", 3), Some(3));
        assert_eq!(osa_distance("abc", "abd", 0), None);
    }

    /// The unbounded table, to check the bounded one against.
    fn osa_reference(a: &str, b: &str) -> usize {
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
        for (i, row) in d.iter_mut().enumerate() {
            row[0] = i;
        }
        d[0] = (0..=b.len()).collect();
        for i in 1..=a.len() {
            for j in 1..=b.len() {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                d[i][j] = (d[i - 1][j] + 1)
                    .min(d[i][j - 1] + 1)
                    .min(d[i - 1][j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
                }
            }
        }
        d[a.len()][b.len()]
    }

    proptest! {
        #[test]
        fn bounded_is_the_table_cut_at_max(
            a in "[abc]{0,8}",
            b in "[abcé]{0,8}",
            max in 0usize..5,
        ) {
            let d = osa_reference(&a, &b);
            prop_assert_eq!(osa_distance(&a, &b, max), Some(d).filter(|&d| d <= max));
            prop_assert_eq!(osa_distance(&b, &a, max), osa_distance(&a, &b, max));
        }
    }
}
