//! The case-feedback reader (a topic read from its beginning, no group).

#[allow(clippy::wildcard_imports)]
use super::*;

/// Reads a case-feedback topic from its beginning on a background thread (every partition,
/// no consumer group): feedback is idempotent by id, so re-reading it after a restart
/// applies nothing twice, and no offsets need committing.
pub struct FeedbackReader {
    rx: crossbeam_channel::Receiver<(Vec<u8>, Origin)>,
    stop: Arc<AtomicBool>,
    last_message: Arc<Mutex<Instant>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for FeedbackReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedbackReader").finish_non_exhaustive()
    }
}

impl FeedbackReader {
    /// Starts reading `topic` with the connection settings of `opts`.
    pub fn start(opts: &KafkaOptions, topic: &str) -> Result<FeedbackReader> {
        let consumer: BaseConsumer = client_config(
            opts,
            Role::Consumer,
            &[("group.id", "gridwatch-feedback-reader"), ("enable.auto.commit", "false"), ("fetch.wait.max.ms", "50")],
        )
        .create()
        .map_err(|source| ConnectorError::KafkaClient { what: "creating the feedback reader", source })?;
        let (tx, rx) = crossbeam_channel::bounded(10_000);
        let stop = Arc::new(AtomicBool::new(false));
        let last_message = Arc::new(Mutex::new(Instant::now()));
        let (stop2, last2, topic) = (stop.clone(), last_message.clone(), topic.to_string());
        let handle = std::thread::Builder::new()
            .name("gridwatch-feedback".into())
            .spawn(move || read_feedback(&consumer, &topic, &tx, &stop2, &last2))
            .map_err(|_| ConnectorError::Internal("cannot start the feedback reader thread"))?;
        Ok(FeedbackReader { rx, stop, last_message, handle: Some(handle) })
    }

    /// Feedback payloads read so far (with their positions), without waiting.
    pub fn try_iter(&self) -> impl Iterator<Item = (Vec<u8>, Origin)> + '_ {
        self.rx.try_iter()
    }

    /// Waits (at most `limit`) until the topic has been quiet for `quiet`: the end of a
    /// bounded run takes the feedback already in the topic into account.
    pub fn wait_quiet(&self, quiet: Duration, limit: Duration) {
        let started = Instant::now();
        while started.elapsed() < limit {
            if lock(&self.last_message).elapsed() >= quiet && self.rx.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl gridwatch_runtime::FeedbackInput for FeedbackReader {
    fn poll(&mut self) -> Vec<std::result::Result<gridwatch_cases::Feedback, Box<DeadLetter>>> {
        self.try_iter()
            .map(|(payload, origin)| {
                gridwatch_cases::Feedback::parse(&payload).map_err(|why| {
                    gridwatch_runtime::stage::feedback_dead_letter(
                        why,
                        String::from_utf8_lossy(&payload).into_owned(),
                        Some(origin),
                    )
                })
            })
            .collect()
    }

    /// Waits for the topic to be quiet for 1 s (10 s at most): the end of a bounded run.
    fn settle(&mut self) {
        self.wait_quiet(Duration::from_secs(1), Duration::from_secs(10));
    }
}

impl Drop for FeedbackReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        while self.rx.try_recv().is_ok() {}
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn read_feedback(
    consumer: &BaseConsumer,
    topic: &str,
    tx: &crossbeam_channel::Sender<(Vec<u8>, Origin)>,
    stop: &AtomicBool,
    last_message: &Mutex<Instant>,
) {
    let mut assigned = 0usize;
    let topic_arc: Arc<str> = Arc::from(topic);
    while !stop.load(Ordering::Relaxed) {
        if assigned == 0 {
            // The topic may not exist yet: look again until it does.
            match consumer.fetch_metadata(Some(topic), Timeout::After(Duration::from_secs(1))) {
                Ok(md) => {
                    let mut tpl = TopicPartitionList::new();
                    for t in md.topics().iter().filter(|t| t.name() == topic && t.error().is_none()) {
                        for p in t.partitions() {
                            let _ = tpl.add_partition_offset(topic, p.id(), Offset::Beginning);
                        }
                    }
                    assigned = tpl.count();
                    if assigned > 0 {
                        if let Err(e) = consumer.assign(&tpl) {
                            tracing::warn!(topic, error = %e, "feedback reader: cannot assign partitions");
                            assigned = 0;
                        } else {
                            tracing::info!(topic, partitions = assigned, "reading case feedback");
                        }
                    }
                }
                Err(e) => tracing::debug!(topic, error = %e, "feedback topic not available yet"),
            }
            if assigned == 0 {
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                *lock(last_message) = Instant::now();
                let origin = Origin { topic: topic_arc.clone(), partition: m.partition(), offset: m.offset() };
                let payload = m.payload().unwrap_or_default().to_vec();
                // Blocks while the case stage is behind: feedback is never dropped.
                while let Err(crossbeam_channel::SendTimeoutError::Timeout(v)) =
                    tx.send_timeout((payload.clone(), origin.clone()), Duration::from_millis(100))
                {
                    drop(v);
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                }
            }
            Some(Err(e)) => tracing::warn!(topic, error = %e, "feedback reader"),
            None => {}
        }
    }
}
