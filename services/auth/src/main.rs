#[tokio::main]
async fn main() -> anyhow::Result<()> {
    crawbl_auth::main_from_env().await
}
