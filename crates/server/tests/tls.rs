//! TLS and mTLS on every listener, with certificates the test makes with `openssl`
//! (installed by the test script): a real gRPC client (tonic over rustls) and HTTP
//! clients; a client without a certificate refused under mTLS; a renewed certificate
//! served without a restart.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use support::*;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use unseen_server::tls::TlsFiles;

/// A CA, a server certificate for `localhost` and 127.0.0.1, and a client certificate.
struct Certs {
    dir: PathBuf,
}

#[path = "../../../tests/support/certs.rs"]
mod certs;

impl Certs {
    fn make(dir: &Path) -> Certs {
        certs::ca(dir, "ca");
        let certs = Certs {
            dir: dir.to_path_buf(),
        };
        certs.leaf(
            "server",
            "localhost",
            "serverAuth",
            "DNS:localhost,IP:127.0.0.1",
        );
        certs.leaf("client", "collector-a", "clientAuth", "DNS:collector-a");
        certs
    }

    /// A leaf `name.pem` / `name.key` signed by the CA.
    fn leaf(&self, name: &str, cn: &str, usage: &str, san: &str) {
        certs::leaf(&self.dir, name, cn, usage, san);
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    fn files(&self, mtls: bool) -> TlsFiles {
        TlsFiles {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: mtls.then(|| self.path("ca.pem")),
        }
    }

    fn https(&self, identity: bool) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&self.read("ca.pem")).unwrap())
            .timeout(Duration::from_secs(10));
        if identity {
            let mut pem = self.read("client.pem");
            pem.extend(self.read("client.key"));
            b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
        }
        b.build().unwrap()
    }

    async fn grpc(
        &self,
        addr: std::net::SocketAddr,
        identity: bool,
    ) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.read("ca.pem")))
            .domain_name("localhost");
        if identity {
            tls = tls.identity(Identity::from_pem(
                self.read("client.pem"),
                self.read("client.key"),
            ));
        }
        Channel::from_shared(format!("https://localhost:{}", addr.port()))
            .unwrap()
            .tls_config(tls)?
            .connect()
            .await
    }
}

async fn start(certs: &Certs, mtls: bool) -> TestServer {
    let (_, store) = mem_store();
    let files = certs.files(mtls);
    TestServer::start_reached_by(
        store,
        |c| c.tls = Some(files),
        ("https", certs.https(mtls)),
        "0.0.0.0",
    )
    .await
}

async fn post_empty(client: &reqwest::Client, addr: std::net::SocketAddr) -> reqwest::Result<u16> {
    let response = client
        .post(format!(
            "https://localhost:{}{}",
            addr.port(),
            unseen_server::HTTP_PATH
        ))
        .header("content-type", "application/x-protobuf")
        .body(Vec::new())
        .send()
        .await?;
    Ok(response.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_speaks_tls_to_grpc_and_http_clients() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let server = start(&certs, false).await;

    // A real OTLP/gRPC client over TLS.
    let channel = certs
        .grpc(server.grpc, false)
        .await
        .expect("TLS gRPC channel");
    let answer = MetricsServiceClient::new(channel)
        .export(ExportMetricsServiceRequest::default())
        .await
        .expect("gRPC export over TLS");
    assert!(answer
        .into_inner()
        .partial_success
        .is_none_or(|p| p.rejected_data_points == 0));
    // OTLP/HTTP and the admin port over TLS.
    assert_eq!(
        post_empty(&certs.https(false), server.http).await.unwrap(),
        200
    );
    let (status, body) = server.admin_get("/readyz").await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "ready\n"),
        "TLS on 0.0.0.0: no warning"
    );
    // Plaintext to a TLS port gets no OTLP answer.
    let plain = http_client()
        .post(format!(
            "http://{}{}",
            server.http,
            unseen_server::HTTP_PATH
        ))
        .header("content-type", "application/x-protobuf")
        .body(Vec::new())
        .send()
        .await;
    assert!(
        plain.as_ref().map_or(true, |r| r.status() != 200),
        "plaintext must not be served: {plain:?}"
    );
    server.stop_and_read().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_clients_without_a_certificate_of_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let server = start(&certs, true).await;

    let channel = certs
        .grpc(server.grpc, true)
        .await
        .expect("mTLS gRPC channel");
    MetricsServiceClient::new(channel)
        .export(ExportMetricsServiceRequest::default())
        .await
        .expect("gRPC export with a client certificate");
    assert_eq!(
        post_empty(&certs.https(true), server.http).await.unwrap(),
        200
    );

    // No client certificate: refused, over gRPC and HTTP.
    let refused = match certs.grpc(server.grpc, false).await {
        Err(_) => true,
        Ok(channel) => MetricsServiceClient::new(channel)
            .export(ExportMetricsServiceRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "a gRPC client without a certificate was served");
    assert!(post_empty(&certs.https(false), server.http).await.is_err());
    server.stop_and_read().await;
}

/// The certificate a fresh TLS connection to `addr` is shown, as DER.
async fn presented(certs: &Certs, addr: std::net::SocketAddr) -> Option<Vec<u8>> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&certs.read("ca.pem")) {
        roots.add(cert.ok()?).ok()?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from("localhost").ok()?;
    let tls = connector.connect(name, tcp).await.ok()?;
    let (_, session) = tls.get_ref();
    Some(session.peer_certificates()?.first()?.as_ref().to_vec())
}

fn der_of(pem: &[u8]) -> Vec<u8> {
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer};
    CertificateDer::from_pem_slice(pem)
        .unwrap()
        .as_ref()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let server = start(&certs, false).await;
    let before = der_of(&certs.read("server.pem"));
    assert_eq!(
        presented(&certs, server.http).await.as_deref(),
        Some(&before[..])
    );

    // Renewal: a new key and certificate, written over the old files (key first, as a
    // renewal tool might; the pair is only loaded once it matches).
    certs.leaf(
        "renewed",
        "localhost",
        "serverAuth",
        "DNS:localhost,IP:127.0.0.1",
    );
    std::fs::copy(certs.path("renewed.key"), certs.path("server.key")).unwrap();
    std::fs::copy(certs.path("renewed.pem"), certs.path("server.pem")).unwrap();
    let after = der_of(&certs.read("renewed.pem"));
    assert_ne!(before, after);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if presented(&certs, server.grpc).await.as_deref() == Some(&after[..]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        presented(&certs, server.http).await.as_deref(),
        Some(&after[..])
    );
    server.stop_and_read().await;
}

/// Without TLS, receivers on every interface are said to be exposed, in the log and in
/// every /readyz answer; on loopback they are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_beyond_loopback_is_said_loudly() {
    let (_, store) = mem_store();
    let server =
        TestServer::start_reached_by(store, |_| {}, ("http", http_client()), "0.0.0.0").await;
    let (status, body) = server.admin_get("/readyz").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("warning: the receivers on 0.0.0.0:"),
        "{body}"
    );
    assert!(body.contains("--tls-cert"), "{body}");
    server.stop_and_read().await;
    let (_, store) = mem_store();
    let local = TestServer::start(store, |_| {}).await;
    assert_eq!(local.admin_get("/readyz").await.unwrap().1, "ready\n");
    local.stop_and_read().await;
}
