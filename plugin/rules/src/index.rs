//! Which rules can match a record, found without evaluating them: a rule whose condition is a
//! conjunction with a term "attribute is one of these values" (`x in (...)`, `x = value`)
//! cannot match unless one of the attribute's comma-separated parts is among them. The index
//! maps each such value to its rules, so a record looks each indexed attribute up once
//! instead of every rule testing it. The term stays in the condition: the index only skips
//! rules that would have been false.

use foldhash::HashMap;

use crate::{
    attrs::{Attr, Operand, Scope},
    compiler::Rule,
    expr::{Expr, Fields, StrOp, text},
};

/// Rules by the values their anchor term requires, per attribute.
#[derive(Clone, Debug, Default)]
pub struct RuleIndex {
    by_attr: Vec<(Attr, HashMap<String, Vec<usize>>)>,
    /// Per rule: whether it is in the index (else it is evaluated for every record).
    indexed: Vec<bool>,
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

impl RuleIndex {
    pub fn new(rules: &[Rule]) -> RuleIndex {
        let mut index = RuleIndex {
            by_attr: Vec::new(),
            indexed: vec![false; rules.len()],
        };
        for (i, rule) in rules.iter().enumerate() {
            let terms: &[Expr] = match &rule.condition {
                Expr::All(terms) => terms,
                single => std::slice::from_ref(single),
            };
            // The record type is settled per rule already, and the operation flags take few
            // values that most records share: of the rest, the term with the fewest values.
            let anchor = terms
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
            index.indexed[i] = true;
        }
        index
    }

    /// Marks in `candidates` (one flag per rule) the rules that can match `record`: every
    /// rule not in the index, and the indexed ones whose values it has. What the attributes
    /// of the record's process snapshot and of its file select is looked up once per entity
    /// and kept in its memo, when there is one.
    pub fn candidates(
        &self,
        record: &impl Fields,
        candidates: &mut Vec<bool>,
        process: Option<&mut Option<Vec<u32>>>,
        file: Option<&mut Option<Vec<u32>>>,
    ) {
        candidates.clear();
        candidates.extend(self.indexed.iter().map(|&indexed| !indexed));
        let mut mark = |i: usize| candidates[i] = true;
        for (scope, memo) in [(Scope::Process, process), (Scope::File, file)] {
            match memo {
                Some(Some(selected)) => selected.iter().for_each(|&i| mark(i as usize)),
                Some(memo @ None) => {
                    let mut selected = Vec::new();
                    self.lookup(record, scope, &mut |i| selected.push(i as u32));
                    selected.iter().for_each(|&i| mark(i as usize));
                    *memo = Some(selected);
                }
                None => self.lookup(record, scope, &mut mark),
            }
        }
        self.lookup(record, Scope::Record, &mut mark);
    }

    /// Calls `mark` with every rule whose values `record` has in the indexed attributes of
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

    /// Rules in the index, and attributes it looks up.
    pub fn size(&self) -> (usize, usize) {
        (
            self.indexed.iter().filter(|&&i| i).count(),
            self.by_attr.len(),
        )
    }
}
