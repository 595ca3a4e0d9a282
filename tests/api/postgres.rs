//! A throwaway PostgreSQL server for the tests, from Debian's `postgresql` package (tests/run.sh
//! installs it): `initdb` into a temporary folder (as the `postgres` user when the tests run as
//! root, since PostgreSQL refuses to run as root), a free port on 127.0.0.1, trust
//! authentication, no fsync (a test database needs no crash safety). One server is shared by
//! every test of the binary; each test gets its own database. A watchdog process stops the
//! server and removes its folder when the test binary exits, however it exits.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The shared server.
pub struct PgServer {
    pub port: u16,
    bin: PathBuf,
    dir: PathBuf,
    as_postgres: bool,
    /// Whether it serves TLS (with `server.crt`, signed by `ca.crt`, both in `dir`).
    tls: bool,
}

static SERVER: OnceLock<PgServer> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// The newest PostgreSQL's binaries folder, e.g. /usr/lib/postgresql/15/bin.
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: apt-get install -y postgresql (tests/run.sh does)")
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().expect("no initdb under /usr/lib/postgresql/*/bin").1
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PgServer {
    /// The shared server, started on first use.
    pub fn shared() -> &'static PgServer {
        SERVER.get_or_init(|| PgServer::start(false))
    }

    /// A server of its own, for a test that stops and restarts it.
    pub fn dedicated() -> PgServer {
        PgServer::start(false)
    }

    /// A server of its own that also speaks TLS, with a certificate for 127.0.0.1 from a
    /// throwaway certificate authority; returns it with the authority's PEM file.
    pub fn dedicated_with_tls() -> (PgServer, PathBuf) {
        let server = PgServer::start(true);
        let ca = server.dir.join("ca.crt");
        (server, ca)
    }

    fn options(&self) -> String {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=300",
            self.port,
            self.dir.display()
        );
        if self.tls {
            options += &format!(
                " -c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key",
                dir = self.dir.display()
            );
        }
        options
    }

    /// Stops the server at once (clients see their connections drop).
    pub fn stop(&self) {
        run(self
            .command("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.dir.join("data")));
    }

    /// Starts it again after [`PgServer::stop`], on the same port and data.
    pub fn restart(&self) {
        run(self
            .command("pg_ctl")
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(self.dir.join("data"))
            .args(["-l"])
            .arg(self.dir.join("server.log"))
            .args(["-o", &self.options()]));
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn start(tls: bool) -> PgServer {
        let root = unsafe { libc_geteuid() } == 0;
        let dir = tempfile::Builder::new().prefix("tessera-pg-").tempdir().unwrap().keep();
        let server = PgServer {
            port: free_port(),
            bin: postgres_bin(),
            dir: dir.clone(),
            as_postgres: root,
            tls,
        };
        if tls {
            make_certificates(&dir);
        }
        let data = dir.join("data");
        if root {
            // The folder must belong to the user the server runs as.
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir));
        }
        run(server
            .command("initdb")
            .args(["-U", "tessera", "--auth=trust", "-E", "UTF8", "--no-sync", "-D"])
            .arg(&data));
        server.watch_for_exit();
        server.restart();
        server
    }

    /// Stops the server and removes its folder once this test process has exited, even if it
    /// panicked or was killed.
    fn watch_for_exit(&self) {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             {stop} stop -m immediate -D {data} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            stop = if self.as_postgres {
                format!("runuser -u postgres -- {}", self.bin.join("pg_ctl").display())
            } else {
                self.bin.join("pg_ctl").display().to_string()
            },
            data = self.dir.join("data").display(),
            dir = self.dir.display(),
        );
        // setsid -f forks the watchdog off and returns at once, so there is nothing to wait for
        // beyond setsid itself.
        let mut setsid = Command::new("setsid")
            .args(["-f", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the watchdog starts");
        let _ = setsid.wait();
    }

    /// The URL of a database on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://tessera@127.0.0.1:{}/{database}", self.port)
    }

    /// A new, empty database; returns its URL.
    pub async fn create_database(&self) -> String {
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::SeqCst)
        );
        let (client, connection) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .expect("the test PostgreSQL answers");
        let connection = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("a test database is created");
        drop(client);
        let _ = connection.await;
        self.url(&name)
    }
}

/// `ca.crt` (a throwaway authority) and `server.crt`/`server.key` for 127.0.0.1 signed by it,
/// in `dir`, made with the openssl command.
pub fn make_certificates(dir: &std::path::Path) {
    let openssl = |args: &str| {
        run(Command::new("openssl").args(args.split_whitespace()).current_dir(dir));
    };
    openssl("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=tessera-test-ca -keyout ca.key -out ca.crt");
    openssl("req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr");
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile san.ext -out server.crt",
    );
    // PostgreSQL refuses a key file others can read.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn run(command: &mut Command) {
    let output = command.output().expect("a PostgreSQL program runs");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Whether this process runs as root (no libc crate for one call).
unsafe fn libc_geteuid() -> u32 {
    extern "C" {
        fn geteuid() -> u32;
    }
    geteuid()
}
