//! Evaluating a compiled policy on one record, as sf-processor's engine does: if an enabled
//! filter matches, the record is dropped; otherwise every enabled rule whose prefilter admits
//! the record's type is evaluated, all of them, in compile order.

use crate::{Policy, flat::Flat};

thread_local! {
    /// Per record: the rules that can match it, and the memo of shared terms (reused, not
    /// allocated per record).
    static SCRATCH: std::cell::RefCell<(Vec<bool>, Vec<u8>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// What the policy made of one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A filter matched: no output in either mode.
    Dropped,
    /// The indexes of the rules that matched, in compile order (possibly none).
    Matched(Vec<usize>),
}

impl Policy {
    pub fn evaluate(&self, flat: &Flat) -> Verdict {
        SCRATCH.with_borrow_mut(|(candidates, memo)| {
            memo.clear();
            memo.resize(self.shared_terms, 0);
            if self
                .filters
                .iter()
                .any(|f| f.enabled && f.condition.eval_in(flat, memo))
            {
                return Verdict::Dropped;
            }
            let slot = flat.kind.slot();
            self.index.candidates(flat, candidates);
            let matched = self
                .rules
                .iter()
                .enumerate()
                .filter(|&(i, r)| {
                    r.enabled && r.types[slot] && candidates[i] && r.condition.eval_in(flat, memo)
                })
                .map(|(i, _)| i)
                .collect();
            Verdict::Matched(matched)
        })
    }
}

/// Whether a record is written: in alert mode only with a match, in enrich mode unless a
/// filter dropped it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Alert,
    Enrich,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "alert" => Ok(Mode::Alert),
            "enrich" => Ok(Mode::Enrich),
            other => Err(format!("mode {other:?}: expected alert or enrich")),
        }
    }
}

impl Mode {
    /// The matched rules to write, or None when the record is not written.
    pub fn output(self, verdict: Verdict) -> Option<Vec<usize>> {
        match (self, verdict) {
            (_, Verdict::Dropped) => None,
            (Mode::Alert, Verdict::Matched(m)) if m.is_empty() => None,
            (_, Verdict::Matched(m)) => Some(m),
        }
    }
}
