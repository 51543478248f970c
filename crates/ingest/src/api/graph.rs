//! `shardfeed.v1.GraphService`: the follow graph. Not implemented yet: every RPC answers
//! `UNIMPLEMENTED` until the write path for follows lands.

use deadpool_postgres::Pool;
use shardfeed_core::ApiError;
use shardfeed_proto::v1::{
    graph_service_server::GraphService, FollowRequest, FollowResponse, ListFollowersRequest,
    ListFollowersResponse, ListFollowingRequest, ListFollowingResponse, UnfollowRequest,
    UnfollowResponse,
};
use tonic::{Request, Response, Status};

pub struct Graph {
    #[allow(dead_code)]
    pool: Pool,
}

impl Graph {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

#[tonic::async_trait]
impl GraphService for Graph {
    async fn follow(&self, _: Request<FollowRequest>) -> Result<Response<FollowResponse>, Status> {
        Err(ApiError::Unimplemented("GraphService.Follow").into())
    }

    async fn unfollow(
        &self,
        _: Request<UnfollowRequest>,
    ) -> Result<Response<UnfollowResponse>, Status> {
        Err(ApiError::Unimplemented("GraphService.Unfollow").into())
    }

    async fn list_following(
        &self,
        _: Request<ListFollowingRequest>,
    ) -> Result<Response<ListFollowingResponse>, Status> {
        Err(ApiError::Unimplemented("GraphService.ListFollowing").into())
    }

    async fn list_followers(
        &self,
        _: Request<ListFollowersRequest>,
    ) -> Result<Response<ListFollowersResponse>, Status> {
        Err(ApiError::Unimplemented("GraphService.ListFollowers").into())
    }
}
