//! The query API's view of the state: a compact in-memory index over the store's
//! history (findings and incidents), its audit log and its keys.
//!
//! The store holds the records; the catalog holds what a query filters and sorts on
//! (interned strings and numbers, about 200 bytes a finding), and reads a page's
//! findings back from the store by sequence number. It follows the store by reading
//! what was appended since it last looked ([`Catalog::refresh`]), so every answer
//! includes every commit before the request, with no channel from the committer.
//! Synchronous and free of clocks: the caller passes `now`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use unseen_findings::suppress::Rule;
use unseen_findings::{Finding, Incident, IncidentState, Record, Scope, Suppressions};
use unseen_model::{format_rfc3339, parse_time, UnixSecs};
use unseen_store::{AuditEntry, StateStore, StoreError};

/// Records read from the store per call while catching up.
const READ_CHUNK: usize = 4_096;

/// The key scan behind the image inventory is done again when it is older than this
/// (seconds): the inventory's first/last seen move by at most this much behind the store.
pub const INVENTORY_MAX_AGE: UnixSecs = 30;

const NONE: u32 = u32::MAX;

/// Strings of one kind, each kept once.
#[derive(Debug, Default)]
struct Interner {
    ids: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

impl Interner {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(s.into());
        self.ids.insert(s.into(), id);
        id
    }

    fn opt(&mut self, s: Option<&str>) -> u32 {
        s.map_or(NONE, |s| self.intern(s))
    }

    fn get(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    fn name(&self, id: u32) -> Option<&str> {
        self.names.get(id as usize).map(|s| &**s)
    }
}

/// What a finding is filtered and sorted on.
#[derive(Debug, Clone)]
struct Row {
    seq: u64,
    id: Box<str>,
    first_seen: UnixSecs,
    cluster: u32,
    node: u32,
    namespace: u32,
    workload: u32,
    image: u32,
    scope: Option<Scope>,
    suppressed: bool,
    incident: u32,
}

/// An incident as last recorded, with the members that joined since.
#[derive(Debug, Clone)]
struct IncidentEntry {
    /// The sequence number of its first record: its place in the queue.
    first_seq: u64,
    incident: Incident,
    /// Rows of its member findings, in the order they were recorded.
    members: Vec<usize>,
}

/// The analyst's status of an incident (`docs/api.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Workflow {
    /// `new`, `acknowledged` or `resolved`.
    pub status: &'static str,
    pub by: Option<String>,
    pub at: Option<String>,
    pub note: Option<String>,
}

impl Workflow {
    fn new() -> Self {
        Workflow {
            status: "new",
            ..Default::default()
        }
    }
}

/// One row of the image inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageRow {
    pub image: String,
    pub first_seen: String,
    pub last_seen: String,
    pub clusters: Vec<String>,
    pub node_count: usize,
    pub nodes: Vec<String>,
    pub namespaces: Vec<String>,
    pub workloads: Vec<String>,
    pub findings: usize,
}

/// Where and when one image ran, from the key scan. Its (cluster, node) pairs are about
/// an entry per key at fleet scale, so they are kept sorted and delta-encoded as varints
/// (a byte or two a pair) rather than in a set (~16 bytes a pair): at 10 M keys the
/// difference is a sixth of the server's memory.
#[derive(Debug, Default)]
struct ImageAgg {
    first_seen: UnixSecs,
    last_seen: UnixSecs,
    /// Sorted, distinct.
    clusters: Box<[u32]>,
    /// `cluster << 32 | node`, sorted and distinct, each as a LEB128 varint of its
    /// difference from the one before.
    nodes: Box<[u8]>,
}

impl ImageAgg {
    /// The (cluster, node) pairs, in order.
    fn nodes(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let mut bytes = self.nodes.iter();
        let mut prev = 0u64;
        std::iter::from_fn(move || {
            let mut delta = 0u64;
            let mut shift = 0;
            loop {
                let b = *bytes.next()?;
                delta |= u64::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    break;
                }
                shift += 7;
            }
            prev += delta;
            Some(((prev >> 32) as u32, prev as u32))
        })
    }
}

/// An [`ImageAgg`] being built by the key scan: the pairs as plain numbers until sorted.
#[derive(Debug)]
struct AggBuilder {
    first_seen: UnixSecs,
    last_seen: UnixSecs,
    pairs: Vec<u64>,
}

impl AggBuilder {
    fn new(first: UnixSecs, last: UnixSecs) -> Self {
        AggBuilder {
            first_seen: first,
            last_seen: last,
            pairs: Vec::new(),
        }
    }

    fn see(&mut self, first: UnixSecs, last: UnixSecs, cluster: u32, node: u32) {
        self.first_seen = self.first_seen.min(first);
        self.last_seen = self.last_seen.max(last);
        self.pairs.push(u64::from(cluster) << 32 | u64::from(node));
    }

    fn finish(mut self) -> ImageAgg {
        self.pairs.sort_unstable();
        self.pairs.dedup();
        let mut clusters: Vec<u32> = self.pairs.iter().map(|p| (p >> 32) as u32).collect();
        clusters.dedup();
        let mut nodes = Vec::with_capacity(self.pairs.len() + 8);
        let mut prev = 0u64;
        for &p in &self.pairs {
            let mut delta = p - prev;
            prev = p;
            while delta >= 0x80 {
                nodes.push(delta as u8 | 0x80);
                delta >>= 7;
            }
            nodes.push(delta as u8);
        }
        ImageAgg {
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            clusters: clusters.into(),
            nodes: nodes.into(),
        }
    }
}

/// Filters of `GET /api/v1/findings` (all optional; every one given must match).
#[derive(Debug, Clone, Default)]
pub struct FindingFilter {
    pub cluster: Option<String>,
    pub node: Option<String>,
    pub namespace: Option<String>,
    pub workload: Option<String>,
    /// A substring of the image.
    pub image: Option<String>,
    pub scope: Option<Scope>,
    pub suppressed: Option<bool>,
    pub incident: Option<String>,
    /// On `first_seen`: [since, until).
    pub since: Option<UnixSecs>,
    pub until: Option<UnixSecs>,
}

/// Filters of `GET /api/v1/incidents`.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    pub workload: Option<String>,
    pub image: Option<String>,
    pub scope: Option<Scope>,
    /// `image`, `new_node`, `digest`, `risk_threshold`, `capacity`.
    pub kind: Option<String>,
    pub state: Option<IncidentState>,
    /// `new`, `acknowledged`, `resolved`.
    pub status: Option<String>,
    /// On `opened_at`: [since, until).
    pub since: Option<UnixSecs>,
    pub until: Option<UnixSecs>,
}

/// One page: the items' positions and the cursor of the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// An incident as the API shows it: the record, with its workflow.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentView {
    #[serde(flatten)]
    pub incident: Incident,
    pub workflow: Workflow,
    /// Distinct nodes of its members (`nodes` may be cut in a list: see `truncated`).
    pub node_count: usize,
    /// In a list, the member lists (`findings`, `nodes`, `namespaces`, `workloads`,
    /// `images`) are cut to [`LIST_MEMBERS`] entries each; the incident's own page has
    /// them whole. Absent when nothing was cut.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// Entries of each member list of an incident in a list page: a digest of a busy day
/// has thousands of members, and a page of 50 of them would weigh megabytes.
pub const LIST_MEMBERS: usize = 100;

impl IncidentView {
    /// The view as a list shows it: member lists cut to [`LIST_MEMBERS`].
    fn for_list(mut self) -> Self {
        fn cut<T: Ord>(set: &mut BTreeSet<T>) -> bool {
            let over = set.len() > LIST_MEMBERS;
            while set.len() > LIST_MEMBERS {
                set.pop_last();
            }
            over
        }
        let i = &mut self.incident;
        let mut truncated = i.findings.len() > LIST_MEMBERS;
        i.findings.truncate(LIST_MEMBERS);
        truncated |= cut(&mut i.nodes);
        truncated |= cut(&mut i.namespaces);
        truncated |= cut(&mut i.workloads);
        truncated |= cut(&mut i.images);
        self.truncated = truncated;
        self
    }
}

/// The view of the state that the API queries.
#[derive(Debug, Default)]
pub struct Catalog {
    clusters: Interner,
    nodes: Interner,
    namespaces: Interner,
    workloads: Interner,
    images: Interner,
    incident_ids: Interner,
    rows: Vec<Row>,
    by_finding: HashMap<Box<str>, usize>,
    /// Image (interned) → its findings' rows: an image's page reads its own rows, not all.
    by_image: HashMap<u32, Vec<usize>>,
    incidents: Vec<IncidentEntry>,
    /// Incident (interned id) → its entry, once its record is read.
    by_incident: HashMap<u32, usize>,
    /// Members read before their incident's first record.
    early_members: HashMap<u32, Vec<usize>>,
    last_seq: u64,
    audit: Vec<(u64, AuditEntry)>,
    workflow: HashMap<String, Workflow>,
    /// Rules made through the API, by name, folded from the audit log.
    api_rules: BTreeMap<String, Rule>,
    /// The key scan: image → where and when.
    inventory: HashMap<u32, ImageAgg>,
    inventory_at: Option<UnixSecs>,
}

/// Why the catalog cannot answer.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the audit log holds a suppression rule that cannot be read (entry {seq}): {message}")]
    BadRule { seq: u64, message: String },
}

impl Catalog {
    /// Reads what the store appended since the last call: history records and audit
    /// entries; and scans the keys again when the inventory is older than
    /// [`INVENTORY_MAX_AGE`] at `now`.
    pub fn refresh(&mut self, store: &dyn StateStore, now: UnixSecs) -> Result<(), CatalogError> {
        loop {
            let chunk = store.history(self.last_seq, READ_CHUNK)?;
            let done = chunk.len() < READ_CHUNK;
            for (seq, record) in chunk {
                self.add(seq, &record);
            }
            if done {
                break;
            }
        }
        self.refresh_audit(store)?;
        if self
            .inventory_at
            .is_none_or(|at| now.saturating_sub(at) >= INVENTORY_MAX_AGE || now < at)
        {
            self.scan_keys(store, now)?;
        }
        Ok(())
    }

    /// Reads the audit entries appended since the last call (by this replica or another).
    pub fn refresh_audit(&mut self, store: &dyn StateStore) -> Result<(), CatalogError> {
        loop {
            let after = self.audit.last().map_or(0, |(seq, _)| *seq);
            let chunk = store.audit(after, READ_CHUNK)?;
            let done = chunk.len() < READ_CHUNK;
            for (seq, entry) in chunk {
                self.apply_audit(seq, entry)?;
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Findings in the catalog.
    pub fn findings_len(&self) -> usize {
        self.rows.len()
    }

    /// Images in the inventory.
    pub fn images_len(&self) -> usize {
        self.inventory.len()
    }

    /// Scans the store's keys into the inventory now.
    pub fn scan_keys(&mut self, store: &dyn StateStore, now: UnixSecs) -> Result<(), StoreError> {
        let mut building: HashMap<u32, AggBuilder> = HashMap::new();
        let (clusters, nodes, images) = (&mut self.clusters, &mut self.nodes, &mut self.images);
        store.for_each_key(&mut |key, state| {
            let image = images.intern(&key.image);
            let cluster = clusters.intern(&key.cluster);
            let node = nodes.intern(&key.node);
            building
                .entry(image)
                .or_insert_with(|| AggBuilder::new(state.episode_start, state.last_seen))
                .see(state.episode_start, state.last_seen, cluster, node);
        })?;
        let inventory = building
            .into_iter()
            .map(|(image, b)| (image, b.finish()))
            .collect();
        self.inventory = inventory;
        self.inventory_at = Some(now);
        Ok(())
    }

    fn add(&mut self, seq: u64, record: &Record) {
        self.last_seq = self.last_seq.max(seq);
        match record {
            Record::Finding(f) => self.add_finding(seq, f),
            Record::Incident(i) => self.add_incident(seq, i),
        }
    }

    fn add_finding(&mut self, seq: u64, f: &Finding) {
        let t = f.triage.as_ref();
        let workload = t.and_then(|t| t.workload.as_ref()).map(|w| w.label());
        let incident = t
            .and_then(|t| t.incident_id.as_deref())
            .map_or(NONE, |i| self.incident_ids.intern(i));
        let row = Row {
            seq,
            id: f.finding_id.as_str().into(),
            first_seen: parse_time(&f.first_seen).unwrap_or_default(),
            cluster: self.clusters.intern(&f.cluster),
            node: self.nodes.intern(&f.node),
            namespace: self.namespaces.opt(t.and_then(|t| t.namespace.as_deref())),
            workload: self.workloads.opt(workload.as_deref()),
            image: self.images.intern(&f.image),
            scope: t.map(|t| t.scope),
            suppressed: f.suppressed.is_some(),
            incident,
        };
        let index = self.rows.len();
        // A finding is recorded once per episode; the same id again (a replayed log)
        // points at its latest record.
        self.by_finding.insert(row.id.clone(), index);
        self.by_image.entry(row.image).or_default().push(index);
        self.rows.push(row);
        if incident != NONE {
            match self.by_incident.get(&incident) {
                Some(&e) => self.incidents[e].members.push(index),
                None => self.early_members.entry(incident).or_default().push(index),
            }
        }
    }

    fn add_incident(&mut self, seq: u64, incident: &Incident) {
        let id = self.incident_ids.intern(&incident.incident_id);
        match self.by_incident.get(&id) {
            Some(&e) => self.incidents[e].incident = incident.clone(),
            None => {
                let members = self.early_members.remove(&id).unwrap_or_default();
                self.by_incident.insert(id, self.incidents.len());
                self.incidents.push(IncidentEntry {
                    first_seq: seq,
                    incident: incident.clone(),
                    members,
                });
            }
        }
    }

    fn apply_audit(&mut self, seq: u64, entry: AuditEntry) -> Result<(), CatalogError> {
        let at = format_rfc3339(entry.at);
        match entry.action.as_str() {
            "incident.ack" | "incident.resolve" => {
                let status = if entry.action == "incident.ack" {
                    "acknowledged"
                } else {
                    "resolved"
                };
                self.workflow.insert(
                    entry.target.clone(),
                    Workflow {
                        status,
                        by: Some(entry.actor.clone()),
                        at: Some(at),
                        note: entry.note.clone(),
                    },
                );
            }
            "suppression.create" => {
                let text = entry.detail.as_deref().unwrap_or_default();
                let rules =
                    Suppressions::parse("audit log", text).map_err(|e| CatalogError::BadRule {
                        seq,
                        message: e.to_string(),
                    })?;
                for rule in rules.rules {
                    self.api_rules.insert(rule.name.clone(), rule);
                }
            }
            "suppression.expire" => {
                if let Some(rule) = self.api_rules.get_mut(&entry.target) {
                    rule.expires = Some(rule.expires.map_or(entry.at, |e| e.min(entry.at)));
                }
            }
            _ => {}
        }
        self.audit.push((seq, entry));
        Ok(())
    }

    /// The rules made through the API, in force or expired, in name order.
    pub fn api_rules(&self) -> Suppressions {
        Suppressions {
            rules: self.api_rules.values().cloned().collect(),
        }
    }

    pub fn api_rule(&self, name: &str) -> Option<&Rule> {
        self.api_rules.get(name)
    }

    /// The newest history sequence number read.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn finding_count(&self) -> usize {
        self.rows.len()
    }

    pub fn incident_count(&self) -> usize {
        self.incidents.len()
    }

    /// The sequence number of a finding, by id.
    pub fn finding_seq(&self, id: &str) -> Option<u64> {
        self.by_finding.get(id).map(|&i| self.rows[i].seq)
    }

    /// Findings matching `filter`, newest first, after `cursor` (a sequence number):
    /// their sequence numbers, to be read from the store.
    pub fn findings(&self, filter: &FindingFilter, cursor: Option<u64>, limit: usize) -> Page<u64> {
        let Some(m) = self.finding_matcher(filter) else {
            return Page {
                items: Vec::new(),
                next: None,
            };
        };
        let end = match cursor {
            Some(c) => self.rows.partition_point(|r| r.seq < c),
            None => self.rows.len(),
        };
        let mut items = Vec::with_capacity(limit.min(64));
        let mut next = None;
        for row in self.rows[..end].iter().rev() {
            if !m.matches(row) {
                continue;
            }
            if items.len() == limit {
                next = items.last().map(|s: &u64| s.to_string());
                break;
            }
            items.push(row.seq);
        }
        Page { items, next }
    }

    fn finding_matcher(&self, f: &FindingFilter) -> Option<RowMatcher> {
        // An exact filter on a value never seen matches nothing.
        let exact = |interner: &Interner, v: &Option<String>| -> Option<Option<u32>> {
            match v {
                None => Some(None),
                Some(v) => interner.get(v).map(Some),
            }
        };
        let workload = match &f.workload {
            None => None,
            Some(w) => {
                let ids = self.workload_ids(w);
                if ids.is_empty() {
                    return None;
                }
                Some(ids)
            }
        };
        Some(RowMatcher {
            cluster: exact(&self.clusters, &f.cluster)?,
            node: exact(&self.nodes, &f.node)?,
            namespace: exact(&self.namespaces, &f.namespace)?,
            incident: exact(&self.incident_ids, &f.incident)?,
            workload,
            images: f.image.as_deref().map(|q| self.image_ids(q)),
            scope: f.scope,
            suppressed: f.suppressed,
            since: f.since,
            until: f.until,
        })
    }

    /// Workloads named `w`: `Kind/name` exactly, or any kind of that name.
    fn workload_ids(&self, w: &str) -> BTreeSet<u32> {
        self.workloads
            .names
            .iter()
            .enumerate()
            .filter(|(_, n)| &***n == w || n.rsplit_once('/').is_some_and(|(_, name)| name == w))
            .map(|(i, _)| i as u32)
            .collect()
    }

    /// Images whose name holds `q` (ASCII case-insensitive).
    fn image_ids(&self, q: &str) -> BTreeSet<u32> {
        let q = q.to_ascii_lowercase();
        self.images
            .names
            .iter()
            .enumerate()
            .filter(|(_, n)| n.to_ascii_lowercase().contains(&q))
            .map(|(i, _)| i as u32)
            .collect()
    }

    fn workflow_of(&self, incident_id: &str) -> Workflow {
        self.workflow
            .get(incident_id)
            .cloned()
            .unwrap_or_else(Workflow::new)
    }

    /// The incident with the members that joined after its last record.
    fn view(&self, e: &IncidentEntry) -> IncidentView {
        let mut incident = e.incident.clone();
        let known: BTreeSet<&str> = incident.findings.iter().map(String::as_str).collect();
        let joined: Vec<&Row> = e
            .members
            .iter()
            .map(|&i| &self.rows[i])
            .filter(|r| !known.contains(&*r.id))
            .collect();
        for row in joined {
            incident.findings.push(row.id.to_string());
            let name = |i: &Interner, id| i.name(id).map(str::to_string);
            incident.nodes.extend(name(&self.nodes, row.node));
            incident
                .namespaces
                .extend(name(&self.namespaces, row.namespace));
            incident
                .workloads
                .extend(name(&self.workloads, row.workload));
            incident.images.extend(name(&self.images, row.image));
        }
        incident.finding_count = incident.finding_count.max(incident.findings.len() as u64);
        let workflow = self.workflow_of(&incident.incident_id);
        IncidentView {
            node_count: incident.nodes.len(),
            incident,
            workflow,
            truncated: false,
        }
    }

    /// Incidents matching `filter`, newest first (by their first record), after `cursor`.
    pub fn incidents<'a>(
        &'a self,
        filter: &IncidentFilter,
        cursor: Option<u64>,
        limit: usize,
    ) -> Page<IncidentView> {
        let end = match cursor {
            Some(c) => self.incidents.partition_point(|e| e.first_seq < c),
            None => self.incidents.len(),
        };
        let images = filter.image.as_deref().map(|q| q.to_ascii_lowercase());
        let mut items = Vec::new();
        let mut next = None;
        for e in self.incidents[..end].iter().rev() {
            let i = &e.incident;
            let opened = parse_time(&i.opened_at).unwrap_or_default();
            if filter.kind.as_deref().is_some_and(|k| kind_name(i) != k)
                || filter.scope.is_some_and(|s| s != i.scope)
                || filter.state.is_some_and(|s| s != i.state)
                || filter.since.is_some_and(|s| opened < s)
                || filter.until.is_some_and(|u| opened >= u)
            {
                continue;
            }
            if let Some(status) = &filter.status {
                if self.workflow_of(&i.incident_id).status != status {
                    continue;
                }
            }
            let members = || e.members.iter().map(|&m| &self.rows[m]);
            if let Some(c) = &filter.cluster {
                let id = self.clusters.get(c);
                if i.cluster.as_deref() != Some(c.as_str())
                    && !members().any(|r| Some(r.cluster) == id)
                {
                    continue;
                }
            }
            // The record's sets, and the members that joined since (no copy of the
            // incident for one that is filtered out).
            let names = |interner: &'a Interner, pick: fn(&Row) -> u32| {
                members().filter_map(move |r| interner.name(pick(r)))
            };
            let workload_is =
                |x: &str, w: &str| x == w || x.rsplit_once('/').is_some_and(|(_, n)| n == w);
            if filter.namespace.as_ref().is_some_and(|n| {
                !i.namespaces.contains(n)
                    && !names(&self.namespaces, |r| r.namespace).any(|x| x == n)
            }) || filter.workload.as_ref().is_some_and(|w| {
                !i.workloads.iter().any(|x| workload_is(x, w))
                    && !names(&self.workloads, |r| r.workload).any(|x| workload_is(x, w))
            }) || images.as_ref().is_some_and(|q| {
                let hit = |x: &str| x.to_ascii_lowercase().contains(q.as_str());
                !i.image.iter().chain(i.images.iter()).any(|x| hit(x))
                    && !names(&self.images, |r| r.image).any(hit)
            }) {
                continue;
            }
            if items.len() == limit {
                next = Some(items_last_seq(&items, self).to_string());
                break;
            }
            items.push(self.view(e).for_list());
        }
        Page { items, next }
    }

    /// One incident with its members' sequence numbers (to be read from the store).
    pub fn incident(&self, id: &str) -> Option<(IncidentView, Vec<u64>)> {
        let e = &self.incidents[*self.by_incident.get(&self.incident_ids.get(id)?)?];
        let view = self.view(e);
        let mut seqs: Vec<u64> = e.members.iter().map(|&i| self.rows[i].seq).collect();
        let mut listed: std::collections::HashSet<u64> = seqs.iter().copied().collect();
        // Members named by the record but not read (pruned from the history, or from
        // before it was kept) are left out.
        for f in &view.incident.findings {
            if let Some(seq) = self.finding_seq(f) {
                if listed.insert(seq) {
                    seqs.push(seq);
                }
            }
        }
        Some((view, seqs))
    }

    /// The audit entries about `target`, oldest first.
    pub fn audit_of(&self, target: &str) -> Vec<(u64, AuditEntry)> {
        self.audit
            .iter()
            .filter(|(_, e)| e.target == target)
            .cloned()
            .collect()
    }

    /// The audit log, newest first, after `cursor`.
    pub fn audit_page(&self, cursor: Option<u64>, limit: usize) -> Page<(u64, AuditEntry)> {
        let end = match cursor {
            Some(c) => self.audit.partition_point(|(s, _)| *s < c),
            None => self.audit.len(),
        };
        let start = end.saturating_sub(limit);
        let items: Vec<_> = self.audit[start..end].iter().rev().cloned().collect();
        let next = (start > 0)
            .then(|| items.last().map(|(s, _)| s.to_string()))
            .flatten();
        Page { items, next }
    }

    fn image_row(&self, image: u32) -> Option<ImageRow> {
        let agg = self.inventory.get(&image);
        let mut first_seen = agg.map(|a| a.first_seen);
        let mut last_seen = agg.map(|a| a.last_seen);
        let mut pairs: BTreeSet<(u32, u32)> = agg.into_iter().flat_map(ImageAgg::nodes).collect();
        let mut namespaces = BTreeSet::new();
        let mut workloads = BTreeSet::new();
        let mut findings = 0;
        // Findings keep what the key scan does not (namespace, workload), and cover
        // keys made since the last scan.
        for row in self.image_rows(image) {
            findings += 1;
            first_seen = Some(first_seen.map_or(row.first_seen, |f| f.min(row.first_seen)));
            last_seen = Some(last_seen.map_or(row.first_seen, |l| l.max(row.first_seen)));
            pairs.insert((row.cluster, row.node));
            namespaces.extend(self.namespaces.name(row.namespace));
            workloads.extend(self.workloads.name(row.workload));
        }
        let first = first_seen?;
        let names = |i: &Interner, ids: &mut dyn Iterator<Item = u32>| -> Vec<String> {
            ids.filter_map(|id| i.name(id).map(str::to_string))
                .collect()
        };
        let nodes: Vec<String> = pairs
            .iter()
            .filter_map(|&(c, n)| {
                Some(format!(
                    "{}/{}",
                    self.clusters.name(c)?,
                    self.nodes.name(n)?
                ))
            })
            .collect();
        Some(ImageRow {
            image: self.images.name(image)?.to_string(),
            first_seen: format_rfc3339(first),
            last_seen: format_rfc3339(last_seen.unwrap_or(first)),
            clusters: names(
                &self.clusters,
                &mut pairs
                    .iter()
                    .map(|p| p.0)
                    .collect::<BTreeSet<_>>()
                    .into_iter(),
            ),
            node_count: nodes.len(),
            nodes,
            namespaces: namespaces.into_iter().map(str::to_string).collect(),
            workloads: workloads.into_iter().map(str::to_string).collect(),
            findings,
        })
    }

    /// The inventory: images holding `q` (or all), in `cluster` (or any), newest first
    /// by first seen; the cursor is the last row's `first_seen~image`.
    pub fn images(
        &self,
        q: Option<&str>,
        cluster: Option<&str>,
        cursor: Option<(UnixSecs, String)>,
        limit: usize,
    ) -> Page<ImageRow> {
        let candidates: BTreeSet<u32> = match q {
            Some(q) => self.image_ids(q),
            None => (0..self.images.names.len() as u32).collect(),
        };
        let cluster = match cluster {
            Some(c) => match self.clusters.get(c) {
                Some(id) => Some(id),
                None => {
                    return Page {
                        items: Vec::new(),
                        next: None,
                    }
                }
            },
            None => None,
        };
        // Sort keys first (cheap), then build only the page's rows.
        let mut order: Vec<(UnixSecs, &str, u32)> = Vec::new();
        let mut first_of: HashMap<u32, UnixSecs> = HashMap::new();
        for (id, agg) in &self.inventory {
            first_of.insert(*id, agg.first_seen);
        }
        let mut in_cluster: HashMap<u32, bool> = HashMap::new();
        for (id, agg) in &self.inventory {
            in_cluster.insert(
                *id,
                cluster.is_none_or(|c| agg.clusters.binary_search(&c).is_ok()),
            );
        }
        for row in &self.rows {
            let f = first_of.entry(row.image).or_insert(row.first_seen);
            *f = (*f).min(row.first_seen);
            if cluster.is_none_or(|c| c == row.cluster) {
                in_cluster.insert(row.image, true);
            } else {
                in_cluster.entry(row.image).or_insert(false);
            }
        }
        for id in candidates {
            if let (Some(&f), Some(true)) = (first_of.get(&id), in_cluster.get(&id)) {
                if let Some(name) = self.images.name(id) {
                    order.push((f, name, id));
                }
            }
        }
        order.sort_unstable_by(|a, b| (b.0, b.1).cmp(&(a.0, a.1)));
        let start = match &cursor {
            Some((t, name)) => order.partition_point(|(f, n, _)| (*f, *n) >= (*t, name.as_str())),
            None => 0,
        };
        let page: Vec<_> = order[start..].iter().take(limit).collect();
        let next = (order.len() > start + page.len())
            .then(|| page.last().map(|(f, n, _)| format!("{f}~{n}")))
            .flatten();
        Page {
            items: page
                .iter()
                .filter_map(|(_, _, id)| self.image_row(*id))
                .collect(),
            next,
        }
    }

    fn image_rows(&self, image: u32) -> impl Iterator<Item = &Row> {
        self.by_image
            .get(&image)
            .into_iter()
            .flatten()
            .map(|&i| &self.rows[i])
    }

    /// One image by its exact (canonical) name, with its incidents.
    pub fn image(&self, name: &str) -> Option<(ImageRow, Vec<String>)> {
        let id = self.images.get(name)?;
        let row = self.image_row(id)?;
        let mut incidents = BTreeSet::new();
        for r in self.image_rows(id) {
            if let Some(i) = self.incident_ids.name(r.incident) {
                incidents.insert(i.to_string());
            }
        }
        for e in &self.incidents {
            if e.incident.image.as_deref() == Some(name) {
                incidents.insert(e.incident.incident_id.clone());
            }
        }
        Some((row, incidents.into_iter().collect()))
    }

    /// The timeline of first sightings in [since, until): counts per hour per cluster,
    /// the newest `max_points` findings, and the incidents opened in the range.
    pub fn timeline(
        &self,
        since: UnixSecs,
        until: UnixSecs,
        cluster: Option<&str>,
        max_points: usize,
    ) -> Timeline {
        const BUCKET: UnixSecs = 3_600;
        let cluster_id = cluster.map(|c| self.clusters.get(c));
        let mut series: BTreeMap<&str, BTreeMap<UnixSecs, u64>> = BTreeMap::new();
        let mut points = Vec::new();
        for row in self.rows.iter().rev() {
            if row.first_seen < since || row.first_seen >= until {
                continue;
            }
            if let Some(c) = cluster_id {
                if c != Some(row.cluster) {
                    continue;
                }
            }
            let name = self.clusters.name(row.cluster).unwrap_or_default();
            *series
                .entry(name)
                .or_default()
                .entry(row.first_seen.div_euclid(BUCKET) * BUCKET)
                .or_default() += 1;
            if points.len() < max_points {
                points.push(TimelinePoint {
                    t: format_rfc3339(row.first_seen),
                    cluster: name.to_string(),
                    node: self.nodes.name(row.node).unwrap_or_default().to_string(),
                    image: self.images.name(row.image).unwrap_or_default().to_string(),
                    incident_id: self.incident_ids.name(row.incident).map(str::to_string),
                    scope: row.scope.map(Scope::as_str),
                    finding_id: row.id.to_string(),
                });
            }
        }
        let mut incidents = Vec::new();
        for e in self.incidents.iter().rev() {
            let i = &e.incident;
            let opened = parse_time(&i.opened_at).unwrap_or_default();
            if opened < since || opened >= until {
                continue;
            }
            if let Some(c) = cluster {
                let member_in = e
                    .members
                    .iter()
                    .any(|&m| self.clusters.name(self.rows[m].cluster) == Some(c));
                if i.cluster.as_deref() != Some(c) && !member_in {
                    continue;
                }
            }
            let view = self.view(e);
            incidents.push(TimelineIncident {
                incident_id: i.incident_id.clone(),
                kind: kind_name(i).to_string(),
                scope: i.scope.as_str(),
                title: i.title.clone(),
                opened_at: i.opened_at.clone(),
                closes_at: i.closes_at.clone(),
                closed_at: i.closed_at.clone(),
                node_count: view.incident.nodes.len(),
            });
        }
        Timeline {
            since: format_rfc3339(since),
            until: format_rfc3339(until),
            bucket_seconds: BUCKET,
            series: series
                .into_iter()
                .map(|(cluster, buckets)| TimelineSeries {
                    cluster: cluster.to_string(),
                    buckets: buckets
                        .into_iter()
                        .map(|(t, findings)| TimelineBucket {
                            t: format_rfc3339(t),
                            findings,
                        })
                        .collect(),
                })
                .collect(),
            points,
            incidents,
        }
    }

    /// The newest first sighting recorded, if any: where the timeline ends by default.
    pub fn newest_first_seen(&self) -> Option<UnixSecs> {
        self.rows.iter().map(|r| r.first_seen).max()
    }
}

fn items_last_seq(items: &[IncidentView], catalog: &Catalog) -> u64 {
    items
        .last()
        .and_then(|v| catalog.incident_ids.get(&v.incident.incident_id))
        .and_then(|id| catalog.by_incident.get(&id))
        .map_or(0, |&e| catalog.incidents[e].first_seq)
}

/// An incident kind's name, as in the records.
pub fn kind_name(i: &Incident) -> &'static str {
    use unseen_findings::IncidentKind::*;
    match i.kind {
        Image => "image",
        NewNode => "new_node",
        Digest => "digest",
        RiskThreshold => "risk_threshold",
        Capacity => "capacity",
    }
}

struct RowMatcher {
    cluster: Option<u32>,
    node: Option<u32>,
    namespace: Option<u32>,
    incident: Option<u32>,
    workload: Option<BTreeSet<u32>>,
    images: Option<BTreeSet<u32>>,
    scope: Option<Scope>,
    suppressed: Option<bool>,
    since: Option<UnixSecs>,
    until: Option<UnixSecs>,
}

impl RowMatcher {
    fn matches(&self, r: &Row) -> bool {
        self.cluster.is_none_or(|c| c == r.cluster)
            && self.node.is_none_or(|n| n == r.node)
            && self.namespace.is_none_or(|n| n == r.namespace)
            && self.incident.is_none_or(|i| i == r.incident)
            && self
                .workload
                .as_ref()
                .is_none_or(|w| w.contains(&r.workload))
            && self.images.as_ref().is_none_or(|i| i.contains(&r.image))
            && self.scope.is_none_or(|s| Some(s) == r.scope)
            && self.suppressed.is_none_or(|s| s == r.suppressed)
            && self.since.is_none_or(|s| r.first_seen >= s)
            && self.until.is_none_or(|u| r.first_seen < u)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub since: String,
    pub until: String,
    pub bucket_seconds: UnixSecs,
    pub series: Vec<TimelineSeries>,
    pub points: Vec<TimelinePoint>,
    pub incidents: Vec<TimelineIncident>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelineSeries {
    pub cluster: String,
    pub buckets: Vec<TimelineBucket>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelineBucket {
    pub t: String,
    pub findings: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelinePoint {
    pub t: String,
    pub cluster: String,
    pub node: String,
    pub image: String,
    pub incident_id: Option<String>,
    pub scope: Option<&'static str>,
    pub finding_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelineIncident {
    pub incident_id: String,
    pub kind: String,
    pub scope: &'static str,
    pub title: String,
    pub opened_at: String,
    pub closes_at: String,
    pub closed_at: Option<String>,
    pub node_count: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The encoded pairs of an image read back as the set of pairs seen, and its
        /// clusters as theirs; times are the widest seen.
        #[test]
        fn image_agg_keeps_what_a_set_would(
            seen in prop::collection::vec((any::<u32>(), 0u32..4, any::<u32>(), 0u32..50), 1..300),
            big in any::<bool>(),
        ) {
            // Small ids (dense interning) and large ones (the varint's longest forms).
            let id = |x: u32| if big { x } else { x % 1000 };
            let cluster_id = |c: u32| if big { c.wrapping_mul(0x5555_5555) } else { c };
            let mut b = AggBuilder::new(seen[0].0 as UnixSecs, seen[0].0 as UnixSecs);
            let mut pairs = BTreeSet::new();
            let (mut first, mut last) = (seen[0].0 as UnixSecs, seen[0].0 as UnixSecs);
            for &(t, cluster, node, span) in &seen {
                let (t, cluster, node) = (t as UnixSecs, cluster_id(cluster), id(node));
                b.see(t, t + span as UnixSecs, cluster, node);
                pairs.insert((cluster, node));
                first = first.min(t);
                last = last.max(t + span as UnixSecs);
            }
            let agg = b.finish();
            prop_assert_eq!(agg.nodes().collect::<Vec<_>>(), pairs.iter().copied().collect::<Vec<_>>());
            let clusters: BTreeSet<u32> = pairs.iter().map(|p| p.0).collect();
            prop_assert_eq!(agg.clusters.to_vec(), clusters.into_iter().collect::<Vec<_>>());
            prop_assert_eq!((agg.first_seen, agg.last_seen), (first, last));
        }
    }
}
