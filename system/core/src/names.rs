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
