//! AIP-158 pagination: `page_size` rules and opaque, authenticated `page_token`s.
//!
//! A token is `base64url-no-pad(version | payload | tag)`: `payload` is the cursor in `postcard`,
//! `tag` the first 16 bytes of HMAC-SHA256 over the version, the [`TokenScope`] and the payload.
//! Binding the scope makes a token issued for another RPC, another subject or by a server with
//! another secret fail like a tampered one. Tokens carry no expiry: a cursor only says where to
//! resume, so an old one is harmless.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{de::DeserializeOwned, Serialize};
use sha2::Sha256;

use crate::error::{ApiError, ApiResult};

type HmacSha256 = Hmac<Sha256>;

/// Bump when the token layout or a cursor's encoding changes: old tokens then fail cleanly
/// instead of being misread (postcard fields are positional, not named).
const VERSION: u8 = 1;
/// Truncated HMAC-SHA256: 128 bits is ample against online forgery.
const TAG_LEN: usize = 16;
/// Checked before base64 decoding so a huge string costs nothing; real tokens are far shorter.
pub const MAX_TOKEN_LEN: usize = 1024;
/// Domain-separates the derived key, so the configured secret itself never keys a MAC.
const KEY_LABEL: &[u8] = b"shardfeed/page-token/v1";

const FIELD: &str = "page_token";

/// Validates a request's `page_size`: 0 → `default`, above `max` → `max` (AIP-158 coerces
/// rather than rejects), negative → `INVALID_ARGUMENT` on `page_size`. `default` is itself
/// capped at `max`.
pub fn page_size(requested: i32, default: usize, max: usize) -> ApiResult<usize> {
    let Ok(requested) = usize::try_from(requested) else {
        return Err(ApiError::invalid_field("page_size", "must not be negative"));
    };
    Ok(match requested {
        0 => default.min(max),
        n => n.min(max),
    })
}

/// What a token is bound to: the RPC and the request fields that must not change between pages.
#[derive(Debug, Clone, Copy)]
pub struct TokenScope<'a> {
    /// Full method name, e.g. `shardfeed.v1.FeedService/GetHomeFeed`.
    pub rpc: &'a str,
    /// The request's subject, e.g. the `user_id` whose feed is paged.
    pub subject: i64,
}

/// Issues and checks page tokens. Cheap to clone; build once from
/// [`crate::config::PagingSettings`] and share.
#[derive(Clone)]
pub struct PageTokens {
    /// HMAC already keyed with the derived key; cloned per token.
    mac: HmacSha256,
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens { .. }")
    }
}

impl PageTokens {
    /// Derives the token key as `HMAC-SHA256(secret, label)`. Replicas sharing the secret accept
    /// each other's tokens.
    pub fn new(secret: &SecretString) -> Self {
        let derived = new_mac(secret.expose_secret().as_bytes())
            .chain_update(KEY_LABEL)
            .finalize()
            .into_bytes();
        Self {
            mac: new_mac(&derived),
        }
    }

    /// An opaque, URL-safe token carrying `cursor`, valid only for `scope`.
    ///
    /// # Panics
    /// If postcard cannot serialize `C` (e.g. a sequence of unknown length): a programming error
    /// that the first test paging through the RPC finds.
    pub fn encode<C: Serialize>(&self, scope: &TokenScope<'_>, cursor: &C) -> String {
        let payload = postcard::to_allocvec(cursor).expect("page cursor must serialize");
        let mut bytes = Vec::with_capacity(1 + payload.len() + TAG_LEN);
        bytes.push(VERSION);
        bytes.extend_from_slice(&payload);
        let tag = self.tag(scope, VERSION, &payload).finalize().into_bytes();
        bytes.extend_from_slice(&tag[..TAG_LEN]);
        let token = URL_SAFE_NO_PAD.encode(bytes);
        debug_assert!(token.len() <= MAX_TOKEN_LEN, "page cursor too large");
        token
    }

    /// The cursor in `token`, if this server issued it for `scope`. Anything else is
    /// `INVALID_ARGUMENT` on `page_token`; the description never says which check failed beyond
    /// what the caller can already see, so it is no forging oracle.
    pub fn decode<C: DeserializeOwned>(&self, scope: &TokenScope<'_>, token: &str) -> ApiResult<C> {
        const MALFORMED: &str =
            "is malformed; pass next_page_token from the previous response unchanged";
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid(MALFORMED));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| invalid(MALFORMED))?;
        let Some((&version, rest)) = bytes.split_first() else {
            return Err(invalid(MALFORMED));
        };
        if version != VERSION {
            return Err(invalid(
                "was issued by an incompatible server version; request the first page again",
            ));
        }
        let Some(payload_len) = rest.len().checked_sub(TAG_LEN) else {
            return Err(invalid(MALFORMED));
        };
        let (payload, tag) = rest.split_at(payload_len);
        // Constant-time comparison of the truncated tag.
        self.tag(scope, version, payload)
            .verify_truncated_left(tag)
            .map_err(|_| {
                invalid(
                    "does not belong to this request; page_token must come from a previous \
                     response to the same method with the same parameters",
                )
            })?;
        // Authentic but unreadable: the cursor type changed without a VERSION bump.
        match postcard::take_from_bytes::<C>(payload) {
            Ok((cursor, [])) => Ok(cursor),
            _ => Err(invalid("has expired; request the first page again")),
        }
    }

    /// HMAC over `version | len(rpc) (8 bytes BE) | rpc | subject (8 bytes BE) | payload`; the
    /// length prefix keeps the field boundaries unambiguous.
    fn tag(&self, scope: &TokenScope<'_>, version: u8, payload: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(&[version]);
        mac.update(&(scope.rpc.len() as u64).to_be_bytes());
        mac.update(scope.rpc.as_bytes());
        mac.update(&scope.subject.to_be_bytes());
        mac.update(payload);
        mac
    }
}

fn new_mac(key: &[u8]) -> HmacSha256 {
    <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

fn invalid(description: &str) -> ApiError {
    ApiError::invalid_field(FIELD, description)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use tonic::{Code, Status};
    use tonic_types::StatusExt;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct FeedCursor {
        time_ms: i64,
        post_id: i64,
    }

    const RPC: &str = "shardfeed.v1.FeedService/GetHomeFeed";
    const SCOPE: TokenScope<'static> = TokenScope {
        rpc: RPC,
        subject: 42,
    };
    const CURSOR: FeedCursor = FeedCursor {
        time_ms: 1_700_000_000_123,
        post_id: -7,
    };

    fn tokens(secret: &str) -> PageTokens {
        PageTokens::new(&SecretString::from(secret))
    }

    fn issuer() -> PageTokens {
        tokens("a-test-secret-of-sufficient-length")
    }

    /// Asserts `token` is refused with INVALID_ARGUMENT and a BadRequest violation on page_token.
    fn assert_rejected(tokens: &PageTokens, scope: &TokenScope<'_>, token: &str) {
        let err = match tokens.decode::<FeedCursor>(scope, token) {
            Ok(cursor) => panic!("{token:?} was accepted as {cursor:?}"),
            Err(err) => err,
        };
        let status = Status::from(err);
        assert_eq!(status.code(), Code::InvalidArgument, "{token:?}");
        assert!(status.message().contains("page_token"), "{status:?}");
        let details = status.get_error_details();
        let bad_request = details.bad_request().expect("a BadRequest detail");
        assert_eq!(bad_request.field_violations.len(), 1);
        assert_eq!(bad_request.field_violations[0].field, "page_token");
        assert!(!bad_request.field_violations[0].description.is_empty());
    }

    #[test]
    fn struct_cursor_round_trips_across_replicas() {
        let token = issuer().encode(&SCOPE, &CURSOR);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{token} is not URL-safe"
        );
        assert!(token.len() <= MAX_TOKEN_LEN);
        // A second instance from the same secret, as on another replica.
        let decoded: FeedCursor = issuer().decode(&SCOPE, &token).unwrap();
        assert_eq!(decoded, CURSOR);
        let extreme = FeedCursor {
            time_ms: i64::MIN,
            post_id: i64::MAX,
        };
        let decoded: FeedCursor = issuer()
            .decode(&SCOPE, &issuer().encode(&SCOPE, &extreme))
            .unwrap();
        assert_eq!(decoded, extreme);
    }

    /// Pins the wire format: replicas of different builds must agree during a rolling deploy.
    /// If this changes on purpose, bump `VERSION`. (Value cross-checked against an independent
    /// Python implementation of the layout in the module docs.)
    #[test]
    fn token_format_is_stable() {
        assert_eq!(
            issuer().encode(&SCOPE, &CURSOR),
            "Afahq_75Yg1QEHVUh9ig9N66p34waQI0"
        );
    }

    #[test]
    fn page_size_rules() {
        assert_eq!(page_size(0, 20, 100).unwrap(), 20);
        assert_eq!(page_size(1, 20, 100).unwrap(), 1);
        assert_eq!(page_size(100, 20, 100).unwrap(), 100);
        assert_eq!(page_size(101, 20, 100).unwrap(), 100);
        assert_eq!(page_size(i32::MAX, 20, 100).unwrap(), 100);
        assert_eq!(page_size(0, 500, 100).unwrap(), 100);
        for negative in [-1, i32::MIN] {
            let status = Status::from(page_size(negative, 20, 100).unwrap_err());
            assert_eq!(status.code(), Code::InvalidArgument);
            let details = status.get_error_details();
            let violations = &details.bad_request().expect("BadRequest").field_violations;
            assert_eq!(violations.len(), 1);
            assert_eq!(violations[0].field, "page_size");
        }
    }

    #[test]
    fn token_is_bound_to_rpc_and_subject() {
        let token = issuer().encode(&SCOPE, &CURSOR);
        let other_rpc = TokenScope {
            rpc: "shardfeed.v1.FeedService/GetUserTimeline",
            ..SCOPE
        };
        let other_subject = TokenScope {
            subject: 43,
            ..SCOPE
        };
        assert_rejected(&issuer(), &other_rpc, &token);
        let same_length_rpc = TokenScope {
            rpc: "shardfeed.v1.PostService/GetHomeFeed",
            ..SCOPE
        };
        assert_rejected(&issuer(), &same_length_rpc, &token);
        assert_rejected(&issuer(), &other_subject, &token);
    }

    #[test]
    fn scope_boundaries_cannot_be_shifted() {
        // Without the rpc length prefix, (RPC, 42, s2 | rest) and (RPC + 42's bytes, s2, rest)
        // would MAC the same bytes; `rest` here is itself a valid cursor.
        let tokens = issuer();
        let big = FeedCursor {
            time_ms: i64::MAX,
            post_id: i64::MAX,
        };
        let bytes = URL_SAFE_NO_PAD.decode(tokens.encode(&SCOPE, &big)).unwrap();
        let (version, rest) = bytes.split_first().unwrap();
        let subject = i64::from_be_bytes(rest[..8].try_into().unwrap());
        let mut forged = vec![*version];
        forged.extend_from_slice(&rest[8..]);
        let mut rpc = RPC.to_owned();
        rpc.push_str(std::str::from_utf8(&SCOPE.subject.to_be_bytes()).unwrap());
        let scope = TokenScope { rpc: &rpc, subject };
        assert_rejected(&tokens, &scope, &URL_SAFE_NO_PAD.encode(&forged));
    }

    #[test]
    fn token_from_another_secret_is_rejected() {
        let token = tokens("another-secret-of-sufficient-length").encode(&SCOPE, &CURSOR);
        assert_rejected(&issuer(), &SCOPE, &token);
    }

    #[test]
    fn every_single_byte_flip_is_rejected() {
        let tokens = issuer();
        let bytes = URL_SAFE_NO_PAD
            .decode(tokens.encode(&SCOPE, &CURSOR))
            .unwrap();
        for i in 0..bytes.len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut flipped = bytes.clone();
                flipped[i] ^= mask;
                assert_rejected(&tokens, &SCOPE, &URL_SAFE_NO_PAD.encode(&flipped));
            }
        }
    }

    #[test]
    fn truncated_tokens_are_rejected() {
        let tokens = issuer();
        let token = tokens.encode(&SCOPE, &CURSOR);
        for len in 0..token.len() {
            assert_rejected(&tokens, &SCOPE, &token[..len]);
        }
        let bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for len in 0..bytes.len() {
            assert_rejected(&tokens, &SCOPE, &URL_SAFE_NO_PAD.encode(&bytes[..len]));
        }
        // Extra bytes after the tag are no better.
        let mut longer = bytes.clone();
        longer.push(0);
        assert_rejected(&tokens, &SCOPE, &URL_SAFE_NO_PAD.encode(&longer));
    }

    #[test]
    fn garbage_is_rejected() {
        let tokens = issuer();
        let token = tokens.encode(&SCOPE, &CURSOR);
        let cases = [
            String::new(),
            "!!!".into(),
            "a".into(),
            "AAAA".into(),
            "A".repeat(MAX_TOKEN_LEN),
            "A".repeat(MAX_TOKEN_LEN + 1),
            "A".repeat(1 << 20),
            "ñandú🦀".into(),
            format!("{token}="),
            format!(" {token}"),
            token.replace('-', "+").replace('_', "/") + "+/",
        ];
        for garbage in &cases {
            assert_rejected(&tokens, &SCOPE, garbage);
        }
    }

    #[test]
    fn authentic_tokens_over_the_length_cap_are_rejected() {
        let tokens = issuer();
        // Built by hand: `encode` debug-asserts the cap.
        let sign = |cursor: &String| {
            let payload = postcard::to_allocvec(cursor).unwrap();
            let tag = tokens
                .tag(&SCOPE, VERSION, &payload)
                .finalize()
                .into_bytes();
            let mut bytes = vec![VERSION];
            bytes.extend_from_slice(&payload);
            bytes.extend_from_slice(&tag[..TAG_LEN]);
            URL_SAFE_NO_PAD.encode(bytes)
        };
        let fits = "x".repeat(700);
        let token = sign(&fits);
        assert!(token.len() <= MAX_TOKEN_LEN);
        assert_eq!(tokens.decode::<String>(&SCOPE, &token).unwrap(), fits);
        let token = sign(&"x".repeat(800));
        assert!(token.len() > MAX_TOKEN_LEN);
        let err = tokens.decode::<String>(&SCOPE, &token).unwrap_err();
        assert_eq!(Status::from(err).code(), Code::InvalidArgument);
    }

    #[test]
    fn authentic_token_with_wrong_cursor_type_is_rejected() {
        let tokens = issuer();
        let token = tokens.encode(&SCOPE, &"not a FeedCursor");
        assert_rejected(&tokens, &SCOPE, &token);
    }

    mod properties {
        use base64::Engine;
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Any text a caller sends is a clear INVALID_ARGUMENT on page_token, never a
            /// panic, an internal error or an accepted cursor.
            #[test]
            fn any_text_is_refused(token in "\\PC{0,1100}") {
                assert_rejected(&issuer(), &SCOPE, &token);
            }

            /// Well-formed base64url of any bytes (the shape of a real token) is refused too:
            /// the version byte, the length and the tag all have to hold.
            #[test]
            fn any_bytes_in_token_form_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
                let token = URL_SAFE_NO_PAD.encode(&bytes);
                assert_rejected(&issuer(), &SCOPE, &token);
            }

            /// A real token with any one byte changed is refused.
            #[test]
            fn a_tampered_token_is_refused(
                time_ms in any::<i64>(),
                post_id in any::<i64>(),
                at in any::<prop::sample::Index>(),
                flip in 1u8..=255,
            ) {
                let tokens = issuer();
                let token = tokens.encode(&SCOPE, &FeedCursor { time_ms, post_id });
                let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
                let i = at.index(bytes.len());
                bytes[i] ^= flip;
                assert_rejected(&tokens, &SCOPE, &URL_SAFE_NO_PAD.encode(&bytes));
            }

            /// Every cursor comes back as it went in, and only for the scope it was issued for.
            #[test]
            fn cursors_round_trip_within_their_scope(
                time_ms in any::<i64>(),
                post_id in any::<i64>(),
                subject in any::<i64>(),
            ) {
                let tokens = issuer();
                let scope = TokenScope { rpc: RPC, subject };
                let token = tokens.encode(&scope, &FeedCursor { time_ms, post_id });
                prop_assert_eq!(
                    tokens.decode::<FeedCursor>(&scope, &token).unwrap(),
                    FeedCursor { time_ms, post_id }
                );
                let other = TokenScope { rpc: RPC, subject: subject.wrapping_add(1) };
                assert_rejected(&tokens, &other, &token);
            }

            /// Any page size is a size within the bounds or INVALID_ARGUMENT.
            #[test]
            fn any_page_size_is_bounded_or_refused(requested in any::<i32>()) {
                match page_size(requested, 20, 1000) {
                    Ok(size) => prop_assert!((1..=1000).contains(&size)),
                    Err(err) => {
                        prop_assert!(requested < 0);
                        prop_assert_eq!(Status::from(err).code(), Code::InvalidArgument);
                    }
                }
            }
        }
    }
}
