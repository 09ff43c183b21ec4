//! Container image references (`container.image.name`), and their canonical key form.
//!
//! Why canonicalise: the rule asks whether an image has been seen before, and one image
//! reaches us spelt many ways (`nginx`, `docker.io/library/nginx`,
//! `index.docker.io/library/nginx`, `DOCKER.IO/library/nginx`, with or without a tag or a
//! digest). Two spellings of one image must be one key, or re-spelling a manifest looks
//! like a new image and raises a false finding.
//!
//! Two repositories must never be one key: that would hide a new image behind a known one,
//! a missed finding, which is the worse error. So the canonical form applies only rewrites
//! that the reference grammar (that of `github.com/distribution/reference`) and Docker
//! Hub's defaults make certain: the implicit `docker.io` and its aliases, Hub's `library/`,
//! the registry's case, and dropping the tag and the digest (the key is the repository;
//! which version runs is evidence, reported in [`ImageRef`]). A value that is not a valid
//! reference is kept exactly as received. It cannot merge with a canonical form, because
//! every canonical form is itself a valid reference (in canonical spelling), and an invalid
//! value is not one.
//!
//! Accepted grammar, in short: `[domain/]path[:tag][@digest]`. Path components are
//! `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*` joined by `/`. The first component is a
//! domain when it contains `.` or `:` or is `localhost` (in any case); a domain is
//! `host[:port]`, the host being dot-separated labels (`[A-Za-z0-9]`, inner `-`) or an
//! IPv6 address in brackets. A tag is `[\w][\w.-]{0,127}`. A digest is `algorithm:hex`
//! with at least 32 hex digits; `sha256`, `sha384` and `sha512` need exactly 64, 96 and
//! 128 lower-case hex digits. There is no limit on the name's total length.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::quick_hash::{quick_hash, same_bytes};

/// The registry of Docker Hub, as the canonical form spells it.
pub const DOCKER_HUB: &str = "docker.io";

/// Other spellings of Docker Hub's registry (compared ignoring case).
const DOCKER_HUB_ALIASES: [&str; 2] = ["index.docker.io", "registry-1.docker.io"];

/// Docker Hub's namespace of single-component repositories (`nginx` is `library/nginx`).
const HUB_LIBRARY: &str = "library/";

const MAX_TAG_LEN: usize = 128;

/// The parts of a container image reference, as a finding reports them (`image` field).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageRef {
    /// `docker.io`, `ghcr.io`, `localhost:5000`; None when unknown (a digest-only image or
    /// a value that is not a reference).
    pub registry: Option<String>,
    /// `library/nginx`; None when unknown.
    pub repository: Option<String>,
    pub tag: Option<String>,
    /// `sha256:<hex>`.
    pub digest: Option<String>,
    /// The `container.image.name` exactly as received.
    pub raw: String,
}

/// The canonical key form of an image name: `registry/repository` (no tag, no digest).
///
/// Borrowed when `name` is already canonical (a sub-slice when it only carries a tag or a
/// digest): one byte scan, no allocation. Owned otherwise. `tag` is the
/// `container.image.tag` attribute; it matters only for the bare-digest quirk (name
/// `sha256`, tag of 64 hex digits), whose form is `sha256:<hex>`. A value that is not a
/// valid reference is returned unchanged.
pub fn canonical<'a>(name: &'a str, tag: Option<&str>) -> Cow<'a, str> {
    // What real exports nearly always hold, in one pass: every point's key pays for this.
    if let Some(name_len) = canonical_prefix(name) {
        return Cow::Borrowed(&name[..name_len]);
    }
    canonical_general(name, tag)
}

/// [`canonical`], remembering which names its fast path took and where their canonical
/// form ends: a scan reads the same few thousand image names in millions of points, and
/// comparing a name with the one remembered in its slot costs a fraction of parsing it
/// again (the parse was 7.5 % of a scan's time).
///
/// Direct-mapped by [`crate::quick_hash::quick_hash`]: a slot holding another name is a
/// miss, so collisions cost speed, never a wrong answer. A slot holds the name's bytes
/// inline (no allocation on a miss); longer names, and names outside the fast path, are
/// parsed every time. What the memo returns is always exactly [`canonical`]'s answer
/// (property test).
pub struct CanonicalMemo {
    slots: Box<[MemoSlot]>,
}

/// Bytes of a name a slot can hold.
const MEMO_NAME_BYTES: usize = 126;
/// Slots of a [`CanonicalMemo`]: 512 KiB, room for a large fleet's images (a registry such
/// as ECR's makes names of 60 to 100 bytes).
const MEMO_SLOTS: usize = 4096;

/// One remembered name: its length (0: empty slot), the length of its canonical form (a
/// prefix of it, the fast path's answer), and its bytes.
#[derive(Clone, Copy)]
#[repr(C, align(128))]
struct MemoSlot {
    len: u8,
    canonical_len: u8,
    name: [u8; MEMO_NAME_BYTES],
}

impl Default for CanonicalMemo {
    fn default() -> Self {
        CanonicalMemo::with_slots(MEMO_SLOTS)
    }
}

impl CanonicalMemo {
    /// A memo of `slots` slots (a power of two): small ones, for tests that make names
    /// collide.
    #[doc(hidden)]
    pub fn with_slots(slots: usize) -> Self {
        assert!(slots.is_power_of_two(), "{slots} slots");
        let empty = MemoSlot {
            len: 0,
            canonical_len: 0,
            name: [0; MEMO_NAME_BYTES],
        };
        CanonicalMemo {
            slots: vec![empty; slots].into_boxed_slice(),
        }
    }
}

impl std::fmt::Debug for CanonicalMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let used = self.slots.iter().filter(|s| s.len != 0).count();
        f.debug_struct("CanonicalMemo")
            .field("used", &used)
            .finish()
    }
}

impl CanonicalMemo {
    /// [`canonical`]`(name, tag)`.
    pub fn canonical<'a>(&mut self, name: &'a str, tag: Option<&str>) -> Cow<'a, str> {
        let n = name.len();
        if n == 0 || n > MEMO_NAME_BYTES {
            return canonical(name, tag);
        }
        let mask = self.slots.len() - 1;
        let slot = &mut self.slots[quick_hash(name.as_bytes()) as usize & mask];
        if usize::from(slot.len) == n && same_bytes(&slot.name[..n], name.as_bytes()) {
            // The fast path's answer does not depend on `tag`: it is taken only when the
            // name itself is canonical up to its tag or digest.
            return Cow::Borrowed(&name[..usize::from(slot.canonical_len)]);
        }
        let Some(canonical_len) = canonical_prefix(name) else {
            return canonical_general(name, tag);
        };
        // Both fit in a byte: `canonical_len <= n <= MEMO_NAME_BYTES`.
        slot.len = n as u8;
        slot.canonical_len = canonical_len as u8;
        slot.name[..n].copy_from_slice(name.as_bytes());
        Cow::Borrowed(&name[..canonical_len])
    }
}

/// [`canonical`] without its fast path (public for the property test that holds the two
/// to one answer).
#[doc(hidden)]
pub fn canonical_general<'a>(name: &'a str, tag: Option<&str>) -> Cow<'a, str> {
    if let Some(hex) = quirk_digest_hex(name, tag) {
        return Cow::Owned(format!("sha256:{hex}"));
    }
    if is_bare_digest(name) {
        return Cow::Borrowed(name);
    }
    let Some(parts) = split(name) else {
        return Cow::Borrowed(name);
    };
    if parts.is_canonical_spelling() {
        return Cow::Borrowed(&name[..parts.name_len]);
    }
    let registry = parts.registry();
    let library = parts.needs_library();
    let mut key = String::with_capacity(
        registry.len() + 1 + if library { HUB_LIBRARY.len() } else { 0 } + parts.path.len(),
    );
    key.push_str(&registry);
    key.push('/');
    if library {
        key.push_str(HUB_LIBRARY);
    }
    key.push_str(parts.path);
    Cow::Owned(key)
}

/// The full parse, for a finding's `image` field. `tag` is `container.image.tag`.
///
/// `tag` is the attribute when it is non-empty, else the tag written in the name; except
/// that an attribute of the form `sha256:<64 hex>` is a digest, not a tag: it becomes
/// `digest` (unless the name has one) and the tag is the name's. For a value that is not a
/// reference, only `raw` and `tag` (the attribute) are set.
pub fn parse(name: &str, tag: Option<&str>) -> ImageRef {
    let tag_attr = tag.filter(|t| !t.is_empty());
    if let Some(hex) = quirk_digest_hex(name, tag) {
        return ImageRef {
            registry: None,
            repository: None,
            tag: None,
            digest: Some(format!("sha256:{hex}")),
            raw: name.to_string(),
        };
    }
    if is_bare_digest(name) {
        let hex = &name["sha256:".len()..];
        return ImageRef {
            registry: None,
            repository: None,
            tag: tag_attr
                .filter(|t| *t != hex && !is_sha256_digest(t))
                .map(str::to_string),
            digest: Some(name.to_string()),
            raw: name.to_string(),
        };
    }
    let Some(parts) = split(name) else {
        return ImageRef {
            registry: None,
            repository: None,
            tag: tag_attr.map(str::to_string),
            digest: None,
            raw: name.to_string(),
        };
    };
    let attr_digest = tag_attr.filter(|t| is_sha256_digest(t));
    let tag = match tag_attr {
        Some(t) if attr_digest.is_none() => Some(t),
        _ => parts.tag,
    };
    let repository = if parts.needs_library() {
        format!("{HUB_LIBRARY}{}", parts.path)
    } else {
        parts.path.to_string()
    };
    ImageRef {
        registry: Some(parts.registry().into_owned()),
        repository: Some(repository),
        tag: tag.map(str::to_string),
        digest: parts.digest.or(attr_digest).map(str::to_string),
        raw: name.to_string(),
    }
}

/// The registry of a canonical key form (what [`canonical`] returned): Some only for a
/// value that is exactly a canonical `registry/repository` form. None for a digest-only
/// image, a value that is not a reference, and a reference that [`canonical`] would still
/// change (implicit or aliased registry, upper case, tag, digest): canonicalise first.
pub fn registry_of(canonical: &str) -> Option<&str> {
    // The triage asks this of every image it indexes and of every finding's image, and
    // keys of the default mode are canonical already: one scan says so, where the
    // general parse below costs several (it was a fifth of a scan's triage).
    if canonical_prefix(canonical) == Some(canonical.len()) {
        return canonical.split_once('/').map(|(domain, _)| domain);
    }
    registry_of_general(canonical)
}

/// [`registry_of`] without its fast path (public for the property test that the two
/// agree).
#[doc(hidden)]
pub fn registry_of_general(canonical: &str) -> Option<&str> {
    let parts = split(canonical)?;
    if parts.tag.is_some() || parts.digest.is_some() || !parts.is_canonical_spelling() {
        return None;
    }
    parts.domain
}

/// A reference split into its parts, as written. Exists only for valid references.
struct Split<'a> {
    domain: Option<&'a str>,
    path: &'a str,
    /// Length of `[domain/]path` at the start of the input.
    name_len: usize,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

impl Split<'_> {
    fn is_docker_hub(&self) -> bool {
        self.domain.is_none_or(|d| {
            d.eq_ignore_ascii_case(DOCKER_HUB)
                || DOCKER_HUB_ALIASES.iter().any(|a| d.eq_ignore_ascii_case(a))
        })
    }

    fn registry(&self) -> Cow<'_, str> {
        match self.domain {
            Some(d) if !self.is_docker_hub() => {
                if d.bytes().any(|b| b.is_ascii_uppercase()) {
                    Cow::Owned(d.to_ascii_lowercase())
                } else {
                    Cow::Borrowed(d)
                }
            }
            _ => Cow::Borrowed(DOCKER_HUB),
        }
    }

    /// Docker Hub's single-component repositories live in `library/`.
    fn needs_library(&self) -> bool {
        self.is_docker_hub() && !self.path.contains('/')
    }

    /// `[domain/]path` is already the canonical form.
    fn is_canonical_spelling(&self) -> bool {
        match self.domain {
            None => false,
            Some(d) if d == DOCKER_HUB => self.path.contains('/'),
            Some(d) => !self.is_docker_hub() && !d.bytes().any(|b| b.is_ascii_uppercase()),
        }
    }
}

/// The fast path of [`canonical`]: for `domain/path[:tag]` already in canonical spelling
/// (a lower-case domain with a `.` or a port, not an alias of Docker Hub; a path of valid
/// components, two or more on Docker Hub; a valid tag or none; no digest), the length of
/// `domain/path`, found in one scan. `None` for anything else, which the general path
/// then reads (it is never wrong to answer `None`).
fn canonical_prefix(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let n = b.len();
    // Every point's key pays for this scan, so each byte costs one table load and test
    // (`i < n` lets the compiler drop the bounds checks).
    let run = |mut i: usize, class: u8| {
        while i < n && CLASS[b[i] as usize] & class != 0 {
            i += 1;
        }
        i
    };
    // The domain: labels of `[a-z0-9-]` (no `-` at either end) joined by `.`, then an
    // optional `:port`, then `/`.
    let mut i = 0;
    let mut looks_like_domain = false;
    loop {
        let start = i;
        i = run(i, LOWER_ALNUM | DASH);
        if i == start || b[start] == b'-' || b[i - 1] == b'-' || i == n {
            return None;
        }
        match b[i] {
            b'.' => {
                looks_like_domain = true;
                i += 1;
            }
            b':' => {
                looks_like_domain = true;
                let port = i + 1;
                i = run(port, DIGIT);
                if i == port || i == n || b[i] != b'/' {
                    return None;
                }
                break;
            }
            b'/' => break,
            _ => return None,
        }
    }
    let domain = &s[..i];
    if !looks_like_domain || DOCKER_HUB_ALIASES.contains(&domain) {
        return None;
    }
    i += 1;
    // The path: components `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*` joined by `/`.
    let mut components = 1;
    let name_len = loop {
        let start = i;
        i = run(i, LOWER_ALNUM);
        if i == start {
            return None;
        }
        if i == n {
            break i;
        }
        match b[i] {
            b'/' => {
                components += 1;
                i += 1;
            }
            b'.' => i += 1,
            b'_' => i += 1 + usize::from(b.get(i + 1) == Some(&b'_')),
            b'-' => i = run(i, DASH),
            b':' if is_tag(&s[i + 1..]) => break i,
            _ => return None,
        }
        // After a separator, the next run must start at once (checked at the loop's top).
    };
    (domain != DOCKER_HUB || components >= 2).then_some(name_len)
}

/// Byte classes of [`canonical_prefix`]: `[a-z0-9]`, `-`, `[0-9]`.
const LOWER_ALNUM: u8 = 1;
const DASH: u8 = 2;
const DIGIT: u8 = 4;
static CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_lowercase() {
            table[c] = LOWER_ALNUM;
        } else if b.is_ascii_digit() {
            table[c] = LOWER_ALNUM | DIGIT;
        } else if b == b'-' {
            table[c] = DASH;
        }
        c += 1;
    }
    table
};

/// Splits a valid reference into its parts; None for anything else.
fn split(s: &str) -> Option<Split<'_>> {
    let (rest, digest) = match s.split_once('@') {
        Some((_, digest)) if !is_digest(digest) => return None,
        Some((rest, digest)) => (rest, Some(digest)),
        None => (s, None),
    };
    let last_start = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_start..].find(':') {
        Some(i) => {
            let tag = &rest[last_start + i + 1..];
            if !is_tag(tag) {
                return None;
            }
            (&rest[..last_start + i], Some(tag))
        }
        None => (rest, None),
    };
    let (domain, path) = match name.split_once('/') {
        Some((first, path)) if looks_like_domain(first) => {
            if !is_domain(first) {
                return None;
            }
            (Some(first), path)
        }
        _ => (None, name),
    };
    if !path.split('/').all(is_path_component) {
        return None;
    }
    Some(Split {
        domain,
        path,
        name_len: name.len(),
        tag,
        digest,
    })
}

/// Whether [`canonical`]`(name, tag)` can depend on `tag`: only for the name `sha256`
/// (see [`quirk_digest_hex`]). For every other name the canonical form is the same under
/// any tag, so a scan may remember it by the name alone (property test).
pub fn tag_matters(name: &str) -> bool {
    name == "sha256"
}

/// The name `sha256` with a tag of 64 hex digits: some runtimes report an image pulled by
/// digest that way. Returns the hex.
fn quirk_digest_hex<'t>(name: &str, tag: Option<&'t str>) -> Option<&'t str> {
    (name == "sha256")
        .then_some(tag?)
        .filter(|t| is_sha256_hex(t))
}

/// `sha256:<64 lower-case hex>`: a digest-only image (and the quirk's canonical form).
fn is_bare_digest(s: &str) -> bool {
    is_sha256_digest(s)
}

fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(is_sha256_hex)
}

fn is_sha256_hex(s: &str) -> bool {
    is_lower_hex(s, 64)
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn looks_like_domain(first: &str) -> bool {
    first.contains(['.', ':']) || first.eq_ignore_ascii_case("localhost")
}

/// `host[:port]`, host a domain name, an IPv4 address (which is one) or `[IPv6]`.
fn is_domain(d: &str) -> bool {
    let (host_ok, rest) = match d.strip_prefix('[') {
        Some(after) => match after.find(']') {
            Some(end) => {
                let v6 = &after[..end];
                let ok = !v6.is_empty() && v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
                (ok, &after[end + 1..])
            }
            None => return false,
        },
        None => {
            let end = d.find(':').unwrap_or(d.len());
            (d[..end].split('.').all(is_domain_label), &d[end..])
        }
    };
    host_ok
        && (rest.is_empty()
            || rest
                .strip_prefix(':')
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
}

/// `[A-Za-z0-9]` or `[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]`.
fn is_domain_label(l: &str) -> bool {
    let b = l.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        }
        _ => false,
    }
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`.
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let mut i = 0;
    loop {
        let run = i;
        while i < b.len() && is_lower_alnum(b[i]) {
            i += 1;
        }
        if i == run {
            return false;
        }
        if i == b.len() {
            return true;
        }
        let sep_start = i;
        while i < b.len() && matches!(b[i], b'.' | b'_' | b'-') {
            i += 1;
        }
        let sep = &b[sep_start..i];
        let sep_ok = matches!(sep, b"." | b"_" | b"__")
            || (!sep.is_empty() && sep.iter().all(|&s| s == b'-'));
        if !sep_ok {
            return false;
        }
    }
}

/// `[\w][\w.-]{0,127}`.
fn is_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && word(b[0])
        && b[1..].iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// `algorithm:hex`: algorithm components `[A-Za-z][A-Za-z0-9]*` joined by one of `+._-`,
/// at least 32 hex digits; the registered algorithms need their exact lower-case length.
fn is_digest(d: &str) -> bool {
    let Some((algorithm, hex)) = d.split_once(':') else {
        return false;
    };
    let algorithm_ok = algorithm.split(['+', '.', '_', '-']).all(|c| {
        let b = c.as_bytes();
        !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
    });
    if !algorithm_ok {
        return false;
    }
    match algorithm {
        "sha256" => is_lower_hex(hex, 64),
        "sha384" => is_lower_hex(hex, 96),
        "sha512" => is_lower_hex(hex, 128),
        _ => hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// The common spellings take the one-pass path (the property test holds its answers to
    /// the general path's); the rest are left to the general path.
    #[test]
    fn canonical_spellings_take_the_fast_path() {
        for (name, len) in [
            ("docker.io/library/nginx", Some(23)),
            ("docker.io/library/nginx:1.25-alpine", Some(23)),
            ("registry.k8s.io/ingress-nginx/controller:v1.9", Some(40)),
            ("localhost.localdomain:5000/a__b/c-d--e", Some(38)),
            ("quay.io/a.b_c/d", Some(15)),
            ("nginx", None),
            ("docker.io/nginx", None),
            ("index.docker.io/library/nginx", None),
            ("Quay.io/a/b", None),
            ("localhost/app", None),
            ("quay.io/a/b@sha256:abc", None),
            ("quay.io/a/b:", None),
            ("quay.io/a___b", None),
            ("quay.io/a._b", None),
            ("-quay.io/a", None),
            ("quay.io:/a", None),
        ] {
            assert_eq!(canonical_prefix(name), len, "{name}");
        }
    }

    struct Case {
        name: String,
        tag: Option<String>,
        /// The canonical form; None: the value is kept as it is (invalid).
        canonical: Option<String>,
        tag_out: Option<&'static str>,
        digest: Option<String>,
    }

    fn case(
        name: impl Into<String>,
        tag: Option<&str>,
        canonical: Option<&str>,
        tag_out: Option<&'static str>,
        digest: Option<String>,
    ) -> Case {
        Case {
            name: name.into(),
            tag: tag.map(str::to_string),
            canonical: canonical.map(str::to_string),
            tag_out,
            digest,
        }
    }

    fn table() -> Vec<Case> {
        let sha = format!("sha256:{HEX}");
        let nginx = Some("docker.io/library/nginx");
        vec![
            // Docker Hub, every spelling of one image.
            case("nginx", None, nginx, None, None),
            case("nginx", Some("1.25"), nginx, Some("1.25"), None),
            case("docker.io/nginx", None, nginx, None, None),
            case("index.docker.io/library/nginx", None, nginx, None, None),
            case("registry-1.docker.io/nginx", None, nginx, None, None),
            case("docker.io/library/nginx", None, nginx, None, None),
            case("DOCKER.IO/library/nginx", None, nginx, None, None),
            case("Index.Docker.IO/nginx", None, nginx, None, None),
            case("library/nginx", None, nginx, None, None),
            case("nginx:1.25", None, nginx, Some("1.25"), None),
            case("nginx:1.25", Some("1.26"), nginx, Some("1.26"), None),
            case("nginx:1.25", Some(""), nginx, Some("1.25"), None),
            case(format!("nginx@{sha}"), None, nginx, None, Some(sha.clone())),
            case(
                format!("docker.io/library/nginx:1.25@{sha}"),
                None,
                nginx,
                Some("1.25"),
                Some(sha.clone()),
            ),
            // A digest in the tag attribute is a digest.
            case(
                "nginx:1.25",
                Some(&sha),
                nginx,
                Some("1.25"),
                Some(sha.clone()),
            ),
            case(
                "bitnami/redis:7.2.4-debian-12-r0",
                None,
                Some("docker.io/bitnami/redis"),
                Some("7.2.4-debian-12-r0"),
                None,
            ),
            case(
                "docker.io/grafana/grafana-oss",
                None,
                Some("docker.io/grafana/grafana-oss"),
                None,
                None,
            ),
            // Other registries keep their host, lower-cased, and their port.
            case(
                "ghcr.io/acme/x:v1",
                None,
                Some("ghcr.io/acme/x"),
                Some("v1"),
                None,
            ),
            case("GHCR.io/acme/x", None, Some("ghcr.io/acme/x"), None, None),
            case(
                "quay.io/prometheus/node-exporter:v1.8.1",
                None,
                Some("quay.io/prometheus/node-exporter"),
                Some("v1.8.1"),
                None,
            ),
            case(
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/x/y:tag",
                None,
                Some("123456789012.dkr.ecr.us-east-1.amazonaws.com/x/y"),
                Some("tag"),
                None,
            ),
            case(
                "europe-west1-docker.pkg.dev/p/r/img",
                None,
                Some("europe-west1-docker.pkg.dev/p/r/img"),
                None,
                None,
            ),
            case(
                "gcr.io/distroless/static-debian12:nonroot",
                None,
                Some("gcr.io/distroless/static-debian12"),
                Some("nonroot"),
                None,
            ),
            case(
                "registry.k8s.io/kube-proxy:v1.30.2",
                None,
                Some("registry.k8s.io/kube-proxy"),
                Some("v1.30.2"),
                None,
            ),
            case(
                "mcr.microsoft.com/dotnet/aspnet:8.0",
                None,
                Some("mcr.microsoft.com/dotnet/aspnet"),
                Some("8.0"),
                None,
            ),
            case(
                "localhost:5000/team/app:dev",
                None,
                Some("localhost:5000/team/app"),
                Some("dev"),
                None,
            ),
            case("localhost/app", None, Some("localhost/app"), None, None),
            case("LOCALHOST/app", None, Some("localhost/app"), None, None),
            case(
                "10.0.0.1:5000/app",
                None,
                Some("10.0.0.1:5000/app"),
                None,
                None,
            ),
            case("[::1]:5000/app", None, Some("[::1]:5000/app"), None, None),
            case("[FE80::1]/app", None, Some("[fe80::1]/app"), None, None),
            case(
                format!("ghcr.io/acme/x@{sha}"),
                None,
                Some("ghcr.io/acme/x"),
                None,
                Some(sha.clone()),
            ),
            // Not Docker Hub: the port makes it another registry.
            case(
                "docker.io:443/nginx",
                None,
                Some("docker.io:443/nginx"),
                None,
                None,
            ),
            // Without a slash, `localhost:5000` is the Hub image `localhost`, tag `5000`.
            case(
                "localhost:5000",
                None,
                Some("docker.io/library/localhost"),
                Some("5000"),
                None,
            ),
            // The bare-digest quirk, and a digest-only name.
            case("sha256", Some(HEX), Some(&sha), None, Some(sha.clone())),
            case(sha.clone(), None, Some(&sha), None, Some(sha.clone())),
            case("sha256", None, Some("docker.io/library/sha256"), None, None),
            case(
                "sha256",
                Some("latest"),
                Some("docker.io/library/sha256"),
                Some("latest"),
                None,
            ),
            case(
                "sha256",
                Some("ABC"),
                Some("docker.io/library/sha256"),
                Some("ABC"),
                None,
            ),
            // Not references: kept as they are; the tag is the attribute.
            case("", None, None, None, None),
            case("Nginx", None, None, None, None),
            case("acme/Nginx", Some("1"), None, Some("1"), None),
            case("ghcr.io/Acme/x", None, None, None, None),
            case("nginx ", None, None, None, None),
            case("my image", None, None, None, None),
            case("ghcr.io//x", None, None, None, None),
            case("ghcr.io/x/", None, None, None, None),
            case("/nginx", None, None, None, None),
            case("nginx:", None, None, None, None),
            case("nginx:-bad", None, None, None, None),
            case("nginx@sha256:abc", None, None, None, None),
            case(
                format!("nginx@sha256:{}", HEX.to_uppercase()),
                None,
                None,
                None,
                None,
            ),
            case("nginx@", None, None, None, None),
            case("ngïnx", None, None, None, None),
            case("my_reg.io/x", None, None, None, None),
            case("-reg.io/x", None, None, None, None),
            case("localhost:/x", None, None, None, None),
            case("localhost:50a/x", None, None, None, None),
            case("[::1/x", None, None, None, None),
            case("a--b_c/d___e", None, None, None, None),
            case("a..b", None, None, None, None),
            case(format!("x:{}", "t".repeat(129)), None, None, None, None),
        ]
    }

    #[test]
    fn real_world_references() {
        for c in table() {
            let got = canonical(&c.name, c.tag.as_deref());
            let parsed = parse(&c.name, c.tag.as_deref());
            assert_eq!(parsed.raw, c.name);
            assert_eq!(parsed.tag.as_deref(), c.tag_out, "tag of {:?}", c.name);
            assert_eq!(parsed.digest, c.digest, "digest of {:?}", c.name);
            match c.canonical.as_deref() {
                Some(want) => {
                    assert_eq!(got, want, "canonical of {:?} {:?}", c.name, c.tag);
                    assert_eq!(canonical(&got, None), want, "idempotent: {want}");
                    assert!(matches!(canonical(&got, None), Cow::Borrowed(_)));
                    if want.starts_with("sha256:") {
                        assert_eq!((parsed.registry, parsed.repository), (None, None));
                        assert_eq!(registry_of(want), None);
                    } else {
                        let (registry, repository) = want.split_once('/').unwrap();
                        assert_eq!(parsed.registry.as_deref(), Some(registry), "{:?}", c.name);
                        assert_eq!(parsed.repository.as_deref(), Some(repository));
                        assert_eq!(registry_of(want), Some(registry));
                    }
                }
                None => {
                    assert!(
                        matches!(got, Cow::Borrowed(s) if s == c.name),
                        "{:?}",
                        c.name
                    );
                    assert_eq!((parsed.registry, parsed.repository), (None, None));
                    assert_eq!(registry_of(&c.name), None);
                }
            }
        }
    }

    #[test]
    fn canonical_names_borrow() {
        for name in [
            "docker.io/library/nginx",
            "docker.io/library/nginx:1.25",
            "ghcr.io/acme/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "localhost:5000/app",
        ] {
            assert!(matches!(canonical(name, None), Cow::Borrowed(_)), "{name}");
        }
        assert!(matches!(canonical("nginx", None), Cow::Owned(_)));
    }

    #[test]
    fn registry_of_wants_the_canonical_form() {
        assert_eq!(registry_of("docker.io/library/nginx"), Some("docker.io"));
        assert_eq!(registry_of("localhost:5000/a/b"), Some("localhost:5000"));
        for not_canonical in [
            "nginx",
            "docker.io/nginx",
            "index.docker.io/library/nginx",
            "GHCR.io/a/b",
            "ghcr.io/a/b:1",
            "ghcr.io/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "Not A Reference",
        ] {
            assert_eq!(registry_of(not_canonical), None, "{not_canonical}");
        }
    }
}
