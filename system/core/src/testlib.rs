//! What a judge's own program (a checker or an interactor) means by its exit code: the
//! conventions of testlib, which Codeforces, Polygon and DMOJ checkers and interactors follow.
//!
//! | exit | testlib | Wolf |
//! |---|---|---|
//! | 0 | `_ok` | Accepted, score 1 |
//! | 1 | `_wa` | WrongAnswer |
//! | 2, 4, 8 | `_pe`, `_dirt`, `_unexpected_eof` | PresentationError |
//! | 3 | `_fail` | InternalError: the judge's program failed, not the submission |
//! | 7 | `_points` (`quitp`) | Accepted with the score read from stderr (`points <x> <message>`), WrongAnswer at 0 |
//! | 16 + n, n ≤ 100 | `_pc(n)` | Accepted with score n / 100 (WrongAnswer at 0) |
//!
//! Anything else is InternalError: a checker that says something testlib does not define has
//! not judged. The message is what it wrote to stderr, capped.

use crate::job::TEST_TEXT_CAP;
use crate::verdict::Verdict;

/// The names of a checker program's three files in its work dir, in the order of its argv:
/// the test's stdin, the program's stdout, the expected output.
pub const CHECKER_FILES: [&str; 3] = ["input", "output", "answer"];

/// An interactor's files in its work dir, in the order of its argv (`interactor input output
/// answer`): the test's stdin, the file it may write its own output to, and the expected
/// output (empty when the test has none).
pub const INTERACTOR_FILES: [&str; 3] = CHECKER_FILES;

/// A judge program's decision about one test.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// The test's verdict.
    pub verdict: Verdict,
    /// Its score (1 accepted, 0 not, partial between or beyond as the checker reports it).
    pub score: f64,
    /// What the checker wrote to stderr (capped), or why its exit means nothing.
    pub message: Option<String>,
}

/// The judgement of a checker program that exited with `code` after writing `stderr`.
pub fn judgement(code: i32, stderr: &[u8]) -> Judgement {
    judgement_of("checker", code, stderr)
}

/// The judgement of a judge program, `role` (`checker`, `interactor`) in its messages.
pub fn judgement_of(role: &str, code: i32, stderr: &[u8]) -> Judgement {
    let text = message(stderr);
    let (verdict, score) = match code {
        0 => (Verdict::Accepted, 1.0),
        1 => (Verdict::WrongAnswer, 0.0),
        2 | 4 | 8 => (Verdict::PresentationError, 0.0),
        3 => return failed(format!("the {role} failed: {}", text.as_deref().unwrap_or(""))),
        7 => {
            let rest = text.as_deref().unwrap_or("").trim_start();
            let rest = rest.strip_prefix("points").unwrap_or(rest).trim_start();
            let (number, message) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            match number.parse::<f64>() {
                Ok(x) if x.is_finite() && x >= 0.0 => {
                    return Judgement {
                        verdict: if x > 0.0 {
                            Verdict::Accepted
                        } else {
                            Verdict::WrongAnswer
                        },
                        score: x,
                        message: Some(message.trim().to_string()).filter(|m| !m.is_empty()),
                    };
                }
                _ => {
                    return failed(format!(
                        "the {role} exited 7 (points) but its stderr does not start with a score \
                         that is a number not negative: {:?}",
                        text.as_deref().unwrap_or("")
                    ));
                }
            }
        }
        16..=116 => {
            let x = f64::from(code - 16) / 100.0;
            (
                if x > 0.0 {
                    Verdict::Accepted
                } else {
                    Verdict::WrongAnswer
                },
                x,
            )
        }
        other => return failed(format!("the {role} exited {other}, which testlib does not define")),
    };
    Judgement {
        verdict,
        score,
        message: text,
    }
}

/// A judge program that did not judge (killed, over its limits, an undefined exit).
pub fn failed(why: String) -> Judgement {
    Judgement {
        verdict: Verdict::InternalError,
        score: 0.0,
        message: Some(cap(why)),
    }
}

fn message(stderr: &[u8]) -> Option<String> {
    let t = String::from_utf8_lossy(stderr);
    let t = t.trim();
    (!t.is_empty()).then(|| cap(t.to_string()))
}

fn cap(mut t: String) -> String {
    if t.len() > TEST_TEXT_CAP {
        let mut end = TEST_TEXT_CAP;
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        t.truncate(end);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_exit_code_means_what_testlib_says() {
        let j = judgement(0, b"ok 3 numbers\n");
        assert_eq!(
            (j.verdict, j.score, j.message.as_deref()),
            (Verdict::Accepted, 1.0, Some("ok 3 numbers"))
        );
        assert_eq!(judgement(1, b"wrong answer").verdict, Verdict::WrongAnswer);
        assert_eq!(judgement(2, b"").verdict, Verdict::PresentationError);
        assert_eq!(judgement(2, b"").message, None);
        assert_eq!(judgement(4, b"").verdict, Verdict::PresentationError);
        assert_eq!(judgement(8, b"").verdict, Verdict::PresentationError);
        let fail = judgement(3, b"answer file broken");
        assert_eq!(fail.verdict, Verdict::InternalError);
        assert!(fail.message.unwrap().contains("answer file broken"));
        for undefined in [5, 6, 9, 15, 117, 255, -1] {
            assert_eq!(
                judgement(undefined, b"").verdict,
                Verdict::InternalError,
                "exit {undefined}"
            );
        }
    }

    #[test]
    fn partial_points_come_from_stderr_or_the_exit_code() {
        let j = judgement(7, b"points 0.25 one of four\n");
        assert_eq!(
            (j.verdict, j.score, j.message.as_deref()),
            (Verdict::Accepted, 0.25, Some("one of four"))
        );
        let j = judgement(7, b"0.5");
        assert_eq!((j.verdict, j.score, j.message), (Verdict::Accepted, 0.5, None));
        assert_eq!(judgement(7, b"points 0 nothing").verdict, Verdict::WrongAnswer);
        for bad in [&b"points"[..], b"points -1", b"points NaN", b"points inf", b"half"] {
            assert_eq!(judgement(7, bad).verdict, Verdict::InternalError, "{bad:?}");
        }
        let j = judgement(16 + 40, b"partially correct (40)");
        assert_eq!((j.verdict, j.score), (Verdict::Accepted, 0.4));
        assert_eq!(judgement(16, b"").verdict, Verdict::WrongAnswer);
    }

    #[test]
    fn a_long_message_is_capped_on_a_character_boundary() {
        let long = "é".repeat(TEST_TEXT_CAP);
        let m = judgement(1, long.as_bytes()).message.unwrap();
        assert!(m.len() <= TEST_TEXT_CAP && m.chars().all(|c| c == 'é'));
    }
}
