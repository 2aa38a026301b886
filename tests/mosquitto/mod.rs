//! A real Mosquitto broker for a test: started on a free loopback port with a config of its
//! own in a temp dir (persistence on, so a restart keeps the persistent sessions and their
//! queued messages; no in-flight or queue limits, see the MQTT source's docs), stopped
//! when dropped. `scripts/test.sh` installs Debian's `mosquitto` if it is missing.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `mosquitto` binary.
pub fn mosquitto_binary() -> PathBuf {
    for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"] {
        if Path::new(p).is_file() {
            return p.into();
        }
    }
    panic!("mosquitto was not found: run the tests with `bash scripts/test.sh` (it installs Debian's `mosquitto`)");
}

/// A running broker.
pub struct Mosquitto {
    child: Option<Child>,
    /// The port it listens on.
    pub port: u16,
    dir: tempfile::TempDir,
    extra: String,
}

impl Mosquitto {
    /// A broker with anonymous access.
    pub fn start() -> Mosquitto {
        Self::start_with("allow_anonymous true\n")
    }

    /// A broker whose config also holds `extra` (listener options, a password file…).
    pub fn start_with(extra: &str) -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let mut m = Mosquitto { child: None, port, dir, extra: extra.to_string() };
        m.spawn();
        m
    }

    /// The temp dir the broker keeps its files in (a test may put certificates there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        let text = format!(
            "listener {port} 127.0.0.1\n{extra}persistence true\npersistence_location {dir}/\nautosave_interval 1\nmax_queued_messages 0\nmax_inflight_messages 0\nuser root\nlog_dest file {dir}/mosquitto.log\n",
            port = self.port,
            extra = self.extra,
            dir = self.dir.path().display()
        );
        std::fs::write(&conf, text).expect("write the config");
        let mut child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("mosquitto exited ({status}):\n{}", self.log());
            }
            assert!(started.elapsed() < Duration::from_secs(10), "mosquitto did not listen:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// Its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Stops the broker with SIGTERM (it saves its sessions and queued messages) and starts
    /// it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let started = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if started.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.wait();
        }
    }

    /// Publishes `lines` to `topic` with QoS 1, one message each (mosquitto_pub).
    pub fn publish_lines(&self, topic: &str, lines: &[String]) {
        let file = self.dir.path().join(format!("pub-{}.ndjson", topic.replace('/', "_")));
        std::fs::write(&file, lines.join("\n") + "\n").expect("write");
        let ok = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q", "1", "-t", topic, "-l"])
            .stdin(std::fs::File::open(&file).expect("open"))
            .status()
            .expect("mosquitto_pub")
            .success();
        assert!(ok, "mosquitto_pub to {topic} failed:\n{}", self.log());
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}
