use shardfeed_server::{ApiError, ApiResult};

/// A user's unique handle: 3-30 characters of `[a-z0-9_]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handle(String);

impl Handle {
    pub const MIN: usize = 3;
    pub const MAX: usize = 30;

    pub fn parse(value: &str) -> ApiResult<Handle> {
        let len = value.chars().count();
        if !(Self::MIN..=Self::MAX).contains(&len) {
            return Err(ApiError::invalid_field(
                "handle",
                format!("must be 3-30 characters long, got {len}"),
            ));
        }
        if let Some(bad) = value
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
        {
            return Err(ApiError::invalid_field(
                "handle",
                format!("may only contain a-z, 0-9 and '_', found {bad:?}"),
            ));
        }
        Ok(Handle(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The name shown to people: 1-64 characters, not only whitespace, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub const MAX: usize = 64;

    pub fn parse(value: &str) -> ApiResult<DisplayName> {
        let len = value.chars().count();
        if len == 0 || len > Self::MAX {
            return Err(ApiError::invalid_field(
                "display_name",
                format!("must be 1-64 characters long, got {len}"),
            ));
        }
        if value.trim().is_empty() {
            return Err(ApiError::invalid_field(
                "display_name",
                "must not be only whitespace",
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(ApiError::invalid_field(
                "display_name",
                "must not contain control characters",
            ));
        }
        Ok(DisplayName(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles() {
        for good in ["abc", "a_b_9", "x".repeat(30).as_str(), "___"] {
            assert!(Handle::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            "",
            "Abc",
            "a-b",
            "a b",
            "ünï",
            "x".repeat(31).as_str(),
            "abc\n",
        ] {
            assert!(Handle::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn display_names() {
        for good in ["A", "Ada Lovelace", "名前", "é".repeat(64).as_str()] {
            assert!(DisplayName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "   ", "a\u{7}b", "é".repeat(65).as_str()] {
            assert!(DisplayName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
