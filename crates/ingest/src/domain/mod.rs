//! Validated request values. Each `parse` returns the field violation the caller will see.

mod ids;
mod post;
mod user;

pub use ids::RequestId;
pub use post::PostBody;
pub use user::{DisplayName, Handle};

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use shardfeed_server::ApiError;

    use super::*;

    /// A refusal must be INVALID_ARGUMENT naming exactly `field`; anything else (a panic, an
    /// internal error, another field) fails.
    fn refused_on(result: Result<impl std::fmt::Debug, ApiError>, field: &str) -> bool {
        match result {
            Ok(_) => false,
            Err(ApiError::InvalidArgument { violations, .. }) => {
                assert_eq!(violations.len(), 1, "{violations:?}");
                assert_eq!(violations[0].field, field);
                true
            }
            Err(other) => panic!("{field}: not INVALID_ARGUMENT: {other:?}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn any_handle_is_accepted_as_given_or_refused(value in "\\PC{0,40}|[a-z0-9_]{0,35}") {
            match Handle::parse(&value) {
                Ok(handle) => {
                    prop_assert_eq!(handle.as_str(), value.as_str());
                    prop_assert!((3..=30).contains(&value.len()));
                }
                Err(err) => prop_assert!(refused_on(Err::<(), _>(err), "handle")),
            }
        }

        #[test]
        fn any_display_name_is_accepted_or_refused(value in any::<String>()) {
            if let Err(err) = DisplayName::parse(&value) {
                prop_assert!(refused_on(Err::<(), _>(err), "display_name"));
            }
        }

        #[test]
        fn any_post_body_is_accepted_or_refused(value in any::<String>()) {
            match PostBody::parse(&value) {
                Ok(body) => prop_assert!((1..=500).contains(&body.as_str().chars().count())),
                Err(err) => prop_assert!(refused_on(Err::<(), _>(err), "body")),
            }
        }

        #[test]
        fn any_request_id_is_a_uuid_nothing_or_refused(value in any::<String>()) {
            match RequestId::parse_optional(&value) {
                Ok(None) => prop_assert!(value.is_empty()),
                Ok(Some(_)) => prop_assert!(uuid::Uuid::parse_str(&value).is_ok()),
                Err(err) => prop_assert!(refused_on(Err::<(), _>(err), "request_id")),
            }
        }
    }
}
