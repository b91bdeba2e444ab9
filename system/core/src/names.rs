//! Names a job may give its files: checked at the API and again in the jail.

/// Whether `name` is acceptable as a work-dir file name.
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 128 && name != "." && name != ".." && !name.contains(['/', '\0'])
}
