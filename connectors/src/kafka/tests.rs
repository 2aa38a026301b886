#[allow(clippy::wildcard_imports)]
use super::commit::*;
use super::*;

fn pid(topic: &str) -> PartitionId {
    PartitionId { topic: Arc::from(topic), partition: 0 }
}

fn tracker(span: Millis) -> CommitTracker {
    CommitTracker {
        marks: VecDeque::new(),
        replay_span: vec![span],
        stream_of_topic: [(Arc::from("t"), 0)].into_iter().collect(),
        committed: BTreeMap::new(),
    }
}

fn mark(seq: u64, next: i64, wm: Millis) -> Mark {
    Mark { seq, next: vec![(pid("t"), next)], watermarks: vec![wm] }
}

fn committed(offset: i64, acked: i64, watermark: Millis) -> Committed {
    Committed { offset, acked, watermark }
}

#[test]
fn commits_trail_the_acknowledged_watermark_by_the_replay_span() {
    let mut t = tracker(100);
    for (seq, next, wm) in [(1, 10, 0), (2, 20, 50), (3, 30, 120), (4, 40, 160), (5, 50, 400)] {
        t.marks.push_back(mark(seq, next, wm));
    }
    // Nothing acknowledged: nothing to commit.
    assert!(t.commit_point(0).is_empty());
    // Acknowledged up to seq 4 (wm 160, next offset 40): marks with wm < 60 are old
    // enough; the newest is seq 2.
    assert_eq!(t.commit_point(4), vec![(pid("t"), committed(20, 40, 160))]);
    t.committed.insert(pid("t"), committed(20, 40, 160));
    assert!(t.commit_point(4).is_empty(), "no commit that does not move forward");
    // Unacknowledged marks never count, however old their watermark would make them.
    assert_eq!(t.commit_point(5), vec![(pid("t"), committed(40, 50, 400))]);
}

#[test]
fn a_commit_is_repeated_when_only_the_acknowledged_position_moves() {
    // A long state horizon keeps the replay start in place while input is acknowledged:
    // the acknowledged offset must still be recorded, or a restart would send again
    // everything since the last time the replay start moved.
    let mut t = tracker(1000);
    for (seq, next, wm) in [(1, 10, 0), (2, 20, 1500), (3, 30, 1600)] {
        t.marks.push_back(mark(seq, next, wm));
    }
    assert_eq!(t.commit_point(2), vec![(pid("t"), committed(10, 20, 1500))]);
    t.committed.insert(pid("t"), committed(10, 20, 1500));
    assert_eq!(t.commit_point(3), vec![(pid("t"), committed(10, 30, 1600))]);
}

#[test]
fn commit_metadata_round_trips_and_older_metadata_acknowledges_nothing() {
    let c = committed(20, 40, 160);
    assert_eq!(c.metadata(), "gridwatch:wm=160;acked=40");
    assert_eq!(Committed::parse(20, &c.metadata()), Some(c));
    assert_eq!(Committed::parse(20, "gridwatch:wm=160"), Some(committed(20, 20, 160)));
    assert_eq!(Committed::parse(20, "someone else's"), None);
    assert_eq!(Committed::parse(20, "gridwatch:acked=40"), None, "no watermark, no replay bound");
    assert_eq!(Committed::parse(20, "gridwatch:wm=x;acked=40"), None);
}

#[test]
fn trimming_keeps_every_mark_that_can_still_be_chosen() {
    let mut t = tracker(100);
    for (seq, next, wm) in [(1, 10, 0), (2, 20, 50), (3, 30, 120), (4, 40, 160), (5, 50, 400)] {
        t.marks.push_back(mark(seq, next, wm));
    }
    t.trim(4);
    let seqs: Vec<u64> = t.marks.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [2, 3, 4, 5], "mark 1 can no longer be the newest old-enough mark");
    assert_eq!(t.commit_point(4), vec![(pid("t"), committed(20, 40, 160))], "trimming does not change the choice");
}

#[test]
fn streams_without_a_watermark_are_not_committed() {
    let mut t = tracker(0);
    t.marks.push_back(mark(1, 10, WATERMARK_START));
    t.marks.push_back(mark(2, 20, WATERMARK_START));
    assert!(t.commit_point(2).is_empty());
}

#[test]
fn the_state_file_round_trips_and_merges() {
    let dir = std::env::temp_dir().join(format!("gridwatch-state-test-{}", std::process::id()));
    let path = dir.join("g.offsets.json");
    save_state(&path, &[(pid("a"), committed(5, 9, 100))]);
    save_state(&path, &[(pid("b"), committed(7, 8, 200)), (pid("a"), committed(6, 10, 150))]);
    let state = load_state(&path);
    assert_eq!(state[&("a".to_string(), 0)], committed(6, 10, 150));
    assert_eq!(state[&("b".to_string(), 0)], committed(7, 8, 200));
    // A file of an older version: no acknowledged offsets.
    std::fs::write(&path, r#"[{"topic":"a","partition":0,"offset":6,"watermark":150}]"#).unwrap();
    assert_eq!(load_state(&path)[&("a".to_string(), 0)], committed(6, 6, 150));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(load_state(&path).is_empty(), "a missing file is an empty state");
}

#[test]
fn producer_configs_leave_out_consumer_properties() {
    let opts = KafkaOptions {
        brokers: "b:9092".into(),
        properties: [
            ("session.timeout.ms", "6000"),
            ("linger.ms", "7"),
            ("fetch.wait.max.ms", "10"),
            ("max.partition.fetch.bytes", "16777216"),
            ("queued.min.messages", "1000000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        ..Default::default()
    };
    let p = client_config(&opts, Role::Producer, &[("linger.ms", "5"), ("acks", "all")]);
    assert_eq!(p.get("linger.ms"), Some("7"), "the user's setting wins");
    assert_eq!(p.get("acks"), Some("all"));
    assert_eq!(p.get("session.timeout.ms"), None);
    assert_eq!(p.get("fetch.wait.max.ms"), None);
    assert_eq!(p.get("max.partition.fetch.bytes"), None);
    assert_eq!(p.get("queued.min.messages"), None);
    let c = client_config(&opts, Role::Consumer, &[]);
    assert_eq!(c.get("session.timeout.ms"), Some("6000"));
    assert_eq!(c.get("bootstrap.servers"), Some("b:9092"));
}
