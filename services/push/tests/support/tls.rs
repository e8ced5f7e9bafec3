//! A throwaway certificate authority for the fake providers, and the listeners that serve over
//! TLS with a certificate it signed (the pattern of runtime-stub's `fake_openai.rs`, with ALPN).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A test CA and a server certificate it signed for `127.0.0.1` and `localhost`.
pub struct TestCa {
    /// The CA certificate, PEM (what `SSL_CERT_FILE` would name).
    pub pem: String,
    /// The CA certificate, DER (what `PushConfig::extra_root_certificates` takes).
    pub der: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
}

impl TestCa {
    pub fn new() -> Self {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Crawbl push test CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca cert");
        let server_params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server params");
        let server_key = rcgen::KeyPair::generate().expect("server key");
        let server = server_params
            .signed_by(&server_key, &ca)
            .expect("server cert");
        Self {
            pem: ca.pem(),
            der: ca.der().clone(),
            server_chain: vec![server.der().clone()],
            server_key: server_key.serialize_der(),
        }
    }

    /// A server configuration on ring offering `alpn` (empty: no ALPN).
    pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        // ring, like the senders (its provider is deprecated only for lacking post-quantum kx).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(self.server_chain.clone(), key)
            .expect("server config");
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        Arc::new(config)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// Accepts TCP connections and completes their TLS handshake, for `axum::serve`; a handshake
/// that fails (a client that does not trust the CA) drops that connection and waits for the
/// next, and is counted.
pub struct TlsListener {
    pub tcp: TcpListener,
    pub acceptor: TlsAcceptor,
    pub failed_handshakes: Arc<std::sync::atomic::AtomicUsize>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, address)) = self.tcp.accept().await else {
                continue;
            };
            match self.acceptor.accept(stream).await {
                Ok(stream) => return (stream, address),
                Err(_) => {
                    self.failed_handshakes
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A listener on 127.0.0.1, port 0, and its address.
pub async fn bind() -> (TcpListener, SocketAddr) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = tcp.local_addr().expect("addr");
    (tcp, address)
}

/// Serves `app` on `tcp` over TLS (HTTP/1.1; no ALPN); returns the counter of failed
/// handshakes.
pub fn serve_https(
    tcp: TcpListener,
    app: axum::Router,
    ca: &TestCa,
) -> Arc<std::sync::atomic::AtomicUsize> {
    let failed_handshakes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = TlsListener {
        tcp,
        acceptor: TlsAcceptor::from(ca.server_config(&[])),
        failed_handshakes: failed_handshakes.clone(),
    };
    tokio::spawn(async move { axum::serve(listener, app).await });
    failed_handshakes
}

/// Serves `app` on `tcp` over TLS and HTTP/2 only, as APNs does: ALPN `h2` is the only
/// protocol offered, a client that offers only `http/1.1` fails the handshake, and a connection
/// that negotiated no ALPN is closed. Returns the counter of refused connections.
pub fn serve_h2_only(
    tcp: TcpListener,
    app: axum::Router,
    ca: &TestCa,
) -> Arc<std::sync::atomic::AtomicUsize> {
    let acceptor = TlsAcceptor::from(ca.server_config(&[b"h2"]));
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = refused.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = tcp.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    return;
                };
                if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
            });
        }
    });
    refused
}
