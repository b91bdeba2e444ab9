//! How a test's output is compared with its expected output: the built-in checkers, or a
//! checker program.
//!
//! The default is the rule Wolf always had (`lines`): trailing whitespace on each line and
//! trailing empty lines do not count. A built-in checker compares bytes; nothing here parses the
//! program's output beyond what its rule says, and any input terminates in linear time. A
//! checker program (`testlib`) is compiled once and run sandboxed per test; what its exit code
//! means is [`crate::testlib`].

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A checker: built in (`{"type": "exact" | "lines" | "tokens" | "float", "epsilon"?}`) or a
/// program (`{"type": "testlib", "code", "executionEngine", "limits"?}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Checker {
    // Struct variants, though empty: serde refuses unknown fields only in those
    // (`{"type": "exact", "epsilon": 1}` is an error, not a silently ignored epsilon).
    /// Byte for byte.
    Exact {},
    /// Line by line, ignoring trailing whitespace on each line and trailing empty lines.
    Lines {},
    /// The same whitespace-separated tokens, however they are spaced.
    Tokens {},
    /// Tokens; where both are numbers they may differ by `epsilon`, absolute or relative to
    /// the expected value (whichever is larger), as judges compare floating-point answers.
    Float {
        /// Allowed difference (default 1e-6); finite, not negative.
        #[serde(default = "default_epsilon")]
        epsilon: f64,
    },
    /// A checker program, run as `checker input output answer` in its own sandbox after each
    /// test whose program exited 0, following testlib's conventions (exit 0 accepted, 1 wrong
    /// answer, 2 presentation error, 3 judge failure, 7 partial points; the message on stderr).
    Testlib {
        /// Its source code.
        code: String,
        /// Its engine (any of the registry's, not necessarily the program's).
        #[serde(rename = "executionEngine")]
        execution_engine: String,
        /// Files beside it in its work dir (`testlib.h`, a header of its own), as a
        /// submission's `files`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        files: Vec<crate::FileInput>,
        /// Its limits (each field given replaces the engine's default; the caps apply).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "crate::job::limits_object"
        )]
        limits: Option<crate::LimitsInput>,
    },
}

/// An interactor (`{"code", "executionEngine", "files"?, "limits"?}`): per test it runs in a
/// sandbox of its own as `interactor input output answer`, its stdin fed live by the
/// program's stdout and its stdout feeding the program's stdin; its exit code decides the
/// test as a checker's would ([`crate::testlib`]), unless the program broke its own limits or
/// failed first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Interactor {
    /// Its source code.
    #[schema(min_length = 1, pattern = "\\S")]
    pub code: String,
    /// Its engine (any of the registry's, not necessarily the program's).
    pub execution_engine: String,
    /// Files beside it in its work dir (`testlib.h`, a header of its own), as a submission's
    /// `files`; not named `input`, `output` or `answer`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<crate::FileInput>,
    /// Its limits (each field given replaces the engine's default; the caps apply). Its wall
    /// limit bounds how long it waits on a program that never answers.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::job::limits_object"
    )]
    pub limits: Option<crate::LimitsInput>,
}

impl Default for Checker {
    /// The rule Wolf always had.
    fn default() -> Self {
        Checker::Lines {}
    }
}

fn default_epsilon() -> f64 {
    1e-6
}

impl Checker {
    /// Whether this is a checker program (run by the test suite, not compared here).
    pub fn is_program(&self) -> bool {
        matches!(self, Checker::Testlib { .. })
    }

    /// Whether `got` is accepted against `expected` by a built-in rule. A checker program is
    /// run by the test suite with the expected output as its answer file, never through this:
    /// as a comparison it accepts nothing, so a path that forgot it fails closed.
    pub fn accepts(&self, got: &[u8], expected: &[u8]) -> bool {
        match self {
            Checker::Testlib { .. } => false,
            Checker::Exact {} => got == expected,
            Checker::Lines {} => lines(got) == lines(expected),
            Checker::Tokens {} => tokens(got).eq(tokens(expected)),
            Checker::Float { epsilon } => {
                let (mut g, mut e) = (tokens(got), tokens(expected));
                loop {
                    match (g.next(), e.next()) {
                        (None, None) => return true,
                        (Some(a), Some(b)) if close(a, b, *epsilon) => {}
                        _ => return false,
                    }
                }
            }
        }
    }

    /// Why a checker is not usable (422 at the API).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Checker::Float { epsilon } if !epsilon.is_finite() || *epsilon < 0.0 => Err(format!(
                "checker epsilon must be finite and not negative, got {epsilon}"
            )),
            Checker::Testlib { code, .. } if crate::names::is_blank(code) => Err("the checker's code is empty".into()),
            _ => Ok(()),
        }
    }
}

fn lines(b: &[u8]) -> Vec<&[u8]> {
    let mut v: Vec<&[u8]> = b.split(|&c| c == b'\n').map(|l| l.trim_ascii_end()).collect();
    while v.last().is_some_and(|l| l.is_empty()) {
        v.pop();
    }
    v
}

fn tokens(b: &[u8]) -> impl Iterator<Item = &[u8]> {
    b.split(|c| c.is_ascii_whitespace()).filter(|t| !t.is_empty())
}

fn close(a: &[u8], b: &[u8], epsilon: f64) -> bool {
    if a == b {
        return true;
    }
    let num = |t: &[u8]| {
        std::str::from_utf8(t)
            .ok()?
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
    };
    match (num(a), num(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= epsilon * y.abs().max(1.0),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_accepts_what_it_says_and_refuses_the_rest() {
        assert!(Checker::Exact {}.accepts(b"3\n", b"3\n"));
        assert!(!Checker::Exact {}.accepts(b"3", b"3\n"));
        assert!(Checker::Lines {}.accepts(b"1 2  \n3\n\n\n", b"1 2\n3"));
        assert!(!Checker::Lines {}.accepts(b"1  2\n", b"1 2\n"), "inner spacing counts");
        assert!(Checker::Tokens {}.accepts(b"1  2\n\t3", b"1 2 3\n"));
        assert!(!Checker::Tokens {}.accepts(b"1 2", b"1 2 3"));
        let f = Checker::Float { epsilon: 1e-3 };
        assert!(f.accepts(b"3.1415 x\n", b"3.1416 x"));
        assert!(!f.accepts(b"3.13 x", b"3.1416 x"), "outside epsilon");
        assert!(
            f.accepts(b"1000000.5", b"1000000"),
            "relative to a large expected value"
        );
        assert!(!f.accepts(b"inf", b"1e308"), "an infinity is not a number here");
        assert!(!f.accepts(b"1 2", b"1"), "a token too many");
        assert!(Checker::Float { epsilon: -1.0 }.validate().is_err());
        assert!(Checker::Float { epsilon: f64::NAN }.validate().is_err());
    }

    #[test]
    fn checkers_parse_from_the_documented_json() {
        let c: Checker = serde_json::from_str(r#"{"type":"float","epsilon":0.01}"#).unwrap();
        assert_eq!(c, Checker::Float { epsilon: 0.01 });
        let c: Checker = serde_json::from_str(r#"{"type":"float"}"#).unwrap();
        assert_eq!(c, Checker::Float { epsilon: 1e-6 });
        assert!(
            serde_json::from_str::<Checker>(r#"{"type":"testlib","code":"x"}"#).is_err(),
            "a checker program names its engine"
        );
        let c: Checker = serde_json::from_str(
            r#"{"type":"testlib","code":"x","executionEngine":"python","limits":{"cpuTimeMs":500}}"#,
        )
        .unwrap();
        assert!(c.is_program() && !c.accepts(b"1", b"1"));
        assert!(
            serde_json::from_str::<Checker>(r#"{"type":"testlib","code":"x","executionEngine":"c","epsilon":1}"#)
                .is_err()
        );
        assert!(
            serde_json::from_str::<Checker>(r#"{"type":"testlib","code":"x","executionEngine":"c","limits":[1]}"#)
                .is_err(),
            "limits only as an object"
        );
        let empty: Checker = serde_json::from_str(r#"{"type":"testlib","code":"  ","executionEngine":"c"}"#).unwrap();
        assert!(empty.validate().is_err());
        assert!(serde_json::from_str::<Checker>(r#"{"type":"exact","epsilon":1}"#).is_err());
        assert_eq!(
            serde_json::from_str::<Checker>(r#"{"type":"tokens"}"#).unwrap(),
            Checker::Tokens {}
        );
    }
}
