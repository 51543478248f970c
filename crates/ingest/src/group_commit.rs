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
//! A request whose caller has gone (deadline, cancellation) before its batch starts is not
//! written. If PostgreSQL refuses a batch statement, its posts are retried one by one, so a
//! post fails only for a reason of its own; an outage fails the whole batch with `UNAVAILABLE`.

use std::sync::Arc;

use deadpool_postgres::Pool;
use shardfeed_core::{ApiError, ApiResult};
use shardfeed_proto::v1::Post;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::store::posts::{self, BatchOutcome, NewPost, Written};

/// Posts waiting for a statement; past this a create is written on its own.
const QUEUE: usize = 16 * 1024;

type Answer = oneshot::Sender<ApiResult<Written<Post>>>;

struct Job {
    post: NewPost,
    done: Answer,
}

/// Writes posts, batching concurrent ones. Cheap to clone.
#[derive(Clone)]
pub struct PostWriter {
    pool: Pool,
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
    pub fn new(pool: Pool, group: GroupCommit) -> Self {
        if !group.enabled {
            return Self { pool, queue: None };
        }
        let (queue, jobs) = mpsc::channel(QUEUE);
        tokio::spawn(batches(pool.clone(), jobs, group));
        Self {
            pool,
            queue: Some(queue),
        }
    }

    /// Creates one post; returns once the transaction that holds it has committed.
    pub async fn create(&self, post: NewPost) -> ApiResult<Written<Post>> {
        let Some(queue) = &self.queue else {
            return create_alone(&self.pool, &post).await;
        };
        let (done, answer) = oneshot::channel();
        match queue.try_send(Job { post, done }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job)) => {
                return create_alone(&self.pool, &job.post).await;
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(ApiError::internal(anyhow::anyhow!(
                "the group-commit task stopped before answering"
            )))
        })
    }
}

async fn create_alone(pool: &Pool, post: &NewPost) -> ApiResult<Written<Post>> {
    posts::create(pool, post.author_id, &post.body, post.request_id).await
}

/// Takes whatever has queued whenever a statement slot is free.
async fn batches(pool: Pool, mut jobs: mpsc::Receiver<Job>, group: GroupCommit) {
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
        tokio::spawn(async move {
            commit(&pool, batch).await;
            drop(slot);
        });
    }
}

/// Writes one batch and answers each of its requests.
async fn commit(pool: &Pool, batch: Vec<Job>) {
    let (posts, answers): (Vec<NewPost>, Vec<Answer>) =
        batch.into_iter().map(|job| (job.post, job.done)).unzip();
    if posts.len() == 1 {
        let _ = answers
            .into_iter()
            .next()
            .expect("one answer")
            .send(create_alone(pool, &posts[0]).await);
        return;
    }
    match posts::create_many(pool, &posts).await {
        Ok(outcomes) => {
            let mut replays = Vec::new();
            for ((post, answer), outcome) in posts.iter().zip(answers).zip(outcomes) {
                match outcome {
                    BatchOutcome::Created(written) => {
                        let _ = answer.send(Ok(written));
                    }
                    BatchOutcome::AuthorMissing => {
                        let _ = answer.send(Err(ApiError::not_found(format!(
                            "user {} does not exist",
                            post.author_id
                        ))));
                    }
                    BatchOutcome::KeyTaken => replays.push((post, answer)),
                }
            }
            // After the commit, so a key claimed earlier in this batch is visible.
            futures::future::join_all(replays.into_iter().map(|(post, answer)| async move {
                let _ = answer.send(posts::replay(pool, post).await);
            }))
            .await;
        }
        // The store is out of reach (or the statement was cancelled): every post of the batch
        // gets the error, as each would have alone. Retrying could write a post twice when the
        // commit happened but its answer was lost.
        Err(err @ (ApiError::Unavailable { .. } | ApiError::DeadlineExceeded)) => {
            for answer in answers {
                let _ = answer.send(Err(copy_of(&err)));
            }
        }
        // PostgreSQL refused the statement (a deadlock victim, say): nothing of it was written,
        // so each post is retried alone and fails, if at all, for a reason of its own.
        Err(err) => {
            tracing::warn!(
                posts = posts.len(),
                error = %err,
                "a group commit failed; writing its posts one by one"
            );
            futures::future::join_all(posts.iter().zip(answers).map(|(post, answer)| async move {
                let _ = answer.send(create_alone(pool, post).await);
            }))
            .await;
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
