//! Black-box tests of the auth gRPC API: each starts the real server on a random port with a fresh
//! database, and runs once on SQLite and once on Postgres.

/// Runs each named `async fn(Backend)` as two tests, `<name>::on_sqlite` and `<name>::on_postgres`.
macro_rules! on_both_backends {
    ($($test:ident),+ $(,)?) => {
        $(
            mod $test {
                #[tokio::test]
                async fn on_sqlite() {
                    super::$test(crate::helpers::Backend::Sqlite).await;
                }

                #[tokio::test]
                async fn on_postgres() {
                    super::$test(crate::helpers::Backend::Postgres).await;
                }
            }
        )+
    };
}

mod accounts;
mod api_keys;
mod devices;
mod helpers;
mod rate_limits;
mod sessions;
mod sign_in;
mod sign_up;
mod signing_keys;
mod users_and_credential;
mod verify_token;
mod workspaces;
