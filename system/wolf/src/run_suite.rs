//! `wolf run --tests DIR [--checker FILE] [--stop-on-first-failure]`: a directory of test
//! cases read as judges lay them out, and the checker program's engine.

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

/// The engine of a checker program from its file name, when `--checker-engine` is not given.
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
        _ => anyhow::bail!(
            "cannot tell the engine of the checker {} from its extension: give --checker-engine",
            file.display()
        ),
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
