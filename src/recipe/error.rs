//! Problems found in a recipe and the error type of this module.

use std::fmt;
use std::path::{Path, PathBuf};

/// One mistake in a recipe file, located as precisely as known.
///
/// Displays as `recipes/demo.yaml:14:7: provisioners[2].script: file
/// scripts/missing.sh does not exist`; the line, column and field parts are
/// left out when unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The recipe file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// Field path such as `provisioners[2].script`; empty for the whole file.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// A problem without a location yet.
    pub fn new(file: &Path, field: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            file: file.to_path_buf(),
            line: None,
            column: None,
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same problem at `line`:`column`.
    pub fn at(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Everything that can go wrong loading, validating or hashing a recipe.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// A file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file name does not say which format it is in.
    #[error("{}: unsupported recipe file extension (expected .yaml, .yml, .json, or a Packer template: .json, .pkr.hcl or a directory of .pkr.hcl files)", path.display())]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
    },
    /// The file is not well-formed, or does not have the recipe's shape.
    #[error("{}", list(.0))]
    Parse(Vec<Problem>),
    /// The file parses but breaks rules (names, references, missing files...).
    #[error("{}", list(.0))]
    Invalid(Vec<Problem>),
}

impl RecipeError {
    /// Every problem this error stands for (an I/O or format error becomes
    /// one problem without a field).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            RecipeError::Parse(p) | RecipeError::Invalid(p) => p.clone(),
            RecipeError::Io { path, source } => {
                vec![Problem::new(path, "", format!("cannot read: {source}"))]
            }
            RecipeError::UnsupportedFormat { path } => vec![Problem::new(
                path,
                "",
                "unsupported recipe file extension (expected .yaml, .yml, .json, or a Packer template: .json, .pkr.hcl or a directory of .pkr.hcl files)",
            )],
        }
    }
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}
