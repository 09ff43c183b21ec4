//! The query API over a real HTTP listener and a store holding a small fleet's history:
//! every endpoint, filter, pagination edge and role, checked against the store's own
//! records (a reference filtered here, the simple way).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, COOKIE, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use unseen_api::{Api, Directory, Principal, Role, RulesControl};
use unseen_findings::{Finding, Record, Suppressions};
use unseen_model::{ctx, Context, OwnedContext, UnixSecs};
use unseen_normalize::{Key, KeyMode};
use unseen_store::conformance::triage_opts;
use unseen_store::{MemStore, Sighting, StateStore};

const VIEWER: &str = "t-viewer";
const RESPONDER: &str = "t-responder";
const ADMIN: &str = "t-admin";
const COLLECTOR: &str = "t-collector";
/// The server's clock in these tests.
const NOW: UnixSecs = 30_000;

struct Tokens {
    revoked: Mutex<BTreeSet<String>>,
}

impl Directory for Tokens {
    fn authenticate(&self, authorization: &str) -> Result<Principal, String> {
        let token = authorization
            .strip_prefix("Bearer ")
            .ok_or("not a bearer token")?;
        let (name, role) = match token {
            VIEWER => ("viewer", Role::Viewer),
            RESPONDER => ("responder", Role::Responder),
            ADMIN => ("admin", Role::Admin),
            COLLECTOR => return Err("token `collector` has no `role`".into()),
            _ => return Err("unknown token".into()),
        };
        if self.revoked.lock().unwrap().contains(name) {
            return Err("unknown token".into());
        }
        Ok(Principal {
            name: name.into(),
            role,
        })
    }

    fn still_valid(&self, p: &Principal) -> bool {
        !self.revoked.lock().unwrap().contains(&p.name)
    }
}

#[derive(Default)]
struct Rules {
    configured: Suppressions,
    api: Mutex<Suppressions>,
}

impl RulesControl for Rules {
    fn configured(&self) -> Suppressions {
        self.configured.clone()
    }
    fn set_api_rules(&self, rules: Suppressions) -> Result<(), String> {
        *self.api.lock().unwrap() = rules;
        Ok(())
    }
}

fn sighting(
    cluster: &str,
    node: &str,
    image: &str,
    time: UnixSecs,
    ns: &str,
    pod: &str,
    deployment: Option<&str>,
) -> Sighting {
    let mut slots = [None; unseen_model::CONTEXT_LEN];
    slots[ctx::NAMESPACE] = Some(ns);
    slots[ctx::POD_NAME] = Some(pod);
    slots[ctx::DEPLOYMENT] = deployment;
    Sighting {
        key: Key {
            host: node.into(),
            cluster: cluster.into(),
            node: node.into(),
            image: image.into(),
        },
        time,
        host_name: None,
        context: OwnedContext::new(&Context(slots)),
        image_raw: None,
    }
}

/// A small fleet: three clusters of four nodes with three images each, a new image
/// rolled out across one cluster, a suppressed image, a new node; then time moves on so
/// that the incidents close.
fn fleet(store: &dyn StateStore) {
    let mut batch = Vec::new();
    for c in ["a", "b", "c"] {
        for n in 1..=4 {
            for i in 0..3 {
                let image = format!("registry.example/team/base-{i}");
                batch.push(sighting(
                    c,
                    &format!("{c}-n{n}"),
                    &image,
                    10_000,
                    &format!("ns-{i}"),
                    &format!("base-{i}-7d9f8c6b5-x{n}"),
                    None,
                ));
            }
        }
    }
    store.apply(&batch, &triage_opts(10_000)).unwrap();
    let rollout: Vec<_> = (1..=4)
        .map(|n| {
            sighting(
                "a",
                &format!("a-n{n}"),
                "ghcr.io/acme/api",
                12_000 + n,
                "payments",
                "api-5c8d7-aaaaa",
                Some("api"),
            )
        })
        .collect();
    store.apply(&rollout, &triage_opts(12_010)).unwrap();
    let mut opts = triage_opts(13_000);
    opts.suppressions = Arc::new(
        Suppressions::parse("test", "[[suppress]]\nname = \"web\"\nreason = \"web team\"\n\"k8s.namespace.name\" = \"web\"\n").unwrap(),
    );
    store
        .apply(
            &[sighting(
                "b",
                "b-n1",
                "docker.io/library/nginx",
                13_000,
                "web",
                "nginx-0",
                None,
            )],
            &opts,
        )
        .unwrap();
    store
        .apply(
            &[sighting(
                "a",
                "a-n9",
                "registry.example/team/base-0",
                14_000,
                "ns-0",
                "base-0-7d9f8c6b5-x9",
                None,
            )],
            &triage_opts(14_000),
        )
        .unwrap();
    store
        .apply(
            &[sighting(
                "c",
                "c-n1",
                "registry.example/team/base-1",
                20_000,
                "ns-1",
                "base-1-7d9f8c6b5-x1",
                None,
            )],
            &triage_opts(20_000),
        )
        .unwrap();
}

struct Harness {
    base: String,
    client: reqwest::Client,
    store: Arc<MemStore>,
    rules: Arc<Rules>,
    tokens: Arc<Tokens>,
}

async fn start() -> Harness {
    let store = Arc::new(MemStore::new());
    fleet(store.as_ref());
    let rules = Arc::new(Rules::default());
    let tokens = Arc::new(Tokens {
        revoked: Mutex::new(BTreeSet::new()),
    });
    let api = Api::new(
        store.clone(),
        tokens.clone(),
        rules.clone(),
        KeyMode::default(),
        false,
        || NOW,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum_serve(listener, unseen_api::router(api)).await;
    });
    Harness {
        base,
        client: reqwest::Client::new(),
        store,
        rules,
        tokens,
    }
}

async fn axum_serve(listener: tokio::net::TcpListener, router: axum::Router) {
    axum::serve(listener, router).await.unwrap();
}

impl Harness {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"))
        };
        (status, json)
    }

    async fn get(&self, path: &str, token: &str) -> Value {
        let (status, json) = self.call(Method::GET, path, Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {json}");
        json
    }

    /// Every item of a list, page by page (`limit` each), checking the page shape.
    async fn walk(&self, path: &str, limit: usize) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let url = match &cursor {
                Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
                None => format!("{path}{sep}limit={limit}"),
            };
            let page = self.get(&url, VIEWER).await;
            let items = page["items"].as_array().expect("items").clone();
            assert!(items.len() <= limit, "{url}: a page holds at most `limit`");
            out.extend(items.iter().cloned());
            match &page["next"] {
                Value::Null => return out,
                Value::String(c) => {
                    assert_eq!(items.len(), limit, "{url}: a page with a next page is full");
                    cursor = Some(c.clone());
                }
                other => panic!("{url}: next is {other}"),
            }
        }
        panic!("{path}: pages never end");
    }

    fn findings(&self) -> Vec<Finding> {
        self.store
            .history(0, usize::MAX)
            .unwrap()
            .into_iter()
            .filter_map(|(_, r)| match r {
                Record::Finding(f) => Some(*f),
                Record::Incident(_) => None,
            })
            .collect()
    }

    /// The latest record of every incident, in the order they first appeared.
    fn incidents(&self) -> Vec<unseen_findings::Incident> {
        let mut order = Vec::new();
        let mut latest = HashMap::new();
        for (_, r) in self.store.history(0, usize::MAX).unwrap() {
            if let Record::Incident(i) = r {
                if !latest.contains_key(&i.incident_id) {
                    order.push(i.incident_id.clone());
                }
                latest.insert(i.incident_id.clone(), *i);
            }
        }
        order
            .into_iter()
            .map(|id| latest.remove(&id).unwrap())
            .collect()
    }
}

/// What a filter keeps, the simple way.
type Keep<T> = Box<dyn Fn(&T) -> bool>;

fn ids(items: &[Value], field: &str) -> Vec<String> {
    items
        .iter()
        .map(|i| i[field].as_str().expect(field).to_string())
        .collect()
}

#[tokio::test]
async fn findings_pages_cover_every_finding_once_newest_first() {
    let h = start().await;
    let all = h.findings();
    assert!(all.len() >= 40, "the fleet has findings: {}", all.len());
    let expected: Vec<String> = all.iter().rev().map(|f| f.finding_id.clone()).collect();
    for limit in [1, 7, 50, 500] {
        let got = h.walk("/api/v1/findings", limit).await;
        assert_eq!(ids(&got, "finding_id"), expected, "limit {limit}");
    }
    // The items are the findings file's objects.
    let first = h.get("/api/v1/findings?limit=1", VIEWER).await;
    let newest: Finding = serde_json::from_value(first["items"][0].clone()).unwrap();
    assert_eq!(&newest, all.last().unwrap());
    assert_eq!(
        first["items"][0],
        serde_json::to_value(all.last().unwrap()).unwrap()
    );
    // One by id, and an unknown id.
    let one = h
        .get(&format!("/api/v1/findings/{}", all[3].finding_id), VIEWER)
        .await;
    assert_eq!(one, serde_json::to_value(&all[3]).unwrap());
    let (status, body) = h
        .call(Method::GET, "/api/v1/findings/nope", Some(VIEWER), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains("nope"));
}

#[tokio::test]
async fn every_finding_filter_selects_what_the_reference_does() {
    let h = start().await;
    let all = h.findings();
    let t = |f: &Finding| f.triage.clone().unwrap();
    let cases: Vec<(&str, Keep<Finding>)> = vec![
        ("cluster=a", Box::new(|f| f.cluster == "a")),
        ("node=b-n2", Box::new(|f| f.node == "b-n2")),
        (
            "namespace=payments",
            Box::new(move |f| t(f).namespace.as_deref() == Some("payments")),
        ),
        (
            "workload=api",
            Box::new(move |f| t(f).workload.is_some_and(|w| w.name == "api")),
        ),
        (
            "workload=Deployment/api",
            Box::new(move |f| t(f).workload.is_some_and(|w| w.label() == "Deployment/api")),
        ),
        ("image=ACME", Box::new(|f| f.image.contains("acme"))),
        (
            "scope=fleet",
            Box::new(move |f| t(f).scope.as_str() == "fleet"),
        ),
        (
            "scope=node",
            Box::new(move |f| t(f).scope.as_str() == "node"),
        ),
        ("suppressed=true", Box::new(|f| f.suppressed.is_some())),
        ("suppressed=false", Box::new(|f| f.suppressed.is_none())),
        (
            "since=1970-01-01T03:20:00Z",
            Box::new(|f| unseen_model::parse_time(&f.first_seen).unwrap() >= 12_000),
        ),
        (
            "until=1970-01-01T03:20:01Z",
            Box::new(|f| unseen_model::parse_time(&f.first_seen).unwrap() < 12_001),
        ),
        (
            "cluster=a&scope=node&namespace=ns-0",
            Box::new(move |f| {
                f.cluster == "a"
                    && t(f).scope.as_str() == "node"
                    && t(f).namespace.as_deref() == Some("ns-0")
            }),
        ),
        ("cluster=zzz", Box::new(|_| false)),
        ("workload=nothing", Box::new(|_| false)),
    ];
    for (q, keep) in cases {
        let expected: Vec<String> = all
            .iter()
            .rev()
            .filter(|f| keep(f))
            .map(|f| f.finding_id.clone())
            .collect();
        let got = h.walk(&format!("/api/v1/findings?{q}"), 5).await;
        assert_eq!(ids(&got, "finding_id"), expected, "filter {q}");
        if !q.contains("zzz") && !q.contains("nothing") {
            assert!(
                !expected.is_empty(),
                "filter {q} selects something in this fleet"
            );
        }
    }
    // By incident: the members.
    let inc = h
        .incidents()
        .into_iter()
        .find(|i| i.image.as_deref() == Some("ghcr.io/acme/api"))
        .unwrap();
    let got = h
        .walk(
            &format!("/api/v1/findings?incident={}", inc.incident_id),
            50,
        )
        .await;
    assert_eq!(got.len(), 4, "the rollout's four nodes");
}

#[tokio::test]
async fn bad_parameters_are_400s_naming_them() {
    let h = start().await;
    for (q, name) in [
        ("/api/v1/findings?limit=0", "limit"),
        ("/api/v1/findings?limit=501", "limit"),
        ("/api/v1/findings?limit=ten", "limit"),
        ("/api/v1/findings?scope=galaxy", "scope"),
        ("/api/v1/findings?since=yesterday", "since"),
        ("/api/v1/findings?suppressed=maybe", "suppressed"),
        ("/api/v1/findings?cursor=abc", "cursor"),
        ("/api/v1/findings?clustr=a", "clustr"),
        ("/api/v1/findings?cluster=a&cluster=b", "cluster"),
        ("/api/v1/incidents?state=ajar", "state"),
        ("/api/v1/incidents?status=done", "status"),
        ("/api/v1/incidents?kind=alien", "kind"),
        ("/api/v1/images?cursor=nope", "cursor"),
        ("/api/v1/findings?until=12001", "until"),
    ] {
        let (status, body) = h.call(Method::GET, q, Some(VIEWER), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains(&format!("`{name}`")),
            "{q}: {body}"
        );
    }
    // Cursors at the edges: before the first item, an empty last page; past the newest,
    // the first page.
    let page = h.get("/api/v1/findings?cursor=0", VIEWER).await;
    assert_eq!(
        (page["items"].as_array().unwrap().len(), &page["next"]),
        (0, &Value::Null)
    );
    let first = h.get("/api/v1/findings?limit=3", VIEWER).await;
    let past = h
        .get("/api/v1/findings?limit=3&cursor=9999999", VIEWER)
        .await;
    assert_eq!(first, past);
    let page = h.get("/api/v1/incidents?cursor=1", VIEWER).await;
    assert_eq!(page["items"], json!([]));
    // The largest page is allowed.
    let page = h.get("/api/v1/findings?limit=500", VIEWER).await;
    assert_eq!(page["items"].as_array().unwrap().len(), h.findings().len());
    assert_eq!(page["next"], Value::Null);
    let (status, body) = h
        .call(Method::GET, "/api/v1/nothing", Some(VIEWER), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains("openapi.json"));
}

#[tokio::test]
async fn incidents_list_filter_and_show_their_members() {
    let h = start().await;
    let all = h.incidents();
    assert!(all.len() >= 3, "{}", all.len());
    let expected: Vec<String> = all.iter().rev().map(|i| i.incident_id.clone()).collect();
    for limit in [1, 2, 50] {
        let got = h.walk("/api/v1/incidents", limit).await;
        assert_eq!(ids(&got, "incident_id"), expected, "limit {limit}");
        assert!(got.iter().all(|i| i["workflow"]["status"] == "new"));
    }
    let rollout = all
        .iter()
        .find(|i| i.image.as_deref() == Some("ghcr.io/acme/api"))
        .unwrap();
    let cases: Vec<(&str, Keep<unseen_findings::Incident>)> = vec![
        ("scope=fleet", Box::new(|i| i.scope.as_str() == "fleet")),
        (
            "kind=image",
            Box::new(|i| unseen_api::catalog::kind_name(i) == "image"),
        ),
        (
            "kind=new_node",
            Box::new(|i| unseen_api::catalog::kind_name(i) == "new_node"),
        ),
        (
            "state=closed",
            Box::new(|i| i.state == unseen_findings::IncidentState::Closed),
        ),
        (
            "namespace=payments",
            Box::new(|i| i.namespaces.contains("payments")),
        ),
        (
            "workload=api",
            Box::new(|i| i.workloads.contains("Deployment/api")),
        ),
        (
            "image=acme",
            Box::new(|i| i.images.iter().any(|x| x.contains("acme"))),
        ),
        ("status=acknowledged", Box::new(|_| false)),
        (
            "since=1970-01-01T03:20:00Z",
            Box::new(|i| unseen_model::parse_time(&i.opened_at).unwrap() >= 12_000),
        ),
        (
            "until=1970-01-01T03:20:00Z",
            Box::new(|i| unseen_model::parse_time(&i.opened_at).unwrap() < 12_000),
        ),
        (
            "state=open",
            Box::new(|i| i.state == unseen_findings::IncidentState::Open),
        ),
        ("status=new", Box::new(|_| true)),
    ];
    for (q, keep) in cases {
        let expected: Vec<String> = all
            .iter()
            .rev()
            .filter(|i| keep(i))
            .map(|i| i.incident_id.clone())
            .collect();
        let got = h.walk(&format!("/api/v1/incidents?{q}"), 2).await;
        assert_eq!(ids(&got, "incident_id"), expected, "filter {q}");
    }
    // Cluster: the incident's own, or a member's (a fleet-wide incident has none).
    let got = ids(
        &h.walk("/api/v1/incidents?cluster=a", 50).await,
        "incident_id",
    );
    assert!(
        got.contains(&rollout.incident_id),
        "a fleet incident with members in `a`"
    );
    let got = ids(
        &h.walk("/api/v1/incidents?cluster=c", 50).await,
        "incident_id",
    );
    assert!(!got.contains(&rollout.incident_id));
    // One, with its members' evidence.
    let one = h
        .get(
            &format!("/api/v1/incidents/{}", rollout.incident_id),
            VIEWER,
        )
        .await;
    assert_eq!(one["incident"]["incident_id"], json!(rollout.incident_id));
    let members = one["members"].as_array().unwrap();
    assert_eq!(members.len(), 4);
    assert!(members
        .iter()
        .all(|m| m["k8s.namespace.name"] == "payments"
            && m["incident_id"] == json!(rollout.incident_id)));
    assert_eq!(
        one["incident"]["nodes"],
        json!(["a-n1", "a-n2", "a-n3", "a-n4"])
    );
    assert_eq!(one["audit"], json!([]));
    let (status, _) = h
        .call(Method::GET, "/api/v1/incidents/none", Some(VIEWER), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn roles_and_authentication_are_enforced() {
    let h = start().await;
    let some_incident = h.incidents()[0].incident_id.clone();
    let finding = h.findings()[0].finding_id.clone();
    let reads = [
        "/api/v1/findings".to_string(),
        format!("/api/v1/findings/{finding}"),
        format!("/api/v1/findings/{finding}/suppression"),
        "/api/v1/incidents".into(),
        format!("/api/v1/incidents/{some_incident}"),
        "/api/v1/images".into(),
        "/api/v1/images/registry.example/team/base-0".into(),
        "/api/v1/timeline".into(),
        "/api/v1/suppressions".into(),
    ];
    for path in &reads {
        for token in [None, Some("wrong"), Some(COLLECTOR)] {
            let (status, body) = h.call(Method::GET, path, token, None).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{path} with {token:?}: {body}"
            );
            assert!(body["error"].is_string());
        }
        let (status, _) = h.call(Method::GET, path, Some(VIEWER), None).await;
        assert_eq!(status, StatusCode::OK, "{path} as viewer");
    }
    let rule = json!({"reason": "r", "matchers": {"k8s.namespace.name": "x"}});
    let changes: [(Method, String, Option<Value>, Role); 5] = [
        (
            Method::POST,
            format!("/api/v1/incidents/{some_incident}/ack"),
            None,
            Role::Responder,
        ),
        (
            Method::POST,
            format!("/api/v1/incidents/{some_incident}/resolve"),
            None,
            Role::Responder,
        ),
        (
            Method::POST,
            "/api/v1/suppressions".into(),
            Some(rule.clone()),
            Role::Responder,
        ),
        (
            Method::POST,
            "/api/v1/suppressions/whatever/expire".into(),
            None,
            Role::Admin,
        ),
        (Method::GET, "/api/v1/audit".into(), None, Role::Admin),
    ];
    for (method, path, body, need) in changes {
        let (status, _) = h.call(method.clone(), &path, None, body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} unauthenticated");
        for (token, role) in [(VIEWER, Role::Viewer), (RESPONDER, Role::Responder)] {
            if role < need {
                let (status, body) = h
                    .call(method.clone(), &path, Some(token), body.clone())
                    .await;
                assert_eq!(status, StatusCode::FORBIDDEN, "{path} as {role:?}: {body}");
                assert!(body["error"].as_str().unwrap().contains(need.as_str()));
            }
        }
    }
    assert!(
        h.store.audit(0, 100).unwrap().is_empty(),
        "refused changes change nothing"
    );
    // The openapi document needs no token.
    let (status, doc) = h
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.0.3");
}

#[tokio::test]
async fn acknowledging_and_resolving_are_audited_and_filterable() {
    let h = start().await;
    let id = h.incidents()[0].incident_id.clone();
    let (status, body) = h
        .call(
            Method::POST,
            &format!("/api/v1/incidents/{id}/ack"),
            Some(RESPONDER),
            Some(json!({"note": "looking"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["workflow"]["status"], "acknowledged");
    assert_eq!(body["workflow"]["by"], "responder");
    assert_eq!(body["workflow"]["note"], "looking");
    assert_eq!(body["workflow"]["at"], unseen_model::format_rfc3339(NOW));
    let acked = ids(
        &h.walk("/api/v1/incidents?status=acknowledged", 50).await,
        "incident_id",
    );
    assert_eq!(acked, std::slice::from_ref(&id));
    let (status, body) = h
        .call(
            Method::POST,
            &format!("/api/v1/incidents/{id}/resolve"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["workflow"]["status"], "resolved");
    let one = h.get(&format!("/api/v1/incidents/{id}"), VIEWER).await;
    assert_eq!(one["incident"]["workflow"]["status"], "resolved");
    let audit = one["audit"].as_array().unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!(
        (audit[0]["actor"].as_str(), audit[0]["action"].as_str()),
        (Some("responder"), Some("incident.ack"))
    );
    assert_eq!(
        (audit[1]["actor"].as_str(), audit[1]["action"].as_str()),
        (Some("admin"), Some("incident.resolve"))
    );
    // In the store's audit log, durable.
    let stored = h.store.audit(0, 10).unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].1.target, id);
    assert_eq!(stored[0].1.note.as_deref(), Some("looking"));
    // The audit endpoint, newest first, paginated.
    let page = h.get("/api/v1/audit?limit=1", ADMIN).await;
    assert_eq!(page["items"][0]["action"], "incident.resolve");
    let next = page["next"].as_str().unwrap();
    let page = h
        .get(&format!("/api/v1/audit?limit=1&cursor={next}"), ADMIN)
        .await;
    assert_eq!(page["items"][0]["action"], "incident.ack");
    assert_eq!(page["next"], Value::Null);
    // Bad bodies name the field; an unknown incident is 404.
    for (body, field) in [
        (json!({"note": 5}), "note"),
        (json!({"nope": 1}), "nope"),
        (json!({"note": "x".repeat(4_097)}), "note"),
    ] {
        let (status, answer) = h
            .call(
                Method::POST,
                &format!("/api/v1/incidents/{id}/ack"),
                Some(RESPONDER),
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains(&format!("`{field}`")),
            "{answer}"
        );
    }
    let (status, _) = h
        .call(
            Method::POST,
            "/api/v1/incidents/none/ack",
            Some(RESPONDER),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        h.store.audit(0, 10).unwrap().len(),
        2,
        "nothing refused was recorded"
    );
}

#[tokio::test]
async fn suppressions_are_made_from_findings_listed_and_expired() {
    let h = start().await;
    let target = h
        .findings()
        .into_iter()
        .find(|f| f.image == "ghcr.io/acme/api")
        .unwrap();
    let draft = h
        .get(
            &format!("/api/v1/findings/{}/suppression", target.finding_id),
            VIEWER,
        )
        .await;
    assert_eq!(
        draft["matchers"]["container.image.name"],
        "ghcr.io/acme/api"
    );
    assert_eq!(draft["matchers"]["k8s.namespace.name"], "payments");
    assert_eq!(draft["matchers"]["workload.name"], "api");
    let mut rule = draft.clone();
    rule["name"] = json!("acme-api");
    rule["reason"] = json!("our own API");
    let (status, created) = h
        .call(
            Method::POST,
            "/api/v1/suppressions",
            Some(RESPONDER),
            Some(rule.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["source"], "api");
    assert_eq!(created["author"], "responder");
    assert_eq!(created["active"], true);
    // In force for the committer, and it matches the finding it was made from.
    let in_force = h.rules.api.lock().unwrap().clone();
    assert_eq!(in_force.rules.len(), 1);
    assert!(in_force.check(&target, NOW).is_some());
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/suppressions",
            Some(RESPONDER),
            Some(rule),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    for (body, field) in [
        (json!({"matchers": {"k8s.cluster.name": "a"}}), "reason"),
        (json!({"reason": "r", "matchers": {}}), "matcher"),
        (
            json!({"reason": "r", "matchers": {"colour": "red"}}),
            "colour",
        ),
        (
            json!({"reason": "r", "matchers": {"k8s.cluster.name": 3}}),
            "matchers.k8s.cluster.name",
        ),
        (
            json!({"reason": "r", "matchers": {"k8s.cluster.name": {"regex": "("}}}),
            "regex",
        ),
        (
            json!({"reason": "r", "expires": "soon", "matchers": {"k8s.cluster.name": "a"}}),
            "expires",
        ),
        (
            json!({"reason": "r", "matchers": {"k8s.cluster.name": "a"}, "owner": "me"}),
            "owner",
        ),
    ] {
        let (status, answer) = h
            .call(
                Method::POST,
                "/api/v1/suppressions",
                Some(RESPONDER),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(field),
            "{body}: {answer}"
        );
    }
    let list = h.get("/api/v1/suppressions", VIEWER).await;
    assert_eq!(ids(list["items"].as_array().unwrap(), "name"), ["acme-api"]);
    let (status, expired) = h
        .call(
            Method::POST,
            "/api/v1/suppressions/acme-api/expire",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{expired}");
    assert_eq!(expired["active"], false);
    assert!(
        h.rules.api.lock().unwrap().check(&target, NOW).is_none(),
        "expired: no longer in force"
    );
    let (status, _) = h
        .call(
            Method::POST,
            "/api/v1/suppressions/none/expire",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let actions: Vec<String> = h
        .store
        .audit(0, 10)
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.action)
        .collect();
    assert_eq!(actions, ["suppression.create", "suppression.expire"]);
    // A restart (a new API over the same store) reads the rules back from the audit log.
    let rules = Arc::new(Rules::default());
    Api::new(
        h.store.clone(),
        h.tokens.clone(),
        rules.clone(),
        KeyMode::default(),
        false,
        || NOW,
    )
    .unwrap();
    let back = rules.api.lock().unwrap().clone();
    assert_eq!(back.rules.len(), 1);
    assert_eq!(back.rules[0].expires, Some(NOW));
}

#[tokio::test]
async fn the_inventory_knows_every_image_where_and_since_when() {
    let h = start().await;
    let rows = h.walk("/api/v1/images", 2).await;
    let names: BTreeSet<String> = ids(&rows, "image").into_iter().collect();
    let mut keys = BTreeSet::new();
    h.store
        .for_each_key(&mut |k, _| {
            keys.insert(k.image.clone());
        })
        .unwrap();
    assert_eq!(names, keys, "one row per image");
    assert_eq!(rows.len(), keys.len(), "no image twice across pages");
    let firsts: Vec<String> = rows
        .iter()
        .map(|r| r["first_seen"].as_str().unwrap().to_string())
        .collect();
    assert!(
        firsts.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {firsts:?}"
    );
    let base0 = rows
        .iter()
        .find(|r| r["image"] == "registry.example/team/base-0")
        .unwrap();
    assert_eq!(base0["clusters"], json!(["a", "b", "c"]));
    assert_eq!(base0["node_count"], 13, "12 nodes and the new one");
    assert_eq!(base0["namespaces"], json!(["ns-0"]));
    let q = h.walk("/api/v1/images?q=ACME", 10).await;
    assert_eq!(ids(&q, "image"), ["ghcr.io/acme/api"]);
    let in_b = ids(&h.walk("/api/v1/images?cluster=b", 10).await, "image");
    assert!(
        in_b.contains(&"docker.io/library/nginx".to_string())
            && !in_b.contains(&"ghcr.io/acme/api".to_string())
    );
    // One image, by its short name too.
    let nginx = h.get("/api/v1/images/nginx", VIEWER).await;
    assert_eq!(nginx["known"], true);
    assert_eq!(nginx["image"]["image"], "docker.io/library/nginx");
    assert_eq!(nginx["image"]["nodes"], json!(["b/b-n1"]));
    let api = h.get("/api/v1/images/ghcr.io/acme/api", VIEWER).await;
    assert_eq!(api["image"]["workloads"], json!(["Deployment/api"]));
    assert_eq!(api["incidents"].as_array().unwrap().len(), 1);
    let (status, body) = h
        .call(
            Method::GET,
            "/api/v1/images/ghcr.io/acme/unknown:1.0",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["known"], false);
    assert_eq!(body["image"], "ghcr.io/acme/unknown");
}

#[tokio::test]
async fn the_timeline_counts_first_sightings_per_hour_and_cluster() {
    let h = start().await;
    let all = h.findings();
    let t = h
        .get(
            "/api/v1/timeline?since=1970-01-01T00:00:00Z&until=1970-01-02T03:46:40Z",
            VIEWER,
        )
        .await;
    let total: u64 = t["series"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            s["buckets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["findings"].as_u64().unwrap())
        })
        .sum();
    assert_eq!(total as usize, all.len());
    assert_eq!(t["points"].as_array().unwrap().len(), all.len());
    let rollout_points = t["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["image"] == "ghcr.io/acme/api")
        .count();
    assert_eq!(rollout_points, 4);
    assert!(t["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["node_count"] == 4));
    let a = h
        .get(
            "/api/v1/timeline?since=1970-01-01T00:00:00Z&until=1970-01-02T03:46:40Z&cluster=a",
            VIEWER,
        )
        .await;
    assert_eq!(a["series"].as_array().unwrap().len(), 1);
    assert_eq!(
        a["points"].as_array().unwrap().len(),
        all.iter().filter(|f| f.cluster == "a").count()
    );
    // An empty range is an empty timeline.
    let e = h
        .get(
            "/api/v1/timeline?since=1970-01-01T00:33:20Z&until=1970-01-01T00:16:40Z",
            VIEWER,
        )
        .await;
    assert_eq!(e["points"], json!([]));
    assert_eq!(e["series"], json!([]));
    // The default range ends at the newest first sighting.
    let d = h.get("/api/v1/timeline", VIEWER).await;
    assert_eq!(d["until"], unseen_model::format_rfc3339(20_001));
}

#[tokio::test]
async fn console_sessions_need_their_csrf_token_and_end_with_their_token() {
    let h = start().await;
    let (status, _) = h
        .call(
            Method::POST,
            "/api/v1/session",
            None,
            Some(json!({"token": "wrong"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = h
        .call(Method::POST, "/api/v1/session", None, Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("`token`"));
    let resp = h
        .client
        .post(format!("{}/api/v1/session", h.base))
        .json(&json!({"token": RESPONDER}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let set_cookie = resp.headers()[SET_COOKIE].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    let session: Value = resp.json().await.unwrap();
    assert_eq!(session["role"], "responder");
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let with = |csrf: Option<&str>| {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(&cookie).unwrap());
        if let Some(c) = csrf {
            h.insert("x-csrf-token", HeaderValue::from_str(c).unwrap());
        }
        h
    };
    let get = h
        .client
        .get(format!("{}/api/v1/session", h.base))
        .headers(with(None))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    let read = h
        .client
        .get(format!("{}/api/v1/incidents", h.base))
        .headers(with(None))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK, "reads need no CSRF token");
    let id = h.incidents()[0].incident_id.clone();
    let ack = |headers| {
        h.client
            .post(format!("{}/api/v1/incidents/{id}/ack", h.base))
            .headers(headers)
            .send()
    };
    assert_eq!(
        ack(with(None)).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        ack(with(Some("forged"))).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert!(h.store.audit(0, 10).unwrap().is_empty());
    let csrf = session["csrf"].as_str().unwrap();
    assert_eq!(
        ack(with(Some(csrf))).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        h.store.audit(0, 10).unwrap()[0].1.actor,
        "responder",
        "the session acts as its token"
    );
    // A token removed from the file ends its sessions.
    h.tokens.revoked.lock().unwrap().insert("responder".into());
    let read = h
        .client
        .get(format!("{}/api/v1/incidents", h.base))
        .headers(with(None))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::UNAUTHORIZED);
    h.tokens.revoked.lock().unwrap().clear();
    // Logged out: the cookie no longer works.
    let resp = h
        .client
        .post(format!("{}/api/v1/session", h.base))
        .json(&json!({"token": VIEWER}))
        .send()
        .await
        .unwrap();
    let cookie2 = resp.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let csrf2 = resp.json::<Value>().await.unwrap()["csrf"]
        .as_str()
        .unwrap()
        .to_string();
    let out = h
        .client
        .delete(format!("{}/api/v1/session", h.base))
        .header(COOKIE, &cookie2)
        .header("x-csrf-token", csrf2)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    let after = h
        .client
        .get(format!("{}/api/v1/session", h.base))
        .header(COOKIE, &cookie2)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_console_is_served_with_a_strict_policy() {
    let h = start().await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
    ] {
        let resp = h
            .client
            .get(format!("{}{path}", h.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let headers = resp.headers();
        assert!(headers["content-type"].to_str().unwrap().starts_with(kind));
        assert!(headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'"));
        assert!(!resp.text().await.unwrap().is_empty());
    }
}

/// Every route of the router is in the OpenAPI document, and every path of the
/// document answers (not the fallback's 404 naming no endpoint).
#[tokio::test]
async fn the_openapi_document_lists_every_endpoint() {
    let h = start().await;
    let doc: Value = serde_json::from_str(unseen_api::OPENAPI).unwrap();
    let paths: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    for p in [
        "/api/v1/openapi.json",
        "/api/v1/session",
        "/api/v1/incidents",
        "/api/v1/incidents/{id}",
        "/api/v1/incidents/{id}/ack",
        "/api/v1/incidents/{id}/resolve",
        "/api/v1/findings",
        "/api/v1/findings/{id}",
        "/api/v1/findings/{id}/suppression",
        "/api/v1/images",
        "/api/v1/images/{reference}",
        "/api/v1/timeline",
        "/api/v1/suppressions",
        "/api/v1/suppressions/{name}/expire",
        "/api/v1/audit",
    ] {
        assert!(paths.contains(p), "{p} is not documented");
    }
    assert_eq!(paths.len(), 15, "{paths:?}");
    for p in &paths {
        let methods = doc["paths"][p].as_object().unwrap();
        for m in methods.keys() {
            let path = p
                .replace("{id}", "x")
                .replace("{reference}", "x")
                .replace("{name}", "x");
            let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            let (status, body) = h.call(method, &path, Some(ADMIN), None).await;
            let fallback = body["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("no such endpoint"));
            assert!(!fallback, "{m} {p}: {status} {body}");
        }
    }
}

/// Each limit of the API answers as documented.
#[tokio::test]
async fn limits_answer_as_documented() {
    let h = start().await;
    // A body over 64 KiB: 413, in JSON, before anything is recorded.
    let id = h.incidents()[0].incident_id.clone();
    let big = json!({ "note": "x".repeat(unseen_api::MAX_BODY_BYTES) });
    let (status, body) = h
        .call(
            Method::POST,
            &format!("/api/v1/incidents/{id}/ack"),
            Some(RESPONDER),
            Some(big),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("65536 bytes"),
        "{body}"
    );
    assert!(h.store.audit(0, 10).unwrap().is_empty());
    // The timeline keeps the newest points past its cap, and counts them all.
    let mut catalog = unseen_api::Catalog::default();
    catalog.refresh(h.store.as_ref(), NOW).unwrap();
    let all = h.findings();
    let t = catalog.timeline(0, 100_000, None, 3);
    assert_eq!(t.points.len(), 3);
    let newest: Vec<&str> = all
        .iter()
        .rev()
        .take(3)
        .map(|f| f.finding_id.as_str())
        .collect();
    let got: Vec<&str> = t.points.iter().map(|p| p.finding_id.as_str()).collect();
    assert_eq!(got, newest, "the newest points are kept");
    let counted: u64 = t
        .series
        .iter()
        .flat_map(|s| s.buckets.iter().map(|b| b.findings))
        .sum();
    assert_eq!(counted as usize, all.len(), "every finding is counted");
}

/// The served document and its reference page are what `scripts/openapi.py` writes.
#[test]
fn the_openapi_document_and_its_reference_are_up_to_date() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new("python3")
        .arg(root.join("scripts/openapi.py"))
        .arg("--check")
        .output()
        .expect("python3 runs scripts/openapi.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A list page cuts an incident's member lists; its own page has them whole.
#[tokio::test]
async fn list_pages_cut_the_member_lists_of_big_incidents() {
    let h = start().await;
    let n = unseen_api::catalog::LIST_MEMBERS + 20;
    let rollout: Vec<_> = (0..n)
        .map(|i| {
            sighting(
                "a",
                &format!("big-{i:03}"),
                "ghcr.io/acme/everywhere",
                21_000,
                "web",
                "w-0",
                None,
            )
        })
        .collect();
    h.store.apply(&rollout, &triage_opts(21_000)).unwrap();
    let page = h.get("/api/v1/incidents?image=everywhere", VIEWER).await;
    let item = &page["items"][0];
    assert_eq!(item["truncated"], true);
    assert_eq!(item["node_count"], n);
    assert_eq!(
        item["nodes"].as_array().unwrap().len(),
        unseen_api::catalog::LIST_MEMBERS
    );
    assert!(item["findings"].as_array().unwrap().len() <= unseen_api::catalog::LIST_MEMBERS);
    let id = item["incident_id"].as_str().unwrap();
    let whole = h.get(&format!("/api/v1/incidents/{id}"), VIEWER).await;
    assert_eq!(whole["incident"]["nodes"].as_array().unwrap().len(), n);
    assert_eq!(whole["members"].as_array().unwrap().len(), n);
    assert!(whole["incident"].get("truncated").is_none());
}

/// With a shared store, a rule made through one replica's API comes into force on
/// another's at its next `sync_rules`, and only a change is handed over.
#[tokio::test]
async fn rules_made_on_one_replica_reach_the_others() {
    let h = start().await;
    let other_rules = Arc::new(Rules::default());
    let other = Api::new(
        h.store.clone(),
        h.tokens.clone(),
        other_rules.clone(),
        KeyMode::default(),
        false,
        || NOW,
    )
    .unwrap();
    assert!(!other.sync_rules().unwrap(), "nothing new yet");
    let rule = json!({"name": "shared", "reason": "r", "matchers": {"k8s.cluster.name": "a"}});
    let (status, _) = h
        .call(
            Method::POST,
            "/api/v1/suppressions",
            Some(RESPONDER),
            Some(rule),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(other_rules.api.lock().unwrap().rules.is_empty());
    assert!(other.sync_rules().unwrap(), "the new rule is handed over");
    assert_eq!(other_rules.api.lock().unwrap().rules[0].name, "shared");
    assert!(!other.sync_rules().unwrap(), "once");
}
