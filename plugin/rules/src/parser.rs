//! The items of one policy file (rules, filters, macros, lists), parsed from the tokens as
//! sf-processor's grammar does: the order of a rule's fields is fixed (name, `desc`,
//! `condition`, then the optional ones), names and descriptions run to the next field
//! keyword, `not` binds tighter than `and`, `and` tighter than `or`, `exists` is postfix, the
//! right side of a comparison is one operand.

use crate::lexer::{Keyword, Kind, Pos, Token, tokenize};

/// An operand as written (token text, quotes included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Atom {
    pub text: String,
    pub pos: Pos,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Neq,
    Contains,
    IContains,
    StartsWith,
    EndsWith,
}

impl CompareOp {
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            CompareOp::Lt | CompareOp::Le | CompareOp::Gt | CompareOp::Ge
        )
    }
}

/// A condition as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cond {
    /// A bare name: a macro, or nothing (false).
    Ref(Atom),
    Not(Box<Cond>),
    Exists(Atom),
    Compare {
        op: CompareOp,
        left: Atom,
        right: Atom,
    },
    /// `in (...)`, or `pmatch (...)`: the bare operands only. `[a, b]` groups inside the
    /// parentheses parse but count for nothing (`ignored_groups` says where, for the linter).
    In {
        left: Atom,
        pmatch: bool,
        values: Vec<Atom>,
        ignored_groups: Vec<Pos>,
    },
    And(Vec<Cond>),
    Or(Vec<Cond>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleItem {
    pub name: String,
    pub desc: String,
    pub condition: Cond,
    pub priority: Option<Atom>,
    pub tags: Option<Vec<String>>,
    pub prefilter: Option<Vec<String>>,
    pub enabled: Option<Atom>,
    pub actions: Option<Vec<String>>,
    pub pos: Pos,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterItem {
    pub name: String,
    pub condition: Cond,
    pub enabled: Option<Atom>,
    pub pos: Pos,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MacroItem {
    pub name: String,
    pub condition: Cond,
    pub pos: Pos,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListItem {
    pub name: String,
    /// The items as sf-processor stores them (see [`split_items`]).
    pub items: Vec<String>,
    pub pos: Pos,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Rule(RuleItem),
    Filter(FilterItem),
    Macro(MacroItem),
    List(ListItem),
    RequiredEngineVersion,
}

/// What the parser met where it expected something else.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: expected {expected}, found {found}")]
pub struct SyntaxError {
    pub pos: Pos,
    pub expected: String,
    pub found: String,
}

/// Parses a whole file; the first syntax error ends it.
pub fn parse(source: &str) -> Result<Vec<Item>, SyntaxError> {
    let tokens = tokenize(source);
    let mut p = Parser {
        source,
        tokens: &tokens,
        at: 0,
        depth: 0,
    };
    let mut items = Vec::new();
    loop {
        items.push(p.item()?);
        if p.peek().is_none() {
            return Ok(items);
        }
    }
}

/// `[a, "b", c]` as sf-processor reads it: the tokens' text joined without whitespace, the
/// outer brackets removed, split at every comma (inside quotes too), and each piece trimmed of
/// one bounding quote at each end. `[]` is one empty item.
pub fn split_items(joined: &str) -> Vec<String> {
    let inner = joined.strip_prefix('[').unwrap_or(joined);
    let inner = inner.strip_suffix(']').unwrap_or(inner);
    inner
        .split(',')
        .map(|s| trim_bounding_quotes(s).to_string())
        .collect()
}

/// Removes at most one leading and one trailing quote (`'` or `"`, not necessarily the same).
pub fn trim_bounding_quotes(s: &str) -> &str {
    let s = s.strip_prefix(['"', '\'']).unwrap_or(s);
    s.strip_suffix(['"', '\'']).unwrap_or(s)
}

/// Field keywords that end a name or description.
fn ends_text(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Keyword(
            Keyword::Desc
                | Keyword::Condition
                | Keyword::Actions
                | Keyword::Output
                | Keyword::Priority
                | Keyword::Tags
                | Keyword::Prefilter
                | Keyword::Enabled
                | Keyword::WarnEvttypes
                | Keyword::SkipIfUnknownFilter
                | Keyword::Append
        )
    )
}

const ATOM: &str = "an operand (a name, path, number or quoted string)";

/// `not` and parentheses nest at most this deep (the parser recurses on them).
pub const MAX_NESTING: usize = 64;

struct Parser<'s, 't> {
    source: &'s str,
    tokens: &'t [Token],
    at: usize,
    depth: usize,
}

impl Parser<'_, '_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn peek_kind(&self) -> Option<Kind> {
        self.peek().map(|t| t.kind)
    }

    fn error(&self, expected: &str) -> SyntaxError {
        match self.peek() {
            Some(t) => SyntaxError {
                pos: t.pos,
                expected: expected.to_string(),
                found: format!("'{}'", t.text(self.source)),
            },
            None => SyntaxError {
                pos: self.tokens.last().map_or(Pos { line: 1, column: 1 }, |t| {
                    let mut p = t.pos;
                    p.column += t.text(self.source).chars().count() as u32;
                    p
                }),
                expected: expected.to_string(),
                found: "the end of the file".to_string(),
            },
        }
    }

    fn expect(&mut self, kind: Kind, expected: &str) -> Result<Token, SyntaxError> {
        match self.peek() {
            Some(t) if t.kind == kind => {
                let t = *t;
                self.at += 1;
                Ok(t)
            }
            _ => Err(self.error(expected)),
        }
    }

    fn eat(&mut self, kind: Kind) -> bool {
        if self.peek_kind() == Some(kind) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn keyword_def(&mut self, kw: Keyword, expected: &str) -> Result<(), SyntaxError> {
        self.expect(Kind::Keyword(kw), expected)?;
        self.expect(Kind::Def, "':'")?;
        Ok(())
    }

    fn item(&mut self) -> Result<Item, SyntaxError> {
        let decl = self.expect(Kind::Decl, "'-' (a rule, filter, macro or list)")?;
        let pos = decl.pos;
        let Some(Kind::Keyword(kw)) = self.peek_kind() else {
            return Err(self.error("rule, filter, drop, macro, list or required_engine_version"));
        };
        self.at += 1;
        self.expect(Kind::Def, "':'")?;
        match kw {
            Keyword::Rule => self.rule(pos).map(Item::Rule),
            Keyword::Filter | Keyword::Drop => {
                let name = self.expect(Kind::Id, "a filter name (one word)")?;
                self.keyword_def(Keyword::Condition, "'condition'")?;
                let condition = self.expression()?;
                let enabled = if self.peek_kind() == Some(Kind::Keyword(Keyword::Enabled)) {
                    self.keyword_def(Keyword::Enabled, "'enabled'")?;
                    Some(self.atom()?)
                } else {
                    None
                };
                Ok(Item::Filter(FilterItem {
                    name: name.text(self.source).to_string(),
                    condition,
                    enabled,
                    pos,
                }))
            }
            Keyword::Macro => {
                let name = self.expect(Kind::Id, "a macro name (one word)")?;
                self.keyword_def(Keyword::Condition, "'condition'")?;
                let condition = self.expression()?;
                // `append:` parses and changes nothing (sf-processor overwrites the macro).
                if self.peek_kind() == Some(Kind::Keyword(Keyword::Append)) {
                    self.keyword_def(Keyword::Append, "'append'")?;
                    self.atom()?;
                }
                Ok(Item::Macro(MacroItem {
                    name: name.text(self.source).to_string(),
                    condition,
                    pos,
                }))
            }
            Keyword::List => {
                let name = self.expect(Kind::Id, "a list name (one word)")?;
                self.keyword_def(Keyword::Items, "'items'")?;
                let joined = self.bracketed("items")?;
                Ok(Item::List(ListItem {
                    name: name.text(self.source).to_string(),
                    items: split_items(&joined),
                    pos,
                }))
            }
            Keyword::RequiredEngineVersion => {
                self.atom()?;
                Ok(Item::RequiredEngineVersion)
            }
            _ => {
                self.at -= 2;
                Err(self.error("rule, filter, drop, macro, list or required_engine_version"))
            }
        }
    }

    fn rule(&mut self, pos: Pos) -> Result<RuleItem, SyntaxError> {
        let name = self.text("a rule name")?;
        self.keyword_def(Keyword::Desc, "'desc'")?;
        let desc = self.text("a description")?;
        self.keyword_def(Keyword::Condition, "'condition'")?;
        let condition = self.expression()?;
        let mut rule = RuleItem {
            name,
            desc,
            condition,
            priority: None,
            tags: None,
            prefilter: None,
            enabled: None,
            actions: None,
            pos,
        };
        // Optional fields, in any order and number; the first of each counts.
        while let Some(Kind::Keyword(kw)) = self.peek_kind() {
            match kw {
                Keyword::Output => {
                    self.keyword_def(kw, "'output'")?;
                    self.text("an output text")?;
                }
                Keyword::Actions => {
                    self.keyword_def(kw, "'actions'")?;
                    let v = split_items(&self.bracketed("actions")?);
                    rule.actions.get_or_insert(v);
                }
                Keyword::Priority => {
                    self.keyword_def(kw, "'priority'")?;
                    let t = self.expect(
                        Kind::Severity,
                        "a priority (emergency, alert, critical, error, warning, notice, informational, info, debug, high, medium, low)",
                    )?;
                    rule.priority.get_or_insert(Atom {
                        text: t.text(self.source).to_string(),
                        pos: t.pos,
                    });
                }
                Keyword::Tags => {
                    self.keyword_def(kw, "'tags'")?;
                    let v = split_items(&self.bracketed("tags")?);
                    rule.tags.get_or_insert(v);
                }
                Keyword::Prefilter => {
                    self.keyword_def(kw, "'prefilter'")?;
                    let v = split_items(&self.bracketed("prefilter")?);
                    rule.prefilter.get_or_insert(v);
                }
                Keyword::Enabled => {
                    self.keyword_def(kw, "'enabled'")?;
                    let a = self.atom()?;
                    rule.enabled.get_or_insert(a);
                }
                Keyword::WarnEvttypes | Keyword::SkipIfUnknownFilter => {
                    self.keyword_def(kw, "a rule field")?;
                    self.atom()?;
                }
                _ => break,
            }
        }
        Ok(rule)
    }

    /// One or more tokens up to the next field keyword; the source text between them, raw.
    fn text(&mut self, what: &str) -> Result<String, SyntaxError> {
        let first = self.at;
        while self.peek().is_some_and(|t| !ends_text(t.kind)) {
            self.at += 1;
        }
        if self.at == first {
            return Err(self.error(what));
        }
        let (start, end) = (self.tokens[first].start, self.tokens[self.at - 1].end);
        Ok(self.source[start..end].to_string())
    }

    /// `'[' (atom (',' atom)*)? ','? ']'`, as the joined token text.
    fn bracketed(&mut self, what: &str) -> Result<String, SyntaxError> {
        let open = self.expect(Kind::LBrack, &format!("'[' (the {what})"))?;
        let mut joined = String::from(open.text(self.source));
        loop {
            match self.peek_kind() {
                Some(Kind::RBrack) => break,
                Some(k) if k.is_atom() => {
                    let a = self.atom()?;
                    joined.push_str(&a.text);
                    match self.peek_kind() {
                        Some(Kind::Comma) => {
                            self.at += 1;
                            joined.push(',');
                        }
                        Some(Kind::RBrack) => break,
                        _ => return Err(self.error("',' or ']'")),
                    }
                }
                Some(Kind::Comma) if joined.len() > 1 => {
                    return Err(self.error(ATOM));
                }
                Some(Kind::Comma) => return Err(self.error(&format!("{ATOM} or ']'"))),
                _ => return Err(self.error(&format!("{ATOM} or ']'"))),
            }
        }
        self.expect(Kind::RBrack, "']'")?;
        joined.push(']');
        Ok(joined)
    }

    fn atom(&mut self) -> Result<Atom, SyntaxError> {
        match self.peek() {
            Some(t) if t.kind.is_atom() => {
                let t = *t;
                self.at += 1;
                Ok(Atom {
                    text: t.text(self.source).to_string(),
                    pos: t.pos,
                })
            }
            _ => Err(self.error(ATOM)),
        }
    }

    fn expression(&mut self) -> Result<Cond, SyntaxError> {
        let mut any = vec![self.and_expression()?];
        while self.eat(Kind::Keyword(Keyword::Or)) {
            any.push(self.and_expression()?);
        }
        Ok(if any.len() == 1 {
            any.remove(0)
        } else {
            Cond::Or(any)
        })
    }

    fn and_expression(&mut self) -> Result<Cond, SyntaxError> {
        let mut all = vec![self.term()?];
        while self.eat(Kind::Keyword(Keyword::And)) {
            all.push(self.term()?);
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Cond::And(all)
        })
    }

    fn term(&mut self) -> Result<Cond, SyntaxError> {
        self.depth += 1;
        let term = self.nested_term();
        self.depth -= 1;
        term
    }

    fn nested_term(&mut self) -> Result<Cond, SyntaxError> {
        const TERM: &str = "a condition ('not', '(', a macro name or an operand)";
        if self.depth > MAX_NESTING {
            return Err(self.error(&format!(
                "a simpler condition ('not' and parentheses nest at most {MAX_NESTING} deep)"
            )));
        }
        match self.peek_kind() {
            Some(Kind::Keyword(Keyword::Not)) => {
                self.at += 1;
                Ok(Cond::Not(Box::new(self.term()?)))
            }
            Some(Kind::LParen) => {
                self.at += 1;
                let inner = self.expression()?;
                self.expect(Kind::RParen, "')'")?;
                Ok(inner)
            }
            Some(k) if k.is_atom() => {
                let left = self.atom()?;
                let op = match self.peek_kind() {
                    Some(Kind::Keyword(Keyword::Exists)) => {
                        self.at += 1;
                        return Ok(Cond::Exists(left));
                    }
                    Some(Kind::Keyword(kw @ (Keyword::In | Keyword::PMatch))) => {
                        self.at += 1;
                        return self.in_list(left, kw == Keyword::PMatch);
                    }
                    Some(Kind::Lt) => CompareOp::Lt,
                    Some(Kind::Le) => CompareOp::Le,
                    Some(Kind::Gt) => CompareOp::Gt,
                    Some(Kind::Ge) => CompareOp::Ge,
                    Some(Kind::Eq) => CompareOp::Eq,
                    Some(Kind::Neq) => CompareOp::Neq,
                    Some(Kind::Keyword(Keyword::Contains)) => CompareOp::Contains,
                    Some(Kind::Keyword(Keyword::IContains)) => CompareOp::IContains,
                    Some(Kind::Keyword(Keyword::StartsWith)) => CompareOp::StartsWith,
                    Some(Kind::Keyword(Keyword::EndsWith)) => CompareOp::EndsWith,
                    // A bare name is a macro reference; any other operand needs an operator.
                    _ if k == Kind::Id => return Ok(Cond::Ref(left)),
                    _ => {
                        return Err(self.error(
                            "an operator (=, !=, <, <=, >, >=, contains, icontains, startswith, endswith, in, pmatch, exists)",
                        ));
                    }
                };
                self.at += 1;
                let right = self.atom()?;
                Ok(Cond::Compare { op, left, right })
            }
            _ => Err(self.error(TERM)),
        }
    }

    /// `'(' (atom | items) (',' (atom | items))* ')'`
    fn in_list(&mut self, left: Atom, pmatch: bool) -> Result<Cond, SyntaxError> {
        self.expect(Kind::LParen, "'('")?;
        let mut values = Vec::new();
        let mut ignored_groups = Vec::new();
        loop {
            match self.peek() {
                Some(t) if t.kind == Kind::LBrack => {
                    ignored_groups.push(t.pos);
                    self.bracketed("items")?;
                }
                _ => values.push(
                    self.atom()
                        .map_err(|_| self.error(&format!("{ATOM} or '['")))?,
                ),
            }
            match self.peek_kind() {
                Some(Kind::Comma) => self.at += 1,
                Some(Kind::RParen) => break,
                _ => return Err(self.error("',' or ')'")),
            }
        }
        self.expect(Kind::RParen, "')'")?;
        Ok(Cond::In {
            left,
            pmatch,
            values,
            ignored_groups,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn atom(text: &str, line: u32, column: u32) -> Atom {
        Atom {
            text: text.into(),
            pos: Pos { line, column },
        }
    }

    #[test]
    fn a_rule_with_its_fields_in_any_order_the_first_of_each_counting() {
        let src = " - rule: Shell in a \"box\"\n  desc: >\n    two\n    lines # not this\n  condition:\tsf.proc.name in (bash, [a, b], sh) and not (x or sf.ret < 2)\n  tags: [a, 'b']\n  priority: CRITICAL\n  priority: low\n  enabled: 'false'\n";
        let items = parse(src).unwrap();
        let Item::Rule(r) = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(r.name, "Shell in a \"box\"");
        assert_eq!(r.desc, "two\n    lines");
        assert_eq!(r.priority.as_ref().unwrap().text, "CRITICAL");
        assert_eq!(
            r.tags.as_deref(),
            Some(&["a".to_string(), "b".to_string()][..])
        );
        assert_eq!(r.enabled.as_ref().unwrap().text, "'false'");
        assert_eq!(
            r.condition,
            Cond::And(vec![
                Cond::In {
                    left: atom("sf.proc.name", 5, 14),
                    pmatch: false,
                    values: vec![atom("bash", 5, 31), atom("sh", 5, 45)],
                    ignored_groups: vec![Pos {
                        line: 5,
                        column: 37
                    }],
                },
                Cond::Not(Box::new(Cond::Or(vec![
                    Cond::Ref(atom("x", 5, 58)),
                    Cond::Compare {
                        op: CompareOp::Lt,
                        left: atom("sf.ret", 5, 63),
                        right: atom("2", 5, 72),
                    },
                ]))),
            ])
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!(
            "- macro: m\n  condition: {}a = b{}\n",
            "(".repeat(100),
            ")".repeat(100)
        );
        let e = parse(&deep).unwrap_err();
        assert!(e.expected.contains("nest at most 64"), "{e}");
        let nots = format!("- macro: m\n  condition: {}a = b\n", "not ".repeat(60));
        assert!(parse(&nots).is_ok());
    }

    #[test]
    fn lists_split_at_every_comma_and_trim_one_quote_each_side() {
        assert_eq!(split_items("[]"), [""]);
        assert_eq!(split_items("[a,]"), ["a", ""]);
        assert_eq!(split_items("['\"bash\"',\"a,b\"]"), ["\"bash\"", "a", "b"]);
    }

    #[test]
    fn errors_say_where_and_what_was_expected() {
        let e = parse("- rule: r\n  desc: d\n  condition: sf.ret < -1\n").unwrap_err();
        assert_eq!(
            e.pos,
            Pos {
                line: 3,
                column: 23
            }
        );
        assert_eq!(e.found, "'-'");
        let e = parse("- rule: r\n  desc: d\n  condition: exists sf.file.path\n").unwrap_err();
        assert_eq!((e.pos.line, e.pos.column), (3, 14));
        let e = parse("- rule: r\n  desc: d\n  condition: a = debug\n").unwrap_err();
        assert_eq!(e.found, "'debug'");
        let e = parse("- rule: r\n  condition: a\n").unwrap_err();
        assert!(e.expected.contains("desc"), "{e}");
    }
}
