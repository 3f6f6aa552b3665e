//! sf-processor's policy language (its "Falco dialect") over SysFlow records, as its own code
//! behaves: the token grammar ([`lexer`], [`parser`]), the compiler with its definition
//! visibility and lints ([`compiler`]), the attribute table ([`attrs`]) and compiled
//! conditions ([`expr`]). See `shared/policy-kit/LANGUAGE.md` in the conformance kit for the
//! semantics, with citations into sf-processor.

pub mod alike;
pub mod attrs;
pub mod compiler;
pub mod engine;
pub mod expr;
pub mod flat;
pub mod golang;
pub mod index;
pub mod json;
pub mod lexer;
pub mod parser;
pub mod runner;
pub mod verdicts;

pub use compiler::{CompileError, Lint, Policy, Priority, Rule, compile_paths};
