#[tokio::main]
async fn main() -> anyhow::Result<()> {
    crawbl_conversation::main_from_env().await
}
