//! `unseen serve` and `unseen check-config`: the edge that opens the store, binds the
//! ports, installs logging and metrics, and turns signals into a shutdown.

use std::sync::Arc;

use anyhow::{Context, Result};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use unseen_server::Listeners;
use unseen_store::{RedbStore, StateStore};

use crate::config::{LogFormat, ServeArgs, Settings};

pub fn check_config(args: ServeArgs) -> Result<()> {
    let settings = Settings::resolve(&args)?;
    settings.require_an_output()?;
    print!(
        "# unseen: the effective configuration (valid); URLs are shown without credentials\n{}",
        toml::to_string(&settings.to_file().redacted())
            .context("cannot print the configuration")?
    );
    Ok(())
}

pub fn run(args: ServeArgs) -> Result<()> {
    let settings = Settings::resolve(&args)?;
    settings.require_an_output()?;
    init_logging(settings.log_format, &settings.log_level)?;
    if settings.windows.current != unseen_model::Windows::default().current {
        tracing::warn!(
            current = %unseen_model::format_duration(settings.windows.current),
            "setting `current` has no effect on serve: the streaming rule uses `baseline` and `recent` (B − R) only; it applies to `scan`"
        );
    }
    let store = open_store_for(&settings.store, &settings.data, &settings.mode)?;
    let prometheus = install_metrics()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("unseen")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Installed before any port is bound: once a port takes connections, a SIGHUP
        // (a reload) must find its handler, not the default action that ends the process.
        let hangup = hangup_handler();
        let listeners = Listeners {
            otlp_grpc: bind("otlp_grpc", settings.otlp_grpc).await?,
            otlp_http: bind("otlp_http", settings.otlp_http).await?,
            admin: bind("admin", settings.admin).await?,
            api: match settings.api {
                Some(addr) => Some(bind("api", addr).await?),
                None => None,
            },
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(signals(shutdown.clone()));
        let config = settings.server_config();
        tokio::spawn(reload_on_hangup(hangup, config.reload.clone()));
        unseen_server::run(listeners, config, store, prometheus, shutdown).await?;
        Ok(())
    })
}

pub fn open_store(data: &std::path::Path) -> Result<Arc<dyn StateStore>> {
    std::fs::create_dir_all(data)
        .with_context(|| format!("cannot create the state directory {}", data.display()))?;
    // The store's errors say what is wrong (held by another process, corrupt, another
    // program's file) and what to do.
    let store =
        RedbStore::open(data).with_context(|| format!("state directory {}", data.display()))?;
    Ok(Arc::new(store))
}

/// The key mode as the state records it: keys made under another one are other keys.
pub fn key_mode_id(mode: &unseen_normalize::KeyMode) -> String {
    match (&mode.strict, &mode.cluster_name) {
        (true, _) => "strict".to_string(),
        (false, Some(cluster)) => format!("default, cluster_name={cluster}"),
        (false, None) => "default".to_string(),
    }
}

/// Opens the state (the embedded store in `data`, or PostgreSQL) and binds it to the
/// run's key mode (refused when the state was made under another one).
pub fn open_store_for(
    choice: &crate::config::StoreChoice,
    data: &std::path::Path,
    mode: &unseen_normalize::KeyMode,
) -> Result<Arc<dyn StateStore>> {
    let store: Arc<dyn StateStore> = match choice {
        crate::config::StoreChoice::Embedded => open_store(data)?,
        crate::config::StoreChoice::Postgres {
            url,
            schema,
            password_file,
            ca_file,
        } => {
            let url = match password_file {
                Some(file) => {
                    let password = std::fs::read_to_string(file).with_context(|| {
                        format!("cannot read the store's password file {}", file.display())
                    })?;
                    // The key=value form takes the password apart from the URL.
                    format!(
                        "{url}{}password={}",
                        if url.contains('?') { '&' } else { '?' },
                        percent(password.trim_end_matches(['\n', '\r']))
                    )
                }
                None => url.clone(),
            };
            let store =
                unseen_store_postgres::PostgresStore::open(&url, schema, ca_file.as_deref())
                    .with_context(|| format!("PostgreSQL store, schema {schema}"))?;
            Arc::new(store)
        }
    };
    store
        .bind_key_mode(&key_mode_id(mode))
        .with_context(|| format!("state directory {}", data.display()))?;
    crate::release_freed_memory();
    Ok(store)
}

/// Percent-encodes a URL query value.
fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn bind(name: &str, addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (setting `{name}`): is the port in use?"))
}

/// SIGTERM or SIGINT (Ctrl-C) starts a graceful shutdown; a second one is left to
/// the default handler's successor: the process keeps draining, so use SIGKILL to
/// stop it at once.
async fn signals(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutdown requested");
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested");
    }
    shutdown.cancel();
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

fn hangup_handler() -> Hangup {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let handler = signal(SignalKind::hangup()).ok();
        if handler.is_none() {
            tracing::warn!(
                "cannot install the SIGHUP handler; files are still reloaded when they change"
            );
        }
        handler
    }
}

/// SIGHUP: read the TLS files, the tokens and the suppression rules again now (they are
/// also read again within a second of any change, without it).
async fn reload_on_hangup(hangup: Hangup, reload: std::sync::Arc<tokio::sync::Notify>) {
    #[cfg(unix)]
    {
        let Some(mut hangup) = hangup else { return };
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reading the TLS files, tokens and suppression rules again");
            reload.notify_waiters();
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (hangup, reload);
    }
}

fn install_metrics() -> Result<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".to_string()),
            &[
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
            ],
        )
        .context("metrics buckets")?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).context("cannot install the metrics recorder")?;
    Ok(handle)
}

pub fn init_logging(format: LogFormat, level: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .with_context(|| format!("setting `log_level`: `{level}` is not a log filter"))?;
    // Colours only on a terminal: a log file or a collector's pipe gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install logging: {e}"))
}
