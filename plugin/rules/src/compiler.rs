//! Policy files into one compiled [`Policy`], as sf-processor's compiler does it: the files of
//! a folder in lexical order, one set of lists and macros shared from one file to the next;
//! in each file a first pass stores every list and macro (so a name can be used before it is
//! declared), then a second pass, in file order, stores them again and compiles each rule and
//! filter, expanding macros and lists there and then. A rule therefore sees the latest
//! definition met so far in its own file, the file's last one for names defined further down,
//! and otherwise what earlier files left.
//!
//! Where sf-processor silently accepts something that cannot be what the author meant, the
//! compiler records a [`Lint`] (with file, line and column) and compiles what sf-processor
//! compiles.

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
};

use crate::{
    attrs::{Attr, Operand},
    expr::{Expr, FoldOp, IntOp, StrOp},
    lexer::Pos,
    parser::{self, CompareOp, Cond, Item, SyntaxError, trim_bounding_quotes},
};

/// How urgent a rule's alerts are (`priority` in the JSON output: 1, 2, 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Low = 1,
    Medium = 2,
    High = 3,
}

impl Priority {
    /// sf-processor's mapping of Falco's and its own priority words; anything else is low.
    fn from_word(word: &str) -> (Priority, bool) {
        match word.to_ascii_lowercase().as_str() {
            "low" | "debug" | "info" | "informational" | "notice" => (Priority::Low, true),
            "medium" | "warning" => (Priority::Medium, true),
            "high" | "error" | "critical" | "emergency" => (Priority::High, true),
            _ => (Priority::Low, false),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Rule {
    /// The name as written (raw text: quotes and inner line breaks kept).
    pub name: String,
    pub desc: String,
    pub condition: Expr,
    pub priority: Priority,
    /// The rule's tags (one list; sf-processor keeps it as one element of a list of lists).
    pub tags: Vec<String>,
    /// Record types (`sf.type`) the rule is evaluated for; empty: all.
    pub prefilter: Vec<String>,
    pub enabled: bool,
    pub actions: Vec<String>,
    pub file: PathBuf,
    pub pos: Pos,
    /// The record types (engine order: PE, NF, FF, FE, KE) the rule can match at all: its
    /// prefilter and what its condition says of `sf.type`, settled once.
    pub types: [bool; 5],
}

/// The record types the engine evaluates, in [`Rule::types`] order.
pub const TYPES: [&str; 5] = ["PE", "NF", "FF", "FE", "KE"];

#[derive(Clone, Debug)]
pub struct Filter {
    pub name: String,
    pub condition: Expr,
    pub enabled: bool,
}

/// Rules and filters compiled from a set of files, in compile order.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub files: Vec<PathBuf>,
    pub rules: Vec<Rule>,
    pub filters: Vec<Filter>,
    pub lists: usize,
    pub macros: usize,
    /// What sf-processor accepts silently but is almost certainly a mistake.
    pub lints: Vec<Lint>,
    /// Which rules can match a record, by the values their conditions require.
    pub index: crate::index::RuleIndex,
    /// Terms several rules or filters share, evaluated once per record.
    pub shared_terms: usize,
    /// Terms that read only a record's process snapshot (the process, its ancestors,
    /// container, pod, header), evaluated once per snapshot.
    pub process_terms: usize,
    /// What those terms and the index read of a snapshot: alike snapshots share results.
    pub process_reads: crate::alike::ProcessReads,
    /// Terms that read only a record's file, evaluated once per file.
    pub file_terms: usize,
    /// Tells this policy's per-process memos from another's (unique per compilation).
    pub id: u64,
    /// Per record type (engine order): whether the enabled filters read nothing of such a
    /// record but its process snapshot, file, type and flags (see [`crate::verdicts`]):
    /// otherwise no verdict of the type is remembered.
    pub filters_settled: [bool; 5],
}

/// Something accepted that probably does not do what its author meant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lint {
    pub file: PathBuf,
    pub pos: Pos,
    pub message: String,
}

impl fmt::Display for Lint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.pos, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("{}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}:{error}", path.display())]
    Syntax { path: PathBuf, error: SyntaxError },
    #[error("{}:{pos}: macro {name} refers to itself (through {chain})", path.display())]
    RecursiveMacro {
        path: PathBuf,
        pos: Pos,
        name: String,
        chain: String,
    },
    #[error(
        "{}:{pos}: {what} expands to more than {MAX_EXPANSION} conditions or values",
        path.display()
    )]
    TooLarge {
        path: PathBuf,
        pos: Pos,
        what: String,
    },
    #[error("{}: no policy files (.yaml, .yml) found", path.display())]
    NoFiles { path: PathBuf },
}

/// Conditions (after macro expansion) one rule or filter may have, and values one `in (...)`
/// may expand to: macros and lists that use each other twice over double at every level.
pub const MAX_EXPANSION: usize = 200_000;

/// The policy files under `paths` (a file, or a folder searched recursively for `.yaml` and
/// `.yml`), in lexical order, as sf-processor lists them.
pub fn policy_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CompileError> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|error| CompileError::Read {
            path: path.clone(),
            error,
        })?;
        if meta.is_dir() {
            let before = files.len();
            walk(path, &mut files)?;
            if files.len() == before {
                return Err(CompileError::NoFiles { path: path.clone() });
            }
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CompileError> {
    let read = |error| CompileError::Read {
        path: dir.to_path_buf(),
        error,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(read)?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    Ok(())
}

/// Compiles the policy files under `paths` into one policy.
pub fn compile_paths(paths: &[PathBuf]) -> Result<Policy, CompileError> {
    compile_sources(&read_sources(paths)?)
}

/// The text of every policy file under `paths`, in compile order.
pub fn read_sources(paths: &[PathBuf]) -> Result<Vec<(PathBuf, String)>, CompileError> {
    policy_files(paths)?
        .into_iter()
        .map(|path| match std::fs::read_to_string(&path) {
            Ok(text) => Ok((path, text)),
            Err(error) => Err(CompileError::Read { path, error }),
        })
        .collect()
}

/// Compiles policy files already read (`read_sources`), in the order given.
pub fn compile_sources(sources: &[(PathBuf, String)]) -> Result<Policy, CompileError> {
    let mut compiler = Compiler::default();
    for (path, text) in sources {
        compiler.add_file(path, text)?;
    }
    Ok(compiler.finish())
}

/// A definition as first met, to tell a redefinition with another body.
struct Definition<T> {
    body: T,
    file: PathBuf,
    pos: Pos,
}

#[derive(Default)]
pub struct Compiler {
    lists: HashMap<String, Vec<String>>,
    macros: HashMap<String, Cond>,
    first_lists: HashMap<String, Definition<Vec<String>>>,
    first_macros: HashMap<String, Definition<Cond>>,
    policy: Policy,
    /// Bare names used as `in (...)` operands that were not lists when compiled.
    literal_names: Vec<(PathBuf, Pos, String)>,
    /// Conditions left for the rule or filter being compiled.
    budget: usize,
}

impl Compiler {
    /// Compiles one more file; on an error nothing of this file is kept.
    pub fn add_file(&mut self, path: &Path, source: &str) -> Result<(), CompileError> {
        let items = parser::parse(source).map_err(|error| CompileError::Syntax {
            path: path.to_path_buf(),
            error,
        })?;
        // The first pass: every list and macro of the file, the last definition winning.
        for item in &items {
            match item {
                Item::List(l) => {
                    self.lists.insert(l.name.clone(), l.items.clone());
                }
                Item::Macro(m) => {
                    self.macros.insert(m.name.clone(), m.condition.clone());
                }
                _ => {}
            }
        }
        // The second pass, in file order.
        for item in items {
            match item {
                Item::List(l) => {
                    self.note_list(path, &l);
                    self.lists.insert(l.name, l.items);
                }
                Item::Macro(m) => {
                    self.note_macro(path, &m);
                    self.macros.insert(m.name, m.condition);
                }
                Item::Rule(r) => {
                    self.budget = MAX_EXPANSION;
                    let condition = self
                        .compile_cond(path, &r.condition, &mut Vec::new())
                        .map_err(|e| e.naming(&r.name, cond_pos(&r.condition)))?
                        .optimized();
                    let (priority, known) = r
                        .priority
                        .as_ref()
                        .map_or((Priority::Low, true), |p| Priority::from_word(&p.text));
                    if let (false, Some(p)) = (known, &r.priority) {
                        self.lint(path, p.pos, format!("priority {} is taken as low", p.text));
                    }
                    let enabled = self.enabled(path, r.enabled.as_ref());
                    let prefilter = r.prefilter.unwrap_or_default();
                    let types = TYPES.map(|t| {
                        (prefilter.is_empty() || prefilter.iter().any(|p| p == t))
                            && condition.given_type(t) != Some(false)
                    });
                    self.policy.rules.push(Rule {
                        name: r.name,
                        desc: r.desc,
                        condition,
                        priority,
                        tags: r.tags.unwrap_or_default(),
                        prefilter,
                        types,
                        enabled,
                        actions: r.actions.unwrap_or_default(),
                        file: path.to_path_buf(),
                        pos: r.pos,
                    });
                }
                Item::Filter(f) => {
                    self.budget = MAX_EXPANSION;
                    let condition = self
                        .compile_cond(path, &f.condition, &mut Vec::new())
                        .map_err(|e| e.naming(&f.name, cond_pos(&f.condition)))?
                        .optimized();
                    let enabled = self.enabled(path, f.enabled.as_ref());
                    self.policy.filters.push(Filter {
                        name: f.name,
                        condition,
                        enabled,
                    });
                }
                Item::RequiredEngineVersion => {}
            }
        }
        self.policy.files.push(path.to_path_buf());
        Ok(())
    }

    pub fn finish(mut self) -> Policy {
        for (file, pos, name) in std::mem::take(&mut self.literal_names) {
            if !self.first_lists.contains_key(&name) {
                self.lint(
                    &file,
                    pos,
                    format!("no list named {name}: taken as the literal text \"{name}\""),
                );
            }
        }
        self.policy.index = crate::index::RuleIndex::new(&self.policy.rules);
        let mut conditions: Vec<&mut Expr> = self
            .policy
            .rules
            .iter_mut()
            .map(|r| &mut r.condition)
            .chain(self.policy.filters.iter_mut().map(|f| &mut f.condition))
            .collect();
        conditions.iter_mut().for_each(|c| c.test_flags_as_bits());
        (self.policy.process_terms, self.policy.file_terms) =
            Expr::memoize_by_entity(&mut conditions);
        self.policy.shared_terms = Expr::share_common_terms(&mut conditions);
        self.policy.process_reads = crate::alike::ProcessReads::new(
            conditions.iter().map(|c| &**c),
            self.policy.index.anchor_attrs(crate::attrs::Scope::Process),
        );
        self.policy.index.plan(&self.policy.rules);
        self.policy.filters_settled = std::array::from_fn(|slot| {
            let new_file = slot == crate::flat::Kind::FileEvent.slot();
            let filters = &self.policy.filters;
            filters
                .iter()
                .filter(|f| f.enabled)
                .all(|f| f.condition.settled_by_key(new_file))
        });
        static COMPILED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        self.policy.id = COMPILED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.policy.lists = self.first_lists.len();
        self.policy.macros = self.first_macros.len();
        self.policy
            .lints
            .sort_by(|a, b| (&a.file, a.pos).cmp(&(&b.file, b.pos)));
        self.policy.lints.dedup();
        self.policy
    }

    fn lint(&mut self, file: &Path, pos: Pos, message: String) {
        self.policy.lints.push(Lint {
            file: file.to_path_buf(),
            pos,
            message,
        });
    }

    fn enabled(&mut self, path: &Path, atom: Option<&parser::Atom>) -> bool {
        let Some(atom) = atom else { return true };
        match trim_bounding_quotes(&atom.text) {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
            "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
            other => {
                let message = format!("enabled: {other} is not a boolean: taken as true");
                self.lint(path, atom.pos, message);
                true
            }
        }
    }

    fn note_list(&mut self, path: &Path, l: &parser::ListItem) {
        if l.items.iter().any(String::is_empty) {
            let message = if l.items.len() == 1 {
                format!(
                    "list {} is empty: `in ({})` matches only an empty value",
                    l.name, l.name
                )
            } else {
                format!(
                    "list {} has an empty item (a trailing comma): it matches an empty value",
                    l.name
                )
            };
            self.lint(path, l.pos, message);
        }
        match self.first_lists.get(&l.name) {
            Some(first) if first.body != l.items => {
                let message = format!(
                    "list {} defined again with other items (first at {}:{}): which items a rule sees depends on where the rule is",
                    l.name,
                    first.file.display(),
                    first.pos
                );
                self.lint(path, l.pos, message);
            }
            Some(_) => {}
            None => {
                self.first_lists.insert(
                    l.name.clone(),
                    Definition {
                        body: l.items.clone(),
                        file: path.to_path_buf(),
                        pos: l.pos,
                    },
                );
            }
        }
    }

    fn note_macro(&mut self, path: &Path, m: &parser::MacroItem) {
        match self.first_macros.get(&m.name) {
            Some(first) if !same_condition(&first.body, &m.condition) => {
                let message = format!(
                    "macro {} defined again with another condition (first at {}:{}): which one a rule sees depends on where the rule is",
                    m.name,
                    first.file.display(),
                    first.pos
                );
                self.lint(path, m.pos, message);
            }
            Some(_) => {}
            None => {
                self.first_macros.insert(
                    m.name.clone(),
                    Definition {
                        body: m.condition.clone(),
                        file: path.to_path_buf(),
                        pos: m.pos,
                    },
                );
            }
        }
    }

    /// `expanding`: the macros being expanded, innermost last (to refuse recursion).
    fn compile_cond(
        &mut self,
        path: &Path,
        cond: &Cond,
        expanding: &mut Vec<String>,
    ) -> Result<Expr, CompileError> {
        if self.budget == 0 {
            return Err(CompileError::TooLarge {
                path: path.to_path_buf(),
                pos: cond_pos(cond),
                what: String::new(),
            });
        }
        self.budget -= 1;
        Ok(match cond {
            Cond::Ref(name) => {
                if let Some(body) = self.macros.get(&name.text).cloned() {
                    if expanding.contains(&name.text) {
                        return Err(CompileError::RecursiveMacro {
                            path: path.to_path_buf(),
                            pos: name.pos,
                            name: name.text.clone(),
                            chain: expanding.join(" -> "),
                        });
                    }
                    expanding.push(name.text.clone());
                    let expr = self.compile_cond(path, &body, expanding)?;
                    expanding.pop();
                    expr
                } else {
                    let what = if self.lists.contains_key(&name.text) {
                        "is a list, not a condition"
                    } else {
                        "is not a defined macro"
                    };
                    self.lint(
                        path,
                        name.pos,
                        format!("{} {what}: always false", name.text),
                    );
                    Expr::Const(false)
                }
            }
            Cond::Not(inner) => Expr::negate(self.compile_cond(path, inner, expanding)?),
            Cond::And(all) => Expr::All(
                all.iter()
                    .map(|c| self.compile_cond(path, c, expanding))
                    .collect::<Result<_, _>>()?,
            ),
            Cond::Or(any) => Expr::Any(
                any.iter()
                    .map(|c| self.compile_cond(path, c, expanding))
                    .collect::<Result<_, _>>()?,
            ),
            Cond::Exists(atom) => Expr::Exists(self.operand(path, atom)),
            Cond::Compare { op, left, right } => {
                let (l, r) = (self.operand(path, left), self.operand(path, right));
                if op.is_numeric() {
                    for (atom, operand) in [(left, &l), (right, &r)] {
                        if !operand.is_int64() {
                            self.lint(
                                path,
                                atom.pos,
                                format!(
                                    "{} is not a number here: {} compares 0",
                                    atom.text,
                                    compare_symbol(*op)
                                ),
                            );
                        }
                    }
                }
                compare(*op, l, r)
            }
            Cond::In {
                left,
                pmatch,
                values,
                ignored_groups,
            } => {
                for &at in ignored_groups {
                    self.lint(
                        path,
                        at,
                        "a [...] group inside in/pmatch (...) is ignored: list its items bare or name a list".into(),
                    );
                }
                let mut items = Vec::new();
                for atom in values {
                    if !self.lists.contains_key(&atom.text) && looks_like_a_list_name(&atom.text) {
                        self.literal_names
                            .push((path.to_path_buf(), atom.pos, atom.text.clone()));
                    }
                    self.reduce_list(&atom.text, &mut items, &mut Vec::new());
                    if items.len() > MAX_EXPANSION {
                        return Err(CompileError::TooLarge {
                            path: path.to_path_buf(),
                            pos: atom.pos,
                            what: String::new(),
                        });
                    }
                }
                let op = if *pmatch {
                    FoldOp::Contains
                } else {
                    FoldOp::Eq
                };
                Expr::fold(self.operand(path, left), op, &items)
            }
        })
    }

    /// A list name becomes its items (recursively), anything else itself, trimmed of quotes.
    fn reduce_list(&self, name: &str, out: &mut Vec<String>, seen: &mut Vec<String>) {
        if out.len() > MAX_EXPANSION {
            return;
        }
        match self.lists.get(name) {
            Some(items) if !seen.iter().any(|s| s == name) => {
                seen.push(name.to_string());
                for item in items {
                    self.reduce_list(item, out, seen);
                }
                seen.pop();
            }
            _ => out.push(trim_bounding_quotes(name).to_string()),
        }
    }

    fn operand(&mut self, path: &Path, atom: &parser::Atom) -> Operand {
        let operand = Operand::parse(&atom.text);
        if let Operand::Literal(_) = &operand
            && let Some(base) = looks_like_an_attribute(&atom.text)
        {
            let message = if Attr::lookup(base).is_some() {
                format!(
                    "{} is not an attribute: compared as the literal text",
                    atom.text
                )
            } else {
                format!("{base} is not an attribute: compared as the literal text")
            };
            self.lint(path, atom.pos, message);
        }
        operand
    }
}

impl CompileError {
    /// Names the rule or filter a size error was met in, at its condition.
    fn naming(self, item: &str, at: Pos) -> CompileError {
        match self {
            CompileError::TooLarge { path, what, .. } if what.is_empty() => {
                CompileError::TooLarge {
                    path,
                    pos: at,
                    what: item.to_string(),
                }
            }
            other => other,
        }
    }
}

/// Where a condition starts.
fn cond_pos(cond: &Cond) -> Pos {
    match cond {
        Cond::Ref(a) | Cond::Exists(a) => a.pos,
        Cond::Compare { left, .. } | Cond::In { left, .. } => left.pos,
        Cond::Not(inner) => cond_pos(inner),
        Cond::And(all) | Cond::Or(all) => all.first().map_or(Pos::default(), cond_pos),
    }
}

fn compare(op: CompareOp, l: Operand, r: Operand) -> Expr {
    match op {
        CompareOp::Eq => Expr::str(StrOp::Eq, l, r),
        CompareOp::Neq => Expr::negate(Expr::str(StrOp::Eq, l, r)),
        CompareOp::Contains => Expr::str(StrOp::Contains, l, r),
        CompareOp::IContains => Expr::str(StrOp::IContains, l, r),
        CompareOp::StartsWith => Expr::str(StrOp::StartsWith, l, r),
        CompareOp::EndsWith => Expr::str(StrOp::EndsWith, l, r),
        CompareOp::Lt => Expr::int(IntOp::Lt, l, r),
        CompareOp::Le => Expr::int(IntOp::Le, l, r),
        CompareOp::Gt => Expr::int(IntOp::Gt, l, r),
        CompareOp::Ge => Expr::int(IntOp::Ge, l, r),
    }
}

fn compare_symbol(op: CompareOp) -> &'static str {
    match op {
        CompareOp::Lt => "<",
        CompareOp::Le => "<=",
        CompareOp::Gt => ">",
        _ => ">=",
    }
}

/// Whether two conditions are the same apart from where they were written.
fn same_condition(a: &Cond, b: &Cond) -> bool {
    fn strip(c: &Cond) -> String {
        match c {
            Cond::Ref(a) | Cond::Exists(a) => {
                format!("{c:?}", c = (matches!(c, Cond::Ref(_)), &a.text))
            }
            Cond::Not(inner) => format!("not({})", strip(inner)),
            Cond::Compare { op, left, right } => format!("{op:?}({},{})", left.text, right.text),
            Cond::In {
                left,
                pmatch,
                values,
                ..
            } => format!(
                "in{pmatch}({};{})",
                left.text,
                values
                    .iter()
                    .map(|v| v.text.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Cond::And(all) => format!(
                "and({})",
                all.iter().map(strip).collect::<Vec<_>>().join(";")
            ),
            Cond::Or(any) => format!(
                "or({})",
                any.iter().map(strip).collect::<Vec<_>>().join(";")
            ),
        }
    }
    strip(a) == strip(b)
}

/// Field prefixes of SysFlow and Falco: an operand starting with one of these was meant as an
/// attribute. Returns the name without a `[...]` path.
fn looks_like_an_attribute(text: &str) -> Option<&str> {
    const PREFIXES: [&str; 9] = [
        "sf.",
        "evt.",
        "fd.",
        "proc.",
        "container.",
        "user.",
        "k8s.",
        "thread.",
        "group.",
    ];
    let base = text.split('[').next().unwrap_or(text);
    (PREFIXES.iter().any(|p| base.starts_with(p)) && base.len() > 3).then_some(base)
}

/// A bare name in `in (...)` that reads like a list's name (`shell_binaries`) rather than a
/// value: snake case, no dots, slashes or quotes.
fn looks_like_a_list_name(text: &str) -> bool {
    text.contains('_')
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && text.chars().next().is_some_and(|c| c.is_ascii_lowercase())
}

/// Go's `%q` of a string: what sf-processor's dumps and our compile listing print.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Policy {
    /// The listing `rules check` prints and the conformance kit's compile dumps hold: a count
    /// line, then one line per rule and per filter, in compile order.
    pub fn listing(&self) -> String {
        let enabled = self.rules.iter().filter(|r| r.enabled).count();
        let mut out = format!(
            "files={} rules={} enabled={} filters={}\n",
            self.files.len(),
            self.rules.len(),
            enabled,
            self.filters.len()
        );
        let go_list = |items: &[String]| format!("[{}]", items.join(" "));
        for r in &self.rules {
            let tags = if r.tags.is_empty() {
                "[]".to_string()
            } else {
                format!("[{}]", go_list(&r.tags))
            };
            out.push_str(&format!(
                "RULE\t{}\t{}\t{}\t{}\t{}\t{}\n",
                r.enabled,
                r.priority as u8,
                go_list(&r.prefilter),
                tags,
                go_quote(&r.name),
                go_quote(&r.desc)
            ));
        }
        for f in &self.filters {
            out.push_str(&format!("FILTER\t{}\t{}\n", f.enabled, go_quote(&f.name)));
        }
        out
    }
}
