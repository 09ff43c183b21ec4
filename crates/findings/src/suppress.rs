//! Suppression: the seed's filter macro (`..._filter`, empty as published) done as data.
//!
//! A rule is a set of matchers over a finding's fields (the names of the findings file:
//! `k8s.cluster.name`, `image.registry`, `workload.name`, ...), a reason, an optional
//! author and an optional expiry. A finding that every matcher of a rule matches is
//! *suppressed*: it is still recorded (the findings file has it, marked
//! `suppressed: {rule, reason}`), but it opens or joins no incident and reaches no
//! alerting sink. A rule stops matching at its expiry, judged against the clock of the
//! batch (`detected_at`), so no restart is needed for it.
//!
//! Patterns: a string is matched exactly, unless it holds `*` (any run of characters) or
//! `?` (one character), which make it a glob; `{ regex = "..." }` is a regular expression
//! that must match the whole value. A matcher never matches a field that is null (a rule
//! for a namespace does not catch the findings that have none).
//!
//! The rules file is TOML, `[[suppress]]` tables (`docs/triage.md`):
//!
//! ```toml
//! [[suppress]]
//! name = "busybox-debug"          # optional: derived from the matchers when absent
//! reason = "debug pods of the platform team"
//! author = "jane@example.com"
//! expires = "2027-01-31T00:00:00Z"
//! "container.image.name" = "docker.io/library/busybox*"
//! "k8s.namespace.name" = { regex = "debug-.*" }
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use unseen_model::{format_rfc3339, parse_time, UnixSecs};
use uuid::Uuid;

use crate::Finding;

/// The largest rules file read (`serve` reads it again whenever it changes).
pub const MAX_RULES_BYTES: u64 = 1 << 20;

/// What a suppressed finding carries: which rule, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppressed {
    pub rule: String,
    pub reason: String,
}

/// The fields a matcher may name: the findings file's names.
pub const FIELDS: [&str; 19] = [
    "host",
    "host.name",
    "k8s.cluster.name",
    "k8s.node.name",
    "container.image.name",
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.container.name",
    "container.image.tag",
    "workload.kind",
    "workload.name",
    "image.registry",
    "image.repository",
    "image.tag",
    "image.digest",
    "image.raw",
    "scope",
    "look_alike",
    "mode",
];

/// The value of a field of `finding` ([`FIELDS`]); `None` when it is null (or the field
/// is a default-mode one and the finding is a strict-mode finding).
pub fn field<'f>(finding: &'f Finding, name: &str) -> Option<&'f str> {
    let t = finding.triage.as_ref();
    let image = t.map(|t| &t.image);
    match name {
        "host" => Some(&finding.host),
        "host.name" => finding.host_name.as_deref(),
        "k8s.cluster.name" => Some(&finding.cluster),
        "k8s.node.name" => Some(&finding.node),
        "container.image.name" => Some(&finding.image),
        "k8s.namespace.name" => t?.namespace.as_deref(),
        "k8s.pod.name" => t?.pod_name.as_deref(),
        "k8s.container.name" => t?.container_name.as_deref(),
        "container.image.tag" => t?.image_tag.as_deref(),
        "workload.kind" => t?.workload.as_ref()?.kind.as_deref(),
        "workload.name" => t?.workload.as_ref().map(|w| w.name.as_str()),
        "image.registry" => image?.registry.as_deref(),
        "image.repository" => image?.repository.as_deref(),
        "image.tag" => image?.tag.as_deref(),
        "image.digest" => image?.digest.as_deref(),
        "image.raw" => image.map(|i| i.raw.as_str()),
        "scope" => t.map(|t| t.scope.as_str()),
        "look_alike" => t?.look_alike.as_deref(),
        "mode" => Some(&finding.mode),
        _ => None,
    }
}

/// How a matcher compares.
#[derive(Debug, Clone)]
pub enum Pattern {
    Exact(String),
    /// `*` and `?`; compared character by character.
    Glob(String),
    /// Anchored at both ends.
    Regex {
        source: String,
        regex: regex::Regex,
    },
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Pattern::Exact(a), Pattern::Exact(b)) | (Pattern::Glob(a), Pattern::Glob(b)) => a == b,
            (Pattern::Regex { source: a, .. }, Pattern::Regex { source: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl Eq for Pattern {}

impl Pattern {
    /// A string pattern: a glob when it holds `*` or `?`, else exact.
    pub fn text(s: &str) -> Pattern {
        if s.contains(['*', '?']) {
            Pattern::Glob(s.to_string())
        } else {
            Pattern::Exact(s.to_string())
        }
    }

    pub fn regex(source: &str) -> Result<Pattern, String> {
        let regex = regex::Regex::new(&format!("^(?:{source})$")).map_err(|e| e.to_string())?;
        Ok(Pattern::Regex {
            source: source.to_string(),
            regex,
        })
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Exact(s) => s == value,
            Pattern::Glob(g) => glob(g.as_bytes(), value.as_bytes()),
            Pattern::Regex { regex, .. } => regex.is_match(value),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(s) | Pattern::Glob(s) => write!(f, "{s:?}"),
            Pattern::Regex { source, .. } => write!(f, "{{ regex = {source:?} }}"),
        }
    }
}

/// `*` any run of bytes (characters are UTF-8, so a run of bytes between two literal
/// parts is a run of characters), `?` one character. Iterative, with one backtrack
/// point: linear in practice, never exponential.
fn glob(pattern: &[u8], value: &[u8]) -> bool {
    let (mut p, mut v) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while v < value.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, v));
                p += 1;
            }
            Some(b'?') => {
                p += 1;
                v += utf8_len(value[v]);
            }
            Some(&c) if c == value[v] => {
                p += 1;
                v += 1;
            }
            _ => match star {
                Some((sp, sv)) => {
                    // The star takes one more character.
                    let next = sv + utf8_len(value[sv]);
                    star = Some((sp, next));
                    p = sp + 1;
                    v = next;
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xf0.. => 4,
        0xe0.. => 3,
        0xc0.. => 2,
        _ => 1,
    }
}

/// One suppression rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub reason: String,
    pub author: Option<String>,
    pub expires: Option<UnixSecs>,
    /// Field name ([`FIELDS`]) → pattern; every one must match.
    pub matchers: BTreeMap<String, Pattern>,
}

impl Rule {
    /// Whether the rule is in force at `now` and matches `finding`.
    pub fn matches(&self, finding: &Finding, now: UnixSecs) -> bool {
        self.expires.is_none_or(|e| now < e)
            && self
                .matchers
                .iter()
                .all(|(name, p)| field(finding, name).is_some_and(|v| p.matches(v)))
    }

    /// A name from the matchers, for a rule written without one: the same matchers give
    /// the same name, whatever their order or the file's.
    fn derived_name(matchers: &BTreeMap<String, Pattern>) -> String {
        let text: String = matchers.iter().map(|(k, p)| format!("{k}={p}\n")).collect();
        let id = Uuid::new_v5(&Uuid::NAMESPACE_OID, text.as_bytes())
            .simple()
            .to_string();
        format!("s-{}", &id[..8])
    }

    /// The rule as a `[[suppress]]` table (what `unseen suppress add` appends).
    pub fn to_toml(&self) -> String {
        let mut out = String::from("[[suppress]]\n");
        let line = |out: &mut String, k: &str, v: &str| {
            out.push_str(&format!("{} = {}\n", toml_key(k), toml_string(v)));
        };
        // An empty name is left out: the parser derives one from the matchers.
        if !self.name.is_empty() {
            line(&mut out, "name", &self.name);
        }
        line(&mut out, "reason", &self.reason);
        if let Some(a) = &self.author {
            line(&mut out, "author", a);
        }
        if let Some(e) = self.expires {
            line(&mut out, "expires", &format_rfc3339(e));
        }
        for (k, p) in &self.matchers {
            match p {
                Pattern::Exact(s) | Pattern::Glob(s) => line(&mut out, k, s),
                Pattern::Regex { source, .. } => out.push_str(&format!(
                    "{} = {{ regex = {} }}\n",
                    toml_key(k),
                    toml_string(source)
                )),
            }
        }
        out
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn toml_key(k: &str) -> String {
    if k.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        k.to_string()
    } else {
        toml_string(k)
    }
}

/// The rules in force: those of the config and of the rules file, in that order (the
/// first rule that matches names the suppression).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Suppressions {
    pub rules: Vec<Rule>,
}

/// A rules file (or config table) that cannot be used: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct SuppressError {
    /// The file (or `config`), with the rule's position when the problem is in one.
    pub origin: String,
    pub message: String,
}

impl Suppressions {
    /// The first rule that suppresses `finding` at `now`, if any.
    pub fn check(&self, finding: &Finding, now: UnixSecs) -> Option<Suppressed> {
        self.rules
            .iter()
            .find(|r| r.matches(finding, now))
            .map(|r| Suppressed {
                rule: r.name.clone(),
                reason: r.reason.clone(),
            })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Parses a rules file's text (`origin` names it in errors).
    pub fn parse(origin: &str, text: &str) -> Result<Suppressions, SuppressError> {
        let err = |message: String| SuppressError {
            origin: origin.to_string(),
            message,
        };
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let at = e
                .span()
                .map(|s| format!("line {}: ", line_of(text, s.start)))
                .unwrap_or_default();
            err(format!("{at}{}", e.message()))
        })?;
        let mut rules = Vec::new();
        for (key, value) in table {
            if key != "suppress" {
                return Err(err(format!(
                    "unknown table `{key}`: a rules file holds only [[suppress]] tables"
                )));
            }
            let toml::Value::Array(items) = value else {
                return Err(err(
                    "`suppress` must be an array of tables: write [[suppress]]".into(),
                ));
            };
            for (i, item) in items.into_iter().enumerate() {
                let toml::Value::Table(t) = item else {
                    return Err(err(format!("[[suppress]] #{}: not a table", i + 1)));
                };
                rules
                    .push(Self::rule(t).map_err(|m| err(format!("[[suppress]] #{}: {m}", i + 1)))?);
            }
        }
        Self::from_rules(rules).map_err(err)
    }

    /// Rules given as TOML tables (the config's `[[suppress]]`).
    pub fn from_tables(
        origin: &str,
        tables: Vec<toml::Table>,
    ) -> Result<Suppressions, SuppressError> {
        let err = |message: String| SuppressError {
            origin: origin.to_string(),
            message,
        };
        let rules = tables
            .into_iter()
            .enumerate()
            .map(|(i, t)| Self::rule(t).map_err(|m| err(format!("[[suppress]] #{}: {m}", i + 1))))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_rules(rules).map_err(err)
    }

    /// These rules, then `other`'s; names must stay unique.
    pub fn merged(mut self, other: Suppressions) -> Result<Suppressions, String> {
        self.rules.extend(other.rules);
        Self::from_rules(self.rules)
    }

    fn from_rules(rules: Vec<Rule>) -> Result<Suppressions, String> {
        let mut seen = std::collections::BTreeSet::new();
        for r in &rules {
            if !seen.insert(r.name.as_str()) {
                return Err(format!(
                    "two rules are named `{}`: give each its own `name`",
                    r.name
                ));
            }
        }
        Ok(Suppressions { rules })
    }

    fn rule(table: toml::Table) -> Result<Rule, String> {
        let mut name = None;
        let mut reason = None;
        let mut author = None;
        let mut expires = None;
        let mut matchers = BTreeMap::new();
        for (key, value) in table {
            let text = |v: &toml::Value| -> Result<String, String> {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("`{key}` must be a string"))
            };
            match key.as_str() {
                "name" => name = Some(text(&value)?),
                "reason" => reason = Some(text(&value)?),
                "author" => author = Some(text(&value)?),
                "expires" => {
                    let t = match &value {
                        toml::Value::Datetime(d) => d.to_string(),
                        v => text(v)?,
                    };
                    expires = Some(parse_time(&t).map_err(|e| {
                        format!("`expires` = {t:?} is not an RFC 3339 time ({e})")
                    })?);
                }
                field if FIELDS.contains(&field) => {
                    let pattern = match &value {
                        toml::Value::String(s) => Pattern::text(s),
                        toml::Value::Table(t) if t.len() == 1 && t.contains_key("regex") => {
                            let source = t["regex"]
                                .as_str()
                                .ok_or_else(|| format!("`{key}.regex` must be a string"))?;
                            Pattern::regex(source)
                                .map_err(|e| format!("`{key}` has a bad regex: {e}"))?
                        }
                        _ => {
                            return Err(format!(
                                "`{key}` must be a string (exact, or a glob with * and ?) or {{ regex = \"...\" }}"
                            ))
                        }
                    };
                    matchers.insert(key, pattern);
                }
                other => {
                    return Err(format!(
                        "unknown key `{other}`; a rule has `name`, `reason`, `author`, `expires` and matchers named by finding field: {}",
                        FIELDS.join(", ")
                    ))
                }
            }
        }
        let reason = reason
            .filter(|r| !r.trim().is_empty())
            .ok_or("`reason` is required: say why these findings need no one's attention")?;
        if matchers.is_empty() {
            return Err(
                "a rule needs at least one matcher (a finding field); one without would suppress everything"
                    .into(),
            );
        }
        let name = match name {
            Some(n) if n.trim().is_empty() => return Err("`name` is empty".into()),
            Some(n) => n,
            None => Rule::derived_name(&matchers),
        };
        Ok(Rule {
            name,
            reason,
            author,
            expires,
            matchers,
        })
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_documented() {
        for (p, v, want) in [
            (
                "docker.io/library/busybox*",
                "docker.io/library/busybox",
                true,
            ),
            (
                "docker.io/library/busybox*",
                "docker.io/library/busybox-x",
                true,
            ),
            (
                "docker.io/library/busybox*",
                "docker.io/library/nginx",
                false,
            ),
            ("*/debug-?", "ghcr.io/acme/debug-1", true),
            ("*/debug-?", "ghcr.io/acme/debug-12", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("?", "é", true),
            ("*", "", true),
            ("", "", true),
            ("", "x", false),
        ] {
            assert_eq!(glob(p.as_bytes(), v.as_bytes()), want, "{p} ~ {v}");
        }
    }

    #[test]
    fn bad_files_say_what_and_where() {
        let cases = [
            ("[[suppress]]\nreason = \"x\"\n", "at least one matcher"),
            ("[[suppress]]\n\"k8s.cluster.name\" = \"a\"\n", "`reason` is required"),
            ("[[suppress]]\nreason = \"x\"\nclustr = \"a\"\n", "unknown key `clustr`"),
            ("[[suppress]]\nreason = \"x\"\nscope = { regex = \"(\" }\n", "bad regex"),
            ("[[suppress]]\nreason = \"x\"\nscope = \"node\"\nexpires = \"soon\"\n", "RFC 3339"),
            ("[[suppress]]\nreason = = \"x\"\n", "line 2"),
            ("[other]\n", "only [[suppress]]"),
            (
                "[[suppress]]\nname = \"a\"\nreason = \"x\"\nscope = \"node\"\n[[suppress]]\nname = \"a\"\nreason = \"y\"\nscope = \"fleet\"\n",
                "two rules are named `a`",
            ),
        ];
        for (text, want) in cases {
            let e = Suppressions::parse("rules.toml", text)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("rules.toml: "), "{e}");
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_rule_written_out_reads_back_the_same() {
        let text = "[[suppress]]\nreason = \"debug pods\"\nauthor = \"jane\"\nexpires = 2027-01-31T00:00:00Z\n\"container.image.name\" = \"docker.io/library/busybox*\"\n\"k8s.namespace.name\" = { regex = \"debug-.*\" }\n";
        let rules = Suppressions::parse("f", text).unwrap();
        let rule = &rules.rules[0];
        assert!(rule.name.starts_with("s-"), "{}", rule.name);
        assert_eq!(
            rule.expires,
            Some(parse_time("2027-01-31T00:00:00Z").unwrap())
        );
        let again = Suppressions::parse("f", &rule.to_toml()).unwrap();
        assert_eq!(&again.rules[0], rule);
    }
}
