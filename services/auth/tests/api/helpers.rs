use std::path::PathBuf;
use std::time::Duration;

use crawbl_auth::Config;
use crawbl_infra::grpc::Channel;
use crawbl_infra::notify::{Notice, Notifier};
use crawbl_proto::auth::v1::auth_service_client::AuthServiceClient;
use crawbl_proto::auth::v1::{
    AuthChange, Principal, Session, SignInRequest, SignUpRequest, VerifyTokenRequest,
};
use futures::StreamExt as _;
use futures::stream::BoxStream;
use prost::Message as _;
use sqlx::Connection as _;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The admin connection used to create a database per test; `TEST_POSTGRES_URL` overrides it.
const DEFAULT_POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const PASSWORD: &str = "correct horse battery staple";

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A running auth server with its own database, removed again when the app is dropped.
pub struct TestApp {
    pub database_url: String,
    /// The gRPC address, `http://127.0.0.1:port`.
    pub address: String,
    pub client: AuthServiceClient<Channel>,
    /// What the server announces on (in-process); see [`TestApp::changes`].
    pub notifier: Notifier,
    shutdown: CancellationToken,
    database: Option<TestDatabase>,
}

enum TestDatabase {
    Sqlite(PathBuf),
    Postgres { admin_url: String, name: String },
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Like [`spawn_app`], after `configure` has changed the configuration.
pub async fn spawn_app_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> TestApp {
    let database = TestDatabase::create(backend).await;
    let mut app = start(database.url(), configure).await;
    app.database = Some(database);
    app
}

/// `count` servers started at the same moment on one fresh database (replicas deployed together);
/// the first owns the database.
pub async fn spawn_apps_at_once(backend: Backend, count: usize) -> Vec<TestApp> {
    let database = TestDatabase::create(backend).await;
    let url = database.url();
    let mut apps = futures::future::join_all((0..count).map(|_| start(url.clone(), |_| {}))).await;
    if let Some(first) = apps.first_mut() {
        first.database = Some(database);
    }
    apps
}

/// Another server on `app`'s database (as a second replica, or after a restart would be).
pub async fn spawn_replica(app: &TestApp, configure: impl FnOnce(&mut Config)) -> TestApp {
    start(app.database_url.clone(), configure).await
}

async fn start(database_url: String, configure: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = Config {
        database_url,
        listen: "127.0.0.1:0".to_owned(),
        ..Config::default()
    };
    configure(&mut config);
    let database_url = config.database_url.clone();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("cannot bind a test port");
    let address = format!(
        "http://{}",
        listener.local_addr().expect("the listener has no address")
    );
    let shutdown = CancellationToken::new();
    let notifier = Notifier::in_process();
    let server = tokio::spawn(crawbl_auth::run(
        config,
        listener,
        notifier.clone(),
        shutdown.clone(),
    ));
    // Carries this process's service credential, which the server requires.
    let client = AuthServiceClient::new(
        crawbl_infra::grpc::channel(&address).expect("cannot make a channel"),
    );
    let mut health = HealthClient::new(
        crawbl_infra::grpc::channel_without_credential(&address).expect("cannot make a channel"),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if server.is_finished() {
            panic!("the test server stopped at once: {:?}", server.await);
        }
        let request = HealthCheckRequest {
            service: String::new(),
        };
        if let Ok(response) = health.check(request).await
            && response.into_inner().status() == ServingStatus::Serving
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the test server is not serving after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    TestApp {
        database_url,
        address,
        client,
        notifier,
        shutdown,
        database: None,
    }
}

impl TestApp {
    pub async fn sign_up(
        &self,
        email: &str,
        password: &str,
        display_name: &str,
    ) -> Result<Session, tonic::Status> {
        let request = SignUpRequest {
            email: email.to_owned(),
            password: password.to_owned(),
            display_name: display_name.to_owned(),
        };
        Ok(self.client.clone().sign_up(request).await?.into_inner())
    }

    /// Signs up a user who must be accepted.
    pub async fn sign_up_ok(&self, email: &str, display_name: &str) -> Session {
        self.sign_up(email, PASSWORD, display_name)
            .await
            .unwrap_or_else(|status| panic!("sign-up of {email} failed: {status:?}"))
    }

    pub async fn sign_in(&self, email: &str, password: &str) -> Result<Session, tonic::Status> {
        self.sign_in_from(email, password, "").await
    }

    /// Signs in as if from the client address `client_address`.
    pub async fn sign_in_from(
        &self,
        email: &str,
        password: &str,
        client_address: &str,
    ) -> Result<Session, tonic::Status> {
        let request = SignInRequest {
            email: email.to_owned(),
            password: password.to_owned(),
            client_address: client_address.to_owned(),
        };
        Ok(self.client.clone().sign_in(request).await?.into_inner())
    }

    /// Every auth change announced from now on (after the initial resync notice).
    pub async fn changes(&self) -> BoxStream<'static, AuthChange> {
        let mut notices = self.notifier.subscribe();
        assert_eq!(notices.next().await, Some(Notice::Resync));
        notices
            .filter_map(|notice| async move {
                match notice {
                    Notice::Message(bytes) => {
                        Some(AuthChange::decode(bytes.as_slice()).expect("an AuthChange"))
                    }
                    Notice::Resync => None,
                }
            })
            .boxed()
    }

    pub async fn verify_token(&self, token: &str) -> Result<Principal, tonic::Status> {
        let request = VerifyTokenRequest {
            token: token.to_owned(),
        };
        Ok(self
            .client
            .clone()
            .verify_token(request)
            .await?
            .into_inner())
    }

    /// Marks every session revoked, straight in the database (no RPC does it yet).
    pub async fn revoke_all_sessions(&self) {
        sqlx::any::install_default_drivers();
        let mut connection = sqlx::AnyConnection::connect(&self.database_url)
            .await
            .expect("cannot connect to the test database");
        sqlx::query("UPDATE sessions SET revoked_at = $1")
            .bind(1_i64)
            .execute(&mut connection)
            .await
            .expect("cannot revoke the sessions");
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(database) = &self.database {
            database.remove();
        }
    }
}

/// The next announced change, failing after a few seconds.
pub async fn next_change(changes: &mut BoxStream<'static, AuthChange>) -> AuthChange {
    tokio::time::timeout(Duration::from_secs(5), changes.next())
        .await
        .expect("no change announced within 5 s")
        .expect("the change stream ended")
}

/// The stable error code a failed call carries (`crawbl-error-code` metadata).
pub fn error_code(status: &tonic::Status) -> Option<&str> {
    crawbl_infra::grpc::stable_code(status)
}

/// The failure of a call that must fail.
pub fn expect_failure<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> tonic::Status {
    match result {
        Ok(value) => panic!("the call succeeded but should have failed: {value:?}"),
        Err(status) => status,
    }
}

/// Asserts `result` failed with `code` and the stable `error_code`.
pub fn assert_fails_with<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
    stable_code: &str,
) {
    let status = expect_failure(result);
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(error_code(&status), Some(stable_code), "{status:?}");
}

impl TestDatabase {
    async fn create(backend: Backend) -> Self {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        match backend {
            Backend::Sqlite => {
                Self::Sqlite(std::env::temp_dir().join(format!("crawbl-auth-test-{unique}.db")))
            }
            Backend::Postgres => {
                let admin_url = std::env::var("TEST_POSTGRES_URL")
                    .unwrap_or_else(|_| DEFAULT_POSTGRES_ADMIN_URL.to_owned());
                let name = format!("auth_test_{unique}");
                let mut admin = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .unwrap_or_else(|error| {
                        panic!(
                            "cannot reach Postgres at {admin_url} (set TEST_POSTGRES_URL): {error}"
                        )
                    });
                sqlx::query(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
                    .execute(&mut admin)
                    .await
                    .expect("cannot create the test database");
                Self::Postgres { admin_url, name }
            }
        }
    }

    fn url(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite://{}?mode=rwc", path.display()),
            Self::Postgres { admin_url, name } => with_database_name(admin_url, name),
        }
    }

    /// Best effort: a leftover test database is harmless.
    fn remove(&self) {
        match self {
            Self::Sqlite(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = path.clone().into_os_string();
                    file.push(suffix);
                    let _ = std::fs::remove_file(file);
                }
            }
            Self::Postgres { admin_url, name } => {
                let (admin_url, name) = (admin_url.clone(), name.clone());
                // Drop cannot await, so drop the database from a thread with its own runtime.
                let dropper = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .ok()?;
                    runtime.block_on(async {
                        let mut admin = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                        let statement = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
                        let dropped = tokio::time::timeout(
                            Duration::from_secs(10),
                            sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&mut admin),
                        )
                        .await;
                        dropped.ok()?.ok()
                    })
                });
                let _ = dropper.join();
            }
        }
    }
}

/// `url` (a Postgres URL) pointing at database `name` instead, keeping any query string.
fn with_database_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |index| index + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}

impl TestApp {
    /// The key tokens are signed with now, read from the database (to forge tokens in tests).
    pub async fn current_signing_key(&self) -> crawbl_infra::jws::SigningKey {
        use base64::Engine as _;
        sqlx::any::install_default_drivers();
        let mut connection = sqlx::AnyConnection::connect(&self.database_url)
            .await
            .expect("cannot connect to the test database");
        let (kid, seed): (String, String) = sqlx::query_as(
            "SELECT kid, seed FROM signing_keys ORDER BY created_at DESC, kid DESC LIMIT 1",
        )
        .fetch_one(&mut connection)
        .await
        .expect("no signing key");
        let seed: [u8; 32] = base64::engine::general_purpose::STANDARD
            .decode(seed)
            .expect("base64 seed")
            .try_into()
            .expect("32 bytes");
        crawbl_infra::jws::SigningKey::from_seed(kid, &seed)
    }

    pub async fn refresh(&self, refresh_token: &str) -> Result<Session, tonic::Status> {
        let request = crawbl_proto::auth::v1::RefreshRequest {
            refresh_token: refresh_token.to_owned(),
        };
        Ok(self.client.clone().refresh(request).await?.into_inner())
    }

    pub async fn logout(
        &self,
        access_token: &str,
    ) -> Result<crawbl_proto::auth::v1::LogoutResponse, tonic::Status> {
        let request = crawbl_proto::auth::v1::LogoutRequest {
            access_token: access_token.to_owned(),
        };
        Ok(self.client.clone().logout(request).await?.into_inner())
    }
}

/// The user id of a session that must have one.
pub fn user_id(session: &Session) -> String {
    session
        .user
        .as_ref()
        .expect("the session has a user")
        .id
        .clone()
}
