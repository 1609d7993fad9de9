//! Config problems that point at their source.
//!
//! Every setting burrow reads from a TOML file or the command line is held as an [`Item`]: the
//! value and where it came from (a byte range in the file, or a flag's name). Converting a raw
//! config records each bad value as a [`Diagnostic`] instead of stopping at the first one, so a
//! user fixing a file sees every problem at once, each as `FILE:LINE:COL: message`, the shape
//! editors and terminals turn into links.

use serde::{Deserialize, Deserializer, de::DeserializeOwned};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A byte range of the config file.
    File(Range<usize>),
    /// A command-line flag or an environment variable, by name.
    Flag(&'static str),
    /// The configuration as a whole: a missing key, a conflict between sections.
    Whole,
}

/// A setting's value and its [`Origin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item<T> {
    /// The value as written.
    pub(crate) value: T,
    /// Where it was written.
    pub(crate) origin: Origin,
}

impl<T> Item<T> {
    /// A value given on the command line (or by an environment variable) called `name`.
    pub(crate) fn flag(name: &'static str, value: T) -> Self {
        Self {
            value,
            origin: Origin::Flag(name),
        }
    }

    /// A problem with this value.
    pub(crate) fn problem(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            origin: self.origin.clone(),
            message: message.into(),
        }
    }

    /// True when the value was read from the config file.
    pub(crate) fn in_file(&self) -> bool {
        matches!(self.origin, Origin::File(_))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Item<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // toml recognises `Spanned` and hands it the value's byte range.
        let spanned = Spanned::<T>::deserialize(deserializer)?;
        let origin = Origin::File(spanned.span());
        Ok(Self {
            value: spanned.into_inner(),
            origin,
        })
    }
}

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Diagnostic {
    /// Where the offending value is.
    pub(crate) origin: Origin,
    /// What is wrong, for a human.
    pub(crate) message: String,
}

/// The text a configuration was read from, to turn byte offsets into `LINE:COL`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Source {
    /// The file's name as the user gave it; `None` when everything came from flags.
    pub(crate) name: Option<String>,
    /// The file's text.
    pub(crate) text: String,
    /// The directory relative paths in the file are resolved against.
    pub(crate) dir: PathBuf,
}

impl Source {
    /// Reads a config file.
    pub(crate) fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(Self {
            name: Some(path.display().to_string()),
            text,
            dir,
        })
    }

    /// Deserializes the whole text into `T`, reporting every syntax error, unknown key and
    /// badly typed value rather than only the first.
    ///
    /// Syntax errors end the parse. A key serde rejects is reported, taken out of the document
    /// and the document deserialized again, so the `T` returned may lack those keys; the caller
    /// converts it with the returned [`Problems`] and so reports its own findings too.
    pub(crate) fn parse<T: DeserializeOwned>(&self) -> Result<(T, Problems), ConfigError> {
        let (mut root, errors) = DeTable::parse_recoverable(&self.text);
        if !errors.is_empty() {
            return Err(self.error(errors.iter().map(diagnostic).collect()));
        }
        let mut problems = Problems::default();
        for _ in 0..MAX_RECOVERIES {
            let error = match T::deserialize(toml::de::Deserializer::from(root.clone())) {
                Ok(value) => return Ok((value, problems)),
                Err(error) => error,
            };
            let pruned = error
                .span()
                .is_some_and(|at| prune(root.get_mut(), at.start));
            // An error nothing can be taken out for (a missing key) may follow from an earlier
            // removal; it is only worth reporting on its own.
            if pruned || problems.0.is_empty() {
                problems.push(diagnostic(&error));
            }
            if !pruned {
                break;
            }
        }
        Err(self.error(problems.0))
    }

    /// Wraps diagnostics about this source into an error.
    /// They are put in file order (flag and whole-file problems first) so they read top down.
    pub(crate) fn error(&self, mut problems: Vec<Diagnostic>) -> ConfigError {
        problems.sort_by_key(|p| match &p.origin {
            Origin::File(span) => span.start + 1,
            Origin::Flag(_) | Origin::Whole => 0,
        });
        ConfigError {
            source: self.clone(),
            problems,
        }
    }

    /// Resolves a path from the config: relative paths in a file are relative to the file's
    /// directory (so a config works wherever it is started from), flags to the working directory.
    pub(crate) fn path(&self, item: &Item<PathBuf>) -> PathBuf {
        if item.in_file() {
            self.dir.join(&item.value)
        } else {
            item.value.clone()
        }
    }

    /// Renders one diagnostic as `FILE:LINE:COL: message` (or `--flag: message`).
    fn render(&self, problem: &Diagnostic) -> String {
        let msg = &problem.message;
        match (&problem.origin, &self.name) {
            (Origin::Flag(flag), _) => format!("{flag}: {msg}"),
            (Origin::File(span), Some(name)) => {
                let (line, col) = line_col(&self.text, span.start);
                format!("{name}:{line}:{col}: {msg}")
            }
            (Origin::Whole, Some(name)) => format!("{name}:1:1: {msg}"),
            (_, None) => msg.clone(),
        }
    }
}

/// How many rejected keys one parse takes out before it gives up.
const MAX_RECOVERIES: usize = 64;

/// A toml error as a diagnostic, on one line.
fn diagnostic(error: &toml::de::Error) -> Diagnostic {
    let origin = error.span().map_or(Origin::Whole, Origin::File);
    let lines: Vec<&str> = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    Diagnostic {
        origin,
        message: lines.join("; "),
    }
}

/// Takes out of `table` (at any depth) the plain key/value pair whose key or value covers byte
/// `at`. Tables and arrays of tables are only searched, never removed, so one bad key does not
/// hide a whole section. Returns whether something was taken out.
fn prune(table: &mut DeTable<'_>, at: usize) -> bool {
    let covers = |span: Range<usize>| span.contains(&at);
    for (_, value) in table.iter_mut() {
        let found = match value.get_mut() {
            DeValue::Table(inner) => prune(inner, at),
            DeValue::Array(items) => items.iter_mut().any(|item| match item.get_mut() {
                DeValue::Table(inner) => prune(inner, at),
                _ => false,
            }),
            _ => false,
        };
        if found {
            return true;
        }
    }
    let hit = table.iter().find(|(key, value)| {
        let nested = match value.get_ref() {
            DeValue::Table(_) => true,
            DeValue::Array(items) => items.iter().any(|i| i.get_ref().is_table()),
            _ => false,
        };
        !nested && (covers(key.span()) || covers(value.span()))
    });
    let Some(key) = hit.map(|(key, _)| key.get_ref().to_string()) else {
        return false;
    };
    table.remove(key.as_str()).is_some()
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Collects problems while a raw config is converted, so one pass reports them all.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<Diagnostic>);

impl Problems {
    /// Records a problem.
    pub(crate) fn push(&mut self, problem: Diagnostic) {
        self.0.push(problem);
    }

    /// Records a problem with the configuration as a whole.
    pub(crate) fn whole(&mut self, message: impl Into<String>) {
        self.push(Diagnostic {
            origin: Origin::Whole,
            message: message.into(),
        });
    }

    /// Parses an optional setting with `parse`; a bad value is recorded and reads as absent.
    pub(crate) fn parse<S: ?Sized, V: std::borrow::Borrow<S>, T>(
        &mut self,
        item: Option<&Item<V>>,
        parse: impl FnOnce(&S) -> Result<T, String>,
    ) -> Option<T> {
        let item = item?;
        parse(item.value.borrow())
            .map_err(|m| self.push(item.problem(m)))
            .ok()
    }

    /// `value` when nothing was recorded, else every problem found.
    pub(crate) fn finish<T>(self, value: T, source: &Source) -> Result<T, ConfigError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(source.error(self.0))
        }
    }
}

/// Every problem found in one configuration.
#[derive(Debug)]
pub(crate) struct ConfigError {
    source: Source,
    problems: Vec<Diagnostic>,
}

impl ConfigError {
    /// One rendered line per problem, in the order found.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.problems
            .iter()
            .map(|p| self.source.render(p))
            .collect()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 4), (1, 5));
        assert_eq!(line_col(text, 6), (2, 1));
        // Columns count characters, not bytes: `é` is two bytes.
        assert_eq!(line_col(text, 10), (2, 4));
        assert_eq!(line_col(text, 1000), (3, 1));
    }

    #[test]
    fn diagnostics_render_by_origin() {
        let source = Source {
            name: Some("f.toml".into()),
            text: "x = 1\ny = 2\n".into(),
            ..Default::default()
        };
        let err = source.error(vec![
            Diagnostic {
                origin: Origin::File(10..11),
                message: "bad".into(),
            },
            Diagnostic {
                origin: Origin::File(0..1),
                message: "first".into(),
            },
            Diagnostic {
                origin: Origin::Flag("--ports"),
                message: "worse".into(),
            },
            Diagnostic {
                origin: Origin::Whole,
                message: "missing".into(),
            },
        ]);
        let want = [
            "--ports: worse",
            "f.toml:1:1: missing",
            "f.toml:1:1: first",
            "f.toml:2:5: bad",
        ];
        assert_eq!(err.lines(), want);
    }
}
