//! Compiled conditions and their evaluation over one flattened record. Everything that does
//! not depend on the record is settled at compile time: literals are trimmed, split at commas
//! and parsed as numbers once; `in`/`pmatch` lists are expanded into their parts. Evaluating
//! allocates only for `icontains` and for numbers compared as text.

use std::borrow::Cow;

use foldhash::HashSet;

use crate::{
    attrs::{Attr, Operand, Scope, Value},
    golang,
};

/// What a compiled condition reads from a record.
pub trait Fields {
    fn value(&self, attr: Attr) -> Value<'_>;
    /// The raw operation flags and whether the record is a network flow (whose bits 8 and 9
    /// are named RECV and SEND); None for a record without operation flags.
    fn op_flags(&self) -> Option<(i32, bool)>;
    /// The open flags slot (a network flow's source address).
    fn open_flags(&self) -> i64;
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
    /// `in`: is any comma-separated part of the value one of `parts`.
    In {
        left: Operand,
        parts: HashSet<String>,
    },
    /// `pmatch`: does any part of the value contain one of `parts`.
    PMatch {
        left: Operand,
        parts: Vec<String>,
    },
    /// A term several rules share (through a macro): evaluated at most once per record, its
    /// result kept in slot `id` of the record's memo.
    Shared {
        id: u32,
        term: Box<Expr>,
    },
    /// `sf.opflags in (...)` (or `= ...`) as a bit test: true when the flags have a named bit
    /// whose name is listed (`masks` for other records and for network flows), or none and ""
    /// is listed (`none`). The same answer as splitting the comma-joined names, without them.
    OpFlagsAny {
        masks: [i32; 2],
        none: bool,
    },
    /// `sf.file.openflags in (...)` (or `= ...`) as a bit test: true when all bits of one of
    /// the listed names' `masks` are set, when the flags are 0 and NONE is listed (`zero`), or
    /// when they are not 0 but name nothing and "" is listed (`unnamed`).
    OpenFlagsAny {
        masks: Vec<i64>,
        zero: bool,
        unnamed: bool,
    },
    /// A term that reads only the record's process snapshot or only its file (`scope`):
    /// evaluated at most once per snapshot or file, its result kept in slot `id` of that
    /// entity's memo.
    Memoized {
        scope: Scope,
        id: u32,
        term: Box<Expr>,
    },
}

/// Results of terms already evaluated, one byte per slot (0: not yet, 1: false, 2: true):
/// for this record ([`Expr::Shared`]), its process snapshot and its file ([`Expr::Memoized`]).
/// A term whose slot is missing is evaluated.
#[derive(Debug, Default)]
pub struct Memo<'a> {
    pub record: &'a mut [u8],
    pub process: &'a mut [u8],
    pub file: &'a mut [u8],
}

impl Memo<'_> {
    fn slots(&mut self, scope: Scope) -> &mut [u8] {
        match scope {
            Scope::Process => self.process,
            Scope::File => self.file,
            Scope::Record => self.record,
        }
    }
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
        let parts = items.iter().flat_map(|i| i.split(',')).map(str::to_string);
        match op {
            FoldOp::Eq => Expr::In {
                left,
                parts: parts.collect::<HashSet<String>>(),
            },
            FoldOp::Contains => Expr::PMatch {
                left,
                parts: parts.collect(),
            },
        }
    }

    /// The same condition, cheaper to evaluate: nested conjunctions and disjunctions flattened,
    /// constants folded, and the cheapest terms of each evaluated first. Terms have no side
    /// effects, so their order does not change the result.
    pub fn optimized(self) -> Expr {
        match self {
            Expr::Not(inner) => match inner.optimized() {
                Expr::Const(b) => Expr::Const(!b),
                Expr::Not(e) => *e,
                e => Expr::Not(Box::new(e)),
            },
            Expr::All(all) => Self::junction(all, true),
            Expr::Any(any) => Self::junction(any, false),
            other => other,
        }
    }

    /// `all`: a conjunction, else a disjunction.
    fn junction(terms: Vec<Expr>, all: bool) -> Expr {
        let mut flat = Vec::with_capacity(terms.len());
        for term in terms {
            match (term.optimized(), all) {
                (Expr::All(inner), true) | (Expr::Any(inner), false) => flat.extend(inner),
                // A neutral constant changes nothing; an absorbing one decides.
                (Expr::Const(b), _) if b == all => {}
                (Expr::Const(b), _) => return Expr::Const(b),
                (e, _) => flat.push(e),
            }
        }
        let mut flat = Self::merge_value_tests(flat, all);
        flat.sort_by_key(Expr::cost);
        match (flat.len(), all) {
            (0, _) => Expr::Const(all),
            (1, _) => flat.remove(0),
            (_, true) => Expr::All(flat),
            (_, false) => Expr::Any(flat),
        }
    }

    /// `x = a or x = b or x in (c, d)` is `x in (a, b, c, d)`, one lookup instead of several
    /// comparisons; in a conjunction, `not x = a and not x in (b)` is likewise
    /// `not x in (a, b)`. Both keep sf-processor's meaning: true when any comma-separated part
    /// of the value is one of the values.
    fn merge_value_tests(terms: Vec<Expr>, all: bool) -> Vec<Expr> {
        fn values(term: &Expr) -> Option<(Attr, Vec<String>)> {
            match term {
                Expr::In {
                    left: Operand::Attr(a),
                    parts,
                } => Some((*a, parts.iter().cloned().collect())),
                Expr::Str {
                    op: StrOp::Eq,
                    left: Operand::Attr(a),
                    right: Operand::Literal(lit),
                } => Some((*a, lit.parts.clone())),
                _ => None,
            }
        }
        let mut merged: Vec<(Attr, HashSet<String>)> = Vec::new();
        let mut rest = Vec::with_capacity(terms.len());
        for term in terms {
            let tested = match (&term, all) {
                (Expr::Not(inner), true) => values(inner),
                (t, false) => values(t),
                _ => None,
            };
            match tested {
                Some((attr, parts)) => match merged.iter_mut().find(|(a, _)| *a == attr) {
                    Some((_, set)) => set.extend(parts),
                    None => merged.push((attr, parts.into_iter().collect())),
                },
                None => rest.push(term),
            }
        }
        for (attr, parts) in merged {
            let test = Expr::In {
                left: Operand::Attr(attr),
                parts,
            };
            rest.push(if all { Expr::Not(Box::new(test)) } else { test });
        }
        rest
    }

    /// What the condition is for a record of type `code`, when the type alone decides it
    /// (three-valued: None when it depends on more than the type).
    pub fn given_type(&self, code: &str) -> Option<bool> {
        let is_type = |o: &Operand| matches!(o, Operand::Attr(Attr::Type));
        match self {
            Expr::Const(b) => Some(*b),
            Expr::Not(e) => e.given_type(code).map(|b| !b),
            Expr::All(all) => {
                let mut known = Some(true);
                for e in all {
                    match e.given_type(code) {
                        Some(false) => return Some(false),
                        Some(true) => {}
                        None => known = None,
                    }
                }
                known
            }
            Expr::Any(any) => {
                let mut known = Some(false);
                for e in any {
                    match e.given_type(code) {
                        Some(true) => return Some(true),
                        Some(false) => {}
                        None => known = None,
                    }
                }
                known
            }
            Expr::Str {
                op,
                left,
                right: Operand::Literal(lit),
            } if is_type(left) => Some(lit.parts.iter().any(|p| str_op(*op, code, p))),
            Expr::Str {
                op,
                left: Operand::Literal(lit),
                right,
            } if is_type(right) => Some(lit.parts.iter().any(|p| str_op(*op, p, code))),
            Expr::In { left, parts } if is_type(left) => Some(parts.contains(code)),
            Expr::PMatch { left, parts } if is_type(left) => {
                Some(parts.iter().any(|p| code.contains(p.as_str())))
            }
            Expr::Exists(o) if is_type(o) => Some(true),
            Expr::Shared { term, .. } | Expr::Memoized { term, .. } => term.given_type(code),
            _ => None,
        }
    }

    /// A rough relative cost of evaluating the term.
    fn cost(&self) -> u64 {
        let operand = |o: &Operand| match o {
            Operand::Literal(_) => 0,
            Operand::Attr(a) if a.always_int64() => 1,
            Operand::Attr(Attr::Type) => 1,
            Operand::Attr(_) => 4,
            Operand::Path(..) => 50,
        };
        match self {
            Expr::Const(_) => 0,
            Expr::Exists(o) => 1 + operand(o),
            Expr::Int { left, right, .. } => 1 + operand(left) + operand(right),
            Expr::Str { op, left, right } => {
                let base = if *op == StrOp::IContains { 20 } else { 2 };
                base + operand(left) + operand(right)
            }
            Expr::In { left, .. } => 3 + operand(left),
            Expr::OpFlagsAny { .. } | Expr::OpenFlagsAny { .. } => 1,
            Expr::PMatch { left, parts } => 2 + operand(left) + parts.len() as u64,
            // An exclusion ("and not x in (...)") rarely decides: test it after the rest.
            Expr::Not(e) => e.cost() + 16,
            Expr::All(terms) | Expr::Any(terms) => terms.iter().map(Expr::cost).sum(),
            Expr::Shared { term, .. } => term.cost(),
            // Evaluated for an entity's first record only: after that, a memo lookup.
            Expr::Memoized { .. } => 1,
        }
    }

    /// A text that identifies the term's meaning (equal for the same term written twice).
    fn key(&self) -> String {
        match self {
            Expr::In { left, parts } => {
                let mut p: Vec<&str> = parts.iter().map(String::as_str).collect();
                p.sort_unstable();
                format!("In({left:?},{p:?})")
            }
            Expr::Not(e) => format!("Not({})", e.key()),
            Expr::All(t) => format!(
                "All({})",
                t.iter().map(Expr::key).collect::<Vec<_>>().join(";")
            ),
            Expr::Any(t) => format!(
                "Any({})",
                t.iter().map(Expr::key).collect::<Vec<_>>().join(";")
            ),
            Expr::Shared { term, .. } | Expr::Memoized { term, .. } => term.key(),
            other => format!("{other:?}"),
        }
    }

    /// Wraps the terms that occur more than once among `exprs` (rules and filters) as
    /// [`Expr::Shared`], so a record evaluates each once; returns the number of shared terms.
    pub fn share_common_terms(exprs: &mut [&mut Expr]) -> usize {
        fn count(e: &Expr, seen: &mut std::collections::HashMap<String, u32>) {
            // A memoized term is already evaluated once (per entity, not per record).
            if matches!(e, Expr::Const(_) | Expr::Memoized { .. }) {
                return;
            }
            *seen.entry(e.key()).or_default() += 1;
            match e {
                Expr::Not(inner) => count(inner, seen),
                Expr::All(t) | Expr::Any(t) => t.iter().for_each(|e| count(e, seen)),
                _ => {}
            }
        }
        fn wrap(
            e: &mut Expr,
            seen: &std::collections::HashMap<String, u32>,
            ids: &mut std::collections::HashMap<String, u32>,
        ) {
            let key = e.key();
            if !matches!(e, Expr::Const(_)) && seen.get(&key).is_some_and(|&n| n > 1) {
                let next = ids.len() as u32;
                let id = *ids.entry(key).or_insert(next);
                let term = std::mem::replace(e, Expr::Const(false));
                *e = Expr::Shared {
                    id,
                    term: Box::new(term),
                };
                return;
            }
            match e {
                Expr::Not(inner) => wrap(inner, seen, ids),
                Expr::All(t) | Expr::Any(t) => t.iter_mut().for_each(|e| wrap(e, seen, ids)),
                _ => {}
            }
        }
        let mut seen = std::collections::HashMap::new();
        for e in exprs.iter() {
            count(e, &mut seen);
        }
        let mut ids = std::collections::HashMap::new();
        for e in exprs.iter_mut() {
            wrap(e, &seen, &mut ids);
        }
        ids.len()
    }

    /// Flag tests as bit tests ([`Expr::OpFlagsAny`], [`Expr::OpenFlagsAny`]), everywhere in
    /// the condition.
    pub fn test_flags_as_bits(&mut self) {
        let listed = match self {
            Expr::In {
                left: Operand::Attr(a @ (Attr::OpFlags | Attr::FileOpenFlags)),
                parts,
            } => Some((*a, parts.iter().map(String::as_str).collect::<Vec<_>>())),
            Expr::Str {
                op: StrOp::Eq,
                left: Operand::Attr(a @ (Attr::OpFlags | Attr::FileOpenFlags)),
                right: Operand::Literal(lit),
            } => Some((*a, lit.parts.iter().map(String::as_str).collect())),
            _ => None,
        };
        match listed {
            Some((Attr::OpFlags, listed)) => {
                let mask = |network| {
                    golang::op_flag_names_by_bit(network)
                        .filter(|(_, name)| listed.contains(name))
                        .fold(0, |mask, (bit, _)| mask | bit)
                };
                *self = Expr::OpFlagsAny {
                    masks: [mask(false), mask(true)],
                    none: listed.contains(&""),
                };
            }
            Some((_, listed)) => {
                *self = Expr::OpenFlagsAny {
                    masks: golang::OPEN_FLAG_NAMES
                        .iter()
                        .filter(|(_, name)| listed.contains(name))
                        .map(|&(mask, _)| mask)
                        .collect(),
                    zero: listed.contains(&"NONE"),
                    unnamed: listed.contains(&""),
                };
            }
            None => match self {
                Expr::Not(e) => e.test_flags_as_bits(),
                Expr::All(t) | Expr::Any(t) => t.iter_mut().for_each(Expr::test_flags_as_bits),
                Expr::Shared { term, .. } | Expr::Memoized { term, .. } => {
                    term.test_flags_as_bits()
                }
                _ => {}
            },
        }
    }

    /// What the term reads: None when no attribute (constants and literals only).
    fn scope(&self) -> Option<Scope> {
        fn join(a: Option<Scope>, b: Option<Scope>) -> Option<Scope> {
            match (a, b) {
                (None, s) | (s, None) => s,
                (Some(a), Some(b)) if a == b => Some(a),
                _ => Some(Scope::Record),
            }
        }
        let operand = |o: &Operand| match o {
            Operand::Literal(_) => None,
            Operand::Attr(a) | Operand::Path(a, _) => Some(a.scope()),
        };
        match self {
            Expr::Const(_) => None,
            Expr::Not(e) => e.scope(),
            Expr::All(t) | Expr::Any(t) => t.iter().map(Expr::scope).fold(None, join),
            Expr::Exists(o) | Expr::In { left: o, .. } | Expr::PMatch { left: o, .. } => operand(o),
            Expr::Str { left, right, .. } | Expr::Int { left, right, .. } => {
                join(operand(left), operand(right))
            }
            Expr::OpFlagsAny { .. } | Expr::OpenFlagsAny { .. } => Some(Scope::Record),
            Expr::Shared { term, .. } | Expr::Memoized { term, .. } => term.scope(),
        }
    }

    /// Whether the term's result is settled by the record's process snapshot, its file, its
    /// type and its operation and open flags: it reads nothing else of the record (counters,
    /// times, addresses, the new file of a file event). Two records alike in those get the
    /// same result. `new_file`: whether the records have a new file (only file events do:
    /// for the others, its attributes read nothing).
    pub fn settled_by_key(&self, new_file: bool) -> bool {
        let operand = |o: &Operand| match o {
            Operand::Literal(_) => true,
            Operand::Attr(a) | Operand::Path(a, _) => {
                a.scope() != Scope::Record
                    || matches!(
                        a,
                        Attr::Type
                            | Attr::OpFlags
                            | Attr::FileOpenFlags
                            | Attr::FileIsOpenRead
                            | Attr::FileIsOpenWrite
                    )
                    || (!new_file
                        && matches!(
                            a,
                            Attr::FileNewName
                                | Attr::FileNewPath
                                | Attr::FileNewSymlink
                                | Attr::FileNewOid
                                | Attr::FileNewDirectory
                        ))
            }
        };
        match self {
            Expr::Const(_) | Expr::OpFlagsAny { .. } | Expr::OpenFlagsAny { .. } => true,
            // Reads only its entity, whatever the term.
            Expr::Memoized { .. } => true,
            Expr::Not(e) | Expr::Shared { term: e, .. } => e.settled_by_key(new_file),
            Expr::All(t) | Expr::Any(t) => t.iter().all(|e| e.settled_by_key(new_file)),
            Expr::Exists(o) | Expr::In { left: o, .. } | Expr::PMatch { left: o, .. } => operand(o),
            Expr::Str { left, right, .. } | Expr::Int { left, right, .. } => {
                operand(left) && operand(right)
            }
        }
    }

    /// Wraps the largest terms of `exprs` that read only the process snapshot or only the
    /// file as [`Expr::Memoized`] (the same term in several places gets one slot); returns
    /// the number of slots per process and per file. Such a term is then evaluated for the
    /// first record of its snapshot or file only: most records repeat what earlier records
    /// of the same process and file were tested for. A conjunction's or disjunction's terms
    /// of one entity are grouped into one such term, and its terms sorted again, cheapest
    /// first, with memoized terms now the cheapest.
    pub fn memoize_by_entity(exprs: &mut [&mut Expr]) -> (usize, usize) {
        type Ids = std::collections::HashMap<(Scope, String), u32>;
        fn wrap(e: &mut Expr, ids: &mut Ids, counts: &mut [u32; 2]) {
            let scope = match e.scope() {
                Some(s @ (Scope::Process | Scope::File)) => s,
                // Constants: nothing to remember.
                None => return,
                Some(Scope::Record) => {
                    match e {
                        Expr::Not(inner) => wrap(inner, ids, counts),
                        Expr::All(t) => group_by_scope(t, Expr::All, ids, counts),
                        Expr::Any(t) => group_by_scope(t, Expr::Any, ids, counts),
                        _ => {}
                    }
                    return;
                }
            };
            let count = &mut counts[usize::from(scope == Scope::File)];
            let id = *ids.entry((scope, e.key())).or_insert_with(|| {
                *count += 1;
                *count - 1
            });
            let term = std::mem::replace(e, Expr::Const(false));
            *e = Expr::Memoized {
                scope,
                id,
                term: Box::new(term),
            };
        }
        // A junction's terms that read only the process (or only the file) become one term:
        // one memo lookup decides them all for the entity's later records.
        fn group_by_scope(
            terms: &mut Vec<Expr>,
            junction: fn(Vec<Expr>) -> Expr,
            ids: &mut Ids,
            counts: &mut [u32; 2],
        ) {
            let (mut process, mut file) = (Vec::new(), Vec::new());
            let mut rest = Vec::with_capacity(terms.len());
            for term in terms.drain(..) {
                match term.scope() {
                    Some(Scope::Process) => process.push(term),
                    Some(Scope::File) => file.push(term),
                    _ => rest.push(term),
                }
            }
            for mut group in [process, file] {
                match group.len() {
                    0 => {}
                    1 => rest.push(group.remove(0)),
                    _ => rest.push(junction(group)),
                }
            }
            rest.iter_mut().for_each(|e| wrap(e, ids, counts));
            rest.sort_by_key(Expr::cost);
            *terms = rest;
        }
        let mut ids = Ids::new();
        let mut counts = [0; 2];
        for e in exprs.iter_mut() {
            wrap(e, &mut ids, &mut counts);
        }
        (counts[0] as usize, counts[1] as usize)
    }

    /// Calls `found` with every memoized term of `scope` (the term inside the wrapper).
    pub fn memoized_terms(&self, scope: Scope, found: &mut impl FnMut(&Expr)) {
        match self {
            Expr::Memoized { scope: s, term, .. } if *s == scope => found(term),
            Expr::Not(e) | Expr::Shared { term: e, .. } | Expr::Memoized { term: e, .. } => {
                e.memoized_terms(scope, found)
            }
            Expr::All(t) | Expr::Any(t) => t.iter().for_each(|e| e.memoized_terms(scope, found)),
            _ => {}
        }
    }

    /// Calls `read` with every operand the term reads, and whether it only asks if the
    /// operand exists.
    pub fn operands(&self, read: &mut impl FnMut(&Operand, bool)) {
        match self {
            Expr::Const(_) | Expr::OpFlagsAny { .. } | Expr::OpenFlagsAny { .. } => {}
            Expr::Not(e) | Expr::Shared { term: e, .. } | Expr::Memoized { term: e, .. } => {
                e.operands(read)
            }
            Expr::All(t) | Expr::Any(t) => t.iter().for_each(|e| e.operands(read)),
            Expr::Exists(o) => read(o, true),
            Expr::In { left: o, .. } | Expr::PMatch { left: o, .. } => read(o, false),
            Expr::Str { left, right, .. } | Expr::Int { left, right, .. } => {
                read(left, false);
                read(right, false);
            }
        }
    }

    /// Whether the record satisfies the condition (short-circuiting).
    pub fn eval(&self, r: &impl Fields) -> bool {
        self.eval_in(r, &mut Memo::default())
    }

    /// `eval`, with the memos of terms already evaluated for this record and its process.
    pub fn eval_in(&self, r: &impl Fields, memo: &mut Memo) -> bool {
        match self {
            Expr::Const(b) => *b,
            Expr::Not(e) => !e.eval_in(r, memo),
            Expr::All(all) => all.iter().all(|e| e.eval_in(r, memo)),
            Expr::Any(any) => any.iter().any(|e| e.eval_in(r, memo)),
            Expr::Shared { id, term } => match memo.record.get(*id as usize).copied() {
                Some(1) => false,
                Some(2) => true,
                Some(_) => {
                    let v = term.eval_in(r, memo);
                    memo.record[*id as usize] = 1 + u8::from(v);
                    v
                }
                None => term.eval_in(r, memo),
            },
            Expr::Memoized { scope, id, term } => {
                match memo.slots(*scope).get(*id as usize).copied() {
                    Some(1) => false,
                    Some(2) => true,
                    Some(_) => {
                        let v = term.eval_in(r, memo);
                        memo.slots(*scope)[*id as usize] = 1 + u8::from(v);
                        v
                    }
                    None => term.eval_in(r, memo),
                }
            }
            Expr::Exists(o) => exists(o, r),
            Expr::OpFlagsAny { masks, none } => match r.op_flags() {
                Some((flags, network)) if flags & golang::NAMED_OP_FLAGS != 0 => {
                    flags & masks[usize::from(network)] != 0
                }
                _ => *none,
            },
            Expr::OpenFlagsAny {
                masks,
                zero,
                unnamed,
            } => match r.open_flags() {
                0 => *zero,
                flags if flags & golang::NAMED_OPEN_FLAGS == 0 => *unnamed,
                flags => masks.iter().any(|&m| m & !flags == 0),
            },
            Expr::Str { op, left, right } => {
                let l = text(left, r);
                match right {
                    Operand::Literal(lit) => l
                        .split(',')
                        .any(|lp| lit.parts.iter().any(|rp| str_op(*op, lp, rp))),
                    _ => any_pair(&l, &text(right, r), *op),
                }
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
            Expr::In { left, parts } => text(left, r).split(',').any(|lp| parts.contains(lp)),
            Expr::PMatch { left, parts } => text(left, r)
                .split(',')
                .any(|lp| parts.iter().any(|p| lp.contains(p.as_str()))),
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
        Operand::Attr(a) => r.value(*a).exists(),
    }
}
