//! The stand-alone runtime-stub binary; everything lives in the library so the launcher and tests
//! can run the same code in-process.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    crawbl_runtime_stub::main_from_env().await
}
