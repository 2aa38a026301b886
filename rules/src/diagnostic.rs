//! Diagnostics: every problem found in a config or rule file, with where and how to fix it.
//!
//! Validation never stops at the first problem: it collects a [`Diagnostic`] per problem
//! and renders them all, rustc-style:
//!
//! ```text
//! error[E104]: unknown field `valu` in `where`
//!   --> rules/gas.yaml:7:12
//!    |
//!  7 |     where: valu > 25
//!    |            ^^^^
//!    = hint: did you mean `value`?
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A position in a source file (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column in characters, from 1.
    pub col: u32,
}

/// A source file kept for rendering snippets.
#[derive(Debug, Clone)]
pub struct Source {
    /// Path as given by the user.
    pub path: PathBuf,
    /// Full text.
    pub text: Arc<str>,
}

impl Source {
    /// A source from its path and text.
    pub fn new(path: impl Into<PathBuf>, text: impl Into<Arc<str>>) -> Self {
        Source { path: path.into(), text: text.into() }
    }

    /// The text of line `line` (1-based).
    pub fn line(&self, line: u32) -> Option<&str> {
        self.text.lines().nth(line.checked_sub(1)? as usize)
    }
}

/// Stable diagnostic codes, so fixtures and docs can refer to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// YAML syntax error.
    Syntax,
    /// A key that is not allowed here.
    UnknownKey,
    /// A required key is missing.
    MissingKey,
    /// A value of the wrong shape (string where a list is expected, …).
    WrongType,
    /// A field name that the stream does not declare.
    UnknownField,
    /// An unknown stream name.
    UnknownStream,
    /// An expression that does not parse or plan.
    BadExpression,
    /// Comparing values of incompatible types.
    TypeMismatch,
    /// An unknown SQL function.
    UnknownFunction,
    /// Two rules with one id.
    DuplicateId,
    /// A malformed duration.
    BadDuration,
    /// A value outside its allowed set or range.
    BadValue,
    /// A file that cannot be read.
    Io,
}

impl Code {
    /// The code as printed, e.g. `E104`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Syntax => "E001",
            Code::UnknownKey => "E101",
            Code::MissingKey => "E102",
            Code::WrongType => "E103",
            Code::UnknownField => "E104",
            Code::UnknownStream => "E105",
            Code::BadExpression => "E201",
            Code::TypeMismatch => "E202",
            Code::UnknownFunction => "E203",
            Code::DuplicateId => "E301",
            Code::BadDuration => "E302",
            Code::BadValue => "E303",
            Code::Io => "E401",
        }
    }
}

/// One problem, located.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    /// Stable code.
    pub code: Code,
    /// What is wrong.
    pub message: String,
    /// Where (None for whole-file problems such as I/O errors).
    pub file: Option<Arc<Source>>,
    /// Start of the offending text.
    pub pos: Pos,
    /// Length of the offending text in characters (at least 1 when rendered).
    pub len: u32,
    /// How to fix it.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A diagnostic at `pos` in `file`.
    pub fn new(code: Code, message: impl Into<String>, file: &Arc<Source>, pos: Pos, len: u32) -> Self {
        Diagnostic { code, message: message.into(), file: Some(file.clone()), pos, len, hint: None }
    }

    /// A diagnostic about a whole file or the invocation.
    pub fn global(code: Code, message: impl Into<String>) -> Self {
        Diagnostic { code, message: message.into(), file: None, pos: Pos::default(), len: 0, hint: None }
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Adds "did you mean `x`?" for the candidate closest to `word`, or else lists them
    /// all after `label` ("declared fields: a, b, c").
    pub fn suggest(self, word: &str, candidates: &[&str], label: &str) -> Self {
        match did_you_mean(word, candidates.iter().copied()) {
            Some(s) => self.with_hint(format!("did you mean `{s}`?")),
            None => self.with_hint(format!("{label}: {}", candidates.join(", "))),
        }
    }

    /// The offending text, if located.
    pub fn snippet(&self) -> Option<String> {
        let f = self.file.as_ref()?;
        let line = f.line(self.pos.line)?;
        let start = self.pos.col.saturating_sub(1) as usize;
        Some(line.chars().skip(start).take(self.len.max(1) as usize).collect())
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error[{}]: {}", self.code.as_str(), self.message)?;
        if let Some(src) = &self.file {
            let line_no = self.pos.line.to_string();
            let pad = " ".repeat(line_no.len());
            writeln!(f, "{pad}--> {}:{}:{}", display_path(&src.path), self.pos.line, self.pos.col)?;
            if let Some(text) = src.line(self.pos.line) {
                writeln!(f, "{pad} |")?;
                writeln!(f, "{line_no} | {text}")?;
                let caret_pad = " ".repeat(self.pos.col.saturating_sub(1) as usize);
                writeln!(f, "{pad} | {caret_pad}{}", "^".repeat(self.len.max(1) as usize))?;
            }
        }
        if let Some(h) = &self.hint {
            writeln!(f, "  = hint: {h}")?;
        }
        Ok(())
    }
}

fn display_path(p: &Path) -> String {
    p.display().to_string()
}

/// Collects diagnostics; validation code pushes into it and goes on.
#[derive(Debug, Default)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Records one.
    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    /// True when nothing was reported.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Number reported.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// All, in file and position order.
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.items.sort_by(|a, b| {
            let fa = a.file.as_ref().map(|f| f.path.clone());
            let fb = b.file.as_ref().map(|f| f.path.clone());
            (fa, a.pos).cmp(&(fb, b.pos))
        });
        self.items
    }
}

/// The closest candidate to `word`, if close enough to suggest.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}
