//! Properties of image canonicalisation: one key per image, never one key for two.

use std::borrow::Cow;

use proptest::prelude::*;
use unseen_normalize::image::{canonical, parse, registry_of};

const HUB_SPELLINGS: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

/// A canonical registry: lower case, not a Docker Hub alias.
fn registry() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("docker.io".to_string()),
        Just("docker.io".to_string()),
        Just("ghcr.io".to_string()),
        Just("quay.io".to_string()),
        Just("localhost".to_string()),
        Just("localhost:5000".to_string()),
        Just("[::1]:5000".to_string()),
        Just("123456789012.dkr.ecr.us-east-1.amazonaws.com".to_string()),
        Just("europe-west1-docker.pkg.dev".to_string()),
        "[a-z0-9]{1,6}(-[a-z0-9]{1,3})?\\.[a-z]{2,4}(:[0-9]{1,5})?",
    ]
    .prop_filter("Hub aliases are not canonical", |r| {
        !HUB_SPELLINGS[1..].contains(&r.as_str())
    })
}

fn path_component() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("library".to_string()),
        Just("nginx".to_string()),
        Just("localhost".to_string()),
        "[a-z0-9]{1,5}(([._]|__|-{1,3})[a-z0-9]{1,4}){0,2}",
    ]
}

/// A canonical (registry, repository) pair: Hub repositories have a namespace.
fn pair() -> impl Strategy<Value = (String, String)> {
    (registry(), prop::collection::vec(path_component(), 1..4)).prop_map(|(registry, path)| {
        let mut repository = path.join("/");
        if registry == "docker.io" && path.len() == 1 {
            repository = format!("library/{repository}");
        }
        (registry, repository)
    })
}

fn tag() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("latest".to_string()),
        "[A-Za-z0-9_][A-Za-z0-9_.-]{0,12}",
    ]
}

fn digest() -> impl Strategy<Value = String> {
    "[0-9a-f]{64}".prop_map(|hex| format!("sha256:{hex}"))
}

fn random_case(s: &str, mask: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// How one pair may be spelt.
#[derive(Debug, Clone)]
struct Spelling {
    hub_alias: usize,
    omit_registry: bool,
    omit_library: bool,
    case_mask: u64,
    tag: Option<String>,
    digest: Option<String>,
}

fn spelling() -> impl Strategy<Value = Spelling> {
    (
        0..HUB_SPELLINGS.len(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(0u64), any::<u64>()],
        prop::option::of(tag()),
        prop::option::of(digest()),
    )
        .prop_map(
            |(hub_alias, omit_registry, omit_library, case_mask, tag, digest)| Spelling {
                hub_alias,
                omit_registry,
                omit_library,
                case_mask,
                tag,
                digest,
            },
        )
}

/// One spelling of the image `registry/repository`.
fn spell((registry, repository): &(String, String), s: &Spelling) -> String {
    let mut out = String::new();
    if registry == "docker.io" {
        let mut repository = repository.as_str();
        if s.omit_library {
            if let Some(name) = repository.strip_prefix("library/") {
                if !name.contains('/') {
                    repository = name;
                }
            }
        }
        // Without a registry, a first component that looks like a domain would be one.
        let first = repository.split('/').next().unwrap();
        let domain_like = first.contains('.') || first.eq_ignore_ascii_case("localhost");
        if !s.omit_registry || domain_like {
            out.push_str(&random_case(HUB_SPELLINGS[s.hub_alias], s.case_mask));
            out.push('/');
        }
        out.push_str(repository);
    } else {
        out.push_str(&random_case(registry, s.case_mask));
        out.push('/');
        out.push_str(repository);
    }
    if let Some(tag) = &s.tag {
        out.push(':');
        out.push_str(tag);
    }
    if let Some(digest) = &s.digest {
        out.push('@');
        out.push_str(digest);
    }
    out
}

fn joined((registry, repository): &(String, String)) -> String {
    format!("{registry}/{repository}")
}

/// Strings near the reference alphabet, so that many are references and many are not.
fn reference_ish() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9._:/@-]{0,30}",
        "(sha256|[a-z]{1,4})((\\.|/|:|@|-|_)[a-z0-9]{0,6}){0,5}",
    ]
}

fn tag_attribute() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        Just(String::new()),
        "[0-9a-f]{64}",
        digest(),
        tag(),
        any::<String>(),
    ])
}

/// A valid reference spoilt in one of the ways real values are.
fn invalid() -> impl Strategy<Value = String> {
    (pair(), spelling(), 0usize..9, any::<prop::sample::Index>()).prop_map(
        |(pair, s, defect, at)| {
            let good = spell(&pair, &s);
            let (registry, repository) = &pair;
            match defect {
                0 => {
                    let i = at.index(good.len() + 1);
                    format!("{} {}", &good[..i], &good[i..])
                }
                1 => {
                    let i = at.index(good.len() + 1);
                    format!("{}é{}", &good[..i], &good[i..])
                }
                2 => format!("{registry}/{repository}/Upper"),
                3 => format!("{registry}//{repository}"),
                4 => format!("{registry}/{repository}/"),
                5 => format!("{registry}/{repository}:"),
                6 => format!("{registry}/{repository}:-tag"),
                7 => format!("{registry}/{repository}@sha256:abc"),
                _ => format!("/{registry}/{repository}"),
            }
        },
    )
}

proptest! {
    #[test]
    fn the_fast_path_agrees_with_the_general_one(
        x in prop_oneof![reference_ish(), invalid(), (pair(), spelling()).prop_map(|(p, s)| spell(&p, &s))],
        t in tag_attribute(),
    ) {
        prop_assert_eq!(canonical(&x, t.as_deref()), unseen_normalize::image::canonical_general(&x, t.as_deref()));
    }

    #[test]
    fn the_memo_answers_as_canonical(
        names in prop::collection::vec(
            (
                prop_oneof![reference_ish(), invalid(), (pair(), spelling()).prop_map(|(p, s)| spell(&p, &s))],
                tag_attribute(),
            ),
            1..40,
        ),
        slots in prop_oneof![Just(1usize), Just(4), Just(64)],
    ) {
        // Few slots, so that names evict one another; every name twice, so that hits,
        // misses and evictions all answer.
        let mut memo = unseen_normalize::image::CanonicalMemo::with_slots(slots);
        for (x, t) in names.iter().chain(names.iter().rev()) {
            prop_assert_eq!(memo.canonical(x, t.as_deref()), canonical(x, t.as_deref()), "{:?}", x);
        }
    }

    #[test]
    fn the_registry_fast_path_agrees_with_the_general_one(
        x in prop_oneof![reference_ish(), invalid(), (pair(), spelling()).prop_map(|(p, s)| spell(&p, &s))],
        t in tag_attribute(),
    ) {
        // Raw values and their canonical forms (what keys hold) both.
        let c = canonical(&x, t.as_deref());
        for v in [x.as_str(), &*c] {
            prop_assert_eq!(
                unseen_normalize::image::registry_of(v),
                unseen_normalize::image::registry_of_general(v),
                "{:?}", v
            );
        }
    }

    #[test]
    fn idempotent_on_any_string(x in reference_ish(), t in tag_attribute(), t2 in tag_attribute()) {
        let c = canonical(&x, t.as_deref());
        prop_assert_eq!(&canonical(&c, None), &c);
        prop_assert_eq!(&canonical(&c, t.as_deref()), &c);
        // Under any tag: a scan finds a key by its canonical image whatever tag a later
        // point carries.
        prop_assert_eq!(&canonical(&c, t2.as_deref()), &c);
    }

    /// Only for the names `tag_matters` says does the tag change the canonical form: a
    /// scan remembers every other spelling's canonical form by the spelling alone.
    #[test]
    fn the_tag_matters_only_where_it_is_said_to(
        x in prop_oneof![reference_ish(), Just("sha256".to_string())],
        t in tag_attribute(),
        t2 in tag_attribute(),
    ) {
        if !unseen_normalize::image::tag_matters(&x) {
            prop_assert_eq!(canonical(&x, t.as_deref()), canonical(&x, t2.as_deref()));
        }
        prop_assert!(!unseen_normalize::image::tag_matters(&canonical(&x, t.as_deref())));
    }

    #[test]
    fn a_changed_value_is_a_valid_canonical_form(x in reference_ish(), t in tag_attribute()) {
        // So no value can be rewritten into an invalid value of another image: an invalid
        // value is only ever its own key.
        let c = canonical(&x, t.as_deref());
        if c != x {
            let p = parse(&c, None);
            prop_assert!(p.registry.is_some() || p.digest.is_some(), "{:?} -> {:?}", x, c);
            prop_assert!(matches!(canonical(&c, None), Cow::Borrowed(_)));
        }
        let p = parse(&x, t.as_deref());
        prop_assert_eq!(&p.raw, &x);
        if p.registry.is_none() && p.digest.is_none() {
            prop_assert_eq!(&c, &x);
            prop_assert!(matches!(c, Cow::Borrowed(_)));
        }
    }

    #[test]
    fn spellings_of_one_image_are_one_key(p in pair(), a in spelling(), b in spelling()) {
        let want = joined(&p);
        let (sa, sb) = (spell(&p, &a), spell(&p, &b));
        prop_assert_eq!(canonical(&sa, None), want.as_str(), "{}", sa);
        prop_assert_eq!(canonical(&sb, a.tag.as_deref()), want.as_str(), "{}", sb);
        let parsed = parse(&sa, None);
        prop_assert_eq!(parsed.registry.as_deref(), Some(p.0.as_str()));
        prop_assert_eq!(parsed.repository.as_deref(), Some(p.1.as_str()));
        prop_assert_eq!(parsed.tag, a.tag);
        prop_assert_eq!(parsed.digest, a.digest);
    }

    #[test]
    fn two_images_are_never_one_key(
        p in pair(),
        q in pair(),
        same in any::<bool>(),
        a in spelling(),
        b in spelling(),
    ) {
        let q = if same { p.clone() } else { q };
        let (sa, sb) = (spell(&p, &a), spell(&q, &b));
        prop_assert_eq!(canonical(&sa, None) == canonical(&sb, None), p == q, "{} {}", sa, sb);
    }

    #[test]
    fn canonical_forms_parse_back_to_themselves(p in pair(), s in spelling()) {
        let c = canonical(&spell(&p, &s), None).into_owned();
        prop_assert!(matches!(canonical(&c, None), Cow::Borrowed(b) if b == c));
        let parsed = parse(&c, None);
        let back = format!("{}/{}", parsed.registry.unwrap(), parsed.repository.unwrap());
        prop_assert_eq!(&back, &c);
        prop_assert_eq!(registry_of(&c), Some(p.0.as_str()));
        prop_assert_eq!((parsed.tag, parsed.digest), (None, None));
    }

    #[test]
    fn canonical_spellings_borrow(p in pair(), tag in prop::option::of(tag()), digest in prop::option::of(digest())) {
        let mut name = joined(&p);
        if let Some(tag) = &tag {
            name = format!("{name}:{tag}");
        }
        if let Some(digest) = &digest {
            name = format!("{name}@{digest}");
        }
        prop_assert!(matches!(canonical(&name, None), Cow::Borrowed(b) if b == joined(&p)));
    }

    #[test]
    fn invalid_values_are_their_own_key(v in invalid(), t in tag_attribute()) {
        prop_assert!(matches!(canonical(&v, t.as_deref()), Cow::Borrowed(b) if b == v), "{:?}", v);
        let p = parse(&v, t.as_deref());
        prop_assert_eq!((p.registry, p.repository, p.digest), (None, None, None));
        prop_assert_eq!(p.tag, t.filter(|t| !t.is_empty()));
        prop_assert_eq!(p.raw, v.clone());
        prop_assert_eq!(registry_of(&v), None);
    }

    #[test]
    fn the_bare_digest_quirk(hex in "[0-9a-f]{64}") {
        let want = format!("sha256:{hex}");
        prop_assert_eq!(canonical("sha256", Some(&hex)), want.as_str());
        prop_assert_eq!(canonical(&want, None), want.as_str());
        let p = parse("sha256", Some(&hex));
        prop_assert_eq!((p.registry, p.repository, p.tag), (None, None, None));
        prop_assert_eq!(p.digest, Some(want.clone()));
        prop_assert_eq!(registry_of(&want), None);
    }
}
