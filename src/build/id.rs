//! The grammar of build ids. A build id names the build record, the Step
//! Functions execution and, locally, the work and output directories, so it
//! is checked before any path is formed from it: a letter or digit, then
//! letters, digits, `.`, `_` or `-`, at most [`MAX_BUILD_ID_LEN`] bytes
//! (the Step Functions limit for execution names). `.`, `..`, the empty
//! id, `/`, and anything non-ASCII are refused.

/// Longest build id (Step Functions execution names are at most 80).
pub const MAX_BUILD_ID_LEN: usize = 80;

/// Why a build id is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("build id {id:?}: {reason}")]
pub struct InvalidBuildId {
    /// The id as given (cut to 100 characters for the message).
    pub id: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Checks `id` against the grammar (see the module documentation).
pub fn check_build_id(id: &str) -> Result<(), InvalidBuildId> {
    let refuse = |reason: String| InvalidBuildId {
        id: id.chars().take(100).collect(),
        reason,
    };
    let Some(first) = id.chars().next() else {
        return Err(refuse("is empty".into()));
    };
    if !first.is_ascii_alphanumeric() {
        return Err(refuse("must start with a letter or digit".into()));
    }
    if id.len() > MAX_BUILD_ID_LEN {
        return Err(refuse(format!(
            "is {} bytes long; at most {MAX_BUILD_ID_LEN} are allowed",
            id.len()
        )));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(refuse(format!(
            "character {c:?} is not allowed (letters, digits, '.', '_', '-')"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_ids_pass() {
        for id in [
            "web-20260101T000000Z-ab12",
            "b1",
            "x.y_z-1",
            &"a".repeat(80),
        ] {
            assert_eq!(check_build_id(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn ids_that_could_name_other_paths_are_refused() {
        let long = "a".repeat(300);
        for (id, why) in [
            ("", "empty"),
            (".", "start with"),
            ("..", "start with"),
            ("a/b", "'/'"),
            ("../x", "start with"),
            ("a\0b", "'\\0'"),
            ("bücher", "'ü'"),
            (long.as_str(), "300 bytes"),
            ("-rf", "start with"),
        ] {
            let err = check_build_id(id).unwrap_err();
            assert!(err.to_string().contains(why), "{id:?}: {err}");
        }
    }
}
