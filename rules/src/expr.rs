//! SQL expressions: planned once with DataFusion against an Arrow schema.
//!
//! Problems become located diagnostics: an unknown field points at the identifier inside
//! the expression and suggests the closest declared field; comparing a string with a
//! number is a type mismatch (DataFusion would silently cast); unknown functions and SQL
//! syntax errors carry DataFusion's explanation.

use std::collections::BTreeSet;

use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, Operator};
use datafusion::prelude::SessionContext;
use gridwatch_engine::plan::Predicate;

use crate::diagnostic::{Code, Diagnostic, Diagnostics, Pos};
use crate::yaml::{Node, Reader};

/// Plans expressions; holds one DataFusion session for all of them.
pub struct ExprPlanner {
    ctx: SessionContext,
}

impl Default for ExprPlanner {
    fn default() -> Self {
        ExprPlanner { ctx: SessionContext::new() }
    }
}

impl std::fmt::Debug for ExprPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExprPlanner")
    }
}

/// Where an expression was written: its file, its YAML node and its key (`where`, …).
#[derive(Debug, Clone, Copy)]
pub struct Site<'a> {
    /// The file.
    pub reader: &'a Reader,
    /// The expression's YAML value.
    pub node: &'a Node,
    /// The key it was written under.
    pub what: &'a str,
}

/// A planned boolean expression and the columns it reads.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The predicate.
    pub predicate: Predicate,
    /// Indexes of the schema columns the expression references.
    pub columns: Vec<usize>,
}

impl ExprPlanner {
    /// Plans `sql` (found at `node`, named `what` in messages) as a boolean predicate over
    /// `schema`. `schema_name` names the schema's owner in messages ("stream `sensor`").
    pub fn predicate(
        &self,
        sql: &str,
        schema: &SchemaRef,
        schema_name: &str,
        site: Site<'_>,
        diags: &mut Diagnostics,
    ) -> Option<Planned> {
        let Site { reader, node, what } = site;
        let locate = |needle: &str| locate_in(reader, node, sql, needle);
        let df_schema = match DFSchema::try_from(schema.as_ref().clone()) {
            Ok(s) => s,
            Err(e) => {
                diags.push(reader.error(Code::BadExpression, node, format!("`{what}`: {e}")));
                return None;
            }
        };
        let field_names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let expr = match self.ctx.parse_sql_expr(sql, &df_schema) {
            Ok(e) => e,
            Err(e) => {
                diags.push(classify_error(&e.to_string(), sql, what, schema_name, &field_names, reader, node, &locate));
                return None;
            }
        };
        let mut columns = BTreeSet::new();
        for c in expr.column_refs() {
            match schema.index_of(&c.name) {
                Ok(i) => {
                    columns.insert(i);
                }
                Err(_) => {
                    diags.push(unknown_field(&c.name, what, schema_name, &field_names, &locate));
                    return None;
                }
            }
        }
        let before = diags.len();
        check_types(&expr, &df_schema, what, &locate, diags);
        if diags.len() > before {
            return None;
        }
        let physical = match self.ctx.create_physical_expr(expr, &df_schema) {
            Ok(p) => p,
            Err(e) => {
                diags.push(classify_error(&e.to_string(), sql, what, schema_name, &field_names, reader, node, &locate));
                return None;
            }
        };
        match physical.data_type(schema) {
            Ok(DataType::Boolean) => {}
            Ok(other) => {
                diags.push(
                    reader
                        .error(
                            Code::TypeMismatch,
                            node,
                            format!("`{what}` must be a boolean expression, but `{sql}` is {other}"),
                        )
                        .with_hint("compare it with something, e.g. `value > 25`"),
                );
                return None;
            }
            Err(e) => {
                diags.push(reader.error(Code::BadExpression, node, format!("`{what}`: {e}")));
                return None;
            }
        }
        Some(Planned {
            predicate: Predicate { sql: sql.to_string(), expr: physical },
            columns: columns.into_iter().collect(),
        })
    }
}

impl ExprPlanner {
    /// The logical expression of `sql` over `schema` (already validated by
    /// [`ExprPlanner::predicate`]), for callers that split it before planning parts of it.
    pub fn logical(&self, sql: &str, schema: &SchemaRef) -> Option<Expr> {
        let df_schema = DFSchema::try_from(schema.as_ref().clone()).ok()?;
        self.ctx.parse_sql_expr(sql, &df_schema).ok()
    }

    /// Plans a logical expression over `schema` as a predicate labelled `sql`.
    pub fn physical(&self, expr: Expr, sql: String, schema: &SchemaRef) -> Option<Predicate> {
        let df_schema = DFSchema::try_from(schema.as_ref().clone()).ok()?;
        let expr = self.ctx.create_physical_expr(expr, &df_schema).ok()?;
        Some(Predicate { sql, expr })
    }
}

type Locate<'a> = dyn Fn(&str) -> Diagnostic + 'a;

/// A diagnostic pointing at `needle` inside the expression if it can be found on the same
/// line, else at the whole expression.
pub(crate) fn locate_in(reader: &Reader, node: &Node, sql: &str, needle: &str) -> Diagnostic {
    let offset = find_word(sql, needle);
    match offset {
        Some(off)
            if !sql[..off].contains('\n') && reader.source.line(node.pos.line).is_some_and(|l| l.contains(sql)) =>
        {
            let col = node.pos.col + u32::from(reader.is_quoted(node)) + sql[..off].chars().count() as u32;
            reader.error_at(Code::BadExpression, Pos { line: node.pos.line, col }, needle.chars().count() as u32, "")
        }
        _ => reader.error(Code::BadExpression, node, ""),
    }
}

fn find_word(haystack: &str, word: &str) -> Option<usize> {
    if word.is_empty() {
        return None;
    }
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(i) = haystack[from..].find(word) {
        let start = from + i;
        let end = start + word.len();
        let before_ok = haystack[..start].chars().next_back().is_none_or(|c| !is_ident(c));
        let after_ok = haystack[end..].chars().next().is_none_or(|c| !is_ident(c));
        if before_ok && after_ok {
            return Some(start);
        }
        from = end;
    }
    None
}

fn unknown_field(name: &str, what: &str, schema_name: &str, fields: &[&str], locate: &Locate<'_>) -> Diagnostic {
    let mut d = locate(name);
    d.code = Code::UnknownField;
    d.message = format!("unknown field `{name}` in `{what}`: {schema_name} has no such field");
    d.suggest(name, fields, "declared fields")
}

#[allow(clippy::too_many_arguments)]
fn classify_error(
    msg: &str,
    sql: &str,
    what: &str,
    schema_name: &str,
    fields: &[&str],
    reader: &Reader,
    node: &Node,
    locate: &Locate<'_>,
) -> Diagnostic {
    if let Some(name) = between(msg, "No field named ", ".") {
        let name = name.trim_matches(|c| c == '"' || c == '`' || c == '\'');
        let name = name.rsplit('.').next().unwrap_or(name);
        return unknown_field(name, what, schema_name, fields, locate);
    }
    if let Some(rest) = msg.split("Invalid function ").nth(1) {
        let name = rest.split(['\'', '"']).nth(1).unwrap_or(rest).to_string();
        let mut d = locate(&name);
        d.code = Code::UnknownFunction;
        d.message = format!("unknown function `{name}` in `{what}`");
        let hint = between(msg, "Did you mean '", "'")
            .map(|s| format!("did you mean `{s}`?"))
            .unwrap_or_else(|| "see the DataFusion scalar function list".into());
        return d.with_hint(hint);
    }
    let first = msg.lines().next().unwrap_or(msg).trim();
    let first = first.strip_prefix("SQL error: ").unwrap_or(first);
    // sqlparser reports `ParserError("Expected: …, found: = at Line: 1, Column: 9")`.
    let inner = first.strip_prefix("ParserError(\"").and_then(|s| s.strip_suffix("\")")).unwrap_or(first);
    let (text, column) = match inner.rsplit_once(" at Line: ") {
        Some((text, at)) => (text, at.split("Column: ").nth(1).and_then(|c| c.trim().parse::<u32>().ok())),
        None => (inner, None),
    };
    let single_line = !sql.contains('\n') && reader.source.line(node.pos.line).is_some_and(|l| l.contains(sql));
    let diag = match column {
        Some(c) if single_line => {
            let col = node.pos.col + u32::from(reader.is_quoted(node)) + c.saturating_sub(1);
            reader.error_at(Code::BadExpression, Pos { line: node.pos.line, col }, 1, "")
        }
        _ => reader.error(Code::BadExpression, node, ""),
    };
    Diagnostic { message: format!("invalid expression in `{what}`: {text}"), ..diag }.with_hint(format!(
        "`{what}` is a SQL boolean expression such as `metric = 'ch4_lel' AND value > 25` (got `{sql}`)"
    ))
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let rest = &s[i..];
    let j = rest.find(end).unwrap_or(rest.len());
    Some(&rest[..j])
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_numeric(t: &DataType) -> bool {
    t.is_numeric()
}

/// Reports comparisons and arithmetic between strings and numbers or booleans.
fn check_types(expr: &Expr, schema: &DFSchema, what: &str, locate: &Locate<'_>, diags: &mut Diagnostics) {
    let _ = expr.apply(|e| {
        if let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e
            && matches!(
                op,
                Operator::Eq
                    | Operator::NotEq
                    | Operator::Lt
                    | Operator::LtEq
                    | Operator::Gt
                    | Operator::GtEq
                    | Operator::Plus
                    | Operator::Minus
                    | Operator::Multiply
                    | Operator::Divide
            )
            && let (Ok(lt), Ok(rt)) = (left.get_type(schema), right.get_type(schema))
        {
            let mismatch = (is_string(&lt) && (is_numeric(&rt) || rt == DataType::Boolean))
                || (is_string(&rt) && (is_numeric(&lt) || lt == DataType::Boolean));
            if mismatch {
                let (l, r) = (render(left), render(right));
                let mut d = locate(&l);
                d.code = Code::TypeMismatch;
                d.message =
                    format!("type mismatch in `{what}`: `{l}` is {} but `{r}` is {}", describe(&lt), describe(&rt));
                let hint = if is_string(&lt) {
                    format!("quote the value: {l} {op} '{}'", r.trim_matches('\''))
                } else {
                    "compare values of the same type".to_string()
                };
                diags.push(d.with_hint(hint));
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
}

fn render(e: &Expr) -> String {
    match e {
        Expr::Column(c) => c.name.clone(),
        Expr::Literal(v, _) => v.to_string(),
        other => other.to_string(),
    }
}

fn describe(t: &DataType) -> &'static str {
    if is_string(t) {
        "a string"
    } else if is_numeric(t) {
        "a number"
    } else if *t == DataType::Boolean {
        "a boolean"
    } else {
        "another type"
    }
}
