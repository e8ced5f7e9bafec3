// `sqlx::migrate!` embeds the migrations at compile time but cannot tell cargo to watch their
// folders on stable Rust: without this a new migration file is silently left out of the build.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations/postgres/auth");
    println!("cargo:rerun-if-changed=../../migrations/sqlite/auth");
}
