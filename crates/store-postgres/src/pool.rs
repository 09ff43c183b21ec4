//! A small pool of connections, each with the store's schema as its search path.
//!
//! Why not a pool crate: what is needed is a bounded stack of idle clients, a connect
//! with a timeout, and dropping a client whose connection broke; r2d2 would add a
//! thread and a dependency for that.

use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use postgres::{Client, Config, NoTls};
use unseen_store::StoreError;

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Pool {
    config: Config,
    schema: String,
    idle: Mutex<Vec<Client>>,
    max_idle: usize,
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

impl Pool {
    pub fn new(url: &str, schema: &str, max_idle: usize) -> Result<Pool, StoreError> {
        let mut config = Config::from_str(url).map_err(|e| StoreError::Open {
            path: "the store URL".into(),
            message: format!("not a PostgreSQL URL or connection string: {e}"),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("unseen");
        Ok(Pool {
            config,
            schema: schema.to_string(),
            idle: Mutex::new(Vec::new()),
            max_idle,
        })
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
        let mut client = self.config.connect(NoTls).map_err(|e| {
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
            .batch_execute(&format!("SET search_path TO {}", self.schema))
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
        None => e.to_string(),
    }
}
