//! `shardfeed.v1.FeedService`: home feeds (see `read::home`) and author timelines (see
//! `read::author`), paged by an opaque keyset token.

use std::time::Duration;

use deadpool_postgres::Pool;
use shardfeed_proto::ids::UserId;
use shardfeed_proto::v1::{
    feed_service_server::FeedService, GetHomeFeedRequest, GetHomeFeedResponse,
    GetUserTimelineRequest, GetUserTimelineResponse, Post,
};
use shardfeed_server::auth::Caller;
use shardfeed_server::error::parse_id;
use shardfeed_server::{
    deadline::Deadline,
    paging::{page_size, PageTokens, TokenScope},
    ApiError, ApiResult,
};
use tonic::{Request, Response, Status};

use crate::{
    cursor::Position,
    detect::Detector,
    metrics::ReadMetrics,
    mitigate::HotReads,
    read::{
        author::{AuthorReader, CachedPage},
        home::{HomePage, HomeReader},
        postgres,
    },
    slice::Head,
};

/// AIP-158 sizes for feeds and timelines.
const DEFAULT_PAGE_SIZE: usize = 20;
const MAX_PAGE_SIZE: usize = 100;

const TIMELINE_RPC: &str = "shardfeed.v1.FeedService/GetUserTimeline";
const HOME_RPC: &str = "shardfeed.v1.FeedService/GetHomeFeed";

pub struct Feeds {
    reader: AuthorReader,
    home: HomeReader,
    pool: Pool,
    tokens: PageTokens,
    request_timeout: Duration,
    detect: Detector,
    hot: HotReads,
    metrics: ReadMetrics,
}

impl Feeds {
    /// `detect` counts every author a read touches; `hot` reads the hot ones; `metrics` counts
    /// the pages answered.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        reader: AuthorReader,
        home: HomeReader,
        pool: Pool,
        tokens: PageTokens,
        request_timeout: Duration,
        detect: Detector,
        hot: HotReads,
        metrics: ReadMetrics,
    ) -> Self {
        Self {
            reader,
            home,
            pool,
            tokens,
            request_timeout,
            detect,
            hot,
            metrics,
        }
    }

    /// One page of the home feed of a user who follows `followees`: the hot ones from their
    /// heads, the others by the home reader.
    async fn home_page(
        &self,
        followees: &[i64],
        after: Option<Position>,
        size: usize,
    ) -> ApiResult<HomePage> {
        self.detect.record(followees);
        let (heads, cold) = self.hot.heads(followees, self.home.node_timeout()).await;
        self.home.page(&heads, cold, after, size).await
    }

    /// The page from a hot author's head, when the author is hot and the head covers it.
    async fn hot_page(
        &self,
        author_id: i64,
        after: Option<Position>,
        size: usize,
    ) -> Option<ApiResult<(Vec<Post>, bool)>> {
        let (heads, _) = self.hot.heads(&[author_id], self.home.node_timeout()).await;
        let (_, head) = heads.into_iter().next()?;
        if matches!(*head, Head::Gone) {
            return Some(Err(ApiError::not_found(format!(
                "user {author_id} does not exist"
            ))));
        }
        let page = head.page(after, size)?;
        let more = page.posts.len() > size;
        let posts = page.posts.iter().take(size).cloned().collect();
        Some(Ok((posts, more)))
    }

    /// One page of `author_id`'s posts after `after`, and whether older ones exist.
    async fn timeline_page(
        &self,
        author_id: i64,
        after: Option<Position>,
        size: usize,
    ) -> ApiResult<(Vec<Post>, bool)> {
        self.detect.record(&[author_id]);
        if let Some(page) = self.hot_page(author_id, after, size).await {
            return page;
        }
        let cached = match self.reader.page(author_id, after, size).await {
            Ok(cached) => cached,
            Err(err) => {
                // The author's node does not answer (failover, overload): PostgreSQL does.
                tracing::warn!(author_id, error = %err, "cache read failed; reading PostgreSQL");
                CachedPage::Miss
            }
        };
        let (mut posts, more) = match cached {
            CachedPage::Gone => {
                return Err(ApiError::not_found(format!(
                    "user {author_id} does not exist"
                )))
            }
            CachedPage::Hit { posts, more } => (posts, more),
            CachedPage::Partial {
                mut posts,
                continue_below,
            } => {
                let wanted = (size - posts.len() + 1) as i64;
                posts.extend(
                    postgres::timeline_page(&self.pool, author_id, continue_below, wanted).await?,
                );
                let more = posts.len() > size;
                (posts, more)
            }
            miss @ (CachedPage::Miss | CachedPage::NotLoaded) => {
                postgres::require_user(&self.pool, author_id).await?;
                if miss == CachedPage::NotLoaded {
                    self.reader.rebuild(author_id);
                }
                let before = Position::before_id(after);
                let posts =
                    postgres::timeline_page(&self.pool, author_id, before, size as i64 + 1).await?;
                let more = posts.len() > size;
                (posts, more)
            }
        };
        posts.truncate(size);
        Ok((posts, more))
    }
}

impl Feeds {
    /// The position a page token carries, checked against the RPC and user it was issued for.
    fn after(&self, scope: &TokenScope<'_>, token: &str) -> ApiResult<Option<Position>> {
        if token.is_empty() {
            return Ok(None);
        }
        self.tokens.decode::<Position>(scope, token).map(Some)
    }

    /// The token of the page after one that ended with `last`, when more posts follow.
    fn next_token(&self, scope: &TokenScope<'_>, last: Option<&Post>, more: bool) -> String {
        match last {
            Some(last) if more => self.tokens.encode(scope, &position_of(last)),
            _ => String::new(),
        }
    }
}

fn parse_user_id(user_id: i64) -> ApiResult<i64> {
    Ok(parse_id::<UserId>("user_id", user_id)?.get())
}

/// The keyset position of a post.
fn position_of(post: &Post) -> Position {
    let time_ms = post
        .create_time
        .as_ref()
        .map_or(0, shardfeed_proto::time::to_ms);
    Position {
        time_ms,
        post_id: post.post_id,
    }
}

#[tonic::async_trait]
impl FeedService for Feeds {
    #[tracing::instrument(skip_all, fields(user_id = request.get_ref().user_id))]
    async fn get_home_feed(
        &self,
        request: Request<GetHomeFeedRequest>,
    ) -> Result<Response<GetHomeFeedResponse>, Status> {
        let deadline = Deadline::of(&request, self.request_timeout);
        let user_id = parse_user_id(request.get_ref().user_id)?;
        Caller::check(&request, user_id, "read the home feed")?;
        let req = request.into_inner();
        let size = page_size(req.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
        let scope = TokenScope {
            rpc: HOME_RPC,
            subject: user_id,
        };
        let after = self.after(&scope, &req.page_token)?;
        let page = deadline
            .run(async {
                let followees = self.home.followees(user_id).await?;
                self.home_page(&followees, after, size).await
            })
            .await??;
        let next_page_token = self.next_token(&scope, page.posts.last(), page.more);
        self.metrics.answered(page.authors_omitted > 0);
        Ok(Response::new(GetHomeFeedResponse {
            posts: page.posts,
            next_page_token,
            degraded: page.authors_omitted > 0,
            authors_omitted: page.authors_omitted as i32,
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id = request.get_ref().user_id))]
    async fn get_user_timeline(
        &self,
        request: Request<GetUserTimelineRequest>,
    ) -> Result<Response<GetUserTimelineResponse>, Status> {
        let deadline = Deadline::of(&request, self.request_timeout);
        let req = request.into_inner();
        let user_id = parse_user_id(req.user_id)?;
        let size = page_size(req.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
        let scope = TokenScope {
            rpc: TIMELINE_RPC,
            subject: user_id,
        };
        let after = self.after(&scope, &req.page_token)?;
        let (posts, more) = deadline
            .run(self.timeline_page(user_id, after, size))
            .await??;
        let next_page_token = self.next_token(&scope, posts.last(), more);
        self.metrics.answered(false);
        Ok(Response::new(GetUserTimelineResponse {
            posts,
            next_page_token,
        }))
    }
}
