use shardfeed_server::{ApiError, ApiResult};
use uuid::Uuid;

/// An optional AIP-155 idempotency key: empty means "none", anything else must be a UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId(pub Uuid);

impl RequestId {
    pub fn parse_optional(value: &str) -> ApiResult<Option<RequestId>> {
        if value.is_empty() {
            return Ok(None);
        }
        Uuid::parse_str(value)
            .map(|id| Some(RequestId(id)))
            .map_err(|_| ApiError::invalid_field("request_id", "must be a UUID, or empty"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_optional_uuids() {
        assert_eq!(RequestId::parse_optional("").unwrap(), None);
        assert!(
            RequestId::parse_optional("0b6c1c9e-6a52-4c4e-9f0e-2f5b3c1d9a10")
                .unwrap()
                .is_some()
        );
        assert!(RequestId::parse_optional("retry-1").is_err());
    }
}
