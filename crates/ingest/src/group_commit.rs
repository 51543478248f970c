//! Group commit for `CreatePost`: concurrent creates share one statement and one commit.
//!
//! A create costs PostgreSQL far more per transaction (parse, snapshot, three inserts' worth
//! of index work, the commit's WAL flush, a round trip) than per row. So requests hand their
//! post to one task, which writes whatever has queued up with one [`posts::create_many`]
//! statement, at most `ingest.group_commit_statements` of them in flight at once. Nothing
//! waits on a timer: a request arriving at an idle service is written at once, alone; under
//! load the posts that queue while the statements in flight commit go out together. Each
//! request still gets the answer it would get alone — its post, `NOT_FOUND`, the first result
//! of its `request_id` or `ABORTED` — and is acknowledged only after the commit that holds it.
//!
//! The writer also applies each committed post to the cache (the fast path of
//! [`CacheSync`]): a batch's posts go to Redis together, as one unit, once its statement has
//! committed and freed its slot for the next batch; each request is answered after that. A
//! request whose caller has gone (deadline, cancellation) before its batch starts is not
//! written. If PostgreSQL refuses a batch statement, its posts are retried one by one, so a
//! post fails only for a reason of its own; an outage fails the whole batch with `UNAVAILABLE`.

use std::sync::Arc;

use deadpool_postgres::Pool;
use shardfeed_core::{ApiError, ApiResult};
use shardfeed_proto::v1::Post;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::{
    cache_sync::CacheSync,
    store::posts::{self, BatchOutcome, NewPost, Written},
};

/// Posts waiting for a statement; past this a create is written on its own.
const QUEUE: usize = 16 * 1024;

type Answer = oneshot::Sender<ApiResult<Post>>;

struct Job {
    post: NewPost,
    done: Answer,
}

/// Writes posts, batching concurrent ones, and applies them to the cache. Cheap to clone.
#[derive(Clone)]
pub struct PostWriter {
    pool: Pool,
    cache: CacheSync,
    /// `None`: group commit is off, every create is its own transaction.
    queue: Option<mpsc::Sender<Job>>,
}

/// How posts are grouped.
#[derive(Debug, Clone, Copy)]
pub struct GroupCommit {
    pub enabled: bool,
    /// Posts in one statement at most.
    pub max_batch: usize,
    /// Batch statements in flight at once.
    pub statements: usize,
}

impl PostWriter {
    /// The writer and, when group commit is on, its batching task (which ends when every clone
    /// of the writer is gone).
    pub fn new(pool: Pool, cache: CacheSync, group: GroupCommit) -> Self {
        if !group.enabled {
            return Self {
                pool,
                cache,
                queue: None,
            };
        }
        let (queue, jobs) = mpsc::channel(QUEUE);
        tokio::spawn(batches(pool.clone(), cache.clone(), jobs, group));
        Self {
            pool,
            cache,
            queue: Some(queue),
        }
    }

    /// Creates one post; returns once the transaction that holds it has committed and the
    /// fast path has applied it to the cache (or left it to the relay).
    pub async fn create(&self, post: NewPost) -> ApiResult<Post> {
        let Some(queue) = &self.queue else {
            return self.create_alone(&post).await;
        };
        let (done, answer) = oneshot::channel();
        match queue.try_send(Job { post, done }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job)) => {
                return self.create_alone(&job.post).await;
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(ApiError::internal(anyhow::anyhow!(
                "the group-commit task stopped before answering"
            )))
        })
    }

    /// One post in its own transaction, then its fast path.
    async fn create_alone(&self, post: &NewPost) -> ApiResult<Post> {
        let written = create_alone(&self.pool, post).await?;
        self.cache.after_commit(written.pending).await;
        Ok(written.value)
    }
}

async fn create_alone(pool: &Pool, post: &NewPost) -> ApiResult<Written<Post>> {
    posts::create(pool, post.author_id, &post.body, post.request_id).await
}

/// Takes whatever has queued whenever a statement slot is free.
async fn batches(pool: Pool, cache: CacheSync, mut jobs: mpsc::Receiver<Job>, group: GroupCommit) {
    let slots = Arc::new(Semaphore::new(group.statements.max(1)));
    let max_batch = group.max_batch.max(1);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Vec::with_capacity(max_batch);
        if jobs.recv_many(&mut batch, max_batch).await == 0 {
            return; // every writer is gone
        }
        // Not written for callers that stopped waiting.
        batch.retain(|job| !job.done.is_closed());
        if batch.is_empty() {
            continue;
        }
        let pool = pool.clone();
        let cache = cache.clone();
        tokio::spawn(async move {
            let (answers, posts): (Vec<Answer>, Vec<NewPost>) =
                batch.into_iter().map(|job| (job.done, job.post)).unzip();
            let mut results = commit(&pool, &posts).await;
            // The next batch may start while this one's posts go to Redis.
            drop(slot);
            let pending = results
                .iter_mut()
                .filter_map(|result| result.as_mut().ok().and_then(|w| w.pending.take()))
                .collect();
            cache.after_commit_all(pending).await;
            for (answer, result) in answers.into_iter().zip(results) {
                let _ = answer.send(result.map(|written| written.value));
            }
        });
    }
}

/// Writes one batch: each post's result, in order.
async fn commit(pool: &Pool, posts: &[NewPost]) -> Vec<ApiResult<Written<Post>>> {
    if posts.len() == 1 {
        return vec![create_alone(pool, &posts[0]).await];
    }
    match posts::create_many(pool, posts).await {
        Ok(outcomes) => {
            // A post whose key was taken is answered now, after the commit, so that a key
            // claimed earlier in this batch is visible.
            let answers = posts
                .iter()
                .zip(outcomes)
                .map(|(post, outcome)| async move {
                    match outcome {
                        BatchOutcome::Created(written) => Ok(written),
                        BatchOutcome::AuthorMissing => Err(ApiError::not_found(format!(
                            "user {} does not exist",
                            post.author_id
                        ))),
                        BatchOutcome::KeyTaken => posts::replay(pool, post).await,
                    }
                });
            futures::future::join_all(answers).await
        }
        // The store is out of reach (or the statement was cancelled): every post of the batch
        // gets the error, as each would have alone. Retrying could write a post twice when the
        // commit happened but its answer was lost.
        Err(err @ (ApiError::Unavailable { .. } | ApiError::DeadlineExceeded)) => {
            posts.iter().map(|_| Err(copy_of(&err))).collect()
        }
        // PostgreSQL refused the statement (a deadlock victim, say): nothing of it was written,
        // so each post is retried alone and fails, if at all, for a reason of its own.
        Err(err) => {
            tracing::warn!(
                posts = posts.len(),
                error = %err,
                "a group commit failed; writing its posts one by one"
            );
            futures::future::join_all(posts.iter().map(|post| create_alone(pool, post))).await
        }
    }
}

/// The same error for another request of the batch.
fn copy_of(err: &ApiError) -> ApiError {
    match err {
        ApiError::Unavailable { store, source } => ApiError::Unavailable {
            store,
            source: anyhow::anyhow!("{source:#}"),
        },
        ApiError::DeadlineExceeded => ApiError::DeadlineExceeded,
        other => ApiError::internal(anyhow::anyhow!("{other:#}")),
    }
}
