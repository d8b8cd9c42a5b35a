//! Checks of configuration values that serde's types cannot express: ranges,
//! keys that go together, files that must be readable. Each adds a sentence
//! naming the key to `problems`.

use std::fmt::Display;
use std::path::Path;

/// `value` of `key` must lie in `lo..=hi`.
pub fn within<T: PartialOrd + Display>(
    key: &str,
    value: T,
    lo: T,
    hi: T,
    problems: &mut Vec<String>,
) {
    if !(lo <= value && value <= hi) {
        problems.push(format!(
            "{key}: expected a number from {lo} to {hi}, got {value}"
        ));
    }
}

/// `a` and `b` are both set or both unset.
pub fn together(a: (&str, bool), b: (&str, bool), problems: &mut Vec<String>) {
    if a.1 != b.1 {
        problems.push(format!("{} and {} go together", a.0, b.0));
    }
}

/// A file named by `key`, when set, can be read.
pub fn readable(key: &str, path: &Path, problems: &mut Vec<String>) {
    if !path.as_os_str().is_empty() {
        if let Err(e) = std::fs::read(path) {
            problems.push(format!("{key}: cannot read {}: {e}", path.display()));
        }
    }
}
