//! Helpers for the unit tests: config texts as sources, scratch directories, rendered errors.
//!
//! This module is compiled only under #[cfg(test)] (declared so in its parent).

use crate::diag::{ConfigError, Source};
use std::path::PathBuf;

/// A config text named `name`, with relative paths resolved in `dir`.
pub(crate) fn source_in(name: &str, text: &str, dir: PathBuf) -> Source {
    Source {
        name: Some(name.to_owned()),
        text: text.to_owned(),
        dir,
    }
}

/// A config text named `name`, with relative paths resolved in the working directory.
pub(crate) fn source(name: &str, text: &str) -> Source {
    source_in(name, text, PathBuf::new())
}

/// A fresh directory for one test's files, removed when the test is over (kept if it failed).
pub(crate) fn scratch(test: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("burrow-cli-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// A test's scratch directory; derefs to its path.
pub(crate) struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = PathBuf;

    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The rendered lines of a conversion that must fail.
pub(crate) fn lines<T: std::fmt::Debug>(result: Result<T, ConfigError>) -> Vec<String> {
    result.unwrap_err().lines()
}

/// True when the environment would fill in a setting the test leaves out.
pub(crate) fn env_set(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| !v.is_empty())
}
