//! Query strings: parsed by hand so that every mistake is a JSON 400 that names the
//! parameter (axum's extractor answers in plain text), and unknown parameters are
//! refused rather than ignored (a misspelt filter would otherwise return everything).

use std::collections::BTreeMap;

use unseen_findings::{IncidentState, Scope};
use unseen_model::{parse_time, UnixSecs};

use crate::catalog::{FindingFilter, IncidentFilter};
use crate::ApiError;

/// Items per page when `limit` is not given, and at most.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;

pub const INCIDENT_PARAMS: &[&str] = &[
    "cluster",
    "namespace",
    "workload",
    "image",
    "scope",
    "kind",
    "state",
    "status",
    "since",
    "until",
    "limit",
    "cursor",
];
pub const FINDING_PARAMS: &[&str] = &[
    "cluster",
    "node",
    "namespace",
    "workload",
    "image",
    "scope",
    "suppressed",
    "incident",
    "since",
    "until",
    "limit",
    "cursor",
];
pub const IMAGE_PARAMS: &[&str] = &["q", "cluster", "limit", "cursor"];
pub const TIMELINE_PARAMS: &[&str] = &["since", "until", "cluster"];
pub const AUDIT_PARAMS: &[&str] = &["limit", "cursor"];
pub const SUPPRESSION_PARAMS: &[&str] = &["limit", "cursor"];

#[derive(Debug, Default)]
pub struct Query {
    params: BTreeMap<String, String>,
}

fn bad(name: &str, message: &str) -> ApiError {
    ApiError::bad_request(&format!("query parameter `{name}`: {message}"))
}

impl Query {
    /// The parameters of a query string; each at most once, each one of `allowed`. An
    /// empty text filter is the same as none (an empty filter box); an empty time,
    /// number, choice or cursor is an error.
    pub fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Query, ApiError> {
        let mut params = BTreeMap::new();
        for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            if !allowed.contains(&k.as_ref()) {
                let known = if allowed.is_empty() {
                    "this endpoint takes none".to_string()
                } else {
                    format!("known: {}", allowed.join(", "))
                };
                return Err(bad(&k, &format!("unknown; {known}")));
            }
            if params.contains_key(k.as_ref()) {
                return Err(bad(&k, "given twice"));
            }
            params.insert(k.into_owned(), v.into_owned());
        }
        Ok(Query { params })
    }

    pub fn text(&self, name: &str) -> Option<String> {
        self.params.get(name).filter(|v| !v.is_empty()).cloned()
    }

    /// A parameter that must not be empty when given.
    fn value(&self, name: &str) -> Result<Option<&String>, ApiError> {
        match self.params.get(name) {
            Some(v) if v.is_empty() => Err(bad(name, "empty: give a value or leave it out")),
            v => Ok(v),
        }
    }

    pub fn time(&self, name: &str) -> Result<Option<UnixSecs>, ApiError> {
        self.value(name)?
            .map(|v| {
                // RFC 3339 only (what the OpenAPI document says): `parse_time` would also
                // take Unix seconds.
                let rfc3339 = v.contains(['T', 't']);
                parse_time(v).ok().filter(|_| rfc3339).ok_or_else(|| {
                    bad(
                        name,
                        &format!("{v:?} is not an RFC 3339 time (e.g. 2026-01-31T12:00:00Z)"),
                    )
                })
            })
            .transpose()
    }

    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.value("limit")? {
            None => Ok(DEFAULT_LIMIT),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
                _ => Err(bad(
                    "limit",
                    &format!("{v:?}: a whole number from 1 to {MAX_LIMIT}"),
                )),
            },
        }
    }

    /// The cursor of lists ordered by sequence number.
    pub fn seq_cursor(&self) -> Result<Option<u64>, ApiError> {
        self.value("cursor")?
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    bad(
                        "cursor",
                        "not a cursor this API gave: pass the `next` of the previous page",
                    )
                })
            })
            .transpose()
    }

    /// The inventory's cursor: `first_seen~image`.
    pub fn image_cursor(&self) -> Result<Option<(UnixSecs, String)>, ApiError> {
        self.value("cursor")?
            .map(|v| {
                v.split_once('~')
                    .and_then(|(t, name)| Some((t.parse::<UnixSecs>().ok()?, name.to_string())))
                    .ok_or_else(|| {
                        bad(
                            "cursor",
                            "not a cursor this API gave: pass the `next` of the previous page",
                        )
                    })
            })
            .transpose()
    }

    fn scope(&self) -> Result<Option<Scope>, ApiError> {
        self.value("scope")?
            .map(|v| match v.as_str() {
                "node" => Ok(Scope::Node),
                "cluster" => Ok(Scope::Cluster),
                "fleet" => Ok(Scope::Fleet),
                _ => Err(bad("scope", &format!("{v:?}: one of node, cluster, fleet"))),
            })
            .transpose()
    }

    fn one_of(&self, name: &str, values: &[&str]) -> Result<Option<String>, ApiError> {
        match self.value(name)? {
            Some(v) if !values.contains(&v.as_str()) => {
                Err(bad(name, &format!("{v:?}: one of {}", values.join(", "))))
            }
            v => Ok(v.cloned()),
        }
    }

    fn since_until(&self) -> Result<(Option<UnixSecs>, Option<UnixSecs>), ApiError> {
        Ok((self.time("since")?, self.time("until")?))
    }

    pub fn finding_filter(&self) -> Result<FindingFilter, ApiError> {
        let (since, until) = self.since_until()?;
        let suppressed = self
            .one_of("suppressed", &["true", "false"])?
            .map(|v| v == "true");
        Ok(FindingFilter {
            cluster: self.text("cluster"),
            node: self.text("node"),
            namespace: self.text("namespace"),
            workload: self.text("workload"),
            image: self.text("image"),
            scope: self.scope()?,
            suppressed,
            incident: self.text("incident"),
            since,
            until,
        })
    }

    pub fn incident_filter(&self) -> Result<IncidentFilter, ApiError> {
        let (since, until) = self.since_until()?;
        let state = self.one_of("state", &["open", "closed"])?.map(|s| {
            if s == "open" {
                IncidentState::Open
            } else {
                IncidentState::Closed
            }
        });
        Ok(IncidentFilter {
            cluster: self.text("cluster"),
            namespace: self.text("namespace"),
            workload: self.text("workload"),
            image: self.text("image"),
            scope: self.scope()?,
            kind: self.one_of(
                "kind",
                &["image", "new_node", "digest", "risk_threshold", "capacity"],
            )?,
            state,
            status: self.one_of("status", &["new", "acknowledged", "resolved"])?,
            since,
            until,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_checked_and_named() {
        let q = Query::parse(Some("scope=fleet&limit=10&cluster="), FINDING_PARAMS).unwrap();
        assert!(Query::parse(Some("until="), FINDING_PARAMS)
            .unwrap()
            .finding_filter()
            .unwrap_err()
            .message
            .contains("`until`: empty"));
        assert_eq!(q.limit().unwrap(), 10);
        assert_eq!(q.finding_filter().unwrap().scope, Some(Scope::Fleet));
        assert_eq!(q.finding_filter().unwrap().cluster, None, "empty is absent");
        let err = |q: &str, allowed| Query::parse(Some(q), allowed).unwrap_err().message;
        assert!(err("scop=fleet", FINDING_PARAMS).contains("`scop`: unknown"));
        assert!(err("limit=1&limit=2", FINDING_PARAMS).contains("given twice"));
        let q = |s| Query::parse(Some(s), FINDING_PARAMS).unwrap();
        assert!(q("limit=0")
            .limit()
            .unwrap_err()
            .message
            .contains("`limit`"));
        assert!(q("limit=501").limit().is_err());
        assert!(q("scope=galaxy")
            .finding_filter()
            .unwrap_err()
            .message
            .contains("`scope`"));
        assert!(q("since=yesterday")
            .finding_filter()
            .unwrap_err()
            .message
            .contains("`since`"));
        assert!(q("suppressed=maybe").finding_filter().is_err());
        assert!(q("cursor=x").seq_cursor().is_err());
        assert_eq!(q("cursor=42").seq_cursor().unwrap(), Some(42));
        let i = Query::parse(Some("cursor=100~docker.io/x"), IMAGE_PARAMS).unwrap();
        assert_eq!(i.image_cursor().unwrap(), Some((100, "docker.io/x".into())));
    }
}
