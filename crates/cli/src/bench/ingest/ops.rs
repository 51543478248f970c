//! The two requests the ingest bench measures: CreatePost over gRPC as a real client calls it,
//! and the bare single-row INSERT transaction straight against PostgreSQL.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::Rng;
use shardfeed_proto::auth::AuthChannel;
use shardfeed_proto::v1::{post_service_client::PostServiceClient, CreatePostRequest};
use tokio_postgres::Statement;

use crate::bench::body::ascii_body;
use crate::client::{pg_error, status_error};
use crate::measure::{Op, OpError};

pub struct CreatePost {
    pub client: PostServiceClient<AuthChannel>,
    pub authors: Arc<[i64]>,
    pub rng: StdRng,
    pub body_bytes: usize,
}

impl Op for CreatePost {
    async fn call(&mut self) -> Result<(), OpError> {
        let author_id = self.authors[self.rng.gen_range(0..self.authors.len())];
        let request = CreatePostRequest {
            author_id,
            body: make_body(&mut self.rng, self.body_bytes),
            request_id: uuid::Uuid::new_v4().to_string(),
        };
        match self.client.create_post(request).await {
            Ok(response) => check_post(response.into_inner().post.as_ref(), author_id),
            Err(status) => Err(status_error(&status)),
        }
    }
}

/// A success must carry the post it created.
pub fn check_post(post: Option<&shardfeed_proto::v1::Post>, author_id: i64) -> Result<(), OpError> {
    match post {
        Some(post) if post.author_id == author_id && post.post_id > 0 => Ok(()),
        Some(post) => Err(OpError::new(
            "BadResponse",
            format!(
                "post_id={} author_id={} for a post by author {author_id}",
                post.post_id, post.author_id
            ),
        )),
        None => Err(OpError::new(
            "BadResponse",
            "CreatePostResponse without a post",
        )),
    }
}

pub struct BareInsert {
    pub client: tokio_postgres::Client,
    pub insert: Statement,
    pub authors: Arc<[i64]>,
    pub next_post_id: Arc<AtomicI64>,
    pub rng: StdRng,
    pub body_bytes: usize,
}

impl Op for BareInsert {
    async fn call(&mut self) -> Result<(), OpError> {
        let author_id = self.authors[self.rng.gen_range(0..self.authors.len())];
        let post_id = self.next_post_id.fetch_add(1, Ordering::Relaxed);
        let body = make_body(&mut self.rng, self.body_bytes);
        // BEGIN; INSERT ...; COMMIT; — three round trips, as a transaction of one insert.
        let tx = self.client.transaction().await.map_err(pg_error)?;
        tx.execute(&self.insert, &[&author_id, &post_id, &body])
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }
}

/// `Code: message`, or the code alone when the message is empty.
/// `len` bytes of ASCII text: words of letters and digits.
pub fn make_body(rng: &mut impl Rng, len: usize) -> String {
    ascii_body(len, |n| rng.gen_range(0..n))
}
