//! `wolf run --tests DIR [--checker FILE | --interactor FILE] [--stop-on-first-failure]`: a
//! directory of test cases read as judges lay them out, and the judge's own program (a
//! checker's or an interactor's) with its engine and files.

use std::path::Path;

use anyhow::Context;
use wolf_sandbox::runner::TestRequest;

/// The tests in `dir`: `NAME.in` is a test's stdin and `NAME.out` (or `NAME.ans`) its expected
/// output; a name with only one of them is a test without the other. Ordered by name, numbers
/// by value (`2` before `10`), so `1.in … 100.in` run in their order.
pub fn load_tests(dir: &Path) -> anyhow::Result<Vec<TestRequest>> {
    let mut tests: std::collections::BTreeMap<(u64, String), TestRequest> = Default::default();
    let entries = std::fs::read_dir(dir).with_context(|| format!("read the tests in {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some((stem, ext)) = name.rsplit_once('.') else {
            continue;
        };
        if !matches!(ext, "in" | "out" | "ans") || !entry.file_type()?.is_file() {
            continue;
        }
        let key = (stem.parse::<u64>().unwrap_or(u64::MAX), stem.to_string());
        let t = tests.entry(key).or_insert_with(|| TestRequest {
            name: stem.to_string(),
            ..Default::default()
        });
        let data = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        let slot = if ext == "in" {
            &mut t.stdin
        } else {
            &mut t.expected_output
        };
        anyhow::ensure!(
            slot.is_none(),
            "{}: test {stem:?} has both a .out and a .ans file",
            dir.display()
        );
        *slot = Some(data);
    }
    anyhow::ensure!(
        !tests.is_empty(),
        "{}: no NAME.in, NAME.out or NAME.ans files",
        dir.display()
    );
    anyhow::ensure!(
        tests.len() <= wolf_core::job::MAX_TESTS,
        "{}: {} tests; at most {} are allowed",
        dir.display(),
        tests.len(),
        wolf_core::job::MAX_TESTS
    );
    Ok(tests.into_values().collect())
}

/// A judge's program (`role`: checker or interactor) from its file: its code, its engine
/// (`engine`, else from the extension) and the files beside it, each under its own name.
pub fn judge_program(
    role: &str,
    file: &Path,
    engine: Option<&str>,
    beside: &[std::path::PathBuf],
) -> anyhow::Result<(String, String, Vec<wolf_core::FileInput>)> {
    let engine = match engine {
        Some(e) => e.to_string(),
        None => engine_of(file).with_context(|| format!("the {role}'s engine: give --{role}-engine"))?,
    };
    let code = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
    let mut files = Vec::new();
    for p in beside {
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("--{role}-file {}: no file name", p.display()))?;
        let data = std::fs::read(p).with_context(|| format!("read {}", p.display()))?;
        files.push(wolf_core::FileInput {
            name: name.to_string(),
            content: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, data),
            encoding: Some(wolf_core::Encoding::Base64),
        });
    }
    Ok((code, engine, files))
}

/// The engine of a judge's program from its file name, when no engine is given.
pub fn engine_of(file: &Path) -> anyhow::Result<String> {
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
    let engine = match ext {
        "cpp" | "cc" | "cxx" | "c++" => "c++",
        "c" => "c",
        "py" => "python",
        "js" => "javascript",
        "java" => "java",
        "rs" => "rust",
        "sh" => "bash",
        _ => anyhow::bail!("cannot tell the engine of {} from its extension", file.display()),
    };
    Ok(engine.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tests_directory_pairs_inputs_with_answers_in_numeric_order() {
        let d = tempfile::tempdir().unwrap();
        for (name, body) in [
            ("10.in", "10"),
            ("10.out", "20"),
            ("2.in", "2"),
            ("2.ans", "4"),
            ("edge.in", "0"),
            ("notes.txt", "ignored"),
            ("only.out", "x"),
        ] {
            std::fs::write(d.path().join(name), body).unwrap();
        }
        let t = load_tests(d.path()).unwrap();
        let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["2", "10", "edge", "only"]);
        assert_eq!(t[0].expected_output.as_deref(), Some(&b"4"[..]));
        assert_eq!(t[1].stdin.as_deref(), Some(&b"10"[..]));
        assert_eq!((t[2].expected_output.is_none(), t[3].stdin.is_none()), (true, true));
        std::fs::write(d.path().join("2.out"), "4").unwrap();
        assert!(load_tests(d.path()).unwrap_err().to_string().contains("both"));
        assert!(load_tests(tempfile::tempdir().unwrap().path()).is_err(), "no tests");
    }

    #[test]
    fn a_checker_engine_comes_from_its_extension_or_is_asked_for() {
        assert_eq!(engine_of(Path::new("check.cpp")).unwrap(), "c++");
        assert_eq!(engine_of(Path::new("x/check.py")).unwrap(), "python");
        assert!(engine_of(Path::new("checker")).is_err());
    }
}
