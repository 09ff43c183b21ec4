//! TLS on every listener (receivers and admin), and client certificates (mTLS).
//!
//! The certificate chain, its key and the client CA bundle are PEM files, read at start
//! (a bad file fails the start, naming it) and again whenever one of them changes: the
//! files are compared once a second, so a renewed certificate (cert-manager, an ACME
//! client) is served to new connections within a second, and connections already open
//! keep theirs. A change that does not load (a half-written file, a key that does not
//! match) is logged and the previous certificate stays in force.
//!
//! Handshakes run in tasks of their own, bounded by [`HANDSHAKE_TIMEOUT`], so a client
//! that opens a connection and sends nothing holds back no other.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// The longest a TLS handshake may take before its connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the files are compared with what is loaded.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// Where the PEM files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA bundle for client certificates: when set, every client must present a
    /// certificate it signed (mTLS).
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
#[error("TLS: {path}: {message}")]
pub struct TlsError {
    pub path: String,
    pub message: String,
}

/// The protocols a listener speaks (ALPN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// gRPC: HTTP/2 only.
    Grpc,
    /// OTLP/HTTP: HTTP/2 and HTTP/1.1.
    Http,
    /// The admin port: HTTP/1.1 (probes and Prometheus).
    Admin,
}

impl Protocols {
    fn alpn(self) -> Vec<Vec<u8>> {
        match self {
            Protocols::Grpc => vec![b"h2".to_vec()],
            Protocols::Http => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Protocols::Admin => vec![b"http/1.1".to_vec()],
        }
    }
}

/// The loaded configuration of each listener, replaced whole on reload.
struct Loaded {
    bytes: Vec<Vec<u8>>,
    grpc: Arc<ServerConfig>,
    http: Arc<ServerConfig>,
    admin: Arc<ServerConfig>,
}

/// The TLS settings in force, shared by the listeners and the reload task.
#[derive(Clone)]
pub struct Tls {
    files: TlsFiles,
    current: Arc<RwLock<Arc<Loaded>>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError {
        path: path.display().to_string(),
        message: format!("cannot read it: {e}"),
    })
}

fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let mut bytes = vec![read(&files.cert)?, read(&files.key)?];
    if let Some(ca) = &files.client_ca {
        bytes.push(read(ca)?);
    }
    let bad = |path: &Path, message: String| TlsError {
        path: path.display().to_string(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes[0])
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&files.cert, format!("not a PEM certificate chain ({e})")))?;
    if chain.is_empty() {
        return Err(bad(
            &files.cert,
            "holds no certificate (PEM `BEGIN CERTIFICATE`)".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&bytes[1]).map_err(|e| {
        bad(
            &files.key,
            format!("no private key in it (PEM PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&files.cert, format!("TLS versions: {e}")))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&bytes[2]) {
                let cert = cert.map_err(|e| bad(ca, format!("not a PEM CA bundle ({e})")))?;
                roots
                    .add(cert)
                    .map_err(|e| bad(ca, format!("a CA certificate is not usable: {e}")))?;
            }
            if roots.is_empty() {
                return Err(bad(ca, "holds no CA certificate".into()));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| bad(ca, format!("cannot verify clients with it: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| {
        bad(
            &files.key,
            format!(
                "does not go with the certificate in {}: {e}",
                files.cert.display()
            ),
        )
    })?;
    let with = |p: Protocols| {
        let mut c = config.clone();
        c.alpn_protocols = p.alpn();
        Arc::new(c)
    };
    Ok(Loaded {
        grpc: with(Protocols::Grpc),
        http: with(Protocols::Http),
        admin: with(Protocols::Admin),
        bytes,
    })
}

impl Tls {
    /// Loads the files; an error names the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let loaded = load(&files)?;
        Ok(Tls {
            files,
            current: Arc::new(RwLock::new(Arc::new(loaded))),
        })
    }

    /// The acceptor for a listener, with the certificate in force now.
    pub fn acceptor(&self, protocols: Protocols) -> TlsAcceptor {
        let loaded = match self.current.read() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        TlsAcceptor::from(match protocols {
            Protocols::Grpc => loaded.grpc.clone(),
            Protocols::Http => loaded.http.clone(),
            Protocols::Admin => loaded.admin.clone(),
        })
    }

    /// Reloads the files when they change, until `stop`.
    pub async fn watch(self, stop: CancellationToken, hangup: Arc<tokio::sync::Notify>) {
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
                _ = hangup.notified() => {}
            }
            let files = self.files.clone();
            let current = self.current.clone();
            let _ = tokio::task::spawn_blocking(move || reload(&files, &current)).await;
        }
    }
}

fn reload(files: &TlsFiles, current: &RwLock<Arc<Loaded>>) {
    let mut now = Vec::new();
    for path in [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        match std::fs::read(path) {
            Ok(b) => now.push(b),
            // Mid-rename, or gone: keep what is loaded, look again next time.
            Err(_) => return,
        }
    }
    let unchanged = current.read().is_ok_and(|l| l.bytes == now);
    if unchanged {
        return;
    }
    match load(files) {
        Ok(loaded) => {
            if let Ok(mut slot) = current.write() {
                *slot = Arc::new(loaded);
            }
            tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded; new connections use it");
        }
        Err(error) => {
            // Remember the bytes that failed, so the error is logged once per change.
            if let Ok(mut slot) = current.write() {
                let kept = Loaded {
                    bytes: now,
                    grpc: slot.grpc.clone(),
                    http: slot.http.clone(),
                    admin: slot.admin.clone(),
                };
                *slot = Arc::new(kept);
            }
            tracing::error!(%error, "the changed TLS files do not load; the previous certificate stays in force");
        }
    }
}
