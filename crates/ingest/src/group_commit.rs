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
//! written. If PostgreSQL refuses a batch statement, its posts are retried one by one, a few at
//! a time, so a post fails only for a reason of its own; an outage fails the whole batch with
//! `UNAVAILABLE`. An author another transaction has locked (a long `DeleteUser`) is skipped by
//! the statement and its posts written alone, so it stalls no other author's post.

use std::{future::Future, sync::Arc};

use deadpool_postgres::Pool;
use shardfeed_proto::v1::Post;
use shardfeed_server::{ApiError, ApiResult};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::{Instrument, Span};

use crate::{
    cache_sync::CacheSync,
    store::{
        outbox::Written,
        posts::{self, BatchOutcome, NewPost},
    },
};

/// Posts waiting for a statement; past this a create is written on its own.
const QUEUE: usize = 16 * 1024;

/// Posts of a batch written alone (a refused statement, authors it skipped) at once.
const RETRY_CONCURRENCY: usize = 4;

type Answer = oneshot::Sender<ApiResult<Post>>;

struct Job {
    post: NewPost,
    done: Answer,
    /// The span of the request that waits: the batch's span continues its trace.
    span: Span,
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
        let span = Span::current();
        match queue.try_send(Job { post, done, span }) {
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
        // One span per statement: a child of its first request's span, linked to the others'.
        let span = tracing::info_span!(
            parent: &batch[0].span,
            "group_commit",
            otel.name = "posts.group_commit",
            shardfeed.posts = batch.len(),
        );
        for job in &batch[1..] {
            span.follows_from(&job.span);
        }
        let write = async move {
            let (answers, posts): (Vec<Answer>, Vec<NewPost>) =
                batch.into_iter().map(|job| (job.done, job.post)).unzip();
            let settled = commit(&pool, &posts).await;
            // The next batch may start while this one's posts go to Redis.
            drop(slot);
            let mut now = Vec::new();
            let mut alone = Vec::new();
            for ((answer, post), settled) in answers.into_iter().zip(posts).zip(settled) {
                match settled {
                    Settled::Done(result) => now.push((answer, result)),
                    other => alone.push((answer, post, other)),
                }
            }
            // The posts the statement wrote go to Redis as one unit, then are answered.
            let pending = now
                .iter_mut()
                .filter_map(|(_, result)| result.as_mut().ok().and_then(|w| w.pending.take()))
                .collect();
            cache.after_commit_all(pending).await;
            for (answer, result) in now {
                let _ = answer.send(result.map(|written| written.value));
            }
            // The others on their own, each as long as it takes (a locked author's post waits
            // for the lock), holding up neither the batch's answers nor the next batch.
            few_at_a_time(alone.into_iter().map(|(answer, post, settled)| {
                let (pool, cache) = (&pool, &cache);
                async move {
                    let written = match settled {
                        Settled::Replay => posts::replay(pool, &post).await,
                        _ => create_alone(pool, &post).await,
                    };
                    let result = match written {
                        Ok(written) => {
                            cache.after_commit(written.pending).await;
                            Ok(written.value)
                        }
                        Err(err) => Err(err),
                    };
                    let _ = answer.send(result);
                }
            }))
            .await;
        };
        tokio::spawn(write.instrument(span));
    }
}

/// Where a post of a batch stands once its statement is done.
enum Settled {
    Done(ApiResult<Written<Post>>),
    /// To be written alone: its author was locked by another transaction (skipped so as to hold
    /// up no one else; alone it waits for that lock like any create, and gets `NOT_FOUND` if the
    /// author is really missing), or PostgreSQL refused the batch statement (nothing of it was
    /// written, so each post fails, if at all, for a reason of its own).
    Alone,
    /// Its `request_id` was taken: answered from the first result, after the commit that may
    /// hold it.
    Replay,
}

/// Writes one batch in one statement: where each post stands, in order.
async fn commit(pool: &Pool, posts: &[NewPost]) -> Vec<Settled> {
    match posts::create_many(pool, posts).await {
        Ok(outcomes) => outcomes
            .into_iter()
            .map(|outcome| match outcome {
                BatchOutcome::Created(written) => Settled::Done(Ok(written)),
                BatchOutcome::AuthorMissing => Settled::Alone,
                BatchOutcome::KeyTaken => Settled::Replay,
            })
            .collect(),
        // The store is out of reach (or the statement was cancelled): every post of the batch
        // gets the error, as each would have alone. Retrying could write a post twice when the
        // commit happened but its answer was lost.
        Err(err @ (ApiError::Unavailable { .. } | ApiError::DeadlineExceeded)) => posts
            .iter()
            .map(|_| Settled::Done(Err(copy_of(&err))))
            .collect(),
        Err(err) => {
            tracing::warn!(
                posts = posts.len(),
                error = %err,
                "a group commit failed; writing its posts one by one"
            );
            posts.iter().map(|_| Settled::Alone).collect()
        }
    }
}

/// Awaits `writes`, [`RETRY_CONCURRENCY`] at a time; their results in order.
async fn few_at_a_time<T>(writes: impl IntoIterator<Item = impl Future<Output = T>>) -> Vec<T> {
    let limit = Semaphore::new(RETRY_CONCURRENCY);
    futures::future::join_all(writes.into_iter().map(|write| async {
        let _permit = limit.acquire().await;
        write.await
    }))
    .await
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
