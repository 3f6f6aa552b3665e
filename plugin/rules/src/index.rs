//! Which rules can match a record, found without evaluating them, so a record is evaluated by
//! few rules instead of all:
//!
//! - the record's type: a rule whose prefilter or condition rules the type out is not;
//! - operation flags: a rule whose conjunction tests `sf.opflags` needs one of its flags;
//! - anchors: a rule whose condition is a conjunction with a term "attribute is one of these
//!   values" (`x in (...)`, `x = value`) cannot match unless one of the attribute's
//!   comma-separated parts is among them. Each such value maps to its rules, so a record looks
//!   each anchor attribute up once instead of every rule testing it;
//! - entities: a conjunction's terms that read only the process snapshot (or only the file)
//!   are one memoized term ([`Expr::Memoized`]); when it is false for a process or file, the
//!   rule is out for all of that entity's records.
//!
//! What the anchors and terms of an entity decide is kept per entity ([`EntityRules`]), found
//! for a rule the first time one of the entity's records could need it. The terms stay in the
//! conditions: the index only skips rules that would have been false. Rule sets are bit sets,
//! one bit per rule in compile order.

use foldhash::HashMap;

use crate::{
    attrs::{Attr, Operand, Scope},
    compiler::Rule,
    expr::{Expr, Fields, Memo, StrOp, text},
    flat::Kind,
};

/// What the index found for one entity: the rules its anchors select (looked up at its first
/// record) and, for each rule already asked about, whether the entity leaves it possible.
#[derive(Debug, Default)]
pub struct EntityRules {
    selected: Option<Vec<u64>>,
    known: Vec<u64>,
    possible: Vec<u64>,
}

impl EntityRules {
    pub fn clear(&mut self) {
        self.selected = None;
        self.known.clear();
        self.possible.clear();
    }
}

/// Scopes in the order of the per-scope tables.
const SCOPES: [Scope; 3] = [Scope::Process, Scope::File, Scope::Record];

/// A scope's place in the per-scope tables.
fn table(scope: Scope) -> usize {
    match scope {
        Scope::Process => 0,
        Scope::File => 1,
        Scope::Record => 2,
    }
}

/// Rules by record type, anchor values and entity terms.
#[derive(Clone, Debug, Default)]
pub struct RuleIndex {
    by_attr: Vec<(Attr, HashMap<String, Vec<usize>>)>,
    /// Per scope (process, file, record): the rules anchored on an attribute of that scope.
    anchored: [Vec<u64>; 3],
    /// Per record type (engine order): the enabled rules that can match it.
    by_type: [Vec<u64>; 5],
    /// Per entity scope (process, file), per rule: its conjunction's term that reads only
    /// that entity, if it has one.
    entity_terms: [Vec<Option<Expr>>; 2],
    /// Operation flags: the rules without a flags test in their conjunction; per named bit
    /// (other records, network flows), the rules whose test admits it; the rules admitting
    /// a record with no named flag.
    op_free: Vec<u64>,
    op_by_bit: [Vec<Vec<u64>>; 2],
    op_none: Vec<u64>,
    /// Per record type: the rules whose result the record's process snapshot, file, type
    /// and flags settle ([`Expr::settled_by_key`]).
    settled: [Vec<u64>; 5],
}

/// The values a conjunction's term requires of an attribute, if it is such a term.
fn required(term: &Expr) -> Option<(Attr, Vec<&str>)> {
    match term {
        Expr::In {
            left: Operand::Attr(a),
            parts,
        } => Some((*a, parts.iter().map(String::as_str).collect())),
        Expr::Str {
            op: StrOp::Eq,
            left: Operand::Attr(a),
            right: Operand::Literal(lit),
        } => Some((*a, lit.parts.iter().map(String::as_str).collect())),
        _ => None,
    }
}

/// The terms a condition is a conjunction of (itself when it is not one), seen through a
/// shared wrapper: a rule whose whole condition another rule repeats is shared whole.
fn conjuncts(condition: &Expr) -> &[Expr] {
    match condition {
        Expr::All(terms) => terms,
        Expr::Shared { term, .. } => conjuncts(term),
        single => std::slice::from_ref(single),
    }
}

fn set(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

fn has(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

/// The indexes of the set bits, ascending.
pub fn ones(bits: &[u64]) -> impl Iterator<Item = usize> + '_ {
    bits.iter().enumerate().flat_map(|(w, &word)| {
        let mut rest = word;
        std::iter::from_fn(move || {
            (rest != 0).then(|| {
                let bit = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                w * 64 + bit
            })
        })
    })
}

impl RuleIndex {
    /// The anchors, from the conditions as compiled (before terms are memoized).
    pub fn new(rules: &[Rule]) -> RuleIndex {
        let words = rules.len().div_ceil(64);
        let mut index = RuleIndex {
            anchored: std::array::from_fn(|_| vec![0; words]),
            ..RuleIndex::default()
        };
        for (i, rule) in rules.iter().enumerate() {
            // The record type is settled per rule already, and the operation flags take few
            // values that most records share: of the rest, the term with the fewest values.
            let anchor = conjuncts(&rule.condition)
                .iter()
                .filter_map(required)
                .filter(|(a, _)| !matches!(a, Attr::Type | Attr::OpFlags))
                .min_by_key(|(_, values)| values.len());
            let Some((attr, values)) = anchor else {
                continue;
            };
            let at = match index.by_attr.iter().position(|(a, _)| *a == attr) {
                Some(at) => at,
                None => {
                    index.by_attr.push((attr, HashMap::default()));
                    index.by_attr.len() - 1
                }
            };
            for value in values {
                let rules = index.by_attr[at].1.entry(value.to_string()).or_default();
                if rules.last() != Some(&i) {
                    rules.push(i);
                }
            }
            set(&mut index.anchored[table(attr.scope())], i);
        }
        index
    }

    /// The record types and entity terms, from the conditions as they are evaluated (terms
    /// memoized).
    pub fn plan(&mut self, rules: &[Rule]) {
        let words = rules.len().div_ceil(64);
        for (slot, by_type) in self.by_type.iter_mut().enumerate() {
            *by_type = vec![0; words];
            for (i, rule) in rules.iter().enumerate() {
                if rule.enabled && rule.types[slot] {
                    set(by_type, i);
                }
            }
        }
        for (k, scope) in [Scope::Process, Scope::File].into_iter().enumerate() {
            self.entity_terms[k] = rules
                .iter()
                .map(|rule| {
                    conjuncts(&rule.condition)
                        .iter()
                        .find(|t| matches!(t, Expr::Memoized { scope: s, .. } if *s == scope))
                        .cloned()
                })
                .collect();
        }
        for (slot, settled) in self.settled.iter_mut().enumerate() {
            *settled = vec![0; words];
            for (i, rule) in rules.iter().enumerate() {
                if rule
                    .condition
                    .settled_by_key(slot == Kind::FileEvent.slot())
                {
                    set(settled, i);
                }
            }
        }
        self.op_free = vec![0; words];
        self.op_none = vec![0; words];
        self.op_by_bit = std::array::from_fn(|_| vec![vec![0; words]; 32]);
        for (i, rule) in rules.iter().enumerate() {
            let test = conjuncts(&rule.condition).iter().find_map(|t| match t {
                Expr::OpFlagsAny { masks, none } => Some((masks, none)),
                Expr::Shared { term, .. } => match &**term {
                    Expr::OpFlagsAny { masks, none } => Some((masks, none)),
                    _ => None,
                },
                _ => None,
            });
            let Some((masks, none)) = test else {
                set(&mut self.op_free, i);
                continue;
            };
            if *none {
                set(&mut self.op_none, i);
            }
            for (network, by_bit) in self.op_by_bit.iter_mut().enumerate() {
                for bit in ones(&[masks[network] as u32 as u64]) {
                    set(&mut by_bit[bit], i);
                }
            }
        }
    }

    /// Clears from `candidates` the rules whose operation flags test `record` fails.
    fn narrow_by_op_flags(&self, record: &impl Fields, candidates: &mut [u64]) {
        let named = record
            .op_flags()
            .map(|(flags, network)| (flags & crate::golang::NAMED_OP_FLAGS, network))
            .filter(|&(flags, _)| flags != 0);
        for (w, c) in candidates.iter_mut().enumerate() {
            let mut admitted = self.op_free[w];
            match named {
                Some((flags, network)) => {
                    for bit in ones(&[flags as u32 as u64]) {
                        admitted |= self.op_by_bit[usize::from(network)][bit][w];
                    }
                }
                None => admitted |= self.op_none[w],
            }
            *c &= admitted;
        }
    }

    /// Sets in `candidates` (a bit per rule) the rules that can match `record`, of type
    /// `slot`. `entities` are what is known of the record's process snapshot and file (None
    /// without one); it learns what it did not know, evaluating entity terms with `memo`.
    /// `selected` is scratch space. Returns whether every rule the record's type, flags and
    /// entities leave possible is settled by them (see [`Expr::settled_by_key`]): then any
    /// record alike in those has the same candidates and results.
    pub fn candidates(
        &self,
        record: &impl Fields,
        slot: usize,
        candidates: &mut Vec<u64>,
        selected: &mut Vec<u64>,
        entities: [Option<&mut EntityRules>; 2],
        memo: &mut Memo,
    ) -> bool {
        candidates.clear();
        candidates.extend_from_slice(&self.by_type[slot]);
        self.narrow_by_op_flags(record, candidates);
        for (k, entity) in entities.into_iter().enumerate() {
            let scope = SCOPES[k];
            let Some(entity) = entity else {
                // No entity to remember for: its anchors looked up for this record.
                self.narrow(record, scope, candidates, selected);
                continue;
            };
            if entity.known.len() != candidates.len() {
                entity.known = vec![0; candidates.len()];
                entity.possible = vec![0; candidates.len()];
            }
            let selected = entity.selected.get_or_insert_with(|| {
                let mut bits = vec![0; candidates.len()];
                self.lookup(record, scope, &mut |i| set(&mut bits, i));
                bits
            });
            for (w, candidate) in candidates.iter_mut().enumerate() {
                let unknown = *candidate & !entity.known[w];
                for bit in ones(&[unknown]) {
                    let i = w * 64 + bit;
                    let anchor_ok = !has(&self.anchored[k], i) || has(selected, i);
                    if anchor_ok
                        && self.entity_terms[k][i]
                            .as_ref()
                            .is_none_or(|t| t.eval_in(record, memo))
                    {
                        entity.possible[w] |= 1 << bit;
                    }
                }
                entity.known[w] |= unknown;
                *candidate &= entity.possible[w];
            }
        }
        let settled = candidates
            .iter()
            .zip(&self.settled[slot])
            .all(|(c, s)| c & !s == 0);
        self.narrow(record, Scope::Record, candidates, selected);
        settled
    }

    /// Clears from `candidates` the rules anchored on an attribute of `scope` whose values
    /// `record` does not have.
    fn narrow(
        &self,
        record: &impl Fields,
        scope: Scope,
        candidates: &mut [u64],
        selected: &mut Vec<u64>,
    ) {
        let k = table(scope);
        // Looked up only when a rule still in question is anchored on the scope.
        if candidates
            .iter()
            .zip(&self.anchored[k])
            .all(|(c, a)| c & a == 0)
        {
            return;
        }
        selected.clear();
        selected.resize(candidates.len(), 0);
        self.lookup(record, scope, &mut |i| set(selected, i));
        for (w, c) in candidates.iter_mut().enumerate() {
            *c &= !self.anchored[k][w] | selected[w];
        }
    }

    /// Calls `mark` with every rule whose values `record` has in the anchor attributes of
    /// `scope`.
    fn lookup(&self, record: &impl Fields, scope: Scope, mark: &mut impl FnMut(usize)) {
        for (attr, rules_by_value) in &self.by_attr {
            if attr.scope() != scope {
                continue;
            }
            let operand = Operand::Attr(*attr);
            let value = text(&operand, record);
            for part in value.split(',') {
                if let Some(rules) = rules_by_value.get(part) {
                    rules.iter().for_each(|&i| mark(i));
                }
            }
        }
    }

    /// The attributes of `scope` the index looks up.
    pub fn anchor_attrs(&self, scope: Scope) -> Vec<Attr> {
        let attrs = self.by_attr.iter().map(|(a, _)| *a);
        attrs.filter(|a| a.scope() == scope).collect()
    }

    /// Rules in the index, and attributes it looks up.
    pub fn size(&self) -> (usize, usize) {
        let anchored = self.anchored.iter().map(|bits| ones(bits).count()).sum();
        (anchored, self.by_attr.len())
    }
}
