//! GetUserTimeline against the SQL ground truth: cached authors, authors whose older posts live
//! only in PostgreSQL, authors never cached, and every bad argument and token.

use shardfeed_cache::CacheChange;
use tonic::Code;
use tonic_types::StatusExt;

use crate::harness::{flat, unreachable_postgres, Harness};

#[tokio::test]
async fn a_cached_timeline_pages_like_the_sql_truth() {
    let mut h = Harness::start(800).await;
    let author = h.user(true).await;
    // Three posts per millisecond: ties are broken by post id.
    h.posts(author, 7, 3, true).await;
    let pages = h.walk(author, 3).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![3, 3, 1]
    );
    assert_eq!(flat(&pages), h.truth(author).await);
    // page_size 0 means 20: everything in one page, no token.
    assert_eq!(
        h.page(author, 0, "").await.unwrap(),
        (h.truth(author).await, String::new())
    );
}

#[tokio::test]
async fn pages_past_the_cached_window_come_from_postgres() {
    let mut h = Harness::start(5).await;
    let author = h.user(true).await;
    h.posts(author, 12, 2, true).await;
    for size in [1, 3, 4, 5, 7] {
        assert_eq!(
            flat(&h.walk(author, size).await),
            h.truth(author).await,
            "page size {size}"
        );
    }
}

#[tokio::test]
async fn an_author_the_cache_never_saw_is_read_from_postgres() {
    let mut h = Harness::start(800).await;
    let author = h.user(false).await;
    h.posts(author, 9, 1, false).await;
    assert_eq!(flat(&h.walk(author, 4).await), h.truth(author).await);
    let empty = h.user(false).await;
    assert_eq!(
        h.page(empty, 10, "").await.unwrap(),
        (vec![], String::new())
    );
}

#[tokio::test]
async fn page_size_is_clamped_to_100() {
    let mut h = Harness::start(800).await;
    let author = h.user(true).await;
    h.posts(author, 105, 1, true).await;
    let (first, token) = h.page(author, 1000, "").await.unwrap();
    assert_eq!(first.len(), 100);
    let (rest, last) = h.page(author, 1000, &token).await.unwrap();
    assert_eq!((rest.len(), last.as_str()), (5, ""));
}

#[tokio::test]
async fn unknown_and_deleted_users_are_not_found() {
    let h = Harness::start(800).await;
    let s = h.page(987_654_321, 10, "").await.unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    let gone = h.user(true).await;
    h.writer
        .apply(&CacheChange::UserDeleted { user_id: gone })
        .await
        .unwrap();
    let s = h.page(gone, 10, "").await.unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    drop(h.db);
}

pub(crate) fn assert_violation(status: &tonic::Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let violations = &details
        .bad_request()
        .expect("a BadRequest detail")
        .field_violations;
    assert!(
        violations.iter().any(|v| v.field == field),
        "{violations:?}"
    );
}

#[tokio::test]
async fn bad_arguments_and_tokens_are_invalid_argument() {
    let mut h = Harness::start(800).await;
    let a = h.user(true).await;
    let b = h.user(true).await;
    h.posts(a, 5, 1, true).await;
    h.posts(b, 5, 1, true).await;
    assert_violation(&h.page(0, 10, "").await.unwrap_err(), "user_id");
    assert_violation(&h.page(-4, 10, "").await.unwrap_err(), "user_id");
    assert_violation(&h.page(a, -1, "").await.unwrap_err(), "page_size");

    let (_, token) = h.page(a, 2, "").await.unwrap();
    assert!(!token.is_empty());
    let mut tampered = token.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for (what, user, bad) in [
        ("garbled", a, "%%%"),
        ("truncated", a, &token[..token.len() / 2]),
        ("tampered", a, tampered.as_str()),
        ("another user's", b, token.as_str()),
    ] {
        let s = h.page(user, 2, bad).await.unwrap_err();
        assert_violation(&s, "page_token");
        assert!(!s.message().is_empty(), "{what}");
    }
}

#[tokio::test]
async fn a_cached_timeline_is_served_without_postgres() {
    // The aggregator's PostgreSQL is a port nothing listens on: only the cache can answer.
    let mut h = Harness::builder()
        .aggregator_pg(unreachable_postgres())
        .start()
        .await;
    let author = h.user(true).await;
    h.posts(author, 6, 2, true).await;
    assert_eq!(flat(&h.walk(author, 4).await), h.truth(author).await);
    // An author the cache does not hold needs PostgreSQL: UNAVAILABLE, not an empty page.
    let uncached = h.user(false).await;
    let s = h.page(uncached, 4, "").await.unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
}
