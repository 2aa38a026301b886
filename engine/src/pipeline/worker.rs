//! A partition worker: owns its keys' operator state and evaluates the batches routed to it.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) enum WorkerMsg {
    Batch {
        stream: usize,
        group: usize,
        batch: RecordBatch,
        clocks: RowClocks,
        end_watermark: Millis,
        /// Replayed input, acknowledged before a restart (see [`ReplayGate`]).
        replayed: bool,
    },
    /// Advance the rules of `stream` (only of key group `group`, if given).
    Watermark {
        stream: usize,
        group: Option<usize>,
        watermark: Millis,
        /// Moved by replayed input.
        replayed: bool,
    },
    /// Emit [`Output::Barrier`] (and, with `snapshot`, [`Output::State`] before it).
    Barrier { seq: u64, watermark: Millis, snapshot: bool },
    /// A bounded input ended: operators that hold rows back evaluate the rest.
    EndOfInput,
    /// A reload (see [`super::reload`]): resolve the episodes of the rules to close, hand
    /// over every rule's state and stop.
    Retire { closing: super::reload::Closing, reply: Sender<(usize, Vec<crate::state::KeyStates>)> },
}

pub(super) struct WorkerReport {
    pub(super) keys_per_rule: Vec<usize>,
    pub(super) partials_dropped: Vec<u64>,
    pub(super) replay_suppressed: u64,
    pub(super) busy_ns: u64,
}

/// Restore mode: of the alerts from `from` on, raised by replayed input (see
/// [`ReplayGate`]), drops those with an event time before `until`; returns how many.
///
/// Replayed input was processed before the restart and everything it raised was delivered
/// to the sinks; of that, a stage ordering by event time (the case stage) had processed
/// what lies before the frontier it was given, which `until` does not exceed. The rest is
/// sent again.
fn suppress_replayed(alerts: &mut Vec<Alert>, from: usize, until: Millis) -> u64 {
    let raised = alerts.split_off(from);
    let count = raised.len();
    alerts.extend(raised.into_iter().filter(|a| a.event_time >= until));
    (count - (alerts.len() - from)) as u64
}

/// Every operator's key states, in plan order.
fn snapshot_all(ops: &[Box<dyn Operator>]) -> Vec<Result<crate::state::KeyStates>> {
    ops.iter()
        .map(|op| {
            let mut keys = crate::state::KeyStates::default();
            op.snapshot(&mut keys).map(|()| keys)
        })
        .collect()
}

pub(super) fn run_worker(
    plan: &Plan,
    mut ops: Vec<Box<dyn Operator>>,
    rx: &Receiver<WorkerMsg>,
    out: &Sender<Output>,
    replay_until: &[Millis],
    (worker, workers): (usize, usize),
) -> WorkerReport {
    let mut replay_suppressed = 0;
    let mut busy_ns = 0u64;
    let groups: Vec<Vec<KeyGroup>> = (0..plan.streams.len()).map(|s| plan.key_groups(s)).collect();
    let mut alerts = Vec::new();
    let where_cache = WhereCache::default();
    for msg in rx {
        let started = Instant::now();
        match msg {
            WorkerMsg::Batch { stream, group, batch, clocks, end_watermark, replayed } => {
                where_cache.clear();
                let input = BatchInput {
                    stream,
                    batch: &batch,
                    times: &clocks.times,
                    watermarks: &clocks.watermarks,
                    split_watermarks: &clocks.split_watermarks,
                    end_watermark,
                    shared_where: Some(&where_cache),
                };
                for &r in &groups[stream][group].rules {
                    let from = alerts.len();
                    let result = ops[r].process(&input, &mut alerts);
                    if replayed {
                        replay_suppressed += suppress_replayed(&mut alerts, from, replay_until[stream]);
                    }
                    if let Err(e) = result {
                        let _ = out.send(Output::RuleError {
                            rule: plan.rules[r].meta.id.to_string(),
                            message: e.to_string(),
                        });
                    }
                }
            }
            WorkerMsg::Watermark { stream, group, watermark, replayed } => {
                let selected = match group {
                    Some(g) => std::slice::from_ref(&groups[stream][g]),
                    None => &groups[stream][..],
                };
                for g in selected {
                    for &r in &g.rules {
                        let from = alerts.len();
                        let result = ops[r].advance_stream(stream, watermark, &mut alerts);
                        if replayed {
                            replay_suppressed += suppress_replayed(&mut alerts, from, replay_until[stream]);
                        }
                        if let Err(e) = result {
                            let _ = out.send(Output::RuleError {
                                rule: plan.rules[r].meta.id.to_string(),
                                message: e.to_string(),
                            });
                        }
                    }
                }
            }
            WorkerMsg::Retire { closing, reply } => {
                for (r, close) in closing.iter().enumerate() {
                    if let Some((reason, at)) = close
                        && let Err(e) = ops[r].close_episodes(*at, reason, &mut alerts)
                    {
                        let _ = out.send(Output::RuleError {
                            rule: plan.rules[r].meta.id.to_string(),
                            message: e.to_string(),
                        });
                    }
                }
                if !alerts.is_empty() && out.send(Output::Alerts(std::mem::take(&mut alerts))).is_err() {
                    break;
                }
                let states = snapshot_all(&ops)
                    .into_iter()
                    .enumerate()
                    .map(|(r, state)| {
                        state.unwrap_or_else(|e| {
                            let _ = out.send(Output::RuleError {
                                rule: plan.rules[r].meta.id.to_string(),
                                message: format!("handing over state at a reload failed (the rule starts empty): {e}"),
                            });
                            crate::state::KeyStates::default()
                        })
                    })
                    .collect();
                let _ = reply.send((worker, states));
                break;
            }
            WorkerMsg::EndOfInput => {
                for (r, op) in ops.iter_mut().enumerate() {
                    if let Err(e) = op.end_of_input(&mut alerts) {
                        let _ = out.send(Output::RuleError {
                            rule: plan.rules[r].meta.id.to_string(),
                            message: e.to_string(),
                        });
                    }
                }
            }
            WorkerMsg::Barrier { seq, watermark, snapshot } => {
                // Rows held back by a sequence rule raise alerts dated before the
                // watermark: the barrier's frontier must not pass them.
                let floor = ops.iter().filter_map(|o| o.alert_floor()).min();
                let watermark = floor.map_or(watermark, |f| f.min(watermark));
                if !alerts.is_empty() && out.send(Output::Alerts(std::mem::take(&mut alerts))).is_err() {
                    break;
                }
                if snapshot {
                    let rules = snapshot_all(&ops)
                        .into_iter()
                        .enumerate()
                        .map(|(r, state)| state.map_err(|e| (r, e)))
                        .collect::<std::result::Result<Vec<_>, _>>();
                    let state = match rules {
                        Ok(rules) => Output::State { seq, worker, rules },
                        Err((r, e)) => Output::RuleError {
                            rule: plan.rules[r].meta.id.to_string(),
                            message: format!("snapshot failed: {e}"),
                        },
                    };
                    if out.send(state).is_err() {
                        break;
                    }
                }
                if out.send(Output::Barrier { seq, worker, workers, watermark }).is_err() {
                    break;
                }
            }
        }
        busy_ns += started.elapsed().as_nanos() as u64;
        if !alerts.is_empty() && out.send(Output::Alerts(std::mem::take(&mut alerts))).is_err() {
            break;
        }
    }
    WorkerReport {
        keys_per_rule: ops.iter().map(|o| o.key_count()).collect(),
        partials_dropped: ops.iter().map(|o| o.partials_dropped()).collect(),
        replay_suppressed,
        busy_ns,
    }
}
