//! A private Postgres server in a temporary folder, for tests that stop and restart it (the
//! machine's shared Postgres on 5432 is never touched).
//!
//! `initdb` and `postgres` refuse to run as root, so as root the folder is given to the
//! `postgres` user and every Postgres program runs as that user (`runuser`); otherwise they run
//! as the current user. The server listens on 127.0.0.1 only, on a port outside the kernel's
//! ephemeral range (`free_port`), so while it is stopped no outgoing connection (nor another
//! `free_port` of this process) can take its port, and [`PostgresServer::start`] brings it
//! back on the same one.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

pub struct PostgresServer {
    pub port: u16,
    /// Holds `data/` (the cluster), `log` (the server's log) and the Unix socket.
    dir: PathBuf,
    /// Where `initdb`, `pg_ctl` and `postgres` are.
    bin: PathBuf,
    /// Running as root: Postgres programs run as the `postgres` user.
    as_postgres_user: bool,
    running: bool,
}

impl PostgresServer {
    /// Creates a cluster in a fresh temporary folder and starts it on a free port.
    pub async fn create() -> Self {
        let dir = std::env::temp_dir().join(format!("crawbl-pg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create the Postgres folder");
        let as_postgres_user = std::fs::metadata(&dir).expect("stat the folder").uid() == 0;
        let mut server = Self {
            port: 0,
            dir,
            bin: bin_dir(),
            as_postgres_user,
            running: false,
        };
        if as_postgres_user {
            let chowned = std::process::Command::new("chown")
                .arg("postgres:postgres")
                .arg(&server.dir)
                .status()
                .expect("run chown");
            assert!(
                chowned.success(),
                "cannot give {:?} to postgres",
                server.dir
            );
        }
        let data = server.data_dir();
        server
            .postgres_program("initdb", &["-D", &data, "-A", "trust", "-U", "postgres"])
            .await;
        // A port free now may be taken before the server binds it: try a few.
        let mut failure = String::new();
        for _ in 0..5 {
            server.port = super::free_port();
            match server.try_start().await {
                Ok(()) => return server,
                Err(output) => failure = output,
            }
        }
        panic!(
            "the private Postgres did not start: {failure}; its log is {}",
            server.log_path().display()
        );
    }

    /// The URL of the `postgres` database (the server is private: tests may use it directly).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server again on the same data and port, once it accepts connections.
    pub async fn start(&mut self) {
        if let Err(output) = self.try_start().await {
            panic!(
                "the private Postgres did not start again on port {}: {output}; its log is {}",
                self.port,
                self.log_path().display()
            );
        }
    }

    /// Stops the server as an operator does (`pg_ctl stop -m fast`: sessions are ended and open
    /// transactions rolled back) and waits until it has exited.
    pub async fn stop(&mut self) {
        let data = self.data_dir();
        self.postgres_program(
            "pg_ctl",
            &["stop", "-D", &data, "-m", "fast", "-w", "-t", "30"],
        )
        .await;
        self.running = false;
    }

    fn data_dir(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// `pg_ctl start`, waiting until the server accepts connections; what `pg_ctl` said if it
    /// did not start.
    async fn try_start(&mut self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        let data = self.data_dir();
        let log = self.log_path().display().to_string();
        let mut command = Command::from(self.command("pg_ctl"));
        let started = command
            .args([
                "start", "-D", &data, "-l", &log, "-w", "-t", "30", "-o", &options,
            ])
            .output()
            .await
            .expect("run pg_ctl start");
        self.running = started.status.success();
        if self.running {
            Ok(())
        } else {
            Err(output_text(&started))
        }
    }

    /// Runs a Postgres program to its end; panics if it fails.
    async fn postgres_program(&self, program: &str, args: &[&str]) {
        let output = Command::from(self.command(program))
            .args(args)
            .output()
            .await
            .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}",
            output_text(&output)
        );
    }

    /// A command for a Postgres program, run as `postgres` when we are root, from the server's
    /// folder (the `postgres` user may not be allowed into the current one).
    fn command(&self, program: &str) -> std::process::Command {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres_user {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            std::process::Command::new(program)
        };
        command.current_dir(&self.dir).stdin(Stdio::null());
        command
    }
}

fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
    .trim()
    .to_owned()
}

impl Drop for PostgresServer {
    /// Stops the server at once (`-m immediate`: nothing to keep) and removes its folder, except
    /// when a test failed: then the folder stays, with the server's log.
    fn drop(&mut self) {
        if self.running {
            let data = self.data_dir();
            let _ = self
                .command("pg_ctl")
                .args(["stop", "-D", &data, "-m", "immediate", "-w", "-t", "30"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The folder of Postgres' server programs: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/*/bin`, else the folder of the `initdb` on `PATH`.
fn bin_dir() -> PathBuf {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Ok(output) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
        && output.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if has_initdb(&dir) {
            return dir;
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_initdb(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return dir;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| has_initdb(dir))
        .expect("Postgres' initdb and pg_ctl must be installed (scripts/ensure-services.sh)")
}
