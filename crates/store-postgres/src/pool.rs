//! A small pool of connections, each with the store's schema as its search path.
//!
//! Why not a pool crate: what is needed is a bounded stack of idle clients, a connect
//! with a timeout, and dropping a client whose connection broke; r2d2 would add a
//! thread and a dependency for that.

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::config::SslMode;
use postgres::{Client, Config, NoTls};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_postgres_rustls::MakeRustlsConnect;
use unseen_store::StoreError;

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a session may sit idle inside a transaction before the database ends it
/// (`idle_in_transaction_session_timeout`). A replica whose machine stops mid-commit
/// (power, a partition, a frozen VM) holds the schema's decision lock in such a session,
/// and every other replica waits on it; without this bound the database would notice
/// only when TCP gives up on the dead peer, two hours by default. unseen's transactions
/// never wait on anything between their statements but the replica's own CPU, so a
/// healthy one stays far below this.
pub const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(30);

pub struct Pool {
    config: Config,
    /// TLS to the database, when a CA is named: required, certificate and name verified.
    tls: Option<MakeRustlsConnect>,
    schema: String,
    idle: Mutex<Vec<Client>>,
    max_idle: usize,
    /// Set on every session: [`IDLE_IN_TRANSACTION`] unless a test shortens it.
    idle_in_transaction: Duration,
}

/// A client on loan from the pool; back to it when dropped, unless its connection broke.
pub struct Conn<'a> {
    pool: &'a Pool,
    client: Option<Client>,
}

impl Conn<'_> {
    pub fn client(&mut self) -> &mut Client {
        self.client.as_mut().expect("a client until dropped")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if !client.is_closed() {
                if let Ok(mut idle) = self.pool.idle.lock() {
                    if idle.len() < self.pool.max_idle {
                        idle.push(client);
                    }
                }
            }
        }
    }
}

/// A client's drop closes its connection by blocking on its own runtime, which panics
/// on a thread that drives async tasks (a store dropped at the end of `serve`'s async
/// main): the pool's clients are dropped on a thread of their own.
impl Drop for Pool {
    fn drop(&mut self) {
        let clients = self.idle.get_mut().map(std::mem::take).unwrap_or_default();
        if !clients.is_empty() {
            let _ = std::thread::spawn(move || drop(clients)).join();
        }
    }
}

/// Where the database is, without its password (for messages).
pub fn describe(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    format!(
        "postgres://{}@{}/{}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

/// TLS to the database. With `ca_file`, TLS is required whatever the URL's `sslmode`
/// (naming a CA means the connection must not fall back to plain text), and the server's
/// certificate must chain to that CA and name the host of the URL. `sslmode=require`
/// without a CA is refused: unseen does not connect to a server it cannot verify.
fn tls(
    config: &mut Config,
    ca_file: Option<&Path>,
) -> Result<Option<MakeRustlsConnect>, StoreError> {
    let open_error = |message: String| StoreError::Open {
        path: ca_file.map_or_else(|| "the store URL".into(), |p| p.display().to_string()),
        message,
    };
    let Some(ca_file) = ca_file else {
        if config.get_ssl_mode() == SslMode::Require {
            return Err(open_error(
                "sslmode=require needs the CA that signed the database's certificate, to verify it: name its PEM file with --store-ca-file (or `ca_file` in [store])".into(),
            ));
        }
        // `prefer` (the default) without a TLS client is plain text, as `disable`.
        return Ok(None);
    };
    let pem = std::fs::read(ca_file)
        .map_err(|e| open_error(format!("cannot read the database's CA file: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| open_error(format!("not a PEM certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| open_error(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(open_error(
            "holds no certificate (expected the PEM of the CA that signed the database's certificate)".into(),
        ));
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| open_error(format!("TLS settings: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.ssl_mode(SslMode::Require);
    Ok(Some(MakeRustlsConnect::new(client)))
}

impl Pool {
    pub fn new(
        url: &str,
        schema: &str,
        max_idle: usize,
        ca_file: Option<&Path>,
    ) -> Result<Pool, StoreError> {
        let mut config = Config::from_str(url).map_err(|e| StoreError::Open {
            path: "the store URL".into(),
            message: format!("not a PostgreSQL URL or connection string: {e}"),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("unseen");
        let tls = tls(&mut config, ca_file)?;
        Ok(Pool {
            config,
            tls,
            schema: schema.to_string(),
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_in_transaction: IDLE_IN_TRANSACTION,
        })
    }

    /// Bounds the sessions opened from now on at `limit` idle in a transaction, and
    /// closes the idle ones, opened with the bound before (tests).
    #[cfg(test)]
    pub fn set_idle_in_transaction(&mut self, limit: Duration) {
        self.idle_in_transaction = limit;
        if let Ok(idle) = self.idle.get_mut() {
            let clients = std::mem::take(idle);
            // Dropped on a thread of their own, as in `Drop for Pool`.
            let _ = std::thread::spawn(move || drop(clients)).join();
        }
    }

    pub fn get(&self) -> Result<Conn<'_>, StoreError> {
        let idle = self.idle.lock().ok().and_then(|mut i| i.pop());
        let client = match idle {
            Some(c) if !c.is_closed() => c,
            _ => self.connect()?,
        };
        Ok(Conn {
            pool: self,
            client: Some(client),
        })
    }

    fn connect(&self) -> Result<Client, StoreError> {
        let connected = match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        };
        let mut client = connected.map_err(|e| {
            StoreError::Backend(format!(
                "cannot connect to {}: {}",
                describe(&self.config),
                explain(&e)
            ))
        })?;
        // The schema is created by the migrations, under their lock (replicas that start
        // at once would race on CREATE SCHEMA IF NOT EXISTS); naming a schema that does
        // not exist yet in the search path is fine.
        client
            .batch_execute(&format!(
                "SET search_path TO {}; SET idle_in_transaction_session_timeout = {}",
                self.schema,
                self.idle_in_transaction.as_millis().max(1)
            ))
            .map_err(|e| {
                StoreError::Backend(format!(
                    "cannot use schema {}: {}",
                    self.schema,
                    explain(&e)
                ))
            })?;
        Ok(client)
    }
}

/// A client error with the server's message when there is one ("db error" alone says
/// nothing).
pub fn explain(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{} ({}){}",
            db.message(),
            db.code().code(),
            db.detail().map(|d| format!(": {d}")).unwrap_or_default()
        ),
        None => {
            // The cause says what failed (a TLS handshake: which certificate, why).
            let mut out = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !out.contains(&cause_text) {
                    out.push_str(": ");
                    out.push_str(&cause_text);
                }
                source = cause.source();
            }
            out
        }
    }
}
