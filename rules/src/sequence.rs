//! `kind: sequence` rules: steps across streams, correlated by a shared key.
//!
//! ```yaml
//! - id: heating-pressure-collapse
//!   kind: sequence
//!   key: [device_id]            # or per stream: {sensor: [grid_id], detection: [grid_cell]}
//!   within: 5m                  # first step's event to last step's event
//!   max_partial: 64             # partial matches kept per key
//!   steps:
//!     - {as: high, source: sensor, where: "metric = 'pressure_kpa'"}
//!     - {as: low, source: sensor, where: "metric = 'pressure_kpa' AND value < high.value * 0.8"}
//! ```
//!
//! A step's `where` may read earlier steps' events (`high.value`). It is split into its
//! `AND` terms: those over the event alone run vectorized per batch like any `where`; those
//! that read an earlier step become a [`RowExpr`] tried per partial match.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Word};
use gridwatch_engine::plan::{SequenceInput, SequencePlan, SequenceStep};
use gridwatch_engine::rowexpr::{BinOp, RowExpr, Scalar};
use gridwatch_engine::schema::StreamDef;
use gridwatch_engine::time::Millis;

use crate::diagnostic::{Code, Diagnostics};
use crate::expr::{ExprPlanner, Site, locate_in};
use crate::yaml::{Fields, Kind, Node, Reader};

/// Keys of a sequence rule.
pub(crate) const SEQUENCE_KEYS: [&str; 12] = [
    "id",
    "name",
    "description",
    "kind",
    "key",
    "severity",
    "category",
    "labels",
    "renotify",
    "within",
    "steps",
    "max_partial",
];
const STEP_KEYS: [&str; 7] = ["as", "source", "where", "not", "within", "times", "contiguous"];
/// Steps per rule (a step is one bit of a per-row mask).
const MAX_STEPS: usize = 16;

/// A compiled sequence: the routing of its first input and the plan.
pub(crate) struct CompiledSequence {
    pub stream: usize,
    pub key_fields: Vec<usize>,
    pub plan: SequencePlan,
}

/// One step as written.
struct RawStep<'a> {
    name: String,
    stream: usize,
    node: &'a Node,
    where_: Option<(String, &'a Node)>,
    negated: bool,
    not_node: Option<&'a Node>,
    within_ms: Option<Millis>,
    within_node: Option<&'a Node>,
    times: u32,
    contiguous: bool,
}

fn positive_duration(r: &Reader, n: &Node, what: &str, diags: &mut Diagnostics) -> Option<Millis> {
    let ms = r.duration(n, what, diags)?;
    if ms <= 0 {
        diags.push(r.error(Code::BadDuration, n, format!("`{what}` must be longer than zero")));
        return None;
    }
    Some(ms)
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Compiles the sequence-specific part of a rule (`m` is its mapping). Every problem is
/// reported; None if there was any.
pub(crate) fn compile(
    m: &Fields<'_>,
    r: &Reader,
    streams: &[Arc<StreamDef>],
    planner: &ExprPlanner,
    what: &str,
    diags: &mut Diagnostics,
) -> Option<CompiledSequence> {
    let before = diags.len();
    let within_ms = m.get("within").and_then(|n| positive_duration(r, n, "within", diags));
    let max_partial = match m.get("max_partial") {
        None => 64,
        Some(n) => match r.uint(n, "max_partial", diags) {
            Some(v) if (1..=100_000).contains(&v) => v as usize,
            Some(v) => {
                diags.push(
                    r.error(Code::BadValue, n, format!("`max_partial` must be between 1 and 100000, found {v}"))
                        .with_hint("the partial matches kept per key; the default is 64"),
                );
                64
            }
            None => 64,
        },
    };
    let steps_node = m.require("steps", what, r, diags)?;
    let Kind::Seq(items) = &steps_node.kind else {
        diags.push(
            r.error(
                Code::WrongType,
                steps_node,
                format!("`steps` of {what} must be a list, found {}", steps_node.kind.describe()),
            )
            .with_hint("e.g. `steps: [{as: rain, source: sensor, where: \"value > 30\"}, …]`"),
        );
        return None;
    };
    if items.is_empty() || items.len() > MAX_STEPS {
        diags.push(r.error(
            Code::BadValue,
            steps_node,
            format!("a sequence has 1 to {MAX_STEPS} steps, {what} has {}", items.len()),
        ));
        return None;
    }
    let raw: Vec<Option<RawStep<'_>>> = items.iter().map(|item| raw_step(item, r, streams, diags)).collect();
    let mut names: Vec<&str> = Vec::new();
    for s in raw.iter().flatten() {
        if names.contains(&s.name.as_str()) {
            diags.push(
                r.error(Code::BadValue, s.node, format!("two steps of {what} are named `{}`", s.name))
                    .with_hint("give each step its own `as` name"),
            );
        }
        names.push(&s.name);
    }
    if diags.len() > before {
        return None;
    }
    let raw: Vec<RawStep<'_>> = raw.into_iter().flatten().collect();
    check_times(&raw, within_ms, m.get("within"), r, what, diags);

    // Inputs: the distinct streams, in the order the steps first read them.
    let mut input_streams: Vec<usize> = Vec::new();
    for s in &raw {
        if !input_streams.contains(&s.stream) {
            input_streams.push(s.stream);
        }
    }
    // Key problems do not stop the steps' checks: every problem is reported at once.
    let inputs = compile_key(m.get("key"), &input_streams, &raw, streams, r, what, diags);
    let mut steps = Vec::with_capacity(raw.len());
    // (step, column) pairs read by later steps: their stream must decode them.
    let mut referenced: Vec<(usize, usize)> = Vec::new();
    for (k, s) in raw.iter().enumerate() {
        let input = input_streams.iter().position(|&i| i == s.stream).expect("every step's stream is an input");
        let (filter, refs, columns) = match &s.where_ {
            None => (None, None, Vec::new()),
            Some((sql, node)) => match step_condition(sql, node, k, &raw, streams, planner, r, diags) {
                Some(c) => c,
                None => continue,
            },
        };
        if let Some(x) = &refs {
            x.for_each_column(&mut |step, column| {
                if let Some(step) = step {
                    referenced.push((step, column));
                }
            });
        }
        steps.push(SequenceStep {
            name: s.name.clone(),
            input,
            filter,
            refs,
            negated: s.negated,
            within_ms: s.within_ms,
            times: s.times,
            contiguous: s.contiguous,
            columns,
        });
    }
    if diags.len() > before {
        return None;
    }
    for (step, column) in referenced {
        let step = &mut steps[step];
        if !step.columns.contains(&column) {
            step.columns.push(column);
        }
    }
    for step in &mut steps {
        step.columns.sort_unstable();
    }
    let inputs = inputs?;
    let (stream, key_fields) = (inputs[0].stream, inputs[0].key_fields.clone());
    Some(CompiledSequence { stream, key_fields, plan: SequencePlan { within_ms, max_partial, inputs, steps } })
}

fn raw_step<'a>(
    item: &'a Node,
    r: &Reader,
    streams: &[Arc<StreamDef>],
    diags: &mut Diagnostics,
) -> Option<RawStep<'a>> {
    let sm = r.map(item, "a step", &STEP_KEYS, diags)?;
    let before = diags.len();
    let name = sm.require("as", "a step", r, diags).and_then(|n| {
        let s = r.string(n, "as", diags)?;
        if !is_identifier(&s) {
            diags.push(
                r.error(Code::BadValue, n, format!("step name `{s}` is not an identifier"))
                    .with_hint("use letters, digits and `_`, starting with a letter, e.g. `rain`"),
            );
        }
        Some(s)
    });
    let what = name.as_ref().map_or_else(|| "a step".to_string(), |n| format!("step `{n}`"));
    let stream = sm.require("source", &what, r, diags).and_then(|n| {
        let s = r.string(n, "source", diags)?;
        let found = streams.iter().position(|d| d.name == s);
        if found.is_none() {
            let names: Vec<&str> = streams.iter().map(|d| d.name.as_str()).collect();
            let d = r.error(Code::UnknownStream, n, format!("unknown stream `{s}` in `source` of {what}"));
            diags.push(d.suggest(&s, &names, "declared streams"));
        }
        found
    });
    let where_ = sm.get("where").and_then(|n| Some((r.string(n, "where", diags)?, n)));
    let not_node = sm.get("not");
    let negated = not_node.and_then(|n| r.boolean(n, "not", diags)).unwrap_or(false);
    let within_node = sm.get("within");
    let within_ms = within_node.and_then(|n| positive_duration(r, n, "within", diags));
    let times = match sm.get("times") {
        None => 1,
        Some(n) => match r.uint(n, "times", diags) {
            Some(v) if (1..=1000).contains(&v) => v as u32,
            Some(v) => {
                diags.push(r.error(Code::BadValue, n, format!("`times` must be between 1 and 1000, found {v}")));
                1
            }
            None => 1,
        },
    };
    let contiguous = sm.get("contiguous").and_then(|n| r.boolean(n, "contiguous", diags)).unwrap_or(false);
    if negated {
        for key in ["times", "contiguous"] {
            if let Some((_, k, _)) = sm.entries().iter().find(|(name, _, _)| *name == key) {
                diags.push(
                    r.error(Code::BadValue, k, format!("`{key}` cannot be used on a `not` step ({what})"))
                        .with_hint("a `not` step forbids any matching event; remove it"),
                );
            }
        }
    }
    if diags.len() > before {
        return None;
    }
    Some(RawStep {
        name: name?,
        stream: stream?,
        node: item,
        where_,
        negated,
        not_node,
        within_ms,
        within_node,
        times,
        contiguous,
    })
}

/// `not` placement and time limits: every match must be bounded in time.
fn check_times(
    raw: &[RawStep<'_>],
    within_ms: Option<Millis>,
    within_node: Option<&Node>,
    r: &Reader,
    what: &str,
    diags: &mut Diagnostics,
) {
    if let Some(first) = raw.first()
        && first.negated
    {
        diags.push(
            r.error(
                Code::BadValue,
                first.not_node.unwrap_or(first.node),
                format!("the first step of {what} cannot be `not`"),
            )
            .with_hint("a sequence starts with the event that opens a match, e.g. the excavator's detection"),
        );
    }
    let last_positive = raw.iter().rposition(|s| !s.negated).unwrap_or(0);
    for (k, s) in raw.iter().enumerate() {
        if s.negated && k > last_positive && s.within_ms.is_none() && within_ms.is_none() {
            diags.push(
                r.error(
                    Code::MissingKey,
                    s.not_node.unwrap_or(s.node),
                    format!("`not` step `{}` has no `within`", s.name),
                )
                .with_hint("say how long it must not happen after the previous step, e.g. `within: 2h`"),
            );
        }
        let bounded = s.within_ms.is_some() || within_ms.is_some();
        if !s.negated && (k > 0 || s.times > 1) && !bounded {
            diags.push(
                r.error(Code::MissingKey, s.node, format!("step `{}` of {what} has no time limit", s.name)).with_hint(
                    "add `within` to the rule (first to last event) or to the step (after the previous one)",
                ),
            );
        }
        if let (Some(step), Some(rule), Some(n)) = (s.within_ms, within_ms, s.within_node)
            && step > rule
        {
            let d = r.error(
                Code::BadValue,
                n,
                format!(
                    "`within` of step `{}` ({}) is longer than the rule's `within` ({})",
                    s.name,
                    crate::duration::format_ms(step),
                    crate::duration::format_ms(rule)
                ),
            );
            let d = match within_node {
                Some(rn) => d.with_hint(format!("the rule's `within` (line {}) bounds the whole match", rn.pos.line)),
                None => d,
            };
            diags.push(d);
        }
    }
}

/// Resolves `key` (a list for every stream, a map per stream, or absent: each stream's
/// declared key) into the inputs, checking that every input has the same key shape.
fn compile_key(
    node: Option<&Node>,
    input_streams: &[usize],
    raw: &[RawStep<'_>],
    streams: &[Arc<StreamDef>],
    r: &Reader,
    what: &str,
    diags: &mut Diagnostics,
) -> Option<Vec<SequenceInput>> {
    let before = diags.len();
    // Per input stream: the key's field names (with their nodes) and where they were given.
    type Names = (Vec<(String, Node)>, Option<Node>);
    let mut per_stream: BTreeMap<usize, Names> = BTreeMap::new();
    match node.map(|n| (&n.kind, n)) {
        None => {
            for &s in input_streams {
                let def = &streams[s];
                let names = def.key_fields.iter().map(|&k| (def.fields[k].name.clone(), raw[0].node.clone())).collect();
                per_stream.insert(s, (names, None));
            }
        }
        Some((Kind::Map(entries), n)) => {
            let names: Vec<&str> = input_streams.iter().map(|&s| streams[s].name.as_str()).collect();
            for (k, v) in entries {
                let Kind::Str(stream_name) = &k.kind else { continue };
                match input_streams.iter().find(|&&s| &streams[s].name == stream_name) {
                    Some(&s) => {
                        if let Some(list) = r.string_list(v, "key", diags) {
                            per_stream.insert(s, (list, Some(v.clone())));
                        }
                    }
                    None => {
                        let d = r.error(
                            Code::UnknownStream,
                            k,
                            format!("`key` of {what} names stream `{stream_name}`, which no step reads"),
                        );
                        diags.push(d.suggest(stream_name, &names, "streams of the steps"));
                    }
                }
            }
            for &s in input_streams {
                if !per_stream.contains_key(&s) {
                    diags.push(
                        r.error(
                            Code::MissingKey,
                            n,
                            format!("`key` of {what} has no entry for stream `{}`", streams[s].name),
                        )
                        .with_hint(format!("add `{}: [field, …]`", streams[s].name)),
                    );
                }
            }
        }
        Some((_, n)) => {
            let list = r.string_list(n, "key", diags)?;
            for &s in input_streams {
                per_stream.insert(s, (list.clone(), Some(n.clone())));
            }
        }
    }
    let mut inputs = Vec::new();
    for &s in input_streams {
        let Some((names, _)) = per_stream.get(&s) else { continue };
        let def = &streams[s];
        let field_names: Vec<&str> = def.fields.iter().map(|f| f.name.as_str()).collect();
        let step = raw.iter().find(|st| st.stream == s).map_or("", |st| st.name.as_str());
        let mut key_fields = Vec::new();
        for (name, kn) in names {
            match def.field_index(name) {
                Some(i) => key_fields.push(i),
                None => {
                    let d = r.error(
                        Code::UnknownField,
                        kn,
                        format!("key field `{name}` of {what} is not a field of stream `{}` (step `{step}`)", def.name),
                    );
                    let d = d.suggest(name, &field_names, "declared fields");
                    let hint = format!(
                        "{}; or name the key per stream: `key: {{{}: [field], …}}`",
                        d.hint.clone().unwrap_or_default(),
                        def.name
                    );
                    diags.push(d.with_hint(hint));
                }
            }
        }
        inputs.push(SequenceInput { stream: s, key_fields });
    }
    if diags.len() > before {
        return None;
    }
    // Same shape everywhere: rows of every input are routed by the same key text.
    let first = &inputs[0];
    let first_def = &streams[first.stream];
    for input in &inputs[1..] {
        let def = &streams[input.stream];
        let at = per_stream.get(&input.stream).and_then(|(_, n)| n.clone()).or_else(|| node.cloned());
        let at = at.as_ref().unwrap_or(raw[0].node);
        if input.key_fields.len() != first.key_fields.len() {
            diags.push(r.error(
                Code::TypeMismatch,
                at,
                format!(
                    "the key of {what} has {} field(s) in stream `{}` but {} in stream `{}`",
                    first.key_fields.len(),
                    first_def.name,
                    input.key_fields.len(),
                    def.name
                ),
            ));
            continue;
        }
        for (&a, &b) in first.key_fields.iter().zip(&input.key_fields) {
            let (fa, fb) = (&first_def.fields[a], &def.fields[b]);
            if fa.ty != fb.ty {
                diags.push(
                    r.error(
                        Code::TypeMismatch,
                        at,
                        format!(
                            "key field `{}` of stream `{}` is {} but `{}` of stream `{}` is {}",
                            fa.name,
                            first_def.name,
                            fa.ty.name(),
                            fb.name,
                            def.name,
                            fb.ty.name()
                        ),
                    )
                    .with_hint("events correlate by the key's text: declare both fields with the same type"),
                );
            }
        }
    }
    if diags.len() > before { None } else { Some(inputs) }
}

/// A synthetic column standing for `step.field` while planning.
struct RefColumn {
    name: String,
    step: usize,
    column: usize,
}

type StepCondition = (Option<gridwatch_engine::plan::Predicate>, Option<RowExpr>, Vec<usize>);

/// Plans step `k`'s `where`: its event-only part, its part over earlier steps, and the
/// columns of its own stream it reads.
#[allow(clippy::too_many_arguments)]
fn step_condition(
    sql: &str,
    node: &Node,
    k: usize,
    raw: &[RawStep<'_>],
    streams: &[Arc<StreamDef>],
    planner: &ExprPlanner,
    r: &Reader,
    diags: &mut Diagnostics,
) -> Option<StepCondition> {
    let def = &streams[raw[k].stream];
    let before = diags.len();
    let (rewritten, refs) = rewrite_references(sql, node, k, raw, streams, r, diags);
    if diags.len() > before {
        return None;
    }
    let mut fields: Vec<Field> = def.arrow_schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    for rc in &refs {
        let f = &streams[raw[rc.step].stream].fields[rc.column];
        fields.push(Field::new(&rc.name, f.ty.arrow_type(), true));
    }
    let extended: SchemaRef = Arc::new(Schema::new(fields));
    let schema_name = format!("stream `{}` (step `{}`)", def.name, raw[k].name);
    let planned =
        planner.predicate(&rewritten, &extended, &schema_name, Site { reader: r, node, what: "where" }, diags)?;
    let own = def.fields.len();
    let columns: Vec<usize> = planned.columns.iter().copied().filter(|&c| c < own).collect();
    if refs.is_empty() {
        return Some((Some(planned.predicate), None, columns));
    }
    let expr = planner.logical(&rewritten, &extended)?;
    let is_ref = |name: &str| refs.iter().any(|rc| rc.name == name);
    let (mut local, mut dynamic) = (Vec::new(), Vec::new());
    for term in split_conjunction(&expr) {
        if term.column_refs().iter().any(|c| is_ref(&c.name)) {
            dynamic.push(term.clone());
        } else {
            local.push(term.clone());
        }
    }
    let stream_schema = def.arrow_schema();
    let filter = conjunction(local).and_then(|e| {
        let label = e.to_string();
        planner.physical(e, label, &stream_schema)
    });
    let lookup = |name: &str| match refs.iter().find(|rc| rc.name == name) {
        Some(rc) => Some(RowExpr::Column { step: Some(rc.step), column: rc.column }),
        None => def.field_index(name).map(|column| RowExpr::Column { step: None, column }),
    };
    let mut converted = Vec::new();
    for term in &dynamic {
        match to_row_expr(term, &lookup) {
            Ok(x) => converted.push(x),
            Err(unsupported) => {
                diags.push(
                    r.error(
                        Code::BadExpression,
                        node,
                        format!(
                            "`{unsupported}` cannot be used in a condition that reads an earlier step (step `{}`)",
                            raw[k].name
                        ),
                    )
                    .with_hint(
                        "terms with `step.field` may use comparisons, arithmetic, AND/OR/NOT, IS [NOT] NULL, BETWEEN \
                         and IN; put other functions in a separate AND term over the event alone",
                    ),
                );
                return None;
            }
        }
    }
    let refs_expr = converted.into_iter().reduce(|a, b| RowExpr::Binary(Box::new(a), BinOp::And, Box::new(b)));
    Some((filter, refs_expr, columns))
}

/// Replaces `step.field` references to earlier steps with synthetic columns; reports
/// unknown steps, steps that do not come before step `k`, and unknown fields.
fn rewrite_references(
    sql: &str,
    node: &Node,
    k: usize,
    raw: &[RawStep<'_>],
    streams: &[Arc<StreamDef>],
    r: &Reader,
    diags: &mut Diagnostics,
) -> (String, Vec<RefColumn>) {
    let dialect = GenericDialect {};
    let Ok(mut tokens) = Tokenizer::new(&dialect, sql).tokenize() else {
        // The planner reports the syntax error.
        return (sql.to_string(), Vec::new());
    };
    let mut refs: Vec<RefColumn> = Vec::new();
    let earlier: Vec<&str> = raw[..k].iter().map(|s| s.name.as_str()).collect();
    let mut i = 0;
    while i + 2 < tokens.len() {
        let (Token::Word(a), Token::Period, Token::Word(f)) = (&tokens[i], &tokens[i + 1], &tokens[i + 2]) else {
            i += 1;
            continue;
        };
        let (alias, field) = (a.value.clone(), f.value.clone());
        let text = format!("{alias}.{field}");
        let at = |msg: String| {
            let mut d = locate_in(r, node, sql, &text);
            d.message = msg;
            d
        };
        match raw.iter().position(|s| s.name == alias) {
            Some(step) if step < k && raw[step].negated => {
                let mut d = at(format!(
                    "step `{}` reads `{text}`, but `{alias}` is a `not` step: it matches no event",
                    raw[k].name
                ));
                d.code = Code::BadExpression;
                let d = match raw[..step].iter().rev().find(|s| !s.negated) {
                    Some(s) => d.with_hint(format!("read a step that happens, e.g. `{}.{field}`", s.name)),
                    None => d.with_hint("read a step that happens"),
                };
                diags.push(d);
            }
            Some(step) if step < k => {
                let def = &streams[raw[step].stream];
                match def.field_index(&field) {
                    Some(column) => {
                        let name = format!("__step{step}__{field}");
                        if !refs.iter().any(|rc| rc.name == name) {
                            refs.push(RefColumn { name: name.clone(), step, column });
                        }
                        let word = Word { value: name, quote_style: Some('"'), keyword: a.keyword };
                        tokens.splice(i..i + 3, [Token::Word(word)]);
                    }
                    None => {
                        let names: Vec<&str> = def.fields.iter().map(|f| f.name.as_str()).collect();
                        let mut d = at(format!(
                            "unknown field `{field}` in `{text}`: stream `{}` of step `{alias}` has no such field",
                            def.name
                        ));
                        d.code = Code::UnknownField;
                        diags.push(d.suggest(&field, &names, "declared fields"));
                    }
                }
            }
            Some(_) => {
                let mut d =
                    at(format!("step `{}` reads `{text}`, but step `{alias}` does not come before it", raw[k].name));
                d.code = Code::BadExpression;
                diags.push(d.with_hint("a step can read only the steps before it (references cannot go in a cycle)"));
            }
            None => {
                let mut d = at(format!("unknown step `{alias}` in `{text}` (step `{}`)", raw[k].name));
                d.code = Code::UnknownField;
                let d = d.suggest(&alias, &earlier, "earlier steps");
                let d = if d.hint.is_none() {
                    d.with_hint("refer to an earlier step by its `as` name, e.g. `high.value`")
                } else {
                    d
                };
                diags.push(d);
            }
        }
        i += 1;
    }
    (tokens.iter().map(ToString::to_string).collect(), refs)
}

fn scalar(v: &ScalarValue) -> Option<Scalar> {
    Some(match v {
        v if v.is_null() => Scalar::Null,
        ScalarValue::Int8(Some(x)) => Scalar::Int(i64::from(*x)),
        ScalarValue::Int16(Some(x)) => Scalar::Int(i64::from(*x)),
        ScalarValue::Int32(Some(x)) => Scalar::Int(i64::from(*x)),
        ScalarValue::Int64(Some(x)) => Scalar::Int(*x),
        ScalarValue::UInt8(Some(x)) => Scalar::Int(i64::from(*x)),
        ScalarValue::UInt16(Some(x)) => Scalar::Int(i64::from(*x)),
        ScalarValue::UInt32(Some(x)) => Scalar::Int(i64::from(*x)),
        ScalarValue::UInt64(Some(x)) => Scalar::Int(i64::try_from(*x).ok()?),
        ScalarValue::Float32(Some(x)) => Scalar::Float(f64::from(*x)),
        ScalarValue::Float64(Some(x)) => Scalar::Float(*x),
        ScalarValue::Boolean(Some(b)) => Scalar::Bool(*b),
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
            Scalar::Str(s.as_str().into())
        }
        _ => return None,
    })
}

/// Converts a logical expression to a [`RowExpr`]; the text of the first unsupported part
/// on failure.
fn to_row_expr(e: &Expr, lookup: &impl Fn(&str) -> Option<RowExpr>) -> Result<RowExpr, String> {
    let rec = |x: &Expr| to_row_expr(x, lookup).map(Box::new);
    Ok(match e {
        Expr::Column(c) => lookup(&c.name).ok_or_else(|| c.name.clone())?,
        Expr::Literal(v, _) => RowExpr::Literal(scalar(v).ok_or_else(|| e.to_string())?),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let op = match op {
                Operator::Eq => BinOp::Eq,
                Operator::NotEq => BinOp::NotEq,
                Operator::Lt => BinOp::Lt,
                Operator::LtEq => BinOp::LtEq,
                Operator::Gt => BinOp::Gt,
                Operator::GtEq => BinOp::GtEq,
                Operator::Plus => BinOp::Plus,
                Operator::Minus => BinOp::Minus,
                Operator::Multiply => BinOp::Multiply,
                Operator::Divide => BinOp::Divide,
                Operator::Modulo => BinOp::Modulo,
                Operator::And => BinOp::And,
                Operator::Or => BinOp::Or,
                _ => return Err(e.to_string()),
            };
            RowExpr::Binary(rec(left)?, op, rec(right)?)
        }
        Expr::Not(x) => RowExpr::Not(rec(x)?),
        Expr::Negative(x) => RowExpr::Negative(rec(x)?),
        Expr::IsNull(x) => RowExpr::IsNull(rec(x)?, false),
        Expr::IsNotNull(x) => RowExpr::IsNull(rec(x)?, true),
        Expr::Between(Between { expr, negated, low, high }) => {
            RowExpr::Between { expr: rec(expr)?, low: rec(low)?, high: rec(high)?, negated: *negated }
        }
        Expr::InList(list) => RowExpr::InList {
            expr: rec(&list.expr)?,
            list: list.list.iter().map(|x| to_row_expr(x, lookup)).collect::<Result<_, _>>()?,
            negated: list.negated,
        },
        other => return Err(other.to_string()),
    })
}
