//! The Kafka producer behind the Kafka sinks: idempotent, acknowledged per barrier epoch.

#[allow(clippy::wildcard_imports)]
use super::*;

// ---------------------------------------------------------------------------------------
// Producer
// ---------------------------------------------------------------------------------------

/// A record whose delivery failed, kept to be sent again.
#[derive(Debug)]
struct Failed {
    topic: String,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: Option<OwnedHeaders>,
    epoch: u64,
    error: String,
}

/// Deliveries in flight per epoch (the barrier a record was produced after) and failures
/// waiting to be sent again; shared with librdkafka's delivery callback.
#[derive(Default)]
struct Deliveries {
    pending: BTreeMap<u64, u64>,
    failed: Vec<Failed>,
}

struct ProducerCtx {
    status: Arc<KafkaStatus>,
    deliveries: Mutex<Deliveries>,
}

impl ClientContext for ProducerCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        note_client_error(&self.status, "producer", &error, reason);
    }
}

impl ProducerContext for ProducerCtx {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, epoch: usize) {
        let epoch = epoch as u64;
        let mut d = lock(&self.deliveries);
        match result {
            Ok(_) => {
                self.status.broker_up.store(true, Ordering::Relaxed);
                if let Some(n) = d.pending.get_mut(&epoch) {
                    *n -= 1;
                    if *n == 0 {
                        d.pending.remove(&epoch);
                    }
                }
            }
            // Still pending: it is sent again, under the same epoch.
            Err((e, msg)) => {
                self.status.delivery_retries.fetch_add(1, Ordering::Relaxed);
                d.failed.push(Failed {
                    topic: msg.topic().to_string(),
                    key: msg.key().map(<[u8]>::to_vec),
                    payload: msg.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    headers: msg.headers().map(rdkafka::message::BorrowedHeaders::detach),
                    epoch,
                    error: e.to_string(),
                });
            }
        }
    }
}

/// Sends alerts and dead letters to Kafka; nothing is acknowledged before Kafka has it.
///
/// Acknowledgement is asynchronous: every record is tagged with the last barrier passed
/// before it was produced (its *epoch*); barrier `s` is delivered once no record of an
/// epoch before `s` is still in flight. The sink thread never waits on the broker, so
/// alerts keep flowing while earlier ones are being acknowledged.
pub struct KafkaSink {
    producer: ThreadedProducer<ProducerCtx>,
    alerts_topic: Option<String>,
    dead_letter_topic: Option<String>,
    status: Arc<KafkaStatus>,
    epoch: u64,
    retry_at: Option<(Instant, Duration)>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink").field("alerts_topic", &self.alerts_topic).field("epoch", &self.epoch).finish()
    }
}

impl KafkaSink {
    /// The topics alerts and dead letters go to: (what, topic).
    pub fn topics(&self) -> Vec<(&'static str, &str)> {
        let alerts = self.alerts_topic.as_deref().map(|t| ("alerts", t));
        let dead = self.dead_letter_topic.as_deref().map(|t| ("dead letters", t));
        alerts.into_iter().chain(dead).collect()
    }

    /// An idempotent producer (`enable.idempotence`, no delivery timeout: a message waits
    /// out a broker outage instead of failing).
    pub fn new(opts: &KafkaOptions, status: Arc<KafkaStatus>) -> Result<KafkaSink> {
        let ctx = ProducerCtx { status: status.clone(), deliveries: Mutex::new(Deliveries::default()) };
        let producer = client_config(
            opts,
            Role::Producer,
            &[
                ("enable.idempotence", "true"),
                ("message.timeout.ms", "0"),
                ("linger.ms", "1"),
                ("compression.type", "lz4"),
                ("reconnect.backoff.max.ms", "2000"),
            ],
        )
        .create_with_context(ctx)
        .map_err(|source| ConnectorError::KafkaClient { what: "creating the producer", source })?;
        Ok(KafkaSink {
            producer,
            alerts_topic: opts.alerts_topic.clone(),
            dead_letter_topic: opts.dead_letter_topic.clone(),
            status,
            epoch: 0,
            retry_at: None,
        })
    }

    /// Queues an alert (key = alert id, value = JSON) on the alerts topic, if there is one.
    pub fn send_alert(&mut self, alert: &Alert) -> Result<()> {
        let Some(topic) = self.alerts_topic.clone() else { return Ok(()) };
        self.send_alert_to(&topic, alert)
    }

    /// Queues an alert (key = alert id, value = JSON) on `topic`.
    pub fn send_alert_to(&mut self, topic: &str, alert: &Alert) -> Result<()> {
        let payload = serde_json::to_vec(alert)?;
        self.enqueue(topic, Some(alert.alert_id.as_bytes()), &payload, None, self.epoch, true)?;
        self.status.alerts_out.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Queues a JSON record on `topic` with `key` (case events are keyed by case id, so the
    /// events of one case stay in order on one partition).
    pub fn send_json(&mut self, topic: &str, key: &str, value: &impl serde::Serialize) -> Result<()> {
        let payload = serde_json::to_vec(value)?;
        self.enqueue(topic, Some(key.as_bytes()), &payload, None, self.epoch, true)
    }

    /// Queues a dead letter: value = raw payload, headers = reason, stream and, for Kafka
    /// input, the source topic, partition and offset.
    pub fn send_dead_letter(&mut self, dl: &DeadLetter) -> Result<()> {
        let Some(topic) = self.dead_letter_topic.clone() else { return Ok(()) };
        self.send_dead_letter_to(&topic, dl)
    }

    /// Queues a dead letter on `topic` (see [`KafkaSink::send_dead_letter`]).
    pub fn send_dead_letter_to(&mut self, topic: &str, dl: &DeadLetter) -> Result<()> {
        let mut headers = OwnedHeaders::new()
            .insert(Header { key: "gridwatch.kind", value: Some(dl.kind.name()) })
            .insert(Header { key: "gridwatch.reason", value: Some(&dl.reason) })
            .insert(Header { key: "gridwatch.stream", value: Some(&dl.stream) });
        if let Some(o) = &dl.origin {
            headers = headers
                .insert(Header { key: "gridwatch.source.topic", value: Some(&*o.topic) })
                .insert(Header { key: "gridwatch.source.partition", value: Some(&o.partition.to_string()) })
                .insert(Header { key: "gridwatch.source.offset", value: Some(&o.offset.to_string()) });
        }
        self.enqueue(topic, None, dl.payload.as_bytes(), Some(headers), self.epoch, true)?;
        self.status.dead_letters_out.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn enqueue(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
        epoch: u64,
        count: bool,
    ) -> Result<()> {
        if count {
            *lock(&self.producer.context().deliveries).pending.entry(epoch).or_default() += 1;
        }
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(topic, epoch as usize).payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                // The local queue is full: wait for deliveries to make room.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((source, _)) => {
                    return Err(ConnectorError::KafkaRequest {
                        what: "producing to",
                        topic: topic.to_string(),
                        source,
                    });
                }
            }
        }
    }

    /// Everything sent from now on belongs after barrier `seq`.
    pub fn barrier_passed(&mut self, seq: u64) {
        self.epoch = self.epoch.max(seq);
    }

    /// The highest barrier whose records are all delivered. Also sends failed records
    /// again, with exponential backoff (100 ms to 10 s).
    pub fn delivered_through(&mut self) -> Result<u64> {
        let (oldest_pending, failed) = {
            let mut d = lock(&self.producer.context().deliveries);
            let failed = match self.retry_at {
                Some((at, _)) if Instant::now() < at => Vec::new(),
                _ => std::mem::take(&mut d.failed),
            };
            (d.pending.keys().next().copied(), failed)
        };
        if failed.is_empty() {
            if self.retry_at.is_some() && lock(&self.producer.context().deliveries).failed.is_empty() {
                self.retry_at = None;
                self.status.sink_failing.store(false, Ordering::Relaxed);
            }
        } else {
            let backoff =
                self.retry_at.map_or(Duration::from_millis(100), |(_, b)| (b * 2).min(Duration::from_secs(10)));
            tracing::warn!(
                records = failed.len(),
                error = %failed[0].error,
                retry_in_ms = backoff.as_millis() as u64,
                "Kafka sink: delivery failed; sending again"
            );
            self.status.sink_failing.store(true, Ordering::Relaxed);
            self.retry_at = Some((Instant::now() + backoff, backoff));
            for f in failed {
                self.enqueue(&f.topic, f.key.as_deref(), &f.payload, f.headers, f.epoch, false)?;
            }
        }
        Ok(oldest_pending.map_or(self.epoch, |p| p.min(self.epoch)))
    }

    /// Blocks until everything queued so far is delivered (sending failures again).
    pub fn flush(&mut self) -> Result<()> {
        loop {
            while self.producer.flush(Duration::from_secs(5)).is_err() {
                tracing::warn!(in_flight = self.producer.in_flight_count(), "Kafka sink: waiting for the broker");
            }
            self.retry_at = None;
            self.delivered_through()?;
            let d = lock(&self.producer.context().deliveries);
            if d.pending.is_empty() && d.failed.is_empty() {
                return Ok(());
            }
            drop(d);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
