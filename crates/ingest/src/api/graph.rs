//! `shardfeed.v1.GraphService`: the follow graph.

use std::time::Duration;

use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};
use shardfeed_proto::ids::UserId;
use shardfeed_proto::v1::{
    graph_service_server::GraphService, FollowRequest, FollowResponse, ListFollowersRequest,
    ListFollowersResponse, ListFollowingRequest, ListFollowingResponse, UnfollowRequest,
    UnfollowResponse,
};
use shardfeed_server::auth::Caller;
use shardfeed_server::error::parse_id;
use shardfeed_server::{
    deadline::Deadline,
    paging::{page_size, PageTokens, TokenScope},
    ApiError,
};
use tonic::{Request, Response, Status};

use crate::{
    cache_sync::CacheSync,
    store::graph::{self, Direction, EdgeChange},
};

/// AIP-158 sizes for follow lists.
const DEFAULT_PAGE_SIZE: usize = 20;
const MAX_PAGE_SIZE: usize = 1000;

/// Where a follow listing resumes: after this user id.
#[derive(Debug, Serialize, Deserialize)]
struct ListCursor {
    after: i64,
}

pub struct Graph {
    pool: Pool,
    cache: CacheSync,
    tokens: PageTokens,
    request_timeout: Duration,
    max_followees: i64,
}

impl Graph {
    pub fn new(
        pool: Pool,
        cache: CacheSync,
        tokens: PageTokens,
        request_timeout: Duration,
        max_followees: i64,
    ) -> Self {
        Self {
            pool,
            cache,
            tokens,
            request_timeout,
            max_followees,
        }
    }

    fn edge(follower_id: i64, followee_id: i64) -> Result<(i64, i64), ApiError> {
        let follower_id = parse_id::<UserId>("follower_id", follower_id)?.get();
        let followee_id = parse_id::<UserId>("followee_id", followee_id)?.get();
        if follower_id == followee_id {
            return Err(ApiError::invalid_field(
                "followee_id",
                "a user cannot follow themselves",
            ));
        }
        Ok((follower_id, followee_id))
    }

    /// Validates and applies a follow or unfollow, then warms the cache.
    async fn change_edge(
        &self,
        caller: &Caller,
        deadline: Deadline,
        follower_id: i64,
        followee_id: i64,
        edge: EdgeChange,
    ) -> Result<(), ApiError> {
        let (follower_id, followee_id) = Self::edge(follower_id, followee_id)?;
        caller.act_as(follower_id, "change the follows")?;
        let written = deadline
            .run(graph::change_edge(
                &self.pool,
                follower_id,
                followee_id,
                edge,
                self.max_followees,
            ))
            .await??;
        self.cache.after_commit(written.pending).await;
        Ok(())
    }

    async fn list(
        &self,
        deadline: Deadline,
        direction: Direction,
        rpc: &'static str,
        user_id: i64,
        requested_size: i32,
        token: &str,
    ) -> Result<(Vec<i64>, String), ApiError> {
        let user_id = parse_id::<UserId>("user_id", user_id)?.get();
        let size = page_size(requested_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
        let scope = TokenScope {
            rpc,
            subject: user_id,
        };
        let after = if token.is_empty() {
            0
        } else {
            self.tokens.decode::<ListCursor>(&scope, token)?.after
        };
        let mut ids = deadline
            .run(graph::list(
                &self.pool,
                direction,
                user_id,
                after,
                size as i64,
            ))
            .await??;
        let next = if ids.len() > size {
            ids.truncate(size);
            let last = *ids.last().expect("a full page has a last id");
            self.tokens.encode(&scope, &ListCursor { after: last })
        } else {
            String::new()
        };
        Ok((ids, next))
    }
}

#[tonic::async_trait]
impl GraphService for Graph {
    #[tracing::instrument(skip_all, fields(follower_id = request.get_ref().follower_id, followee_id = request.get_ref().followee_id))]
    async fn follow(
        &self,
        request: Request<FollowRequest>,
    ) -> Result<Response<FollowResponse>, Status> {
        let deadline = Deadline::of(&request, self.request_timeout);
        let req = request.get_ref();
        self.change_edge(
            Caller::of(&request)?,
            deadline,
            req.follower_id,
            req.followee_id,
            EdgeChange::Follow,
        )
        .await?;
        Ok(Response::new(FollowResponse {}))
    }

    #[tracing::instrument(skip_all, fields(follower_id = request.get_ref().follower_id, followee_id = request.get_ref().followee_id))]
    async fn unfollow(
        &self,
        request: Request<UnfollowRequest>,
    ) -> Result<Response<UnfollowResponse>, Status> {
        let deadline = Deadline::of(&request, self.request_timeout);
        let req = request.get_ref();
        self.change_edge(
            Caller::of(&request)?,
            deadline,
            req.follower_id,
            req.followee_id,
            EdgeChange::Unfollow,
        )
        .await?;
        Ok(Response::new(UnfollowResponse {}))
    }

    async fn list_following(
        &self,
        request: Request<ListFollowingRequest>,
    ) -> Result<Response<ListFollowingResponse>, Status> {
        let deadline = Deadline::of(&request, self.request_timeout);
        let req = request.into_inner();
        let (user_ids, next_page_token) = self
            .list(
                deadline,
                Direction::Following,
                "shardfeed.v1.GraphService/ListFollowing",
                req.user_id,
                req.page_size,
                &req.page_token,
            )
            .await?;
        Ok(Response::new(ListFollowingResponse {
            user_ids,
            next_page_token,
        }))
    }

    async fn list_followers(
        &self,
        request: Request<ListFollowersRequest>,
    ) -> Result<Response<ListFollowersResponse>, Status> {
        let deadline = Deadline::of(&request, self.request_timeout);
        let req = request.into_inner();
        let (user_ids, next_page_token) = self
            .list(
                deadline,
                Direction::Followers,
                "shardfeed.v1.GraphService/ListFollowers",
                req.user_id,
                req.page_size,
                &req.page_token,
            )
            .await?;
        Ok(Response::new(ListFollowersResponse {
            user_ids,
            next_page_token,
        }))
    }
}
