//! The stand-alone runtime-proxy binary; everything lives in the library so the launcher and tests
//! can run the same code in-process.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    crawbl_runtime_proxy::main_from_env().await
}
