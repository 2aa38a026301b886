//! A throwaway PostgreSQL cluster for tests: `initdb` into a temporary directory, a server
//! on a free loopback port (its socket in the same directory), stopped and deleted on drop.
//!
//! The server binaries are found through `$GRIDWATCH_PG_BIN`, `PATH` or
//! `/usr/lib/postgresql/*/bin` (newest version first); `scripts/test.sh` installs them and
//! sets `GRIDWATCH_PG_BIN`. Missing binaries fail the test: a skipped database test would
//! look like a passing one. PostgreSQL refuses to run as root, so as root (CI) every
//! server command runs as the `postgres` system user, which owns the directory.
//!
//! ```ignore
//! mod pg;
//! let server = pg::PgServer::start();
//! let url = server.create_database("cases_test"); // postgres://postgres@127.0.0.1:PORT/cases_test
//! ```

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The superuser `initdb` creates; the cluster trusts every local connection.
pub const USER: &str = "postgres";

/// A running throwaway cluster.
pub struct PgServer {
    bin: PathBuf,
    /// Holds `data/`, the server log and the Unix socket.
    root: PathBuf,
    data: PathBuf,
    port: u16,
    /// Run server commands as the `postgres` system user (we are root).
    as_postgres: bool,
    running: bool,
}

impl PgServer {
    /// Creates and starts a cluster; panics with the server's own words if it cannot.
    pub fn start() -> PgServer {
        let bin = pg_bin();
        let as_postgres = is_root();
        if as_postgres {
            let user = Command::new("id").args(["-u", USER]).output();
            assert!(
                user.is_ok_and(|o| o.status.success()),
                "the tests run as root and PostgreSQL refuses to: they run it as the `{USER}` system user, which \
                 does not exist here. Install PostgreSQL with `bash scripts/test.sh` (the package creates the user) \
                 or run the tests as an ordinary user"
            );
            let runuser = Command::new("runuser").arg("--version").output();
            assert!(
                runuser.is_ok_and(|o| o.status.success()),
                "the tests run as root and start PostgreSQL as `{USER}` with `runuser` (util-linux), which is \
                 missing: install util-linux or run the tests as an ordinary user"
            );
        }
        let root = temp_root(as_postgres);
        std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("create {}: {e}", root.display()));
        let data = root.join("data");
        let mut server = PgServer { bin, root, data, port: 0, as_postgres, running: false };
        if as_postgres {
            let out = Command::new("chown").args(["-R", USER]).arg(&server.root).output();
            check(out, "chown the cluster directory to postgres");
        }
        let started = Instant::now();
        let out = server
            .command("initdb")
            .args(["-A", "trust", "-U", USER, "-E", "UTF8", "--locale=C", "--no-sync", "-D"])
            .arg(&server.data)
            .output();
        check(out, "initdb");
        // A port found free can be taken before the server binds it; try a few.
        for attempt in 1..=3 {
            server.port = free_port();
            match server.pg_ctl_start() {
                Ok(()) => break,
                Err(why) if attempt == 3 => panic!("{why}"),
                Err(_) => continue,
            }
        }
        eprintln!("PostgreSQL test cluster on 127.0.0.1:{} ready in {:?}", server.port, started.elapsed());
        server
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for database `db` (`postgres://postgres@127.0.0.1:PORT/db`).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// A libpq key/value string for database `db`.
    pub fn conninfo(&self, db: &str) -> String {
        format!("host=127.0.0.1 port={} user={USER} dbname={db}", self.port)
    }

    /// A client connected to database `db`.
    pub fn client(&self, db: &str) -> postgres::Client {
        postgres::Client::connect(&self.conninfo(db), postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to the test cluster ({}): {e:?}", self.conninfo(db)))
    }

    /// Creates an empty database `name` (a fresh one per test keeps tests apart) and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.client("postgres")
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("create database {name}: {e:?}"));
        self.url(name)
    }

    /// Kills the server as a crash would (open connections break) and starts it again on
    /// the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.pg_ctl_start().unwrap_or_else(|why| panic!("{why}"));
    }

    /// Stops the server immediately (no checkpoint: the data directory is thrown away).
    pub fn stop(&mut self) {
        if self.running {
            let _ = self.command("pg_ctl").args(["-m", "immediate", "-w", "stop", "-D"]).arg(&self.data).output();
            self.running = false;
        }
    }

    /// The server log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("log")).unwrap_or_default()
    }

    fn pg_ctl_start(&mut self) -> Result<(), String> {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.root.display());
        let out = self
            .command("pg_ctl")
            .args(["-w", "-t", "30", "-o", &options, "-l"])
            .arg(self.root.join("log"))
            .arg("-D")
            .arg(&self.data)
            .arg("start")
            .output();
        match out {
            Ok(o) if o.status.success() => {
                self.running = true;
                Ok(())
            }
            other => Err(format!("pg_ctl start failed: {}\nserver log:\n{}", describe(other), self.log())),
        }
    }

    /// `program` from the server binaries, run as `postgres` when we are root.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", USER, "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        // The caller's directory may be unreadable for `postgres` (initdb warns about it).
        cmd.current_dir(&self.root);
        cmd
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The directory holding `initdb` and `pg_ctl`: `$GRIDWATCH_PG_BIN`, else the directory of
/// `initdb` on `PATH`, else the newest `/usr/lib/postgresql/*/bin`.
pub fn pg_bin() -> PathBuf {
    let complete = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("GRIDWATCH_PG_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            complete(&dir),
            "GRIDWATCH_PG_BIN={} has no initdb and pg_ctl: point it at PostgreSQL's server binaries \
             (e.g. /usr/lib/postgresql/15/bin) or unset it",
            dir.display()
        );
        return dir;
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).filter(|d| complete(d)).collect::<Vec<_>>())
        .unwrap_or_default();
    if let Some(dir) = on_path.into_iter().next() {
        return dir;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.split('.').next()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| complete(dir))
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, dir)) => dir,
        None => panic!(
            "PostgreSQL server binaries (initdb, pg_ctl) were not found in $GRIDWATCH_PG_BIN, PATH or \
             /usr/lib/postgresql/*/bin. Run the tests with `bash scripts/test.sh`, which installs them, or install \
             PostgreSQL and set GRIDWATCH_PG_BIN to the directory holding initdb and pg_ctl"
        ),
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

/// A loopback port that refuses connections for as long as the returned socket lives: it is
/// bound (so no other test or server can take it) but not listening, so a connection attempt
/// is answered with a reset, i.e. "connection refused". A port merely found free by
/// [`free_port`] can be taken meanwhile, e.g. by a cluster restarting in a concurrent test.
pub fn refusing_port() -> (socket2::Socket, u16) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a TCP socket");
    let any_port: std::net::SocketAddr = "127.0.0.1:0".parse().expect("a loopback address");
    socket.bind(&any_port.into()).expect("bind a loopback port");
    let port = socket.local_addr().ok().and_then(|a| a.as_socket()).map(|a| a.port()).expect("the bound port");
    (socket, port)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A new directory name. As root it is under /tmp whatever TMPDIR says: `postgres` must be
/// able to reach it. Short, because the socket path inside must fit in 107 bytes.
fn temp_root(as_postgres: bool) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let base = if as_postgres { PathBuf::from("/tmp") } else { std::env::temp_dir() };
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    base.join(format!("gw-pg-{}-{}-{nanos:x}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)))
}

fn check(out: std::io::Result<Output>, what: &str) {
    match out {
        Ok(o) if o.status.success() => {}
        other => panic!("{what} failed: {}", describe(other)),
    }
}

fn describe(out: std::io::Result<Output>) -> String {
    match out {
        Ok(o) => format!("{}\n{}{}", o.status, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
        Err(e) => e.to_string(),
    }
}
