//! Capture policies: which capture mode each container gets, by namespace (names or globs)
//! and pod labels, with optional path prefixes for file records, and a pod annotation that may
//! override the mode where the policy allows it.
//!
//! ```yaml
//! default: process+file        # containers no rule matches
//! host: process                # processes outside any known container
//! allow_pod_override: false    # may the sysflow.io/capture annotation change the mode?
//! rules:                       # first match wins
//!   - namespaces: [kube-system]
//!     mode: off
//!   - namespaces: ["team-*"]
//!     pod_selector:
//!       match_labels: {tier: web}
//!       match_expressions:
//!         - {key: track, operator: NotIn, values: [canary]}
//!     mode: all
//!     allow_pod_override: true
//!     paths: {include: [/app, /etc], exclude: [/etc/ssl]}
//! ```
//!
//! Validation reports every problem it finds with its line and column: the structure first
//! (unknown keys, wrong types), then each value (modes, globs, paths, selector operators).

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    path::Path,
    sync::Arc,
};

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::capture::CaptureMode;

/// Pod annotation that asks for a capture mode (honoured where the policy allows overrides).
pub const OVERRIDE_ANNOTATION: &str = "sysflow.io/capture";

/// A compiled, valid policy.
#[derive(Clone, Debug)]
pub struct Policy {
    pub default: CaptureMode,
    pub host: CaptureMode,
    pub allow_pod_override: bool,
    rules: Vec<Rule>,
}

#[derive(Clone, Debug)]
struct Rule {
    namespaces: Option<GlobSet>,
    selector: Option<LabelSelector>,
    mode: CaptureMode,
    allow_pod_override: Option<bool>,
    paths: Arc<PathFilter>,
}

/// Which file paths a container's file records keep: under an `include` prefix (all when
/// there is none) and not under an `exclude` prefix. Prefixes match whole path components.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathFilter {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

fn under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

impl PathFilter {
    pub fn is_everything(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    pub fn allows(&self, path: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| under(path, p)))
            && !self.exclude.iter().any(|p| under(path, p))
    }
}

/// Kubernetes label selector semantics: every `match_labels` pair and every expression holds.
#[derive(Clone, Debug, Default)]
struct LabelSelector {
    match_labels: BTreeMap<String, String>,
    expressions: Vec<(String, Operator, Vec<String>)>,
}

#[derive(Clone, Copy, Debug)]
enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    fn matches(&self, labels: &HashMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.expressions.iter().all(|(key, op, values)| {
                let value = labels.get(key);
                match op {
                    Operator::In => value.is_some_and(|v| values.contains(v)),
                    Operator::NotIn => value.is_none_or(|v| !values.contains(v)),
                    Operator::Exists => value.is_some(),
                    Operator::DoesNotExist => value.is_none(),
                }
            })
    }
}

/// What the policy decided for one pod.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub mode: CaptureMode,
    pub paths: Arc<PathFilter>,
    /// Why: `rule N`, `default`, or `annotation`.
    pub reason: String,
}

impl Policy {
    /// Captures everything in `mode`, with no rules (the policy without a policy file).
    pub fn uniform(mode: CaptureMode) -> Policy {
        Policy {
            default: mode,
            host: mode,
            allow_pod_override: false,
            rules: Vec::new(),
        }
    }

    /// The mode and paths for a pod in `namespace` with these labels and annotations.
    pub fn decide(
        &self,
        namespace: &str,
        labels: &HashMap<String, String>,
        annotations: &HashMap<String, String>,
    ) -> Decision {
        let matched = self.rules.iter().enumerate().find(|(_, r)| {
            r.namespaces.as_ref().is_none_or(|g| g.is_match(namespace))
                && r.selector.as_ref().is_none_or(|s| s.matches(labels))
        });
        let (mut decision, allow_override) = match matched {
            Some((i, rule)) => (
                Decision {
                    mode: rule.mode,
                    paths: rule.paths.clone(),
                    reason: format!("rule {}", i + 1),
                },
                rule.allow_pod_override.unwrap_or(self.allow_pod_override),
            ),
            None => (
                Decision {
                    mode: self.default,
                    paths: Arc::default(),
                    reason: "default".into(),
                },
                self.allow_pod_override,
            ),
        };
        if allow_override && let Some(asked) = annotations.get(OVERRIDE_ANNOTATION) {
            match asked.trim().parse::<CaptureMode>() {
                Ok(mode) => {
                    decision.mode = mode;
                    decision.reason = format!("annotation {OVERRIDE_ANNOTATION}={asked}");
                }
                Err(e) => tracing::warn!(namespace, "ignoring pod annotation: {e}"),
            }
        }
        decision
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Parses and validates a policy; `source` names it in error messages.
    pub fn parse(text: &str, source: &str) -> Result<Policy, PolicyErrors> {
        let raw: RawPolicy = serde_saphyr::from_str(text).map_err(|e| PolicyErrors {
            source: source.into(),
            problems: vec![problem_of_yaml_error(&e)],
        })?;
        let mut problems = Vec::new();
        let policy = compile(raw, &mut problems);
        if problems.is_empty() {
            Ok(policy)
        } else {
            Err(PolicyErrors {
                source: source.into(),
                problems,
            })
        }
    }

    /// Reads and parses a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyLoadError> {
        let text =
            crate::host::trust::read_trusted(path).map_err(|source| PolicyLoadError::Read {
                path: path.into(),
                source,
            })?;
        Ok(Policy::parse(&text, &path.display().to_string())?)
    }
}

/// Why a policy file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    /// The file could not be read.
    #[error("cannot read the policy {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The file does not validate.
    #[error(transparent)]
    Invalid(#[from] PolicyErrors),
}

/// One problem in a policy file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based; 0 when the YAML parser could not say where.
    pub line: u64,
    pub column: u64,
    pub message: String,
}

/// Every problem found in a policy file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyErrors {
    pub source: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if p.line == 0 {
                write!(f, "{}: {}", self.source, p.message)?;
            } else {
                write!(f, "{}:{}:{}: {}", self.source, p.line, p.column, p.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

fn problem_of_yaml_error(e: &serde_saphyr::Error) -> Problem {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    // The crate's message may carry its own location suffix and a source snippet; keep the
    // first line without them, the location is ours to print.
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("invalid YAML");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let first = match first.strip_prefix("line ") {
        Some(rest) => rest.split_once(": ").map_or(first, |(_, m)| m),
        None => first,
    };
    let message = first
        .split(" at line ")
        .next()
        .unwrap_or(first)
        .trim()
        .to_string();
    Problem {
        line,
        column,
        message,
    }
}

// The file's structure, with the location of every value that can be wrong.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    default: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    #[serde(default)]
    allow_pod_override: bool,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    namespaces: Option<Vec<Spanned<String>>>,
    pod_selector: Option<RawSelector>,
    mode: Spanned<String>,
    allow_pod_override: Option<bool>,
    paths: Option<RawPaths>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelector {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
    #[serde(default)]
    match_expressions: Vec<RawExpression>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpression {
    key: String,
    operator: Spanned<String>,
    values: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPaths {
    #[serde(default)]
    include: Vec<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
}

fn at<T>(s: &Spanned<T>, message: String) -> Problem {
    Problem {
        line: s.referenced.line(),
        column: s.referenced.column(),
        message,
    }
}

fn mode_of(s: &Spanned<String>, problems: &mut Vec<Problem>) -> CaptureMode {
    s.value
        .trim()
        .parse()
        .unwrap_or_else(|e: crate::capture::UnknownCaptureMode| {
            problems.push(at(s, e.to_string()));
            CaptureMode::OFF
        })
}

fn compile(raw: RawPolicy, problems: &mut Vec<Problem>) -> Policy {
    let default = raw
        .default
        .as_ref()
        .map(|m| mode_of(m, problems))
        .unwrap_or(CaptureMode::ALL);
    let host = raw
        .host
        .as_ref()
        .map(|m| mode_of(m, problems))
        .unwrap_or(default);
    let rules = raw
        .rules
        .into_iter()
        .map(|r| compile_rule(r, problems))
        .collect();
    Policy {
        default,
        host,
        allow_pod_override: raw.allow_pod_override,
        rules,
    }
}

fn compile_rule(raw: RawRule, problems: &mut Vec<Problem>) -> Rule {
    let namespaces = raw.namespaces.map(|names| {
        let mut set = GlobSetBuilder::new();
        if names.is_empty() {
            problems.push(Problem {
                line: raw.mode.referenced.line(),
                column: raw.mode.referenced.column(),
                message: "namespaces is empty: expected at least one name or glob (omit it to match every namespace)".into(),
            });
        }
        for name in &names {
            match Glob::new(&name.value) {
                Ok(glob) => {
                    set.add(glob);
                }
                Err(e) => problems.push(at(
                    name,
                    format!("invalid namespace glob {:?}: {}", name.value, e.kind()),
                )),
            }
        }
        set.build().unwrap_or_else(|_| GlobSet::empty())
    });
    let selector = raw.pod_selector.map(|s| LabelSelector {
        match_labels: s.match_labels,
        expressions: s
            .match_expressions
            .into_iter()
            .map(|e| {
                let op = match e.operator.value.as_str() {
                    "In" => Operator::In,
                    "NotIn" => Operator::NotIn,
                    "Exists" => Operator::Exists,
                    "DoesNotExist" => Operator::DoesNotExist,
                    other => {
                        problems.push(at(
                            &e.operator,
                            format!(
                                "unknown operator {other:?}: expected In, NotIn, Exists or DoesNotExist"
                            ),
                        ));
                        Operator::Exists
                    }
                };
                let needs_values = matches!(op, Operator::In | Operator::NotIn);
                let values = match e.values {
                    Some(v) if !needs_values && !v.value.is_empty() => {
                        problems.push(at(&v, format!("{} takes no values", e.operator.value)));
                        Vec::new()
                    }
                    Some(v) => v.value,
                    None => Vec::new(),
                };
                if needs_values && values.is_empty() {
                    problems.push(at(
                        &e.operator,
                        format!("{} needs a non-empty values list", e.operator.value),
                    ));
                }
                (e.key, op, values)
            })
            .collect(),
    });
    let mode = mode_of(&raw.mode, problems);
    let mut paths = PathFilter::default();
    if let Some(p) = raw.paths {
        for (list, out) in [
            (p.include, &mut paths.include),
            (p.exclude, &mut paths.exclude),
        ] {
            for prefix in list {
                if prefix.value.starts_with('/') {
                    out.push(prefix.value);
                } else {
                    problems.push(at(
                        &prefix,
                        format!(
                            "path prefix {:?} is not absolute: expected a path starting with /",
                            prefix.value
                        ),
                    ));
                }
            }
        }
    }
    Rule {
        namespaces,
        selector,
        mode,
        allow_pod_override: raw.allow_pod_override,
        paths: Arc::new(paths),
    }
}

#[cfg(test)]
mod tests;
