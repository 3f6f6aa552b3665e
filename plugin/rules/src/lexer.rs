//! The token grammar sf-processor reads policy files with (its ANTLR lexer, `Sfpl.g4`), not
//! YAML: several shipped files are not valid YAML (tabs, a stray leading space) and still
//! load. At each position the longest match wins; on a tie, keywords beat severities, which
//! beat identifiers, then numbers, paths, strings and tags, as the grammar declares them.
//! Whitespace and `#` comments separate tokens and are otherwise dropped.

use std::fmt;

/// Words the lexer reserves, case-sensitive (`rule` .. `exists`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keyword {
    Rule,
    Filter,
    Drop,
    Macro,
    List,
    Name,
    Items,
    Condition,
    Desc,
    Actions,
    Output,
    Priority,
    Tags,
    Prefilter,
    Enabled,
    WarnEvttypes,
    SkipIfUnknownFilter,
    Append,
    RequiredEngineVersion,
    And,
    Or,
    Not,
    In,
    Contains,
    IContains,
    StartsWith,
    EndsWith,
    PMatch,
    Exists,
}

const KEYWORDS: [(&str, Keyword); 29] = [
    ("rule", Keyword::Rule),
    ("filter", Keyword::Filter),
    ("drop", Keyword::Drop),
    ("macro", Keyword::Macro),
    ("list", Keyword::List),
    ("name", Keyword::Name),
    ("items", Keyword::Items),
    ("condition", Keyword::Condition),
    ("desc", Keyword::Desc),
    ("actions", Keyword::Actions),
    ("output", Keyword::Output),
    ("priority", Keyword::Priority),
    ("tags", Keyword::Tags),
    ("prefilter", Keyword::Prefilter),
    ("enabled", Keyword::Enabled),
    ("warn_evttypes", Keyword::WarnEvttypes),
    ("skip-if-unknown-filter", Keyword::SkipIfUnknownFilter),
    ("append", Keyword::Append),
    ("required_engine_version", Keyword::RequiredEngineVersion),
    ("and", Keyword::And),
    ("or", Keyword::Or),
    ("not", Keyword::Not),
    ("in", Keyword::In),
    ("contains", Keyword::Contains),
    ("icontains", Keyword::IContains),
    ("startswith", Keyword::StartsWith),
    ("endswith", Keyword::EndsWith),
    ("pmatch", Keyword::PMatch),
    ("exists", Keyword::Exists),
];

/// Priority words, in any letter case.
const SEVERITIES: [&str; 12] = [
    "high",
    "medium",
    "low",
    "emergency",
    "alert",
    "critical",
    "error",
    "warning",
    "notice",
    "info",
    "informational",
    "debug",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Keyword(Keyword),
    Severity,
    Id,
    Number,
    Path,
    Str,
    Tag,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Neq,
    LParen,
    RParen,
    LBrack,
    RBrack,
    Comma,
    /// `-`, which starts every item.
    Decl,
    /// `:` (with an optional ` >`).
    Def,
    /// Any other character: allowed inside rule names and descriptions only.
    Any,
}

impl Kind {
    /// Whether the grammar accepts this token as an operand (`atom`).
    pub fn is_atom(self) -> bool {
        matches!(
            self,
            Kind::Id | Kind::Number | Kind::Path | Kind::Str | Kind::Tag | Kind::Lt | Kind::Gt
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Keyword(k) => {
                let word = KEYWORDS
                    .iter()
                    .find(|(_, kw)| kw == k)
                    .map_or("?", |(w, _)| w);
                write!(f, "'{word}'")
            }
            Kind::Severity => f.write_str("a priority"),
            Kind::Id => f.write_str("a name"),
            Kind::Number => f.write_str("a number"),
            Kind::Path => f.write_str("a path"),
            Kind::Str => f.write_str("a string"),
            Kind::Tag => f.write_str("a tag"),
            Kind::Lt => f.write_str("'<'"),
            Kind::Le => f.write_str("'<='"),
            Kind::Gt => f.write_str("'>'"),
            Kind::Ge => f.write_str("'>='"),
            Kind::Eq => f.write_str("'='"),
            Kind::Neq => f.write_str("'!='"),
            Kind::LParen => f.write_str("'('"),
            Kind::RParen => f.write_str("')'"),
            Kind::LBrack => f.write_str("'['"),
            Kind::RBrack => f.write_str("']'"),
            Kind::Comma => f.write_str("','"),
            Kind::Decl => f.write_str("'-'"),
            Kind::Def => f.write_str("':'"),
            Kind::Any => f.write_str("a stray character"),
        }
    }
}

/// Where something is in a file: line and column, both from 1 (columns in characters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    pub kind: Kind,
    /// Byte range in the source.
    pub start: usize,
    pub end: usize,
    pub pos: Pos,
}

impl Token {
    pub fn text<'s>(&self, source: &'s str) -> &'s str {
        &source[self.start..self.end]
    }
}

/// The visible tokens of `source`, in order. Never fails: a character no token starts with
/// becomes an [`Kind::Any`] token, which the parser rejects wherever it matters.
pub fn tokenize(source: &str) -> Vec<Token> {
    let bytes = source.as_bytes();
    let mut tokens = Vec::new();
    let mut at = 0;
    let mut pos = Pos { line: 1, column: 1 };
    while at < bytes.len() {
        let b = bytes[at];
        if matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0c) {
            advance(&mut pos, &source[at..at + 1]);
            at += 1;
            continue;
        }
        if b == b'#' {
            let end = memchr_newline(bytes, at);
            advance(&mut pos, &source[at..end]);
            at = end;
            continue;
        }
        let (kind, len) = longest_match(source, at);
        let end = at + len;
        tokens.push(Token {
            kind,
            start: at,
            end,
            pos,
        });
        advance(&mut pos, &source[at..end]);
        at = end;
    }
    tokens
}

fn memchr_newline(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .map_or(bytes.len(), |i| from + i)
}

fn advance(pos: &mut Pos, text: &str) {
    for c in text.chars() {
        if c == '\n' {
            pos.line += 1;
            pos.column = 1;
        } else {
            pos.column += 1;
        }
    }
}

/// The token at `at` (not whitespace) and its length in bytes.
fn longest_match(source: &str, at: usize) -> (Kind, usize) {
    let rest = &source.as_bytes()[at..];
    // Punctuation and operators: nothing else starts with these characters.
    let punct = match rest {
        [b'<', b'=', ..] => Some((Kind::Le, 2)),
        [b'>', b'=', ..] => Some((Kind::Ge, 2)),
        [b'!', b'=', ..] => Some((Kind::Neq, 2)),
        [b'<', ..] => Some((Kind::Lt, 1)),
        [b'>', ..] => Some((Kind::Gt, 1)),
        [b'=', ..] => Some((Kind::Eq, 1)),
        [b'(', ..] => Some((Kind::LParen, 1)),
        [b')', ..] => Some((Kind::RParen, 1)),
        [b'[', ..] => Some((Kind::LBrack, 1)),
        [b']', ..] => Some((Kind::RBrack, 1)),
        [b',', ..] => Some((Kind::Comma, 1)),
        [b'-', ..] => Some((Kind::Decl, 1)),
        [b':', ..] => Some((Kind::Def, def_len(rest))),
        _ => None,
    };
    if let Some(found) = punct {
        return found;
    }
    if let Some(len) = string_len(rest) {
        return (Kind::Str, len);
    }
    // Candidates in declaration order; a later one wins only when strictly longer.
    let mut best: Option<(Kind, usize)> = None;
    let mut offer = |kind: Kind, len: usize| {
        if len > 0 && best.is_none_or(|(_, l)| len > l) {
            best = Some((kind, len));
        }
    };
    for (text, kw) in KEYWORDS {
        if rest.starts_with(text.as_bytes()) {
            offer(Kind::Keyword(kw), text.len());
        }
    }
    for text in SEVERITIES {
        if rest.len() >= text.len() && rest[..text.len()].eq_ignore_ascii_case(text.as_bytes()) {
            offer(Kind::Severity, text.len());
        }
    }
    let id = id_len(rest);
    offer(Kind::Id, id);
    offer(Kind::Number, number_len(rest));
    offer(Kind::Path, path_len(rest));
    if id > 0 && rest.get(id) == Some(&b':') {
        let second = id_len(&rest[id + 1..]);
        if second > 0 {
            offer(Kind::Tag, id + 1 + second);
        }
    }
    best.unwrap_or_else(|| {
        let c = source[at..].chars().next().map_or(1, char::len_utf8);
        (Kind::Any, c)
    })
}

/// `':' (' '* '>')?`
fn def_len(rest: &[u8]) -> usize {
    let spaces = rest[1..].iter().take_while(|&&b| b == b' ').count();
    if rest.get(1 + spaces) == Some(&b'>') {
        2 + spaces
    } else {
        1
    }
}

/// A quoted string: `"…"`, `'…'`, `\"…\"` or `''…''`, on one line, with no escapes; its
/// body is either a nested quoted string or any text, the text matched as little as possible.
/// How far that reaches is what ANTLR's lexer makes of the grammar, so it is simulated as
/// ANTLR does: configurations in priority order (a nested string before plain text, leaving
/// a non-greedy loop before staying in it), the token ending at the last accepting position,
/// and, once a position accepts, lower-priority configurations that went through the
/// non-greedy loop dropped. Plain `'a', 'b'` is two strings; `'x ''y'' z'` is one.
fn string_len(rest: &[u8]) -> Option<usize> {
    if !matches!(rest.first(), Some(b'"' | b'\'' | b'\\')) {
        return None;
    }
    let mut configs = Vec::new();
    let mut accepted = false;
    closure(Config::start(), &mut configs, &mut accepted);
    let mut last_accept = None;
    for (i, &c) in rest.iter().enumerate() {
        let mut reach: Vec<Config> = Vec::new();
        let mut accepted = false;
        for config in configs {
            if accepted && config.non_greedy {
                continue;
            }
            if let Some(next) = config.step(c) {
                closure(next, &mut reach, &mut accepted);
            }
        }
        if accepted {
            last_accept = Some(i + 1);
        }
        if reach.is_empty() {
            break;
        }
        configs = reach;
    }
    last_accept
}

const QUOTES: [&[u8]; 4] = [b"\"", b"'", b"\\\"", b"''"];

/// Bounds on the simulation: real policies nest strings two or three deep, while a run of
/// quotes could otherwise multiply the ways of matching without end. Past them the
/// lowest-priority ways are dropped.
const MAX_CONFIGS: usize = 64;
const MAX_DEPTH: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// `n` bytes of the opening quote matched.
    Open(u8),
    /// In the non-greedy text loop, about to consume one more byte.
    Text,
    /// `n` bytes of the closing quote matched.
    Close(u8),
    /// At the start of the body: a nested string or text.
    Body,
    /// At the non-greedy loop's decision.
    Loop,
}

/// One way of matching so far: the nested strings open, innermost last.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Config {
    frames: Vec<(u8, Phase)>,
    non_greedy: bool,
}

impl Config {
    fn start() -> Config {
        Config {
            frames: Vec::new(),
            non_greedy: false,
        }
    }

    /// Consumes one byte, if this configuration can.
    fn step(mut self, c: u8) -> Option<Config> {
        let (q, phase) = *self.frames.last()?;
        let quote = QUOTES[q as usize];
        let next = match phase {
            Phase::Open(n) if quote[n as usize] == c => {
                if n as usize + 1 == quote.len() {
                    Phase::Body
                } else {
                    Phase::Open(n + 1)
                }
            }
            Phase::Text if c != b'\r' && c != b'\n' => Phase::Loop,
            Phase::Close(n) if quote[n as usize] == c => Phase::Close(n + 1),
            _ => return None,
        };
        *self.frames.last_mut()? = (q, next);
        Some(self)
    }
}

/// Follows the moves that consume nothing, in priority order, adding the configurations that
/// wait for a byte; sets `accepted` when one ends the token.
fn closure(mut config: Config, out: &mut Vec<Config>, accepted: &mut bool) {
    let Some(&(q, phase)) = config.frames.last() else {
        // The token's start: each quote form in the grammar's order.
        for q in 0..QUOTES.len() as u8 {
            let mut c = config.clone();
            c.frames.push((q, Phase::Open(0)));
            closure(c, out, accepted);
        }
        return;
    };
    match phase {
        Phase::Open(_) | Phase::Text => add(config, out, *accepted),
        Phase::Close(n) if (n as usize) < QUOTES[q as usize].len() => add(config, out, *accepted),
        Phase::Close(_) => {
            config.frames.pop();
            match config.frames.last_mut() {
                None => {
                    *accepted = true;
                }
                Some(parent) => {
                    parent.1 = Phase::Close(0);
                    closure(config, out, accepted);
                }
            }
        }
        Phase::Body => {
            let depth = config.frames.len();
            for nested in (0..QUOTES.len() as u8).filter(|_| depth < MAX_DEPTH) {
                let mut c = config.clone();
                c.frames.push((nested, Phase::Open(0)));
                closure(c, out, accepted);
            }
            if let Some(top) = config.frames.last_mut() {
                top.1 = Phase::Loop;
            }
            closure(config, out, accepted);
        }
        Phase::Loop => {
            config.non_greedy = true;
            let mut leave = config.clone();
            if let Some(top) = leave.frames.last_mut() {
                top.1 = Phase::Close(0);
            }
            closure(leave, out, accepted);
            if let Some(top) = config.frames.last_mut() {
                top.1 = Phase::Text;
            }
            closure(config, out, accepted);
        }
    }
}

fn add(config: Config, out: &mut Vec<Config>, accepted: bool) {
    if accepted && config.non_greedy || out.len() >= MAX_CONFIGS {
        return;
    }
    if !out.contains(&config) {
        out.push(config);
    }
}

fn is_id_start(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `ID: [A-Za-z0-9_] ([A-Za-z0-9_.*-] | ':'? '[' (NUMBER|PATH) (':' PATH)* ']')*`
fn id_len(rest: &[u8]) -> usize {
    if !rest.first().is_some_and(|&b| is_id_start(b)) {
        return 0;
    }
    let mut i = 1;
    loop {
        match rest.get(i) {
            Some(&b) if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'*' | b'-') => {
                i += 1;
            }
            Some(b'[') => match bracket_group_len(&rest[i..]) {
                Some(n) => i += n,
                None => return i,
            },
            Some(b':') if rest.get(i + 1) == Some(&b'[') => {
                match bracket_group_len(&rest[i + 1..]) {
                    Some(n) => i += 1 + n,
                    None => return i,
                }
            }
            _ => return i,
        }
    }
}

/// `'[' (NUMBER|PATH) (':' PATH)* ']'`, from the `[`.
fn bracket_group_len(rest: &[u8]) -> Option<usize> {
    let mut i = 1;
    let first = path_len(&rest[i..]).max(number_len(&rest[i..]));
    if first == 0 {
        return None;
    }
    i += first;
    while rest.get(i) == Some(&b':') {
        let next = path_len(&rest[i + 1..]);
        if next == 0 {
            break;
        }
        i += 1 + next;
    }
    (rest.get(i) == Some(&b']')).then_some(i + 1)
}

/// `NUMBER: [0-9]+ ('.' [0-9]+)?`
fn number_len(rest: &[u8]) -> usize {
    let int = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if int == 0 {
        return 0;
    }
    if rest.get(int) == Some(&b'.') {
        let frac = rest[int + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if frac > 0 {
            return int + 1 + frac;
        }
    }
    int
}

/// `PATH: [A-Za-z0-9/.] [A-Za-z0-9_./*-]*`
fn path_len(rest: &[u8]) -> usize {
    if !rest
        .first()
        .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'/' || b == b'.')
    {
        return 0;
    }
    1 + rest[1..]
        .iter()
        .take_while(|&&b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'*' | b'-')
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(source: &str) -> Vec<(Kind, &str)> {
        tokenize(source)
            .into_iter()
            .map(|t| (t.kind, t.text(source)))
            .collect()
    }

    #[test]
    fn longest_match_then_declaration_order() {
        assert_eq!(
            kinds("- rule: a b\n  desc: >\n  condition: sf.proc.exe = /bin/sh # x"),
            [
                (Kind::Decl, "-"),
                (Kind::Keyword(Keyword::Rule), "rule"),
                (Kind::Def, ":"),
                (Kind::Id, "a"),
                (Kind::Id, "b"),
                (Kind::Keyword(Keyword::Desc), "desc"),
                (Kind::Def, ": >"),
                (Kind::Keyword(Keyword::Condition), "condition"),
                (Kind::Def, ":"),
                (Kind::Id, "sf.proc.exe"),
                (Kind::Eq, "="),
                (Kind::Path, "/bin/sh"),
            ]
        );
        // Severity words in any case, but a longer identifier wins.
        assert_eq!(
            kinds("Debug info yum-debug-dump informational rules"),
            [
                (Kind::Severity, "Debug"),
                (Kind::Severity, "info"),
                (Kind::Id, "yum-debug-dump"),
                (Kind::Severity, "informational"),
                (Kind::Id, "rules"),
            ]
        );
        assert_eq!(
            kinds("'\"bash\"', '\"sh\"' '\"a \\\"b(''c'')\\\"\"'"),
            [
                (Kind::Str, "'\"bash\"'"),
                (Kind::Comma, ","),
                (Kind::Str, "'\"sh\"'"),
                (Kind::Str, "'\"a \\\"b(''c'')\\\"\"'"),
            ]
        );
        assert_eq!(
            kinds("sf.pod.services[0.clusterip.0] 80 a:b '\"x\"' \"a b\" != <= ! @"),
            [
                (Kind::Id, "sf.pod.services[0.clusterip.0]"),
                (Kind::Id, "80"),
                (Kind::Tag, "a:b"),
                (Kind::Str, "'\"x\"'"),
                (Kind::Str, "\"a b\""),
                (Kind::Neq, "!="),
                (Kind::Le, "<="),
                (Kind::Any, "!"),
                (Kind::Any, "@"),
            ]
        );
    }

    #[test]
    fn positions_are_lines_and_columns_from_one() {
        let t = tokenize("a\n\t bc # c\n  d");
        let at: Vec<(u32, u32)> = t.iter().map(|t| (t.pos.line, t.pos.column)).collect();
        assert_eq!(at, [(1, 1), (2, 3), (3, 3)]);
    }
}
