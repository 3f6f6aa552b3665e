//! Compiled conditions and their evaluation over one flattened record. Everything that does
//! not depend on the record is settled at compile time: literals are trimmed, split at commas
//! and parsed as numbers once; `in`/`pmatch` lists are expanded into their parts. Evaluating
//! allocates only for `icontains` and for numbers compared as text.

use std::borrow::Cow;

use crate::attrs::{Attr, Operand, Value};

/// What a compiled condition reads from a record.
pub trait Fields {
    fn value(&self, attr: Attr) -> Value<'_>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrOp {
    Eq,
    Contains,
    IContains,
    StartsWith,
    EndsWith,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntOp {
    Lt,
    Le,
    Gt,
    Ge,
}

/// `in` folds `=`, `pmatch` folds `contains` (a substring, not a path prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FoldOp {
    Eq,
    Contains,
}

#[derive(Clone, Debug)]
pub enum Expr {
    Const(bool),
    Not(Box<Expr>),
    All(Vec<Expr>),
    Any(Vec<Expr>),
    Exists(Operand),
    Str {
        op: StrOp,
        left: Operand,
        right: Operand,
    },
    Int {
        op: IntOp,
        left: Operand,
        right: Operand,
    },
    Fold {
        left: Operand,
        op: FoldOp,
        /// Every item's comma-separated parts.
        parts: Vec<String>,
    },
}

impl Expr {
    pub fn negate(e: Expr) -> Expr {
        Expr::Not(Box::new(e))
    }

    pub fn str(op: StrOp, left: Operand, right: Operand) -> Expr {
        Expr::Str { op, left, right }
    }

    pub fn int(op: IntOp, left: Operand, right: Operand) -> Expr {
        Expr::Int { op, left, right }
    }

    pub fn fold(left: Operand, op: FoldOp, items: &[String]) -> Expr {
        let parts = items
            .iter()
            .flat_map(|i| i.split(','))
            .map(str::to_string)
            .collect();
        Expr::Fold { left, op, parts }
    }

    /// Whether the record satisfies the condition (left to right, short-circuiting).
    pub fn eval(&self, r: &impl Fields) -> bool {
        match self {
            Expr::Const(b) => *b,
            Expr::Not(e) => !e.eval(r),
            Expr::All(all) => all.iter().all(|e| e.eval(r)),
            Expr::Any(any) => any.iter().any(|e| e.eval(r)),
            Expr::Exists(o) => exists(o, r),
            Expr::Str { op, left, right } => {
                let (l, rv) = (text(left, r), text(right, r));
                any_pair(&l, &rv, *op)
            }
            Expr::Int { op, left, right } => {
                let (l, rv) = (int(left, r), int(right, r));
                match op {
                    IntOp::Lt => l < rv,
                    IntOp::Le => l <= rv,
                    IntOp::Gt => l > rv,
                    IntOp::Ge => l >= rv,
                }
            }
            Expr::Fold { left, op, parts } => {
                let l = text(left, r);
                let op = match op {
                    FoldOp::Eq => StrOp::Eq,
                    FoldOp::Contains => StrOp::Contains,
                };
                l.split(',')
                    .any(|lp| parts.iter().any(|p| str_op(op, lp, p)))
            }
        }
    }
}

fn any_pair(l: &str, r: &str, op: StrOp) -> bool {
    l.split(',')
        .any(|lp| r.split(',').any(|rp| str_op(op, lp, rp)))
}

fn str_op(op: StrOp, l: &str, r: &str) -> bool {
    match op {
        StrOp::Eq => l == r,
        StrOp::Contains => l.contains(r),
        StrOp::IContains => l.to_lowercase().contains(&r.to_lowercase()),
        StrOp::StartsWith => l.starts_with(r),
        StrOp::EndsWith => l.ends_with(r),
    }
}

/// sf-processor's `MapStr`: strings trimmed of bounding quotes, numbers in decimal, booleans
/// as `true`/`false`; `attr[path]` reads a JSON path of the attribute's text.
pub fn text<'r>(o: &'r Operand, r: &'r impl Fields) -> Cow<'r, str> {
    match o {
        Operand::Literal(l) => Cow::Borrowed(&l.text),
        Operand::Attr(a) => r.value(*a).into_text(*a),
        Operand::Path(a, path) => match r.value(*a) {
            Value::Str(s) if !s.is_empty() && !path.is_empty() => {
                Cow::Owned(crate::attrs::json_path(&s, path))
            }
            v => v.into_text(*a),
        },
    }
}

/// sf-processor's `MapInt`: an attribute holding a 64-bit integer gives it; anything else
/// parses the operand's own text, or is 0.
fn int(o: &Operand, r: &impl Fields) -> i64 {
    match o {
        Operand::Literal(l) => l.int,
        Operand::Attr(a) => match r.value(*a) {
            Value::Int(v) => v,
            _ => 0,
        },
        Operand::Path(..) => 0,
    }
}

/// sf-processor's `exists`: the value is not its type's zero (so uid 0 does not exist).
fn exists(o: &Operand, r: &impl Fields) -> bool {
    match o {
        Operand::Literal(l) => !l.raw.is_empty(),
        // `attr[path]` is not a registered name: a literal, never empty.
        Operand::Path(..) => true,
        Operand::Attr(a) => match r.value(*a) {
            Value::Str(s) => !s.is_empty(),
            Value::Int(v) => v != 0,
            Value::Int32(v) => v != 0,
            Value::Bool(b) | Value::Opaque(b) => b,
        },
    }
}
