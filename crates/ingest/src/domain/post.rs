use shardfeed_server::{ApiError, ApiResult};

/// A post's text: 1-500 Unicode scalar values, not only whitespace, no control characters but
/// line breaks and tabs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostBody(String);

impl PostBody {
    pub const MAX: usize = 500;

    pub fn parse(value: &str) -> ApiResult<PostBody> {
        let len = value.chars().count();
        if len == 0 || len > Self::MAX {
            return Err(ApiError::invalid_field(
                "body",
                format!("must be 1-500 characters long, got {len}"),
            ));
        }
        if value.trim().is_empty() {
            return Err(ApiError::invalid_field(
                "body",
                "must not be only whitespace",
            ));
        }
        if value
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(ApiError::invalid_field(
                "body",
                "must not contain control characters other than line breaks and tabs",
            ));
        }
        Ok(PostBody(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        let at_limit = "ü".repeat(500);
        for good in [
            "hi",
            "line one\nline two",
            "\ttabbed",
            "🦀",
            at_limit.as_str(),
        ] {
            assert!(PostBody::parse(good).is_ok(), "{good:?}");
        }
        let over = "ü".repeat(501);
        for bad in ["", " \n\t ", "nul\0byte", "bell\u{7}", over.as_str()] {
            assert!(PostBody::parse(bad).is_err(), "{bad:?}");
        }
    }
}
