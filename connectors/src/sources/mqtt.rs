//! The MQTT source: QoS 1 subscriptions in a persistent session (rumqttc), acknowledged
//! only once what they carried has been delivered by every sink.
//!
//! ## Delivery
//!
//! The session is persistent (`clean_session = false`, a fixed client id), and messages are
//! acknowledged by hand: a message's PUBACK is sent only after the barrier that follows it
//! is acknowledged by the runtime. Until then the broker keeps the message; if gridwatch
//! (or the connection) goes away first, the broker sends it again — so nothing that was
//! not delivered is lost, and a message may arrive twice (at least once; alerts carry
//! deterministic ids). A redelivery (`dup`) of a message still waiting for its PUBACK is
//! not pushed a second time.
//!
//! ## Connection
//!
//! One thread runs the client's event loop: it reconnects with backoff (100 ms to 5 s),
//! and subscribes to the configured filters at every connection (a filter added to the
//! config is subscribed even when the broker kept the session; a removed one stays in the
//! session until unsubscribed, and what arrives on it is dead-lettered as unknown).
//! A broker that answers "server unavailable" is retried; other refusals (credentials,
//! client id, protocol) end the run.
//! PUBACKs queued but not yet written when a connection drops are dropped by the client,
//! and the broker sends those messages again: harmless. After a session is lost, the
//! acknowledgements waiting for the old session are dropped (their packet ids mean
//! nothing in the new one). While disconnected, silence is not taken for time passing.
//!
//! The broker must let enough messages be in flight: acknowledgements wait for a barrier
//! (~100 ms), so Mosquitto's default of 20 unacknowledged messages per client caps the
//! rate at a few hundred per second; set `max_inflight_messages 0` (and
//! `max_queued_messages 0`, or Mosquitto drops what it queues for an offline client beyond
//! 1000).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use gridwatch_engine::{Reject, RejectKind};
use gridwatch_rules::sources::MqttConfig;
use gridwatch_runtime::{ErrorClass, Ingest, Polled, Source, SourceError};
use rumqttc::{Client, Event, MqttOptions, Packet, Publish, QoS, TlsConfiguration, Transport};

/// Messages pushed per poll at most.
const PER_POLL: usize = 4096;

/// The client takes packets up to MQTT's own limit, so a message above `max_message_size`
/// is dead-lettered (and acknowledged) by the source: were the client to refuse it, the
/// connection would drop and the persistent session would send it again, for ever.
const MQTT_MAX_PACKET: usize = 268_435_455;

/// How much of an oversized message its dead letter keeps.
const TOO_LARGE_KEPT: usize = 1024;

/// How long dropping the source waits for the last acknowledgements to reach the broker.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

enum Inbound {
    Message(Publish),
    /// Connected; whether the broker still had the session.
    Connected {
        session_present: bool,
    },
    Disconnected,
    /// The broker refused us (credentials, client id, ACL): retrying cannot help.
    Refused(String),
}

/// See the module docs.
pub struct MqttSource {
    client: Client,
    rx: Receiver<Inbound>,
    /// Topic filter and the stream it feeds, in config order.
    filters: Vec<(String, usize)>,
    /// Topics seen, each as one shared label (dead letters name their topic).
    topics: HashMap<String, Arc<str>>,
    /// Pushed since the last barrier.
    current: Vec<Publish>,
    /// Waiting for their barrier to be acknowledged.
    waiting: VecDeque<(u64, Vec<Publish>)>,
    /// Acknowledgements the client could not take yet (its queue was full).
    to_ack: VecDeque<Publish>,
    /// Packet ids pushed and not yet acknowledged.
    unacked: HashSet<u16>,
    /// Packet ids acknowledged since the broker last reused them: a PUBACK queued when a
    /// connection dropped is lost, and the broker sends the message again (`dup`).
    acked: HashSet<u16>,
    connected: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Set by the client thread when it has ended.
    closed: Arc<AtomicBool>,
    max_message_bytes: usize,
    received: u64,
    duplicates: u64,
    unknown_stream: u64,
}

fn error(class: ErrorClass, message: impl Into<String>) -> SourceError {
    SourceError::new("mqtt", class, message)
}

impl MqttSource {
    /// Connects to the broker of `config` (in the background: the source waits for the
    /// first connection like for data).
    pub fn start(config: &MqttConfig) -> Result<MqttSource, SourceError> {
        let mut opts = MqttOptions::new(config.client_id.clone(), config.host.clone(), config.port);
        opts.set_keep_alive(Duration::from_secs(config.keep_alive_s.max(1)));
        opts.set_clean_session(false);
        opts.set_manual_acks(true);
        opts.set_max_packet_size(MQTT_MAX_PACKET, MQTT_MAX_PACKET);
        if let Some((user, password)) = &config.credentials {
            opts.set_credentials(user.clone(), password.clone());
        }
        if let Some(tls) = &config.tls {
            // rustls with ring; installing the provider once is harmless when done twice.
            let _ = rumqttc::tokio_rustls::rustls::crypto::ring::default_provider().install_default();
            let read = |p: &std::path::Path| {
                std::fs::read(p)
                    .map_err(|e| error(ErrorClass::Config, format!("cannot read the TLS file `{}`: {e}", p.display())))
            };
            let ca = read(&tls.ca_file)?;
            let client_auth = match &tls.client {
                Some((cert, key)) => Some((read(cert)?, read(key)?)),
                None => None,
            };
            opts.set_transport(Transport::tls_with_config(TlsConfiguration::Simple { ca, alpn: None, client_auth }));
        }
        let (client, connection) = Client::new(opts, 4096);
        let (tx, rx) = crossbeam_channel::bounded(PER_POLL);
        let connected = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(AtomicBool::new(false));
        let filters = config.topics.clone();
        {
            let (client, connected, stop, filters) = (client.clone(), connected.clone(), stop.clone(), filters.clone());
            let closed = closed.clone();
            let broker = format!("{}:{}", config.host, config.port);
            std::thread::Builder::new()
                .name("gridwatch-mqtt".into())
                .spawn(move || {
                    event_loop(connection, &client, &tx, &connected, &stop, &filters, &broker);
                    closed.store(true, Ordering::SeqCst);
                })
                .map_err(|e| error(ErrorClass::Internal, format!("starting the MQTT client thread: {e}")))?;
        }
        Ok(MqttSource {
            client,
            rx,
            filters,
            topics: HashMap::new(),
            current: Vec::new(),
            waiting: VecDeque::new(),
            to_ack: VecDeque::new(),
            unacked: HashSet::new(),
            acked: HashSet::new(),
            connected,
            stop,
            closed,
            max_message_bytes: config.max_message_bytes,
            received: 0,
            duplicates: 0,
            unknown_stream: 0,
        })
    }

    fn take(&mut self, ingest: &mut Ingest<'_>, item: Inbound, now: i64) -> Result<(), SourceError> {
        match item {
            Inbound::Message(p) => {
                if p.dup && self.unacked.contains(&p.pkid) {
                    // Sent again before we acknowledged it: it is already in.
                    self.duplicates += 1;
                    return Ok(());
                }
                if p.dup && self.acked.contains(&p.pkid) {
                    // Processed and acknowledged, but the PUBACK was lost with the
                    // connection: acknowledge it again, do not push it again.
                    self.duplicates += 1;
                    self.to_ack.push_back(p);
                    self.send_acks();
                    return Ok(());
                }
                // A new message: its packet id no longer names an acknowledged one.
                self.acked.remove(&p.pkid);
                self.received += 1;
                let topic = match self.topics.get(&p.topic) {
                    Some(t) => t.clone(),
                    None => {
                        let t: Arc<str> = Arc::from(p.topic.as_str());
                        self.topics.insert(p.topic.clone(), t.clone());
                        t
                    }
                };
                let stream = self.filters.iter().find(|(f, _)| rumqttc::matches(&p.topic, f)).map(|(_, s)| *s);
                match stream {
                    _ if p.payload.len() > self.max_message_bytes => {
                        let reason = format!(
                            "MQTT message on `{}` of {} bytes is above max_message_size ({} bytes); its first {TOO_LARGE_KEPT} bytes are kept",
                            p.topic,
                            p.payload.len(),
                            self.max_message_bytes
                        );
                        let name = stream.map_or("", |s| ingest.plan().streams[s].name.as_str()).to_string();
                        let kept = &p.payload[..p.payload.len().min(TOO_LARGE_KEPT)];
                        ingest.reject(&name, Reject::new(RejectKind::TooLarge, reason), kept)?
                    }
                    Some(s) => ingest.push_topic(s, &p.payload, self.received as i64, now, topic)?,
                    None => {
                        self.unknown_stream += 1;
                        let reason = format!("MQTT topic `{}` matches no topic filter", p.topic);
                        ingest.reject("", Reject::new(RejectKind::UnknownStream, reason), &p.payload)?
                    }
                }
                if p.qos != QoS::AtMostOnce {
                    self.unacked.insert(p.pkid);
                    self.current.push(p);
                }
            }
            Inbound::Connected { session_present } => {
                if !session_present && (!self.waiting.is_empty() || !self.current.is_empty()) {
                    tracing::warn!(
                        waiting = self.waiting.iter().map(|(_, v)| v.len()).sum::<usize>() + self.current.len(),
                        "MQTT: the broker lost the session; acknowledgements of the old one are dropped"
                    );
                    self.waiting.clear();
                    self.current.clear();
                    self.to_ack.clear();
                    self.unacked.clear();
                    self.acked.clear();
                }
            }
            Inbound::Disconnected => {}
            Inbound::Refused(why) => {
                return Err(error(
                    ErrorClass::Config,
                    format!(
                        "the broker refused the connection ({why}): check `username`/`password` (and `client_id`, and the broker's ACL)"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn send_acks(&mut self) {
        while let Some(p) = self.to_ack.front() {
            if self.client.try_ack(p).is_err() {
                return; // the client's queue is full: again at the next acknowledgement
            }
            let p = self.to_ack.pop_front().expect("looked at the front");
            self.unacked.remove(&p.pkid);
            self.acked.insert(p.pkid);
        }
    }
}

impl Drop for MqttSource {
    /// Sends the acknowledgements still queued, then DISCONNECT (requests go out in
    /// order), and waits a little for the client thread to have written them: a PUBACK
    /// lost here means the broker sends that message again at the next start.
    fn drop(&mut self) {
        self.send_acks();
        self.stop.store(true, Ordering::SeqCst);
        if self.client.try_disconnect().is_err() {
            return;
        }
        let started = std::time::Instant::now();
        while !self.closed.load(Ordering::SeqCst) && started.elapsed() < CLOSE_WAIT {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn event_loop(
    mut connection: rumqttc::Connection,
    client: &Client,
    tx: &Sender<Inbound>,
    connected: &AtomicBool,
    stop: &AtomicBool,
    filters: &[(String, usize)],
    broker: &str,
) {
    let mut backoff = Duration::from_millis(100);
    // Failed attempts since the last connection: the first few are quiet (a broker
    // starting beside gridwatch), then one warning per outage.
    let mut failures = 0u32;
    for notification in connection.iter() {
        // Stopping: keep running the connection until DISCONNECT is written (it follows
        // the last PUBACKs), take nothing new, and never reconnect.
        if stop.load(Ordering::SeqCst) {
            match notification {
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => return,
                _ => continue,
            }
        }
        match notification {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if tx.send(Inbound::Message(p)).is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                connected.store(true, Ordering::Relaxed);
                backoff = Duration::from_millis(100);
                failures = 0;
                tracing::info!(%broker, session_present = ack.session_present, "MQTT connected");
                // At every connection, session or not: a filter added to the config since
                // the session was made is subscribed too (subscribing again is harmless).
                for (filter, _) in filters {
                    if let Err(e) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                        tracing::error!(%filter, error = %e, "MQTT: cannot subscribe");
                    }
                }
                if tx.send(Inbound::Connected { session_present: ack.session_present }).is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) {
                    tracing::error!(%broker, "MQTT: the broker refused a subscription (check the topic filters and the ACL)");
                }
            }
            Ok(_) => {}
            // The broker is there but cannot serve now: like a broker down, retry.
            Err(rumqttc::ConnectionError::ConnectionRefused(code))
                if code != rumqttc::ConnectReturnCode::ServiceUnavailable =>
            {
                let _ = tx.send(Inbound::Refused(format!("{code:?}")));
                return;
            }
            Err(e) => {
                let was = connected.swap(false, Ordering::Relaxed);
                failures += 1;
                if was {
                    tracing::warn!(%broker, error = %e, "MQTT connection lost: reconnecting");
                } else if failures == 5 {
                    tracing::warn!(%broker, error = %e, "MQTT: cannot reach the broker; retrying every few seconds (/readyz says not ready)");
                } else {
                    tracing::debug!(%broker, error = %e, "MQTT: cannot connect yet");
                }
                if tx.send(Inbound::Disconnected).is_err() {
                    return;
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

impl Source for MqttSource {
    fn name(&self) -> &str {
        "mqtt"
    }

    fn bounded(&self) -> bool {
        false
    }

    fn poll(&mut self, ingest: &mut Ingest<'_>, wait: Duration) -> Result<Polled, SourceError> {
        let first = match self.rx.recv_timeout(wait) {
            Ok(item) => item,
            Err(RecvTimeoutError::Timeout) => return Ok(Polled::Idle),
            Err(RecvTimeoutError::Disconnected) => {
                return Err(error(ErrorClass::Internal, "the MQTT client thread stopped"));
            }
        };
        let now = crate::net::wall_clock_ms();
        let rx = self.rx.clone();
        for item in std::iter::once(first).chain(rx.try_iter().take(PER_POLL)) {
            self.take(ingest, item, now)?;
        }
        Ok(Polled::Data)
    }

    fn barrier(&mut self, seq: u64) {
        if !self.current.is_empty() {
            self.waiting.push_back((seq, std::mem::take(&mut self.current)));
        }
    }

    fn acknowledged(&mut self, seq: u64) -> Result<(), SourceError> {
        while self.waiting.front().is_some_and(|(s, _)| *s <= seq) {
            let (_, messages) = self.waiting.pop_front().expect("looked at the front");
            self.to_ack.extend(messages);
        }
        self.send_acks();
        Ok(())
    }

    fn silence_counts(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    fn connected(&self) -> Option<Arc<AtomicBool>> {
        Some(self.connected.clone())
    }

    fn received(&self) -> u64 {
        self.received
    }

    fn unknown_stream(&self) -> u64 {
        self.unknown_stream
    }
}
