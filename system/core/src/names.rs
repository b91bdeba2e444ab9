//! Names a job may give its files: checked at the API and again in the jail.

/// Longest file name, characters (ASCII only, so bytes too).
pub const MAX_FILE_NAME: usize = 128;

/// The characters a file name may use: portable on every file system and in every shell.
pub const FILE_NAME_PATTERN: &str = "^[A-Za-z0-9._+-]{1,128}$";

/// Whether `name` is acceptable as a work-dir file name: 1 to 128 of `A-Z a-z 0-9 . _ + -`,
/// and not `.` or `..`.
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FILE_NAME
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
}

/// Components a job file's path may have, at most (`com/example/app/Main.java` has four).
pub const MAX_FILE_DEPTH: usize = 8;

/// A job file's path: 1 to [`MAX_FILE_DEPTH`] components, each a [`FILE_NAME_PATTERN`] name,
/// separated by single slashes. [`valid_file_path`] also refuses `.` and `..` components.
pub const FILE_PATH_PATTERN: &str = "^[A-Za-z0-9._+-]{1,128}(/[A-Za-z0-9._+-]{1,128}){0,7}$";

/// Whether `path` is acceptable as a job file's path: relative, already normal (no empty, `.`
/// or `..` component, no leading or trailing slash), each component a [`valid_file_name`].
pub fn valid_file_path(path: &str) -> bool {
    path.split('/').count() <= MAX_FILE_DEPTH && path.split('/').all(valid_file_name)
}

/// Whether the job file paths `paths` can all exist together: each valid, none twice, and none
/// a directory of another (`src` and `src/util.py`). `Err` says which and why.
pub fn check_file_paths<'a>(paths: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    let paths: Vec<&str> = paths.into_iter().collect();
    // Sets, not a scan per file: linear however many files a request carries.
    let mut files = std::collections::HashSet::with_capacity(paths.len());
    let mut dirs = std::collections::HashSet::new();
    for p in &paths {
        if !valid_file_path(p) {
            return Err(format!("invalid file name {p:?}"));
        }
        if !files.insert(*p) {
            return Err(format!("file name {p:?} is used twice (or is the source file's name)"));
        }
        let mut at = 0;
        while let Some(i) = p[at..].find('/') {
            dirs.insert(&p[..at + i]);
            at += i + 1;
        }
    }
    match paths.iter().find(|p| dirs.contains(**p)) {
        Some(p) => Err(format!("{p:?} is both a file and a directory of another file")),
        None => Ok(()),
    }
}

/// An output-file pattern's shape: 1 to 8 components of 1 to 128 of `A-Z a-z 0-9 . _ + - * ?`.
/// [`valid_output_pattern`] also refuses `.` and `..` as components (JSON Schema patterns have
/// no portable way to say so).
pub const OUTPUT_PATTERN: &str = "^[A-Za-z0-9._+*?-]{1,128}(/[A-Za-z0-9._+*?-]{1,128}){0,7}$";

/// Whether `p` is an acceptable output-file pattern ([`OUTPUT_PATTERN`], and no `.` or `..`
/// component: never absolute, never climbing out).
pub fn valid_output_pattern(p: &str) -> bool {
    let comps: Vec<&str> = p.split('/').collect();
    comps.len() <= 8
        && comps.iter().all(|c| {
            !c.is_empty()
                && c.len() <= MAX_FILE_NAME
                && *c != "."
                && *c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-' | b'*' | b'?'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_paths_are_relative_normal_and_consistent() {
        for ok in [
            "main.py",
            "src/util.py",
            "com/example/app/Main.java",
            "a/b/c/d/e/f/g/h",
            "...",
        ] {
            assert!(valid_file_path(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "a/",
            "./a",
            "a/./b",
            ".",
            "a b",
            "a/b/c/d/e/f/g/h/i",
            "a\\b",
        ] {
            assert!(!valid_file_path(bad), "{bad:?}");
        }
        assert!(check_file_paths(["main.py", "src/a.py", "src/b.py", "src/x/y.py"]).is_ok());
        assert!(
            check_file_paths(["src/a.py", "src/a.py"])
                .unwrap_err()
                .contains("twice")
        );
        assert!(check_file_paths(["src/a.py", "src"]).unwrap_err().contains("directory"));
        assert!(check_file_paths(["a/b/c", "a/b"]).unwrap_err().contains("directory"));
        assert!(check_file_paths(["a/../b"]).unwrap_err().contains("invalid"));
    }

    #[test]
    fn output_patterns_stay_below_the_work_dir() {
        for ok in ["plot.png", "out/*.csv", "a/b/c/d/e/f/g/h", "?.txt", "*"] {
            assert!(valid_output_pattern(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "a/",
            ".",
            "a/./b",
            "a b",
            "a/b/c/d/e/f/g/h/i",
        ] {
            assert!(!valid_output_pattern(bad), "{bad:?}");
        }
    }

    #[test]
    fn portable_names_only() {
        for ok in [
            "Main.java",
            "input.txt",
            "data-1.csv",
            "a+b",
            "...",
            "x".repeat(128).as_str(),
        ] {
            assert!(valid_file_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a\0b", "é.txt", "a b", "x".repeat(129).as_str()] {
            assert!(!valid_file_name(bad), "{bad:?}");
        }
    }
}

/// Whether `s` is blank as the API's schema means it: only the characters of ECMAScript's `\s`
/// (the `\S` pattern of `code` fields). Rust's `char::is_whitespace` differs from it in two
/// (it counts U+0085, not U+FEFF): code of a lone U+0085 is valid by the schema, and runs.
pub fn is_blank(s: &str) -> bool {
    s.chars().all(|c| {
        matches!(
            c,
            '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
                ..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}' | '\u{feff}'
        )
    })
}

#[cfg(test)]
mod blank_tests {
    #[test]
    fn blank_is_the_schemas_whitespace() {
        for blank in ["", " \t\n\r", "\u{feff}\u{a0}\u{3000}"] {
            assert!(super::is_blank(blank), "{blank:?}");
        }
        for not in ["x", "\u{85}", " \u{85} ", "\u{0}"] {
            assert!(!super::is_blank(not), "{not:?}");
        }
    }
}
