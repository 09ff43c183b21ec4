//! The query API and the console of `unseen serve` (`docs/api.md`, `docs/console.md`).
//!
//! ```text
//!  store.history ─┐
//!  store.audit ───┼─► Catalog (in memory: what queries filter on) ─► JSON pages ─► console (/)
//!  store keys ────┘        ▲                                        ▲
//!                          └── ack / resolve / suppress ─► store.append_audit
//! ```
//!
//! The rule this crate enforces: **every change made through the API is an entry of the
//! store's audit log, written before the change is answered**, and the analyst state
//! (an incident's status, the rules made here) is a fold over that log. So nothing is
//! changed without who, what and when, and a restart (or another replica) reads the same
//! state back.
//!
//! Authentication: bearer tokens of the tokens file with a `role` (`viewer`,
//! `responder`, `admin`), or a console session opened with one (`session`). A token
//! without a role is a receiver's and is refused here. The server supplies both through
//! [`Directory`] and [`RulesControl`], so this crate knows neither the tokens file nor
//! the committer.

pub mod catalog;
mod query;
pub mod session;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};
use unseen_findings::suppress::{Pattern, Rule};
use unseen_findings::{Record, Suppressions};
use unseen_model::{format_rfc3339, UnixSecs};
use unseen_normalize::KeyMode;
use unseen_store::{AuditEntry, StateStore};

pub use catalog::Catalog;
use catalog::{CatalogError, IncidentView};
use query::Query;
pub use session::Sessions;

/// The OpenAPI 3 document of this API, served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");
const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

/// Largest request body (a note, a suppression rule).
pub const MAX_BODY_BYTES: usize = 64 << 10;
/// Longest note on an incident.
pub const MAX_NOTE_CHARS: usize = 4_096;
/// Timeline points at most.
pub const MAX_TIMELINE_POINTS: usize = 5_000;

/// What a token may do through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything but the audit log.
    Viewer,
    /// Also acknowledges and resolves incidents, and creates suppressions.
    Responder,
    /// Also expires suppressions and reads the audit log.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Responder => "responder",
            Role::Admin => "admin",
        }
    }
}

/// Who is asking: a token's name and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

/// The tokens, as the server holds them (reloaded when their file changes).
pub trait Directory: Send + Sync + 'static {
    /// The principal of an `Authorization` header's value, or why it is refused (a
    /// message for the client, never the token).
    fn authenticate(&self, authorization: &str) -> Result<Principal, String>;
    /// Whether `principal`'s token is still listed with the same role (a session ends
    /// when its token is removed or changes role).
    fn still_valid(&self, principal: &Principal) -> bool;
}

/// The suppression rules in force, as the server holds them.
pub trait RulesControl: Send + Sync + 'static {
    /// The rules of the config and of the rules file.
    fn configured(&self) -> Suppressions;
    /// Puts these rules (the API's, in force or expired) after the configured ones, for
    /// the next commit. An error (a name clash) leaves the rules in force as they were.
    fn set_api_rules(&self, rules: Suppressions) -> Result<(), String>;
}

/// Everything the handlers share.
pub struct Api {
    store: Arc<dyn StateStore>,
    catalog: Mutex<Catalog>,
    sessions: Mutex<Sessions>,
    directory: Arc<dyn Directory>,
    rules: Arc<dyn RulesControl>,
    mode: KeyMode,
    /// The API's rules last handed to the committer (`sync_rules`).
    pushed_rules: Mutex<Suppressions>,
    /// Cookies get `Secure` when the listener has TLS.
    secure_cookies: bool,
    clock: fn() -> UnixSecs,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

impl Api {
    /// The API over `store`. Reads the audit log once, so that the rules made through
    /// the API are in force ([`RulesControl::set_api_rules`]) before anything is served;
    /// the history and the key inventory are read by [`Api::warm`] or the first request
    /// (at millions of keys the inventory takes seconds, which a restart should not wait
    /// for before it takes points).
    pub fn new(
        store: Arc<dyn StateStore>,
        directory: Arc<dyn Directory>,
        rules: Arc<dyn RulesControl>,
        mode: KeyMode,
        secure_cookies: bool,
        clock: fn() -> UnixSecs,
    ) -> Result<Arc<Api>, CatalogError> {
        let mut catalog = Catalog::default();
        catalog.refresh_audit(store.as_ref())?;
        let api_rules = catalog.api_rules();
        if let Err(e) = rules.set_api_rules(api_rules.clone()) {
            tracing::error!(error = %e, "the suppression rules made through the API are not in force: rename the clashing rule of the rules file");
        }
        Ok(Arc::new(Api {
            store,
            catalog: Mutex::new(catalog),
            sessions: Mutex::new(Sessions::default()),
            directory,
            rules,
            mode,
            pushed_rules: Mutex::new(api_rules),
            secure_cookies,
            clock,
        }))
    }

    /// Reads the history and scans the keys into the inventory, as the first request
    /// would: the server calls it once it takes points, so that the console's first page
    /// does not wait for it. Returns the findings and images then known.
    pub fn warm(&self) -> Result<(usize, usize), CatalogError> {
        let mut catalog = self.catalog.lock().map_err(|_| {
            CatalogError::Store(unseen_store::StoreError::Backend(
                "the catalog lock is poisoned".into(),
            ))
        })?;
        catalog.refresh(self.store.as_ref(), (self.clock)())?;
        Ok((catalog.findings_len(), catalog.images_len()))
    }

    /// Reads the audit log again and hands the rules made through the API to the
    /// committer when they changed: with replicas, a rule made on one replica is in
    /// force on every replica after its next call (the server calls it every second).
    /// Returns whether the rules changed.
    pub fn sync_rules(&self) -> Result<bool, CatalogError> {
        let rules = {
            let mut catalog = self.catalog.lock().map_err(|_| {
                CatalogError::Store(unseen_store::StoreError::Backend(
                    "the catalog lock is poisoned".into(),
                ))
            })?;
            catalog.refresh_audit(self.store.as_ref())?;
            catalog.api_rules()
        };
        let mut pushed = self.pushed_rules.lock().map_err(|_| {
            CatalogError::Store(unseen_store::StoreError::Backend(
                "the rules lock is poisoned".into(),
            ))
        })?;
        if *pushed == rules {
            return Ok(false);
        }
        if let Err(e) = self.rules.set_api_rules(rules.clone()) {
            tracing::error!(error = %e, "suppression rules made through the API not applied");
        }
        *pushed = rules;
        Ok(true)
    }

    /// Runs `f` on the catalog, brought up to date first, on the blocking pool (the
    /// store reads are file IO).
    async fn with_catalog<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Api, &mut Catalog) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let api = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut catalog = api
                .catalog
                .lock()
                .map_err(|_| ApiError::internal("the catalog lock is poisoned"))?;
            catalog
                .refresh(api.store.as_ref(), (api.clock)())
                .map_err(|e| ApiError::unavailable(&e.to_string()))?;
            f(&api, &mut catalog)
        })
        .await
        .map_err(|e| ApiError::internal(&format!("query task failed: {e}")))?
    }

    /// Who sent the request, if they may do what `need` allows. A state change made with
    /// the session cookie must carry the session's CSRF token.
    fn authorize(
        &self,
        headers: &HeaderMap,
        method: &Method,
        need: Role,
    ) -> Result<Principal, ApiError> {
        let principal = if let Some(auth) = headers.get(header::AUTHORIZATION) {
            let auth = auth
                .to_str()
                .map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
            self.directory
                .authenticate(auth)
                .map_err(|m| ApiError::unauthorized(&m))?
        } else {
            let id = headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|c| session::cookie(c, session::COOKIE))
                .ok_or_else(|| {
                    ApiError::unauthorized(
                        "not logged in: send `Authorization: Bearer <token>` with a token that has a `role` in the tokens file, or log in to the console",
                    )
                })?;
            let s = self
                .sessions
                .lock()
                .map_err(|_| ApiError::internal("the sessions lock is poisoned"))?
                .get(id, Instant::now())
                .ok_or_else(|| ApiError::unauthorized("the session has ended: log in again"))?;
            if !self.directory.still_valid(&s.principal) {
                self.close_session(id);
                return Err(ApiError::unauthorized(
                    "the session's token was removed from the tokens file or changed role: log in again",
                ));
            }
            if method != Method::GET && method != Method::HEAD {
                let sent = headers
                    .get(session::CSRF_HEADER)
                    .and_then(|v| v.to_str().ok());
                if sent != Some(s.csrf.as_str()) {
                    return Err(ApiError::forbidden(
                        "missing or wrong X-CSRF-Token header: send the `csrf` value of the session with every change",
                    ));
                }
            }
            s.principal
        };
        if principal.role < need {
            return Err(ApiError::forbidden(&format!(
                "token `{}` has role `{}`; this needs `{}` or above",
                principal.name,
                principal.role.as_str(),
                need.as_str()
            )));
        }
        Ok(principal)
    }

    /// Hands the API's rules to the committer (after a change made here).
    fn push_rules(&self, rules: Suppressions) {
        if let Err(e) = self.rules.set_api_rules(rules.clone()) {
            tracing::error!(error = %e, "suppression rules made through the API not applied");
        }
        if let Ok(mut pushed) = self.pushed_rules.lock() {
            *pushed = rules;
        }
    }

    fn close_session(&self, id: &str) {
        if let Ok(mut s) = self.sessions.lock() {
            s.close(id);
        }
    }

    /// Appends `entry` to the audit log and reads it back into the catalog.
    fn audit(&self, catalog: &mut Catalog, entry: AuditEntry) -> Result<(), ApiError> {
        self.store
            .append_audit(&entry)
            .map_err(|e| ApiError::unavailable(&e.to_string()))?;
        catalog
            .refresh(self.store.as_ref(), (self.clock)())
            .map_err(|e| ApiError::unavailable(&e.to_string()))
    }
}

/// An answer that is not a success: a status and a message naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: &str) -> Self {
        ApiError {
            status,
            message: message.to_string(),
        }
    }
    fn bad_request(m: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    fn unauthorized(m: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, m)
    }
    fn forbidden(m: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, m)
    }
    fn not_found(m: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, m)
    }
    fn conflict(m: &str) -> Self {
        Self::new(StatusCode::CONFLICT, m)
    }
    fn unavailable(m: &str) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, m)
    }
    fn internal(m: &str) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, m)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

type ApiResult = Result<Response, ApiError>;

/// The API's routes and the console's files.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/app.css", get(app_css))
        .route("/api/v1/openapi.json", get(openapi))
        .route(
            "/api/v1/session",
            get(session_get).post(session_open).delete(session_close),
        )
        .route("/api/v1/incidents", get(incidents))
        .route("/api/v1/incidents/{id}", get(incident))
        .route("/api/v1/incidents/{id}/ack", post(incident_ack))
        .route("/api/v1/incidents/{id}/resolve", post(incident_resolve))
        .route("/api/v1/findings", get(findings))
        .route("/api/v1/findings/{id}", get(finding))
        .route("/api/v1/findings/{id}/suppression", get(finding_draft))
        .route("/api/v1/images", get(images))
        .route("/api/v1/images/{*reference}", get(image))
        .route("/api/v1/timeline", get(timeline))
        .route(
            "/api/v1/suppressions",
            get(suppressions).post(suppression_create),
        )
        .route(
            "/api/v1/suppressions/{name}/expire",
            post(suppression_expire),
        )
        .route("/api/v1/audit", get(audit))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api)
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(&format!(
        "no such endpoint: {method} {}; see /api/v1/openapi.json",
        uri.path()
    ))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

fn json_ok(status: StatusCode, value: impl Serialize) -> ApiResult {
    Ok((status, Json(value)).into_response())
}

/// A request body, or the reason it was not read (over [`MAX_BODY_BYTES`]: 413), as JSON.
type Body = Result<Bytes, axum::extract::rejection::BytesRejection>;

/// The JSON object of a request body (an empty body is `{}`).
fn body_object(body: &Body) -> Result<serde_json::Map<String, Value>, ApiError> {
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the request body is over the limit of {MAX_BODY_BYTES} bytes"),
            ))
        }
        Err(e) => {
            return Err(ApiError::bad_request(&format!(
                "the request body cannot be read: {e}"
            )))
        }
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Default::default());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(ApiError::bad_request(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(&format!(
            "the request body is not JSON: {e}"
        ))),
    }
}

fn session_view(s: &session::Session) -> Value {
    json!({"name": s.principal.name, "role": s.principal.role.as_str(), "csrf": s.csrf})
}

async fn session_get(State(api): State<Arc<Api>>, headers: HeaderMap) -> ApiResult {
    let id = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| session::cookie(c, session::COOKIE))
        .ok_or_else(|| ApiError::unauthorized("not logged in"))?;
    let s = api
        .sessions
        .lock()
        .map_err(|_| ApiError::internal("the sessions lock is poisoned"))?
        .get(id, Instant::now())
        .filter(|s| api.directory.still_valid(&s.principal))
        .ok_or_else(|| ApiError::unauthorized("the session has ended: log in again"))?;
    json_ok(StatusCode::OK, session_view(&s))
}

async fn session_open(State(api): State<Arc<Api>>, body: Body) -> ApiResult {
    let body = body_object(&body)?;
    let token = body
        .get("token")
        .and_then(Value::as_str)
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| {
            ApiError::bad_request("field `token`: the API token (a string) is required")
        })?;
    let principal = api
        .directory
        .authenticate(&format!("Bearer {}", token.trim()))
        .map_err(|m| ApiError::unauthorized(&m))?;
    let (id, s) = api
        .sessions
        .lock()
        .map_err(|_| ApiError::internal("the sessions lock is poisoned"))?
        .open(principal, Instant::now());
    tracing::info!(token = %s.principal.name, role = s.principal.role.as_str(), "console log-in");
    let secure = if api.secure_cookies { "; Secure" } else { "" };
    let cookie = format!(
        "{}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        session::COOKIE,
        session::SESSION_TTL.as_secs()
    );
    let mut response = (StatusCode::OK, Json(session_view(&s))).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|_| ApiError::internal("bad cookie"))?,
    );
    Ok(response)
}

async fn session_close(
    State(api): State<Arc<Api>>,
    method: Method,
    headers: HeaderMap,
) -> ApiResult {
    api.authorize(&headers, &method, Role::Viewer)?;
    if let Some(id) = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| session::cookie(c, session::COOKIE))
    {
        api.close_session(id);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
            session::COOKIE
        ))
        .map_err(|_| ApiError::internal("bad cookie"))?,
    );
    Ok(response)
}

/// `{"items": [...], "next": cursor or null}`.
fn page(items: Vec<Value>, next: Option<String>) -> ApiResult {
    json_ok(StatusCode::OK, json!({ "items": items, "next": next }))
}

/// The records of `seqs` from the store, as JSON, in that order.
fn records(api: &Api, seqs: &[u64]) -> Result<Vec<Value>, ApiError> {
    let records = api
        .store
        .history_get(seqs)
        .map_err(|e| ApiError::unavailable(&e.to_string()))?;
    records
        .into_iter()
        .map(|(_, r)| match r {
            Record::Finding(f) => serde_json::to_value(&*f),
            Record::Incident(i) => serde_json::to_value(&*i),
        })
        .collect::<Result<_, _>>()
        .map_err(|e| ApiError::internal(&e.to_string()))
}

fn incident_json(view: &IncidentView) -> Result<Value, ApiError> {
    serde_json::to_value(view).map_err(|e| ApiError::internal(&e.to_string()))
}

async fn incidents(
    State(api): State<Arc<Api>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    api.authorize(&headers, &method, Role::Viewer)?;
    let q = Query::parse(q.as_deref(), query::INCIDENT_PARAMS)?;
    let filter = q.incident_filter()?;
    let (cursor, limit) = (q.seq_cursor()?, q.limit()?);
    api.with_catalog(move |_, catalog| {
        let p = catalog.incidents(&filter, cursor, limit);
        let items = p
            .items
            .iter()
            .map(incident_json)
            .collect::<Result<_, _>>()?;
        page(items, p.next)
    })
    .await
}

async fn incident(
    State(api): State<Arc<Api>>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    api.authorize(&headers, &method, Role::Viewer)?;
    api.with_catalog(move |api, catalog| {
        let (view, seqs) = catalog
            .incident(&id)
            .ok_or_else(|| ApiError::not_found(&format!("no incident `{id}`")))?;
        let members = records(api, &seqs)?;
        let audit: Vec<Value> = catalog
            .audit_of(&id)
            .into_iter()
            .map(|(seq, e)| audit_json(seq, &e))
            .collect();
        json_ok(
            StatusCode::OK,
            json!({ "incident": incident_json(&view)?, "members": members, "audit": audit }),
        )
    })
    .await
}

fn audit_json(seq: u64, e: &AuditEntry) -> Value {
    json!({
        "seq": seq,
        "at": format_rfc3339(e.at),
        "actor": e.actor,
        "action": e.action,
        "target": e.target,
        "note": e.note,
    })
}

async fn incident_ack(
    state: State<Arc<Api>>,
    method: Method,
    headers: HeaderMap,
    id: Path<String>,
    body: Body,
) -> ApiResult {
    incident_action(state, method, headers, id, body, "incident.ack").await
}

async fn incident_resolve(
    state: State<Arc<Api>>,
    method: Method,
    headers: HeaderMap,
    id: Path<String>,
    body: Body,
) -> ApiResult {
    incident_action(state, method, headers, id, body, "incident.resolve").await
}

async fn incident_action(
    State(api): State<Arc<Api>>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
    action: &'static str,
) -> ApiResult {
    let who = api.authorize(&headers, &method, Role::Responder)?;
    let body = body_object(&body)?;
    let note = match body.get("note") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() > MAX_NOTE_CHARS => {
            return Err(ApiError::bad_request(&format!(
                "field `note`: {} characters, over the limit of {MAX_NOTE_CHARS}",
                s.chars().count()
            )))
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ApiError::bad_request("field `note`: must be a string")),
    };
    if let Some(other) = body.keys().find(|k| *k != "note") {
        return Err(ApiError::bad_request(&format!(
            "field `{other}`: unknown; the body has only `note`"
        )));
    }
    api.with_catalog(move |api, catalog| {
        if catalog.incident(&id).is_none() {
            return Err(ApiError::not_found(&format!("no incident `{id}`")));
        }
        let entry = AuditEntry {
            at: (api.clock)(),
            actor: who.name.clone(),
            action: action.to_string(),
            target: id.clone(),
            note,
            detail: None,
        };
        api.audit(catalog, entry)?;
        tracing::info!(token = %who.name, action, incident = %id, "incident workflow");
        let (view, _) = catalog
            .incident(&id)
            .ok_or_else(|| ApiError::internal("the incident went away"))?;
        json_ok(StatusCode::OK, json!({ "workflow": view.workflow }))
    })
    .await
}

async fn findings(
    State(api): State<Arc<Api>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    api.authorize(&headers, &method, Role::Viewer)?;
    let q = Query::parse(q.as_deref(), query::FINDING_PARAMS)?;
    let filter = q.finding_filter()?;
    let (cursor, limit) = (q.seq_cursor()?, q.limit()?);
    api.with_catalog(move |api, catalog| {
        let p = catalog.findings(&filter, cursor, limit);
        page(records(api, &p.items)?, p.next)
    })
    .await
}

/// The finding of `id`, as its record.
fn finding_of(
    api: &Api,
    catalog: &Catalog,
    id: &str,
) -> Result<unseen_findings::Finding, ApiError> {
    let seq = catalog
        .finding_seq(id)
        .ok_or_else(|| ApiError::not_found(&format!("no finding `{id}`")))?;
    match api
        .store
        .history_get(&[seq])
        .map_err(|e| ApiError::unavailable(&e.to_string()))?
        .pop()
    {
        Some((_, Record::Finding(f))) => Ok(*f),
        _ => Err(ApiError::not_found(&format!(
            "finding `{id}` is no longer kept"
        ))),
    }
}

async fn finding(
    State(api): State<Arc<Api>>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    api.authorize(&headers, &method, Role::Viewer)?;
    api.with_catalog(move |api, catalog| json_ok(StatusCode::OK, finding_of(api, catalog, &id)?))
        .await
}

async fn finding_draft(
    State(api): State<Arc<Api>>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    api.authorize(&headers, &method, Role::Viewer)?;
    api.with_catalog(move |api, catalog| {
        let f = finding_of(api, catalog, &id)?;
        let mut matchers = serde_json::Map::new();
        matchers.insert("container.image.name".into(), f.image.clone().into());
        matchers.insert("k8s.cluster.name".into(), f.cluster.clone().into());
        if let Some(t) = &f.triage {
            if let Some(ns) = &t.namespace {
                matchers.insert("k8s.namespace.name".into(), ns.clone().into());
            }
            if let Some(w) = &t.workload {
                matchers.insert("workload.name".into(), w.name.clone().into());
            }
        }
        json_ok(
            StatusCode::OK,
            json!({"name": null, "reason": "", "expires": null, "matchers": matchers}),
        )
    })
    .await
}

async fn images(
    State(api): State<Arc<Api>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    api.authorize(&headers, &method, Role::Viewer)?;
    let q = Query::parse(q.as_deref(), query::IMAGE_PARAMS)?;
    let (text, cluster) = (q.text("q"), q.text("cluster"));
    let (cursor, limit) = (q.image_cursor()?, q.limit()?);
    api.with_catalog(move |_, catalog| {
        let p = catalog.images(text.as_deref(), cluster.as_deref(), cursor, limit);
        let items = p
            .items
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<_, _>>()
            .map_err(|e| ApiError::internal(&e.to_string()))?;
        page(items, p.next)
    })
    .await
}

async fn image(
    State(api): State<Arc<Api>>,
    method: Method,
    headers: HeaderMap,
    Path(reference): Path<String>,
) -> ApiResult {
    api.authorize(&headers, &method, Role::Viewer)?;
    let name = if api.mode.strict {
        reference.clone()
    } else {
        unseen_normalize::image::canonical(&reference, None).into_owned()
    };
    api.with_catalog(move |_, catalog| match catalog.image(&name) {
        Some((row, incidents)) => json_ok(
            StatusCode::OK,
            json!({"known": true, "image": row, "incidents": incidents}),
        ),
        None => Ok((
            StatusCode::NOT_FOUND,
            Json(json!({
                "known": false,
                "image": name,
                "error": format!("image `{name}` is not known: no tracked key and no finding has it"),
            })),
        )
            .into_response()),
    })
    .await
}

async fn timeline(
    State(api): State<Arc<Api>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    api.authorize(&headers, &method, Role::Viewer)?;
    let q = Query::parse(q.as_deref(), query::TIMELINE_PARAMS)?;
    let (since, until, cluster) = (q.time("since")?, q.time("until")?, q.text("cluster"));
    api.with_catalog(move |api, catalog| {
        let until =
            until.unwrap_or_else(|| catalog.newest_first_seen().map_or((api.clock)(), |t| t + 1));
        let since = since.unwrap_or(until - 86_400);
        // An empty range (`since` not before `until`) is an empty timeline.
        json_ok(
            StatusCode::OK,
            catalog.timeline(since, until, cluster.as_deref(), MAX_TIMELINE_POINTS),
        )
    })
    .await
}

fn rule_json(rule: &Rule, source: &str, now: UnixSecs) -> Value {
    let matchers: serde_json::Map<String, Value> = rule
        .matchers
        .iter()
        .map(|(k, p)| {
            let v = match p {
                Pattern::Exact(s) | Pattern::Glob(s) => Value::String(s.clone()),
                Pattern::Regex { source, .. } => json!({ "regex": source }),
            };
            (k.clone(), v)
        })
        .collect();
    json!({
        "name": rule.name,
        "reason": rule.reason,
        "author": rule.author,
        "expires": rule.expires.map(format_rfc3339),
        "matchers": matchers,
        "source": source,
        "active": rule.expires.is_none_or(|e| now < e),
    })
}

async fn suppressions(
    State(api): State<Arc<Api>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    api.authorize(&headers, &method, Role::Viewer)?;
    let q = Query::parse(q.as_deref(), query::SUPPRESSION_PARAMS)?;
    // The rules are few and in a fixed order (configured, then the API's by name): the
    // cursor is the position after the last rule of the previous page.
    let (start, limit) = (q.seq_cursor()?.unwrap_or(0) as usize, q.limit()?);
    api.with_catalog(move |api, catalog| {
        let now = (api.clock)();
        let mut items: Vec<Value> = api
            .rules
            .configured()
            .rules
            .iter()
            .map(|r| rule_json(r, "configured", now))
            .collect();
        items.extend(
            catalog
                .api_rules()
                .rules
                .iter()
                .map(|r| rule_json(r, "api", now)),
        );
        let end = items.len().min(start.saturating_add(limit));
        let next = (end < items.len()).then(|| end.to_string());
        let items = items
            .get(start..end)
            .map(<[Value]>::to_vec)
            .unwrap_or_default();
        page(items, next)
    })
    .await
}

async fn suppression_create(
    State(api): State<Arc<Api>>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let who = api.authorize(&headers, &method, Role::Responder)?;
    let body = body_object(&body)?;
    let mut table = toml::Table::new();
    for (k, v) in &body {
        match (k.as_str(), v) {
            ("name" | "expires", Value::Null) => {}
            ("name" | "reason" | "expires", Value::String(s)) => {
                table.insert(k.clone(), toml::Value::String(s.clone()));
            }
            ("name" | "reason" | "expires", _) => {
                return Err(ApiError::bad_request(&format!(
                    "field `{k}`: must be a string"
                )))
            }
            ("matchers", Value::Object(m)) => {
                for (field, p) in m {
                    if matches!(field.as_str(), "name" | "reason" | "author" | "expires") {
                        return Err(ApiError::bad_request(&format!(
                            "field `matchers.{field}`: not a finding field; see the list in docs/triage.md"
                        )));
                    }
                    let pattern = match p {
                        Value::String(s) => toml::Value::String(s.clone()),
                        Value::Object(o) if o.len() == 1 && o.get("regex").is_some_and(Value::is_string) => {
                            let mut t = toml::Table::new();
                            t.insert("regex".into(), toml::Value::String(o["regex"].as_str().unwrap_or_default().into()));
                            toml::Value::Table(t)
                        }
                        _ => {
                            return Err(ApiError::bad_request(&format!(
                                "field `matchers.{field}`: a pattern is a string (exact, or a glob with * and ?) or {{\"regex\": \"...\"}}"
                            )))
                        }
                    };
                    table.insert(field.clone(), pattern);
                }
            }
            ("matchers", _) => {
                return Err(ApiError::bad_request(
                    "field `matchers`: must be an object of finding field → pattern",
                ))
            }
            (other, _) => {
                return Err(ApiError::bad_request(&format!(
                "field `{other}`: unknown; a rule has `name`, `reason`, `expires` and `matchers`"
            )))
            }
        }
    }
    table.insert("author".into(), toml::Value::String(who.name.clone()));
    let rule = Suppressions::from_tables("request body", vec![table])
        .map_err(|e| ApiError::bad_request(&e.message))?
        .rules
        .remove(0);
    api.with_catalog(move |api, catalog| {
        if catalog.api_rule(&rule.name).is_some()
            || api
                .rules
                .configured()
                .rules
                .iter()
                .any(|r| r.name == rule.name)
        {
            return Err(ApiError::conflict(&format!(
                "field `name`: a rule named `{}` exists; choose another name",
                rule.name
            )));
        }
        let entry = AuditEntry {
            at: (api.clock)(),
            actor: who.name.clone(),
            action: "suppression.create".into(),
            target: rule.name.clone(),
            note: Some(rule.reason.clone()),
            detail: Some(rule.to_toml()),
        };
        api.audit(catalog, entry)?;
        api.push_rules(catalog.api_rules());
        tracing::info!(token = %who.name, rule = %rule.name, "suppression rule created");
        let now = (api.clock)();
        let created = catalog.api_rule(&rule.name).unwrap_or(&rule);
        json_ok(StatusCode::CREATED, rule_json(created, "api", now))
    })
    .await
}

async fn suppression_expire(
    State(api): State<Arc<Api>>,
    method: Method,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    let who = api.authorize(&headers, &method, Role::Admin)?;
    api.with_catalog(move |api, catalog| {
        if catalog.api_rule(&name).is_none() {
            if api.rules.configured().rules.iter().any(|r| r.name == name) {
                return Err(ApiError::conflict(&format!(
                    "rule `{name}` comes from the config or the rules file: edit it there (`unseen suppress remove`)"
                )));
            }
            return Err(ApiError::not_found(&format!("no suppression rule `{name}`")));
        }
        let now = (api.clock)();
        let entry = AuditEntry {
            at: now,
            actor: who.name.clone(),
            action: "suppression.expire".into(),
            target: name.clone(),
            note: None,
            detail: None,
        };
        api.audit(catalog, entry)?;
        api.push_rules(catalog.api_rules());
        tracing::info!(token = %who.name, rule = %name, "suppression rule expired");
        let rule = catalog
            .api_rule(&name)
            .ok_or_else(|| ApiError::internal("the rule went away"))?;
        json_ok(StatusCode::OK, rule_json(rule, "api", now))
    })
    .await
}

async fn audit(
    State(api): State<Arc<Api>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    api.authorize(&headers, &method, Role::Admin)?;
    let q = Query::parse(q.as_deref(), query::AUDIT_PARAMS)?;
    let (cursor, limit) = (q.seq_cursor()?, q.limit()?);
    api.with_catalog(move |_, catalog| {
        let p = catalog.audit_page(cursor, limit);
        page(
            p.items.iter().map(|(seq, e)| audit_json(*seq, e)).collect(),
            p.next,
        )
    })
    .await
}
