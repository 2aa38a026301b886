//! `kind: window` rules: the window's shape and the aggregate list.
//!
//! ```yaml
//! window: {size: 10m, slide: 1m}          # time: tumbling (no slide) or sliding
//! window: {type: session, gap: 10m}       # session, optional `max` (default 1d)
//! window: {type: count, size: 5}          # count, optional `slide` and `max` (default 1d)
//! aggregates: [count, avg(value) as mean, "percentile(value, 0.95)", count_if(value > 30)]
//! ```
//!
//! An aggregate is parsed as one SQL select item (DataFusion's SQL parser): a function call
//! with an optional `as` alias. `count_if`'s argument is a SQL condition over the stream's
//! fields, planned like `where`.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use datafusion::sql::sqlparser::ast::{Expr, FunctionArg, FunctionArgExpr, FunctionArguments, SelectItem};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;
use gridwatch_engine::plan::{AggFunc, Aggregate, WindowPlan, WindowShape};
use gridwatch_engine::schema::{FieldType, StreamDef};
use gridwatch_engine::time::Millis;

use crate::diagnostic::{Code, Diagnostics};
use crate::expr::{ExprPlanner, Site};
use crate::yaml::{Node, Reader};

/// Default `max` of session and count windows.
const DEFAULT_MAX_MS: Millis = 24 * 3600 * 1000;

/// Compiles a window rule's `window`, `aggregates` and `condition`.
pub(crate) fn compile_window(
    m: &crate::yaml::Fields<'_>,
    r: &Reader,
    def: &StreamDef,
    planner: &ExprPlanner,
    what: &str,
    diags: &mut Diagnostics,
) -> Option<WindowPlan> {
    let shape = m.require("window", what, r, diags).and_then(|n| window_shape(n, r, diags));
    let anode = m.require("aggregates", what, r, diags)?;
    let list = r.string_list(anode, "aggregates", diags)?;
    let mut aggregates: Vec<Aggregate> = Vec::new();
    for (text, n) in list {
        if let Some(a) = parse_aggregate(&text, &n, r, def, planner, diags) {
            if aggregates.iter().any(|x| x.name == a.name) {
                diags.push(
                    r.error(Code::DuplicateId, &n, format!("aggregate `{}` is defined twice", a.name))
                        .with_hint("rename one with `as`"),
                );
                continue;
            }
            aggregates.push(a);
        }
    }
    if aggregates.is_empty() {
        return None;
    }
    let fields: Vec<Field> = aggregates
        .iter()
        .map(|a| Field::new(&a.name, if a.func.is_count() { DataType::Int64 } else { DataType::Float64 }, true))
        .collect();
    let result_schema = Arc::new(Schema::new(fields));
    let cnode = m.require("condition", what, r, diags)?;
    let sql = r.string(cnode, "condition", diags)?;
    let planned = planner.predicate(
        &sql,
        &result_schema,
        "the window's aggregate list",
        Site { reader: r, node: cnode, what: "condition" },
        diags,
    )?;
    Some(WindowPlan { shape: shape?, aggregates, condition: planned.predicate, result_schema })
}

/// Parses `window:`; reports every error in it.
fn window_shape(wnode: &Node, r: &Reader, diags: &mut Diagnostics) -> Option<WindowShape> {
    let wm = r.map(wnode, "`window`", &["type", "size", "slide", "gap", "max"], diags)?;
    let wtype = match wm.get("type") {
        Some(n) => r.string(n, "type", diags)?,
        None if wm.get("gap").is_some() => "session".to_string(),
        None if wm.get("slide").is_some() => "sliding".to_string(),
        None => "tumbling".to_string(),
    };
    let not_for = |key: &str, hint: &str, diags: &mut Diagnostics| {
        if let Some(n) = wm.get(key) {
            diags.push(r.error(Code::BadValue, n, format!("a {wtype} window has no `{key}`")).with_hint(hint));
        }
    };
    let max = |diags: &mut Diagnostics| -> Option<Millis> {
        let Some(n) = wm.get("max") else { return Some(DEFAULT_MAX_MS) };
        let ms = r.duration(n, "max", diags)?;
        if ms <= 0 {
            diags.push(r.error(Code::BadDuration, n, "`max` must be longer than zero"));
            return None;
        }
        Some(ms)
    };
    let before = diags.len();
    let shape = match wtype.as_str() {
        "tumbling" | "sliding" => {
            not_for("gap", "`gap` is for `type: session`", diags);
            not_for("max", "`max` is for session and count windows", diags);
            let size_ms = r.duration(wm.require("size", "`window`", r, diags)?, "size", diags)?;
            let slide_ms = match (wtype.as_str(), wm.get("slide")) {
                ("tumbling", Some(n)) => {
                    diags.push(
                        r.error(Code::BadValue, n, "a tumbling window has no `slide`")
                            .with_hint("remove `slide`, or use `type: sliding`"),
                    );
                    return None;
                }
                (_, Some(n)) => r.duration(n, "slide", diags)?,
                ("sliding", None) => {
                    diags.push(r.error_at(Code::MissingKey, wm.pos, 1, "a sliding window needs `slide`"));
                    return None;
                }
                (_, None) => size_ms,
            };
            if size_ms <= 0 || slide_ms <= 0 || size_ms % slide_ms != 0 {
                diags.push(
                    r.error(
                        Code::BadValue,
                        wnode,
                        format!("window size ({size_ms} ms) must be a positive multiple of its slide ({slide_ms} ms)"),
                    )
                    .with_hint("e.g. size: 10m, slide: 1m"),
                );
                return None;
            }
            WindowShape::Time { size_ms, slide_ms }
        }
        "session" => {
            not_for("size", "a session ends after `gap` without events (and at the latest after `max`)", diags);
            not_for("slide", "sessions do not slide", diags);
            let gap_node = wm.require("gap", "a session `window`", r, diags)?;
            let gap_ms = r.duration(gap_node, "gap", diags)?;
            if gap_ms <= 0 {
                diags.push(r.error(Code::BadDuration, gap_node, "`gap` must be longer than zero"));
                return None;
            }
            WindowShape::Session { gap_ms, max_ms: max(diags)? }
        }
        "count" => {
            not_for("gap", "`gap` is for `type: session`", diags);
            let events = |key: &str, n: &Node, diags: &mut Diagnostics| -> Option<u32> {
                match r.uint(n, key, diags)? {
                    v @ 1..=100_000 => Some(v as u32),
                    v => {
                        diags.push(
                            r.error(
                                Code::BadValue,
                                n,
                                format!("`{key}` must be between 1 and 100000 events, found {v}"),
                            )
                            .with_hint("a count window's `size` and `slide` are numbers of events, e.g. size: 5"),
                        );
                        None
                    }
                }
            };
            let size_node = wm.require("size", "a count `window`", r, diags)?;
            let size = events("size", size_node, diags)?;
            let slide = match wm.get("slide") {
                Some(n) => events("slide", n, diags)?,
                None => size,
            };
            if size % slide != 0 {
                diags.push(
                    r.error(
                        Code::BadValue,
                        wnode,
                        format!("window size ({size} events) must be a multiple of its slide ({slide} events)"),
                    )
                    .with_hint("e.g. size: 6, slide: 2"),
                );
                return None;
            }
            WindowShape::Count { size, slide, max_ms: max(diags)? }
        }
        other => {
            let n = wm.get("type").unwrap_or(wnode);
            let d = r.error(Code::BadValue, n, format!("unknown window type `{other}`"));
            diags.push(d.suggest(other, &["tumbling", "sliding", "session", "count"], "window types"));
            return None;
        }
    };
    (diags.len() == before).then_some(shape)
}

/// One parsed aggregate call: function name, arguments as SQL text, alias.
struct Call {
    name: String,
    args: Vec<String>,
    alias: Option<String>,
}

/// Parses `text` as a SQL select item that is a function call (or a bare `count`).
fn parse_call(text: &str) -> Result<Call, String> {
    let item = Parser::new(&GenericDialect {}).try_with_sql(text).and_then(|mut p| {
        let item = p.parse_select_item()?;
        p.expect_token(&Token::EOF)?;
        Ok(item)
    });
    let (expr, alias) = match item.map_err(|e| e.to_string())? {
        SelectItem::UnnamedExpr(e) => (e, None),
        SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value)),
        _ => return Err("an aggregate is a function call such as `avg(value)`".into()),
    };
    match expr {
        Expr::Identifier(ident) => Ok(Call { name: ident.value, args: Vec::new(), alias }),
        Expr::Function(f) => {
            let args = match f.args {
                FunctionArguments::None => Vec::new(),
                FunctionArguments::List(list) => list
                    .args
                    .into_iter()
                    .map(|a| match a {
                        FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => Ok("*".to_string()),
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e.to_string()),
                        other => Err(format!("unsupported argument `{other}`")),
                    })
                    .collect::<Result<_, _>>()?,
                FunctionArguments::Subquery(_) => return Err("an aggregate's argument cannot be a subquery".into()),
            };
            Ok(Call { name: f.name.to_string(), args, alias })
        }
        other => Err(format!("`{other}` is not a function call such as `avg(value)`")),
    }
}

/// Parses `count`, `avg(value)`, `max(level) as peak`, `percentile(value, 0.95)`,
/// `median(value)`, `count_if(value > 30)`.
fn parse_aggregate(
    text: &str,
    n: &Node,
    r: &Reader,
    def: &StreamDef,
    planner: &ExprPlanner,
    diags: &mut Diagnostics,
) -> Option<Aggregate> {
    let opens = text.matches('(').count();
    if opens > text.matches(')').count() {
        diags.push(r.error(Code::BadExpression, n, format!("aggregate `{text}` is missing `)`")).with_hint(
            "YAML splits a [flow, list] at every comma: quote an aggregate with one, e.g. \"percentile(value, 0.95)\"",
        ));
        return None;
    }
    let call = match parse_call(text) {
        Ok(c) => c,
        Err(e) => {
            diags.push(
                r.error(Code::BadExpression, n, format!("cannot read aggregate `{text}`: {e}"))
                    .with_hint("write `fn(field)` or `fn(field) as name`, e.g. `avg(value) as mean`"),
            );
            return None;
        }
    };
    let fname = call.name.as_str();
    let Some(func) = AggFunc::parse(fname) else {
        let d = r.error(Code::UnknownFunction, n, format!("unknown aggregate function `{fname}`"));
        diags.push(d.suggest(fname, &AggFunc::NAMES, "aggregates"));
        return None;
    };
    let args: Vec<&str> = call.args.iter().map(String::as_str).filter(|a| *a != "*").collect();
    let arity = match fname {
        "percentile" => 2,
        "count" => args.len().min(1),
        _ => 1,
    };
    if args.len() != arity {
        let example = match fname {
            "percentile" => "percentile(value, 0.95)".to_string(),
            "count_if" => "count_if(value > 30)".to_string(),
            _ => format!("{fname}(value)"),
        };
        let d = match args.len() {
            0 => r.error(Code::BadExpression, n, format!("`{fname}` needs a field, e.g. `{example}`")),
            found => r
                .error(
                    Code::BadExpression,
                    n,
                    format!("`{fname}` takes {arity} argument{}, found {found}", if arity == 1 { "" } else { "s" }),
                )
                .with_hint(format!("e.g. `{example}`")),
        };
        diags.push(d);
        return None;
    }
    let mut agg = Aggregate::new(func, None, String::new());
    let default_name = if func == AggFunc::CountIf {
        let schema = def.arrow_schema();
        let site = Site { reader: r, node: n, what: "count_if" };
        agg.filter =
            Some(planner.predicate(args[0], &schema, &format!("stream `{}`", def.name), site, diags)?.predicate);
        "count_if".to_string()
    } else if let Some(&a) = args.first() {
        agg.field = Some(aggregate_field(func, fname, a, text, n, r, def, diags)?);
        match fname {
            "percentile" => {
                agg.fraction = fraction(args[1], n, r, diags)?;
                let percent = (agg.fraction * 100_000.0).round() / 1000.0;
                format!("p{}_{a}", percent.to_string().replace('.', "_"))
            }
            "median" => {
                agg.fraction = 0.5;
                format!("median_{a}")
            }
            "count" => "count".to_string(),
            _ => format!("{fname}_{a}"),
        }
    } else {
        "count".to_string()
    };
    agg.name = call.alias.unwrap_or(default_name);
    Some(agg)
}

/// The column an aggregate reads, checked to be a number unless it only counts.
#[allow(clippy::too_many_arguments)]
fn aggregate_field(
    func: AggFunc,
    fname: &str,
    a: &str,
    text: &str,
    n: &Node,
    r: &Reader,
    def: &StreamDef,
    diags: &mut Diagnostics,
) -> Option<usize> {
    let Some(i) = def.field_index(a) else {
        let names: Vec<&str> = def.fields.iter().map(|f| f.name.as_str()).collect();
        let d = r.error(Code::UnknownField, n, format!("unknown field `{a}` in aggregate `{text}`"));
        diags.push(d.suggest(a, &names, "declared fields"));
        return None;
    };
    let numeric = matches!(def.fields[i].ty, FieldType::Int | FieldType::Float);
    if !numeric && !matches!(func, AggFunc::Count | AggFunc::CountDistinct) {
        diags.push(
            r.error(
                Code::TypeMismatch,
                n,
                format!("`{fname}({a})` needs a number, but `{a}` is {}", def.fields[i].ty.name()),
            )
            .with_hint("use count_distinct for strings"),
        );
        return None;
    }
    Some(i)
}

/// `percentile`'s second argument: a number in `[0, 1]`.
fn fraction(arg: &str, n: &Node, r: &Reader, diags: &mut Diagnostics) -> Option<f64> {
    match arg.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Some(f),
        _ => {
            diags.push(
                r.error(
                    Code::BadValue,
                    n,
                    format!("`percentile`'s fraction must be a number from 0 to 1, found `{arg}`"),
                )
                .with_hint("e.g. `percentile(value, 0.95)` for the 95th percentile"),
            );
            None
        }
    }
}
