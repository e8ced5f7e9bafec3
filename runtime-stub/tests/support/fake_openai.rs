//! A local OpenAI-compatible chat-completions server for tests: what stands in for a real model.
//! It speaks the real streaming protocol (`POST /v1/chat/completions`, `text/event-stream`,
//! `data: {json}` events, tool calls as fragments split across several chunks by `index`,
//! `data: [DONE]`), answers each request with the next of its scripted [`Reply`]s (the last one
//! repeats), and records every request's headers and JSON body.
//!
//! It listens on 127.0.0.1, port 0, over plain HTTP ([`FakeOpenAi::start`]) or over TLS with a
//! certificate of a throwaway test CA ([`TestCa`], [`FakeOpenAi::start_tls`]).
//!
//! Reusable: other test crates include it with
//! `#[path = "../runtime-stub/tests/support/fake_openai.rs"] mod fake_openai;` and need `axum`,
//! `futures`, `serde_json`, `tokio`, `rcgen` and `tokio-rustls` as dev-dependencies.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The pause between two chunks of a streamed reply, so chunks arrive separately.
const CHUNK_PAUSE: Duration = Duration::from_millis(5);

/// What the server answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 `text/event-stream`, these chunks sent one by one.
    Stream(Vec<String>),
    /// These chunks, then the connection breaks (no [DONE], no end of the chunked body).
    Cut(Vec<String>),
    /// This status, these headers, this body.
    Status {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Clone)]
struct Shared {
    replies: Arc<Vec<Reply>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

/// A running fake server; it stops when the test's runtime does.
pub struct FakeOpenAi {
    /// `http://127.0.0.1:PORT/v1` or `https://127.0.0.1:PORT/v1`.
    pub base_url: String,
    shared: Shared,
}

impl FakeOpenAi {
    /// Serves `replies` over plain HTTP.
    pub async fn start(replies: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr");
        let (shared, app) = app(replies);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            base_url: format!("http://{address}/v1"),
            shared,
        }
    }

    /// Serves `replies` over TLS with a certificate for `127.0.0.1` signed by `ca`.
    pub async fn start_tls(replies: Vec<Reply>, ca: &TestCa) -> Self {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = tcp.local_addr().expect("addr");
        let listener = TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(ca.server_config()),
        };
        let (shared, app) = app(replies);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            base_url: format!("https://{address}/v1"),
            shared,
        }
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn app(replies: Vec<Reply>) -> (Shared, Router) {
    assert!(!replies.is_empty(), "the fake server needs a reply");
    let shared = Shared {
        replies: Arc::new(replies),
        requests: Arc::default(),
    };
    let app = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .with_state(shared.clone());
    (shared, app)
}

async fn chat_completions(
    State(shared): State<Shared>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let index = {
        let mut requests = shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        requests.push(Recorded { headers, body });
        requests.len() - 1
    };
    let reply = shared.replies[index.min(shared.replies.len() - 1)].clone();
    match reply {
        Reply::Status {
            status,
            headers,
            body,
        } => {
            let mut response = Response::builder()
                .status(StatusCode::from_u16(status).expect("status"))
                .header(header::CONTENT_TYPE, "application/json");
            for (name, value) in headers {
                response = response.header(name, value);
            }
            response.body(Body::from(body)).expect("response")
        }
        Reply::Stream(chunks) => event_stream(chunks, false),
        Reply::Cut(chunks) => event_stream(chunks, true),
    }
}

fn event_stream(chunks: Vec<String>, cut: bool) -> Response {
    let chunks = futures::stream::iter(chunks.into_iter().map(Some).chain(cut.then_some(None)))
        .then(|chunk| async move {
            tokio::time::sleep(CHUNK_PAUSE).await;
            // An error item makes hyper abort the body: the client sees a broken stream.
            chunk.ok_or_else(|| std::io::Error::other("the fake provider cut the stream"))
        });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(chunks))
        .expect("response")
}

/// One SSE event carrying `value`.
pub fn sse(value: &Value) -> String {
    format!("data: {value}\n\n")
}

/// The closing event.
pub fn done() -> String {
    "data: [DONE]\n\n".to_owned()
}

/// A chunk with a text delta.
pub fn text(text: &str) -> String {
    sse(&json!({"choices":[{"index":0,"delta":{"content":text},"finish_reason":null}]}))
}

/// A chunk that ends the choice.
pub fn finish(reason: &str) -> String {
    sse(&json!({"choices":[{"index":0,"delta":{},"finish_reason":reason}]}))
}

/// The usage chunk servers send last when asked with `stream_options.include_usage`.
pub fn usage(prompt: u32, completion: u32) -> String {
    sse(
        &json!({"choices":[],"usage":{"prompt_tokens":prompt,"completion_tokens":completion,"total_tokens":prompt + completion}}),
    )
}

/// The chunks of tool call `index`: the first carries its id and name, the arguments follow in
/// `pieces` fragments, as real servers stream them.
pub fn tool_call(index: u32, id: &str, name: &str, arguments: &str, pieces: usize) -> Vec<String> {
    let fragment = |value: Value| {
        sse(&json!({"choices":[{"index":0,"delta":{"tool_calls":[value]},"finish_reason":null}]}))
    };
    let mut chunks = vec![fragment(
        json!({"index":index,"id":id,"type":"function","function":{"name":name,"arguments":""}}),
    )];
    let characters: Vec<char> = arguments.chars().collect();
    let size = characters.len().div_ceil(pieces.max(1)).max(1);
    for piece in characters.chunks(size) {
        let piece: String = piece.iter().collect();
        chunks.push(fragment(
            json!({"index":index,"function":{"arguments":piece}}),
        ));
    }
    chunks
}

/// A whole answer: `words` streamed as text, then stop, usage and [DONE].
pub fn answer(words: &[&str]) -> Reply {
    let mut chunks: Vec<String> = words.iter().map(|word| text(word)).collect();
    chunks.extend([finish("stop"), usage(10, 5), done()]);
    Reply::Stream(chunks)
}

/// A whole answer that calls tools `(id, name, arguments)`, each split in three fragments.
pub fn calls(calls: &[(&str, &str, &str)]) -> Reply {
    let mut chunks = vec![sse(
        &json!({"choices":[{"index":0,"delta":{"role":"assistant","content":null},"finish_reason":null}]}),
    )];
    for (index, (id, name, arguments)) in calls.iter().enumerate() {
        let index = u32::try_from(index).expect("few calls");
        chunks.extend(tool_call(index, id, name, arguments, 3));
    }
    chunks.extend([finish("tool_calls"), usage(20, 7), done()]);
    Reply::Stream(chunks)
}

/// A throwaway certificate authority and a server certificate it signed for `127.0.0.1` and
/// `localhost`.
pub struct TestCa {
    /// The CA certificate, PEM (what `SSL_CERT_FILE` would name).
    pub pem: String,
    /// The CA certificate, DER (what a runtime `Config` takes).
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
            .push(rcgen::DnType::CommonName, "Crawbl test CA");
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

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        // ring, like the runtime (its provider is deprecated only for lacking post-quantum kx).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(self.server_chain.clone(), key)
            .expect("server config");
        Arc::new(config)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// Accepts TCP connections and completes their TLS handshake; a handshake that fails (a client
/// that does not trust the CA) drops that connection and waits for the next.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, address)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(stream) = self.acceptor.accept(stream).await {
                return (stream, address);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
