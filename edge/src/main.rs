#[tokio::main]
async fn main() -> anyhow::Result<()> {
    crawbl_edge::main_from_env().await
}
