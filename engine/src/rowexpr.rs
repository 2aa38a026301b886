//! Row expressions: conditions of a sequence step that compare the current event with the
//! events matched by earlier steps (`value < high.value * 0.8`).
//!
//! Conditions over the current event alone are DataFusion physical expressions evaluated
//! vectorized per batch. A condition that reads an earlier step depends on which partial
//! match the event is tried against, so it is evaluated per (event, partial match) pair,
//! over compact rows ([`crate::keys::compact_row_into`]) with this small interpreter: no
//! allocation, SQL's three-valued logic (a comparison with a null is null, and a null
//! condition does not match).

use std::cmp::Ordering;
use std::sync::Arc;

use crate::keys::{CellRef, compact_cell};

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// SQL `NULL`.
    Null,
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// Text.
    Str(Arc<str>),
}

/// Binary operators the interpreter knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `=`
    Eq,
    /// `<>`
    NotEq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
    /// `+`
    Plus,
    /// `-`
    Minus,
    /// `*`
    Multiply,
    /// `/`
    Divide,
    /// `%`
    Modulo,
    /// `AND`
    And,
    /// `OR`
    Or,
}

/// An expression over the current event (`step: None`) and earlier steps' events.
#[derive(Debug, Clone, PartialEq)]
pub enum RowExpr {
    /// A column of the current event, or of the last event matched by step `step`.
    Column {
        /// The step whose event is read; None for the event being tried.
        step: Option<usize>,
        /// Column index in that event's stream.
        column: usize,
    },
    /// A constant.
    Literal(Scalar),
    /// `left op right`.
    Binary(Box<RowExpr>, BinOp, Box<RowExpr>),
    /// `NOT e`.
    Not(Box<RowExpr>),
    /// `-e`.
    Negative(Box<RowExpr>),
    /// `e IS NULL` (`negated`: `IS NOT NULL`).
    IsNull(Box<RowExpr>, bool),
    /// `e [NOT] BETWEEN low AND high`.
    Between {
        /// Tested value.
        expr: Box<RowExpr>,
        /// Lower bound (inclusive).
        low: Box<RowExpr>,
        /// Upper bound (inclusive).
        high: Box<RowExpr>,
        /// `NOT BETWEEN`.
        negated: bool,
    },
    /// `e [NOT] IN (list)`.
    InList {
        /// Tested value.
        expr: Box<RowExpr>,
        /// Candidates.
        list: Vec<RowExpr>,
        /// `NOT IN`.
        negated: bool,
    },
}

/// A value during evaluation; text borrows from the rows or the expression.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// Null.
    Null,
    /// Integer (timestamps are epoch milliseconds).
    Int(i64),
    /// Float.
    Float(f64),
    /// Boolean.
    Bool(bool),
    /// Text.
    Str(&'a str),
}

impl<'a> From<CellRef<'a>> for Value<'a> {
    fn from(c: CellRef<'a>) -> Self {
        match c {
            CellRef::Str(s) => Value::Str(s),
            CellRef::Int(i) | CellRef::Time(i) => Value::Int(i),
            CellRef::Float(f) => Value::Float(f),
            CellRef::Bool(b) => Value::Bool(b),
        }
    }
}

/// The rows an expression reads: the current event and, per step, its last matched event
/// (compact rows; an empty slice for a step with no event).
pub trait RowSource<'a> {
    /// The compact row of the current event (`None`) or of step `step`'s event.
    fn row(&self, step: Option<usize>) -> &'a [u8];
}

impl RowExpr {
    /// True when the expression is true for these rows (null and false do not match).
    pub fn matches<'a>(&'a self, rows: &impl RowSource<'a>) -> bool {
        matches!(self.eval(rows), Value::Bool(true))
    }

    /// Evaluates the expression.
    pub fn eval<'a>(&'a self, rows: &impl RowSource<'a>) -> Value<'a> {
        match self {
            RowExpr::Column { step, column } => compact_cell(rows.row(*step), *column).map_or(Value::Null, Value::from),
            RowExpr::Literal(s) => match s {
                Scalar::Null => Value::Null,
                Scalar::Int(i) => Value::Int(*i),
                Scalar::Float(f) => Value::Float(*f),
                Scalar::Bool(b) => Value::Bool(*b),
                Scalar::Str(s) => Value::Str(s),
            },
            RowExpr::Binary(l, BinOp::And, r) => match l.eval(rows) {
                Value::Bool(false) => Value::Bool(false),
                lv => match (lv, r.eval(rows)) {
                    (_, Value::Bool(false)) => Value::Bool(false),
                    (Value::Bool(true), Value::Bool(true)) => Value::Bool(true),
                    _ => Value::Null,
                },
            },
            RowExpr::Binary(l, BinOp::Or, r) => match l.eval(rows) {
                Value::Bool(true) => Value::Bool(true),
                lv => match (lv, r.eval(rows)) {
                    (_, Value::Bool(true)) => Value::Bool(true),
                    (Value::Bool(false), Value::Bool(false)) => Value::Bool(false),
                    _ => Value::Null,
                },
            },
            RowExpr::Binary(l, op, r) => binary(l.eval(rows), *op, r.eval(rows)),
            RowExpr::Not(e) => match e.eval(rows) {
                Value::Bool(b) => Value::Bool(!b),
                _ => Value::Null,
            },
            RowExpr::Negative(e) => match e.eval(rows) {
                Value::Int(i) => i.checked_neg().map_or(Value::Null, Value::Int),
                Value::Float(f) => Value::Float(-f),
                _ => Value::Null,
            },
            RowExpr::IsNull(e, negated) => Value::Bool(matches!(e.eval(rows), Value::Null) != *negated),
            RowExpr::Between { expr, low, high, negated } => {
                let v = expr.eval(rows);
                let ge = binary(v, BinOp::GtEq, low.eval(rows));
                let le = binary(v, BinOp::LtEq, high.eval(rows));
                match (ge, le) {
                    (Value::Bool(a), Value::Bool(b)) => Value::Bool((a && b) != *negated),
                    (Value::Bool(false), _) | (_, Value::Bool(false)) => Value::Bool(*negated),
                    _ => Value::Null,
                }
            }
            RowExpr::InList { expr, list, negated } => {
                let v = expr.eval(rows);
                if v == Value::Null {
                    return Value::Null;
                }
                let mut saw_null = false;
                for item in list {
                    match binary(v, BinOp::Eq, item.eval(rows)) {
                        Value::Bool(true) => return Value::Bool(!*negated),
                        Value::Null => saw_null = true,
                        _ => {}
                    }
                }
                if saw_null { Value::Null } else { Value::Bool(*negated) }
            }
        }
    }

    /// Calls `f` for every column the expression reads.
    pub fn for_each_column(&self, f: &mut impl FnMut(Option<usize>, usize)) {
        match self {
            RowExpr::Column { step, column } => f(*step, *column),
            RowExpr::Literal(_) => {}
            RowExpr::Binary(l, _, r) => {
                l.for_each_column(f);
                r.for_each_column(f);
            }
            RowExpr::Not(e) | RowExpr::Negative(e) | RowExpr::IsNull(e, _) => e.for_each_column(f),
            RowExpr::Between { expr, low, high, .. } => {
                expr.for_each_column(f);
                low.for_each_column(f);
                high.for_each_column(f);
            }
            RowExpr::InList { expr, list, .. } => {
                expr.for_each_column(f);
                list.iter().for_each(|e| e.for_each_column(f));
            }
        }
    }
}

fn compare(l: Value<'_>, r: Value<'_>) -> Option<Ordering> {
    match (l, r) {
        (Value::Int(a), Value::Int(b)) => Some(a.cmp(&b)),
        (Value::Int(a), Value::Float(b)) => (a as f64).partial_cmp(&b),
        (Value::Float(a), Value::Int(b)) => a.partial_cmp(&(b as f64)),
        (Value::Float(a), Value::Float(b)) => a.partial_cmp(&b),
        (Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(&b)),
        _ => None,
    }
}

fn binary<'a>(l: Value<'a>, op: BinOp, r: Value<'a>) -> Value<'a> {
    if l == Value::Null || r == Value::Null {
        return Value::Null;
    }
    let cmp = |pred: fn(Ordering) -> bool| compare(l, r).map_or(Value::Null, |o| Value::Bool(pred(o)));
    match op {
        BinOp::Eq => cmp(|o| o == Ordering::Equal),
        BinOp::NotEq => cmp(|o| o != Ordering::Equal),
        BinOp::Lt => cmp(|o| o == Ordering::Less),
        BinOp::LtEq => cmp(|o| o != Ordering::Greater),
        BinOp::Gt => cmp(|o| o == Ordering::Greater),
        BinOp::GtEq => cmp(|o| o != Ordering::Less),
        BinOp::And | BinOp::Or => Value::Null,
        BinOp::Plus | BinOp::Minus | BinOp::Multiply | BinOp::Divide | BinOp::Modulo => arithmetic(l, op, r),
    }
}

fn arithmetic<'a>(l: Value<'a>, op: BinOp, r: Value<'a>) -> Value<'a> {
    match (l, r) {
        (Value::Int(a), Value::Int(b)) => {
            let v = match op {
                BinOp::Plus => a.checked_add(b),
                BinOp::Minus => a.checked_sub(b),
                BinOp::Multiply => a.checked_mul(b),
                BinOp::Divide => a.checked_div(b),
                _ => a.checked_rem(b),
            };
            v.map_or(Value::Null, Value::Int)
        }
        (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
            let as_f = |v: Value<'_>| match v {
                Value::Int(i) => i as f64,
                Value::Float(f) => f,
                _ => f64::NAN,
            };
            let (a, b) = (as_f(l), as_f(r));
            match op {
                BinOp::Plus => Value::Float(a + b),
                BinOp::Minus => Value::Float(a - b),
                BinOp::Multiply => Value::Float(a * b),
                BinOp::Divide if b == 0.0 => Value::Null,
                BinOp::Divide => Value::Float(a / b),
                _ if b == 0.0 => Value::Null,
                _ => Value::Float(a % b),
            }
        }
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rows<'a>(&'a [u8], &'a [u8]);
    impl<'a> RowSource<'a> for Rows<'a> {
        fn row(&self, step: Option<usize>) -> &'a [u8] {
            if step.is_none() { self.0 } else { self.1 }
        }
    }

    fn col(step: Option<usize>, column: usize) -> Box<RowExpr> {
        Box::new(RowExpr::Column { step, column })
    }
    fn lit(s: Scalar) -> Box<RowExpr> {
        Box::new(RowExpr::Literal(s))
    }

    fn row(cells: &[(usize, CellRef<'_>)]) -> Vec<u8> {
        crate::keys::compact_cells(cells)
    }

    #[test]
    fn compares_the_current_event_with_an_earlier_step() {
        let now = row(&[(0, CellRef::Float(70.0)), (1, CellRef::Str("pressure_kpa"))]);
        let high = row(&[(0, CellRef::Float(100.0))]);
        // value < high.value * 0.8
        let e = RowExpr::Binary(
            col(None, 0),
            BinOp::Lt,
            Box::new(RowExpr::Binary(col(Some(0), 0), BinOp::Multiply, lit(Scalar::Float(0.8)))),
        );
        assert!(e.matches(&Rows(&now, &high)));
        let not_low = row(&[(0, CellRef::Float(85.0))]);
        assert!(!e.matches(&Rows(&not_low, &high)));
        assert_eq!(e.eval(&Rows(&not_low, &high)), Value::Bool(false));
    }

    #[test]
    fn nulls_follow_three_valued_logic() {
        let empty = row(&[]);
        let v = row(&[(0, CellRef::Int(3))]);
        let missing_gt = RowExpr::Binary(col(None, 1), BinOp::Gt, lit(Scalar::Int(1)));
        assert_eq!(missing_gt.eval(&Rows(&v, &empty)), Value::Null);
        assert!(!missing_gt.matches(&Rows(&v, &empty)));
        // NULL OR true is true; NULL AND false is false; NOT NULL is NULL.
        let t = RowExpr::Binary(col(None, 0), BinOp::Eq, lit(Scalar::Int(3)));
        let or = RowExpr::Binary(Box::new(missing_gt.clone()), BinOp::Or, Box::new(t.clone()));
        assert!(or.matches(&Rows(&v, &empty)));
        let f = RowExpr::Not(Box::new(t));
        let and = RowExpr::Binary(Box::new(missing_gt.clone()), BinOp::And, Box::new(f));
        assert_eq!(and.eval(&Rows(&v, &empty)), Value::Bool(false));
        assert_eq!(RowExpr::Not(Box::new(missing_gt.clone())).eval(&Rows(&v, &empty)), Value::Null);
        assert!(RowExpr::IsNull(col(Some(0), 0), false).matches(&Rows(&v, &empty)));
        assert!(RowExpr::IsNull(col(None, 0), true).matches(&Rows(&v, &empty)));
    }

    #[test]
    fn between_in_and_arithmetic_edge_cases() {
        let v = row(&[(0, CellRef::Int(5)), (1, CellRef::Str("b"))]);
        let empty = row(&[]);
        let rows = Rows(&v, &empty);
        let between = RowExpr::Between {
            expr: col(None, 0),
            low: lit(Scalar::Int(5)),
            high: lit(Scalar::Float(5.5)),
            negated: false,
        };
        assert!(between.matches(&rows));
        let list = vec![RowExpr::Literal(Scalar::Str("a".into())), RowExpr::Literal(Scalar::Str("b".into()))];
        assert!(RowExpr::InList { expr: col(None, 1), list: list.clone(), negated: false }.matches(&rows));
        assert!(!RowExpr::InList { expr: col(None, 1), list, negated: true }.matches(&rows));
        // Division by zero and overflow are null, not a panic.
        let div = RowExpr::Binary(col(None, 0), BinOp::Divide, lit(Scalar::Int(0)));
        assert_eq!(div.eval(&rows), Value::Null);
        let over = RowExpr::Binary(lit(Scalar::Int(i64::MAX)), BinOp::Plus, lit(Scalar::Int(1)));
        assert_eq!(over.eval(&rows), Value::Null);
        assert_eq!(
            RowExpr::Binary(col(None, 0), BinOp::Divide, lit(Scalar::Int(2))).eval(&rows),
            Value::Int(2),
            "integer division truncates, as in SQL"
        );
    }
}
